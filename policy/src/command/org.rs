//! Teams and users: names and e-mails unique, nothing deleted while something refers to it.

use crate::event::PolicyEvent;
use crate::model::{AccessGroup, Metadata, Team, User, UserRole};
use crate::state::PolicyState;
use crate::validate;

use super::checks::{absent, found, live_keys, optional, unique, unreferenced_by};
use super::{CommandError, Decision, changed, traffic};

/// A new team, its name unused.
pub(super) fn create_team(
    state: &PolicyState,
    id: String,
    name: String,
    metadata: Metadata,
) -> Decision {
    validate::id("team id", &id)?;
    let name = validate::name("team name", &name)?;
    absent(state.teams.contains_key(&id), "team", &id)?;
    unique_team_name(state, &name, &id)?;
    Ok(Some(PolicyEvent::TeamCreated {
        team: Team { id, name, metadata },
    }))
}

/// The team with the fields given changed; nothing when they change nothing.
pub(super) fn update_team(
    state: &PolicyState,
    id: String,
    name: Option<String>,
    metadata: Option<Metadata>,
) -> Decision {
    let mut team = found(state.teams.get(&id), "team", &id)?.clone();
    if let Some(name) = name {
        team.name = validate::name("team name", &name)?;
        unique_team_name(state, &team.name, &id)?;
    }
    if let Some(metadata) = metadata {
        team.metadata = metadata;
    }
    changed(state.teams.get(&id), team, |team| {
        PolicyEvent::TeamUpdated { team }
    })
}

/// Deletes a team no user, live key, traffic rule or access group refers to.
pub(super) fn delete_team(state: &PolicyState, id: String) -> Decision {
    found(state.teams.get(&id), "team", &id)?;
    let users = state
        .users
        .values()
        .filter(|u| u.team_id.as_ref() == Some(&id));
    let keys = live_keys(state).filter(|k| k.team_id.as_ref() == Some(&id));
    let (users, keys) = (users.count(), keys.count());
    if users + keys > 0 {
        return Err(CommandError::FailedPrecondition(format!(
            "team {id} still has {users} user(s) and {keys} live key(s); move or delete them first"
        )));
    }
    traffic::unreferenced(state, "team", &id, |r| &r.when.team_ids)?;
    ungranted(state, "team", &id, |g| &g.team_ids)?;
    Ok(Some(PolicyEvent::TeamDeleted { id }))
}

/// A new user, its e-mail unused, in an existing team or none.
pub(super) fn create_user(
    state: &PolicyState,
    id: String,
    email: String,
    team_id: Option<String>,
    role: UserRole,
    metadata: Metadata,
) -> Decision {
    validate::id("user id", &id)?;
    absent(state.users.contains_key(&id), "user", &id)?;
    let email = validate::email(&email)?;
    unique_email(state, &email, &id)?;
    let team_id = optional(&state.teams, "team", team_id)?;
    Ok(Some(PolicyEvent::UserCreated {
        user: User {
            id,
            email,
            team_id,
            role,
            metadata,
        },
    }))
}

/// The user with the fields given changed; nothing when they change nothing.
pub(super) fn update_user(
    state: &PolicyState,
    id: String,
    email: Option<String>,
    team_id: Option<Option<String>>,
    role: Option<UserRole>,
    metadata: Option<Metadata>,
) -> Decision {
    let current = found(state.users.get(&id), "user", &id)?;
    let mut user = current.clone();
    if let Some(email) = email {
        user.email = validate::email(&email)?;
        unique_email(state, &user.email, &id)?;
    }
    if let Some(team_id) = team_id {
        user.team_id = optional(&state.teams, "team", team_id)?;
    }
    user.role = role.unwrap_or(user.role);
    user.metadata = metadata.unwrap_or(user.metadata);
    if &user == current {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::UserUpdated { user }))
}

/// Deletes a user that owns no live key and no access group is granted to.
pub(super) fn delete_user(state: &PolicyState, id: String) -> Decision {
    found(state.users.get(&id), "user", &id)?;
    let keys = live_keys(state)
        .filter(|k| k.user_id.as_ref() == Some(&id))
        .count();
    if keys > 0 {
        return Err(CommandError::FailedPrecondition(format!(
            "user {id} still owns {keys} live key(s); revoke them first"
        )));
    }
    ungranted(state, "user", &id, |g| &g.user_ids)?;
    Ok(Some(PolicyEvent::UserDeleted { id }))
}

/// Refuses to delete a team or user an access group is granted to.
fn ungranted(
    state: &PolicyState,
    what: &str,
    id: &str,
    list: impl Fn(&AccessGroup) -> &Vec<String>,
) -> Result<(), CommandError> {
    unreferenced_by(&state.access_groups, id, list, |group| {
        format!("access group {group} is granted to {what} {id}; update or delete the group first")
    })
}

/// Refuses a team name another team than `id` has, in any case.
fn unique_team_name(state: &PolicyState, name: &str, id: &str) -> Result<(), CommandError> {
    let same_name = |t: &Team| t.name.eq_ignore_ascii_case(name);
    let taken = |other: &str| format!("a team named {name:?} already exists (id {other})");
    unique(&state.teams, id, same_name, taken)
}

/// Refuses an e-mail another user than `id` has, in any case.
fn unique_email(state: &PolicyState, email: &str, id: &str) -> Result<(), CommandError> {
    let same_email = |u: &User| u.email.eq_ignore_ascii_case(email);
    let taken = |other: &str| format!("a user with email {email} already exists (id {other})");
    unique(&state.users, id, same_email, taken)
}
