//! Amazon Bedrock through the Converse and ConverseStream APIs of the official AWS SDK: the
//! OpenAI request is translated to Converse ([`request`]) and the answer back to OpenAI's format
//! ([`response`]), streamed event by event.
//!
//! Credentials: a deployment credential with `aws_access_key_id` and `aws_secret_access_key`
//! (and optionally `aws_session_token`) is used as static credentials; without one, the standard
//! AWS chain (environment, profile, SSO, ECS task role, EKS pod identity / IRSA, instance
//! profile). The deployment's `region` is the AWS region; its `api_base`, when set, replaces
//! Bedrock's endpoint (a VPC endpoint, or a test server).

mod request;
mod response;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::config::{Credentials, Region, StalledStreamProtectionConfig};
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::ConverseStreamOutput;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};
use request::{ConverseRequest, converse_request};
use response::{StreamTranslator, completion, sse};

/// Clients kept at most; beyond, the cache starts afresh (credentials were rotated many times).
const MAX_CLIENTS: usize = 256;

/// Which client serves a call: one per region, endpoint and credential.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    region: String,
    endpoint: String,
    /// SHA-256 of the static credential's fields; `None` for the standard AWS chain.
    credential: Option<[u8; 32]>,
}

/// Calls Bedrock with one SDK client per (region, endpoint, credential), built on first use.
pub struct BedrockProvider {
    connect_timeout: Duration,
    clients: Mutex<HashMap<ClientKey, Client>>,
}

struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl StaticCredentials {
    fn of(call: &UpstreamCall<'_>) -> Option<Self> {
        let secrets = call.secrets.as_ref()?;
        let field = |name: &str| secrets.get(name).filter(|v| !v.is_empty()).cloned();
        Some(StaticCredentials {
            access_key_id: field("aws_access_key_id")?,
            secret_access_key: field("aws_secret_access_key")?,
            session_token: field("aws_session_token"),
        })
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [
            self.access_key_id.as_str(),
            self.secret_access_key.as_str(),
            self.session_token.as_deref().unwrap_or(""),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        hash.finalize().into()
    }
}

impl BedrockProvider {
    pub fn new(connect_timeout: Duration) -> Self {
        BedrockProvider {
            connect_timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for this call's deployment, built once (the lock is never held across an
    /// await: two first calls may both build one, and the first stored wins).
    async fn client(&self, call: &UpstreamCall<'_>) -> Client {
        let credentials = StaticCredentials::of(call);
        let key = ClientKey {
            region: call.deployment.region.clone(),
            endpoint: call.deployment.api_base.trim_end_matches('/').to_owned(),
            credential: credentials.as_ref().map(StaticCredentials::fingerprint),
        };
        if let Some(client) = self.cached().get(&key) {
            return client.clone();
        }
        let client = self.build(&key, credentials).await;
        let mut clients = self.cached();
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.entry(key).or_insert(client).clone()
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, Client>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn build(&self, key: &ClientKey, credentials: Option<StaticCredentials>) -> Client {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // No SDK retries: a retry is a routing decision (another deployment, another
            // region, or the same after a back-off), which the edge's routing layer will own;
            // retrying inside the SDK as well would multiply attempts and hide latency.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .build(),
            )
            // The edge watches streams itself (`Timeouts::first_byte` between events); the
            // SDK's own stall detector would cut slow models after a few quiet seconds.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if !key.region.is_empty() {
            loader = loader.region(Region::new(key.region.clone()));
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                c.session_token,
                None,
                "tollgate-deployment-credential",
            ));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_bedrockruntime::config::Builder::from(&shared);
        if !key.endpoint.is_empty() {
            config = config.endpoint_url(key.endpoint.clone());
        }
        Client::from_conf(config.build())
    }

    /// Per-call timeouts: the whole call for a plain answer, until the stream's first event
    /// (its HTTP response) for a stream.
    fn timeouts(&self, limit: Duration) -> aws_sdk_bedrockruntime::config::Builder {
        aws_sdk_bedrockruntime::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.connect_timeout)
                .operation_timeout(limit)
                .operation_attempt_timeout(limit)
                .build(),
        )
    }
}

