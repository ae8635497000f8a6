//! The HTTP exchange shared by the providers that call their upstream with a JSON body over
//! the [`UpstreamClient`](super::client::UpstreamClient) (OpenAI and compatible servers, Azure
//! OpenAI, Anthropic, Gemini): sending under a deadline, bodies read with a bound, error
//! statuses mapped to [`UpstreamError`] (each provider says where its message is and what else
//! its errors mean), and a server-sent event stream relayed as it is or translated event by
//! event into OpenAI chunks.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::header::{HeaderValue, RETRY_AFTER};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::UpstreamError;
use super::client::UpstreamResponse;
use crate::codec::sse::DataFramer;

/// The most a complete upstream answer may hold: a batch of embeddings at OpenAI's largest is
/// about 100 MB of JSON. More is refused rather than held in memory.
pub(super) const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;
/// The most of an error answer that is read (only its message is used).
pub(super) const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;
/// The most of an answer's announced length that is allocated before its bytes come.
const PREALLOCATED_BYTES: usize = 1024 * 1024;

/// Waits until `give_up` for the answer to `request` (a call the client is making) to start.
/// An error status is read (a bounded body, by the same deadline) and mapped by
/// `status_error(status, body, retry-after)`.
pub(super) async fn send(
    request: impl Future<Output = Result<UpstreamResponse, hyper_util::client::legacy::Error>>,
    give_up: Instant,
    what: &str,
    status_error: impl FnOnce(u16, &[u8], Option<String>) -> UpstreamError,
) -> Result<UpstreamResponse, UpstreamError> {
    let deadline = give_up.saturating_duration_since(Instant::now());
    let response = tokio::time::timeout_at(give_up, request)
        .await
        .map_err(|_| UpstreamError::Timeout(format!("{what} did not answer within {deadline:?}")))?
        .map_err(|e| transport_error(&e, what))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = tokio::time::timeout_at(give_up, bounded_body(response, MAX_ERROR_BODY_BYTES, what))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Err(status_error(status.as_u16(), &body, retry_after))
}

/// The whole body of an answer that has started, read by `give_up` (`total` after the call
/// began, for the message).
pub(super) async fn whole_body(
    response: UpstreamResponse,
    give_up: Instant,
    total: Duration,
    what: &str,
) -> Result<Bytes, UpstreamError> {
    tokio::time::timeout_at(give_up, bounded_body(response, MAX_BODY_BYTES, what))
        .await
        .map_err(|_| UpstreamError::Timeout(format!("{what} did not finish within {total:?}")))?
}

/// A response's whole body, at most `limit` bytes (an error beyond).
pub(super) async fn bounded_body(
    response: UpstreamResponse,
    limit: usize,
    what: &str,
) -> Result<Bytes, UpstreamError> {
    let too_large =
        || UpstreamError::Failed(format!("{what} answered with more than {limit} bytes"));
    let mut upstream = response.into_body();
    // The announced length (`Content-Length`), when there is one.
    let announced = upstream.size_hint().exact();
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    // Copied rather than kept as the chunks come: a chunk shares the connection's read
    // buffer, which a kept answer (the response cache) would hold on to whole. Sized by the
    // announced length (one allocation), up to a point: an upstream that announces much and
    // sends little must not make the edge hold much.
    let reserve = announced.map_or(0, |length| length.min(PREALLOCATED_BYTES as u64) as usize);
    let mut body = BytesMut::with_capacity(reserve);
    while let Some(chunk) = next_data(&mut upstream).await {
        let chunk = chunk.map_err(|e| transport_error(&e, what))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The next piece of a body's data (trailers, which no provider sends, are skipped).
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// What an error status means, as most providers mean it: the `rate_limited` statuses are rate
/// limiting, 401 and 403 refused credentials, other client errors a rejection the client
/// should see with the upstream's `message`, anything else a failure of the upstream.
pub(super) fn status_error(
    status: u16,
    message: Option<String>,
    retry_after: Option<String>,
    rate_limited: &[u16],
    what: &str,
) -> UpstreamError {
    match status {
        _ if rate_limited.contains(&status) => UpstreamError::RateLimited { retry_after },
        401 | 403 => credentials_refused(status, what),
        400..=499 => UpstreamError::Rejected {
            status,
            message: message
                .unwrap_or_else(|| format!("{what} rejected the request (HTTP {status})")),
        },
        _ => UpstreamError::Failed(format!("{what} failed with HTTP {status}")),
    }
}

/// The mapping of an error status for [`send`], as [`status_error`] means it with the message
/// of a `{"error": {"message": …}}` body (OpenAI's, Anthropic's).
pub(super) fn json_status_error<'a>(
    rate_limited: &'a [u16],
    what: &'a str,
) -> impl FnOnce(u16, &[u8], Option<String>) -> UpstreamError + 'a {
    move |status, body, retry_after| {
        status_error(status, error_message(body), retry_after, rate_limited, what)
    }
}

