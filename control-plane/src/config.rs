//! The control plane's configuration: one typed struct, read from the environment through a
//! lookup function so tests can feed it a map.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_policy::redact;
use tollgate_policy::sealing::{SealingError, SealingKey};
use tollgate_proto::envelope::KekSettings;
use tollgate_proto::http_serve::metrics_addr;
use tollgate_proto::tls::{ClientTls, TlsFiles};

use crate::console::ConsoleConfig;
use crate::trust::{PolicySigning, TrustConfig};
use tollgate_proto::signing::{KeySettingError, private_key_setting, public_key_setting};

/// Default `TOLLGATE_ADMIN_ADDR`.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:50051";
/// Default `TOLLGATE_UI_ADDR`.
pub const DEFAULT_UI_ADDR: &str = "127.0.0.1:4080";
/// Default `TOLLGATE_USAGE_URL`: the usage API the console reads spend from.
pub const DEFAULT_USAGE_URL: &str = "http://127.0.0.1:50052";
/// Default prefix of the JetStream streams and subjects.
pub const DEFAULT_BUS_PREFIX: &str = "tollgate";

/// Everything the control plane needs to run.
#[derive(Clone)]
pub struct ControlPlaneConfig {
    /// `TOLLGATE_ADMIN_ADDR`: where the gRPC admin API listens.
    pub admin_addr: SocketAddr,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// `NATS_URL`: the JetStream server policy events are relayed to.
    pub nats_url: String,
    /// `TOLLGATE_BUS_PREFIX`: prefix of stream and subject names (default `tollgate`).
    pub bus_prefix: String,
    /// `TOLLGATE_ADMIN_TOKEN`: the bootstrap admin token, if any.
    pub admin_token: Option<String>,
    /// `TOLLGATE_CREDENTIAL_KEY`: base64 32-byte key sealing provider credentials, if any.
    pub credential_key: Option<SealingKey>,
    /// `TOLLGATE_KMS_KEY_ID` (and the `…_PREVIOUS` keys while rotating): the key encryption
    /// keys that wrap credentials' data keys.
    pub kek: KekSettings,
    /// `TOLLGATE_UI_ADDR`: where the web console listens (default `127.0.0.1:4080`; `off`:
    /// not served), and how it keeps sessions.
    pub console: Option<(SocketAddr, ConsoleConfig)>,
    /// `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY` (and `TOLLGATE_TLS_CLIENT_CA` for mutual TLS):
    /// the admin API and the console serve TLS only.
    pub tls: Option<TlsFiles>,
    /// `TOLLGATE_METRICS_ADDR`: where `/metrics` is served instead of on the admin API's port.
    pub metrics_addr: Option<SocketAddr>,
    /// `TOLLGATE_POLICY_SIGNING_KEY` (and `…_PREVIOUS` while rotating) and
    /// `TOLLGATE_STATUS_PUBLIC_KEY`: how policy is signed, and the budget status key it names.
    pub trust: TrustConfig,
}

/// Secrets show as `***`, URL passwords too.
impl std::fmt::Debug for ControlPlaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneConfig")
            .field("admin_addr", &self.admin_addr)
            .field("database_url", &redact::url(&self.database_url))
            .field("nats_url", &redact::url(&self.nats_url))
            .field("bus_prefix", &self.bus_prefix)
            .field("admin_token", &redact::option(&self.admin_token))
            .field("credential_key", &self.credential_key)
            .field("kek", &self.kek)
            .field("console", &self.console)
            .field("tls", &self.tls)
            .field("metrics_addr", &self.metrics_addr)
            .field("trust", &self.trust)
            .finish()
    }
}

/// A setting that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl From<KeySettingError> for ConfigError {
    fn from(e: KeySettingError) -> Self {
        ConfigError::Invalid {
            name: e.name,
            reason: e.reason.to_string(),
        }
    }
}

