//! Cache policies: one per model, a bounded time to live, a semantic cache only on a deployed embeddings model.

use crate::event::PolicyEvent;
use crate::model::CachePolicy;
use crate::state::PolicyState;
use crate::validate;

use super::checks::unique;
use super::{CommandError, Decision, MAX_CACHE_TTL_SECONDS, changed, deleted};

/// Sets a cache policy (nothing if it is the same).
pub(super) fn set(state: &PolicyState, policy: CachePolicy) -> Decision {
    validate::id("cache policy id", &policy.id)?;
    validate::model_name("model", &policy.model)?;
    if !(1..=MAX_CACHE_TTL_SECONDS).contains(&policy.ttl_seconds) {
        return Err(CommandError::invalid(format!(
            "ttl_seconds must be between 1 and {MAX_CACHE_TTL_SECONDS} (30 days), got {}",
            policy.ttl_seconds
        )));
    }
    let model = &policy.model;
    let same_model = |p: &CachePolicy| &p.model == model;
    let taken = |other: &str| {
        format!("model {model} already has cache policy {other}: change that one instead")
    };
    unique(&state.cache_policies, &policy.id, same_model, taken)?;
    if let Some(semantic) = &policy.semantic {
        validate::model_name("embeddings_model", &semantic.embeddings_model)?;
        if state
            .deployments_for(&semantic.embeddings_model)
            .next()
            .is_none()
        {
            return Err(CommandError::invalid(format!(
                "embeddings_model {:?} has no deployment: deploy it before using it \
                 for the semantic cache",
                semantic.embeddings_model
            )));
        }
        if !(semantic.threshold > 0.0 && semantic.threshold <= 1.0) {
            return Err(CommandError::invalid(format!(
                "the semantic threshold is a cosine similarity in (0, 1], got {}",
                semantic.threshold
            )));
        }
    }
    changed(state.cache_policies.get(&policy.id), policy, |policy| {
        PolicyEvent::CachePolicySet { policy }
    })
}

/// Deletes a cache policy.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    deleted(state.cache_policies.get(&id), "cache policy", id, |id| {
        PolicyEvent::CachePolicyDeleted { id }
    })
}
