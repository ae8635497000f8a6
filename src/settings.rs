//! Configuration for every role from one place: a TOML file (`TOLLGATE_CONFIG`) overridden by
//! the environment. Each setting has one name: the environment variable (`TOLLGATE_EDGE_ADDR`,
//! `DATABASE_URL`) or, in the file, the same name in lower case without `TOLLGATE_`
//! (`edge_addr`, `database_url`), at the top level or in the role's section
//! (`[control_plane]`, `[edge]`, `[aggregator]`, `[up]`). The file may also declare models.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The settings a file may hold (file names of the environment variables in the README).
const KNOWN: &[&str] = &[
    "abandoned_stream_grace_ms",
    "admin_addr",
    "admin_token",
    "alert_nats",
    "alert_slack_url",
    "alert_webhook_secret",
    "alert_webhook_url",
    "allowed_fails",
    "body_read_timeout_ms",
    "bus_prefix",
    "control_plane_url",
    "cooldown_ms",
    "credential_key",
    "data_dir",
    "database_url",
    "edge_addr",
    "edge_id",
    "edge_token",
    "failure_window_ms",
    "first_byte_timeout_ms",
    "header_read_timeout_ms",
    "max_body_bytes",
    "max_connections",
    "max_retries",
    "max_retry_wait_ms",
    "max_stream_seconds",
    "metrics_addr",
    "nats_creds",
    "nats_nkey_seed",
    "nats_password",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    "nats_token",
    "nats_url",
    "nats_user",
    "rate_limit_window_ms",
    "region",
    "request_timeout_ms",
    "retry_backoff_max_ms",
    "retry_backoff_ms",
    "tls_ca",
    "tls_cert",
    "tls_client_ca",
    "tls_client_cert",
    "tls_client_key",
    "tls_key",
    "upstream_connect_timeout_ms",
    "upstream_networks",
    "upstream_timeout_ms",
    "usage_addr",
    "usage_batch",
    "usage_linger_ms",
    "usage_buffer",
    "usage_http_addr",
];
const SECTIONS: &[&str] = &["control_plane", "edge", "aggregator", "up"];

/// A model declared in the file, applied on start as ordinary admin commands.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients ask for.
    pub name: String,
    pub provider: String,
    #[serde(default)]
    pub upstream_model: String,
    #[serde(default)]
    pub api_base: String,
    #[serde(default)]
    pub region: String,
    /// The environment variable holding the provider's API key, stored as a sealed credential.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub weight: u32,
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub input_per_mtok: Option<f64>,
    #[serde(default)]
    pub output_per_mtok: Option<f64>,
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// The configuration file, parsed and checked.
#[derive(Debug, Default)]
pub struct Settings {
    shared: BTreeMap<String, String>,
    sections: BTreeMap<String, BTreeMap<String, String>>,
    /// Declared models.
    pub models: Vec<ModelConfig>,
}

impl Settings {
    /// Reads the file named by `TOLLGATE_CONFIG`, if any.
    pub fn load() -> anyhow::Result<Self> {
        match std::env::var("TOLLGATE_CONFIG")
            .ok()
            .filter(|p| !p.is_empty())
        {
            Some(path) => Self::from_file(Path::new(&path)),
            None => Ok(Settings::default()),
        }
    }

    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let table: toml::Table = text.parse()?;
        let mut settings = Settings::default();
        for (key, value) in table {
            match (key.as_str(), value) {
                ("models", value) => {
                    settings.models = value.try_into().context("in [[models]]")?;
                }
                (section, toml::Value::Table(values)) if SECTIONS.contains(&section) => {
                    let values = scalars(values, section)?;
                    settings.sections.insert(key, values);
                }
                (_, value) => {
                    check_known(&key)?;
                    settings.shared.insert(key, scalar(value, "the top level")?);
                }
            }
        }
        Ok(settings)
    }

    /// The value of setting `env_name` for `role`: the environment, then the role's section,
    /// then the top level of the file.
    pub fn get(&self, role: &str, env_name: &str) -> Option<String> {
        if let Ok(value) = std::env::var(env_name) {
            return Some(value);
        }
        let key = env_name
            .strip_prefix("TOLLGATE_")
            .unwrap_or(env_name)
            .to_lowercase();
        self.sections
            .get(role)
            .and_then(|s| s.get(&key))
            .or_else(|| self.shared.get(&key))
            .cloned()
    }

    /// A lookup function for a role's typed configuration.
    pub fn lookup<'a>(&'a self, role: &'a str) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| self.get(role, name)
    }
}