impl ControlPlaneConfig {
    /// Reads the configuration from `lookup` (normally the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let admin_addr =
            get("TOLLGATE_ADMIN_ADDR").unwrap_or_else(|| DEFAULT_ADMIN_ADDR.to_owned());
        Ok(ControlPlaneConfig {
            admin_addr: admin_addr.parse().map_err(|e: std::net::AddrParseError| {
                ConfigError::Invalid {
                    name: "TOLLGATE_ADMIN_ADDR",
                    reason: e.to_string(),
                }
            })?,
            database_url: get("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL"))?,
            nats_url: get("NATS_URL").ok_or(ConfigError::Missing("NATS_URL"))?,
            bus_prefix: get("TOLLGATE_BUS_PREFIX").unwrap_or_else(|| DEFAULT_BUS_PREFIX.to_owned()),
            admin_token: get("TOLLGATE_ADMIN_TOKEN"),
            credential_key: get("TOLLGATE_CREDENTIAL_KEY")
                .map(|k| SealingKey::from_base64(&k))
                .transpose()
                .map_err(|e: SealingError| ConfigError::Invalid {
                    name: "TOLLGATE_CREDENTIAL_KEY",
                    reason: e.to_string(),
                })?,
            kek: KekSettings::from_settings(get).map_err(|name| ConfigError::Invalid {
                name,
                reason: "expected 32 bytes in base64 (openssl rand -base64 32)".to_owned(),
            })?,
            console: console_from_lookup(&lookup)?,
            tls: TlsFiles::from_settings(get).map_err(ConfigError::Missing)?,
            metrics_addr: metrics_addr(get).map_err(|reason| ConfigError::Invalid {
                name: "TOLLGATE_METRICS_ADDR",
                reason,
            })?,
            trust: trust_from_lookup(get)?,
        })
    }
}

fn trust_from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<TrustConfig, ConfigError> {
    let current = private_key_setting(&get, "TOLLGATE_POLICY_SIGNING_KEY")?;
    let previous = private_key_setting(&get, "TOLLGATE_POLICY_SIGNING_KEY_PREVIOUS")?;
    let signing = match (current, previous) {
        (Some(current), previous) => Some(PolicySigning::new(current, previous)),
        (None, Some(_)) => return Err(ConfigError::Missing("TOLLGATE_POLICY_SIGNING_KEY")),
        (None, None) => None,
    };
    Ok(TrustConfig {
        signing,
        status_key: public_key_setting(&get, "TOLLGATE_STATUS_PUBLIC_KEY")?,
    })
}

/// The web console's address and settings from `TOLLGATE_UI_ADDR`,
/// `TOLLGATE_UI_SESSION_IDLE_SECONDS` (default 1800), `TOLLGATE_USAGE_URL` (the usage API,
/// default `http://127.0.0.1:50052`) and the edge's `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY`
/// (HTTPS, and `Secure` session cookies); `None` when `TOLLGATE_UI_ADDR=off`.
pub fn console_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<(SocketAddr, ConsoleConfig)>, ConfigError> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let addr = get("TOLLGATE_UI_ADDR").unwrap_or_else(|| DEFAULT_UI_ADDR.to_owned());
    if addr.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr = addr
        .trim()
        .parse()
        .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
            name: "TOLLGATE_UI_ADDR",
            reason: format!("{e} (an address like 127.0.0.1:4080, or off)"),
        })?;
    let idle = match get("TOLLGATE_UI_SESSION_IDLE_SECONDS") {
        None => ConsoleConfig::default().session_idle,
        Some(seconds) => match seconds.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Duration::from_secs(seconds),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_UI_SESSION_IDLE_SECONDS",
                    reason: format!("a whole number of seconds above 0, got {seconds:?}"),
                });
            }
        },
    };
    let usage_url = get("TOLLGATE_USAGE_URL").unwrap_or_else(|| DEFAULT_USAGE_URL.to_owned());
    let config = ConsoleConfig {
        session_idle: idle,
        usage_url: Some(usage_url),
        tls: TlsFiles::from_settings(get).map_err(ConfigError::Missing)?,
        usage_tls: ClientTls::from_settings(get).map_err(ConfigError::Missing)?,
    };
    Ok(Some((addr, config)))
}
