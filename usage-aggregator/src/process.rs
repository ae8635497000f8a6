//! The aggregator as a process of its own (`tollgate aggregator`): its ledger, bus, control
//! plane and listeners as the configuration names them, served until shutdown.

use std::future::Future;

use tollgate_runtime::process::{self, SetupError};
use tollgate_runtime::tls::TlsError;

use crate::config::AggregatorConfig;
use crate::ledger::LedgerError;
use crate::{Aggregator, AggregatorParts, ListenerTls};

/// Why an aggregator process could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("opening the usage ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Opens the ledger, connects to the bus, follows the control plane and serves the usage API
/// and its HTTP export until `shutdown` completes.
pub async fn run(
    config: AggregatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let following = process::connect_following(&config.bus, &config.control_plane).await?;
    let grpc = process::bind(config.usage_addr, "the usage API (TOLLGATE_USAGE_ADDR)").await?;
    let http = process::bind(
        config.usage_http_addr,
        "the usage export (TOLLGATE_USAGE_HTTP_ADDR)",
    )
    .await?;
    // Unusable certificate files stop the start here, before anything is served.
    let tls = config.tls.clone().map(ListenerTls::load).transpose()?;
    let aggregator = Aggregator::start(AggregatorParts {
        database_url: config.database_url,
        bus: following.bus,
        snapshots: following.snapshots,
        admin_token: config.admin_token,
        sinks: config.sinks,
        batch: config.batch,
        linger: config.linger,
        keys: config.keys,
    })
    .await?;
    let aggregator = match config.metrics_addr {
        Some(addr) => {
            let listener = process::bind(addr, "/metrics (TOLLGATE_METRICS_ADDR)").await?;
            aggregator.with_metrics_listener(listener)
        }
        None => aggregator,
    };
    tracing::info!(grpc = %config.usage_addr, http = %config.usage_http_addr, "aggregator serving");
    Ok(aggregator.serve_with_tls(grpc, http, tls, shutdown).await?)
}
