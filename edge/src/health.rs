//! What this edge knows of each deployment's health and load: a circuit breaker (closed → open
//! after too many failures → half-open, letting one probe through after the cooldown → closed
//! when the probe succeeds), requests in flight, latency averages and this minute's usage.
//! All of it is local to the edge: no request waits on another edge or on the network for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use tollgate_runtime::bus::Bus;
use tollgate_runtime::health::{self as report, EdgeHealth};

use crate::metrics::{DeploymentLabels, Metrics};

/// How circuits open and close on this edge, unless a routing rule says otherwise.
#[derive(Clone, Copy, Debug)]
pub struct CircuitSettings {
    /// Failures are counted in windows of this length.
    pub window: Duration,
    /// Failures in one window that open the circuit.
    pub allowed_fails: u32,
    /// Or: at least this share of failures, once `min_requests` were made in the window.
    pub failure_rate: f64,
    pub min_requests: u32,
    /// How long an open circuit stays open before a probe is let through.
    pub cooldown: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            window: Duration::from_secs(60),
            allowed_fails: 3,
            failure_rate: 0.5,
            min_requests: 10,
            cooldown: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }

    /// The value of the `deployment_circuit_state` gauge.
    fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen { .. } => 1,
            State::Open { .. } => 2,
        }
    }
}

#[derive(Debug)]
struct Circuit {
    state: State,
    window_start: Instant,
    requests: u32,
    failures: u32,
    last_error: Option<&'static str>,
}

impl Circuit {
    fn roll_window(&mut self, now: Instant, window: Duration) {
        if now.duration_since(self.window_start) >= window {
            self.window_start = now;
            self.requests = 0;
            self.failures = 0;
        }
    }
}

/// One deployment as seen by this edge.
#[derive(Debug)]
pub struct DeploymentHealth {
    id: String,
    circuit: Mutex<Circuit>,
    in_flight: AtomicU64,
    /// Exponentially weighted moving averages in microseconds; 0 = no sample yet.
    latency_us: AtomicU64,
    ttft_us: AtomicU64,
    /// Requests and estimated tokens sent in the current minute (`minute` since the epoch).
    minute: AtomicU64,
    minute_requests: AtomicU64,
    minute_tokens: AtomicU64,
}

/// Weight of the newest sample in the latency averages.
const EWMA_ALPHA: f64 = 0.2;

fn ewma(slot: &AtomicU64, sample: Duration) {
    let sample = (sample.as_micros() as u64).max(1);
    // A lost update between two concurrent samples only drops one of them: good enough for
    // an average, and cheaper than a lock on every request.
    let old = slot.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        (old as f64 * (1.0 - EWMA_ALPHA) + sample as f64 * EWMA_ALPHA) as u64
    };
    slot.store(new.max(1), Ordering::Relaxed);
}

fn minute_now() -> u64 {
    (Utc::now().timestamp() / 60) as u64
}

impl DeploymentHealth {
    fn new(id: &str) -> Self {
        DeploymentHealth {
            id: id.to_owned(),
            circuit: Mutex::new(Circuit {
                state: State::Closed,
                window_start: Instant::now(),
                requests: 0,
                failures: 0,
                last_error: None,
            }),
            in_flight: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            ttft_us: AtomicU64::new(0),
            minute: AtomicU64::new(0),
            minute_requests: AtomicU64::new(0),
            minute_tokens: AtomicU64::new(0),
        }
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request could be sent now (an open circuit whose cooldown is over can take
    /// its probe).
    pub fn available(&self, now: Instant) -> bool {
        match self.circuit().state {
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probing } => !probing,
        }
    }

    /// Requests in flight to this deployment from this edge.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The average latency in microseconds of streams' first byte (`stream`) or of whole
    /// calls, falling back to the other when there is no sample; `None` before any.
    pub fn latency_us(&self, stream: bool) -> Option<u64> {
        let (first, second) = if stream {
            (&self.ttft_us, &self.latency_us)
        } else {
            (&self.latency_us, &self.ttft_us)
        };
        [first, second]
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .find(|&v| v != 0)
    }

    /// Requests and estimated tokens sent this minute.
    pub fn minute_usage(&self) -> (u64, u64) {
        if self.minute.load(Ordering::Relaxed) != minute_now() {
            return (0, 0);
        }
        (
            self.minute_requests.load(Ordering::Relaxed),
            self.minute_tokens.load(Ordering::Relaxed),
        )
    }

    fn count_usage(&self, tokens: u64) {
        let now = minute_now();
        if self.minute.swap(now, Ordering::Relaxed) != now {
            self.minute_requests.store(0, Ordering::Relaxed);
            self.minute_tokens.store(0, Ordering::Relaxed);
        }
        self.minute_requests.fetch_add(1, Ordering::Relaxed);
        self.minute_tokens.fetch_add(tokens, Ordering::Relaxed);
    }
}

/// Every deployment this edge has routed to, and the settings of their circuits.
pub struct Health {
    defaults: CircuitSettings,
    deployments: RwLock<HashMap<String, Arc<DeploymentHealth>>>,
    metrics: Arc<Metrics>,
    /// Set when a circuit changed since the last report to the bus.
    changed: AtomicBool,
}

impl Health {
    pub fn new(defaults: CircuitSettings, metrics: Arc<Metrics>) -> Self {
        Health {
            defaults,
            deployments: RwLock::default(),
            metrics,
            changed: AtomicBool::new(false),
        }
    }