/// The upstream refused the deployment's credential.
pub(super) fn credentials_refused(status: u16, what: &str) -> UpstreamError {
    UpstreamError::Failed(format!(
        "{what} refused Tollgate's credentials (HTTP {status})"
    ))
}

/// The `error.message` of a `{"error": {"message": …}}` body (OpenAI's, Anthropic's,
/// Gemini's), at most 1,000 characters.
pub(super) fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.pointer("/error/message")?.as_str()?;
    Some(super::upstream_message(message))
}

/// A credential field, after `prefix` (`"Bearer "`, or nothing), as a header value marked
/// sensitive (kept out of logs). Written once into the value's own buffer: no `format!` copy.
pub(super) fn secret_header(
    prefix: &str,
    value: &str,
    deployment: &tollgate_policy::model::Deployment,
) -> Result<HeaderValue, UpstreamError> {
    let mut joined = BytesMut::with_capacity(prefix.len() + value.len());
    joined.extend_from_slice(prefix.as_bytes());
    joined.extend_from_slice(value.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(joined.freeze()).map_err(|_| {
        UpstreamError::Failed(format!(
            "deployment {} has a credential that cannot be sent in a header",
            deployment.id
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A failure of the client (a `hyper_util` client error) or of an answer's body (a `hyper`
/// error) as an upstream error. Only those two errors' own messages are used, never those of
/// what caused them (a connector's, which may name the host): neither holds the URL, which
/// may carry a secret in its query.
pub(super) fn transport_error(e: &(dyn StdError + 'static), what: &str) -> UpstreamError {
    if let Some(local) = local_shortage(e, what) {
        return local;
    }
    let timed_out = causes(e).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    });
    let connect = causes(e).any(|e| {
        e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
    });
    if timed_out {
        return UpstreamError::Timeout(format!("{what} timed out"));
    }
    if connect {
        return UpstreamError::Failed(format!("could not connect to {what}"));
    }
    // The client's error says which step failed, hyper's (its causes) how.
    let mut message = format!("{what} failed");
    for e in causes(e) {
        if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            message.push_str(&format!(": {e}"));
        } else if let Some(e) = e.downcast_ref::<hyper::Error>() {
            message.push_str(&format!(": {e}"));
        }
    }
    UpstreamError::Failed(message)
}

/// [`UpstreamError::Local`] when `e` comes of this process being out of file descriptors (a
/// connect's `socket(2)` failing), logged: the deployment had no part in it.
pub(super) fn local_shortage(e: &(dyn StdError + 'static), what: &str) -> Option<UpstreamError> {
    let out_of_files = causes(e).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::EMFILE || code == libc::ENFILE)
    });
    out_of_files.then(|| {
        tracing::error!(
            "{what}: not called, this edge is out of file descriptors (raise its open-file limit)"
        );
        UpstreamError::Local(format!(
            "{what} was not called: this gateway is out of file descriptors"
        ))
    })
}

/// `e` and the errors that caused it, `e` first.
fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e| (*e).source())
}

/// An answer's body relayed as it arrives, ended with a timeout when nothing comes for `stall`.
pub(super) fn relay(
    response: UpstreamResponse,
    stall: Duration,
    what: String,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    let state = (response.into_body(), what);
    futures::stream::unfold(state, move |(mut body, what)| async move {
        let next = match tokio::time::timeout(stall, next_data(&mut body)).await {
            Ok(Some(Ok(bytes))) => Ok(bytes),
            Ok(Some(Err(e))) => Err(transport_error(&e, &what)),
            Ok(None) => return None,
            Err(_) => Err(UpstreamError::Timeout(format!(
                "{what} stalled for {stall:?}"
            ))),
        };
        Some((next, (body, what)))
    })
    .boxed()
}

/// How a provider reported a failure inside its stream.
pub(super) enum StreamFailure {
    /// The provider is rate limiting or overloaded.
    RateLimited,
    /// Another error the provider reported: (its type or status, its message).
    Error(String, String),
    /// The event could not be read.
    Unreadable,
}

