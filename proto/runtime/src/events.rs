//! The domain's committed policy events in their wire form, and back.

use tollgate_policy::{RecordedEvent, SCHEMA_VERSION, decode_payload, encode_payload};
use tollgate_proto::convert::{from_timestamp, timestamp};
use tollgate_proto::policy::PolicyEvent;

/// Why a wire event could not be turned back into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("event {sequence}: {reason}")]
    Invalid { sequence: u64, reason: String },
}

/// The wire form of a committed event.
pub fn event_to_proto(event: &RecordedEvent) -> PolicyEvent {
    PolicyEvent {
        sequence: event.sequence,
        id: event.id.to_string(),
        aggregate_id: event.aggregate_id.clone(),
        version: event.version,
        r#type: event.event.type_name(),
        actor: event.actor.clone(),
        occurred_at: Some(timestamp(event.occurred_at)),
        schema_version: SCHEMA_VERSION,
        payload_json: encode_payload(&event.event),
        // Signed by the relay as it publishes: see `signing`.
        signature: Default::default(),
    }
}

/// The committed event a wire event carries.
pub fn event_from_proto(event: &PolicyEvent) -> Result<RecordedEvent, ConvertError> {
    let invalid = |reason: String| ConvertError::Invalid {
        sequence: event.sequence,
        reason,
    };
    Ok(RecordedEvent {
        sequence: event.sequence,
        id: event.id.parse().map_err(|e| invalid(format!("id: {e}")))?,
        aggregate_id: event.aggregate_id.clone(),
        version: event.version,
        actor: event.actor.clone(),
        occurred_at: event
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| invalid("missing or invalid occurred_at".to_owned()))?,
        event: decode_payload(event.schema_version, &event.payload_json)
            .map_err(|e| invalid(e.to_string()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use tollgate_policy::PolicyEvent as DomainEvent;

    #[test]
    fn events_round_trip_through_the_wire_form() {
        let event = RecordedEvent {
            sequence: 7,
            id: uuid::Uuid::now_v7(),
            aggregate_id: "key:k1".into(),
            version: 3,
            actor: "admin-token:t1".into(),
            occurred_at: DateTime::from_timestamp(1_800_000_000, 123_000_000).unwrap_or_default(),
            event: DomainEvent::KeyRevoked { id: "k1".into() },
        };
        let wire = event_to_proto(&event);
        assert_eq!(wire.r#type, "key.revoked");
        assert_eq!(event_from_proto(&wire).ok(), Some(event));
    }
}
