//! Following policy: an in-memory `PolicyState` loaded from a snapshot (or the stream alone)
//! and kept current by applying the POLICY stream in order. Edges and the usage aggregator
//! both hold policy this way.

mod follower;
mod snapshot;
mod view;

pub use follower::run;
pub use snapshot::{GrpcSnapshots, SnapshotError, SnapshotSource, open as open_snapshot};
pub use view::PolicyView;

/// The token a role follows policy with, `TOLLGATE_EDGE_TOKEN` as `get` reads it: required
/// when `TOLLGATE_CONTROL_PLANE_URL` is set (`Err` names it), and never the admin token, so
/// that an edge or aggregator holds only what following policy needs.
pub fn token_from_settings(get: impl Fn(&str) -> Option<String>) -> Result<String, &'static str> {
    match (
        get("TOLLGATE_CONTROL_PLANE_URL"),
        get("TOLLGATE_EDGE_TOKEN"),
    ) {
        (Some(_), None) => Err("TOLLGATE_EDGE_TOKEN"),
        (_, token) => Ok(token.unwrap_or_default()),
    }
}
