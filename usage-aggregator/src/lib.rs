//! Tollgate's usage aggregator: consumes the USAGE stream into an exactly-once ledger with
//! hourly and daily rollups, keeps budget spend and publishes budget status for the edges,
//! sends threshold alerts, and serves finance queries.

pub mod alerts;
pub mod api;
pub mod budgets;
pub mod config;
mod consume;

pub use consume::ConsumerCounters;
pub mod entry;
pub mod ledger;
pub mod metrics;
mod process;
pub mod query;

pub use process::{RunError, run};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_policy::redact::{Secret, SecretUrl};
use tollgate_proto::usage::usage_service_server::UsageServiceServer;
use tollgate_runtime::bus::Bus;
use tollgate_runtime::follow::{self, PolicyView, SnapshotSource};
use tollgate_runtime::http_serve::{self, Limits};
use tollgate_runtime::signing::{PrivateKey, PublicKey};
use tollgate_runtime::tls::{Protocols, ReloadingTls, TlsError, TlsFiles, serve_grpc};

use crate::alerts::AlertSinks;
use crate::api::{FinanceApi, FinanceService};
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::AggregatorMetrics;

/// How often every budget's status is published, so that new budgets, raised amounts and new
/// periods reach the edges without waiting for traffic.
const STATUS_REFRESH: Duration = Duration::from_secs(2);

/// A started aggregator: following policy, consuming usage, delivering alerts.
pub struct Aggregator {
    api: Arc<FinanceApi>,
    metrics: Arc<AggregatorMetrics>,
    /// Where `/metrics` is served instead of beside the CSV export.
    metrics_listener: Option<TcpListener>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// TLS for the aggregator's listeners: the same files, for gRPC and for HTTP/1.1.
pub struct ListenerTls {
    grpc: Arc<ReloadingTls>,
    http: Arc<ReloadingTls>,
}

impl ListenerTls {
    /// Loads `files` for both listeners; fails when they are not usable.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        Ok(ListenerTls {
            grpc: ReloadingTls::load_for(files.clone(), Protocols::Grpc)?,
            http: ReloadingTls::load(files)?,
        })
    }
}

/// What an aggregator is built from.
pub struct AggregatorParts {
    pub database_url: SecretUrl,
    pub bus: Arc<dyn Bus>,
    pub snapshots: Option<Arc<dyn SnapshotSource>>,
    pub admin_token: Option<Secret>,
    pub sinks: AlertSinks,
    pub batch: usize,
    /// How long a batch gathers after a smaller one (see `AggregatorConfig::linger`).
    pub linger: Duration,
    pub keys: AggregatorKeys,
}

/// The signatures an aggregator checks and makes.
#[derive(Clone, Debug, Default)]
pub struct AggregatorKeys {
    /// `TOLLGATE_POLICY_PUBLIC_KEY`: policy is applied only when signed by it (or by a key it
    /// handed over to).
    pub policy: Option<PublicKey>,
    /// `TOLLGATE_STATUS_SIGNING_KEY`: signs the budget statuses edges enforce.
    pub status: Option<PrivateKey>,
}

impl Aggregator {
    /// Opens the ledger and starts the background work.
    pub async fn start(parts: AggregatorParts) -> Result<Self, LedgerError> {
        let ledger = Ledger::connect(parts.database_url.expose()).await?;
        let policy = Arc::new(PolicyView::default());
        let (stop, stopped) = watch::channel(false);
        let bus = parts.bus;
        let metrics = AggregatorMetrics::new(Arc::new(ConsumerCounters::default()));
        let tasks = vec![
            tokio::spawn(metrics.clone().follow_backlog(bus.clone(), stopped.clone())),
            tokio::spawn(follow::run(
                policy.clone(),
                parts.snapshots,
                bus.clone(),
                parts.keys.policy,
                stopped.clone(),
            )),
            tokio::spawn(consume::run(
                consume::Consumer {
                    ledger: ledger.clone(),
                    bus: bus.clone(),
                    policy: policy.clone(),
                    sinks: parts.sinks.names(),
                    batch: parts.batch.max(1),
                    linger: parts.linger,
                    counters: metrics.counters.clone(),
                    status_signing_key: parts.keys.status.clone(),
                },
                stopped.clone(),
            )),
            tokio::spawn(alerts::run(
                ledger.clone(),
                bus.clone(),
                parts.sinks,
                stopped.clone(),
            )),
            tokio::spawn(refresh_statuses(
                ledger.clone(),
                bus,
                parts.keys.status,
                policy.clone(),
                stopped,
            )),
        ];
        let api = Arc::new(FinanceApi {
            ledger,
            policy,
            bootstrap_hash: api::bootstrap_hash(parts.admin_token.as_ref().map(Secret::expose)),
        });
        Ok(Aggregator {
            api,
            metrics,
            metrics_listener: None,
            stop,
            tasks,
        })
    }

