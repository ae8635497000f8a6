//! Traffic rules: every reference exists, the time window is a real one, and the
//! rule does something.

use super::checks::{all_found, unreferenced_by};
use super::{CommandError, Decision, changed, deleted};
use crate::event::PolicyEvent;
use crate::model::{TimeWindow, TrafficRule};
use crate::state::PolicyState;
use crate::validate;

const MINUTES_PER_DAY: u32 = 24 * 60;

/// `rule`, normalised, if it is valid against `state`.
pub(super) fn checked(
    state: &PolicyState,
    mut rule: TrafficRule,
) -> Result<TrafficRule, CommandError> {
    validate::id("traffic rule id", &rule.id)?;
    rule.description = rule.description.trim().to_owned();
    let when = &mut rule.when;
    when.models = validate::model_list("models", &when.models)?;
    all_found(&state.keys, "key", &when.key_ids)?;
    all_found(&state.teams, "team", &when.team_ids)?;
    for list in [
        &mut when.key_ids,
        &mut when.team_ids,
        &mut when.tags,
        &mut when.regions,
    ] {
        list.sort();
        list.dedup();
    }
    when.request_types.sort();
    when.request_types.dedup();
    if when.max_body_bytes != 0 && when.min_body_bytes > when.max_body_bytes {
        return Err(CommandError::invalid(format!(
            "min_body_bytes ({}) is above max_body_bytes ({})",
            when.min_body_bytes, when.max_body_bytes
        )));
    }
    if let Some(window) = &mut when.time {
        time_window(window)?;
    }

    let then = &mut rule.then;
    all_found(&state.deployments, "deployment", &then.deployment_ids)?;
    then.deployment_ids.sort();
    then.deployment_ids.dedup();
    then.regions.sort();
    then.regions.dedup();
    then.prefer_region = then.prefer_region.take().filter(|r| !r.trim().is_empty());
    let shapes = !then.deployment_ids.is_empty()
        || !then.regions.is_empty()
        || then.prefer_region.is_some()
        || then.strategy.is_some();
    match &then.deny {
        Some(message) if message.trim().is_empty() => Err(CommandError::invalid(
            "deny needs a message telling the client why".to_owned(),
        )),
        Some(_) if shapes => Err(CommandError::invalid(
            "a rule that denies cannot also restrict, prefer or choose a strategy".to_owned(),
        )),
        None if !shapes => Err(CommandError::invalid(
            "the rule does nothing: set deny, deployment_ids, regions, prefer_region or strategy"
                .to_owned(),
        )),
        _ => Ok(rule),
    }
}

/// Refuses to delete the `what` `id` while a traffic rule names it in `list`: the rule would
/// silently stop matching (a team) or leave its requests nowhere to go (a deployment).
pub(super) fn unreferenced(
    state: &PolicyState,
    what: &str,
    id: &str,
    list: impl Fn(&TrafficRule) -> &Vec<String>,
) -> Result<(), CommandError> {
    unreferenced_by(&state.traffic_rules, id, list, |rule| {
        format!("traffic rule {rule} names {what} {id}; update or delete the rule first")
    })
}

/// Normalises `window` if it is a real one: times of day, distinct ends, a known time zone.
pub(super) fn time_window(window: &mut TimeWindow) -> Result<(), CommandError> {
    for (field, minute) in [("start", window.start_minute), ("end", window.end_minute)] {
        if minute >= MINUTES_PER_DAY {
            return Err(CommandError::invalid(format!(
                "the time window's {field} must be a time of day between 00:00 and 23:59"
            )));
        }
    }
    if window.start_minute == window.end_minute {
        return Err(CommandError::invalid(
            "the time window starts and ends at the same minute; leave it out to match at any time"
                .to_owned(),
        ));
    }
    window.timezone = validate::timezone(&window.timezone)?;
    window.weekdays.sort();
    window.weekdays.dedup();
    Ok(())
}

/// Sets a traffic rule (nothing if it is the same).
pub(super) fn set(state: &PolicyState, rule: TrafficRule) -> Decision {
    let rule = checked(state, rule)?;
    changed(state.traffic_rules.get(&rule.id), rule, |rule| {
        PolicyEvent::TrafficRuleSet { rule }
    })
}

/// Deletes a traffic rule.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    deleted(state.traffic_rules.get(&id), "traffic rule", id, |id| {
        PolicyEvent::TrafficRuleDeleted { id }
    })
}
