//! Reading a role's settings: the one error every role's configuration reports, and the
//! readers of the settings the roles share (addresses, numbers, the bus, the control plane link,
//! the credential key, TLS, the metrics address, signing keys). Each role keeps its own typed
//! struct; this is how it fills it.

use std::net::SocketAddr;
use std::str::FromStr;

use tollgate_policy::sealing::SealingKey;

use crate::bus::{BusLimits, BusSettings, NatsAuth};
use crate::envelope::KekSettings;
use crate::process::ControlPlaneLink;
use crate::signing::{self, KeySettingError, PrivateKey, PublicKey};
use crate::tls::{ClientTls, TlsFiles};

/// Default `TOLLGATE_BUS_PREFIX`: the prefix of the JetStream streams and subjects.
pub const DEFAULT_BUS_PREFIX: &str = "tollgate";

/// A setting that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// One of two settings that go together is set without the other.
    #[error("{0}")]
    Unpaired(String),
}

impl ConfigError {
    /// `name` is invalid, for `reason`.
    pub fn invalid(name: &'static str, reason: impl std::fmt::Display) -> Self {
        ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        }
    }
}

impl From<KeySettingError> for ConfigError {
    fn from(e: KeySettingError) -> Self {
        ConfigError::invalid(e.name, e.reason)
    }
}

/// The settings a role reads (normally the process environment; a map in tests), a blank value
/// counting as unset.
pub struct Settings<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Settings<F> {
    /// Settings read through `lookup`.
    pub fn new(lookup: F) -> Self {
        Settings { lookup }
    }