#[async_trait]
impl Provider for BedrockProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let what = format!("deployment {}", call.deployment.id);
        let request =
            converse_request(&call.body, &call.deployment.upstream_model).map_err(|message| {
                UpstreamError::Rejected {
                    status: 400,
                    message,
                }
            })?;
        let client = self.client(&call).await;
        if call.stream {
            self.converse_stream(&client, request, &call, what).await
        } else {
            self.converse(&client, request, &call, &what).await
        }
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        Err(UpstreamError::Rejected {
            status: 400,
            message: format!(
                "deployment {} is a Bedrock chat deployment: embeddings are not supported on it yet",
                call.deployment.id
            ),
        })
    }
}

impl BedrockProvider {
    async fn converse(
        &self,
        client: &Client,
        request: ConverseRequest,
        call: &UpstreamCall<'_>,
        what: &str,
    ) -> Result<UpstreamReply, UpstreamError> {
        let limit = call.timeouts.total;
        let output = client
            .converse()
            .model_id(&request.model_id)
            .set_messages(Some(request.messages))
            .set_system(Some(request.system).filter(|s| !s.is_empty()))
            .set_inference_config(request.inference)
            .set_tool_config(request.tools)
            .set_guardrail_config(request.guardrail.as_ref().map(|g| g.for_converse()))
            .set_additional_model_request_fields(request.additional_fields)
            .customize()
            .config_override(self.timeouts(limit))
            .send()
            .await
            .map_err(|e| sdk_error(e, what, limit))?;
        let body = completion(&output, &request.model_id);
        Ok(UpstreamReply::Complete(Bytes::from(body.to_string())))
    }

    async fn converse_stream(
        &self,
        client: &Client,
        request: ConverseRequest,
        call: &UpstreamCall<'_>,
        what: String,
    ) -> Result<UpstreamReply, UpstreamError> {
        let first_byte = call.timeouts.first_byte;
        let output = client
            .converse_stream()
            .model_id(&request.model_id)
            .set_messages(Some(request.messages))
            .set_system(Some(request.system).filter(|s| !s.is_empty()))
            .set_inference_config(request.inference)
            .set_tool_config(request.tools)
            .set_guardrail_config(request.guardrail.as_ref().map(|g| g.for_stream()))
            .set_additional_model_request_fields(request.additional_fields)
            .customize()
            .config_override(self.timeouts(first_byte))
            .send()
            .await
            .map_err(|e| sdk_error(e, &what, first_byte))?;
        let state = Relay {
            events: output.stream,
            translator: StreamTranslator::new(&request.model_id, request.include_usage),
            first_byte,
            what,
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut relay| async move {
            loop {
                if relay.done {
                    return None;
                }
                let next = tokio::time::timeout(relay.first_byte, relay.events.recv()).await;
                let (chunks, done) = match next {
                    Ok(Ok(Some(event))) => (relay.translator.event(&event), false),
                    Ok(Ok(None)) => (relay.translator.end(), true),
                    Ok(Err(e)) => {
                        relay.done = true;
                        let error = sdk_error(e, &relay.what, relay.first_byte);
                        return Some((Err(error), relay));
                    }
                    Err(_) => {
                        relay.done = true;
                        let error = UpstreamError::Timeout(format!(
                            "{} stalled for {:?}",
                            relay.what, relay.first_byte
                        ));
                        return Some((Err(error), relay));
                    }
                };
                relay.done = done;
                if !chunks.is_empty() || done {
                    return Some((Ok(sse(&chunks, done)), relay));
                }
            }
        });
        Ok(UpstreamReply::Stream(stream.boxed()))
    }
}

/// A ConverseStream being turned into OpenAI events.
struct Relay {
    events: EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
    translator: StreamTranslator,
    first_byte: Duration,
    what: String,
    done: bool,
}

