//! The load generator for plain (non-streamed) requests.
//!
//! Open loop: a pacer thread emits intended send times at a constant rate, whatever the
//! target does; each request's latency is measured from its *intended* send time, so a target
//! that stalls is charged for every request that should have left during the stall
//! (coordinated omission). A send that leaves more than [`LATE`] after its intended time is
//! counted as late: many late sends mean the generator, not the target, was the limit.
//!
//! Each round runs on its own current-thread runtime and its own pooled hyper client, after
//! a short warm-up whose results are discarded.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A send leaving later than this after its intended time counts as late.
pub const LATE: Duration = Duration::from_millis(1);

/// The header in which Tollgate's edge says how long it worked on a request itself (in
/// milliseconds): before the upstream call, and from the upstream's answer to its own.
const OWN_TIME: &str = "x-tollgate-overhead-ms";

/// Where and what to send.
#[derive(Clone, Debug)]
pub struct Shot {
    /// host:port.
    pub authority: String,
    pub path: String,
    /// `authorization` header value, if any.
    pub auth: Option<String>,
    pub body: Bytes,
}

impl Shot {
    pub fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::post(format!("http://{}{}", self.authority, self.path))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            builder = builder.header(http::header::AUTHORIZATION, HeaderValue::from_str(auth)?);
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// What one round measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Latency of successful requests, in nanoseconds.
    pub latency: Histogram<u64>,
    /// The target's own time on each successful request, as its [`OWN_TIME`] header says (in
    /// nanoseconds); empty for a target that does not send it.
    pub own: Histogram<u64>,
    /// How late sends left, in nanoseconds.
    pub lateness: Histogram<u64>,
    pub sent: u64,
    pub ok: u64,
    /// Failures by kind (`status 502`, `timeout`, `connect`, `in-flight cap`).
    pub errors: BTreeMap<String, u64>,
    pub late: u64,
    /// Measured time (without warm-up).
    pub wall: Duration,
}

impl Outcome {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Outcome {
            latency: Histogram::new_with_bounds(1_000, 120_000_000_000, 3)?,
            own: Histogram::new_with_bounds(1_000, 120_000_000_000, 3)?,
            lateness: Histogram::new_with_bounds(1_000, 120_000_000_000, 3)?,
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            late: 0,
            wall: Duration::ZERO,
        })
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another round's figures to these (rounds of one target are merged).
    pub fn merge(&mut self, other: &Outcome) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.own.add(&other.own)?;
        self.lateness.add(&other.lateness)?;
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.late += other.late;
        self.wall += other.wall;
        Ok(())
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    fn record(&mut self, result: Result<Option<Duration>, String>, latency: Duration) {
        let ns = |d: Duration| d.as_nanos().max(1_000) as u64;
        match result {
            Ok(own) => {
                self.ok += 1;
                let _ = self.latency.record(ns(latency));
                if let Some(own) = own {
                    let _ = self.own.record(ns(own));
                }
            }
            Err(kind) => self.error(kind),
        }
    }
}

/// An open-loop round.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    /// Beyond this many requests in flight, a due send is dropped and counted as an error.
    pub max_in_flight: usize,
    pub timeout: Duration,
}

pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// Sends one request and reads the whole answer: the target's own time when it says it
/// ([`OWN_TIME`]); `Err` names the failure.
pub(crate) async fn send_one(
    client: &Client<HttpConnector, Full<Bytes>>,
    shot: &Shot,
    timeout: Duration,
) -> Result<Option<Duration>, String> {
    let request = shot.request().map_err(|e| format!("request: {e}"))?;
    let call = async {
        let response = client
            .request(request)
            .await
            .map_err(|_| "connect/transport".to_owned())?;
        let status = response.status();
        let own = response
            .headers()
            .get(OWN_TIME)
            .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
            .and_then(|ms| Duration::try_from_secs_f64(ms / 1_000.0).ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "body".to_owned())?;
        if status.is_success() {
            Ok(own)
        } else {
            let _ = body;
            Err(format!("status {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs one open-loop round (blocking; call from a blocking thread).
pub fn open_loop(shot: &Shot, spec: OpenLoop) -> anyhow::Result<Outcome> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let total = spec.warmup + spec.duration;
    let count = (spec.rate * total.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            for i in 0..count {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(due).is_err() {
                    break;
                }
            }
        })
        .context("starting the pacer thread")?;
    let outcome = Rc::new(RefCell::new(Outcome::new()?));
    let in_flight = Rc::new(RefCell::new(0usize));
    let rt = runtime()?;
    let local = tokio::task::LocalSet::new();
    let shot = Rc::new(shot.clone());
    local.block_on(&rt, {
        let outcome = outcome.clone();
        async move {
            let client = client();
            let mut tasks = Vec::new();
            while let Some(due) = rx.recv().await {
                let measured = due >= measure_from;
                if *in_flight.borrow() >= spec.max_in_flight {
                    if measured {
                        let mut o = outcome.borrow_mut();
                        o.sent += 1;
                        o.error("in-flight cap".into());
                    }
                    continue;
                }
                let late = Instant::now().saturating_duration_since(due);
                if measured {
                    let mut o = outcome.borrow_mut();
                    o.sent += 1;
                    let _ = o.lateness.record(late.as_nanos().max(1_000) as u64);
                    if late > LATE {
                        o.late += 1;
                    }
                }
                *in_flight.borrow_mut() += 1;
                let (client, shot, outcome, in_flight) = (
                    client.clone(),
                    shot.clone(),
                    outcome.clone(),
                    in_flight.clone(),
                );
                tasks.push(tokio::task::spawn_local(async move {
                    let result = send_one(&client, &shot, spec.timeout).await;
                    *in_flight.borrow_mut() -= 1;
                    if measured {
                        outcome.borrow_mut().record(result, due.elapsed());
                    }
                }));
                if tasks.len() > 4096 {
                    tasks.retain(|t| !t.is_finished());
                }
            }
            for task in tasks {
                let _ = task.await;
            }
        }
    });
    let _ = pacer.join();
    let mut outcome = outcome.borrow().clone();
    outcome.wall = spec.duration;
    Ok(outcome)
}

/// Runs `count` requests one after another on one connection (concurrency 1), after
/// `warmup` unrecorded ones.
pub fn sequential(
    shot: &Shot,
    count: u64,
    warmup: u64,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = client();
        let mut outcome = Outcome::new()?;
        let began = Instant::now();
        for i in 0..warmup + count {
            let sent = Instant::now();
            let result = send_one(&client, shot, timeout).await;
            if i >= warmup {
                outcome.sent += 1;
                outcome.record(result, sent.elapsed());
            }
        }
        outcome.wall = began.elapsed();
        Ok(outcome)
    })
}
