//! Relaying a chat stream to the client: events are forwarded as they arrive; the edge only
//! reads what it needs for usage and time-to-first-token, and drops the usage chunk it asked
//! for on the client's behalf.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use serde_json::json;

use super::openai::{StreamEvent, classify, generated_text_bytes, with_null_usage, without_usage};
use super::proxy::upstream_failure;
use super::record::{CLIENT_CLOSED, UsageRecord};
use crate::codec::sse::{EventSplitter, EventTooLarge};
use crate::pricing::Tokens;
use crate::providers::UpstreamError;

struct Relay {
    upstream: BoxStream<'static, Result<Bytes, UpstreamError>>,
    framer: EventSplitter,
    record: UsageRecord,
    client_wants_usage: bool,
    done: bool,
    /// Chunks with content relayed so far, and the bytes of generated text in them: what an
    /// abandoned stream is charged by when the provider never says what it used.
    content_chunks: u64,
    text_bytes: usize,
    /// Input tokens to charge when the provider never reports them (request bytes / 4).
    estimated_input: u64,
}

/// The client's body for an upstream stream.
///
/// A client that hangs up does not end what it costs: the upstream is read on for `grace`,
/// without relaying, to get the provider's final usage. When that does not come, the request
/// is charged an estimate of what was relayed: one output token per content chunk or per four
/// bytes of generated text (content and tool-call arguments), whichever is more, and its input
/// at one token per four request bytes. Either way it is recorded as `client_closed` (499).
pub struct RelayBody {
    relay: Option<Relay>,
    grace: Duration,
}

/// Relays `upstream` to the client (see [`RelayBody`]).
pub fn relay(
    upstream: BoxStream<'static, Result<Bytes, UpstreamError>>,
    record: UsageRecord,
    client_wants_usage: bool,
    estimated_input: u64,
    grace: Duration,
) -> RelayBody {
    RelayBody {
        relay: Some(Relay {
            upstream,
            framer: EventSplitter::default(),
            record,
            client_wants_usage,
            done: false,
            content_chunks: 0,
            text_bytes: 0,
            estimated_input,
        }),
        grace,
    }
}

impl Stream for RelayBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let Some(relay) = self.relay.as_mut() else {
                return Poll::Ready(None);
            };
            if relay.done {
                // Recorded now, not when the connection is finally dropped.
                self.relay = None;
                return Poll::Ready(None);
            }
            let polled = match ready!(relay.upstream.poll_next_unpin(cx)) {
                Some(Ok(bytes)) => match relay.forward(&bytes) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(out))),
                    Err(too_large) => Some(Err(UpstreamError::Failed(too_large.to_string()))),
                },
                other => other,
            };
            match polled {
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    // Headers are sent: report the failure in-band, as OpenAI does.
                    let error = upstream_failure(error);
                    relay.record.fail(&error);
                    relay.done = true;
                    let event = json!({"error": {"message": error.to_string(), "type": "api_error", "code": error.code()}});
                    return Poll::Ready(Some(Ok(Bytes::from(format!("data: {event}\n\n")))));
                }
                None => {
                    relay.done = true;
                    relay.record.finish(200, "");
                    if let Some(rest) = relay.framer.rest() {
                        return Poll::Ready(Some(Ok(rest)));
                    }
                }
            }
        }
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        let Some(relay) = self.relay.take() else {
            return;
        };
        if relay.done {
            return;
        }
        // The client hung up mid-stream.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(relay.drain(self.grace));
            }
            Err(_) => relay.charge_abandoned(),
        }
    }
}

impl Relay {
    /// The bytes to pass on for one upstream chunk.
    fn forward(&mut self, bytes: &[u8]) -> Result<Bytes, EventTooLarge> {
        let events = self.framer.push(bytes)?;
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
                        self.content_chunks += 1;
                        self.text_bytes += generated_text_bytes(&event);
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
        Ok(Bytes::from(out))
    }
}

impl Relay {
    /// Reads what is left of an abandoned stream for at most `grace`, for its usage.
    async fn drain(mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.record.has_tokens() {
            match tokio::time::timeout_at(deadline, self.upstream.next()).await {
                Ok(Some(Ok(bytes))) => {
                    if self.forward(&bytes).is_err() {
                        break;
                    }
                }
                // Ended, failed, or out of time: nothing more will be said about usage.
                Ok(Some(Err(_)) | None) | Err(_) => break,
            }
        }
        self.charge_abandoned();
    }

    /// Records an abandoned stream: its reported usage, else the estimate, as `client_closed`.
    fn charge_abandoned(mut self) {
        if !self.record.has_tokens() {
            self.record.set_tokens(Tokens {
                input: self.estimated_input,
                output: self.content_chunks.max(self.text_bytes.div_ceil(4) as u64),
                ..Tokens::default()
            });
        }
        self.record.finish(CLIENT_CLOSED as u16, "client_closed");
    }
}
