//! Access groups: a unique name, at least one model, granted only to what exists.

use crate::event::PolicyEvent;
use crate::model::AccessGroup;
use crate::state::PolicyState;
use crate::validate;

use super::checks::{all_found, unique};
use super::{CommandError, Decision, changed, deleted};

/// Sets an access group, its grants sorted and unique (nothing if it is the same).
pub(super) fn set(state: &PolicyState, mut group: AccessGroup) -> Decision {
    validate::id("access group id", &group.id)?;
    group.name = validate::name("name", &group.name)?;
    let name = &group.name;
    let taken = |other: &str| format!("access group {name:?} exists already (id {other})");
    unique(&state.access_groups, &group.id, |g| &g.name == name, taken)?;
    group.models = validate::model_list("models", &group.models)?;
    if group.models.is_empty() {
        return Err(CommandError::invalid(
            "an access group needs at least one model".to_owned(),
        ));
    }
    all_found(&state.teams, "team", &group.team_ids)?;
    all_found(&state.users, "user", &group.user_ids)?;
    all_found(&state.keys, "key", &group.key_ids)?;
    for list in [&mut group.team_ids, &mut group.user_ids, &mut group.key_ids] {
        list.sort();
        list.dedup();
    }
    group.roles.sort();
    group.roles.dedup();
    changed(state.access_groups.get(&group.id), group, |group| {
        PolicyEvent::AccessGroupSet { group }
    })
}

/// Deletes an access group.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    deleted(state.access_groups.get(&id), "access group", id, |id| {
        PolicyEvent::AccessGroupDeleted { id }
    })
}
