//! Google's Gemini API (`generativelanguage.googleapis.com`): the OpenAI request is translated to
//! `generateContent` ([`request`]) — `streamGenerateContent?alt=sse` for streams — and the
//! answer back to OpenAI's format ([`response`]), streamed event by event. Embeddings go to
//! `embedContent` (one input) or `batchEmbedContents` (several).
//!
//! Credential fields: `api_key` (sent as `x-goog-api-key`). `api_base` defaults to
//! `https://generativelanguage.googleapis.com`; a base ending in `/v1beta` is accepted too.

mod request;
mod response;

use ::http::header::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::client::{UpstreamClient, UpstreamResponse, upstream_uri};
use super::http::{self, secret_header};
use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};
use response::StreamTranslator;

use crate::clock::unix_seconds;

const DEFAULT_API_BASE: &str = "https://generativelanguage.googleapis.com";

/// Calls the Gemini API over one pooled client.
pub struct GeminiProvider {
    client: UpstreamClient,
}

impl GeminiProvider {
    pub fn new(client: UpstreamClient) -> Self {
        GeminiProvider { client }
    }

    /// Posts `body` to the model's `method` and waits for the response to start; an error
    /// status is mapped to an [`UpstreamError`].
    async fn send(
        &self,
        call: &UpstreamCall<'_>,
        method: &str,
        body: &Value,
        give_up: Instant,
        what: &str,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let deployment = call.deployment;
        let body =
            serde_json::to_vec(body).map_err(|e| UpstreamError::Failed(format!("{what}: {e}")))?;
        let url = method_url(
            &deployment.api_base,
            model_id(&deployment.upstream_model),
            method,
        );
        let uri = upstream_uri(url, deployment)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = call.secrets.as_ref().and_then(|s| s.get("api_key")) {
            headers.insert("x-goog-api-key", secret_header("", key, deployment)?);
        }
        let request = self.client.post_json(uri, headers, Bytes::from(body));
        http::send(request, give_up, what, |status, body, retry_after| {
            status_error(status, body, retry_after, what)
        })
        .await
    }

    /// The complete JSON body of a non-streaming call.
    async fn complete(
        &self,
        call: &UpstreamCall<'_>,
        method: &str,
        body: &Value,
        what: &str,
    ) -> Result<Value, UpstreamError> {
        let total = call.timeouts.total;
        let give_up = Instant::now() + total;
        let response = self.send(call, method, body, give_up, what).await?;
        let body = http::whole_body(response, give_up, total, what).await?;
        serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Failed(format!("{what} answered with an unreadable body")))
    }
}

/// The model id without the `models/` prefix the API's own names carry.
fn model_id(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// The URL of `method` (e.g. `generateContent`, `streamGenerateContent?alt=sse`) of `model`.
fn method_url(api_base: &str, model: &str, method: &str) -> String {
    let base = match api_base.trim_end_matches('/') {
        "" => DEFAULT_API_BASE,
        base => base,
    };
    let base = base.strip_suffix("/v1beta").unwrap_or(base);
    format!("{base}/v1beta/models/{model}:{method}")
}

#[async_trait]
impl Provider for GeminiProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let what = format!("deployment {}", call.deployment.id);
        let translated = request::translate(&call.body).map_err(UpstreamError::Unsupported)?;
        let model = model_id(&call.deployment.upstream_model).to_owned();
        if !call.stream {
            let answer = self
                .complete(&call, "generateContent", &translated.body, &what)
                .await?;
            let completion =
                response::completion(&answer, &model, unix_seconds()).ok_or_else(|| {
                    UpstreamError::Failed(format!("{what} answered with an unreadable response"))
                })?;
            return Ok(UpstreamReply::Complete(Bytes::from(completion.to_string())));
        }
        let give_up = call.answer_by();
        let response = self
            .send(
                &call,
                "streamGenerateContent?alt=sse",
                &translated.body,
                give_up,
                &what,
            )
            .await?;
        let translator = StreamTranslator::new(translated.include_usage, unix_seconds(), &model);
        Ok(UpstreamReply::Stream(http::translate_events(
            response,
            translator,
            call.timeouts.first_byte,
            what,
        )))
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let what = format!("deployment {}", call.deployment.id);
        let model = model_id(&call.deployment.upstream_model).to_owned();
        let base64 = serde_json::from_slice::<Value>(&call.body)
            .is_ok_and(|b| b["encoding_format"] == "base64");
        let (method, body) =
            match request::embeddings(&call.body, &model).map_err(UpstreamError::Unsupported)? {
                request::Embeddings::One(body) => ("embedContent", body),
                request::Embeddings::Batch(body) => ("batchEmbedContents", body),
            };
        let answer = self.complete(&call, method, &body, &what).await?;
        let list = response::embeddings(&answer, &model, base64).ok_or_else(|| {
            UpstreamError::Failed(format!("{what} answered with unreadable embeddings"))
        })?;
        Ok(UpstreamReply::Complete(Bytes::from(list.to_string())))
    }
}

/// Maps a Gemini error status: 429 (`RESOURCE_EXHAUSTED`) is rate limiting, with the delay
/// Gemini's `RetryInfo` suggests when no `retry-after` header says; credentials refused (401,
/// 403, or a 400 for an invalid key) and 5xx become 502; other client errors pass through with
/// Gemini's message.
fn status_error(
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
    what: &str,
) -> UpstreamError {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let details = answer["error"]["details"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if status == 400 && details.iter().any(|d| d["reason"] == "API_KEY_INVALID") {
        return http::credentials_refused(status, what);
    }
    let retry_after = retry_after.or_else(|| retry_delay(details));
    let message = answer["error"]["message"]
        .as_str()
        .map(super::upstream_message);
    http::status_error(status, message, retry_after, &[429], what)
}

/// Whole seconds of a `google.rpc.RetryInfo` detail's `retryDelay` (e.g. `"7s"`, `"6.5s"`).
fn retry_delay(details: &[Value]) -> Option<String> {
    let delay = details
        .iter()
        .find_map(|d| d["retryDelay"].as_str())?
        .strip_suffix('s')?;
    let seconds: f64 = delay.parse().ok()?;
    (seconds >= 0.0).then(|| format!("{}", seconds.ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_follows_the_api_base() {
        assert_eq!(
            method_url("", "gemini-2.5-flash", "generateContent"),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            method_url("http://h:1/v1beta/", model_id("models/g"), "embedContent"),
            "http://h:1/v1beta/models/g:embedContent"
        );
    }

    #[test]
    fn statuses_map_to_upstream_errors() {
        let limited = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"6.2s"}]}}"#;
        assert!(matches!(
            status_error(429, limited, None, "d"),
            UpstreamError::RateLimited { retry_after: Some(s) } if s == "7"
        ));
        let bad_key = br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        assert!(matches!(
            status_error(400, bad_key, None, "d"),
            UpstreamError::Failed(m) if !m.contains("API key")
        ));
        let invalid =
            br#"{"error":{"code":400,"message":"* contents: empty","status":"INVALID_ARGUMENT"}}"#;
        assert!(matches!(
            status_error(400, invalid, None, "d"),
            UpstreamError::Rejected { status: 400, message } if message == "* contents: empty"
        ));
        assert!(matches!(
            status_error(503, b"", None, "d"),
            UpstreamError::Failed(_)
        ));
    }
}
