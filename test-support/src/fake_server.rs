//! The shell every fake upstream shares: a real HTTP server on a random port of 127.0.0.1 that
//! serves the fake's routes until dropped, and a log of the requests it received. The fakes
//! differ only in the protocol they speak; this is the part that is the same.

use std::borrow::Borrow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

/// A running fake upstream: its routes served on a random port of 127.0.0.1 over the state
/// `S` they share with the test; it stops accepting connections when dropped. Each fake is
/// this type over a state of its own (mostly [`Logged`]), with methods of its own beside the
/// ones every fake has.
pub struct Fake<S> {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<S>,
}

impl<S: Default + Send + Sync + 'static> Fake<S> {
    /// Serves `routes` over a fresh state.
    pub(crate) async fn serve(routes: Router<Arc<S>>) -> anyhow::Result<Fake<S>> {
        let shared = Arc::new(S::default());
        let app = routes.with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Fake { addr, task, shared })
    }
}

impl<S> Fake<S> {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state the fake's handlers share.
    pub(crate) fn shared(&self) -> &S {
        &self.shared
    }
}

impl<S> Drop for Fake<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fake's state: the log of the requests it received, and `X`, what else that fake keeps
/// (reached through `Deref`, so a handler's `shared.x` is `X`'s field `x`). `X` is a type of
/// the fake's own, which also keeps each fake's methods apart.
pub struct Logged<R, X> {
    pub(crate) log: RequestLog<R>,
    extra: X,
}

impl<R, X: Default> Default for Logged<R, X> {
    fn default() -> Self {
        Logged {
            log: RequestLog::default(),
            extra: X::default(),
        }
    }
}

impl<R, X> std::ops::Deref for Logged<R, X> {
    type Target = X;
    fn deref(&self) -> &X {
        &self.extra
    }
}

impl<R: Clone, X> Fake<Logged<R, X>> {
    /// How many requests were received so far.
    pub fn requests(&self) -> usize {
        self.shared.log.count()
    }

    /// The last request received.
    pub fn last_request(&self) -> Option<R> {
        self.shared.log.last()
    }
}

/// A request as the JSON fakes (OpenAI, Anthropic, Gemini) record it: headers (names in lower
/// case, in order) and the JSON body.
pub type JsonRequest = (Vec<(String, String)>, Value);

/// A request as a fake records it, with its JSON body.
pub trait WithBody {
    /// The JSON body (`null` when it was not JSON).
    fn body(&self) -> &Value;
}

impl WithBody for JsonRequest {
    fn body(&self) -> &Value {
        &self.1
    }
}

impl<R: Clone + WithBody, X> Fake<Logged<R, X>> {
    /// The body of the last request received (`null` if none).
    pub fn last_body(&self) -> Value {
        self.last_request()
            .map_or(Value::Null, |request| request.body().clone())
    }
}

impl<X> Fake<Logged<JsonRequest, X>> {
    /// The value of header `name` (case-insensitive) in the last request.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let (headers, _) = self.last_request()?;
        find_header(&headers, name).map(str::to_owned)
    }
}

/// How many requests a fake received, and the last one as the fake records it (`R`).
pub struct RequestLog<R> {
    count: AtomicUsize,
    last: Mutex<Option<R>>,
}

impl<R> Default for RequestLog<R> {
    fn default() -> Self {
        RequestLog {
            count: AtomicUsize::new(0),
            last: Mutex::new(None),
        }
    }
}

impl<R: Clone> RequestLog<R> {
    /// Counts `request` and keeps it as the last one.
    pub fn record(&self, request: R) {
        *lock(&self.last) = Some(request);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The last request received.
    pub fn last(&self) -> Option<R> {
        lock(&self.last).clone()
    }
}

/// Headers as the fakes record them: names in lower case, in the order received.
pub fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_owned(), v)
        })
        .collect()
}

/// The value of header `name` (case-insensitive) among recorded headers.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `answer`, followed by what the fake saw of `images` (`I see 2 images: …`) when there are any.
pub fn seeing<S: Borrow<str>>(answer: &str, images: &[S]) -> String {
    let n = images.len();
    let plural = if n == 1 { "image" } else { "images" };
    match n {
        0 => answer.to_owned(),
        _ => format!("{answer} I see {n} {plural}: {}", images.join(", ")),
    }
}

/// How the fakes count tokens in `text`: its whitespace-separated words.
pub fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Locks a fake's state; a test that panicked while holding it leaves nothing half-written
/// that matters, so a poisoned lock is taken as it is.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A server-sent event stream of `events` (`content_type` as the provider sends it), slowed
/// down or cut short as the request's `model` commands: `slow-stream` waits 200 ms before each
/// event, `cut-stream` sends two events and then drops the connection.
pub fn event_stream(mut events: Vec<Bytes>, model: &str, content_type: &'static str) -> Response {
    let cut = model == "cut-stream";
    if cut {
        events.truncate(2);
    }
    let delay = (model == "slow-stream").then_some(Duration::from_millis(200));
    let events = futures::stream::iter(events).then(move |event| async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, std::io::Error>(event)
    });
    // An error from the body makes the server drop the connection mid-response; the pause
    // lets the events reach the client first.
    let dropped = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::other("cut-stream"))
    });
    let body = if cut {
        Body::from_stream(events.chain(dropped))
    } else {
        Body::from_stream(events)
    };
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}
