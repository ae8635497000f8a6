//! Admin tokens and the keys policy is trusted by: never left without a way in, signing keys handed over only by the key in effect.

use chrono::{DateTime, Utc};

use crate::event::PolicyEvent;
use crate::model::{AdminToken, SigningKeyRotation};
use crate::state::PolicyState;
use crate::validate;

use super::checks::{absent, found};
use super::{CommandError, Decision};

/// A new admin token, its secret unused, created now.
pub(super) fn create(state: &PolicyState, mut token: AdminToken, now: DateTime<Utc>) -> Decision {
    validate::id("token id", &token.id)?;
    absent(
        state.admin_tokens.contains_key(&token.id),
        "token",
        &token.id,
    )?;
    token.name = validate::name("token name", &token.name)?;
    if state.admin_tokens.values().any(|t| t.hash == token.hash) {
        return Err(CommandError::AlreadyExists(
            "token secret already in use".to_owned(),
        ));
    }
    if token.expires_at.is_some_and(|at| at <= now) {
        return Err(CommandError::invalid(
            "the token would expire before it is created: give a time to live above 0".to_owned(),
        ));
    }
    token.revoked = false;
    token.created_at = now;
    Ok(Some(PolicyEvent::AdminTokenCreated { token }))
}

/// Revokes an admin token, unless it is the last way in.
pub(super) fn revoke(state: &PolicyState, id: String, now: DateTime<Utc>) -> Decision {
    if found(state.admin_tokens.get(&id), "token", &id)?.revoked {
        return Ok(None);
    }
    if state.bootstrap_disabled && !state.has_live_admin_token(Some(&id), now) {
        return Err(CommandError::FailedPrecondition(format!(
            "token {id} is the last admin token and the bootstrap token is disabled: \
             create another admin token first"
        )));
    }
    Ok(Some(PolicyEvent::AdminTokenRevoked { id }))
}

/// Disables the bootstrap token once another admin token is live.
pub(super) fn disable_bootstrap(state: &PolicyState, now: DateTime<Utc>) -> Decision {
    if state.bootstrap_disabled {
        return Ok(None);
    }
    if !state.has_live_admin_token(None, now) {
        return Err(CommandError::FailedPrecondition(
            "no admin token would be left: create an admin token (tokens create --role \
             admin) before disabling the bootstrap token"
                .to_owned(),
        ));
    }
    Ok(Some(PolicyEvent::BootstrapTokenDisabled {}))
}

/// Hands policy signing over to a new key, endorsed by the key in effect.
pub(super) fn rotate_signing_key(state: &PolicyState, rotation: SigningKeyRotation) -> Decision {
    let in_effect = state.signing_key_after(state.sequence);
    if in_effect == Some(rotation.public_key.as_str()) {
        return Ok(None);
    }
    if let Some(key) = in_effect
        && key != rotation.previous_key
    {
        return Err(CommandError::FailedPrecondition(format!(
            "policy is signed with key {key}, not {}: only the key in effect can hand over",
            rotation.previous_key
        )));
    }
    Ok(Some(PolicyEvent::SigningKeyRotated { rotation }))
}

/// Announces the key budget statuses are signed with.
pub(super) fn set_status_key(state: &PolicyState, public_key: String) -> Decision {
    if state.status_keys.first() == Some(&public_key) {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::StatusKeySet { public_key }))
}
