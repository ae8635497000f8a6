//! TLS for the roles' listeners (rustls): a certificate chain and key from PEM files, reloaded
//! when either file changes or the process gets SIGHUP. A reload affects only new connections;
//! open ones keep the configuration they started with. A file that cannot be read or parsed
//! leaves the current certificate in place (and says so in the log). With a client CA, only
//! clients holding a certificate it signed finish the handshake (mutual TLS).
//!
//! And the client side of the roles' gRPC calls: [`ClientTls`] verifies servers against a CA
//! file (or the public web roots) and presents a client certificate when one is configured.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How long a gRPC client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(2);

/// Where a listener's certificate chain and private key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA client certificates must be signed by; `None`: no client certificate asked.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files named by `TOLLGATE_TLS_CERT` and `TOLLGATE_TLS_KEY` (both or neither) and
    /// `TOLLGATE_TLS_CLIENT_CA` as `get` reads them; `Err` names the setting missing.
    pub fn from_settings(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TlsFiles>, &'static str> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let client_ca = get("TOLLGATE_TLS_CLIENT_CA").map(PathBuf::from);
        match (get("TOLLGATE_TLS_CERT"), get("TOLLGATE_TLS_KEY")) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                client_ca,
            })),
            // A client CA without a server certificate would be silently ignored.
            (None, None) if client_ca.is_some() => Err("TOLLGATE_TLS_CERT"),
            (None, None) => Ok(None),
            (Some(_), None) => Err("TOLLGATE_TLS_KEY"),
            (None, Some(_)) => Err("TOLLGATE_TLS_CERT"),
        }
    }
}

/// What a listener speaks, offered in the TLS handshake (ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only: the edge and the console.
    Http1,
    /// gRPC over HTTP/2, and HTTP/1.1 for `/metrics` beside it.
    Grpc,
}

impl Protocols {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Protocols::Http1 => vec![b"http/1.1".to_vec()],
            Protocols::Grpc => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
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
    #[error("cannot read the CA certificates {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// A TLS configuration that follows its files.
pub struct ReloadingTls {
    files: TlsFiles,
    protocols: Protocols,
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times of (cert, key) when last loaded.
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingTls {
    /// Loads `files` for an HTTP/1.1 listener; fails when they do not hold a usable chain and
    /// key (or client CA).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        Self::load_for(files, Protocols::Http1)
    }

