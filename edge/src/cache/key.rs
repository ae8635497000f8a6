//! The cache key of a request: what it asks (the normalised body), who may share the answer
//! (the policy's scope), and which input guardrails it passed under.
//!
//! Normalising: the body is read as JSON and hashed with object keys sorted, so that key order
//! and whitespace do not matter; the fields that do not change the answer (`stream`,
//! `stream_options`, `user`, `metadata`) are left out, so a streamed request hits an answer
//! stored by a plain one and the reverse.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Top-level request fields that do not change the answer.
const IGNORED: [&str; 4] = ["stream", "stream_options", "user", "metadata"];

/// The fields that hold a request's text: the semantic tier compares them by meaning.
const TEXT: [&str; 2] = ["messages", "input"];

/// The cache key of `body` for `route`, shared within `scope`, under `guardrails` (a
/// fingerprint of the guardrails that applied). `None` when the body is not JSON.
pub fn key(route: &str, scope: &str, guardrails: &[u8], body: &[u8]) -> Option<[u8; 32]> {
    hash_request(b"tollgate-cache-v1", route, scope, guardrails, body, &[])
}

/// The key of everything in the request but its text: requests of one family differ only in
/// what they say, and the semantic tier matches within a family.
pub fn family(route: &str, scope: &str, guardrails: &[u8], body: &[u8]) -> Option<[u8; 32]> {
    hash_request(b"tollgate-family-v1", route, scope, guardrails, body, &TEXT)
}

fn hash_request(
    version: &[u8],
    route: &str,
    scope: &str,
    guardrails: &[u8],
    body: &[u8],
    also_ignored: &[&str],
) -> Option<[u8; 32]> {
    let tree: Value = serde_json::from_slice(body).ok()?;
    let mut hash = Sha256::new();
    for part in [version, route.as_bytes(), scope.as_bytes(), guardrails] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    match &tree {
        Value::Object(fields) => {
            let mut names: Vec<&String> = fields
                .keys()
                .filter(|k| !IGNORED.contains(&k.as_str()) && !also_ignored.contains(&k.as_str()))
                .collect();
            names.sort();
            hash.update(b"{");
            for name in names {
                feed_str(&mut hash, name);
                feed(&mut hash, &fields[name]);
            }
        }
        other => feed(&mut hash, other),
    }
    Some(hash.finalize().into())
}

/// Hashes `value` unambiguously: a type tag, lengths before contents, object keys sorted.
fn feed(hash: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hash.update(b"n"),
        Value::Bool(b) => hash.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            hash.update(b"#");
            feed_str(hash, &n.to_string());
        }
        Value::String(s) => {
            hash.update(b"s");
            feed_str(hash, s);
        }
        Value::Array(items) => {
            hash.update(b"[");
            hash.update((items.len() as u64).to_le_bytes());
            items.iter().for_each(|v| feed(hash, v));
        }
        Value::Object(fields) => {
            hash.update(b"{");
            hash.update((fields.len() as u64).to_le_bytes());
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            for name in names {
                feed_str(hash, name);
                feed(hash, &fields[name]);
            }
        }
    }
}

fn feed_str(hash: &mut Sha256, s: &str) {
    hash.update((s.len() as u64).to_le_bytes());
    hash.update(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> [u8; 32] {
        key("chat", "team:t1", b"", body.as_bytes()).unwrap()
    }

    #[test]
    fn order_whitespace_and_streaming_do_not_change_the_key() {
        let plain = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(
            plain,
            chat(r#"{ "messages": [{"content": "hi", "role": "user"}], "model": "m" }"#)
        );
        assert_eq!(
            plain,
            chat(
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                    "stream_options":{"include_usage":true},"user":"u-1"}"#
            )
        );
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let plain = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        for other in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"m2","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
        ] {
            assert_ne!(plain, chat(other), "{other}");
        }
        let body = br#"{"model":"m","messages":[]}"#;
        let team = key("chat", "team:t1", b"", body);
        assert_ne!(team, key("chat", "team:t2", b"", body));
        assert_ne!(team, key("embeddings", "team:t1", b"", body));
        assert_ne!(team, key("chat", "team:t1", b"g1", body));
        assert_eq!(key("chat", "x", b"", b"not json"), None);
    }

    #[test]
    fn a_family_is_everything_but_the_text() {
        let family = |body: &str| family("chat", "team:t1", b"", body.as_bytes()).unwrap();
        let hi = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let hello = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
        assert_eq!(family(hi), family(hello));
        assert_ne!(family(hi), family(r#"{"model":"m2","messages":[]}"#));
        assert_ne!(family(hi), chat(hi));
    }
}
