//! Sealing provider credentials: ChaCha20-Poly1305 with a 32-byte key the operator supplies.
//! The control plane seals, an edge opens just before a provider call; the log, the bus and
//! snapshots only ever hold the sealed form.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

/// The symmetric key credentials are sealed with.
#[derive(Clone)]
pub struct SealingKey([u8; 32]);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({})", self.id())
    }
}

/// Why a key or a sealed value was refused. Never includes key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealingError {
    #[error(
        "the credential key must be 32 bytes, base64-encoded (for example: openssl rand -base64 32)"
    )]
    BadKey,
    #[error("sealed credential is malformed or was sealed with another key")]
    Unsealable,
}

impl SealingKey {
    /// Reads a base64-encoded 32-byte key.
    pub fn from_base64(text: &str) -> Result<Self, SealingError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealingError::BadKey)?;
        Ok(SealingKey(
            bytes.try_into().map_err(|_| SealingError::BadKey)?,
        ))
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SealingKey(bytes)
    }

    /// A short public fingerprint, stored beside sealed values to detect a key mismatch.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `plaintext` with a caller-chosen `nonce`, which must never repeat for this key.
    pub fn seal(&self, nonce: [u8; 12], plaintext: &[u8]) -> String {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        // Encryption of an in-memory buffer only fails on absurd lengths (> 256 GiB).
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        STANDARD.encode(out)
    }

    /// Opens a value sealed by [`SealingKey::seal`] with the same key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealingError> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| SealingError::Unsealable)?;
        if bytes.len() < 12 {
            return Err(SealingError::Unsealable);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        ChaCha20Poly1305::new(Key::from_slice(&self.0))
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealingError::Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let key = SealingKey::from_bytes([7; 32]);
        let sealed = key.seal([1; 12], b"sk-secret");
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(key.open(&sealed), Ok(b"sk-secret".to_vec()));
        let other = SealingKey::from_bytes([8; 32]);
        assert_eq!(other.open(&sealed), Err(SealingError::Unsealable));
        assert_ne!(key.id(), other.id());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(SealingKey::from_base64("c2hvcnQ=").is_err());
        assert!(SealingKey::from_base64(&STANDARD.encode([0u8; 32])).is_ok());
    }
}
