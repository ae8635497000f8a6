//! The control plane's configuration: one typed struct, read from the environment through a
//! lookup function so tests can feed it a map.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_policy::redact::{Secret, SecretUrl};
use tollgate_policy::sealing::SealingKey;
use tollgate_runtime::bus::BusSettings;
use tollgate_runtime::envelope::KekSettings;
use tollgate_runtime::settings::Settings;
use tollgate_runtime::tls::{ClientTls, TlsFiles};

use crate::console::ConsoleConfig;
use crate::trust::{PolicySigning, TrustConfig};

pub use tollgate_runtime::settings::ConfigError;

/// Default `TOLLGATE_ADMIN_ADDR`.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:50051";
/// Default `TOLLGATE_UI_ADDR`.
pub const DEFAULT_UI_ADDR: &str = "127.0.0.1:4080";
/// Default `TOLLGATE_USAGE_URL`: the usage API the console reads spend from.
pub const DEFAULT_USAGE_URL: &str = "http://127.0.0.1:50052";

/// Everything the control plane needs to run; secrets are typed so that `Debug` hides them.
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// `TOLLGATE_ADMIN_ADDR`: where the gRPC admin API listens.
    pub admin_addr: SocketAddr,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`.
    pub database_url: SecretUrl,
    /// `NATS_URL` (the JetStream server policy events are relayed to), `TOLLGATE_BUS_PREFIX`
    /// and the `NATS_*` credentials.
    pub bus: BusSettings,
    /// `TOLLGATE_ADMIN_TOKEN`: the bootstrap admin token, if any.
    pub admin_token: Option<Secret>,
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

impl ControlPlaneConfig {
    /// Reads the configuration from `lookup` (normally the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Settings::new(lookup);
        Ok(ControlPlaneConfig {
            admin_addr: settings.addr("TOLLGATE_ADMIN_ADDR", DEFAULT_ADMIN_ADDR)?,
            database_url: settings.required("DATABASE_URL")?.into(),
            bus: settings.bus()?,
            admin_token: settings.get("TOLLGATE_ADMIN_TOKEN").map(Secret::from),
            credential_key: settings.credential_key()?,
            kek: settings.kek()?,
            console: console_from_settings(&settings)?,
            tls: settings.tls()?,
            metrics_addr: settings.metrics_addr()?,
            trust: trust_from_settings(&settings)?,
        })
    }
}

fn trust_from_settings(
    settings: &Settings<impl Fn(&str) -> Option<String>>,
) -> Result<TrustConfig, ConfigError> {
    let current = settings.private_key("TOLLGATE_POLICY_SIGNING_KEY")?;
    let previous = settings.private_key("TOLLGATE_POLICY_SIGNING_KEY_PREVIOUS")?;
    let signing = match (current, previous) {
        (Some(current), previous) => Some(PolicySigning::new(current, previous)),
        (None, Some(_)) => return Err(ConfigError::Missing("TOLLGATE_POLICY_SIGNING_KEY")),
        (None, None) => None,
    };
    Ok(TrustConfig {
        signing,
        status_key: settings.public_key("TOLLGATE_STATUS_PUBLIC_KEY")?,
    })
}

/// The web console's address and settings from `TOLLGATE_UI_ADDR`,
/// `TOLLGATE_UI_SESSION_IDLE_SECONDS` (default 1800), `TOLLGATE_USAGE_URL` (the usage API,
/// default `http://127.0.0.1:50052`) and the edge's `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY`
/// (HTTPS, and `Secure` session cookies); `None` when `TOLLGATE_UI_ADDR=off`.
pub fn console_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<(SocketAddr, ConsoleConfig)>, ConfigError> {
    console_from_settings(&Settings::new(lookup))
}

fn console_from_settings(
    settings: &Settings<impl Fn(&str) -> Option<String>>,
) -> Result<Option<(SocketAddr, ConsoleConfig)>, ConfigError> {
    let get = |name: &str| settings.get(name);
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
        tls: settings.tls()?,
        usage_tls: ClientTls::from_settings(get).map_err(ConfigError::Missing)?,
    };
    Ok(Some((addr, config)))
}