fn check_known(key: &str) -> anyhow::Result<()> {
    if !KNOWN.contains(&key) {
        bail!(
            "unknown setting {key:?}; the settings are: {}",
            KNOWN.join(", ")
        );
    }
    Ok(())
}

fn scalars(values: toml::Table, section: &str) -> anyhow::Result<BTreeMap<String, String>> {
    values
        .into_iter()
        .map(|(key, value)| {
            check_known(&key).with_context(|| format!("in [{section}]"))?;
            Ok((key, scalar(value, section)?))
        })
        .collect()
}

fn scalar(value: toml::Value, place: &str) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!(
            "settings in {place} are strings, numbers or booleans, not {}",
            other.type_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_override_the_top_level_and_typos_are_refused() {
        let settings = Settings::parse(
            "nats_url = \"nats://a\"\n[edge]\nnats_url = \"nats://b\"\n[[models]]\nname = \"m\"\nprovider = \"mock\"\n",
        )
        .unwrap_or_default();
        assert_eq!(settings.sections["edge"]["nats_url"], "nats://b");
        assert_eq!(settings.shared["nats_url"], "nats://a");
        assert_eq!(settings.models[0].name, "m");
        assert!(Settings::parse("edge_adr = \"x\"").is_err());
        assert!(
            Settings::parse("[[models]]\nname = \"m\"\nprovider = \"mock\"\ncolour = 1\n").is_err()
        );
    }

    /// Configurations are printed with `{:?}` in logs and panics: a secret in one must never
    /// show there, whichever role reads it and whichever way NATS is told who a role is.
    #[test]
    fn no_roles_configuration_shows_a_secret_in_debug_output() {
        use base64::Engine;
        let key = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        let (credential_key, policy_key, status_key) = (key(7), key(8), key(9));
        let shared = [
            ("DATABASE_URL", "postgres://app:pg-hunter2@db:5432/tollgate"),
            ("TOLLGATE_ADMIN_TOKEN", "admin-hunter2"),
            ("TOLLGATE_CONTROL_PLANE_URL", "http://cp:50051"),
            ("TOLLGATE_EDGE_TOKEN", "edge-hunter2"),
            (
                "TOLLGATE_ALERT_WEBHOOK_URL",
                "https://hooks.example.com/hook-hunter2",
            ),
            ("TOLLGATE_ALERT_WEBHOOK_SECRET", "hmac-hunter2"),
            (
                "TOLLGATE_ALERT_SLACK_URL",
                "https://hooks.slack.example/slack-hunter2",
            ),
            ("TOLLGATE_CREDENTIAL_KEY", credential_key.as_str()),
            ("TOLLGATE_POLICY_SIGNING_KEY", policy_key.as_str()),
            ("TOLLGATE_STATUS_SIGNING_KEY", status_key.as_str()),
        ];
        let nats_identities = [
            &[
                ("NATS_URL", "nats://bus:url-hunter2@nats:4222"),
                ("NATS_USER", "edge"),
                ("NATS_PASSWORD", "nats-hunter2"),
            ][..],
            &[
                ("NATS_URL", "nats://token-hunter2@nats:4222"),
                ("NATS_TOKEN", "nats-hunter2"),
            ],
            &[
                ("NATS_URL", "nats://nats:4222"),
                ("NATS_NKEY_SEED", "SUAHUNTER2"),
            ],
        ];
        let secrets = [
            "hunter2",
            "HUNTER2",
            &credential_key,
            &policy_key,
            &status_key,
        ];
        for nats in nats_identities {
            let lookup = |name: &str| {
                shared
                    .iter()
                    .chain(nats)
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            };
            let shown = [
                tollgate_control_plane::config::ControlPlaneConfig::from_lookup(lookup)
                    .map(|config| format!("{config:?}")),
                tollgate_edge::config::EdgeConfig::from_lookup(lookup)
                    .map(|config| format!("{config:?}")),
                tollgate_usage_aggregator::config::AggregatorConfig::from_lookup(lookup)
                    .map(|config| format!("{config:?}")),
            ];
            for shown in shown {
                let shown = shown.expect("the settings are valid");
                for secret in secrets {
                    assert!(!shown.contains(secret), "{secret} shows in {shown}");
                }
                assert!(shown.contains("@nats:4222") || shown.contains("nats://nats:4222"));
            }
        }
    }
}
