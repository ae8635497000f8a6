//! Rate limits: on something that exists, at least one limit, bounded schedules.

use crate::event::PolicyEvent;
use crate::model::{RateLimit, Scope};
use crate::state::PolicyState;
use crate::validate;

use super::checks::scope_target;
use super::{CommandError, Decision, MAX_SCHEDULES, changed, deleted, traffic};

/// Sets a rate limit, its schedules' windows checked (nothing if it is the same).
pub(super) fn set(state: &PolicyState, mut rate_limit: RateLimit) -> Decision {
    validate::id("rate limit id", &rate_limit.id)?;
    scope_target(state, rate_limit.scope, &rate_limit.scope_id)?;
    if rate_limit.rpm == 0 && rate_limit.tpm == 0 && rate_limit.max_concurrent == 0 {
        return Err(CommandError::invalid(
            "set at least one of rpm, tpm, max_concurrent (0 means unlimited); to remove a limit use DeleteRateLimit".to_owned(),
        ));
    }
    if let Some(model) = &rate_limit.model {
        if rate_limit.scope == Scope::Model {
            return Err(CommandError::invalid(
                "a model-scoped limit already counts one model: leave model empty".to_owned(),
            ));
        }
        validate::model_name("model", model)?;
    }
    if rate_limit.schedules.len() > MAX_SCHEDULES {
        return Err(CommandError::invalid(format!(
            "at most {MAX_SCHEDULES} schedules per rate limit"
        )));
    }
    for schedule in &mut rate_limit.schedules {
        traffic::time_window(&mut schedule.window)?;
    }
    changed(
        state.rate_limits.get(&rate_limit.id),
        rate_limit,
        |rate_limit| PolicyEvent::RateLimitSet { rate_limit },
    )
}

/// Deletes a rate limit.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    deleted(state.rate_limits.get(&id), "rate limit", id, |id| {
        PolicyEvent::RateLimitDeleted { id }
    })
}
