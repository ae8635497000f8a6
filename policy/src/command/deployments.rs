//! Deployments: checked against their provider and credential, never deleted while a traffic rule routes to them.

use crate::event::PolicyEvent;
use crate::model::Deployment;
use crate::state::PolicyState;

use super::checks::{checked_deployment, found};
use super::{Decision, changed, traffic};

/// Creates or replaces a deployment (nothing if it is the same).
pub(super) fn upsert(state: &PolicyState, deployment: Deployment) -> Decision {
    let deployment = checked_deployment(state, deployment)?;
    changed(
        state.deployments.get(&deployment.id),
        deployment,
        |deployment| PolicyEvent::DeploymentUpserted { deployment },
    )
}

/// Deletes a deployment no traffic rule routes to.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    found(state.deployments.get(&id), "deployment", &id)?;
    traffic::unreferenced(state, "deployment", &id, |r| &r.then.deployment_ids)?;
    Ok(Some(PolicyEvent::DeploymentDeleted { id }))
}
