//! Anthropic's Messages API (`POST /v1/messages`): the OpenAI request is translated to a
//! Messages request, and the answer — complete or streamed — back to OpenAI's format.
//!
//! Credential fields: `api_key` (sent as `x-api-key`). Deployment settings:
//! `anthropic_version` (default `2023-06-01`) and `anthropic_beta` (sent as `anthropic-beta`).
//! `api_base` defaults to `https://api.anthropic.com`; a base ending in `/v1` is accepted too.

mod request;
mod response;

use ::http::header::{HeaderMap, HeaderValue};
use async_trait::async_trait;
use bytes::Bytes;

use super::client::{UpstreamClient, upstream_uri};
use super::http::{self, secret_header};
use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};
use response::StreamTranslator;

use crate::clock::unix_seconds;

const DEFAULT_API_BASE: &str = "https://api.anthropic.com";
const DEFAULT_VERSION: &str = "2023-06-01";
/// Anthropic's rate-limiting statuses: 429, and 529 (overloaded). Its other error statuses
/// mean what they mean for most providers.
const RATE_LIMITED: &[u16] = &[429, 529];

/// Calls Anthropic's Messages API over one pooled client.
pub struct AnthropicProvider {
    client: UpstreamClient,
}

impl AnthropicProvider {
    pub fn new(client: UpstreamClient) -> Self {
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
        let uri = upstream_uri(messages_url(&deployment.api_base), deployment)?;
        let mut headers = HeaderMap::new();
        let version = match deployment.settings.get("anthropic_version") {
            Some(version) => setting_header(version, "anthropic_version", &what)?,
            None => HeaderValue::from_static(DEFAULT_VERSION),
        };
        headers.insert("anthropic-version", version);
        if let Some(key) = call.secrets.as_ref().and_then(|s| s.get("api_key")) {
            headers.insert("x-api-key", secret_header("", key, deployment)?);
        }
        if let Some(beta) = deployment.settings.get("anthropic_beta") {
            let beta = setting_header(beta, "anthropic_beta", &what)?;
            headers.insert("anthropic-beta", beta);
        }

        let give_up = call.answer_by();
        let request = self.client.post_json(uri, headers, Bytes::from(body));
        let error = http::json_status_error(RATE_LIMITED, &what);
        let response = http::send(request, give_up, &what, error).await?;
        let model = translated.body["model"].as_str().unwrap_or_default();

        if call.stream {
            let translator = StreamTranslator::new(translated.include_usage, unix_seconds(), model);
            return Ok(UpstreamReply::Stream(http::translate_events(
                response,
                translator,
                call.timeouts.first_byte,
                what,
            )));
        }
        let body = http::whole_body(response, give_up, call.timeouts.total, &what).await?;
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

/// A deployment setting as a header value.
fn setting_header(value: &str, setting: &str, what: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(value).map_err(|_| {
        UpstreamError::Failed(format!(
            "{what}: its {setting} setting cannot be sent in a header"
        ))
    })
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

    fn status_error(status: u16, body: &[u8]) -> UpstreamError {
        http::json_status_error(RATE_LIMITED, "d")(status, body, None)
    }

    #[test]
    fn statuses_map_to_upstream_errors() {
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#;
        assert!(matches!(
            status_error(529, b""),
            UpstreamError::RateLimited { .. }
        ));
        assert!(matches!(
            status_error(400, body),
            UpstreamError::Rejected { status: 400, message } if message == "max_tokens: too big"
        ));
        assert!(matches!(
            status_error(401, body),
            UpstreamError::Failed(m) if !m.contains("max_tokens")
        ));
        assert!(matches!(status_error(503, body), UpstreamError::Failed(_)));
    }
}
