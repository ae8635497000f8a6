//! Policy snapshots: the folded state at a sequence, signed when policy is signed. Served by
//! `GetSnapshot`, and handed in-process to the edge and aggregator of `tollgate up`.

use std::sync::Arc;

use async_trait::async_trait;
use tollgate_policy::PolicyState;
use tollgate_proto::convert::timestamp;
use tollgate_proto::policy::PolicySnapshot;
use tollgate_runtime::follow::SnapshotSource;

use crate::log::PolicyLog;
use crate::trust::{PolicySigning, TrustError};

/// Why a snapshot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the state does not serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// `state` as a snapshot, signed with the key in effect at its sequence when `signing` is given.
pub fn snapshot(
    state: &PolicyState,
    signing: Option<&PolicySigning>,
) -> Result<PolicySnapshot, SnapshotError> {
    let state_json = serde_json::to_vec(state)?;
    let schema_version = tollgate_policy::SCHEMA_VERSION;
    let signature = match signing {
        Some(signing) => signing.key_after(state, state.sequence)?.sign_snapshot(
            state.sequence,
            schema_version,
            &state_json,
        ),
        None => Vec::new(),
    };
    Ok(PolicySnapshot {
        sequence: state.sequence,
        schema_version,
        state_json,
        taken_at: Some(timestamp(chrono::Utc::now())),
        signature,
    })
}

/// Snapshots straight from a log in the same process: no network, no token.
pub struct LogSnapshots {
    pub log: Arc<PolicyLog>,
    pub signing: Option<PolicySigning>,
}

#[async_trait]
impl SnapshotSource for LogSnapshots {
    async fn fetch(&self) -> Result<PolicySnapshot, String> {
        self.log.catch_up().await.map_err(|e| e.to_string())?;
        snapshot(&self.log.state(), self.signing.as_ref()).map_err(|e| e.to_string())
    }
}
