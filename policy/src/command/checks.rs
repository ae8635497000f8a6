//! The checks `decide` runs against the state: existence, uniqueness, references, and the
//! normalisation of new keys and deployments.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::CommandError;
use crate::model::{Deployment, Provider, Scope, VirtualKey};
use crate::state::PolicyState;
use crate::validate;

pub(super) fn found<'a, T>(
    value: Option<&'a T>,
    what: &str,
    id: &str,
) -> Result<&'a T, CommandError> {
    value.ok_or_else(|| CommandError::NotFound(format!("{what} {id} does not exist")))
}

pub(super) fn absent(exists: bool, what: &str, id: &str) -> Result<(), CommandError> {
    if exists {
        return Err(CommandError::AlreadyExists(format!(
            "{what} {id} already exists"
        )));
    }
    Ok(())
}

/// The live keys (see [`is_live`]).
pub(super) fn live_keys(state: &PolicyState) -> impl Iterator<Item = &VirtualKey> {
    state.keys.values().filter(|k| is_live(k))
}

/// Whether `key` is live: not revoked.
fn is_live(key: &VirtualKey) -> bool {
    !key.revoked
}

/// A key that exists and is not revoked (a revoked key can never change again).
pub(super) fn live_key<'a>(
    state: &'a PolicyState,
    id: &str,
) -> Result<&'a VirtualKey, CommandError> {
    let key = found(state.keys.get(id), "key", id)?;
    if key.revoked {
        return Err(CommandError::FailedPrecondition(format!(
            "key {id} is revoked; create a new key instead"
        )));
    }
    Ok(key)
}

/// Refuses a value that one of `entities` (a state map, keyed by id) other than the one `id`
/// names already has, as `has` tells; `taken` words the refusal, given that entity's id.
pub(super) fn unique<T>(
    entities: &BTreeMap<String, T>,
    id: &str,
    has: impl Fn(&T) -> bool,
    taken: impl FnOnce(&str) -> String,
) -> Result<(), CommandError> {
    match entities
        .iter()
        .find(|(other, entity)| *other != id && has(entity))
    {
        Some((other, _)) => Err(CommandError::AlreadyExists(taken(other))),
        None => Ok(()),
    }
}

/// Refuses to delete `id` while one of `entities` (a state map, keyed by id) names it in
/// `list`; `refusal` words it, given that entity's id.
pub(super) fn unreferenced_by<T>(
    entities: &BTreeMap<String, T>,
    id: &str,
    list: impl Fn(&T) -> &Vec<String>,
    refusal: impl FnOnce(&str) -> String,
) -> Result<(), CommandError> {
    match entities
        .iter()
        .find(|(_, entity)| list(entity).iter().any(|x| x == id))
    {
        Some((holder, _)) => Err(CommandError::FailedPrecondition(refusal(holder))),
        None => Ok(()),
    }
}

/// Refuses `ids` unless each names one of `entities` (a `what`).
pub(super) fn all_found<T>(
    entities: &BTreeMap<String, T>,
    what: &str,
    ids: &[String],
) -> Result<(), CommandError> {
    ids.iter()
        .try_for_each(|id| found(entities.get(id), what, id).map(drop))
}

/// `id` when it names one of `entities` (a `what`); none for none or an empty id.
pub(super) fn optional<T>(
    entities: &BTreeMap<String, T>,
    what: &str,
    id: Option<String>,
) -> Result<Option<String>, CommandError> {
    match id.filter(|id| !id.is_empty()) {
        Some(id) => {
            found(entities.get(&id), what, &id)?;
            Ok(Some(id))
        }
        None => Ok(None),
    }
}

/// `alias`, trimmed, unless another live key than `id` has it (an empty alias is no alias).
pub(super) fn checked_alias(
    state: &PolicyState,
    alias: String,
    id: &str,
) -> Result<String, CommandError> {
    let alias = alias.trim().to_owned();
    if alias.is_empty() {
        return Ok(alias);
    }
    let alias = validate::name("alias", &alias)?;
    let live_with_alias = |k: &VirtualKey| is_live(k) && k.alias == alias;
    let taken =
        |other: &str| format!("a live key with alias {alias:?} already exists (id {other})");
    unique(&state.keys, id, live_with_alias, taken)?;
    Ok(alias)
}

