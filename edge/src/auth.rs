//! Authentication of virtual keys: `Authorization: Bearer tg-…` or `x-api-key: tg-…`, looked up
//! by SHA-256 and compared in constant time, against the policy this request holds.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{VirtualKey, hash_secret};

use crate::error::EdgeError;

/// The key presented with a request.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// The live key that `headers` authenticate, at `now`.
pub fn authenticate<'s>(
    headers: &HeaderMap,
    state: &'s PolicyState,
    now: DateTime<Utc>,
) -> Result<&'s VirtualKey, EdgeError> {
    let secret = presented_key(headers).ok_or(EdgeError::InvalidApiKey(
        "missing API key: send Authorization: Bearer <key> or x-api-key",
    ))?;
    let hash = hash_secret(secret);
    let key = state
        .key_by_hash(&hash)
        .ok_or(EdgeError::InvalidApiKey("invalid API key"))?;
    let matches = |stored: &str| bool::from(stored.as_bytes().ct_eq(hash.as_bytes()));
    let current_or_previous =
        matches(&key.hash) || key.previous.as_ref().is_some_and(|p| matches(&p.hash));
    if !current_or_previous || !key.accepts(&hash, now) {
        // Blocked, expired, revoked and rotated-out keys all look the same to the caller.
        return Err(EdgeError::InvalidApiKey("invalid API key"));
    }
    Ok(key)
}
