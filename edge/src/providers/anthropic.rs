//! Anthropic's Messages API (`POST /v1/messages`): the OpenAI request is translated to a
//! Messages request, and the answer — complete or streamed — back to OpenAI's format.
//!
//! Credential fields: `api_key` (sent as `x-api-key`). Deployment settings:
//! `anthropic_version` (default `2023-06-01`) and `anthropic_beta` (sent as `anthropic-beta`).
//! `api_base` defaults to `https://api.anthropic.com`; a base ending in `/v1` is accepted too.

mod request;
mod response;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;

use super::openai::{
    MAX_BODY_BYTES, MAX_ERROR_BODY_BYTES, bounded_body, secret_header, transport_error,
};
use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};
use response::{StreamFailure, StreamTranslator};

use crate::clock::unix_seconds;
use crate::codec::sse::DataFramer;

const DEFAULT_API_BASE: &str = "https://api.anthropic.com";
const DEFAULT_VERSION: &str = "2023-06-01";

/// Calls Anthropic's Messages API over one pooled client.
pub struct AnthropicProvider {
    client: reqwest::Client,
}

impl AnthropicProvider {
    pub fn new(client: reqwest::Client) -> Self {
        AnthropicProvider { client }
    }
}

/// The Messages endpoint under `api_base`.
fn messages_url(api_base: &str) -> String {
    let base = match api_base.trim_end_matches('/') {
        "" => DEFAULT_API_BASE,
        base => base,
    };
    if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let deployment = call.deployment;
        let what = format!("deployment {}", deployment.id);
        let translated =
            request::translate(&call.body, call.stream).map_err(UpstreamError::Unsupported)?;
        let body = serde_json::to_vec(&translated.body)
            .map_err(|e| UpstreamError::Failed(format!("{what}: {e}")))?;
        let version = deployment
            .settings
            .get("anthropic_version")
            .map_or(DEFAULT_VERSION, String::as_str);
        let mut request = self
            .client
            .post(messages_url(&deployment.api_base))
            .header(CONTENT_TYPE, "application/json")
            .header("anthropic-version", version)
            .body(body);
        if let Some(key) = call.secrets.as_ref().and_then(|s| s.get("api_key")) {
            request = request.header("x-api-key", secret_header(key, deployment)?);
        }
        if let Some(beta) = deployment.settings.get("anthropic_beta") {
            request = request.header("anthropic-beta", beta.as_str());
        }

        let deadline = if call.stream {
            call.timeouts.first_byte
        } else {
            call.timeouts.total
        };
        let give_up = Instant::now() + deadline;
        let response = tokio::time::timeout_at(give_up, request.send())
            .await
            .map_err(|_| {
                UpstreamError::Timeout(format!("{what} did not answer within {deadline:?}"))
            })?
            .map_err(|e| transport_error(e, &what))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = tokio::time::timeout_at(
                give_up,
                bounded_body(response, MAX_ERROR_BODY_BYTES, &what),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
            return Err(status_error(status.as_u16(), &body, retry_after, &what));
        }
        let model = translated.body["model"].as_str().unwrap_or_default();

        if call.stream {
            let translator = StreamTranslator::new(translated.include_usage, unix_seconds(), model);
            return Ok(UpstreamReply::Stream(translate_stream(
                response.bytes_stream().boxed(),
                translator,
                call.timeouts.first_byte,
                what,
            )));
        }
        let total = call.timeouts.total;
        let body = tokio::time::timeout_at(give_up, bounded_body(response, MAX_BODY_BYTES, &what))
            .await
            .map_err(|_| {
                UpstreamError::Timeout(format!("{what} did not finish within {total:?}"))
            })??;
        let unreadable =
            || UpstreamError::Failed(format!("{what} answered with an unreadable message"));
        let message: serde_json::Value = serde_json::from_slice(&body).map_err(|_| unreadable())?;
        let completion = response::completion(&message, unix_seconds()).ok_or_else(unreadable)?;
        Ok(UpstreamReply::Complete(Bytes::from(completion.to_string())))
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        Err(UpstreamError::Unsupported(format!(
            "deployment {} is an Anthropic deployment, and Anthropic has no embeddings API",
            call.deployment.id
        )))
    }
}

