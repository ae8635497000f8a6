//! Rate limits on the request path, counted across edges without a network round trip.
//!
//! Requests and tokens are counted in sliding windows (one minute; `TOLLGATE_RATE_LIMIT_WINDOW_MS`
//! in tests): the previous fixed window's count, weighted by how much of it still overlaps
//! the sliding one, plus the current window's. The global count of each limit lives in one
//! key of the bus's shared-state bucket, changed only by compare-and-set, and edges take
//! **leases** from it: a chunk of the limit (an eighth of an equal share) granted to one edge
//! for the current window, taken in the background before the edge runs out. The request path
//! only counts against what this edge holds.
//!
//! An edge that holds nothing yet (a new window, a limit just seen) may admit one chunk on
//! credit, which its next lease pays for even if that overdraws the limit. So the requests
//! admitted in a window stay within the limit plus one chunk per edge:
//! `limit + edges × max(1, ⌈limit / (8 × edges)⌉)`. Tokens are charged by estimate (a
//! quarter of the request's bytes plus its `max_tokens`) and corrected on completion; a
//! request is admitted while any token allowance is left, so tokens may also overshoot by
//! one request per edge. An edge cut off from the bus cannot take leases: it falls back to its
//! equal share of each limit per window, never more. Concurrency is not leased: each edge
//! admits up to `max(1, ⌊max_concurrent / edges⌋)` requests at once.
//!
//! A deployment's own `rpm` and `tpm` (a provider quota) are counted the same way, per
//! deployment: routing passes over a deployment that has reached them.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Allowance, Deployment, RateLimit, VirtualKey};
use tollgate_runtime::bus::Bus;

use crate::clock::Clock;
use crate::error::EdgeError;

/// How often leases are topped up when nothing asks sooner.
const TOP_UP_EVERY: Duration = Duration::from_millis(50);
/// Compare-and-set attempts per lease before waiting for the next round.
const CAS_ATTEMPTS: usize = 8;

/// The rate limits this edge enforces, and its leases of them.
pub struct Limiter {
    window_ms: i64,
    clock: Clock,
    counters: Mutex<HashMap<String, Counter>>,
    /// Wakes the lease task when a counter runs low.
    wanted: Notify,
}

/// One limit's state on this edge.
#[derive(Clone, Debug, Default)]
struct Counter {
    /// The window the lanes count in (milliseconds since the epoch / window length).
    window: i64,
    requests: Lane,
    tokens: Lane,
    in_flight: u64,
    /// The figures in force when a request last counted here.
    allowance: Allowance,
    edges: usize,
    /// The global (previous, current) window counts as last read from the bus, for headers.
    global_requests: (u64, u64),
    global_tokens: (u64, u64),
    /// The last lease attempt could not reach the bus.
    cut_off: bool,
}

/// Requests or tokens of one limit in one window, on this edge.
#[derive(Clone, Copy, Debug, Default)]
struct Lane {
    /// Leased to this edge (credit that was paid for included).
    granted: u64,
    /// Admitted (requests) or charged (tokens).
    used: u64,
    /// The global allowance had nothing left for this window.
    exhausted: bool,
}

impl Lane {
    /// How much this edge may count in the window, given the limit and the live edges.
    fn ceiling(&self, limit: u64, edges: usize, cut_off: bool) -> u64 {
        if self.exhausted {
            self.granted
        } else if cut_off {
            self.granted.max(limit / edges as u64)
        } else {
            self.granted + chunk(limit, edges)
        }
    }

    /// What this edge owes the global count: used beyond what it was granted.
    fn debt(&self) -> u64 {
        self.used.saturating_sub(self.granted)
    }

    /// Whether a lease should be taken now: the lease is (nearly) used up.
    fn low(&self, limit: u64, edges: usize) -> bool {
        limit > 0 && !self.exhausted && self.used + chunk(limit, edges) / 2 >= self.granted
    }
}

/// The counter of a deployment's own rpm and tpm (rate limit ids never start with `@`).
fn deployment_counter(id: &str) -> String {
    format!("@deployment:{id}")
}

