//! Provider credentials: named uniquely, AWS keys in pairs, never deleted while a deployment uses them, re-wrapped only while still the sealing key.

use crate::event::PolicyEvent;
use crate::model::{Credential, Envelope};
use crate::state::PolicyState;
use crate::validate;

use super::checks::found;
use super::{CommandError, Decision};

/// Creates a credential, or replaces the one with the same name, keeping its id.
pub(super) fn put(state: &PolicyState, mut credential: Credential) -> Decision {
    credential.name = validate::name("credential name", &credential.name)?;
    let same_name = state
        .credentials
        .values()
        .find(|c| c.name == credential.name);
    if let Some(existing) = same_name {
        credential.id.clone_from(&existing.id);
    }
    validate::id("credential id", &credential.id)?;
    if credential.field_names.is_empty() {
        return Err(CommandError::invalid(
            "secret_fields must hold at least one field (for example api_key)".to_owned(),
        ));
    }
    let has = |name: &str| credential.field_names.iter().any(|f| f == name);
    if has("aws_access_key_id") != has("aws_secret_access_key") {
        return Err(CommandError::invalid(
            "an AWS credential needs both aws_access_key_id and aws_secret_access_key".to_owned(),
        ));
    }
    Ok(Some(PolicyEvent::CredentialPut { credential }))
}

/// Deletes a credential no deployment uses.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    found(state.credentials.get(&id), "credential", &id)?;
    let users: Vec<&str> = state
        .deployments
        .values()
        .filter(|d| d.credential_id.as_ref() == Some(&id))
        .map(|d| d.id.as_str())
        .collect();
    if !users.is_empty() {
        return Err(CommandError::FailedPrecondition(format!(
            "credential {id} is used by deployment(s) {}; change or delete them first",
            users.join(", ")
        )));
    }
    Ok(Some(PolicyEvent::CredentialDeleted { id }))
}

/// Stores a credential's data key wrapped anew, if it still seals that credential.
pub(super) fn rewrap(
    state: &PolicyState,
    id: String,
    key_id: String,
    envelope: Envelope,
) -> Decision {
    let credential = found(state.credentials.get(&id), "credential", &id)?;
    // The credential may have been replaced since its data key was unwrapped: that
    // wrapping would then belong to a key that seals nothing any more.
    if credential.key_id != key_id {
        return Err(CommandError::FailedPrecondition(format!(
            "credential {id} was sealed anew since its data key was read; read it again"
        )));
    }
    if credential.envelope.as_ref() == Some(&envelope) {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::CredentialRewrapped { id, envelope }))
}
