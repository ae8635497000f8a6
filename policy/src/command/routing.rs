//! Routing rules: one per model, no model its own fallback, bounded retries.

use crate::event::PolicyEvent;
use crate::model::RoutingRule;
use crate::state::PolicyState;
use crate::validate;

use super::{CommandError, Decision, MAX_RETRIES, changed, deleted};

/// Sets a model's routing rule (nothing if it is the same).
pub(super) fn set_rule(state: &PolicyState, mut rule: RoutingRule) -> Decision {
    validate::id("routing rule id", &rule.id)?;
    validate::model_name("model_name", &rule.model_name)?;
    rule.fallbacks = validate::model_list("fallbacks", &rule.fallbacks)?;
    rule.context_window_fallbacks =
        validate::model_list("context_window_fallbacks", &rule.context_window_fallbacks)?;
    rule.content_policy_fallbacks =
        validate::model_list("content_policy_fallbacks", &rule.content_policy_fallbacks)?;
    let lists = [
        &rule.fallbacks,
        &rule.context_window_fallbacks,
        &rule.content_policy_fallbacks,
    ];
    if lists.iter().any(|list| list.contains(&rule.model_name)) {
        return Err(CommandError::invalid(format!(
            "model {} cannot be its own fallback",
            rule.model_name
        )));
    }
    if rule.max_retries > MAX_RETRIES {
        return Err(CommandError::invalid(format!(
            "max_retries is at most {MAX_RETRIES}, got {}",
            rule.max_retries
        )));
    }
    if let Some(other) = state
        .routing_rules
        .values()
        .find(|r| r.model_name == rule.model_name && r.id != rule.id)
    {
        return Err(CommandError::AlreadyExists(format!(
            "model {} already has routing rule {}; update that one instead",
            rule.model_name, other.id
        )));
    }
    changed(state.routing_rules.get(&rule.id), rule, |rule| {
        PolicyEvent::RoutingRuleSet { rule }
    })
}

/// Deletes a routing rule.
pub(super) fn delete_rule(state: &PolicyState, id: String) -> Decision {
    deleted(state.routing_rules.get(&id), "routing rule", id, |id| {
        PolicyEvent::RoutingRuleDeleted { id }
    })
}
