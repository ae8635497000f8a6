//! Authentication of virtual keys: `Authorization: Bearer tg-…` or `x-api-key: tg-…`, looked up
//! by SHA-256 and compared in constant time, against the policy this request holds; or a SigV4
//! signature made with the key's id and secret (see [`sigv4`]).

pub mod sigv4;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{VirtualKey, hash_secret};
use tollgate_policy::sealing::SealingKey;

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

/// The live key whose secret made `auth`'s SigV4 signature of `request`, at `now`: the
/// current secret, or the previous one within its rotation grace. A signature is accepted once.
pub fn authenticate_signed<'s>(
    auth: &sigv4::Authorization,
    request: &sigv4::Signed<'_>,
    state: &'s PolicyState,
    sealing: Option<&SealingKey>,
    replays: &sigv4::Replays,
    now: DateTime<Utc>,
) -> Result<&'s VirtualKey, EdgeError> {
    let key = state
        .keys
        .get(&auth.access_key_id)
        .ok_or(EdgeError::InvalidApiKey("invalid API key"))?;
    let mut secrets = Vec::with_capacity(2);
    if key.accepts(&key.hash, now) {
        secrets.push(&key.signing);
    }
    if let Some(previous) = &key.previous
        && key.accepts(&previous.hash, now)
    {
        secrets.push(&previous.signing);
    }
    if secrets.is_empty() {
        // Blocked, expired and revoked keys look like unknown ones.
        return Err(EdgeError::InvalidApiKey("invalid API key"));
    }
    let mut refusal = None;
    for sealed in secrets {
        let secret = sealed
            .as_ref()
            .filter(|s| sealing.is_some_and(|k| k.id() == s.key_id))
            .and_then(|s| sealing?.open(&s.sealed).ok());
        let Some(secret) = secret else {
            refusal.get_or_insert_with(|| {
                "this key cannot sign SigV4 requests (its secret was not sealed with this \
                 gateway's credential key); send it as a bearer token instead"
                    .to_owned()
            });
            continue;
        };
        match sigv4::verify(auth, request, &secret, now) {
            Ok(()) if replays.first_use(auth) => return Ok(key),
            Ok(()) => {
                return Err(EdgeError::SignatureRejected(
                    "this signed request was already received: each signature is accepted once"
                        .into(),
                ));
            }
            // The first refusal (the current secret's) is the one worth reporting.
            Err(message) => {
                refusal.get_or_insert(message);
            }
        }
    }
    Err(EdgeError::SignatureRejected(refusal.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tollgate_policy::event::{PolicyEvent, RecordedEvent};

    const SECRET: &str = "tg-the-one-real-key";

    fn state_with_one_key() -> PolicyState {
        let key = VirtualKey::new(
            "k".to_owned(),
            "real".to_owned(),
            "tg-the".to_owned(),
            hash_secret(SECRET),
            DateTime::UNIX_EPOCH,
        );
        let mut state = PolicyState::default();
        state.apply(&RecordedEvent {
            sequence: 1,
            id: uuid::Uuid::nil(),
            aggregate_id: "key:k".to_owned(),
            version: 1,
            actor: "test".to_owned(),
            occurred_at: DateTime::UNIX_EPOCH,
            event: PolicyEvent::KeyCreated { key },
        });
        state
    }

    fn headers(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
        let value = axum::http::HeaderValue::from_bytes(value).ok()?;
        let mut headers = HeaderMap::new();
        headers.insert(name, value);
        Some(headers)
    }

    #[test]
    fn the_real_key_is_accepted_both_ways() {
        let state = state_with_one_key();
        for (name, value) in [
            ("authorization", format!("Bearer {SECRET}")),
            ("x-api-key", SECRET.to_owned()),
        ] {
            let headers = headers(name, value.as_bytes()).unwrap_or_default();
            assert!(authenticate(&headers, &state, Utc::now()).is_ok(), "{name}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever a client sends as its key, it is refused as an invalid key (401), never
        /// accepted and never a panic.
        #[test]
        fn any_other_authorization_header_is_an_invalid_key(
            value in proptest::collection::vec(any::<u8>(), 0..200),
            bearer in any::<bool>(),
            x_api_key in any::<bool>(),
        ) {
            let state = state_with_one_key();
            let mut value = value;
            if bearer {
                value.splice(0..0, b"Bearer ".iter().copied());
            }
            let name = if x_api_key { "x-api-key" } else { "authorization" };
            if let Some(headers) = headers(name, &value) {
                prop_assume!(presented_key(&headers) != Some(SECRET));
                let refused = authenticate(&headers, &state, Utc::now());
                prop_assert!(matches!(refused, Err(EdgeError::InvalidApiKey(_))));
                prop_assert_eq!(refused.err().map(|e| e.status().as_u16()), Some(401));
            }
        }
    }
}
