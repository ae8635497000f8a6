//! Output guardrails on a stream. Chunks are held until the text they carry has been checked:
//!
//! - `during_call`: every [`WINDOW_CHARS`] characters of new answer text (and at the end), the
//!   window is checked together with the last [`OVERLAP_CHARS`] characters already released, so
//!   a match across a window boundary is seen; the window's chunks are then released (masked
//!   when a guardrail masked). The client sees text up to one window late.
//! - `post_call`: the whole answer is held and checked once at the end (buffering).
//!
//! On a block the stream ends with a final error event (`guardrail_intervened`); chunks of the
//! offending window are never released.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tollgate_policy::PolicyState;

use super::text::{delta_text, with_delta_text};
use super::{Check, Guardrails, Source, Tally};
use crate::codec::sse::{EventSplitter, event_data};
use crate::error::EdgeError;
use crate::providers::UpstreamError;

/// New answer characters per `during_call` check.
pub const WINDOW_CHARS: usize = 500;
/// Characters of already released text checked again with the next window.
pub const OVERLAP_CHARS: usize = 100;

type Upstream = BoxStream<'static, Result<Bytes, UpstreamError>>;

/// What runs the checks of one stream.
pub struct StreamGuard {
    pub guardrails: Arc<Guardrails>,
    pub state: Arc<PolicyState>,
    pub checks: Vec<Arc<Check>>,
    /// `post_call`: check once, at the end; else in windows.
    pub whole: bool,
    /// Filled in as windows are checked, read when the stream ends.
    pub tally: Arc<std::sync::Mutex<Tally>>,
}

struct Held {
    event: Bytes,
    /// The event's data when it carries answer text.
    text: Option<(Vec<u8>, String)>,
}

struct Guarding {
    upstream: Upstream,
    guard: StreamGuard,
    splitter: EventSplitter,
    held: Vec<Held>,
    held_chars: usize,
    /// The end of the text already released, for the overlap.
    released_tail: String,
    ready: VecDeque<Bytes>,
    /// Ends the stream once `ready` is sent.
    pending_error: Option<UpstreamError>,
    ended: bool,
}

/// `upstream` with `guard`'s checks applied to the answer it carries.
pub fn guarded(upstream: Upstream, guard: StreamGuard) -> Upstream {
    let state = Guarding {
        upstream,
        guard,
        splitter: EventSplitter::default(),
        held: Vec::new(),
        held_chars: 0,
        released_tail: String::new(),
        ready: VecDeque::new(),
        pending_error: None,
        ended: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(bytes) = s.ready.pop_front() {
                return Some((Ok(bytes), s));
            }
            if let Some(error) = s.pending_error.take() {
                return Some((Err(error), s));
            }
            if s.ended {
                return None;
            }
            let last = match s.upstream.next().await {
                Some(Ok(bytes)) => match s.splitter.push(&bytes) {
                    Ok(events) => {
                        events.into_iter().for_each(|e| s.hold(e));
                        false
                    }
                    Err(e) => {
                        s.fail(UpstreamError::Failed(e.to_string()));
                        continue;
                    }
                },
                Some(Err(error)) => {
                    s.fail(error);
                    continue;
                }
                None => {
                    if let Some(rest) = s.splitter.rest() {
                        s.hold(rest);
                    }
                    s.ended = true;
                    true
                }
            };
            let window_full = !s.guard.whole && s.held_chars >= WINDOW_CHARS;
            if (last || window_full)
                && let Err(error) = s.release().await
            {
                s.fail(error);
            }
        }
    })
    .boxed()
}

impl Guarding {
    fn hold(&mut self, event: Bytes) {
        let text = event_data(&event).and_then(|data| {
            let text = delta_text(&data)?;
            Some((data.into_owned(), text))
        });
        if let Some((_, t)) = &text {
            self.held_chars += t.chars().count();
        }
        self.held.push(Held { event, text });
    }

