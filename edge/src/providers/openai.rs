//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio, …): the request is forwarded
//! as it is, and so is the answer.

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};

const DEFAULT_API_BASE: &str = "https://api.openai.com/v1";

/// Calls OpenAI-format upstreams over one pooled client.
pub struct OpenAiProvider {
    client: reqwest::Client,
}

impl OpenAiProvider {
    pub fn new(client: reqwest::Client) -> Self {
        OpenAiProvider { client }
    }

    async fn post(
        &self,
        path: &str,
        call: UpstreamCall<'_>,
    ) -> Result<UpstreamReply, UpstreamError> {
        let deployment = call.deployment;
        let base = if deployment.api_base.is_empty() {
            DEFAULT_API_BASE
        } else {
            deployment.api_base.trim_end_matches('/')
        };
        let mut headers = HeaderMap::new();
        if let Some(key) = call.secrets.as_ref().and_then(|s| s.get("api_key")) {
            headers.insert(
                AUTHORIZATION,
                secret_header(&format!("Bearer {key}"), deployment)?,
            );
        }
        if let Some(org) = call.secrets.as_ref().and_then(|s| s.get("organization")) {
            headers.insert("openai-organization", secret_header(org, deployment)?);
        }
        self.send(format!("{base}{path}"), headers, call).await
    }

    /// Posts the call's body to `url` with `headers` (its credentials) and relays the answer
    /// as it is: shared by the upstreams that speak OpenAI's wire format (Azure OpenAI too).
    pub(super) async fn send(
        &self,
        url: String,
        headers: HeaderMap,
        call: UpstreamCall<'_>,
    ) -> Result<UpstreamReply, UpstreamError> {
        let deployment = call.deployment;
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .headers(headers)
            .body(call.body);
        let deadline = if call.stream {
            call.timeouts.first_byte
        } else {
            call.timeouts.total
        };
        let what = || format!("deployment {}", deployment.id);
        let response = tokio::time::timeout(deadline, request.send())
            .await
            .map_err(|_| {
                UpstreamError::Timeout(format!("{} did not answer within {deadline:?}", what()))
            })?
            .map_err(|e| transport_error(e, &what()))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = bounded_body(response, MAX_ERROR_BODY_BYTES, &what())
                .await
                .unwrap_or_default();
            return Err(status_error(status.as_u16(), &body, retry_after, &what()));
        }
        if call.stream {
            let first_byte = call.timeouts.first_byte;
            let name = what();
            let chunks = response.bytes_stream();
            let stream = futures::stream::unfold(chunks, move |mut chunks| {
                let name = name.clone();
                async move {
                    match tokio::time::timeout(first_byte, chunks.next()).await {
                        Ok(Some(Ok(bytes))) => Some((Ok(bytes), chunks)),
                        Ok(Some(Err(e))) => Some((Err(transport_error(e, &name)), chunks)),
                        Ok(None) => None,
                        Err(_) => Some((
                            Err(UpstreamError::Timeout(format!(
                                "{name} stalled for {first_byte:?}"
                            ))),
                            chunks,
                        )),
                    }
                }
            });
            return Ok(UpstreamReply::Stream(stream.boxed()));
        }
        let remaining = call.timeouts.total;
        let body = tokio::time::timeout(remaining, bounded_body(response, MAX_BODY_BYTES, &what()))
            .await
            .map_err(|_| {
                UpstreamError::Timeout(format!("{} did not finish within {remaining:?}", what()))
            })??;
        Ok(UpstreamReply::Complete(body))
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        self.post("/chat/completions", call).await
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        self.post("/embeddings", call).await
    }
}

/// The most a complete upstream answer may hold: a batch of embeddings at OpenAI's largest is
/// about 100 MB of JSON. More is refused rather than held in memory.
pub(super) const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;
/// The most of an error answer that is read (only its message is used).
pub(super) const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// A response's whole body, at most `limit` bytes (an error beyond).
pub(super) async fn bounded_body(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, UpstreamError> {
    let too_large =
        || UpstreamError::Failed(format!("{what} answered with more than {limit} bytes"));
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, what))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A credential field as a header value, marked sensitive (kept out of logs).
pub(super) fn secret_header(
    value: &str,
    deployment: &tollgate_policy::model::Deployment,
) -> Result<HeaderValue, UpstreamError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        UpstreamError::Failed(format!(
            "deployment {} has a credential that cannot be sent in a header",
            deployment.id
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A reqwest failure as an upstream error, for every provider that speaks HTTP through reqwest.
pub(super) fn transport_error(e: reqwest::Error, what: &str) -> UpstreamError {
    // `without_url`: an upstream URL may carry a secret in its query.
    let e = e.without_url();
    if e.is_timeout() {
        UpstreamError::Timeout(format!("{what} timed out"))
    } else if e.is_connect() {
        UpstreamError::Failed(format!("could not connect to {what}"))
    } else {
        UpstreamError::Failed(format!("{what} failed: {e}"))
    }
}

/// Maps an upstream error status: 429 stays 429, client errors pass through with the
/// upstream's message, credentials refused and 5xx become 502.
fn status_error(
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
    what: &str,
) -> UpstreamError {
    match status {
        429 => UpstreamError::RateLimited { retry_after },
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

/// The `error.message` of an OpenAI-shaped error body.
fn upstream_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.pointer("/error/message")?.as_str()?;
    Some(message.chars().take(1000).collect())
}