pub(super) fn future_expiry(
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CommandError> {
    match at {
        Some(at) if at <= now => Err(CommandError::invalid(format!(
            "expires_at {at} is in the past; give a future time or none"
        ))),
        other => Ok(other),
    }
}

pub(super) fn check_hash(state: &PolicyState, hash: &str) -> Result<(), CommandError> {
    let is_sha256_hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_sha256_hex {
        return Err(CommandError::invalid(
            "key hash must be a hex SHA-256".to_owned(),
        ));
    }
    if state.key_by_hash.contains_key(hash) {
        return Err(CommandError::AlreadyExists(
            "key secret already in use".to_owned(),
        ));
    }
    Ok(())
}

pub(super) fn checked_new_key(
    state: &PolicyState,
    mut key: VirtualKey,
    now: DateTime<Utc>,
) -> Result<VirtualKey, CommandError> {
    validate::id("key id", &key.id)?;
    absent(state.keys.contains_key(&key.id), "key", &key.id)?;
    check_hash(state, &key.hash)?;
    key.alias = checked_alias(state, key.alias, &key.id)?;
    key.team_id = optional(&state.teams, "team", key.team_id)?;
    key.user_id = optional(&state.users, "user", key.user_id)?;
    if let (Some(user), Some(team)) = (&key.user_id, &key.team_id) {
        let user_team = state.users.get(user).and_then(|u| u.team_id.as_ref());
        if user_team.is_some_and(|t| t != team) {
            return Err(CommandError::FailedPrecondition(format!(
                "user {user} is not in team {team}; give the user's own team or none"
            )));
        }
    }
    key.models = validate::model_list("models", &key.models)?;
    key.expires_at = future_expiry(key.expires_at, now)?;
    key.blocked = false;
    key.revoked = false;
    key.previous = None;
    key.created_at = now;
    Ok(key)
}

pub(super) fn checked_deployment(
    state: &PolicyState,
    mut d: Deployment,
) -> Result<Deployment, CommandError> {
    validate::id("deployment id", &d.id)?;
    validate::model_name("model_name", &d.model_name)?;
    if d.upstream_model.is_empty() {
        d.upstream_model.clone_from(&d.model_name);
    }
    validate::model_name("upstream_model", &d.upstream_model)?;
    validate::api_base(&d.api_base)?;
    let needs_base = matches!(
        d.provider,
        Provider::OpenaiCompatible | Provider::AzureOpenai
    );
    if needs_base && d.api_base.is_empty() {
        return Err(CommandError::invalid(format!(
            "provider {} needs api_base (the server's base URL)",
            d.provider
        )));
    }
    let needs_region = matches!(d.provider, Provider::Bedrock | Provider::Sagemaker);
    if needs_region && d.region.is_empty() {
        return Err(CommandError::invalid(format!(
            "provider {} needs region (for example us-east-1)",
            d.provider
        )));
    }
    d.credential_id = d.credential_id.filter(|c| !c.is_empty());
    match &d.credential_id {
        Some(id) => {
            // A credential goes only to the kind of service it was made for.
            let credential = found(state.credentials.get(id), "credential", id)?;
            if credential.provider != d.provider {
                return Err(CommandError::invalid(format!(
                    "credential {id} is for provider {}, not {}: a deployment uses credentials \
                     of its own provider only",
                    credential.provider, d.provider
                )));
            }
        }
        // Without a credential of its own, an AWS deployment signs with the environment's
        // (the task's or pod's role): those may only go to AWS.
        None if needs_region && !d.api_base.is_empty() => {
            let rest = d.api_base.split_once("://").map_or("", |(_, rest)| rest);
            let host = validate::url_host(rest.split(['/', '?', '#']).next().unwrap_or_default());
            if !validate::is_aws_endpoint(host) {
                return Err(CommandError::invalid(format!(
                    "provider {} without a credential signs with the environment's AWS \
                     credentials, which only go to AWS endpoints (*.amazonaws.com): give the \
                     deployment a credential to use api_base {host}",
                    d.provider
                )));
            }
        }
        None => {}
    }
    // proto3 cannot tell an unset weight from 0; a deployment nobody weighted gets an equal share.
    d.weight = d.weight.max(1);
    Ok(d)
}

pub(super) fn scope_target(
    state: &PolicyState,
    scope: Scope,
    id: &str,
) -> Result<(), CommandError> {
    match scope {
        Scope::Key => found(state.keys.get(id), "key", id).map(drop),
        Scope::User => found(state.users.get(id), "user", id).map(drop),
        Scope::Team => found(state.teams.get(id), "team", id).map(drop),
        // A model may be priced and capped before any deployment serves it.
        Scope::Model => validate::model_name("scope_id", id),
        Scope::Tag => validate::name("scope_id (a tag)", id).map(drop),
    }
}
