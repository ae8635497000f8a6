//! How big each phase of the suite is: the full run, `--quick` (under three minutes) and
//! `--smoke` (CI's check that everything still starts and answers; no figure means anything).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: &'static str,
    /// Concurrency 1: requests per block, blocks per target (interleaved).
    pub c1_count: u64,
    pub c1_litellm_count: u64,
    pub c1_reps: usize,
    /// Rates reported as "added latency at …" (always run for direct, floor, Tollgate).
    pub fixed_rates: Vec<f64>,
    /// Rates of the throughput ladder (a target leaves it once its p99 passes 10 ms).
    pub ladder: Vec<f64>,
    pub litellm_ladder: Vec<f64>,
    pub round: Duration,
    pub litellm_round: Duration,
    pub warmup: Duration,
    pub reps: usize,
    /// Streams: concurrency for TTFT and chunk delay, the length of a round and rounds per
    /// target (interleaved; TTFT p99 is judged as the median of the rounds' p99s), and the
    /// stall check.
    pub stream_concurrency: usize,
    pub stream_round: Duration,
    pub stream_reps: usize,
    pub stall_concurrency: usize,
    pub stall_round: Duration,
    /// Held idle streams for memory.
    pub held: Vec<usize>,
    pub litellm_held: usize,
    /// CPU per request: rate and duration.
    pub cpu_rate: f64,
    pub litellm_cpu_rate: f64,
    pub cpu_round: Duration,
    /// Policy propagation.
    pub changes: usize,
    pub change_rate: f64,
    pub revocations: usize,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            mode: "full",
            c1_count: 2_000,
            c1_litellm_count: 300,
            c1_reps: 5,
            fixed_rates: vec![1_000.0, 5_000.0, 10_000.0],
            ladder: vec![
                1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0, 7_000.0, 8_000.0, 9_000.0,
                10_000.0, 12_000.0, 14_000.0, 16_000.0, 20_000.0,
            ],
            litellm_ladder: vec![25.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0],
            round: secs(3.0),
            litellm_round: secs(5.0),
            warmup: secs(0.5),
            reps: 2,
            stream_concurrency: 32,
            stream_round: secs(4.0),
            stream_reps: 5,
            stall_concurrency: 512,
            stall_round: secs(8.0),
            held: vec![1_000, 4_000, 9_000],
            litellm_held: 1_000,
            cpu_rate: 2_000.0,
            litellm_cpu_rate: 100.0,
            cpu_round: secs(8.0),
            changes: 1_000,
            change_rate: 50.0,
            revocations: 20,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            mode: "quick",
            c1_count: 400,
            c1_litellm_count: 100,
            c1_reps: 2,
            fixed_rates: vec![1_000.0, 5_000.0, 10_000.0],
            ladder: vec![1_000.0, 2_000.0, 5_000.0, 8_000.0, 10_000.0, 12_000.0],
            litellm_ladder: vec![50.0, 100.0, 200.0, 300.0],
            round: secs(1.5),
            litellm_round: secs(2.0),
            warmup: secs(0.3),
            reps: 1,
            stream_concurrency: 32,
            stream_round: secs(2.0),
            stream_reps: 3,
            stall_concurrency: 512,
            stall_round: secs(3.0),
            held: vec![250, 1_000],
            litellm_held: 250,
            cpu_rate: 2_000.0,
            litellm_cpu_rate: 100.0,
            cpu_round: secs(2.0),
            changes: 200,
            change_rate: 50.0,
            revocations: 5,
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            mode: "smoke",
            c1_count: 100,
            c1_litellm_count: 20,
            c1_reps: 1,
            fixed_rates: vec![200.0],
            ladder: vec![200.0, 500.0],
            litellm_ladder: vec![20.0],
            round: secs(0.5),
            litellm_round: secs(0.5),
            warmup: secs(0.1),
            reps: 1,
            stream_concurrency: 8,
            stream_round: secs(1.0),
            stream_reps: 1,
            stall_concurrency: 32,
            stall_round: secs(1.0),
            held: vec![50],
            litellm_held: 20,
            cpu_rate: 300.0,
            litellm_cpu_rate: 20.0,
            cpu_round: secs(1.0),
            changes: 30,
            change_rate: 50.0,
            revocations: 2,
        }
    }
}
