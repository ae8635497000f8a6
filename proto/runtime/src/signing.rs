//! Ed25519 signatures on what roles take from the bus: policy events and snapshots from the
//! control plane, budget statuses from the aggregator. Anyone allowed to publish on NATS can
//! put bytes there; only the holder of a private key can sign them.
//!
//! A signed bus message carries its signature as its last protobuf field, covering every byte
//! before it: a reader checks exactly the bytes that were signed, with no re-encoding, so a
//! field added by a newer writer does not break an older reader's check. Every signature also
//! covers a purpose string, so one made for a budget status is never valid as a policy event.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use prost::encoding::{WireType, encode_key, encode_varint};
use tollgate_policy::model::SigningKeyRotation;
use tollgate_policy::state::AdoptedSigningKey;

/// What a signature vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A `tollgate.policy.v1.PolicyEvent` on the bus (signature in field 10).
    PolicyEvent,
    /// A `tollgate.policy.v1.PolicySnapshot`'s sequence, schema and state.
    PolicySnapshot,
    /// A `tollgate.usage.v1.BudgetStatus` in the bus's key-value bucket (signature in field 12).
    BudgetStatus,
    /// A new policy signing key, endorsed by the one before it.
    KeyRotation,
}

impl Purpose {
    fn context(self) -> &'static [u8] {
        match self {
            Purpose::PolicyEvent => b"tollgate.policy.v1.PolicyEvent\0",
            Purpose::PolicySnapshot => b"tollgate.policy.v1.PolicySnapshot\0",
            Purpose::BudgetStatus => b"tollgate.usage.v1.BudgetStatus\0",
            Purpose::KeyRotation => b"tollgate.policy.v1.SigningKeyRotation\0",
        }
    }

    /// The protobuf field a message's signature travels in.
    fn field(self) -> u32 {
        match self {
            Purpose::PolicyEvent => 10,
            Purpose::BudgetStatus => 12,
            Purpose::PolicySnapshot => 5,
            Purpose::KeyRotation => 0,
        }
    }
}

/// Why something was not accepted as signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("it carries no signature")]
    Unsigned,
    #[error("its signature is not from the trusted key")]
    Forged,
    #[error("the key rotation chain is broken: {0}")]
    BrokenChain(String),
    #[error("not a usable key: {0}")]
    BadKey(String),
}

