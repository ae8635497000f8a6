//! Routing rules: one per model, no model its own fallback, bounded retries.

use crate::event::PolicyEvent;
use crate::model::RoutingRule;
use crate::state::PolicyState;
use crate::validate;

use super::checks::unique;
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
    let model = &rule.model_name;
    let same_model = |r: &RoutingRule| &r.model_name == model;
    let taken = |other: &str| {
        format!("model {model} already has routing rule {other}; update that one instead")
    };
    unique(&state.routing_rules, &rule.id, same_model, taken)?;
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
