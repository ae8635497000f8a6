//! Virtual keys: creation, changes, rotation with a bounded grace period, blocking and revocation.

use chrono::{DateTime, Duration, Utc};

use crate::event::PolicyEvent;
use crate::model::{Metadata, PreviousSecret, SealedSecret, VirtualKey};
use crate::state::PolicyState;
use crate::validate;

use super::checks::{check_hash, checked_alias, checked_new_key, found, future_expiry, live_key};
use super::{CommandError, Decision, MAX_ROTATION_GRACE_SECONDS};

/// What an update changes of a key; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyChanges {
    /// The key's new alias.
    pub alias: Option<String>,
    /// The models the key may call; empty means every model.
    pub models: Option<Vec<String>>,
    /// The new expiry; `Some(None)` takes the expiry away.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// The key's tags.
    pub tags: Option<Vec<String>>,
    /// The key's metadata, replaced whole.
    pub metadata: Option<Metadata>,
}

/// A new key, checked against the keys there are.
pub(super) fn create(state: &PolicyState, key: VirtualKey, now: DateTime<Utc>) -> Decision {
    Ok(Some(PolicyEvent::KeyCreated {
        key: checked_new_key(state, key, now)?,
    }))
}

/// The key with the fields given changed; nothing when they change nothing.
pub(super) fn update(
    state: &PolicyState,
    id: String,
    changes: KeyChanges,
    now: DateTime<Utc>,
) -> Decision {
    let current = live_key(state, &id)?;
    let mut key = current.clone();
    if let Some(alias) = changes.alias {
        key.alias = checked_alias(state, alias, &id)?;
    }
    if let Some(models) = changes.models {
        key.models = validate::model_list("models", &models)?;
    }
    if let Some(at) = changes.expires_at {
        key.expires_at = future_expiry(at, now)?;
    }
    key.tags = changes.tags.unwrap_or(key.tags);
    key.metadata = changes.metadata.unwrap_or(key.metadata);
    if &key == current {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::KeyUpdated {
        id,
        alias: key.alias,
        models: key.models,
        expires_at: key.expires_at,
        tags: key.tags,
        metadata: key.metadata,
    }))
}

/// A new secret for a live key; the old one stays valid for at most the grace period.
pub(super) fn rotate(
    state: &PolicyState,
    id: String,
    prefix: String,
    hash: String,
    grace_seconds: u64,
    signing: Option<SealedSecret>,
    now: DateTime<Utc>,
) -> Decision {
    let current = live_key(state, &id)?;
    check_hash(state, &hash)?;
    if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
        return Err(CommandError::invalid(format!(
            "grace_seconds must be at most {MAX_ROTATION_GRACE_SECONDS} (30 days)"
        )));
    }
    let previous = (grace_seconds > 0).then(|| PreviousSecret {
        hash: current.hash.clone(),
        valid_until: now + Duration::seconds(grace_seconds as i64),
        signing: current.signing.clone(),
    });
    Ok(Some(PolicyEvent::KeyRotated {
        id,
        prefix,
        hash,
        previous,
        signing,
    }))
}

/// Blocks a live key (nothing if it is blocked).
pub(super) fn block(state: &PolicyState, id: String) -> Decision {
    if live_key(state, &id)?.blocked {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::KeyBlocked { id }))
}

/// Unblocks a live key (nothing if it is not blocked).
pub(super) fn unblock(state: &PolicyState, id: String) -> Decision {
    if !live_key(state, &id)?.blocked {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::KeyUnblocked { id }))
}

/// Revokes a key for good (nothing if it is revoked).
pub(super) fn revoke(state: &PolicyState, id: String) -> Decision {
    if found(state.keys.get(&id), "key", &id)?.revoked {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::KeyRevoked { id }))
}