/// State of a stream being translated.
struct Translation {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    framer: DataFramer,
    translator: StreamTranslator,
    stall: Duration,
    what: String,
    /// A failure to report after the chunks already translated.
    failure: Option<UpstreamError>,
    done: bool,
}

/// OpenAI chunks, each sent on as soon as the Anthropic event it comes from arrived.
fn translate_stream(
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    translator: StreamTranslator,
    stall: Duration,
    what: String,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    let state = Translation {
        upstream,
        framer: DataFramer::default(),
        translator,
        stall,
        what,
        failure: None,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(failure) = s.failure.take() {
                s.done = true;
                return Some((Err(failure), s));
            }
            if s.done {
                return None;
            }
            let (stall, what) = (s.stall, &s.what);
            let bytes = match tokio::time::timeout(stall, s.upstream.next()).await {
                Ok(Some(Ok(bytes))) => bytes,
                Ok(Some(Err(e))) => {
                    s.failure = Some(transport_error(e, what));
                    continue;
                }
                Ok(None) => {
                    s.done = true;
                    if s.translator.stopped() {
                        return None;
                    }
                    let message = format!("{what} ended its stream before message_stop");
                    return Some((Err(UpstreamError::Failed(message)), s));
                }
                Err(_) => {
                    s.failure = Some(UpstreamError::Timeout(format!(
                        "{what} stalled for {stall:?}"
                    )));
                    continue;
                }
            };
            let mut out = Vec::new();
            let events = match s.framer.push(&bytes) {
                Ok(events) => events,
                Err(too_large) => {
                    s.failure = Some(UpstreamError::Failed(format!("{}: {too_large}", s.what)));
                    continue;
                }
            };
            for data in events {
                if let Err(failure) = s.translator.event(&data, &mut out) {
                    s.failure = Some(stream_failure(failure, &s.what));
                    break;
                }
                if s.translator.stopped() {
                    s.done = true;
                    break;
                }
            }
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), s));
            }
        }
    })
    .boxed()
}

fn stream_failure(failure: StreamFailure, what: &str) -> UpstreamError {
    match failure {
        StreamFailure::Overloaded => UpstreamError::RateLimited { retry_after: None },
        StreamFailure::Error(kind, message) => {
            UpstreamError::Failed(format!("{what} reported {kind} mid-stream: {message}"))
        }
        StreamFailure::Unreadable => {
            UpstreamError::Failed(format!("{what} sent an unreadable stream event"))
        }
    }
}

/// Maps an Anthropic error status: 429 and 529 (overloaded) are rate limiting, client errors
/// pass through with Anthropic's message, credentials refused and 5xx become 502.
fn status_error(
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
    what: &str,
) -> UpstreamError {
    match status {
        429 | 529 => UpstreamError::RateLimited { retry_after },
        401 | 403 => UpstreamError::Failed(format!(
            "{what} refused Tollgate's credentials (HTTP {status})"
        )),
        400..=499 => UpstreamError::Rejected {
            status,
            message: upstream_message(body)
                .unwrap_or_else(|| format!("{what} rejected the request (HTTP {status})")),
        },
        _ => UpstreamError::Failed(format!("{what} failed with HTTP {status}")),
    }
}

/// The `error.message` of an Anthropic error body
/// (`{"type": "error", "error": {"type": …, "message": …}}`).
fn upstream_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.pointer("/error/message")?.as_str()?;
    Some(message.chars().take(1000).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_url_follows_the_api_base() {
        assert_eq!(messages_url(""), "https://api.anthropic.com/v1/messages");
        assert_eq!(messages_url("http://h:1/"), "http://h:1/v1/messages");
        assert_eq!(messages_url("http://h:1/v1"), "http://h:1/v1/messages");
    }

    #[test]
    fn statuses_map_to_upstream_errors() {
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#;
        assert!(matches!(
            status_error(529, b"", None, "d"),
            UpstreamError::RateLimited { .. }
        ));
        assert!(matches!(
            status_error(400, body, None, "d"),
            UpstreamError::Rejected { status: 400, message } if message == "max_tokens: too big"
        ));
        assert!(matches!(
            status_error(401, body, None, "d"),
            UpstreamError::Failed(m) if !m.contains("max_tokens")
        ));
        assert!(matches!(
            status_error(503, body, None, "d"),
            UpstreamError::Failed(_)
        ));
    }
}
