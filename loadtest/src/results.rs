//! What a run measured, as plain data: written next to the report as JSON so that two runs
//! can be compared figure by figure.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::Outcome;
use crate::streams::StreamOutcome;
use crate::syscalls::Syscalls;

/// Percentiles of a latency histogram (nanoseconds in, microseconds out).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Pct {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Pct {
    pub fn of(h: &Histogram<u64>) -> Pct {
        if h.is_empty() {
            return Pct::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Pct {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// One target's figures at one load point.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub offered_rps: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub late_sends: u64,
    pub lateness_p99_us: f64,
    pub latency: Pct,
    /// The target's own time per request, where it says it (Tollgate's `x-tollgate-overhead-ms`;
    /// absent from earlier runs and for the references).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own: Option<Pct>,
    /// Cores in use on the whole machine during this target's rounds: generator, mock, the
    /// target and the servers it uses (absent from earlier runs).
    pub machine_cores: Option<f64>,
    /// At concurrency 1: each block's p50 in µs, in the order run (absent from earlier runs
    /// and from the other phases).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub block_p50_us: Vec<f64>,
}

impl Summary {
    pub fn of(o: &Outcome, offered_rps: f64) -> Summary {
        Summary {
            offered_rps,
            sent: o.sent,
            ok: o.ok,
            errors: o.errors.clone(),
            late_sends: o.late,
            lateness_p99_us: if o.lateness.is_empty() {
                0.0
            } else {
                o.lateness.value_at_quantile(0.99) as f64 / 1_000.0
            },
            latency: Pct::of(&o.latency),
            own: (!o.own.is_empty()).then(|| Pct::of(&o.own)),
            machine_cores: None,
            block_p50_us: Vec::new(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Error share in [0, 1].
    pub fn error_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.error_count() as f64 / self.sent as f64
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamSummary {
    pub concurrency: usize,
    pub completed: u64,
    pub stalled: u64,
    pub errors: u64,
    /// Over every round.
    pub ttft: Pct,
    pub chunk_delay: Pct,
    /// Each round's TTFT p99 in µs, in the order run (absent from earlier runs).
    pub round_ttft_p99_us: Vec<f64>,
    /// Each round's time stolen by the hypervisor from the machine's vCPUs, in ms (in 10 ms
    /// steps; absent from earlier runs).
    pub round_steal_ms: Vec<f64>,
    /// CPU of the whole machine per stream during this target's rounds: generator, mock, the
    /// target and the servers it uses (absent from earlier runs).
    pub machine_us_per_stream: Option<f64>,
    /// Cores in use on the whole machine during this target's rounds (absent from earlier runs).
    pub machine_cores: Option<f64>,
}

impl StreamSummary {
    pub fn of(o: &StreamOutcome) -> StreamSummary {
        StreamSummary {
            concurrency: o.concurrency,
            completed: o.completed,
            stalled: o.stalled,
            errors: o.errors,
            ttft: Pct::of(&o.ttft),
            chunk_delay: Pct::of(&o.chunk_delay),
            ..StreamSummary::default()
        }
    }

    /// TTFT p99 as the verdict reads it: the median of the rounds' p99s when there were three
    /// rounds or more, else the p99 over every stream. One p99 over all rounds follows the
    /// worst round, and on two shared cores rounds differ by milliseconds.
    pub fn ttft_p99_us(&self) -> f64 {
        self.ttft_p99_of_rounds().unwrap_or(self.ttft.p99_us)
    }

    /// The median of the rounds' TTFT p99s, when there were three rounds or more (fewer have
    /// no middle worth reading).
    pub fn ttft_p99_of_rounds(&self) -> Option<f64> {
        let rounds = &self.round_ttft_p99_us;
        if rounds.len() < 3 {
            None
        } else {
            median(rounds)
        }
    }
}

/// The median of `values` (the mean of the middle two when their number is even).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Resident memory with `streams` idle streams held through a target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HeldPoint {
    pub streams: usize,
    pub established: usize,
    pub failed: usize,
    pub rss_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub idle_rss_bytes: u64,
    pub points: Vec<HeldPoint>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub rate: f64,
    pub requests: u64,
    /// CPU of the process serving the request (the edge for Tollgate), per request.
    pub us_per_request: f64,
    /// CPU of every process of the target (Tollgate: edge, aggregator, control plane).
    pub whole_us_per_request: f64,
    /// Voluntary context switches of the serving process's threads per request: how often
    /// its threads went to sleep and had to be woken (absent from earlier runs).
    pub wakeups_per_request: Option<f64>,
    /// Involuntary context switches (preemptions) of its threads per request.
    pub preemptions_per_request: Option<f64>,
    /// CPU of the whole machine per request: the target, the generator, the mock and the
    /// servers the target uses (NATS, PostgreSQL) (absent from earlier runs).
    pub machine_us_per_request: Option<f64>,
    /// Time the serving process's threads waited, runnable, for a core, per request (absent
    /// from earlier runs).
    pub waited_us_per_request: Option<f64>,
    /// CPU of the NATS server per request (absent from earlier runs).
    pub nats_us_per_request: Option<f64>,
    /// CPU of the PostgreSQL server per request (absent from earlier runs).
    pub postgres_us_per_request: Option<f64>,
    /// System calls of the serving process over the round, where `perf` could count them
    /// (absent from earlier runs).
    pub syscalls: Option<Syscalls>,
}

impl Cpu {
    /// System calls of the serving process per request, where they were counted.
    pub fn syscalls_per_request(&self) -> Option<f64> {
        Some(self.per_request(self.syscalls.as_ref()?.total))
    }

    /// `count` over the round, per answered request.
    pub fn per_request(&self, count: u64) -> f64 {
        count as f64 / self.requests.max(1) as f64
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Propagation {
    pub changes: usize,
    pub change_rate: f64,
    pub kinds: BTreeMap<String, usize>,
    /// Per edge: commit acknowledged to applied on that edge.
    pub per_edge: Vec<Pct>,
    pub all: Pct,
    /// Changes an edge never showed as applied within the wait.
    pub missing: u64,
    /// Poll interval of `/health/ready`: the resolution of every figure here.
    pub poll_interval_us: f64,
    /// Revocations: from the revoke call's answer until the key got 401 on each edge.
    pub revocation: Pct,
    pub revocation_failures: u64,
    /// Revoked keys that still got an answer after the edge reported the revocation applied.
    pub revocation_violations: u64,
}

/// What a trace of the scheduler showed about one target's slow requests at concurrency 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stalls {
    pub requests: u64,
    /// Requests slower than [`crate::stalls::SLOW`].
    pub slow: u64,
    /// Slow requests during which a thread serving them waited [`crate::stalls::WAIT`] or longer for a core.
    pub waited: u64,
    /// Who ran on the core while those threads waited: process, share of the waiting time.
    pub held_by: Vec<(String, f64)>,
    /// Where a typical request's time went (absent from runs before it was measured).
    pub hops: Option<Hops>,
}

/// The steps of a request at concurrency 1 in the scheduler's trace, as medians over the
/// requests whose every step the trace shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hops {
    /// Requests the medians are taken over.
    pub requests: u64,
    /// µs from the target's thread taking a core to the mock's thread being woken.
    pub to_upstream_us: f64,
    /// µs from then until the mock's thread goes to sleep, its answer written.
    pub upstream_us: f64,
    /// µs from then until the generator's thread is woken by the answer.
    pub back_us: f64,
    /// Share of the target's wake-ups that put its thread on the core of the thread that woke
    /// it, rather than on another core.
    pub beside_waker: f64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    pub meta: BTreeMap<String, String>,
    /// Per phase: CPU used on the machine by work other than this run, in cores.
    pub other_work: Vec<(String, f64)>,
    pub notes: Vec<String>,
    pub c1: BTreeMap<String, Summary>,
    /// Tollgate alone at concurrency 1 on a 2 KB prompt: plain, under a guardrail, from cache.
    pub features: BTreeMap<String, Summary>,
    /// rate -> target -> summary (fixed rates and the ladder; keys are rates as integers).
    pub rates: BTreeMap<u64, BTreeMap<String, Summary>>,
    pub streams: BTreeMap<String, StreamSummary>,
    pub stall: BTreeMap<String, StreamSummary>,
    pub memory: BTreeMap<String, Memory>,
    pub cpu: BTreeMap<String, Cpu>,
    pub propagation: Option<Propagation>,
    pub profile: Option<String>,
    /// Why requests at concurrency 1 were slow, by target, from a trace of the scheduler.
    pub stalls: BTreeMap<String, Stalls>,
}

impl Results {
    /// The highest offered rate at which `target` kept p99 within `ms` with no errors and
    /// delivered what was offered.
    /// Rates below it that failed are shown in the report's table beside it.
    pub fn frontier(&self, target: &str, ms: f64) -> Option<u64> {
        self.rates
            .iter()
            .filter_map(|(rate, by)| by.get(target).map(|s| (*rate, s)))
            .filter(|(_, s)| s.error_count() == 0 && s.latency.p99_us <= ms * 1_000.0 && s.ok > 0)
            .map(|(rate, _)| rate)
            .max()
    }

    /// The highest rate `target` sustained (≥ 99 % answered, p99 under a second).
    pub fn sustained(&self, target: &str) -> Option<u64> {
        self.rates
            .iter()
            .filter_map(|(rate, by)| by.get(target).map(|s| (*rate, s)))
            .filter(|(_, s)| {
                s.sent > 0 && s.ok as f64 >= 0.99 * s.sent as f64 && s.latency.p99_us <= 1_000_000.0
            })
            .map(|(rate, _)| rate)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(p99_us: f64, rounds: &[f64]) -> StreamSummary {
        StreamSummary {
            ttft: Pct {
                p99_us,
                ..Pct::default()
            },
            round_ttft_p99_us: rounds.to_vec(),
            ..StreamSummary::default()
        }
    }

    #[test]
    fn ttft_p99_is_the_median_of_three_rounds_or_more_and_else_the_p99_over_all() {
        // One outlying round in five does not move the figure.
        let five = streamed(9_000.0, &[3_000.0, 9_500.0, 2_500.0, 2_800.0, 3_100.0]);
        assert_eq!(five.ttft_p99_us(), 3_000.0);
        let four = streamed(9_000.0, &[3_000.0, 9_500.0, 2_000.0, 2_800.0]);
        assert_eq!(four.ttft_p99_us(), 2_900.0);
        // Earlier runs kept no rounds; two rounds have no middle to speak of.
        assert_eq!(streamed(9_000.0, &[]).ttft_p99_us(), 9_000.0);
        assert_eq!(streamed(9_000.0, &[1.0, 2.0]).ttft_p99_us(), 9_000.0);
    }
}
