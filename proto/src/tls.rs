//! TLS for the roles' HTTP listeners (rustls): a certificate chain and key from PEM files,
//! reloaded when either file changes or the process gets SIGHUP. A reload affects only new
//! connections; open ones keep the configuration they started with. A file that cannot be read
//! or parsed leaves the current certificate in place (and says so in the log).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(2);

/// Where a listener's certificate chain and private key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files named by `TOLLGATE_TLS_CERT` and `TOLLGATE_TLS_KEY` as `get` reads them (both
    /// or neither); `Err` names the one missing.
    pub fn from_settings(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TlsFiles>, &'static str> {
        match (get("TOLLGATE_TLS_CERT"), get("TOLLGATE_TLS_KEY")) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err("TOLLGATE_TLS_KEY"),
            (None, Some(_)) => Err("TOLLGATE_TLS_CERT"),
        }
    }
}

/// Why TLS could not be set up from the files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// A TLS configuration that follows its files.
pub struct ReloadingTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times of (cert, key) when last loaded.
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingTls {
    /// Loads `files`; fails when they do not hold a usable chain and key.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let loaded = modified(&files);
        let config = server_config(&files)?;
        Ok(Arc::new(ReloadingTls {
            files,
            current: RwLock::new(config),
            loaded: RwLock::new(loaded),
        }))
    }

    /// What a new connection is accepted with.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    /// Reads the files again; on failure the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = modified(&self.files);
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = stamps;
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads on a change of either file or on SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut hangups = hangup_signals();
        while !*stop.borrow() {
            let signalled = tokio::select! {
                _ = tokio::time::sleep(POLL) => false,
                _ = next_hangup(&mut hangups) => true,
                _ = stop.changed() => return,
            };
            let changed = modified(&self.files)
                != *self.loaded.read().unwrap_or_else(PoisonError::into_inner);
            if (signalled || changed)
                && let Err(error) = self.reload()
            {
                tracing::error!(%error, "TLS certificate not reloaded; the previous one stays");
                // Not retried until the files change again.
                *self.loaded.write().unwrap_or_else(PoisonError::into_inner) =
                    modified(&self.files);
            }
        }
    }
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (at(&files.cert), at(&files.key))
}

fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: files.cert.clone(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE in the file".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // The listener speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signals() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) {
    match hangups {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending().await
}
