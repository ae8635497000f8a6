//! AWS's binary event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock sends
//! `ConverseStream` and `InvokeModelWithResponseStream` answers.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde_json::Value;

/// The content type of an event stream.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// One event: `kind` is its `:event-type` (`messageStart`, `chunk`, …), `payload` its JSON.
pub fn event(kind: &str, payload: &Value) -> Bytes {
    frame(":event-type", kind, "event", payload)
}

/// An exception in the stream (`:exception-type` such as `modelStreamErrorException`), which
/// the AWS SDKs raise as an error of that name.
pub fn exception(kind: &str, message: &str) -> Bytes {
    let payload = serde_json::json!({ "message": message });
    frame(":exception-type", kind, "exception", &payload)
}

fn frame(type_header: &str, kind: &str, message_type: &'static str, payload: &Value) -> Bytes {
    let header =
        |name: &str, value: String| Header::new(name.to_owned(), HeaderValue::String(value.into()));
    let message = Message::new(payload.to_string())
        .add_header(header(type_header, kind.to_owned()))
        .add_header(header(":content-type", "application/json".to_owned()))
        .add_header(header(":message-type", message_type.to_owned()));
    let mut buffer = Vec::new();
    // Writing to a Vec fails only for headers longer than the format allows; these are short.
    let _ = write_message_to(&message, &mut buffer);
    Bytes::from(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;

    #[test]
    fn an_event_reads_back_with_its_type_and_payload() {
        let framed = event("messageStart", &serde_json::json!({"role": "assistant"}));
        let mut bytes = &framed[..];
        let message = read_message_from(&mut bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(bytes.is_empty());
        let kind = message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == ":event-type")
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned());
        assert_eq!(kind.as_deref(), Some("messageStart"));
        assert_eq!(&message.payload()[..], br#"{"role":"assistant"}"#);
    }
}
