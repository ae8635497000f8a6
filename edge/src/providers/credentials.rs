//! A deployment's provider credential, opened just for the call that needs it.

use std::collections::BTreeMap;

use tollgate_policy::PolicyState;
use tollgate_policy::model::Deployment;
use tollgate_policy::sealing::SealingKey;

use super::UpstreamError;

/// The secret fields of `deployment`'s credential (`None` when it has none), opened with
/// this edge's `sealing` key. Why one is unusable is logged, never answered.
pub fn open(
    sealing: Option<&SealingKey>,
    state: &PolicyState,
    deployment: &Deployment,
) -> Result<Option<BTreeMap<String, String>>, UpstreamError> {
    let Some(id) = &deployment.credential_id else {
        return Ok(None);
    };
    let owner = format!("deployment {}", deployment.id);
    open_credential(sealing, state, id, &owner).map(Some)
}

/// The secret fields of credential `id`, which `owner` (a deployment, a guardrail) uses.
pub fn open_credential(
    sealing: Option<&SealingKey>,
    state: &PolicyState,
    id: &str,
    owner: &str,
) -> Result<BTreeMap<String, String>, UpstreamError> {
    let unusable = |why: &str| {
        tracing::error!(owner, credential = %id, why, "credential unusable");
        UpstreamError::Failed(format!("{owner} has no usable credential"))
    };
    let credential = state
        .credentials
        .get(id)
        .ok_or_else(|| unusable("missing"))?;
    let key = sealing.ok_or_else(|| unusable("this edge has no TOLLGATE_CREDENTIAL_KEY"))?;
    let plain = key
        .open(&credential.sealed)
        .map_err(|_| unusable("cannot be opened with this edge's key"))?;
    serde_json::from_slice(&plain).map_err(|_| unusable("malformed"))
}
