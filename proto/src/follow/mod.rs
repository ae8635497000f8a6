//! Following policy: an in-memory `PolicyState` loaded from a snapshot (or the stream alone)
//! and kept current by applying the POLICY stream in order. Edges and the usage aggregator
//! both hold policy this way.

mod follower;
mod snapshot;
mod view;

pub use follower::run;
pub use snapshot::{GrpcSnapshots, SnapshotSource};
pub use view::PolicyView;