/// One provider's stream events turned into OpenAI chunks.
pub(super) trait EventTranslator: Send + 'static {
    /// Translates one event's data, appending the chunks it makes to `out`.
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure>;
    /// Whether the provider's last event has come: nothing after it is read.
    fn stopped(&self) -> bool;
    /// The upstream closed its stream: the closing chunks, or the event that never came.
    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str>;
}

/// State of a stream being translated.
struct Translation<T> {
    upstream: Incoming,
    framer: DataFramer,
    translator: T,
    stall: Duration,
    what: String,
    /// A failure to report after the chunks already translated.
    failure: Option<UpstreamError>,
    done: bool,
}

impl<T: EventTranslator> Translation<T> {
    /// Translates events, stopping at the first failure or at the provider's last event.
    fn translate(&mut self, events: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        for data in events {
            if let Err(failure) = self.translator.event(&data, out) {
                self.failure = Some(stream_failure(failure, &self.what));
                return;
            }
            if self.translator.stopped() {
                self.done = true;
                return;
            }
        }
    }

    /// What the upstream's next piece of the stream makes, into `out`.
    async fn step(&mut self, out: &mut Vec<u8>) {
        match tokio::time::timeout(self.stall, next_data(&mut self.upstream)).await {
            Ok(Some(Ok(bytes))) => match self.framer.push(&bytes) {
                Ok(events) => self.translate(events, out),
                Err(too_large) => {
                    let message = format!("{}: {too_large}", self.what);
                    self.failure = Some(UpstreamError::Failed(message));
                }
            },
            Ok(Some(Err(e))) => self.failure = Some(transport_error(&e, &self.what)),
            Ok(None) => {
                let rest = self.framer.rest().into_iter().collect();
                self.translate(rest, out);
                if self.failure.is_none() && !self.done {
                    self.done = true;
                    if let Err(missing) = self.translator.end(out) {
                        let message = format!("{} ended its stream before {missing}", self.what);
                        self.failure = Some(UpstreamError::Failed(message));
                    }
                }
            }
            Err(_) => {
                let message = format!("{} stalled for {:?}", self.what, self.stall);
                self.failure = Some(UpstreamError::Timeout(message));
            }
        }
    }
}

/// OpenAI chunks, each sent on as soon as the upstream event it comes from arrived; a failure
/// (reported by the upstream, of the connection, or a stall of `stall`) ends the stream after
/// the chunks already made.
pub(super) fn translate_events<T: EventTranslator>(
    response: UpstreamResponse,
    translator: T,
    stall: Duration,
    what: String,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    let state = Translation {
        upstream: response.into_body(),
        framer: DataFramer::default(),
        translator,
        stall,
        what,
        failure: None,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(failure) = s.failure.take() {
                s.done = true;
                return Some((Err(failure), s));
            }
            if s.done {
                return None;
            }
            let mut out = Vec::new();
            s.step(&mut out).await;
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), s));
            }
        }
    })
    .boxed()
}

fn stream_failure(failure: StreamFailure, what: &str) -> UpstreamError {
    match failure {
        StreamFailure::RateLimited => UpstreamError::RateLimited { retry_after: None },
        StreamFailure::Error(kind, message) => {
            UpstreamError::Failed(format!("{what} reported {kind} mid-stream: {message}"))
        }
        StreamFailure::Unreadable => {
            UpstreamError::Failed(format!("{what} sent an unreadable stream event"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_deployment as deployment;
    use super::*;

    #[test]
    fn a_credential_becomes_a_sensitive_header_after_its_prefix() {
        let bearer = secret_header("Bearer ", "sk-secret", &deployment()).unwrap();
        assert_eq!(bearer, "Bearer sk-secret");
        assert!(bearer.is_sensitive());
        let bare = secret_header("", "sk-secret", &deployment()).unwrap();
        assert_eq!(bare, "sk-secret");
        assert!(bare.is_sensitive());
    }

    #[test]
    fn a_credential_that_cannot_be_a_header_is_refused_without_being_echoed() {
        let Err(UpstreamError::Failed(message)) =
            secret_header("Bearer ", "sk-secret\r\nx-injected: 1", &deployment())
        else {
            panic!("a credential with a line break was taken");
        };
        assert_eq!(
            message,
            "deployment d1 has a credential that cannot be sent in a header"
        );
    }
}
