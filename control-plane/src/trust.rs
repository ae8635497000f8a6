//! What edges and aggregators trust the control plane for: its policy signing keys, and the
//! budget status key it vouches for in policy. Both come from configuration; what changes
//! is committed to the log as events, so every follower learns it in order.

use tollgate_policy::model::SigningKeyRotation;
use tollgate_policy::{Command, PolicyState};
use tollgate_runtime::signing::{PrivateKey, PublicKey};

use crate::error::ControlError;
use crate::log::PolicyLog;

/// What the control plane is configured to vouch for.
#[derive(Clone, Debug, Default)]
pub struct TrustConfig {
    /// Sign policy events and snapshots.
    pub signing: Option<PolicySigning>,
    /// `TOLLGATE_STATUS_PUBLIC_KEY`: the aggregator's budget status key, announced in policy.
    pub status_key: Option<PublicKey>,
}

/// The actor of the events this module commits.
const ACTOR: &str = "config";

/// The control plane's policy signing keys: the current one (`TOLLGATE_POLICY_SIGNING_KEY`)
/// and, while a rotation is under way, the one it replaces
/// (`TOLLGATE_POLICY_SIGNING_KEY_PREVIOUS`).
#[derive(Clone, Debug)]
pub struct PolicySigning {
    current: PrivateKey,
    previous: Option<PrivateKey>,
}

/// Why policy cannot be signed as configured.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "policy is signed with key {0}, whose private half this control plane does not hold: \
         set it as TOLLGATE_POLICY_SIGNING_KEY_PREVIOUS to hand over to the current key"
    )]
    NotHeld(String),
    #[error("committing the trust configuration: {0}")]
    Commit(#[from] ControlError),
}

impl PolicySigning {
    /// Signing with `current`, taking over from `previous` if that is what policy is signed with.
    pub fn new(current: PrivateKey, previous: Option<PrivateKey>) -> Self {
        PolicySigning { current, previous }
    }

    /// The key that signs the event after `sequence` of `state`: the one the last rotation up
    /// to there named, or before any rotation the first key policy was ever signed with (the
    /// previous key while the first rotation is pending, else the current one).
    pub fn key_after(&self, state: &PolicyState, sequence: u64) -> Result<&PrivateKey, TrustError> {
        let public = match state.signing_key_after(sequence) {
            Some(key) => key.to_owned(),
            None => match state.signing_keys.first() {
                Some(first) => first.rotation.previous_key.clone(),
                None => self
                    .previous
                    .as_ref()
                    .unwrap_or(&self.current)
                    .public_key()
                    .to_string(),
            },
        };
        self.holding(&public)
            .ok_or_else(|| TrustError::NotHeld(public))
    }

    /// The private key of `public`, if held.
    pub fn holding(&self, public: &str) -> Option<&PrivateKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.public_key().to_string() == public)
    }

    /// The rotation that hands policy over to the current key, when another signs it now.
    fn pending_rotation(
        &self,
        state: &PolicyState,
    ) -> Result<Option<SigningKeyRotation>, TrustError> {
        let in_effect = self.key_after(state, state.sequence)?;
        let current = self.current.public_key();
        Ok((in_effect.public_key() != current).then(|| in_effect.endorse(&current)))
    }
}

/// Commits what the configuration says and policy does not yet: a rotation to the current
/// signing key, and the budget status key. Run before the relay starts, so that every event
/// after a rotation is signed with the new key.
pub async fn commit_configured(log: &PolicyLog, trust: &TrustConfig) -> Result<(), TrustError> {
    log.catch_up().await.map_err(ControlError::from)?;
    match &trust.signing {
        Some(signing) => {
            if let Some(rotation) = signing.pending_rotation(&log.state())? {
                tracing::info!(
                    from = %rotation.previous_key,
                    to = %rotation.public_key,
                    "handing policy signing over to the new key"
                );
                log.execute(ACTOR, Command::RotateSigningKey { rotation })
                    .await?;
            }
        }
        None if !log.state().signing_keys.is_empty() => tracing::warn!(
            "policy names signing keys but TOLLGATE_POLICY_SIGNING_KEY is not set: events are \
             published unsigned, and edges that check signatures will refuse them"
        ),
        None => {}
    }
    if let Some(key) = &trust.status_key {
        log.execute(
            ACTOR,
            Command::SetStatusKey {
                public_key: key.to_string(),
            },
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_policy::state::AdoptedSigningKey;

    fn rotated(state: &mut PolicyState, sequence: u64, rotation: SigningKeyRotation) {
        state.sequence = sequence;
        state
            .signing_keys
            .push(AdoptedSigningKey { sequence, rotation });
    }

    /// The public half of the key `signing` signs the event after `sequence` with.
    fn signer(signing: &PolicySigning, state: &PolicyState, sequence: u64) -> Option<PublicKey> {
        signing
            .key_after(state, sequence)
            .ok()
            .map(PrivateKey::public_key)
    }

    #[test]
    fn the_first_key_signs_until_a_rotation_hands_over() {
        let old = PrivateKey::generate();
        let new = PrivateKey::generate();
        let mut state = PolicyState::default();
        let only_new = PolicySigning::new(new.clone(), None);
        let rotating = PolicySigning::new(new.clone(), Some(old.clone()));
        // Before any rotation: the previous key while one is configured, else the current.
        assert_eq!(signer(&only_new, &state, 0), Some(new.public_key()));
        assert_eq!(signer(&rotating, &state, 0), Some(old.public_key()));
        let rotation = rotating.pending_rotation(&state).ok().flatten();
        assert_eq!(
            rotation.as_ref().map(|r| r.public_key.clone()),
            Some(new.public_key().to_string())
        );

        rotated(&mut state, 4, old.endorse(&new.public_key()));
        // The rotation event itself (4) is signed by the old key, what follows by the new.
        assert_eq!(signer(&rotating, &state, 3), Some(old.public_key()));
        assert_eq!(signer(&rotating, &state, 4), Some(new.public_key()));
        assert!(matches!(rotating.pending_rotation(&state), Ok(None)));
        // Without the old key, events before the rotation cannot be signed again.
        assert!(matches!(
            only_new.key_after(&state, 3),
            Err(TrustError::NotHeld(_))
        ));
        // A control plane holding neither key refuses to sign at all.
        let stranger = PolicySigning::new(PrivateKey::generate(), None);
        assert!(matches!(
            stranger.pending_rotation(&state),
            Err(TrustError::NotHeld(_))
        ));
    }
}
