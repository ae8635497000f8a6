//! The edge's configuration: one typed struct, read from the environment through a lookup
//! function so tests can feed it a map.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_policy::egress::Networks;
use tollgate_policy::sealing::SealingKey;
use tollgate_runtime::bus::BusSettings;
use tollgate_runtime::envelope::KekSettings;
use tollgate_runtime::http_serve::Limits;
use tollgate_runtime::process::ControlPlaneLink;
use tollgate_runtime::settings::Settings;
use tollgate_runtime::signing::PublicKey;
use tollgate_runtime::tls::TlsFiles;

pub use tollgate_runtime::settings::ConfigError;

use crate::clock::Clock;
use crate::health::CircuitSettings;

/// Default `TOLLGATE_EDGE_ADDR`.
pub const DEFAULT_EDGE_ADDR: &str = "127.0.0.1:4000";

/// Everything an edge needs to run; secrets are typed so that `Debug` hides them.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// `TOLLGATE_EDGE_ADDR`: where the HTTP API listens.
    pub addr: SocketAddr,
    /// `TOLLGATE_METRICS_ADDR`: where `/metrics` is served instead of on `addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// `TOLLGATE_EDGE_ID`: this edge's name in usage events (default: a random id).
    pub edge_id: String,
    /// `TOLLGATE_REGION`: the region recorded in usage events.
    pub region: String,
    /// `TOLLGATE_CONTROL_PLANE_URL`, `TOLLGATE_EDGE_TOKEN` and the client TLS settings: where
    /// snapshots come from; without a URL the edge builds policy from the stream alone.
    pub control_plane: ControlPlaneLink,
    /// `NATS_URL`, `TOLLGATE_BUS_PREFIX` (default `tollgate`) and the `NATS_*` credentials.
    pub bus: BusSettings,
    /// `TOLLGATE_CREDENTIAL_KEY`: opens provider credentials.
    pub credential_key: Option<SealingKey>,
    /// `TOLLGATE_KMS_KEY_ID` (and the `…_PREVIOUS` keys while rotating): the key encryption
    /// keys that unwrap credentials' data keys.
    pub kek: KekSettings,
    /// `TOLLGATE_MAX_BODY_BYTES` (default 10 MiB): larger requests get 413.
    pub max_body_bytes: usize,
    /// `TOLLGATE_USAGE_BUFFER` (default 100,000): usage events held while the bus is away.
    pub usage_buffer: usize,
    /// `TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_MS` (default 5,000).
    pub connect_timeout: Duration,
    /// `TOLLGATE_UPSTREAM_TIMEOUT_MS` (default 600,000): a whole non-streaming call.
    pub upstream_timeout: Duration,
    /// `TOLLGATE_FIRST_BYTE_TIMEOUT_MS` (default 60,000): until a stream starts, and between chunks.
    pub first_byte_timeout: Duration,
    /// `TOLLGATE_REQUEST_TIMEOUT_MS` (default: the upstream timeout): a request's deadline,
    /// retries and fallbacks included, when neither the client (`x-tollgate-timeout`) nor the
    /// model's routing rule sets one.
    pub request_timeout: Option<Duration>,
    /// `TOLLGATE_MAX_RETRIES` (default 2): retries per model without a routing rule.
    pub max_retries: u32,
    /// `TOLLGATE_RETRY_BACKOFF_MS` (default 100): the first retry's back-off ceiling, doubled
    /// for each further retry (full jitter: the wait is uniform below the ceiling).
    pub retry_backoff: Duration,
    /// `TOLLGATE_RETRY_BACKOFF_MAX_MS` (default 5,000): the largest back-off ceiling.
    pub retry_backoff_max: Duration,
    /// `TOLLGATE_MAX_RETRY_WAIT_MS` (default 5,000): the longest an edge waits to retry a
    /// deployment (a longer `retry-after` is passed on to the client instead).
    pub max_retry_wait: Duration,
    /// `TOLLGATE_ALLOWED_FAILS` (default 3), `TOLLGATE_FAILURE_WINDOW_MS` (default 60,000),
    /// `TOLLGATE_COOLDOWN_MS` (default 5,000): a deployment's circuit opens after that many
    /// failures within the window (or half its requests failing, from 10 requests), and lets a
    /// probe through after the cooldown.
    pub circuit: CircuitSettings,
    /// `TOLLGATE_HEADER_READ_TIMEOUT_MS` (default 10,000: a request head must arrive within it,
    /// and a kept-alive connection is closed after that long idle), `TOLLGATE_MAX_CONNECTIONS`
    /// (default 10,000: served at once; more wait in the listen backlog),
    /// `TOLLGATE_BODY_READ_TIMEOUT_MS` (default 30,000: a request body must arrive within it).
    pub listener: Limits,
    pub body_read_timeout: Duration,
    /// `TOLLGATE_ABANDONED_STREAM_GRACE_MS` (default 30,000): how long the upstream of a stream
    /// whose client hung up is read on for the provider's final usage.
    pub abandoned_stream_grace: Duration,
    /// `TOLLGATE_MAX_STREAM_SECONDS` (default 3,600): the longest a streamed answer may run,
    /// from the request's arrival; then it is ended with an in-band `upstream_timeout` error.
    pub max_stream_duration: Duration,
    /// `TOLLGATE_RATE_LIMIT_WINDOW_MS` (default 60,000): the "minute" of rpm and tpm limits.
    /// Only tests shorten it.
    pub rate_limit_window: Duration,
    /// `TOLLGATE_UPSTREAM_NETWORKS` (default `loopback,private`; or `none`): besides public
    /// addresses, the networks provider calls may reach. Link-local and cloud metadata
    /// addresses are never reachable.
    pub upstream_networks: Networks,
    /// `TOLLGATE_TLS_CERT` and `TOLLGATE_TLS_KEY` (PEM paths, both or neither): the listener
    /// serves HTTPS, reloading the files when they change or on SIGHUP.
    pub tls: Option<TlsFiles>,
    /// `TOLLGATE_CACHE_MAX_BYTES` (default 256 MiB): the most answer bytes this edge's
    /// response cache holds; the least recently used go first.
    pub cache_max_bytes: u64,
    /// `TOLLGATE_POLICY_PUBLIC_KEY`: apply only policy signed by this key (or by a key it
    /// handed over to), and budget statuses signed by the key policy names.
    pub policy_key: Option<PublicKey>,
    /// The wall clock budget periods are judged by: the system's, except where tests set their own.
    pub clock: Clock,
}

