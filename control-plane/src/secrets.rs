//! New secrets for virtual keys and admin tokens, and the ids and nonces the control plane
//! chooses before handing a command to the pure domain.

use rand::Rng;
use rand::distr::Alphanumeric;

/// Secrets of virtual keys start with this.
pub const KEY_PREFIX: &str = "tg-";
/// Secrets of admin tokens start with this.
pub const ADMIN_TOKEN_PREFIX: &str = "tga-";
/// How many characters of a secret are shown in listings.
const DISPLAY_LEN: usize = 10;

/// A new random secret: `prefix` and 43 alphanumeric characters (about 256 bits).
pub fn new_secret(prefix: &str) -> String {
    let body: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

/// The part of a secret safe to show (`tg-AbCdEfG`).
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(DISPLAY_LEN).collect()
}

/// A new time-ordered unique id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A fresh random nonce for sealing.
pub fn new_nonce() -> [u8; 12] {
    rand::rng().random()
}