    /// Serves `/metrics` on `listener` instead of beside the CSV export.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The usage ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.api.ledger
    }

    /// What this replica's usage consumer has done.
    pub fn consumer_counters(&self) -> &Arc<ConsumerCounters> {
        &self.metrics.counters
    }

    /// What `/metrics` reports.
    pub fn metrics(&self) -> &Arc<AggregatorMetrics> {
        &self.metrics
    }

    /// The aggregator's copy of policy.
    pub fn policy(&self) -> &Arc<PolicyView> {
        &self.api.policy
    }

    /// Serves `UsageService` (with health and reflection) on `grpc`, and the CSV export and
    /// `/metrics` on `http` until `shutdown` completes; then stops the background work.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_with_tls(grpc, http, None, shutdown).await
    }

    /// Like [`Aggregator::serve`], over TLS on both listeners when `tls` is given.
    pub async fn serve_with_tls(
        self,
        grpc: TcpListener,
        http: TcpListener,
        tls: Option<ListenerTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let (done, mut done_rx) = watch::channel(false);
        if let Some(tls) = &tls {
            tokio::spawn(tls.grpc.clone().watch(done_rx.clone()));
            tokio::spawn(tls.http.clone().watch(done_rx.clone()));
        }
        let http_tls = tls.as_ref().map(|tls| tls.http.clone());
        let shutdown = async move {
            shutdown.await;
            let _ = done.send(true);
        };
        let mut http_done = done_rx.clone();
        let export = axum::Router::new()
            .route("/v1/usage/export", axum::routing::get(api::export_csv))
            .with_state(self.api.clone());
        let scrape = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics::serve))
            .with_state(self.metrics.clone());
        let router = match self.metrics_listener {
            None => export.merge(scrape),
            Some(listener) => {
                http_serve::spawn_metrics(listener, scrape, done_rx.clone());
                export
            }
        };
        let http_server = tokio::spawn(async move {
            let stopped = async move {
                let _ = http_done.wait_for(|d| *d).await;
            };
            let _ = http_serve::serve(http, router, Limits::default(), http_tls, stopped).await;
        });
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<UsageServiceServer<FinanceService>>()
            .await;
        let mut v1 = tonic_reflection::server::Builder::configure();
        let mut v1alpha = tonic_reflection::server::Builder::configure();
        for set in [
            tollgate_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            v1 = v1.register_encoded_file_descriptor_set(set);
            v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
        }
        // Finance queries over a long range may take a while; a stuck one may not hold a
        // connection forever.
        let mut server = tonic::transport::Server::builder()
            .timeout(std::time::Duration::from_secs(120))
            .concurrency_limit_per_connection(64)
            .add_service(health);
        if let (Ok(v1), Ok(v1alpha)) = (v1.build_v1(), v1alpha.build_v1alpha()) {
            server = server.add_service(v1).add_service(v1alpha);
        }
        let server = server.add_service(UsageServiceServer::new(FinanceService(self.api.clone())));
        let result = serve_grpc(server, grpc, tls.map(|tls| tls.grpc), shutdown).await;
        let _ = done_rx.wait_for(|d| *d).await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = http_server.await;
        result
    }
}

async fn refresh_statuses(
    ledger: Ledger,
    bus: Arc<dyn Bus>,
    key: Option<PrivateKey>,
    policy: Arc<PolicyView>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        if let Some(state) = policy.current()
            && let Err(error) =
                budgets::publish(&ledger, bus.as_ref(), key.as_ref(), &state, None).await
        {
            tracing::warn!(%error, "refreshing budget status failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(STATUS_REFRESH) => {}
            _ = shutdown.changed() => {}
        }
    }
}
