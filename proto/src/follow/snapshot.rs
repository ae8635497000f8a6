//! Where a starting (or resyncing) edge gets a snapshot: the control plane's `GetSnapshot`.

use std::time::Duration;

use crate::admin::GetSnapshotRequest;
use crate::admin::admin_service_client::AdminServiceClient;
use crate::tls::ClientTls;
use async_trait::async_trait;
use tollgate_policy::PolicyState;
use tonic::transport::Endpoint;

/// A source of complete policy snapshots.
#[async_trait]
pub trait SnapshotSource: Send + Sync + 'static {
    /// The latest snapshot, or why it could not be had.
    async fn fetch(&self) -> Result<PolicyState, String>;
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
    async fn fetch(&self) -> Result<PolicyState, String> {
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
        let snapshot = AdminServiceClient::new(channel)
            .get_snapshot(request)
            .await
            .map_err(|e| format!("GetSnapshot failed: {}", e.message()))?
            .into_inner();
        if snapshot.schema_version > tollgate_policy::SCHEMA_VERSION {
            return Err(format!(
                "snapshot schema {} is newer than this edge understands",
                snapshot.schema_version
            ));
        }
        serde_json::from_slice(&snapshot.state_json)
            .map_err(|e| format!("unreadable snapshot: {e}"))
    }
}
