//! Where a starting (or resyncing) edge gets a snapshot: the control plane's `GetSnapshot`.

use std::time::Duration;

use crate::signing::{self, PublicKey, SignatureError};
use crate::tls::ClientTls;
use async_trait::async_trait;
use tollgate_policy::PolicyState;
use tollgate_proto::admin::GetSnapshotRequest;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::policy::PolicySnapshot;
use tonic::transport::Endpoint;

/// A source of complete policy snapshots.
#[async_trait]
pub trait SnapshotSource: Send + Sync + 'static {
    /// The latest snapshot, or why it could not be had.
    async fn fetch(&self) -> Result<PolicySnapshot, String>;
}

/// Why a snapshot was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot schema {0} is newer than this build understands")]
    Schema(u32),
    #[error("unreadable snapshot: {0}")]
    Unreadable(String),
    #[error("snapshot refused: {0}")]
    Refused(#[from] SignatureError),
}

/// The state in `snapshot`; with `anchor`, only when signed by the key `anchor` leads to
/// through the state's own rotation chain.
pub fn open(
    snapshot: &PolicySnapshot,
    anchor: Option<&PublicKey>,
) -> Result<PolicyState, SnapshotError> {
    if snapshot.schema_version > tollgate_policy::SCHEMA_VERSION {
        return Err(SnapshotError::Schema(snapshot.schema_version));
    }
    let state: PolicyState = serde_json::from_slice(&snapshot.state_json)
        .map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
    if let Some(anchor) = anchor {
        let key = signing::key_in_effect(anchor, &state.signing_keys)?;
        key.check_snapshot(
            snapshot.sequence,
            snapshot.schema_version,
            &snapshot.state_json,
            &snapshot.signature,
        )?;
    }
    if state.sequence != snapshot.sequence {
        return Err(SnapshotError::Unreadable(format!(
            "the snapshot says sequence {} but its state is at {}",
            snapshot.sequence, state.sequence
        )));
    }
    Ok(state)
}

/// Snapshots from the control plane's admin API, with a viewer (or admin) token.
pub struct GrpcSnapshots {
    endpoint: Endpoint,
    token: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl GrpcSnapshots {
    /// A source for the control plane at `url` (for example `http://127.0.0.1:50051`).
    pub fn new(url: &str, token: &str) -> Result<Self, String> {
        Self::with_tls(url, token, &ClientTls::default())
    }

    /// A source for the control plane at `url`; an `https://` one is reached as `tls` says.
    pub fn with_tls(url: &str, token: &str, tls: &ClientTls) -> Result<Self, String> {
        let endpoint = tls
            .endpoint(url)
            .map_err(|e| format!("control plane URL: {e}"))?
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT);
        Ok(GrpcSnapshots {
            endpoint,
            token: token.to_owned(),
        })
    }
}

#[async_trait]
impl SnapshotSource for GrpcSnapshots {
    async fn fetch(&self) -> Result<PolicySnapshot, String> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("control plane unreachable: {e}"))?;
        let mut request = tonic::Request::new(GetSnapshotRequest {});
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| "the control plane token is not a valid header value".to_owned())?;
        request.metadata_mut().insert("authorization", bearer);
        AdminServiceClient::new(channel)
            .get_snapshot(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| format!("GetSnapshot failed: {}", e.message()))
    }
}
