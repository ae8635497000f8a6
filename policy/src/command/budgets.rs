//! Budgets: on a key, user, team or model that exists, a positive amount, thresholds as percentages.

use crate::event::PolicyEvent;
use crate::model::{Budget, Scope};
use crate::state::PolicyState;
use crate::validate;

use super::checks::scope_target;
use super::{CommandError, Decision, changed, deleted};

/// Sets a budget, its thresholds sorted and unique (nothing if it is the same).
pub(super) fn set(state: &PolicyState, mut budget: Budget) -> Decision {
    validate::id("budget id", &budget.id)?;
    if budget.scope == Scope::Tag {
        return Err(CommandError::invalid(
            "a budget applies to a key, user, team or model; tags are for rate limits".to_owned(),
        ));
    }
    scope_target(state, budget.scope, &budget.scope_id)?;
    if !budget.amount_usd.is_finite() || budget.amount_usd <= 0.0 {
        return Err(CommandError::invalid(format!(
            "amount_usd must be a finite number > 0, got {}",
            budget.amount_usd
        )));
    }
    budget.timezone = validate::timezone(&budget.timezone)?;
    if let Some(bad) = budget
        .thresholds
        .iter()
        .find(|t| !t.is_finite() || **t <= 0.0 || **t > 100.0)
    {
        return Err(CommandError::invalid(format!(
            "thresholds are percentages of amount_usd in (0, 100]; got {bad}"
        )));
    }
    budget.thresholds.sort_by(f64::total_cmp);
    budget.thresholds.dedup();
    changed(state.budgets.get(&budget.id), budget, |budget| {
        PolicyEvent::BudgetSet { budget }
    })
}

/// Deletes a budget.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    deleted(state.budgets.get(&id), "budget", id, |id| {
        PolicyEvent::BudgetDeleted { id }
    })
}