    /// Ends the stream with `error`. Unchecked text is never released; the provider's usage,
    /// when it came, is (so the request is charged what it used), and the withheld text is
    /// counted into an intervention for the estimate when it did not.
    fn fail(&mut self, error: UpstreamError) {
        self.ended = true;
        let withheld: usize = self
            .held
            .iter()
            .filter_map(|h| h.text.as_ref().map(|(_, t)| t.len()))
            .sum();
        self.ready = self
            .held
            .drain(..)
            .filter(|h| h.text.is_none() && carries_usage(&h.event))
            .map(|h| h.event)
            .collect();
        self.held_chars = 0;
        self.pending_error = Some(match error {
            UpstreamError::Intervened {
                guardrail, summary, ..
            } => UpstreamError::Intervened {
                guardrail,
                summary,
                withheld_bytes: withheld,
            },
            other => other,
        });
    }

    /// Checks the held text and moves the held chunks to `ready`, masked where needed.
    async fn release(&mut self) -> Result<(), UpstreamError> {
        let new: String = self
            .held
            .iter()
            .filter_map(|h| h.text.as_ref().map(|(_, t)| t.as_str()))
            .collect();
        if new.is_empty() {
            self.ready.extend(self.held.drain(..).map(|h| h.event));
            self.held_chars = 0;
            return Ok(());
        }
        let overlap = if self.guard.whole {
            String::new()
        } else {
            self.released_tail.clone()
        };
        let window = format!("{overlap}{new}");
        let masked = match check(&self.guard, &window).await? {
            None => None,
            Some(masked) => match masked.strip_prefix(&overlap) {
                Some(rest) => Some(rest.to_owned()),
                // A finding straddles the boundary: mask what is still ours to change.
                None => check(&self.guard, &new).await?,
            },
        };
        let released = masked.as_deref().unwrap_or(&new);
        let held = std::mem::take(&mut self.held);
        self.held_chars = 0;
        let tail = format!("{}{released}", self.released_tail);
        self.released_tail = last_chars(&tail, OVERLAP_CHARS).to_owned();
        let mut replacement = masked;
        for h in held {
            match (&h.text, replacement.as_mut()) {
                // The masked window goes out in its first text chunk; the others carry none.
                (Some((data, _)), Some(text)) => {
                    let out = with_delta_text(data, text).unwrap_or_default();
                    text.clear();
                    self.ready.push_back(out);
                }
                _ => self.ready.push_back(h.event),
            }
        }
        Ok(())
    }
}

/// Runs `g`'s checks over `text`; the masked text when a guardrail masked.
async fn check(g: &StreamGuard, text: &str) -> Result<Option<String>, UpstreamError> {
    let mut tally = Tally::default();
    let texts = [text.to_owned()];
    let result = g
        .guardrails
        .run(&g.state, &g.checks, &texts, Source::Output, &mut tally)
        .await;
    {
        let mut total = g.tally.lock().unwrap_or_else(|e| e.into_inner());
        total.elapsed += tally.elapsed;
        total.intervened.extend(tally.intervened);
    }
    match result {
        Ok(masked) => Ok(masked.and_then(|mut t| t.pop())),
        Err(EdgeError::GuardrailIntervened { guardrail, summary }) => {
            Err(UpstreamError::Intervened {
                guardrail,
                summary,
                withheld_bytes: 0,
            })
        }
        Err(other) => Err(UpstreamError::Failed(other.to_string())),
    }
}

/// Whether a chunk reports the provider's usage.
fn carries_usage(event: &[u8]) -> bool {
    event_data(event)
        .and_then(|data| serde_json::from_slice::<serde_json::Value>(&data).ok())
        .is_some_and(|chunk| chunk.get("usage").is_some_and(|u| u.is_object()))
}

/// The last `n` characters of `s`.
fn last_chars(s: &str, n: usize) -> &str {
    match n.checked_sub(1) {
        Some(back) => s.char_indices().rev().nth(back).map_or(s, |(i, _)| &s[i..]),
        None => "",
    }
}
