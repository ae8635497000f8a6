//! The edge's Prometheus metrics, one registry per edge (several edges can share a process).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub provider: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardrailLabels {
    /// The guardrail's id (an admin's choice, never request content).
    pub guardrail: String,
    /// passed | masked | blocked | failed.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// hit | miss | bypass | semantic_hit (a miss the semantic tier answered).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub phase: &'static str,
    /// The contract error code the phase answered with.
    pub code: &'static str,
}

/// A phase of the request path, as named in metrics and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Auth,
    Parse,
    Access,
    Limits,
    Budget,
    Cache,
    GuardrailsInput,
    GuardrailsOutput,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Phase::Auth,
        Phase::Parse,
        Phase::Access,
        Phase::Limits,
        Phase::Budget,
        Phase::Cache,
        Phase::GuardrailsInput,
        Phase::GuardrailsOutput,
    ];

    /// The phase's label and span name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Auth => "auth",
            Phase::Parse => "parse",
            Phase::Access => "access",
            Phase::Limits => "limits",
            Phase::Budget => "budget",
            Phase::Cache => "cache",
            Phase::GuardrailsInput => "guardrails.input",
            Phase::GuardrailsOutput => "guardrails.output",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

fn phase_histogram() -> Histogram {
    // 1 µs … ~0.3 s: most phases take microseconds; remote guardrails and semantic lookups more.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_001, 4.0, 10,
    ))
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~100 s: overhead lives at the low end, long generations at the high end.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.5, 16,
    ))
}

/// Every metric the edge exposes on `/metrics`.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RequestLabels, Histogram>,
    pub overhead_seconds: Histogram,
    pub ttft_seconds: Histogram,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost_usd: Family<ModelLabels, Counter<f64, AtomicU64>>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub policy_sequence: Gauge,
    pub policy_staleness_seconds: Gauge<f64, AtomicU64>,
    /// Resyncs since start, as counted by the policy follower (set at scrape time).
    pub policy_resyncs: Gauge,
    /// Policy events and snapshots refused since start: unreadable, unsigned or forged (set at
    /// scrape time).
    pub policy_refused: Gauge,
    /// Budget statuses refused since start for a missing or wrong signature (set at scrape time).
    pub budget_status_refused: Gauge,
    pub usage_buffered: Gauge,
    pub usage_published: Counter,
    pub usage_dropped: Counter,
    /// Publish attempts the bus refused or did not answer (each retried until stored).
    pub usage_publish_failures: Counter,
    /// 0 closed, 1 half-open, 2 open.
    pub circuit_state: Family<DeploymentLabels, Gauge>,
    pub circuit_opened: Family<DeploymentLabels, Counter>,
    pub retries: Family<ReasonLabels, Counter>,
    pub fallbacks: Family<ReasonLabels, Counter>,
    pub guardrail_checks: Family<GuardrailLabels, Counter>,
    pub guardrail_seconds: Histogram,
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// Set at scrape time.
    pub cache_entries: Gauge,
    pub cache_bytes: Gauge,
    pub phase_seconds: Family<PhaseLabels, Histogram>,
    /// `phase_seconds`' histograms, looked up once: a phase is timed without a label lookup.
    phase_timers: Vec<Histogram>,
    pub phase_refusals: Family<RefusalLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let metrics = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            overhead_seconds: latency_histogram(),
            ttft_seconds: latency_histogram(),
            tokens: Family::default(),
            cost_usd: Family::default(),
            upstream_errors: Family::default(),
            policy_sequence: Gauge::default(),
            policy_staleness_seconds: Gauge::default(),
            policy_resyncs: Gauge::default(),
            policy_refused: Gauge::default(),
            budget_status_refused: Gauge::default(),
            usage_buffered: Gauge::default(),
            usage_published: Counter::default(),
            usage_dropped: Counter::default(),
            usage_publish_failures: Counter::default(),
            circuit_state: Family::default(),
            circuit_opened: Family::default(),
            retries: Family::default(),
            fallbacks: Family::default(),
            guardrail_checks: Family::default(),
            guardrail_seconds: latency_histogram(),
            cache_lookups: Family::default(),
            cache_entries: Gauge::default(),
            cache_bytes: Gauge::default(),
            phase_seconds: Family::new_with_constructor(phase_histogram),
            phase_timers: Vec::new(),
            phase_refusals: Family::default(),
            registry: Registry::default(),
        };
        register_traffic(&mut registry, &metrics);
        register_policy_and_usage(&mut registry, &metrics);
        register_phases(&mut registry, &metrics);
        let phase_timers = Phase::ALL
            .iter()
            .map(|p| {
                metrics
                    .phase_seconds
                    .get_or_create_owned(&PhaseLabels { phase: p.name() })
            })
            .collect();
        Metrics {
            registry,
            phase_timers,
            ..metrics
        }
    }
}

