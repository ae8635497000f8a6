//! JSON for the generated messages (the CLI's `--output json`): timestamps as RFC 3339.

use serde::Serializer;

/// Serialises an optional protobuf timestamp as RFC 3339 UTC text, or null.
pub fn timestamp<S: Serializer>(
    ts: &Option<prost_types::Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ts.as_ref().and_then(crate::convert::from_timestamp) {
        Some(at) => s.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => s.serialize_none(),
    }
}
