//! What each role does the same way when it starts as a process of its own: binding its
//! listeners with an error that says what each is for, and connecting to the bus and the
//! control plane that policy comes from.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tollgate_policy::redact::Secret;

use crate::bus::{Bus, BusError, BusSettings};
use crate::follow::{GrpcSnapshots, SnapshotSource};
use crate::tls::ClientTls;

/// What a role's process could not reach as it started: its bus, the control plane, or the
/// address of one of its listeners.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("connecting to NATS JetStream: {0}")]
    Bus(#[from] BusError),
    #[error("TOLLGATE_CONTROL_PLANE_URL: {0}")]
    ControlPlane(String),
    /// `what`: what the listener serves, and the setting naming its address.
    #[error("binding {what} to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds `addr` for `what` (for example "the edge (TOLLGATE_EDGE_ADDR)").
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, SetupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SetupError::Bind { what, addr, source })
}

/// How a role that follows policy reaches the control plane for snapshots:
/// `TOLLGATE_CONTROL_PLANE_URL` (for example `http://127.0.0.1:50051`; unset, policy comes from
/// the stream alone), `TOLLGATE_EDGE_TOKEN`, and `TOLLGATE_TLS_CA` with the client certificate
/// for an `https://` one.
#[derive(Clone, Debug, Default)]
pub struct ControlPlaneLink {
    pub url: Option<String>,
    /// An `edge` token (or a viewer's); never the admin token.
    pub token: Secret,
    pub tls: ClientTls,
}

/// Where a role that follows policy (an edge, the aggregator) gets it.
pub struct Following {
    /// The bus, connected.
    pub bus: Arc<dyn Bus>,
    /// The control plane's snapshots; none when policy comes from the stream alone.
    pub snapshots: Option<Arc<dyn SnapshotSource>>,
}

/// Connects to `bus`, and to the control plane when `control_plane` names one.
pub async fn connect_following(
    bus: &BusSettings,
    control_plane: &ControlPlaneLink,
) -> Result<Following, SetupError> {
    let snapshots: Option<Arc<dyn SnapshotSource>> = match &control_plane.url {
        Some(url) => Some(Arc::new(
            GrpcSnapshots::with_tls(url, control_plane.token.expose(), &control_plane.tls)
                .map_err(SetupError::ControlPlane)?,
        )),
        None => None,
    };
    Ok(Following {
        bus: Arc::new(bus.connect().await?),
        snapshots,
    })
}