/// The request path: what was answered, how fast, at what cost, and how providers failed.
fn register_traffic(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "requests",
        "Requests answered, by route and HTTP status",
        m.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from request to the last byte sent",
        m.request_seconds.clone(),
    );
    registry.register(
        "overhead_seconds",
        "Time spent in Tollgate itself, excluding the upstream call",
        m.overhead_seconds.clone(),
    );
    registry.register(
        "ttft_seconds",
        "Time to the first streamed token",
        m.ttft_seconds.clone(),
    );
    registry.register(
        "tokens",
        "Tokens accounted, by model and kind (input, output, cached_input)",
        m.tokens.clone(),
    );
    registry.register(
        "cost_usd",
        "Cost accounted from the price table, USD",
        m.cost_usd.clone(),
    );
    registry.register(
        "upstream_errors",
        "Upstream failures, by provider and error code",
        m.upstream_errors.clone(),
    );
    registry.register(
        "deployment_circuit_state",
        "Circuit breaker of each deployment on this edge: 0 closed, 1 half-open, 2 open",
        m.circuit_state.clone(),
    );
    registry.register(
        "deployment_circuit_opened",
        "Times a deployment's circuit opened (it was cooled down)",
        m.circuit_opened.clone(),
    );
    registry.register(
        "upstream_retries",
        "Attempts repeated after a failure, by the failure (rate_limited, server_error, timeout, connection)",
        m.retries.clone(),
    );
    registry.register(
        "fallbacks",
        "Requests moved to a fallback model, by reason (failure, context_window, content_policy)",
        m.fallbacks.clone(),
    );
}

/// Policy as this edge follows it, and the usage events it owes the ledger.
fn register_policy_and_usage(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "policy_sequence",
        "Sequence of the last policy event applied",
        m.policy_sequence.clone(),
    );
    registry.register(
        "policy_staleness_seconds",
        "Seconds since the policy was last known to be current",
        m.policy_staleness_seconds.clone(),
    );
    registry.register(
        "policy_resyncs",
        "Resyncs after a gap in the policy stream since the edge started",
        m.policy_resyncs.clone(),
    );
    registry.register(
        "policy_refused",
        "Policy events and snapshots refused since the edge started: unreadable, unsigned or not signed by the trusted key",
        m.policy_refused.clone(),
    );
    registry.register(
        "budget_status_refused",
        "Budget statuses refused since the edge started: unsigned or not signed by the status key policy names",
        m.budget_status_refused.clone(),
    );
    registry.register(
        "usage_events_buffered",
        "Usage events waiting to be published",
        m.usage_buffered.clone(),
    );
    registry.register(
        "usage_events_published",
        "Usage events stored by the bus",
        m.usage_published.clone(),
    );
    registry.register(
        "usage_events_dropped",
        "Usage events dropped because the buffer was full",
        m.usage_dropped.clone(),
    );
    registry.register(
        "usage_publish_failures",
        "Usage event publish attempts that failed and are retried (the bus is away or slow)",
        m.usage_publish_failures.clone(),
    );
}

/// The request path phase by phase: guardrails, the response cache, each phase's time and refusals.
fn register_phases(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "guardrail_checks",
        "Guardrail runs, by guardrail and outcome (passed, masked, blocked, failed)",
        m.guardrail_checks.clone(),
    );
    registry.register(
        "guardrail_duration_seconds",
        "Time one guardrail took on one text (a request, an answer or a stream window)",
        m.guardrail_seconds.clone(),
    );
    registry.register(
        "cache_lookups",
        "Response cache lookups where a cache policy applies, by result (hit, miss, bypass; semantic_hit for a miss the semantic tier answered)",
        m.cache_lookups.clone(),
    );
    registry.register(
        "cache_entries",
        "Answers in this edge's response cache (stored here or shared by other edges)",
        m.cache_entries.clone(),
    );
    registry.register(
        "cache_bytes",
        "Bytes of answers in this edge's response cache",
        m.cache_bytes.clone(),
    );
    registry.register(
        "phase_duration_seconds",
        "Time each phase of the request path took (auth, parse, access, limits, budget, cache, guardrails.input, guardrails.output)",
        m.phase_seconds.clone(),
    );
    registry.register(
        "phase_refusals",
        "Requests a phase refused, by phase and error code (limits/rate_limited, budget/budget_exceeded, auth/invalid_api_key, …)",
        m.phase_refusals.clone(),
    );
}

impl Metrics {
    /// Counts `seconds` spent in `phase`.
    pub fn time_phase(&self, phase: Phase, seconds: f64) {
        if let Some(timer) = self.phase_timers.get(phase as usize) {
            timer.observe(seconds);
        }
    }

    /// Counts a request `phase` refused with error `code`.
    pub fn refused(&self, phase: Phase, code: &'static str) {
        self.phase_refusals
            .get_or_create(&RefusalLabels {
                phase: phase.name(),
                code,
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