/// What one lease adds: an eighth of an equal share, at least one.
fn chunk(limit: u64, edges: usize) -> u64 {
    limit.div_ceil(8 * edges.max(1) as u64).max(1)
}

/// The global counts of one limit, as stored on the bus.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Global {
    window: i64,
    /// (previous window, current window), granted to all edges.
    requests: (u64, u64),
    tokens: (u64, u64),
}

impl Global {
    /// The counts as of `window`.
    fn rolled(self, window: i64) -> Global {
        match window - self.window {
            d if d <= 0 => self,
            1 => Global {
                window,
                requests: (self.requests.1, 0),
                tokens: (self.tokens.1, 0),
            },
            _ => Global {
                window,
                ..Global::default()
            },
        }
    }
}

/// The `x-ratelimit-*` figures of the tightest applicable limit, per lane.
#[derive(Clone, Debug, Default)]
pub struct RateHeaders {
    requests: Option<Figures>,
    tokens: Option<Figures>,
}

#[derive(Clone, Copy, Debug)]
struct Figures {
    limit: u64,
    remaining: u64,
    reset: Duration,
}

impl RateHeaders {
    /// Sets the headers on a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // Names made once: this runs on every limited response.
        const NAMES: [[HeaderName; 3]; 2] = [
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ];
        // The six values are written into one buffer and each header takes a slice of it:
        // one allocation where a value each would take six or more.
        let lanes = [self.requests, self.tokens];
        let limited = lanes.iter().flatten().count();
        if limited == 0 {
            // Most responses: no limit applies, and nothing is allocated for them.
            return;
        }
        let mut text = BytesMut::with_capacity(64 * limited);
        let mut ends = [[0; 3]; 2];
        for (figures, ends) in lanes.iter().zip(&mut ends) {
            let Some(f) = figures else { continue };
            // Writing into a growable buffer cannot fail.
            let _ = write!(text, "{}", f.limit);
            ends[0] = text.len();
            let _ = write!(text, "{}", f.remaining);
            ends[1] = text.len();
            let _ = write_duration(&mut text, f.reset);
            ends[2] = text.len();
        }
        let text = text.freeze();
        headers.reserve(3 * limited);
        let mut start = 0;
        for ((names, figures), ends) in NAMES.into_iter().zip(lanes).zip(ends) {
            if figures.is_none() {
                continue;
            }
            for (name, end) in names.into_iter().zip(ends) {
                if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
                    headers.insert(name, value);
                }
                start = end;
            }
        }
    }

    fn keep_tightest(slot: &mut Option<Figures>, candidate: Figures) {
        if slot.is_none_or(|f| candidate.remaining < f.remaining) {
            *slot = Some(candidate);
        }
    }
}

/// OpenAI's way of writing a reset time: `1m30s`, `12s`, `250ms`.
fn duration_text(d: Duration) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = write_duration(&mut text, d);
    text
}

/// [`duration_text`] into `out`.
fn write_duration(out: &mut impl fmt::Write, d: Duration) -> fmt::Result {
    let ms = d.as_millis();
    if ms < 1000 {
        write!(out, "{ms}ms")
    } else {
        let seconds = d.as_secs_f64().ceil() as u64;
        match (seconds / 60, seconds % 60) {
            (0, s) => write!(out, "{s}s"),
            (m, s) => write!(out, "{m}m{s}s"),
        }
    }
}

/// A request counted against the limits that apply to it; released when dropped.
pub struct Admission {
    limiter: Arc<Limiter>,
    /// The limits with a concurrency cap this request holds a place in.
    concurrent: Vec<String>,
    /// The limits with a token cap, charged `estimated_tokens` so far in `window`.
    tokens: Vec<String>,
    estimated_tokens: u64,
    window: i64,
    /// The figures for the response headers.
    pub headers: RateHeaders,
}

/// A refusal, with the figures the 429 carries.
pub struct Refusal {
    pub error: EdgeError,
    pub headers: RateHeaders,
}

impl Limiter {
    /// Limits counted in windows of `window` on `clock`.
    pub fn new(window: Duration, clock: Clock) -> Arc<Self> {
        Arc::new(Limiter {
            window_ms: (window.as_millis() as i64).max(1),
            clock,
            counters: Mutex::new(HashMap::new()),
            wanted: Notify::new(),
        })
    }

