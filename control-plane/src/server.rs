//! Serving the control plane: the admin API with gRPC reflection and health, and `/metrics`
//! over HTTP/1.1, on one listener; and the relay publishing the log to the bus.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_proto::admin::admin_service_server::AdminServiceServer;
use tollgate_runtime::bus::Bus;
use tollgate_runtime::envelope::KekSettings;
use tollgate_runtime::http_serve::{self, Limits};
use tollgate_runtime::tls::{Protocols, ReloadingTls, TlsError, TlsFiles, serve_grpc};
use tonic::service::Routes;

use crate::auth::Authenticator;
use crate::console::ConsoleConfig;
use crate::credentials;
use crate::log::PolicyLog;
use crate::metrics::{self, ControlMetrics};
use crate::relay;
use crate::service::AdminApi;
use crate::trust::{self, TrustConfig, TrustError};
use tollgate_policy::sealing::SealingKey;

/// The running parts of a control plane, independent of where its store and bus live.
pub struct ControlPlane {
    pub log: Arc<PolicyLog>,
    pub bus: Arc<dyn Bus>,
    pub auth: Authenticator,
    pub sealing: Option<SealingKey>,
    /// The key encryption keys beside `sealing` (KMS, and the keys being replaced).
    pub kek: KekSettings,
    /// Serve the admin API over TLS (mutual when the files name a client CA).
    pub tls: Option<TlsFiles>,
    /// Serve `/metrics` here instead of on the admin API's port.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How policy is signed, and the budget status key it names.
    pub trust: TrustConfig,
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("web console server failed: {0}")]
    Console(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on TOLLGATE_METRICS_ADDR: {0}")]
    Metrics(std::io::Error),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// The longest a call may take to answer (a `WatchEvents` stream only has to start in it).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Calls one connection may have in progress at once.
pub const CALLS_PER_CONNECTION: usize = 256;
/// The console's listener: a few people's browsers, whose live tails end soon after shutdown.
const CONSOLE_LIMITS: Limits = Limits {
    header_read_timeout: std::time::Duration::from_secs(10),
    max_connections: 256,
    drain_timeout: std::time::Duration::from_secs(2),
};

impl ControlPlane {
    /// Serves the admin API on `listener` and relays the log to the bus until `shutdown`
    /// completes; then stops accepting calls and lets the relay finish its current publish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        self.serve_with_console(listener, None, shutdown).await
    }

    /// Like [`ControlPlane::serve`], and serves the web console on `console`'s listener too.
    pub async fn serve_with_console(
        self,
        listener: TcpListener,
        console: Option<(TcpListener, ConsoleConfig)>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        // Before the relay starts: events after a rotation must go out under the new key.
        trust::commit_configured(&self.log, &self.trust).await?;
        let metrics_listener = match self.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(ServeError::Metrics)?),
            None => None,
        };
        // Unusable certificate files stop the start, before anything is served.
        let tls = self
            .tls
            .clone()
            .map(|files| ReloadingTls::load_for(files, Protocols::Grpc))
            .transpose()?;
        let console = match console {
            Some((listener, config)) => {
                let tls = config.tls.clone().map(ReloadingTls::load).transpose()?;
                Some((listener, config, tls))
            }
            None => None,
        };
        // The console, a separate /metrics and the certificate watchers need a signal of their
        // own: the gRPC server's shutdown gives it.
        let (stop_others, stopping) = watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stop_others.send(true);
        };
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch(stopping.clone()));
        }
        let metrics = Arc::new(ControlMetrics::default());
        let keks = self.kek.keks(self.sealing.as_ref()).await;
        if let Some(keks) = &keks {
            tokio::spawn(credentials::rewrap(
                self.log.clone(),
                keks.clone(),
                stopping.clone(),
            ));
        }
        let (stop_relay, relay_stopped) = watch::channel(false);
        let relay = tokio::spawn(relay::run(
            self.log.clone(),
            self.bus.clone(),
            self.trust.signing.clone(),
            relay_stopped,
            metrics.clone(),
        ));

        let api = Arc::new(AdminApi::new(
            self.log.clone(),
            self.auth,
            self.sealing,
            keks,
            self.trust.signing,
            self.bus.clone(),
            metrics,
        ));
        let routes = routes(api.clone(), metrics_listener, stopping.clone()).await?;
        let console = async {
            let Some((listener, config, tls)) = console else {
                return Ok(());
            };
            if let Some(tls) = &tls {
                tokio::spawn(tls.clone().watch(stopping.clone()));
            }
            let app = crate::console::router(api.clone(), config);
            let mut stopped = stopping;
            let stopped = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            http_serve::serve(listener, app, CONSOLE_LIMITS, tls, stopped)
                .await
                .map_err(ServeError::Console)
        };
        let server = tonic::transport::Server::builder()
            .timeout(CALL_TIMEOUT)
            .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
            .accept_http1(true)
            .add_routes(Routes::from(routes));
        let grpc = serve_grpc(server, listener, tls, shutdown);
        let (grpc, console) = tokio::join!(grpc, console);
        let _ = stop_relay.send(true);
        let _ = relay.await;
        grpc?;
        console
    }
}

/// The admin API's routes: gRPC health, reflection and the AdminService, with `/metrics` beside
/// them unless `metrics_listener` serves it on its own.
async fn routes(
    api: Arc<AdminApi>,
    metrics_listener: Option<TcpListener>,
    stopping: watch::Receiver<bool>,
) -> Result<axum::Router, ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    let descriptors = [
        tollgate_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    let mut v1 = tonic_reflection::server::Builder::configure();
    let mut v1alpha = tonic_reflection::server::Builder::configure();
    for set in descriptors {
        v1 = v1.register_encoded_file_descriptor_set(set);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
    }
    let mut grpc = Routes::builder();
    grpc.add_service(health)
        .add_service(v1.build_v1()?)
        .add_service(v1alpha.build_v1alpha()?)
        .add_service(AdminServiceServer::from_arc(api.clone()));
    // Prometheus scrapes over HTTP/1.1 on the same port, or on a listener of its own.
    let scraped = api.clone();
    let scrape = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let api = scraped.clone();
            async move { metrics::serve(api.render_metrics()) }
        }),
    );
    Ok(match metrics_listener {
        None => grpc.routes().into_axum_router().merge(scrape),
        Some(listener) => {
            http_serve::spawn_metrics(listener, scrape, stopping);
            grpc.routes().into_axum_router()
        }
    })
}
