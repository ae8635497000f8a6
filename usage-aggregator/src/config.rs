//! The aggregator's configuration: one typed struct, read from the environment through a
//! lookup function so tests can feed it a map.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_policy::redact::{Secret, SecretUrl};
use tollgate_runtime::bus::BusSettings;
use tollgate_runtime::process::ControlPlaneLink;
use tollgate_runtime::settings::Settings;
use tollgate_runtime::tls::TlsFiles;

use crate::AggregatorKeys;
use crate::alerts::AlertSinks;

pub use tollgate_runtime::settings::ConfigError;

/// Default `TOLLGATE_USAGE_ADDR` (gRPC `UsageService`).
pub const DEFAULT_USAGE_ADDR: &str = "127.0.0.1:50052";
/// Default `TOLLGATE_USAGE_HTTP_ADDR` (CSV export).
pub const DEFAULT_USAGE_HTTP_ADDR: &str = "127.0.0.1:4001";

/// Everything the aggregator needs to run; secrets are typed so that `Debug` hides them.
#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    /// `TOLLGATE_USAGE_ADDR`.
    pub usage_addr: SocketAddr,
    /// `TOLLGATE_USAGE_HTTP_ADDR`.
    pub usage_http_addr: SocketAddr,
    /// `DATABASE_URL`: the usage ledger (`postgres://…` or `sqlite://…`).
    pub database_url: SecretUrl,
    /// `NATS_URL`, `TOLLGATE_BUS_PREFIX` (default `tollgate`) and the `NATS_*` credentials.
    pub bus: BusSettings,
    /// `TOLLGATE_ADMIN_TOKEN`: the bootstrap admin token, accepted for finance calls.
    pub admin_token: Option<Secret>,
    /// `TOLLGATE_CONTROL_PLANE_URL`, `TOLLGATE_EDGE_TOKEN` and the client TLS settings: where
    /// policy snapshots come from.
    pub control_plane: ControlPlaneLink,
    /// `TOLLGATE_ALERT_WEBHOOK_URL`, `TOLLGATE_ALERT_WEBHOOK_SECRET`, `TOLLGATE_ALERT_SLACK_URL`,
    /// `TOLLGATE_ALERT_NATS` (`true` to publish alerts on the ALERTS topic).
    pub sinks: AlertSinks,
    /// `TOLLGATE_USAGE_BATCH` (default 500): events per ledger transaction.
    pub batch: usize,
    /// `TOLLGATE_USAGE_LINGER_MS` (default 20): after a batch smaller than `batch`, how long
    /// the next one gathers before it is read, so that usage under steady load is written in
    /// a few large transactions rather than many small ones.
    pub linger: Duration,
    /// `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY` (and `TOLLGATE_TLS_CLIENT_CA` for mutual TLS):
    /// the usage API and the CSV export serve TLS only.
    pub tls: Option<TlsFiles>,
    /// `TOLLGATE_METRICS_ADDR`: where `/metrics` is served instead of beside the CSV export.
    pub metrics_addr: Option<SocketAddr>,
    /// `TOLLGATE_POLICY_PUBLIC_KEY` and `TOLLGATE_STATUS_SIGNING_KEY`.
    pub keys: AggregatorKeys,
}

/// How long a batch gathers after a smaller one when `TOLLGATE_USAGE_LINGER_MS` is unset.
pub const DEFAULT_LINGER_MS: u64 = 20;

/// The longest linger accepted: budget statuses follow the ledger, and a status older than
/// a second would let edges spend from a stale view.
const MAX_LINGER_MS: u64 = 1_000;