    /// The edge's default circuit settings.
    pub fn defaults(&self) -> CircuitSettings {
        self.defaults
    }

    /// The health of deployment `id`, created on first use.
    pub fn of(&self, id: &str) -> Arc<DeploymentHealth> {
        if let Some(found) = self
            .deployments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return found.clone();
        }
        self.deployments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(DeploymentHealth::new(id)))
            .clone()
    }

    /// Takes a place on `deployment` for one attempt, if its circuit lets it through now (or
    /// in any case with `force`); `tokens` is the attempt's estimated token count, for
    /// usage-aware routing.
    pub fn admit(
        &self,
        deployment: &Arc<DeploymentHealth>,
        tokens: u64,
        force: bool,
    ) -> Option<Attempt> {
        let now = Instant::now();
        let probe = {
            let mut circuit = deployment.circuit();
            match circuit.state {
                State::Closed => false,
                _ if force => false,
                State::Open { until } if now >= until => {
                    circuit.state = State::HalfOpen { probing: true };
                    true
                }
                State::HalfOpen { probing: false } => {
                    circuit.state = State::HalfOpen { probing: true };
                    true
                }
                State::Open { .. } | State::HalfOpen { probing: true } => return None,
            }
        };
        if probe {
            self.changed(deployment, State::HalfOpen { probing: true });
        }
        deployment.in_flight.fetch_add(1, Ordering::Relaxed);
        deployment.count_usage(tokens);
        Some(Attempt {
            deployment: deployment.clone(),
            started: Instant::now(),
            probe,
            settled: false,
        })
    }

    /// Records that `attempt` succeeded; a probe closes the circuit. The attempt's place in
    /// flight passes to the returned guard.
    pub fn succeeded(&self, mut attempt: Attempt, stream: bool) -> InFlight {
        attempt.settled = true;
        let deployment = attempt.deployment.clone();
        let elapsed = attempt.started.elapsed();
        ewma(
            if stream {
                &deployment.ttft_us
            } else {
                &deployment.latency_us
            },
            elapsed,
        );
        let closed = {
            let mut circuit = deployment.circuit();
            circuit.roll_window(Instant::now(), self.defaults.window);
            circuit.requests += 1;
            let was_open = circuit.state != State::Closed;
            if was_open {
                circuit.state = State::Closed;
                circuit.failures = 0;
                circuit.requests = 0;
            }
            was_open
        };
        if closed {
            tracing::info!(deployment = %deployment.id, "probe succeeded; circuit closed");
            self.changed(&deployment, State::Closed);
        }
        InFlight(Some(deployment))
    }

    /// Records that `attempt` failed with `code` (a failure that says something about the
    /// deployment: throttling, a 5xx, a timeout, a refused connection). Returns whether the
    /// circuit is now open.
    pub fn failed(
        &self,
        mut attempt: Attempt,
        code: &'static str,
        allowed_fails: u32,
        cooldown: Duration,
    ) -> bool {
        attempt.settled = true;
        let deployment = attempt.deployment.clone();
        deployment.in_flight.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let opened = {
            let mut circuit = deployment.circuit();
            circuit.roll_window(now, self.defaults.window);
            circuit.requests += 1;
            circuit.failures += 1;
            circuit.last_error = Some(code);
            let rate = f64::from(circuit.failures) / f64::from(circuit.requests.max(1));
            let too_many = circuit.failures >= allowed_fails.max(1)
                || (circuit.requests >= self.defaults.min_requests
                    && rate >= self.defaults.failure_rate);
            let open = attempt.probe || too_many;
            if open {
                circuit.state = State::Open {
                    until: now + cooldown,
                };
            }
            open.then_some(circuit.state)
        };
        if let Some(state) = opened {
            tracing::warn!(deployment = %deployment.id, code, ?cooldown, "circuit opened");
            self.metrics
                .circuit_opened
                .get_or_create(&DeploymentLabels {
                    deployment: deployment.id.clone(),
                })
                .inc();
            self.changed(&deployment, state);
        }
        opened.is_some()
    }

    fn changed(&self, deployment: &DeploymentHealth, state: State) {
        self.metrics
            .circuit_state
            .get_or_create(&DeploymentLabels {
                deployment: deployment.id.clone(),
            })
            .set(state.gauge());
        self.changed.store(true, Ordering::Release);
    }

    /// This edge's report for the admin API.
    pub fn report(&self, edge_id: &str) -> EdgeHealth {
        let now = Instant::now();
        let wall = Utc::now();
        let deployments = self
            .deployments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|d| {
                let circuit = d.circuit();
                let retry_at = match circuit.state {
                    State::Open { until } => {
                        let left = until.saturating_duration_since(now);
                        chrono::Duration::from_std(left)
                            .ok()
                            .map(|left| wall + left)
                    }
                    _ => None,
                };
                report::DeploymentHealth {
                    deployment_id: d.id.clone(),
                    state: circuit.state.name().to_owned(),
                    failures: circuit.failures,
                    retry_at,
                    last_error: circuit.last_error.map(str::to_owned),
                }
            })
            .collect();
        EdgeHealth {
            edge_id: edge_id.to_owned(),
            updated_at: wall,
            deployments,
        }
    }

    /// Writes this edge's report to the bus whenever a circuit changed, at most once per
    /// `every`, until `stop`.
    pub async fn publish(
        self: Arc<Self>,
        bus: Arc<dyn Bus>,
        edge_id: String,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let key = report::key(&edge_id);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if !self.changed.swap(false, Ordering::AcqRel) {
                continue;
            }
            let Ok(value) = serde_json::to_vec(&self.report(&edge_id)) else {
                continue;
            };
            // The bus's own operation timeout bounds the put.
            if bus.kv_put(&key, value.into()).await.is_err() {
                // Try again on the next tick.
                self.changed.store(true, Ordering::Release);
                tracing::debug!("deployment health report not published; retrying");
            }
        }
    }
}

