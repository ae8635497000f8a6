//! Relaying a chat stream to the client: events are forwarded as they arrive; the edge only
//! reads what it needs for usage and time-to-first-token, and drops the usage chunk it asked
//! for on the client's behalf.

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use serde_json::json;

use super::openai::{SseFramer, StreamEvent, classify, with_null_usage, without_usage};
use super::proxy::upstream_failure;
use super::record::UsageRecord;
use crate::providers::UpstreamError;

struct Relay {
    upstream: BoxStream<'static, Result<Bytes, UpstreamError>>,
    framer: SseFramer,
    record: UsageRecord,
    client_wants_usage: bool,
    done: bool,
}

/// The client's body for an upstream stream. Dropping it (the client hung up) records the
/// usage seen so far as `client_closed`.
pub fn relay(
    upstream: BoxStream<'static, Result<Bytes, UpstreamError>>,
    record: UsageRecord,
    client_wants_usage: bool,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let relay = Relay {
        upstream,
        framer: SseFramer::default(),
        record,
        client_wants_usage,
        done: false,
    };
    futures::stream::unfold(relay, |mut relay| async move {
        loop {
            if relay.done {
                return None;
            }
            match relay.upstream.next().await {
                Some(Ok(bytes)) => {
                    let out = relay.forward(&bytes);
                    if !out.is_empty() {
                        return Some((Ok(out), relay));
                    }
                }
                Some(Err(error)) => {
                    // Headers are sent: report the failure in-band, as OpenAI does.
                    let error = upstream_failure(error);
                    relay.record.fail(&error);
                    relay.done = true;
                    let event = json!({"error": {"message": error.to_string(), "type": "api_error", "code": error.code()}});
                    return Some((Ok(Bytes::from(format!("data: {event}\n\n"))), relay));
                }
                None => {
                    relay.done = true;
                    relay.record.finish(200, "");
                    return relay.framer.rest().map(|rest| (Ok(rest), relay));
                }
            }
        }
    })
}

impl Relay {
    /// The bytes to pass on for one upstream chunk.
    fn forward(&mut self, bytes: &[u8]) -> Bytes {
        let events = self.framer.push(bytes);
        let mut out = Vec::with_capacity(bytes.len());
        for event in events {
            match classify(&event) {
                StreamEvent::Chunk {
                    usage,
                    usage_only,
                    has_usage_field,
                } => {
                    if let Some(tokens) = usage {
                        self.record.set_tokens(tokens);
                    }
                    if usage_only && !self.client_wants_usage {
                        continue;
                    }
                    if !usage_only {
                        self.record.first_token();
                    }
                    // The usage Tollgate asked for on the client's behalf is not passed on.
                    if has_usage_field
                        && !self.client_wants_usage
                        && let Some(stripped) = without_usage(&event)
                    {
                        out.extend_from_slice(&stripped);
                        continue;
                    }
                    // A client that asked for usage gets `"usage": null` on every other chunk,
                    // as from OpenAI, whichever provider served it.
                    if !has_usage_field
                        && self.client_wants_usage
                        && let Some(with_null) = with_null_usage(&event)
                    {
                        out.extend_from_slice(&with_null);
                        continue;
                    }
                }
                StreamEvent::Done => self.record.finish(200, ""),
                StreamEvent::Other => {}
            }
            out.extend_from_slice(&event);
        }
        Bytes::from(out)
    }
}
