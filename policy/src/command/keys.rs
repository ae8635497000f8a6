//! Virtual keys: creation, changes, rotation with a bounded grace period, blocking and revocation.

use chrono::{DateTime, Duration, Utc};

use crate::event::PolicyEvent;
use crate::model::{Metadata, PreviousSecret, SealedSecret, VirtualKey};
use crate::state::PolicyState;
use crate::validate;

use super::checks::{check_hash, checked_alias, checked_new_key, found, future_expiry, live_key};
use super::{CommandError, Decision, MAX_ROTATION_GRACE_SECONDS};

/// What an update changes of a key; `None` fields stay as they are.
pub(super) struct KeyChanges {
    pub alias: Option<String>,
    pub models: Option<Vec<String>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub tags: Option<Vec<String>>,
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
    let KeyChanges {
        alias,
        models,
        expires_at,
        tags,
        metadata,
    } = changes;
    let current = live_key(state, &id)?;
    let alias = match alias {
        Some(alias) => checked_alias(state, alias, Some(&id))?,
        None => current.alias.clone(),
    };
    let models = match models {
        Some(models) => validate::model_list("models", &models)?,
        None => current.models.clone(),
    };
    let expires_at = match expires_at {
        Some(at) => future_expiry(at, now)?,
        None => current.expires_at,
    };
    let tags = tags.unwrap_or_else(|| current.tags.clone());
    let metadata = metadata.unwrap_or_else(|| current.metadata.clone());
    if (&alias, &models, &expires_at, &tags, &metadata)
        == (
            &current.alias,
            &current.models,
            &current.expires_at,
            &current.tags,
            &current.metadata,
        )
    {
        return Ok(None);
    }
    Ok(Some(PolicyEvent::KeyUpdated {
        id,
        alias,
        models,
        expires_at,
        tags,
        metadata,
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
