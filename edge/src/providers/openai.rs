//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio, …): the request is forwarded
//! as it is, and so is the answer.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use tokio::time::Instant;

use super::http::{self, secret_header};
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
        let give_up = call.answer_by();
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .headers(headers)
            .body(call.body);
        let what = format!("deployment {}", call.deployment.id);
        let response = http::send(request, give_up, &what, |status, body, retry_after| {
            http::status_error(
                status,
                http::error_message(body),
                retry_after,
                &[429],
                &what,
            )
        })
        .await?;
        if call.stream {
            return Ok(UpstreamReply::Stream(http::relay(
                response,
                call.timeouts.first_byte,
                what,
            )));
        }
        let total = call.timeouts.total;
        let body = http::whole_body(response, Instant::now() + total, total, &what).await?;
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