    /// Loads `files` for a listener speaking `protocols`.
    pub fn load_for(files: TlsFiles, protocols: Protocols) -> Result<Arc<Self>, TlsError> {
        let loaded = modified(&files);
        let config = server_config(&files, protocols)?;
        Ok(Arc::new(ReloadingTls {
            files,
            protocols,
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
        let config = server_config(&self.files, self.protocols)?;
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

/// Serves the gRPC `router` on `listener` until `shutdown` completes: over TLS when `tls` is
/// given, else plain; TCP_NODELAY either way (as [`crate::incoming_nodelay`] explains).
pub async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match tls {
        None => {
            let incoming = crate::incoming_nodelay(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(tls) => {
            let incoming = incoming_tls(listener, tls);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// The TLS connections `listener` accepts, TCP_NODELAY set. Each handshake runs on a task of
/// its own and must finish within [`HANDSHAKE_TIMEOUT`], so a client that stalls in it holds up
/// nobody; a failed handshake (a client without the certificate mutual TLS asks for, say)
/// drops the connection before any call is read. Accepting stops when the server stops taking
/// connections.
fn incoming_tls(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (ready, incoming) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                tcp = crate::accept_nodelay(&listener) => tcp,
                () = ready.closed() => return,
            };
            let (acceptor, ready) = (tls.acceptor(), ready.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake refused"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (at(&files.cert), at(&files.key))
}

/// The certificates of a PEM file; `error` makes the failure's error from its reason.
fn certificates(
    path: &Path,
    error: impl Fn(String) -> TlsError,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("no CERTIFICATE in the file".to_owned()));
    }
    Ok(certificates)
}

fn server_config(files: &TlsFiles, protocols: Protocols) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(&files.cert, |reason| TlsError::Cert {
        path: files.cert.clone(),
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |reason: String| TlsError::Ca {
                path: path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for ca in certificates(path, ca_error)? {
                roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = protocols.alpn();
    Ok(Arc::new(config))
}

/// What [`ClientTls`] names, read: PEM bytes.
pub struct ClientPems {
    /// The CA the server's certificate must chain to.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain and its key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// How a role's gRPC client reaches an `https://` server: whom it trusts and what it shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM: the CA the server's certificate must chain to; `None`: the public web roots.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain and key presented to servers that ask (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// `TOLLGATE_TLS_CA`, `TOLLGATE_TLS_CLIENT_CERT` and `TOLLGATE_TLS_CLIENT_KEY` (both or
    /// neither) as `get` reads them; `Err` names the setting missing.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<ClientTls, &'static str> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let identity = match (
            get("TOLLGATE_TLS_CLIENT_CERT"),
            get("TOLLGATE_TLS_CLIENT_KEY"),
        ) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            (Some(_), None) => return Err("TOLLGATE_TLS_CLIENT_KEY"),
            (None, Some(_)) => return Err("TOLLGATE_TLS_CLIENT_CERT"),
        };
        Ok(ClientTls {
            ca: get("TOLLGATE_TLS_CA").map(PathBuf::from),
            identity,
        })
    }

    /// The PEM contents of the files: the CA, and the client certificate chain and key.
    pub fn read(&self) -> Result<ClientPems, TlsError> {
        let read = |path: &PathBuf, error: fn(PathBuf, String) -> TlsError| {
            std::fs::read(path).map_err(|e| error(path.clone(), e.to_string()))
        };
        let ca_error = |path, reason| TlsError::Ca { path, reason };
        let cert_error = |path, reason| TlsError::Cert { path, reason };
        Ok(ClientPems {
            ca: self.ca.as_ref().map(|ca| read(ca, ca_error)).transpose()?,
            identity: match &self.identity {
                Some((cert, key)) => Some((read(cert, cert_error)?, read(key, cert_error)?)),
                None => None,
            },
        })
    }

    /// An endpoint for `url`: over TLS, verifying the server, when it is `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| TlsError::Config(format!("{url:?} is not a valid URL: {e}")))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let pems = self.read()?;
        let mut config = match pems.ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        if let Some((cert, key)) = pems.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint
            .tls_config(config)
            .map_err(|e| TlsError::Config(e.to_string()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn a_setting_without_its_other_half_is_named() {
        let client_ca_alone = settings(&[("TOLLGATE_TLS_CLIENT_CA", "/ca.pem")]);
        assert_eq!(
            TlsFiles::from_settings(client_ca_alone),
            Err("TOLLGATE_TLS_CERT")
        );
        let key_alone = settings(&[("TOLLGATE_TLS_CLIENT_KEY", "/client.key")]);
        assert_eq!(
            ClientTls::from_settings(key_alone),
            Err("TOLLGATE_TLS_CLIENT_CERT")
        );
        let blank = settings(&[("TOLLGATE_TLS_CERT", " "), ("TOLLGATE_TLS_KEY", "")]);
        assert_eq!(TlsFiles::from_settings(blank), Ok(None));
    }

    #[test]
    fn a_client_ca_that_is_not_a_certificate_stops_the_load() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").expect("written");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../edge/tests/fixtures/tls");
        let files = TlsFiles {
            cert: fixtures.join("edge-a.pem"),
            key: fixtures.join("edge-a.key"),
            client_ca: Some(ca),
        };
        let refused = ReloadingTls::load_for(files, Protocols::Grpc).map(drop);
        assert!(matches!(refused, Err(TlsError::Ca { .. })), "{refused:?}");
    }
}