    fn counters(&self) -> MutexGuard<'_, HashMap<String, Counter>> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request by `key` for `model` against every limit that applies, or refuses it
    /// with the first limit it would break. `edges` is how many edges share the limits.
    pub fn admit(
        self: &Arc<Self>,
        state: &PolicyState,
        key: &VirtualKey,
        model: &str,
        estimated_tokens: u64,
        edges: usize,
    ) -> Result<Admission, Box<Refusal>> {
        let now = self.clock.now();
        let now_ms = now.timestamp_millis();
        let window = now_ms.div_euclid(self.window_ms);
        let reset =
            Duration::from_millis((self.window_ms - now_ms.rem_euclid(self.window_ms)) as u64);
        let weight = 1.0 - now_ms.rem_euclid(self.window_ms) as f64 / self.window_ms as f64;
        let edges = edges.max(1);
        let applicable: Vec<_> = state
            .rate_limits
            .values()
            .filter(|l| l.applies(key, model))
            .map(|l| (l, l.at(now)))
            .filter(|(_, a)| a.rpm > 0 || a.tpm > 0 || a.max_concurrent > 0)
            .collect();
        let mut admission = Admission {
            limiter: self.clone(),
            concurrent: Vec::new(),
            tokens: Vec::new(),
            estimated_tokens,
            window,
            headers: RateHeaders::default(),
        };
        if applicable.is_empty() {
            return Ok(admission);
        }
        let mut counters = self.counters();
        // Every limit is judged before any is counted: a refused request counts nowhere.
        for (limit, allowance) in &applicable {
            // Looked up before it is made: `entry` would copy the id on every request.
            let counter = match counters.get_mut(&limit.id) {
                Some(counter) => counter,
                None => counters.entry(limit.id.clone()).or_default(),
            };
            counter.refresh(window, *allowance, edges);
            if let Some(breach) = counter.breach() {
                if breach != Breach::Concurrency {
                    self.wanted.notify_one();
                }
                return Err(counter.refusal(limit, breach, weight, reset));
            }
        }
        let mut wanted = false;
        for (limit, _) in &applicable {
            let Some(counter) = counters.get_mut(&limit.id) else {
                continue;
            };
            wanted |= counter.count(estimated_tokens);
            if counter.allowance.tpm > 0 {
                admission.tokens.push(limit.id.clone());
            }
            if counter.allowance.max_concurrent > 0 {
                admission.concurrent.push(limit.id.clone());
            }
            let headers = counter.headers(weight, reset);
            if let Some(f) = headers.requests {
                RateHeaders::keep_tightest(&mut admission.headers.requests, f);
            }
            if let Some(f) = headers.tokens {
                RateHeaders::keep_tightest(&mut admission.headers.tokens, f);
            }
        }
        drop(counters);
        if wanted {
            self.wanted.notify_one();
        }
        Ok(admission)
    }

    /// Whether deployment `d` has reached its own rpm or tpm in this window (as this edge
    /// holds them); a deployment without them never has.
    pub fn deployment_full(&self, d: &Deployment, edges: usize) -> bool {
        if d.rpm == 0 && d.tpm == 0 {
            return false;
        }
        let window = self.window_now();
        let counters = self.counters();
        counters
            .get(&deployment_counter(&d.id))
            .filter(|c| c.window == window)
            .is_some_and(|c| {
                (d.rpm > 0 && c.requests.used >= c.requests.ceiling(d.rpm, edges, c.cut_off))
                    || (d.tpm > 0 && c.tokens.used >= c.tokens.ceiling(d.tpm, edges, c.cut_off))
            })
    }

