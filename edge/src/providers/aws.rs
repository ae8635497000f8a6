//! What the AWS providers (Bedrock, SageMaker) share: one SDK client per (region, endpoint,
//! credential), built from the deployment's static credential or the standard AWS chain, with
//! SDK retries off and the edge's timeouts; the relay of an SDK event stream; and the mapping
//! of transport failures.
//!
//! Credentials: a deployment credential with `aws_access_key_id` and `aws_secret_access_key`
//! (and optionally `aws_session_token`) is used as static credentials; without one, the standard
//! AWS chain (environment, profile, SSO, ECS task role, EKS pod identity / IRSA, instance
//! profile). The deployment's `region` is the AWS region; its `api_base`, when set, replaces
//! the service's endpoint (a VPC endpoint, or a test server).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::config::{Credentials, Region, StalledStreamProtectionConfig};
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, SdkError};
use sha2::{Digest, Sha256};

use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::event_stream::RawMessage;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::egress::{AwsResolver, Egress};
use super::http::local_shortage;
use super::{UpstreamCall, UpstreamError};

/// Clients kept at most; beyond, the cache starts afresh (credentials were rotated many times).
const MAX_CLIENTS: usize = 256;

/// Which client serves a call: one per region, endpoint and credential.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    region: String,
    /// The deployment's `api_base` without a trailing `/`; empty for the service's own.
    endpoint: String,
    /// SHA-256 of the static credential's fields; `None` for the standard AWS chain.
    credential: Option<[u8; 32]>,
}

struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl StaticCredentials {
    fn of(secrets: Option<&BTreeMap<String, String>>) -> Option<Self> {
        let secrets = secrets?;
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

/// A provider that calls an AWS service through its SDK client `C` (Bedrock, SageMaker).
pub struct AwsProvider<C> {
    pub clients: ClientCache<C>,
}

impl<C: Clone> AwsProvider<C> {
    /// A provider whose clients connect within `connect_timeout`, to addresses `egress` allows.
    pub fn new(connect_timeout: Duration, egress: Egress) -> Self {
        AwsProvider {
            clients: ClientCache::new(connect_timeout, egress),
        }
    }
}

/// SDK clients of one AWS service (`C`), built on first use and shared by later calls.
pub struct ClientCache<C> {
    connect_timeout: Duration,
    /// The SDK's HTTP client resolves names through the edge's egress policy.
    http: SharedHttpClient,
    clients: Mutex<HashMap<ClientKey, C>>,
}

impl<C: Clone> ClientCache<C> {
    pub fn new(connect_timeout: Duration, egress: Egress) -> Self {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        ClientCache {
            connect_timeout,
            http: aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .build_with_resolver(AwsResolver(egress)),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for this call's deployment, built once by `build` (an SDK's `Client::new`)
    /// from an AWS configuration for its region, endpoint and credential. The lock is never
    /// held across an await: two first calls may both build one, and the first stored wins.
    pub async fn client(&self, call: &UpstreamCall<'_>, build: impl FnOnce(&SdkConfig) -> C) -> C {
        let deployment = call.deployment;
        let target = (deployment.region.as_str(), deployment.api_base.as_str());
        self.client_at(target, call.secrets.as_deref(), build).await
    }

    /// The client for `(region, endpoint)` signing with `secrets`' static AWS credential, or
    /// the standard chain when it has none; built once by `build`.
    pub async fn client_at(
        &self,
        (region, endpoint): (&str, &str),
        secrets: Option<&BTreeMap<String, String>>,
        build: impl FnOnce(&SdkConfig) -> C,
    ) -> C {
        let credentials = StaticCredentials::of(secrets);
        let key = ClientKey {
            region: region.to_owned(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credential: credentials.as_ref().map(StaticCredentials::fingerprint),
        };
        if let Some(client) = self.cached().get(&key) {
            return client.clone();
        }
        let shared = self.load(&key, credentials).await;
        let client = build(&shared);
        let mut clients = self.cached();
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.entry(key).or_insert(client).clone()
    }

    fn cached(&self) -> MutexGuard<'_, HashMap<ClientKey, C>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn load(&self, key: &ClientKey, credentials: Option<StaticCredentials>) -> SdkConfig {
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
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .http_client(self.http.clone());
        if !key.region.is_empty() {
            loader = loader.region(Region::new(key.region.clone()));
        }
        if !key.endpoint.is_empty() {
            loader = loader.endpoint_url(key.endpoint.clone());
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
        loader.load().await
    }

    /// Per-call timeouts: the whole call for a plain answer, until the stream's first event
    /// (its HTTP response) for a stream.
    pub fn call_timeouts(&self, limit: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_timeout(limit)
            .operation_attempt_timeout(limit)
            .build()
    }
}

/// The receiving end of an SDK's event stream (each AWS SDK crate has its own type).
pub trait EventSource: Send + 'static {
    /// An event of the stream.
    type Event;
    /// The service's error reported inside the stream.
    type Error;
    /// The next event; `None` at the end of the stream.
    fn next_event(
        &mut self,
    ) -> impl Future<Output = Result<Option<Self::Event>, SdkError<Self::Error, RawMessage>>> + Send;
}

/// An SDK event stream relayed as the bytes the client gets. `decode` is given each event, then
/// `None` at the end of the stream, and returns what it makes (empty: nothing to send yet).
/// Its `Err` (a message) ends the stream with a failure, as do a failure of the stream itself
/// (mapped by `stream_error`) and no event for `stall`. What was made before a failure is sent
/// first.
pub fn relay_events<S, D, M>(
    events: S,
    decode: D,
    stall: Duration,
    what: String,
    stream_error: M,
) -> BoxStream<'static, Result<Bytes, UpstreamError>>
where
    S: EventSource,
    D: FnMut(Option<S::Event>) -> Result<Vec<u8>, String> + Send + 'static,
    M: Fn(SdkError<S::Error, RawMessage>, &str, Duration) -> UpstreamError + Send + 'static,
{
    let relay = Relay {
        events,
        decode,
        stream_error,
        stall,
        what,
        done: false,
    };
    futures::stream::unfold(relay, |mut relay| async move {
        let next = relay.next().await?;
        Some((next, relay))
    })
    .boxed()
}

/// An event stream being relayed (see [`relay_events`]).
struct Relay<S, D, M> {
    events: S,
    decode: D,
    stream_error: M,
    stall: Duration,
    what: String,
    done: bool,
}

impl<S, D, M> Relay<S, D, M>
where
    S: EventSource,
    D: FnMut(Option<S::Event>) -> Result<Vec<u8>, String>,
    M: Fn(SdkError<S::Error, RawMessage>, &str, Duration) -> UpstreamError,
{
    /// The next bytes to send or the failure that ends the stream; `None` once it is over.
    async fn next(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        while !self.done {
            let decoded = match tokio::time::timeout(self.stall, self.events.next_event()).await {
                Ok(Ok(event)) => {
                    self.done = event.is_none();
                    (self.decode)(event)
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Some(Err((self.stream_error)(e, &self.what, self.stall)));
                }
                Err(_) => {
                    self.done = true;
                    let message = format!("{} stalled for {:?}", self.what, self.stall);
                    return Some(Err(UpstreamError::Timeout(message)));
                }
            };
            match decoded {
                Ok(out) if out.is_empty() => {}
                Ok(out) => return Some(Ok(Bytes::from(out))),
                Err(message) => {
                    self.done = true;
                    let message = format!("{}: {message}", self.what);
                    return Some(Err(UpstreamError::Failed(message)));
                }
            }
        }
        None
    }
}

/// Maps an SDK failure that is not the service's own error answer (those each provider maps
/// by code); messages name the deployment (`what`), never the endpoint or the credential.
pub fn transport_error<E, R>(
    error: &SdkError<E, R>,
    what: &str,
    limit: Duration,
    service: &str,
) -> UpstreamError
where
    E: std::error::Error + Send + Sync + 'static,
    R: Debug + 'static,
{
    match error {
        SdkError::TimeoutError(_) => {
            UpstreamError::Timeout(format!("{what} did not answer within {limit:?}"))
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            UpstreamError::Timeout(format!("{what} did not answer within {limit:?}"))
        }
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            if let Some(local) = local_shortage(error, what) {
                return local;
            }
            tracing::warn!(error = %DisplayErrorContext(error), "{what}: could not reach {service}");
            UpstreamError::Failed(format!("could not connect to {what}"))
        }
        _ => {
            tracing::warn!(error = %DisplayErrorContext(error), "{what}: {service} call failed");
            if mentions_credentials(error) {
                // The standard chain found nothing (no env, profile, task or pod role).
                UpstreamError::Failed(format!(
                    "{what}: no AWS credentials for {service} (give the deployment a credential, \
                     or the edge an AWS identity)"
                ))
            } else {
                UpstreamError::Failed(format!(
                    "{what} failed: the call to {service} did not complete"
                ))
            }
        }
    }
}

/// Maps an SDK failure: the service's own error answer by `answer` (given it and the
/// answer's `retry-after`), anything else as a transport failure of `service`.
pub fn sdk_error<E, R>(
    error: SdkError<E, R>,
    what: &str,
    limit: Duration,
    service: &str,
    answer: impl FnOnce(&E, Option<String>) -> UpstreamError,
) -> UpstreamError
where
    E: std::error::Error + Send + Sync + 'static,
    R: Debug + 'static,
{
    match &error {
        SdkError::ServiceError(context) => answer(context.err(), raw_retry_after(context.raw())),
        _ => transport_error(&error, what, limit, service),
    }
}

/// Maps the error codes AWS services share (throttling, validation, refused credentials);
/// each service maps its own codes before falling back to this.
pub fn service_error(
    service: &str,
    code: &str,
    message: Option<&str>,
    retry_after: Option<String>,
    what: &str,
) -> UpstreamError {
    // In-stream exceptions are named in lower camel case (`throttlingException`).
    let matches = |name: &str| code.eq_ignore_ascii_case(name);
    if matches("ThrottlingException")
        || matches("ServiceQuotaExceededException")
        || matches("TooManyRequestsException")
    {
        UpstreamError::RateLimited { retry_after }
    } else if matches("ValidationException") {
        rejected(service, message, what)
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
        UpstreamError::Failed(format!("{what}: {service} refused the credentials"))
    } else if code.is_empty() {
        UpstreamError::Failed(format!("{what} failed: {service} answered with an error"))
    } else {
        UpstreamError::Failed(format!("{what} failed: {service} answered {code}"))
    }
}

/// The service refused the request as invalid: a 400 with its message (at most 1000
/// characters), or a sentence saying so.
pub fn rejected(service: &str, message: Option<&str>, what: &str) -> UpstreamError {
    UpstreamError::Rejected {
        status: 400,
        message: message
            .map(super::upstream_message)
            .unwrap_or_else(|| format!("{what}: {service} rejected the request")),
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

/// `retry-after` of an HTTP error response, when the raw response is one (every AWS SDK
/// re-exports the same smithy response type).
pub fn raw_retry_after<R: 'static>(raw: &R) -> Option<String> {
    (raw as &dyn std::any::Any)
        .downcast_ref::<aws_sdk_bedrockruntime::config::http::HttpResponse>()
        .and_then(|r| r.headers().get("retry-after"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use aws_smithy_runtime_api::client::result::ConnectorError;

    use super::*;

    /// As for the HTTP providers: a connect that found this process out of file descriptors is
    /// the edge's shortage, not the AWS endpoint's failure.
    #[test]
    fn running_out_of_file_descriptors_is_the_edges_failure() {
        let io = std::io::Error::from_raw_os_error(libc::EMFILE);
        let error: SdkError<std::io::Error, ()> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
        let mapped = transport_error(&error, "deployment d1", Duration::from_secs(1), "Bedrock");
        assert!(
            matches!(&mapped, UpstreamError::Local(m)
                if m == "deployment d1 was not called: this gateway is out of file descriptors"),
            "{mapped:?}"
        );
    }
}