/// Maps an SDK failure; messages name the deployment, never the endpoint or the credential.
fn sdk_error<E, R>(error: SdkError<E, R>, what: &str, limit: Duration) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + 'static,
{
    match &error {
        SdkError::ServiceError(context) => {
            let retry_after = raw_retry_after(context.raw());
            service_error(
                context.err().code(),
                context.err().message(),
                retry_after,
                what,
            )
        }
        SdkError::TimeoutError(_) => {
            UpstreamError::Timeout(format!("{what} did not answer within {limit:?}"))
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            UpstreamError::Timeout(format!("{what} did not answer within {limit:?}"))
        }
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            tracing::warn!(error = %DisplayErrorContext(&error), "{what}: could not reach Bedrock");
            UpstreamError::Failed(format!("could not connect to {what}"))
        }
        _ => {
            tracing::warn!(error = %DisplayErrorContext(&error), "{what}: Bedrock call failed");
            if mentions_credentials(&error) {
                // The standard chain found nothing (no env, profile, task or pod role).
                UpstreamError::Failed(format!(
                    "{what}: no AWS credentials for Bedrock (give the deployment a credential, \
                     or the edge an AWS identity)"
                ))
            } else {
                UpstreamError::Failed(format!(
                    "{what} failed: the call to Bedrock did not complete"
                ))
            }
        }
    }
}

/// Whether an error or one of its sources is about loading credentials.
fn mentions_credentials(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.to_string().to_ascii_lowercase().contains("credential") {
            return true;
        }
        next = e.source();
    }
    false
}

/// `retry-after` of an HTTP error response, when the raw response is one.
fn raw_retry_after<R: 'static>(raw: &R) -> Option<String> {
    (raw as &dyn std::any::Any)
        .downcast_ref::<aws_sdk_bedrockruntime::config::http::HttpResponse>()
        .and_then(|r| r.headers().get("retry-after"))
        .map(str::to_owned)
}

/// Maps a Bedrock error by its code (the same for Converse, ConverseStream and in-stream errors).
fn service_error(
    code: Option<&str>,
    message: Option<&str>,
    retry_after: Option<String>,
    what: &str,
) -> UpstreamError {
    let code = code.unwrap_or("");
    // In-stream exceptions are named in lower camel case (`throttlingException`).
    let matches = |name: &str| code.eq_ignore_ascii_case(name);
    if matches("ThrottlingException")
        || matches("ServiceQuotaExceededException")
        || matches("TooManyRequestsException")
    {
        UpstreamError::RateLimited { retry_after }
    } else if matches("ValidationException") {
        UpstreamError::Rejected {
            status: 400,
            message: message
                .map(|m| m.chars().take(1000).collect())
                .unwrap_or_else(|| format!("{what}: Bedrock rejected the request")),
        }
    } else if [
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    ]
    .iter()
    .any(|name| matches(name))
    {
        UpstreamError::Failed(format!("{what}: Bedrock refused the credentials"))
    } else if matches("ModelTimeoutException") {
        UpstreamError::Timeout(format!("{what}: the Bedrock model timed out"))
    } else if code.is_empty() {
        UpstreamError::Failed(format!("{what} failed: Bedrock answered with an error"))
    } else {
        UpstreamError::Failed(format!("{what} failed: Bedrock answered {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_upstream_errors() {
        let what = "deployment d";
        assert!(matches!(
            service_error(Some("ThrottlingException"), None, Some("3".into()), what),
            UpstreamError::RateLimited { retry_after: Some(r) } if r == "3"
        ));
        assert!(matches!(
            service_error(Some("throttlingException"), None, None, what),
            UpstreamError::RateLimited { .. }
        ));
        assert!(matches!(
            service_error(Some("ValidationException"), Some("bad"), None, what),
            UpstreamError::Rejected { status: 400, message } if message == "bad"
        ));
        assert!(matches!(
            service_error(Some("UnrecognizedClientException"), Some("key AKID"), None, what),
            UpstreamError::Failed(m) if m == "deployment d: Bedrock refused the credentials"
        ));
        assert!(matches!(
            service_error(Some("ModelTimeoutException"), None, None, what),
            UpstreamError::Timeout(_)
        ));
        assert!(matches!(
            service_error(Some("InternalServerException"), None, None, what),
            UpstreamError::Failed(_)
        ));
    }
}