impl EdgeConfig {
    /// Reads the configuration from `lookup` (normally the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Settings::new(lookup);
        let get = |name: &str| settings.get(name);
        let number = |name: &'static str, default: u64| settings.parsed(name, default);
        Ok(EdgeConfig {
            addr: settings.addr("TOLLGATE_EDGE_ADDR", DEFAULT_EDGE_ADDR)?,
            metrics_addr: settings.metrics_addr()?,
            edge_id: get("TOLLGATE_EDGE_ID").unwrap_or_else(|| {
                format!("edge-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
            }),
            region: get("TOLLGATE_REGION").unwrap_or_default(),
            control_plane: settings.control_plane()?,
            bus: settings.bus()?,
            credential_key: settings.credential_key()?,
            kek: settings.kek()?,
            max_body_bytes: number("TOLLGATE_MAX_BODY_BYTES", 10 * 1024 * 1024)? as usize,
            usage_buffer: number("TOLLGATE_USAGE_BUFFER", 100_000)? as usize,
            connect_timeout: Duration::from_millis(number(
                "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_MS",
                5_000,
            )?),
            upstream_timeout: Duration::from_millis(number(
                "TOLLGATE_UPSTREAM_TIMEOUT_MS",
                600_000,
            )?),
            first_byte_timeout: Duration::from_millis(number(
                "TOLLGATE_FIRST_BYTE_TIMEOUT_MS",
                60_000,
            )?),
            request_timeout: get("TOLLGATE_REQUEST_TIMEOUT_MS")
                .map(|_| number("TOLLGATE_REQUEST_TIMEOUT_MS", 0).map(Duration::from_millis))
                .transpose()?,
            max_retries: number("TOLLGATE_MAX_RETRIES", 2)?.min(10) as u32,
            retry_backoff: Duration::from_millis(number("TOLLGATE_RETRY_BACKOFF_MS", 100)?),
            retry_backoff_max: Duration::from_millis(number(
                "TOLLGATE_RETRY_BACKOFF_MAX_MS",
                5_000,
            )?),
            max_retry_wait: Duration::from_millis(number("TOLLGATE_MAX_RETRY_WAIT_MS", 5_000)?),
            circuit: CircuitSettings {
                allowed_fails: number("TOLLGATE_ALLOWED_FAILS", 3)?.clamp(1, 1_000) as u32,
                window: Duration::from_millis(number("TOLLGATE_FAILURE_WINDOW_MS", 60_000)?.max(1)),
                cooldown: Duration::from_millis(number("TOLLGATE_COOLDOWN_MS", 5_000)?),
                ..CircuitSettings::default()
            },
            listener: Limits {
                header_read_timeout: Duration::from_millis(
                    number("TOLLGATE_HEADER_READ_TIMEOUT_MS", 10_000)?.max(1),
                ),
                max_connections: number("TOLLGATE_MAX_CONNECTIONS", 10_000)?.max(1) as usize,
                ..Limits::default()
            },
            body_read_timeout: Duration::from_millis(
                number("TOLLGATE_BODY_READ_TIMEOUT_MS", 30_000)?.max(1),
            ),
            abandoned_stream_grace: Duration::from_millis(number(
                "TOLLGATE_ABANDONED_STREAM_GRACE_MS",
                30_000,
            )?),
            max_stream_duration: Duration::from_secs(
                number("TOLLGATE_MAX_STREAM_SECONDS", 3_600)?.max(1),
            ),
            rate_limit_window: Duration::from_millis(
                number("TOLLGATE_RATE_LIMIT_WINDOW_MS", 60_000)?.max(100),
            ),
            upstream_networks: get("TOLLGATE_UPSTREAM_NETWORKS")
                .map(|v| Networks::parse(&v))
                .transpose()
                .map_err(|reason| ConfigError::invalid("TOLLGATE_UPSTREAM_NETWORKS", reason))?
                .unwrap_or_default(),
            tls: settings.tls()?,
            cache_max_bytes: number("TOLLGATE_CACHE_MAX_BYTES", 256 * 1024 * 1024)?,
            policy_key: settings.public_key("TOLLGATE_POLICY_PUBLIC_KEY")?,
            clock: Clock::system(),
        })
    }

    /// Defaults for an edge that tests or `tollgate up` configure in code.
    pub fn local(nats_url: &str) -> Self {
        let map = [
            ("NATS_URL", nats_url.to_owned()),
            ("TOLLGATE_EDGE_ADDR", "127.0.0.1:0".to_owned()),
        ];
        Self::from_lookup(|name| map.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_plane_without_an_edge_token_is_a_configuration_error() {
        // The admin token is never borrowed for following policy.
        let lookup = |name: &str| match name {
            "NATS_URL" => Some("nats://127.0.0.1:4222".to_owned()),
            "TOLLGATE_CONTROL_PLANE_URL" => Some("https://cp.internal:50051".to_owned()),
            "TOLLGATE_ADMIN_TOKEN" => Some("tga-the-bootstrap-token".to_owned()),
            _ => None,
        };
        let message = EdgeConfig::from_lookup(lookup)
            .map(drop)
            .map_err(|e| e.to_string());
        assert_eq!(message, Err("TOLLGATE_EDGE_TOKEN is required".to_owned()));
    }
}
