//! The edge as a process of its own (`tollgate edge`): its bus, its control plane and its
//! listener as the configuration names them, served until shutdown.

use std::future::Future;

use tollgate_runtime::process::{self, SetupError};

use crate::config::EdgeConfig;
use crate::{Edge, StartError};

/// Why an edge process could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Connects to the bus, follows the control plane and serves on `config.addr` until
/// `shutdown` completes.
pub async fn run(
    config: EdgeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let following = process::connect_following(&config.bus, &config.control_plane).await?;
    let listener = process::bind(config.addr, "the edge (TOLLGATE_EDGE_ADDR)").await?;
    tracing::info!(addr = %config.addr, "edge serving");
    let edge = Edge::start(config, following.bus, following.snapshots)?;
    edge.serve(listener, shutdown)
        .await
        .map_err(RunError::Serve)
}
