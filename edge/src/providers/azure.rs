//! Azure OpenAI: OpenAI's wire format at a deployment's own path,
//! `{api_base}/openai/deployments/{upstream_model}/chat/completions?api-version=…` (and
//! `/embeddings`). The request and the answer pass as they are, through the OpenAI provider's
//! HTTP code.
//!
//! Credential fields: `api_key` (sent as `api-key`), or `bearer_token` (a Microsoft Entra ID
//! token, sent as `Authorization: Bearer …`; preferred when both are set). Deployment settings:
//! `api_version` (default [`DEFAULT_API_VERSION`]). `api_base` is the resource's endpoint, e.g.
//! `https://my-resource.openai.azure.com`; a base ending in `/openai` is accepted too.

use ::http::header::{AUTHORIZATION, HeaderMap};
use async_trait::async_trait;

use super::client::{UpstreamClient, upstream_uri};
use super::http::secret_header;
use super::openai::OpenAiProvider;
use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};

/// The data-plane API version sent when the deployment sets none (the GA version).
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// Calls Azure OpenAI deployments over one pooled client.
pub struct AzureOpenAiProvider {
    http: OpenAiProvider,
}

impl AzureOpenAiProvider {
    pub fn new(client: UpstreamClient) -> Self {
        AzureOpenAiProvider {
            http: OpenAiProvider::new(client),
        }
    }

    async fn post(
        &self,
        operation: &str,
        call: UpstreamCall<'_>,
    ) -> Result<UpstreamReply, UpstreamError> {
        let deployment = call.deployment;
        let version = deployment
            .settings
            .get("api_version")
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_API_VERSION);
        let url = operation_url(
            &deployment.api_base,
            &deployment.upstream_model,
            operation,
            version,
        );
        let uri = upstream_uri(url, deployment)?;
        let secrets = call.secrets.as_ref();
        let field = |name: &str| secrets.and_then(|s| s.get(name)).filter(|v| !v.is_empty());
        let mut headers = HeaderMap::new();
        if let Some(token) = field("bearer_token") {
            headers.insert(AUTHORIZATION, secret_header("Bearer ", token, deployment)?);
        } else if let Some(key) = field("api_key") {
            headers.insert("api-key", secret_header("", key, deployment)?);
        }
        self.http.send(uri, headers, call).await
    }
}

#[async_trait]
impl Provider for AzureOpenAiProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        self.post("chat/completions", call).await
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        self.post("embeddings", call).await
    }
}

/// The URL of `operation` on deployment `deployment` under `api_base`.
fn operation_url(api_base: &str, deployment: &str, operation: &str, version: &str) -> String {
    let base = api_base.trim_end_matches('/');
    let base = base.strip_suffix("/openai").unwrap_or(base);
    format!(
        "{base}/openai/deployments/{}/{operation}?api-version={}",
        escape(deployment),
        escape(version)
    )
}

/// Percent-encodes all but URL-safe characters (deployment names are letters, digits, `-`,
/// `_` and `.`, but a stray character must not change the path or the query).
fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_deployment_and_the_api_version() {
        assert_eq!(
            operation_url(
                "https://r.openai.azure.com/",
                "gpt-4o",
                "chat/completions",
                "2024-10-21"
            ),
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            operation_url("http://h:1/openai", "e 1", "embeddings", "v&x"),
            "http://h:1/openai/deployments/e%201/embeddings?api-version=v%26x"
        );
    }
}
