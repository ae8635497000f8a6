//! The edge's copy of policy: an in-memory `PolicyState` loaded from a snapshot (or the stream
//! alone) and kept current by applying the POLICY stream in order.

mod follower;
mod snapshot;
mod view;

pub use follower::run as follow;
pub use snapshot::{GrpcSnapshots, SnapshotSource};
pub use view::PolicyView;
