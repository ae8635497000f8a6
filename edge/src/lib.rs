//! Tollgate's edge: the stateless request path. It serves the OpenAI-compatible API from an
//! in-memory copy of policy that follows the POLICY stream, calls providers, and emits one
//! usage event per request to the USAGE stream. It keeps serving on the last policy it has
//! when the control plane, PostgreSQL or NATS are down.

pub mod api;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod clock;
pub mod codec;
pub mod config;
pub mod error;
pub mod guardrails;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod pricing;
mod process;
pub mod providers;
pub mod route;
pub mod surfaces;
pub mod telemetry;
pub mod usage;

pub use process::{RunError, run};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_runtime::bus::Bus;

use crate::api::AppState;
use crate::budget::Budgets;
use crate::cache::ResponseCache;
use crate::config::EdgeConfig;
use crate::guardrails::Guardrails;
use crate::health::Health;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::providers::credentials::CredentialKeys;
use crate::providers::{Egress, Providers};
use tollgate_runtime::follow::{self, PolicyView, SnapshotSource};
use tollgate_runtime::http_serve;
use tollgate_runtime::tls::{ReloadingTls, TlsError};

/// How often changed circuit states are reported to the bus, for the admin API.
const HEALTH_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a stopping edge keeps trying to publish buffered usage.
const USAGE_FLUSH: Duration = Duration::from_secs(10);

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the HTTP client for providers: {0}")]
    HttpClient(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A started edge: policy following and usage publishing run; `serve` answers requests.
pub struct Edge {
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    follower: tokio::task::JoinHandle<()>,
    usage: tokio::task::JoinHandle<()>,
    /// The listener's certificate, when it serves HTTPS.
    tls: Option<Arc<ReloadingTls>>,
}

impl Edge {
    /// Starts following policy (snapshots from `snapshots` when given, events from `bus`) and
    /// publishing usage to `bus`; fails only when the HTTP client for providers cannot be built.
    pub fn start(
        config: EdgeConfig,
        bus: Arc<dyn Bus>,
        snapshots: Option<Arc<dyn SnapshotSource>>,
    ) -> Result<Self, StartError> {
        let providers = Providers::new(
            config.connect_timeout,
            Egress::new(config.upstream_networks),
        )
        .map_err(StartError::HttpClient)?;
        let tls = config.tls.clone().map(ReloadingTls::load).transpose()?;
        let metrics = Arc::new(Metrics::default());
        let view = Arc::new(PolicyView::default());
        let (stop, stopped) = watch::channel(false);
        let follower = tokio::spawn(follow::run(
            view.clone(),
            snapshots,
            bus.clone(),
            config.policy_key,
            stopped,
        ));
        let (usage_sink, usage) = usage::start(
            bus.clone(),
            config.usage_buffer,
            metrics.clone(),
            USAGE_FLUSH,
        );
        let budgets = Budgets::new(&config.edge_id, config.clock.clone());
        tokio::spawn(
            budgets
                .clone()
                .follow(bus.clone(), view.clone(), stop.subscribe()),
        );
        let limits = Limiter::new(config.rate_limit_window, config.clock.clone());
        tokio::spawn(limits.clone().lease(bus.clone(), stop.subscribe()));
        let health = Arc::new(Health::new(config.circuit, metrics.clone()));
        let credentials = Arc::new(CredentialKeys::new(
            config.credential_key.clone(),
            &config.kek,
        ));
        tokio::spawn(credentials.clone().follow(
            config.kek.clone(),
            view.clone(),
            stop.subscribe(),
        ));
        let guardrails = Arc::new(Guardrails::new(
            config.connect_timeout,
            providers.egress.clone(),
            credentials.clone(),
            metrics.clone(),
        ));
        tokio::spawn(health.clone().publish(
            bus.clone(),
            config.edge_id.clone(),
            HEALTH_REPORT_INTERVAL,
            stop.subscribe(),
        ));
        let cache = Arc::new(ResponseCache::new(
            config.cache_max_bytes,
            bus.clone(),
            metrics.clone(),
            config.clock.clone(),
        ));
        tokio::spawn(cache.clone().follow(stop.subscribe()));
        let state = Arc::new(AppState {
            health,
            guardrails,
            cache,
            budgets,
            limits,
            providers,
            sealing: config.credential_key.clone(),
            credentials,
            config,
            policy: view,
            usage: usage_sink,
            metrics,
            replays: Default::default(),
        });
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch(stop.subscribe()));
        }
        Ok(Edge {
            state,
            stop,
            follower,
            usage,
            tls,
        })
    }

    /// This edge's policy.
    pub fn policy(&self) -> &Arc<PolicyView> {
        &self.state.policy
    }

    /// This edge's view of budgets.
    pub fn budgets(&self) -> &Arc<Budgets> {
        &self.state.budgets
    }

    /// This edge's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// Serves HTTP on `listener` until `shutdown` completes, then stops following policy and
    /// flushes buffered usage events.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Edge {
            state,
            stop,
            follower,
            usage,
            tls,
        } = self;
        if let Some(addr) = state.config.metrics_addr {
            let metrics = TcpListener::bind(addr).await?;
            http_serve::spawn_metrics(
                metrics,
                api::metrics_router(state.clone()),
                stop.subscribe(),
            );
        }
        let app = api::router(state.clone());
        let limits = state.config.listener;
        let result = http_serve::serve(listener, app, limits, tls, shutdown).await;
        let _ = stop.send(true);
        let _ = follower.await;
        // The last sink goes with the state; the publisher then flushes and ends.
        drop(state);
        let _ = usage.await;
        result
    }
}