/// One attempt's place on a deployment. Dropped without an outcome (the client went away),
/// it frees its place and, if it was the probe, lets another probe through.
pub struct Attempt {
    deployment: Arc<DeploymentHealth>,
    started: Instant,
    probe: bool,
    settled: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.deployment.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe {
            let mut circuit = self.deployment.circuit();
            if circuit.state == (State::HalfOpen { probing: true }) {
                circuit.state = State::HalfOpen { probing: false };
            }
        }
    }
}

/// A request in flight on a deployment after its answer started: held by the response (its
/// stream) so that least-busy routing counts streams until they end.
pub struct InFlight(Option<Arc<DeploymentHealth>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(CircuitSettings::default(), Arc::new(Metrics::default()))
    }

    /// Admits an attempt on `d` and fails it with `code`; whether that opened the circuit.
    fn fail(
        health: &Health,
        d: &Arc<DeploymentHealth>,
        code: &'static str,
        allowed_fails: u32,
        cooldown: Duration,
    ) -> bool {
        let attempt = health.admit(d, 1, false).unwrap();
        health.failed(attempt, code, allowed_fails, cooldown)
    }

    #[test]
    fn circuit_opens_after_allowed_fails_and_a_probe_closes_it() {
        let health = health();
        let d = health.of("a");
        for _ in 0..2 {
            assert!(!fail(&health, &d, "upstream_error", 3, Duration::ZERO));
        }
        let opened = fail(&health, &d, "upstream_error", 3, Duration::from_millis(50));
        assert!(opened);
        assert!(!d.available(Instant::now()));
        assert!(health.admit(&d, 1, false).is_none());

        std::thread::sleep(Duration::from_millis(60));
        let probe = health.admit(&d, 1, false).unwrap();
        assert!(health.admit(&d, 1, false).is_none(), "one probe at a time");
        drop(health.succeeded(probe, false));
        let held = health.admit(&d, 1, false);
        assert!(held.is_some());
        assert_eq!(d.in_flight(), 1);
    }

    #[test]
    fn a_failed_probe_reopens_and_an_abandoned_probe_frees_its_place() {
        let health = health();
        let d = health.of("a");
        fail(&health, &d, "upstream_timeout", 1, Duration::ZERO);
        let reopened = fail(&health, &d, "upstream_timeout", 1, Duration::from_secs(60));
        assert!(reopened, "the failed probe reopened the circuit");
        assert!(health.admit(&d, 1, false).is_none());

        let d = health.of("b");
        fail(&health, &d, "upstream_error", 1, Duration::ZERO);
        drop(health.admit(&d, 1, false).unwrap());
        assert!(
            health.admit(&d, 1, false).is_some(),
            "the abandoned probe let another through"
        );
    }

    #[test]
    fn a_high_failure_rate_opens_the_circuit() {
        let health = health();
        let d = health.of("a");
        for i in 0..10 {
            if i % 2 == 0 {
                drop(health.succeeded(health.admit(&d, 1, false).unwrap(), false));
            } else {
                fail(&health, &d, "upstream_error", 100, Duration::from_secs(60));
            }
        }
        assert!(!d.available(Instant::now()));
    }
}