/// A private Ed25519 key: 32 random bytes, base64. Its `Debug` shows only the public half.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// Reads a base64 32-byte seed (as `tollgate keygen` prints it).
    pub fn from_base64(text: &str) -> Result<Self, SignatureError> {
        Ok(PrivateKey(SigningKey::from_bytes(&key_bytes(text)?)))
    }

    /// A new random key.
    pub fn generate() -> Self {
        PrivateKey(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// The seed in base64: only for handing a new key to the operator.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }

    /// The public half, which readers are configured with.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    fn sign(&self, purpose: Purpose, bytes: &[u8]) -> Signature {
        self.0.sign(&[purpose.context(), bytes].concat())
    }

    /// `message`, a protobuf encoding with the signature field unset, with the signature
    /// appended as that field.
    pub fn seal(&self, purpose: Purpose, mut message: Vec<u8>) -> Vec<u8> {
        let signature = self.sign(purpose, &message);
        message.extend_from_slice(&signature_field(purpose, &signature));
        message
    }

    /// The signature of a snapshot's content.
    pub fn sign_snapshot(&self, sequence: u64, schema_version: u32, state_json: &[u8]) -> Vec<u8> {
        let content = snapshot_content(sequence, schema_version, state_json);
        self.sign(Purpose::PolicySnapshot, &content).to_vec()
    }

    /// Hands policy signing over to `next`: the rotation event's payload.
    pub fn endorse(&self, next: &PublicKey) -> SigningKeyRotation {
        let previous = self.public_key();
        let endorsement = self.sign(Purpose::KeyRotation, &rotation_content(&previous, next));
        SigningKeyRotation {
            public_key: next.to_string(),
            previous_key: previous.to_string(),
            endorsement: BASE64.encode(endorsement.to_bytes()),
        }
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

/// A public Ed25519 key, base64.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads a base64 32-byte public key.
    pub fn from_base64(text: &str) -> Result<Self, SignatureError> {
        VerifyingKey::from_bytes(&key_bytes(text)?)
            .map(PublicKey)
            .map_err(|_| SignatureError::BadKey("not an Ed25519 public key".to_owned()))
    }

    fn verify(
        &self,
        purpose: Purpose,
        bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let signature = Signature::from_slice(signature).map_err(|_| SignatureError::Forged)?;
        self.0
            .verify(&[purpose.context(), bytes].concat(), &signature)
            .map_err(|_| SignatureError::Forged)
    }

    /// Checks a message sealed by [`PrivateKey::seal`].
    pub fn check(&self, purpose: Purpose, message: &[u8]) -> Result<(), SignatureError> {
        let (signed, signature) = split(purpose, message)?;
        self.verify(purpose, signed, signature)
    }

    /// Checks a snapshot's signature.
    pub fn check_snapshot(
        &self,
        sequence: u64,
        schema_version: u32,
        state_json: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        if signature.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        let content = snapshot_content(sequence, schema_version, state_json);
        self.verify(Purpose::PolicySnapshot, &content, signature)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&BASE64.encode(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A key setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name} is invalid: {reason}")]
pub struct KeySettingError {
    pub name: &'static str,
    pub reason: SignatureError,
}

/// The key set as `name` in the settings `get` reads, if any, read by `parse`
/// ([`PublicKey::from_base64`] or [`PrivateKey::from_base64`]).
pub fn key_setting<K>(
    get: impl Fn(&str) -> Option<String>,
    name: &'static str,
    parse: impl Fn(&str) -> Result<K, SignatureError>,
) -> Result<Option<K>, KeySettingError> {
    get(name)
        .map(|text| parse(&text))
        .transpose()
        .map_err(|reason| KeySettingError { name, reason })
}

/// The key that signs policy after the last rotation in `chain`, having checked that each
/// rotation was endorsed by the key before it, starting from `anchor` (the key a reader was
/// configured with).
pub fn key_in_effect(
    anchor: &PublicKey,
    chain: &[AdoptedSigningKey],
) -> Result<PublicKey, SignatureError> {
    let mut key = *anchor;
    for adopted in chain {
        key = follow_rotation(&key, &adopted.rotation)?;
    }
    Ok(key)
}

/// The key `rotation` hands over to, if `current` endorsed it.
pub fn follow_rotation(
    current: &PublicKey,
    rotation: &SigningKeyRotation,
) -> Result<PublicKey, SignatureError> {
    let broken =
        |why: &str| SignatureError::BrokenChain(format!("{why} ({})", rotation.public_key));
    if PublicKey::from_base64(&rotation.previous_key).ok() != Some(*current) {
        return Err(broken("a rotation does not start from the key in effect"));
    }
    let next = PublicKey::from_base64(&rotation.public_key)
        .map_err(|_| broken("a rotation names an unusable key"))?;
    let endorsement = BASE64
        .decode(&rotation.endorsement)
        .map_err(|_| broken("an endorsement is not base64"))?;
    current
        .verify(
            Purpose::KeyRotation,
            &rotation_content(current, &next),
            &endorsement,
        )
        .map_err(|_| broken("an endorsement is not from the key it replaces"))?;
    Ok(next)
}

/// The 32 bytes a key's base64 text holds.
fn key_bytes(text: &str) -> Result<[u8; 32], SignatureError> {
    BASE64
        .decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            SignatureError::BadKey("expected 32 bytes in base64 (tollgate keygen)".to_owned())
        })
}

fn signature_field(purpose: Purpose, signature: &Signature) -> Vec<u8> {
    let mut field = Vec::with_capacity(2 + Signature::BYTE_SIZE);
    encode_key(purpose.field(), WireType::LengthDelimited, &mut field);
    encode_varint(Signature::BYTE_SIZE as u64, &mut field);
    field.extend_from_slice(&signature.to_bytes());
    field
}

/// The signed bytes and the signature of a sealed message.
fn split(purpose: Purpose, message: &[u8]) -> Result<(&[u8], &[u8]), SignatureError> {
    let mut header = Vec::with_capacity(2);
    encode_key(purpose.field(), WireType::LengthDelimited, &mut header);
    encode_varint(Signature::BYTE_SIZE as u64, &mut header);
    let tail = header.len() + Signature::BYTE_SIZE;
    let start = message
        .len()
        .checked_sub(tail)
        .ok_or(SignatureError::Unsigned)?;
    let (signed, field) = message.split_at(start);
    let (found, signature) = field.split_at(header.len());
    if found != header {
        return Err(SignatureError::Unsigned);
    }
    Ok((signed, signature))
}

fn snapshot_content(sequence: u64, schema_version: u32, state_json: &[u8]) -> Vec<u8> {
    [
        &sequence.to_be_bytes()[..],
        &schema_version.to_be_bytes(),
        state_json,
    ]
    .concat()
}

fn rotation_content(previous: &PublicKey, next: &PublicKey) -> Vec<u8> {
    [&previous.0.as_bytes()[..], &next.0.as_bytes()[..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tollgate_proto::policy::PolicyEvent;

    fn event() -> PolicyEvent {
        PolicyEvent {
            sequence: 7,
            id: "e7".into(),
            r#type: "key.created".into(),
            payload_json: "{}".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_sealed_message_decodes_to_itself_and_checks_with_the_public_key() {
        let key = PrivateKey::generate();
        let sealed = key.seal(Purpose::PolicyEvent, event().encode_to_vec());
        let decoded = PolicyEvent::decode(sealed.as_slice()).expect("decodes");
        assert_eq!(decoded.sequence, 7);
        assert_eq!(decoded.signature.len(), 64);
        key.public_key()
            .check(Purpose::PolicyEvent, &sealed)
            .expect("checks");
    }

    #[test]
    fn unsigned_tampered_and_foreign_messages_are_refused() {
        let key = PrivateKey::generate();
        let public = key.public_key();
        let unsigned = event().encode_to_vec();
        assert_eq!(
            public.check(Purpose::PolicyEvent, &unsigned),
            Err(SignatureError::Unsigned)
        );
        let mut tampered = key.seal(Purpose::PolicyEvent, unsigned.clone());
        tampered[1] ^= 1;
        assert_eq!(
            public.check(Purpose::PolicyEvent, &tampered),
            Err(SignatureError::Forged)
        );
        let other = PrivateKey::generate().seal(Purpose::PolicyEvent, unsigned.clone());
        assert_eq!(
            public.check(Purpose::PolicyEvent, &other),
            Err(SignatureError::Forged)
        );
        // Appending anything after the signature leaves the message unsigned.
        let mut appended = key.seal(Purpose::PolicyEvent, unsigned);
        appended.extend_from_slice(&[0x08, 0x01]);
        assert_eq!(
            public.check(Purpose::PolicyEvent, &appended),
            Err(SignatureError::Unsigned)
        );
    }

    #[test]
    fn a_signature_for_one_purpose_is_not_valid_for_another() {
        let key = PrivateKey::generate();
        let bytes = event().encode_to_vec();
        let status = key.seal(Purpose::BudgetStatus, bytes.clone());
        assert!(
            key.public_key()
                .check(Purpose::BudgetStatus, &status)
                .is_ok()
        );
        // Same bytes, sealed as an event field, signed for a status: refused.
        let mut as_event = bytes;
        let signature = key.sign(Purpose::BudgetStatus, &as_event);
        as_event.extend_from_slice(&signature_field(Purpose::PolicyEvent, &signature));
        assert_eq!(
            key.public_key().check(Purpose::PolicyEvent, &as_event),
            Err(SignatureError::Forged)
        );
    }

    #[test]
    fn a_rotation_chain_leads_from_the_anchor_to_the_newest_key() {
        let first = PrivateKey::generate();
        let second = PrivateKey::generate();
        let third = PrivateKey::generate();
        let chain = vec![
            AdoptedSigningKey {
                sequence: 3,
                rotation: first.endorse(&second.public_key()),
            },
            AdoptedSigningKey {
                sequence: 9,
                rotation: second.endorse(&third.public_key()),
            },
        ];
        assert_eq!(
            key_in_effect(&first.public_key(), &chain),
            Ok(third.public_key())
        );
        // From any other anchor the chain does not start.
        assert!(matches!(
            key_in_effect(&PrivateKey::generate().public_key(), &chain),
            Err(SignatureError::BrokenChain(_))
        ));
        // A rotation endorsed by someone else breaks it.
        let mut forged = chain.clone();
        forged[1].rotation.endorsement = third.endorse(&third.public_key()).endorsement;
        assert!(matches!(
            key_in_effect(&first.public_key(), &forged),
            Err(SignatureError::BrokenChain(_))
        ));
    }

    #[test]
    fn snapshot_signatures_cover_sequence_and_state() {
        let key = PrivateKey::generate();
        let signature = key.sign_snapshot(5, 1, b"{}");
        let public = key.public_key();
        assert!(public.check_snapshot(5, 1, b"{}", &signature).is_ok());
        assert!(public.check_snapshot(6, 1, b"{}", &signature).is_err());
        assert!(public.check_snapshot(5, 1, b"{ }", &signature).is_err());
        assert_eq!(
            public.check_snapshot(5, 1, b"{}", &[]),
            Err(SignatureError::Unsigned)
        );
    }

    #[test]
    fn keys_read_back_from_their_text_and_debug_hides_the_seed() {
        let key = PrivateKey::generate();
        let again = PrivateKey::from_base64(&key.to_base64()).expect("reads");
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(
            PublicKey::from_base64(&key.public_key().to_string()),
            Ok(key.public_key())
        );
        assert!(!format!("{key:?}").contains(&key.to_base64()));
        assert!(PrivateKey::from_base64("c2hvcnQ=").is_err());
    }
}
