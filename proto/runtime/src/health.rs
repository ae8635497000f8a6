//! What edges report of their deployments' circuit breakers, through the bus's key-value store,
//! for the admin API's `ListDeploymentHealth`: one entry per edge, rewritten when it changes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The key-value prefix of the reports.
pub const PREFIX: &str = "deployment_health.";

/// The key of `edge_id`'s report. Hex-encoded, because an edge id may hold characters that
/// NATS does not allow in keys.
pub fn key(edge_id: &str) -> String {
    format!("{PREFIX}{}", hex::encode(edge_id))
}

/// One edge's view of the deployments it has called.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeHealth {
    pub edge_id: String,
    pub updated_at: DateTime<Utc>,
    pub deployments: Vec<DeploymentHealth>,
}

/// One deployment's circuit on one edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentHealth {
    pub deployment_id: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failures counted in the current window.
    pub failures: u32,
    /// When an open circuit lets a probe through.
    pub retry_at: Option<DateTime<Utc>>,
    /// The last failure's error code, if any.
    pub last_error: Option<String>,
}