    /// Counts an attempt on deployment `d` against its own rpm and tpm; its tokens are
    /// corrected with the request's through `admission`.
    pub fn count_deployment(&self, d: &Deployment, edges: usize, admission: &mut Admission) {
        if d.rpm == 0 && d.tpm == 0 {
            return;
        }
        let id = deployment_counter(&d.id);
        let window = self.window_now();
        let edges = edges.max(1);
        let wanted = {
            let mut counters = self.counters();
            let counter = counters.entry(id.clone()).or_default();
            counter.roll(window);
            counter.allowance = Allowance {
                rpm: d.rpm,
                tpm: d.tpm,
                max_concurrent: 0,
            };
            counter.edges = edges;
            counter.requests.used += u64::from(d.rpm > 0);
            if d.tpm > 0 {
                counter.tokens.used += admission.estimated_tokens;
            }
            counter.wants_lease()
        };
        if d.tpm > 0 {
            admission.tokens.push(id);
        }
        if wanted {
            self.wanted.notify_one();
        }
    }

    fn window_now(&self) -> i64 {
        self.clock
            .now()
            .timestamp_millis()
            .div_euclid(self.window_ms)
    }

    /// Takes leases for counters that run low, until `shutdown`.
    pub async fn lease(self: Arc<Self>, bus: Arc<dyn Bus>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            self.top_up(bus.as_ref()).await;
            tokio::select! {
                _ = self.wanted.notified() => {}
                _ = tokio::time::sleep(TOP_UP_EVERY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One round: a lease for every counter that needs one; forgets idle counters.
    async fn top_up(&self, bus: &dyn Bus) {
        let window = self
            .clock
            .now()
            .timestamp_millis()
            .div_euclid(self.window_ms);
        let due: Vec<(String, Counter)> = {
            let mut counters = self.counters();
            counters.retain(|_, c| c.window >= window - 1 || c.in_flight > 0);
            counters
                .iter()
                .filter(|(_, c)| c.window == window && c.wants_lease())
                .map(|(id, c)| (id.clone(), c.clone()))
                .collect()
        };
        for (id, snapshot) in due {
            let outcome = self.take_lease(bus, &id, &snapshot).await;
            let mut counters = self.counters();
            let Some(counter) = counters
                .get_mut(&id)
                .filter(|c| c.window == snapshot.window)
            else {
                continue;
            };
            match outcome {
                Ok(Some(lease)) => {
                    counter.cut_off = false;
                    counter.requests.granted += lease.requests;
                    counter.tokens.granted += lease.tokens;
                    counter.requests.exhausted |= lease.requests_exhausted;
                    counter.tokens.exhausted |= lease.tokens_exhausted;
                    counter.global_requests = lease.global.requests;
                    counter.global_tokens = lease.global.tokens;
                }
                // Other edges kept winning the compare-and-set: the next round tries again.
                Ok(None) => {}
                Err(error) => {
                    if !counter.cut_off {
                        tracing::warn!(%error, limit = %id, "cannot take a rate-limit lease; this edge falls back to its share");
                    }
                    counter.cut_off = true;
                }
            }
        }
    }

    /// Pays this edge's debt on a counter and takes a chunk more of what the limit has left.
    async fn take_lease(
        &self,
        bus: &dyn Bus,
        id: &str,
        counter: &Counter,
    ) -> Result<Option<Lease>, tollgate_runtime::bus::BusError> {
        let key = format!("ratelimit.{}", hex::encode(id));
        let now_ms = self.clock.now().timestamp_millis();
        let weight = 1.0 - now_ms.rem_euclid(self.window_ms) as f64 / self.window_ms as f64;
        let a = counter.allowance;
        let edges = counter.edges.max(1);
        for _ in 0..CAS_ATTEMPTS {
            let entry = bus.kv_get(&key).await?;
            let (revision, stored) = match &entry {
                Some(e) => (
                    e.revision,
                    serde_json::from_slice::<Global>(&e.value).unwrap_or_default(),
                ),
                None => (0, Global::default()),
            };
            let mut global = stored.rolled(counter.window);
            let (requests, requests_exhausted) = grant(
                &mut global.requests,
                &counter.requests,
                a.rpm,
                edges,
                weight,
            );
            let (tokens, tokens_exhausted) =
                grant(&mut global.tokens, &counter.tokens, a.tpm, edges, weight);
            let value = Bytes::from(serde_json::to_vec(&global).unwrap_or_default());
            if bus.kv_update(&key, value, revision).await?.is_some() {
                return Ok(Some(Lease {
                    requests,
                    tokens,
                    requests_exhausted,
                    tokens_exhausted,
                    global,
                }));
            }
        }
        Ok(None)
    }
}

/// What one lease gave this edge.
struct Lease {
    requests: u64,
    tokens: u64,
    requests_exhausted: bool,
    tokens_exhausted: bool,
    global: Global,
}

/// Adds `lane`'s debt and one chunk (or what is left of `limit`) to the global `counts`;
/// returns what this edge gets, and whether the limit has nothing left for the window.
fn grant(
    counts: &mut (u64, u64),
    lane: &Lane,
    limit: u64,
    edges: usize,
    weight: f64,
) -> (u64, bool) {
    if limit == 0 {
        return (0, false);
    }
    let debt = lane.debt();
    let taken = (counts.0 as f64 * weight).ceil() as u64 + counts.1 + debt;
    let left = limit.saturating_sub(taken);
    let extra = left.min(chunk(limit, edges));
    counts.1 += debt + extra;
    (debt + extra, extra == 0)
}

/// Which figure of a limit a request would break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breach {
    Requests,
    Tokens,
    Concurrency,
}

impl Counter {
    /// Starts a new window's count when `window` has come.
    fn roll(&mut self, window: i64) {
        if self.window != window {
            self.window = window;
            self.requests = Lane::default();
            self.tokens = Lane::default();
        }
    }

    /// Brings the counter to `window` and to the figures in force for this request.
    fn refresh(&mut self, window: i64, allowance: Allowance, edges: usize) {
        self.roll(window);
        if self.allowance != allowance {
            // A raised limit (an admin's change, a schedule opening) may have room left in
            // this window: the next lease finds out instead of the old figure's verdict.
            self.requests.exhausted = false;
            self.tokens.exhausted = false;
        }
        self.allowance = allowance;
        self.edges = edges;
    }

    /// The figure one more request would break on this edge, if any.
    fn breach(&self) -> Option<Breach> {
        let (allowance, edges) = (self.allowance, self.edges);
        let ceiling = |lane: &Lane, limit| lane.ceiling(limit, edges, self.cut_off);
        if allowance.rpm > 0 && self.requests.used + 1 > ceiling(&self.requests, allowance.rpm) {
            Some(Breach::Requests)
        } else if allowance.tpm > 0 && self.tokens.used >= ceiling(&self.tokens, allowance.tpm) {
            Some(Breach::Tokens)
        } else if allowance.max_concurrent > 0
            && self.in_flight >= (allowance.max_concurrent / edges as u64).max(1)
        {
            Some(Breach::Concurrency)
        } else {
            None
        }
    }

    /// The 429 for `breach` of `limit`.
    fn refusal(
        &self,
        limit: &RateLimit,
        breach: Breach,
        weight: f64,
        reset: Duration,
    ) -> Box<Refusal> {
        let (what, figure, retry) = match breach {
            Breach::Requests => ("requests per minute", self.allowance.rpm, reset),
            Breach::Tokens => ("tokens per minute", self.allowance.tpm, reset),
            Breach::Concurrency => (
                "concurrent requests",
                self.allowance.max_concurrent,
                Duration::from_secs(1),
            ),
        };
        Box::new(Refusal {
            error: EdgeError::RateLimited {
                message: format!(
                    "rate limit {} ({} {}) allows {figure} {what}; retry after {}",
                    limit.id,
                    limit.scope,
                    limit.scope_id,
                    duration_text(retry)
                ),
                retry_after: retry,
            },
            headers: self.headers(weight, reset),
        })
    }

    /// Counts an admitted request charged `estimated_tokens`; true when a lease is wanted.
    fn count(&mut self, estimated_tokens: u64) -> bool {
        let (allowance, edges) = (self.allowance, self.edges);
        let mut wanted = false;
        if allowance.rpm > 0 {
            self.requests.used += 1;
            wanted |= self.requests.low(allowance.rpm, edges);
        }
        if allowance.tpm > 0 {
            self.tokens.used += estimated_tokens;
            wanted |= self.tokens.low(allowance.tpm, edges);
        }
        if allowance.max_concurrent > 0 {
            self.in_flight += 1;
        }
        wanted
    }

    fn wants_lease(&self) -> bool {
        let a = self.allowance;
        self.requests.low(a.rpm, self.edges) || self.tokens.low(a.tpm, self.edges)
    }

    /// The figures for headers: the limit, what is left globally as this edge knows it, and
    /// when the window resets.
    fn headers(&self, weight: f64, reset: Duration) -> RateHeaders {
        let figures = |limit: u64, lane: &Lane, global: (u64, u64)| {
            (limit > 0).then(|| {
                let granted_unused = lane.granted.saturating_sub(lane.used);
                let counted = (global.0 as f64 * weight).ceil() as u64 + global.1 + lane.debt();
                Figures {
                    limit,
                    remaining: (limit.saturating_sub(counted) + granted_unused).min(limit),
                    reset,
                }
            })
        };
        RateHeaders {
            requests: figures(self.allowance.rpm, &self.requests, self.global_requests),
            tokens: figures(self.allowance.tpm, &self.tokens, self.global_tokens),
        }
    }
}

impl Admission {
    /// Replaces the token estimate by what the request actually used.
    pub fn settle_tokens(&mut self, actual: u64) {
        if self.tokens.is_empty() || actual == self.estimated_tokens {
            return;
        }
        let mut counters = self.limiter.counters();
        for id in &self.tokens {
            // A request that ran into the next window was counted in the one before.
            if let Some(counter) = counters.get_mut(id).filter(|c| c.window == self.window) {
                counter.tokens.used =
                    (counter.tokens.used + actual).saturating_sub(self.estimated_tokens);
            }
        }
        self.estimated_tokens = actual;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.concurrent.is_empty() {
            return;
        }
        let mut counters = self.limiter.counters();
        for id in &self.concurrent {
            if let Some(counter) = counters.get_mut(id) {
                counter.in_flight = counter.in_flight.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_an_eighth_of_an_equal_share_and_at_least_one() {
        assert_eq!(chunk(600, 3), 25);
        assert_eq!(chunk(10, 3), 1);
        assert_eq!(chunk(1, 1), 1);
    }

    #[test]
    fn a_lease_pays_the_debt_and_grants_at_most_what_is_left() {
        let mut counts = (0, 590);
        let lane = Lane {
            granted: 0,
            used: 3,
            exhausted: false,
        };
        // 590 counted + 3 owed of 600: 7 left, less than a chunk of 25.
        assert_eq!(grant(&mut counts, &lane, 600, 3, 1.0), (10, false));
        assert_eq!(counts, (0, 600));
        assert_eq!(grant(&mut counts, &Lane::default(), 600, 3, 1.0), (0, true));
        // Half-way through the window, half of the previous window still counts.
        let mut counts = (600, 0);
        assert_eq!(
            grant(&mut counts, &Lane::default(), 600, 3, 0.5),
            (25, false)
        );
    }

    #[test]
    fn reset_times_read_like_openais() {
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::from_millis(12_400)), "13s");
        assert_eq!(duration_text(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn each_lane_with_a_limit_gets_its_three_headers() {
        let figures = |limit, remaining, reset| Figures {
            limit,
            remaining,
            reset: Duration::from_millis(reset),
        };
        let mut headers = HeaderMap::new();
        RateHeaders {
            requests: Some(figures(60, 59, 250)),
            tokens: Some(figures(100_000, 98_765, 90_000)),
        }
        .apply(&mut headers);
        let written: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("?")))
            .collect();
        assert_eq!(
            written,
            [
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-reset-requests", "250ms"),
                ("x-ratelimit-limit-tokens", "100000"),
                ("x-ratelimit-remaining-tokens", "98765"),
                ("x-ratelimit-reset-tokens", "1m30s"),
            ]
        );
        let mut headers = HeaderMap::new();
        RateHeaders {
            requests: None,
            tokens: Some(figures(10, 0, 1_500)),
        }
        .apply(&mut headers);
        let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens"
            ]
        );
        assert_eq!(headers["x-ratelimit-reset-tokens"], "2s");
        let mut headers = HeaderMap::new();
        RateHeaders::default().apply(&mut headers);
        assert!(headers.is_empty(), "no limit, no headers");
    }
}
