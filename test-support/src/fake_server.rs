//! The shell every fake upstream shares: a real HTTP server on a random port of 127.0.0.1 that
//! serves the fake's routes until dropped, and a log of the requests it received. The fakes
//! differ only in the protocol they speak; this is the part that is the same.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// A server running a fake's routes; it stops accepting connections when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Serves `app` on a random port of 127.0.0.1.
    pub async fn start(app: Router) -> anyhow::Result<FakeServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeServer { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
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