    /// The value of `name`, if set and not blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value of `name`, which must be set.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    /// `name` parsed as a `T`, or `default` when unset.
    pub fn parsed<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name).map_or(Ok(default), |v| {
            v.trim().parse().map_err(|e| ConfigError::invalid(name, e))
        })
    }

    /// `name` as a socket address, `default` when unset.
    pub fn addr(&self, name: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
        let text = self.get(name).unwrap_or_else(|| default.to_owned());
        text.trim()
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::invalid(name, e))
    }

    /// The bus: `NATS_URL` (required), `TOLLGATE_BUS_PREFIX`, the `NATS_*` credentials and TLS,
    /// and `TOLLGATE_BUS_REPLICAS` (1 unless set; JetStream keeps at most 5 copies).
    pub fn bus(&self) -> Result<BusSettings, ConfigError> {
        let auth = NatsAuth::from_settings(|name| self.get(name)).map_err(ConfigError::Unpaired)?;
        let replicas = match self.get("TOLLGATE_BUS_REPLICAS") {
            None => 1,
            Some(value) => match value.trim().parse::<usize>() {
                Ok(n @ 1..=5) => n,
                _ => {
                    return Err(ConfigError::invalid(
                        "TOLLGATE_BUS_REPLICAS",
                        format!(
                            "{value:?}: give the number of NATS servers that keep each stream, 1 to 5"
                        ),
                    ));
                }
            },
        };
        Ok(BusSettings {
            url: self.required("NATS_URL")?.into(),
            prefix: self
                .get("TOLLGATE_BUS_PREFIX")
                .unwrap_or_else(|| DEFAULT_BUS_PREFIX.to_owned()),
            auth,
            limits: BusLimits {
                replicas,
                ..BusLimits::default()
            },
        })
    }

    /// How a role that follows policy reaches the control plane (see [`ControlPlaneLink`]);
    /// `TOLLGATE_EDGE_TOKEN` is required when `TOLLGATE_CONTROL_PLANE_URL` is set.
    pub fn control_plane(&self) -> Result<ControlPlaneLink, ConfigError> {
        Ok(ControlPlaneLink {
            url: self.get("TOLLGATE_CONTROL_PLANE_URL"),
            token: crate::follow::token_from_settings(|name| self.get(name))
                .map_err(ConfigError::Missing)?
                .into(),
            tls: ClientTls::from_settings(|name| self.get(name)).map_err(ConfigError::Missing)?,
        })
    }

    /// `TOLLGATE_CREDENTIAL_KEY`: the base64 32-byte key that seals provider credentials.
    pub fn credential_key(&self) -> Result<Option<SealingKey>, ConfigError> {
        self.get("TOLLGATE_CREDENTIAL_KEY")
            .map(|k| SealingKey::from_base64(&k))
            .transpose()
            .map_err(|e| ConfigError::invalid("TOLLGATE_CREDENTIAL_KEY", e))
    }

    /// `TOLLGATE_KMS_KEY_ID` and the `…_PREVIOUS` keys of a rotation.
    pub fn kek(&self) -> Result<KekSettings, ConfigError> {
        KekSettings::from_settings(|name| self.get(name)).map_err(|name| {
            ConfigError::invalid(
                name,
                "expected 32 bytes in base64 (openssl rand -base64 32)",
            )
        })
    }

    /// `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY` (and `TOLLGATE_TLS_CLIENT_CA`): the role's
    /// listeners serve TLS only when set.
    pub fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        TlsFiles::from_settings(|name| self.get(name)).map_err(ConfigError::Missing)
    }

    /// `TOLLGATE_METRICS_ADDR`: where `/metrics` is served on a port of its own, if anywhere.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        crate::http_serve::metrics_addr(|name| self.get(name))
            .map_err(|reason| ConfigError::invalid("TOLLGATE_METRICS_ADDR", reason))
    }

    /// The public key set as `name`, if any.
    pub fn public_key(&self, name: &'static str) -> Result<Option<PublicKey>, ConfigError> {
        Ok(signing::key_setting(
            |n| self.get(n),
            name,
            PublicKey::from_base64,
        )?)
    }

    /// The private key set as `name`, if any.
    pub fn private_key(&self, name: &'static str) -> Result<Option<PrivateKey>, ConfigError> {
        Ok(signing::key_setting(
            |n| self.get(n),
            name,
            PrivateKey::from_base64,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        pairs: &'static [(&'static str, &'static str)],
    ) -> Settings<impl Fn(&str) -> Option<String>> {
        Settings::new(move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn blank_values_count_as_unset() {
        let s = settings(&[("A", "  "), ("B", "x")]);
        assert_eq!(s.get("A"), None);
        assert_eq!(s.get("B").as_deref(), Some("x"));
        assert!(matches!(s.required("A"), Err(ConfigError::Missing("A"))));
    }

    #[test]
    fn a_malformed_value_names_its_setting() {
        let s = settings(&[("N", "ten"), ("ADDR", "nowhere")]);
        let number = s.parsed::<u64>("N", 1).map_err(|e| e.to_string());
        assert_eq!(
            number,
            Err("N is invalid: invalid digit found in string".to_owned())
        );
        assert_eq!(s.parsed::<u64>("UNSET", 7).ok(), Some(7));
        let addr = s.addr("ADDR", "127.0.0.1:1").map_err(|e| e.to_string());
        assert!(addr.is_err_and(|e| e.starts_with("ADDR is invalid")));
        assert_eq!(
            s.addr("UNSET", "127.0.0.1:1").ok(),
            "127.0.0.1:1".parse().ok()
        );
    }

    #[test]
    fn the_bus_needs_its_url_and_keeps_one_to_five_copies() {
        let bus = settings(&[("NATS_URL", "nats://n:4222")]).bus();
        assert_eq!(
            bus.ok()
                .map(|b| (b.url.expose().to_owned(), b.prefix, b.limits.replicas)),
            Some(("nats://n:4222".to_owned(), DEFAULT_BUS_PREFIX.to_owned(), 1))
        );
        let three = settings(&[("NATS_URL", "nats://n"), ("TOLLGATE_BUS_REPLICAS", "3")]).bus();
        assert_eq!(three.ok().map(|b| b.limits.replicas), Some(3));
        for wrong in [
            &[("NATS_URL", "nats://n"), ("TOLLGATE_BUS_REPLICAS", "0")][..],
            &[("NATS_URL", "nats://n"), ("TOLLGATE_BUS_REPLICAS", "6")],
            &[("NATS_URL", "nats://n"), ("TOLLGATE_BUS_REPLICAS", "three")],
        ] {
            let refused = settings(wrong).bus().err().map(|e| e.to_string());
            assert!(refused.is_some_and(|m| m.contains("1 to 5")), "{wrong:?}");
        }
        let missing = settings(&[]).bus().err().map(|e| e.to_string());
        assert_eq!(missing.as_deref(), Some("NATS_URL is required"));
        let unpaired = settings(&[("NATS_URL", "nats://n"), ("NATS_USER", "edge")]).bus();
        assert_eq!(
            unpaired.err().map(|e| e.to_string()).as_deref(),
            Some("NATS_PASSWORD is required beside NATS_USER")
        );
    }
}
