//! Access groups: a unique name, at least one model, granted only to what exists.

use crate::event::PolicyEvent;
use crate::model::AccessGroup;
use crate::state::PolicyState;
use crate::validate;

use super::checks::found;
use super::{CommandError, Decision, changed, deleted};

/// Sets an access group, its grants sorted and unique (nothing if it is the same).
pub(super) fn set(state: &PolicyState, mut group: AccessGroup) -> Decision {
    validate::id("access group id", &group.id)?;
    group.name = validate::name("name", &group.name)?;
    if let Some(other) = state
        .access_groups
        .values()
        .find(|g| g.name == group.name && g.id != group.id)
    {
        return Err(CommandError::AlreadyExists(format!(
            "access group {:?} exists already (id {})",
            group.name, other.id
        )));
    }
    group.models = validate::model_list("models", &group.models)?;
    if group.models.is_empty() {
        return Err(CommandError::invalid(
            "an access group needs at least one model".to_owned(),
        ));
    }
    for id in &group.team_ids {
        found(state.teams.get(id), "team", id)?;
    }
    for id in &group.user_ids {
        found(state.users.get(id), "user", id)?;
    }
    for id in &group.key_ids {
        found(state.keys.get(id), "key", id)?;
    }
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