/// `TOLLGATE_USAGE_LINGER_MS` as a duration, refused above [`MAX_LINGER_MS`].
fn linger(ms: u64) -> Result<Duration, ConfigError> {
    if ms > MAX_LINGER_MS {
        return Err(ConfigError::invalid(
            "TOLLGATE_USAGE_LINGER_MS",
            format!("{ms} ms is longer than the {MAX_LINGER_MS} ms a batch may gather"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// An alert URL: http(s), and never a link-local or cloud metadata address (an alert would
/// otherwise be a way to make the aggregator call one).
fn alert_url(url: Option<String>, name: &'static str) -> Result<Option<Secret>, ConfigError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| ConfigError::invalid(name, e))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            name,
            "must be an http:// or https:// URL",
        ));
    }
    let host = parsed.host_str().unwrap_or_default();
    if let Some(why) = tollgate_policy::egress::forbidden_host(host) {
        return Err(ConfigError::invalid(name, why));
    }
    Ok(Some(url.into()))
}

impl AggregatorConfig {
    /// Reads the configuration from `lookup` (normally the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Settings::new(lookup);
        let get = |name: &str| settings.get(name);
        Ok(AggregatorConfig {
            usage_addr: settings.addr("TOLLGATE_USAGE_ADDR", DEFAULT_USAGE_ADDR)?,
            usage_http_addr: settings.addr("TOLLGATE_USAGE_HTTP_ADDR", DEFAULT_USAGE_HTTP_ADDR)?,
            database_url: settings.required("DATABASE_URL")?.into(),
            bus: settings.bus()?,
            admin_token: get("TOLLGATE_ADMIN_TOKEN").map(Secret::from),
            control_plane: settings.control_plane()?,
            sinks: AlertSinks {
                webhook_url: alert_url(
                    get("TOLLGATE_ALERT_WEBHOOK_URL"),
                    "TOLLGATE_ALERT_WEBHOOK_URL",
                )?,
                webhook_secret: get("TOLLGATE_ALERT_WEBHOOK_SECRET").map(Secret::from),
                slack_url: alert_url(get("TOLLGATE_ALERT_SLACK_URL"), "TOLLGATE_ALERT_SLACK_URL")?,
                bus: get("TOLLGATE_ALERT_NATS").is_some_and(|v| v == "true" || v == "1"),
                egress: Default::default(),
            },
            batch: settings.parsed("TOLLGATE_USAGE_BATCH", 500)?,
            linger: linger(settings.parsed("TOLLGATE_USAGE_LINGER_MS", DEFAULT_LINGER_MS)?)?,
            tls: settings.tls()?,
            metrics_addr: settings.metrics_addr()?,
            keys: AggregatorKeys {
                policy: settings.public_key("TOLLGATE_POLICY_PUBLIC_KEY")?,
                status: settings.private_key("TOLLGATE_STATUS_SIGNING_KEY")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_plane_without_an_edge_token_is_a_configuration_error() {
        let refused = with("TOLLGATE_CONTROL_PLANE_URL", "https://cp.internal:50051");
        let message = refused.map(drop).map_err(|e| e.to_string());
        assert_eq!(message, Err("TOLLGATE_EDGE_TOKEN is required".to_owned()));
    }

    fn with(name: &str, value: &str) -> Result<AggregatorConfig, ConfigError> {
        let map = [
            ("DATABASE_URL", "sqlite://x.db"),
            ("NATS_URL", "nats://127.0.0.1:4222"),
            (name, value),
        ];
        AggregatorConfig::from_lookup(|key| {
            map.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_linger_is_milliseconds_up_to_a_second() {
        let linger = |value| with("TOLLGATE_USAGE_LINGER_MS", value).map(|c| c.linger);
        assert_eq!(linger("0").ok(), Some(Duration::ZERO));
        assert_eq!(linger("250").ok(), Some(Duration::from_millis(250)));
        let default = with("TOLLGATE_USAGE_BATCH", "500").map(|c| c.linger);
        assert_eq!(default.ok(), Some(Duration::from_millis(20)));
        for wrong in ["1001", "-5", "soon"] {
            let refused = linger(wrong).err().map(|e| e.to_string());
            assert!(
                refused.is_some_and(|m| m.contains("TOLLGATE_USAGE_LINGER_MS")),
                "{wrong}"
            );
        }
    }

    #[test]
    fn alert_urls_never_name_a_metadata_service() {
        for bad in [
            "http://169.254.169.254/latest/meta-data/iam",
            "http://[fe80::1]/hook",
            "http://metadata.google.internal/computeMetadata/v1",
            "file:///etc/passwd",
        ] {
            assert!(with("TOLLGATE_ALERT_WEBHOOK_URL", bad).is_err(), "{bad}");
            assert!(with("TOLLGATE_ALERT_SLACK_URL", bad).is_err(), "{bad}");
        }
        assert!(with("TOLLGATE_ALERT_WEBHOOK_URL", "https://hooks.example.com/x").is_ok());
        assert!(with("TOLLGATE_ALERT_WEBHOOK_URL", "http://10.0.0.8:9000/x").is_ok());
    }
}
