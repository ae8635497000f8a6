//! `ListDeploymentHealth`: the circuit-breaker reports edges leave in the bus's key-value store.

use tollgate_proto::admin::DeploymentHealth;
use tollgate_proto::convert::timestamp;
use tollgate_runtime::bus::Bus;
use tollgate_runtime::health::{EdgeHealth, PREFIX};

use crate::error::ControlError;

/// Every edge's report of `deployment_id` (every deployment when empty), by edge then deployment.
pub async fn list(
    bus: &dyn Bus,
    deployment_id: &str,
) -> Result<Vec<DeploymentHealth>, ControlError> {
    let entries = bus
        .kv_scan(PREFIX)
        .await
        .map_err(|e| ControlError::Unavailable(format!("the bus cannot be read: {e}")))?;
    let mut out = Vec::new();
    for (key, entry) in entries {
        let Ok(report) = serde_json::from_slice::<EdgeHealth>(&entry.value) else {
            tracing::warn!(%key, "skipping a malformed deployment health report");
            continue;
        };
        for d in report.deployments {
            if !deployment_id.is_empty() && d.deployment_id != deployment_id {
                continue;
            }
            out.push(DeploymentHealth {
                edge_id: report.edge_id.clone(),
                deployment_id: d.deployment_id,
                state: d.state,
                failures: d.failures,
                retry_at: d.retry_at.map(timestamp),
                updated_at: Some(timestamp(report.updated_at)),
                last_error: d.last_error.unwrap_or_default(),
            });
        }
    }
    out.sort_by(|a, b| (&a.edge_id, &a.deployment_id).cmp(&(&b.edge_id, &b.deployment_id)));
    Ok(out)
}
