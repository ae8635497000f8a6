//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio, …): the request is forwarded
//! as it is, and so is the answer.

use std::sync::Arc;

use ::http::Uri;
use ::http::header::{AUTHORIZATION, HeaderMap};
use async_trait::async_trait;
use tokio::time::Instant;
use tollgate_policy::model::Deployment;

use super::client::{UpstreamClient, upstream_uri};
use super::http::{self, secret_header};
use super::memo::AddressMemo;
use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};

const DEFAULT_API_BASE: &str = "https://api.openai.com/v1";

/// Calls OpenAI-format upstreams over one pooled client.
pub struct OpenAiProvider {
    client: UpstreamClient,
    /// Each API base's routes, parsed once: a cached URI is cloned without allocating (its
    /// parts share one buffer), where parsing allocates.
    routes: AddressMemo<Arc<Routes>>,
}

/// The URIs of one API base.
struct Routes {
    chat: Uri,
    embeddings: Uri,
}

/// Which route a call goes to.
#[derive(Clone, Copy)]
enum Route {
    Chat,
    Embeddings,
}

impl OpenAiProvider {
    pub fn new(client: UpstreamClient) -> Self {
        OpenAiProvider {
            client,
            routes: AddressMemo::new(),
        }
    }

    /// The URI of `route` under the deployment's API base (OpenAI's own when empty).
    fn url(&self, deployment: &Deployment, route: Route) -> Result<Uri, UpstreamError> {
        let api_base = deployment.api_base.as_str();
        let routes = self.routes.get_or_try_insert_with(api_base, || {
            let base = if api_base.is_empty() {
                DEFAULT_API_BASE
            } else {
                api_base.trim_end_matches('/')
            };
            let parse = |path: &str| upstream_uri(format!("{base}{path}"), deployment);
            Ok::<_, UpstreamError>(Arc::new(Routes {
                chat: parse("/chat/completions")?,
                embeddings: parse("/embeddings")?,
            }))
        })?;
        Ok(match route {
            Route::Chat => routes.chat.clone(),
            Route::Embeddings => routes.embeddings.clone(),
        })
    }

    async fn post(
        &self,
        route: Route,
        call: UpstreamCall<'_>,
    ) -> Result<UpstreamReply, UpstreamError> {
        let deployment = call.deployment;
        let url = self.url(deployment, route)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = call.secrets.as_ref().and_then(|s| s.get("api_key")) {
            headers.insert(AUTHORIZATION, secret_header("Bearer ", key, deployment)?);
        }
        if let Some(org) = call.secrets.as_ref().and_then(|s| s.get("organization")) {
            headers.insert("openai-organization", secret_header("", org, deployment)?);
        }
        self.send(url, headers, call).await
    }

    /// Posts the call's body to `uri` with `headers` (its credentials) and relays the answer
    /// as it is: shared by the upstreams that speak OpenAI's wire format (Azure OpenAI too).
    pub(super) async fn send(
        &self,
        uri: Uri,
        headers: HeaderMap,
        call: UpstreamCall<'_>,
    ) -> Result<UpstreamReply, UpstreamError> {
        let give_up = call.answer_by();
        let request = self.client.post_json(uri, headers, call.body);
        let what = format!("deployment {}", call.deployment.id);
        let error = http::json_status_error(&[429], &what);
        let response = http::send(request, give_up, &what, error).await?;
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
        self.post(Route::Chat, call).await
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        self.post(Route::Embeddings, call).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tollgate_policy::model::Provider as ProviderKind;

    use super::*;
    use crate::providers::Egress;

    fn deployment(api_base: &str) -> Deployment {
        let mut deployment = Deployment::new(
            "d1".into(),
            "gpt".into(),
            ProviderKind::OpenaiCompatible,
            "gpt".into(),
        );
        deployment.api_base = api_base.into();
        deployment
    }

    fn provider() -> OpenAiProvider {
        let client = UpstreamClient::new(Duration::from_secs(1), Egress::default());
        OpenAiProvider::new(client.unwrap())
    }

    #[test]
    fn each_api_base_has_its_routes_parsed_once() {
        let provider = provider();
        let local = deployment("http://127.0.0.1:8000/v1/");
        for _ in 0..3 {
            let chat = provider.url(&local, Route::Chat).unwrap();
            assert_eq!(chat, "http://127.0.0.1:8000/v1/chat/completions");
        }
        let embeddings = provider.url(&local, Route::Embeddings).unwrap();
        assert_eq!(embeddings, "http://127.0.0.1:8000/v1/embeddings");
        let openai = provider.url(&deployment(""), Route::Chat).unwrap();
        assert_eq!(openai, "https://api.openai.com/v1/chat/completions");
        assert_eq!(provider.routes.len(), 2);
    }

    #[test]
    fn an_api_base_that_is_not_a_url_is_refused_without_echoing_it() {
        let provider = provider();
        let refused = provider.url(&deployment("not a url?token=secret"), Route::Chat);
        let message = match refused {
            Err(UpstreamError::Failed(message)) => message,
            other => panic!("expected a failure, got {other:?}"),
        };
        assert!(message.contains("deployment d1"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
