//! The control plane as a process of its own (`tollgate control-plane`): its store, bus and
//! listeners as the configuration names them. Opening comes before serving so that the binary
//! can apply the configuration file's models to the log first.

use std::future::Future;
use std::sync::Arc;

use tollgate_policy::redact::Secret;
use tollgate_runtime::bus::JetStreamBus;
use tollgate_runtime::process::{self, SetupError};

use crate::auth::Authenticator;
use crate::config::ControlPlaneConfig;
use crate::log::PolicyLog;
use crate::store::{self, StoreError};
use crate::{ControlPlane, ServeError};

/// Why a control plane process could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("opening the policy event store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A control plane process with its log open and its bus connected, not serving yet.
pub struct Process {
    log: Arc<PolicyLog>,
    bus: JetStreamBus,
    config: ControlPlaneConfig,
}

/// Opens the event store and the log on it, and connects to the bus.
pub async fn open(config: ControlPlaneConfig) -> Result<Process, RunError> {
    let store = store::connect(config.database_url.expose()).await?;
    let bus = config.bus.connect().await.map_err(SetupError::Bus)?;
    let log = Arc::new(PolicyLog::open(store).await?);
    Ok(Process { log, bus, config })
}

impl Process {
    /// The policy log, for changes made before serving starts.
    pub fn log(&self) -> &PolicyLog {
        &self.log
    }

    /// The configuration the process was opened with.
    pub fn config(&self) -> &ControlPlaneConfig {
        &self.config
    }

    /// Serves the admin API, and the web console unless it is off, until `shutdown`
    /// completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
        let Process { log, bus, config } = self;
        if config.admin_token.is_none() {
            tracing::warn!(
                "TOLLGATE_ADMIN_TOKEN is not set: only admin tokens already in the log can call the admin API"
            );
        }
        let listener =
            process::bind(config.admin_addr, "the admin API (TOLLGATE_ADMIN_ADDR)").await?;
        tracing::info!(addr = %config.admin_addr, sequence = log.state().sequence, "control plane serving");
        let console = match config.console {
            Some((addr, console)) => {
                let listener = process::bind(addr, "the web console (TOLLGATE_UI_ADDR)").await?;
                tracing::info!(%addr, "web console serving");
                Some((listener, console))
            }
            None => None,
        };
        let control_plane = ControlPlane {
            log,
            bus: Arc::new(bus),
            auth: Authenticator::new(config.admin_token.as_ref().map(Secret::expose)),
            sealing: config.credential_key,
            kek: config.kek,
            tls: config.tls,
            metrics_addr: config.metrics_addr,
            trust: config.trust,
        };
        control_plane
            .serve_with_console(listener, console, shutdown)
            .await?;
        Ok(())
    }
}
