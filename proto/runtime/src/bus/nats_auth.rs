//! How a role proves who it is to NATS, and secures the connection: user and password, a
//! token, an NKey seed or a `.creds` file, and TLS with a CA and optionally a client
//! certificate. What each role may publish and subscribe to is the NATS server's to enforce
//! (`deploy/README.md` lists the subjects per role).

use std::path::PathBuf;

use async_nats::ConnectOptions;
use tollgate_policy::redact::Secret;

use super::BusError;

/// A role's NATS credentials and TLS settings; secrets never show in `Debug`.
#[derive(Clone, Debug, Default)]
pub struct NatsAuth {
    /// `NATS_USER` and `NATS_PASSWORD`.
    pub user: Option<(String, Secret)>,
    /// `NATS_TOKEN`.
    pub token: Option<Secret>,
    /// `NATS_NKEY_SEED`: an NKey user seed (`SU…`).
    pub nkey_seed: Option<Secret>,
    /// `NATS_CREDS`: a `.creds` file (a user JWT and its NKey seed).
    pub creds_file: Option<PathBuf>,
    /// `NATS_TLS_CA`: the CA the server's certificate must chain to (TLS is then required).
    pub tls_ca: Option<PathBuf>,
    /// `NATS_TLS_CERT` and `NATS_TLS_KEY`: a client certificate for servers that ask.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl NatsAuth {
    /// The settings as `get` reads them; `Err` names what is missing or in conflict.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<NatsAuth, String> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let pair = |a: &str, b: &str| match (get(a), get(b)) {
            (Some(x), Some(y)) => Ok(Some((x, y))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(format!("{b} is required beside {a}")),
            (None, Some(_)) => Err(format!("{a} is required beside {b}")),
        };
        let auth = NatsAuth {
            user: pair("NATS_USER", "NATS_PASSWORD")?
                .map(|(user, password)| (user, password.into())),
            token: get("NATS_TOKEN").map(Secret::from),
            nkey_seed: get("NATS_NKEY_SEED").map(Secret::from),
            creds_file: get("NATS_CREDS").map(PathBuf::from),
            tls_ca: get("NATS_TLS_CA").map(PathBuf::from),
            tls_client: pair("NATS_TLS_CERT", "NATS_TLS_KEY")?
                .map(|(cert, key)| (cert.into(), key.into())),
        };
        let ways = [
            auth.user.is_some(),
            auth.token.is_some(),
            auth.nkey_seed.is_some(),
            auth.creds_file.is_some(),
        ];
        if ways.iter().filter(|set| **set).count() > 1 {
            return Err(
                "give one of NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED or NATS_CREDS"
                    .to_owned(),
            );
        }
        Ok(auth)
    }

    /// `options` with these credentials and TLS settings.
    pub(super) async fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions, BusError> {
        let mut options = options;
        if let Some((user, password)) = &self.user {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.expose().to_owned());
        }
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await.map_err(|e| {
                BusError::Unavailable(format!("NATS_CREDS {}: {e}", path.display()))
            })?;
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }
}
