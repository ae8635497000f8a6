//! Relaying a chat stream to the client: events are forwarded as they arrive; the edge only
//! reads what it needs for usage and time-to-first-token, and drops the usage chunk it asked
//! for on the client's behalf.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use serde_json::json;

use super::openai::{StreamEvent, classify, generated_text_bytes, with_null_usage, without_usage};
use super::record::{CLIENT_CLOSED, UsageRecord};
use crate::codec::sse::{EventSplitter, EventTooLarge};
use crate::error::EdgeError;
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
    /// Fires when the stream has run for the edge's maximum stream duration.
    cutoff: Pin<Box<tokio::time::Sleep>>,
}

/// The client's body for an upstream stream.
///
/// A client that hangs up does not end what it costs: the upstream is read on for `grace`,
/// without relaying, to get the provider's final usage. When that does not come, the request
/// is charged an estimate of what was relayed: one output token per content chunk or per four
/// bytes of generated text (content and tool-call arguments), whichever is more, and its input
/// at one token per four request bytes. Either way it is recorded as `client_closed` (499).
/// A stream that fails, or runs past the maximum stream duration, is charged the same way.
pub struct RelayBody {
    relay: Option<Relay>,
    grace: Duration,
    max_duration: Duration,
}

/// How a stream is relayed: the upstream and what the response owes.
pub struct RelayParts {
    pub upstream: BoxStream<'static, Result<Bytes, UpstreamError>>,
    pub record: UsageRecord,
    pub client_wants_usage: bool,
    pub estimated_input: u64,
    /// How long the upstream of an abandoned stream is read on for its usage.
    pub grace: Duration,
    /// The longest the request may run, from its arrival, before its stream is cut.
    pub max_duration: Duration,
}

/// Relays `parts.upstream` to the client (see [`RelayBody`]).
pub fn relay(parts: RelayParts) -> RelayBody {
    let cutoff = tokio::time::Instant::from_std(parts.record.started()) + parts.max_duration;
    RelayBody {
        relay: Some(Relay {
            upstream: parts.upstream,
            framer: EventSplitter::default(),
            record: parts.record,
            client_wants_usage: parts.client_wants_usage,
            done: false,
            content_chunks: 0,
            text_bytes: 0,
            estimated_input: parts.estimated_input,
            cutoff: Box::pin(tokio::time::sleep_until(cutoff)),
        }),
        grace: parts.grace,
        max_duration: parts.max_duration,
    }
}

impl Stream for RelayBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let max_duration = self.max_duration;
        loop {
            let Some(relay) = self.relay.as_mut() else {
                return Poll::Ready(None);
            };
            if relay.done {
                // Recorded now, not when the connection is finally dropped.
                self.relay = None;
                return Poll::Ready(None);
            }
            let failure = if relay.cutoff.as_mut().poll(cx).is_ready() {
                UpstreamError::Timeout(format!(
                    "the stream ran longer than this gateway allows ({} s)",
                    max_duration.as_secs()
                ))
            } else {
                match ready!(relay.upstream.poll_next_unpin(cx)) {
                    Some(Ok(bytes)) => match relay.forward(&bytes) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(out))),
                        Err(too_large) => UpstreamError::Failed(too_large.to_string()),
                    },
                    Some(Err(error)) => error,
                    None => {
                        relay.done = true;
                        relay.record.finish(200, "");
                        match relay.framer.rest() {
                            Some(rest) => return Poll::Ready(Some(Ok(rest))),
                            None => continue,
                        }
                    }
                }
            };
            // Text a guardrail withheld was generated all the same.
            let withheld = match &failure {
                UpstreamError::Intervened { withheld_bytes, .. } => Some(*withheld_bytes),
                _ => None,
            };
            // Headers are sent: report the failure in-band, as OpenAI does.
            let error = EdgeError::from(failure);
            // Content that reached the client (or a guardrail) is charged, reported or not.
            if let Some(bytes) = withheld {
                relay.text_bytes += bytes;
            }
            if relay.content_chunks > 0 || withheld.is_some() {
                relay.estimate_unreported_usage();
            }
            relay.record.fail(&error);
            relay.done = true;
            let event = json!({"error": {"message": error.to_string(), "type": "api_error", "code": error.code()}});
            return Poll::Ready(Some(Ok(Bytes::from(format!("data: {event}\n\n")))));
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
    fn forward(&mut self, bytes: &Bytes) -> Result<Bytes, EventTooLarge> {
        let events = self.framer.push(bytes)?;
        // The usual read is one whole event, passed on as it came: no copy.
        if let [event] = events.as_slice() {
            return Ok(self.relayed(event).unwrap_or_default());
        }
        let mut out = Vec::with_capacity(bytes.len());
        for event in &events {
            if let Some(relayed) = self.relayed(event) {
                out.extend_from_slice(&relayed);
            }
        }
        Ok(Bytes::from(out))
    }

    /// What the client gets of one event (nothing of the usage Tollgate asked for on its
    /// behalf), once the usage and first token it carries are recorded.
    fn relayed(&mut self, event: &Bytes) -> Option<Bytes> {
        match classify(event) {
            StreamEvent::Chunk {
                usage,
                usage_only,
                has_usage_field,
            } => {
                if let Some(tokens) = usage {
                    self.record.set_tokens(tokens);
                }
                if usage_only && !self.client_wants_usage {
                    return None;
                }
                if !usage_only {
                    self.record.first_token();
                    self.content_chunks += 1;
                    self.text_bytes += generated_text_bytes(event);
                }
                // The usage Tollgate asked for on the client's behalf is not passed on.
                if has_usage_field
                    && !self.client_wants_usage
                    && let Some(stripped) = without_usage(event)
                {
                    return Some(stripped);
                }
                // A client that asked for usage gets `"usage": null` on every other chunk,
                // as from OpenAI, whichever provider served it.
                if !has_usage_field
                    && self.client_wants_usage
                    && let Some(with_null) = with_null_usage(event)
                {
                    return Some(with_null);
                }
            }
            StreamEvent::Done => self.record.finish(200, ""),
            StreamEvent::Other => {}
        }
        Some(event.clone())
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
        self.estimate_unreported_usage();
        self.record.finish(CLIENT_CLOSED as u16, "client_closed");
    }

    /// Charges the estimate of what was relayed when the provider has not reported usage.
    fn estimate_unreported_usage(&mut self) {
        if !self.record.has_tokens() {
            self.record.set_tokens(Tokens {
                input: self.estimated_input,
                output: self.content_chunks.max(self.text_bytes.div_ceil(4) as u64),
                ..Tokens::default()
            });
        }
    }
}
