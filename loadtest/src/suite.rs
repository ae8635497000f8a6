//! The load phases of a run, each interleaving its targets round by round so that every
//! figure has its references measured minutes apart at most, under the same machine state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::load::{self, OpenLoop, Outcome, Shot};
use crate::plan::Plan;
use crate::procs::{self, Proc};
use crate::results::{Cpu, HeldPoint, Memory, Results, StreamSummary, Summary};
use crate::streams::{self, StreamOutcome};
use crate::syscalls::Counting;

pub const DIRECT: &str = "direct";
pub const FLOOR: &str = "floor-proxy";
pub const TOLLGATE: &str = "tollgate";
pub const LITELLM: &str = "litellm";
pub const LITELLM_2W: &str = "litellm-2w";
/// `tollgate up`: every role in one process, on SQLite and the in-process bus.
pub const TOLLGATE_UP: &str = "tollgate up";
/// An edge exporting a trace of every request over OTLP (sampled at 100 %).
pub const TOLLGATE_TRACED: &str = "tollgate traced";
/// An edge writing one JSON log line per request.
pub const TOLLGATE_LOGGED: &str = "tollgate logged";
/// The production edge at concurrency 1 while its other roles (aggregator, control plane) are
/// stopped: what their work on the shared cores adds to its tail.
pub const TOLLGATE_ALONE: &str = "tollgate, other roles stopped";

/// Ceiling for the ladder: above this p99 (ms) a target leaves it.
pub const LADDER_P99_MS: f64 = 10.0;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Something load is sent to, and the processes that serve it.
pub struct Target<'a> {
    pub name: &'static str,
    pub authority: String,
    pub auth: String,
    /// The process whose CPU and memory count as the target's own.
    pub main: &'a Proc,
    /// Every process of the target (Tollgate's roles), for whole-target CPU.
    pub all: Vec<&'a Proc>,
}

impl Target<'_> {
    pub fn is_litellm(&self) -> bool {
        self.name.starts_with(LITELLM)
    }

    /// `litellm` for a LiteLLM target, else `ours`: LiteLLM is measured at sizes of its own.
    fn sized<T>(&self, litellm: T, ours: T) -> T {
        if self.is_litellm() { litellm } else { ours }
    }

    pub(crate) fn shot(&self, body: String) -> Shot {
        Shot {
            authority: self.authority.clone(),
            path: "/v1/chat/completions".into(),
            auth: Some(self.auth.clone()),
            body: Bytes::from(body),
        }
    }
}

/// An OpenAI chat request body (16 output tokens at most, as budgets reserve).
pub fn chat_body(model: &str, stream: bool) -> String {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 16,
    });
    if stream {
        body["stream"] = true.into();
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    body.to_string()
}

/// Target order for repetition `rep`: rotated so that no target always runs first.
fn rotated<'t, 'a>(targets: &'t [&'t Target<'a>], rep: usize) -> Vec<&'t Target<'a>> {
    let mut order: Vec<_> = targets.to_vec();
    if !order.is_empty() {
        let n = rep % order.len();
        order.rotate_left(n);
    }
    order
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a load thread panicked")?
}

/// The whole machine's CPU time across one target's rounds, and how long they took.
#[derive(Clone, Copy, Debug, Default)]
struct Machine {
    busy: Duration,
    took: Duration,
}

impl Machine {
    /// Runs `round`, adding what every process on the machine spent meanwhile, and its length.
    async fn count<T>(&mut self, round: impl Future<Output = T>) -> T {
        let (busy, started) = (procs::processes_busy(), Instant::now());
        let outcome = round.await;
        self.busy += procs::processes_busy().saturating_sub(busy);
        self.took += started.elapsed();
        outcome
    }

    /// Cores in use on average across the rounds.
    fn cores(&self) -> f64 {
        self.busy.as_secs_f64() / self.took.as_secs_f64().max(0.001)
    }
}

/// Checks that every target answers a chat request, a stream and an embedding.
pub async fn sanity(targets: &[Target<'_>], notes: &mut Vec<String>) -> anyhow::Result<()> {
    for t in targets {
        for (path, body) in [
            ("/v1/chat/completions", chat_body("chat", false)),
            ("/v1/chat/completions", chat_body("chat", true)),
            (
                "/v1/embeddings",
                r#"{"model":"embed","input":["a","b"]}"#.to_owned(),
            ),
        ] {
            let (status, answer) =
                crate::http::post(&t.authority, path, Some(&t.auth), Bytes::from(body)).await?;
            if status != 200 {
                let text = String::from_utf8_lossy(&answer);
                let note = format!(
                    "{}: {path} answered {status}: {}",
                    t.name,
                    text.chars().take(200).collect::<String>()
                );
                if t.name == TOLLGATE || t.name == DIRECT {
                    anyhow::bail!("sanity check failed: {note}");
                }
                notes.push(note);
            }
        }
    }
    Ok(())
}

/// Adds a block of sequential requests measured for `name` to what `merged` holds for it.
fn merge_block<'a>(
    merged: &mut BTreeMap<&'a str, Outcome>,
    name: &'a str,
    outcome: Outcome,
) -> anyhow::Result<()> {
    match merged.get_mut(name) {
        Some(m) => m.merge(&outcome)?,
        None => {
            merged.insert(name, outcome);
        }
    }
    Ok(())
}

/// Each name's merged blocks, summarised.
fn summaries(merged: BTreeMap<&str, Outcome>) -> impl Iterator<Item = (String, Summary)> + '_ {
    merged
        .into_iter()
        .map(|(name, outcome)| (name.to_owned(), Summary::of(&outcome, 0.0)))
}

/// Concurrency 1: blocks of sequential requests, interleaved across targets.
pub async fn concurrency_one(
    plan: &Plan,
    targets: &[&Target<'_>],
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut merged: BTreeMap<&str, Outcome> = BTreeMap::new();
    let mut blocks: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for rep in 0..plan.c1_reps {
        for t in rotated(targets, rep) {
            let count = t.sized(plan.c1_litellm_count, plan.c1_count);
            let shot = t.shot(chat_body("chat", false));
            let warmup = (count / 10).max(10);
            let outcome = blocking(move || load::sequential(&shot, count, warmup, TIMEOUT)).await?;
            let p50 = crate::results::Pct::of(&outcome.latency).p50_us;
            eprintln!("  c1 {:<12} p50 {p50:>8.1} µs", t.name);
            blocks.entry(t.name).or_default().push(p50);
            merge_block(&mut merged, t.name, outcome)?;
        }
    }
    for (name, mut summary) in summaries(merged) {
        summary.block_p50_us = blocks.remove(name.as_str()).unwrap_or_default();
        results.c1.insert(name, summary);
    }
    Ok(())
}

/// Concurrency 1 through `tollgate`'s edge while its other processes are stopped (SIGSTOP), so
/// that only the edge, NATS and the mock run beside the generator. The edge keeps publishing
/// usage (NATS stores it); the aggregator catches up when it is continued.
pub async fn concurrency_one_alone(
    plan: &Plan,
    tollgate: &Target<'_>,
    results: &mut Results,
) -> anyhow::Result<()> {
    let shot = tollgate.shot(chat_body("chat", false));
    let count = plan.c1_count * plan.c1_reps as u64;
    let warmup = (plan.c1_count / 10).max(10);
    let measure = blocking(move || load::sequential(&shot, count, warmup, TIMEOUT));
    let outcome = with_others_stopped(tollgate, measure).await?;
    eprintln!(
        "  c1 {:<12} p50 {:>8.1} µs",
        TOLLGATE_ALONE,
        crate::results::Pct::of(&outcome.latency).p50_us
    );
    results
        .c1
        .insert(TOLLGATE_ALONE.to_owned(), Summary::of(&outcome, 0.0));
    Ok(())
}

/// The streams round through Tollgate's edge with its aggregator and control plane stopped:
/// what their work on the shared cores adds to the time to first token.
pub async fn streams_alone(
    plan: &Plan,
    tollgate: &Target<'_>,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (concurrency, round) = (plan.stream_concurrency, plan.stream_round);
    let targets = [tollgate];
    let measure = streams(&targets, "chat", concurrency, round, plan.stream_reps);
    let alone = with_others_stopped(tollgate, measure).await?;
    if let Some(summary) = alone.into_values().next() {
        results.streams.insert(TOLLGATE_ALONE.to_owned(), summary);
    }
    Ok(())
}

/// Runs `measure` with every process of `tollgate` but its edge stopped (SIGSTOP), and lets
/// them go on afterwards whatever happened: a stopped aggregator would stall the rest of the run.
async fn with_others_stopped<T>(
    tollgate: &Target<'_>,
    measure: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let others: Vec<u32> = tollgate
        .all
        .iter()
        .map(|p| p.pid())
        .filter(|&pid| pid != tollgate.main.pid())
        .collect();
    signal(&others, "-STOP")?;
    let outcome = measure.await;
    signal(&others, "-CONT")?;
    outcome
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pids`.
fn signal(pids: &[u32], signal: &str) -> anyhow::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let status = std::process::Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill {signal} {pids:?} failed: {status}");
    Ok(())
}

/// Names of the features phase's cases, the plain one first.
pub const FEATURE_CASES: [(&str, &str); 3] = [
    ("2 KB prompt", "chat"),
    ("pii guardrail (mask)", "chat-pii"),
    ("cache hit", "chat-cached"),
];

/// A 2 KB chat request to `model`: prose with one e-mail address for the guardrail to mask.
fn two_kb_body(model: &str) -> String {
    let sentence = "The quarterly report covers revenue, costs and the outlook for each region. ";
    let mut prompt = String::from("Summarise this for jane.doe@example.com: ");
    while prompt.len() < 2048 {
        prompt.push_str(sentence);
    }
    prompt.truncate(2048);
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
    })
    .to_string()
}

/// Tollgate's own features at concurrency 1 on a 2 KB prompt, interleaved per repetition: the
/// plain request, the same under a masking `pii` guardrail, and a cache hit (the first request
/// of the warm-up stores it).
pub async fn features(
    plan: &Plan,
    tollgate: &Target<'_>,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut merged: BTreeMap<&str, Outcome> = BTreeMap::new();
    for rep in 0..plan.c1_reps {
        let mut cases = FEATURE_CASES.to_vec();
        cases.rotate_left(rep % FEATURE_CASES.len());
        for (name, model) in cases {
            let shot = tollgate.shot(two_kb_body(model));
            let (count, warmup) = (plan.c1_count, (plan.c1_count / 10).max(10));
            let outcome = blocking(move || load::sequential(&shot, count, warmup, TIMEOUT)).await?;
            eprintln!(
                "  features {name:<22} p50 {:>8.1} µs",
                crate::results::Pct::of(&outcome.latency).p50_us
            );
            merge_block(&mut merged, name, outcome)?;
        }
    }
    results.features.extend(summaries(merged));
    Ok(())
}

/// Open-loop rounds over `rates`; fixed rates run for every target, the others only while a
/// target's p99 stays within `ceiling_ms` (and its errors under 1 %).
pub async fn ladder(
    plan: &Plan,
    targets: &[&Target<'_>],
    rates: &[f64],
    fixed: &[f64],
    round: Duration,
    ceiling_ms: f64,
    results: &mut Results,
) -> anyhow::Result<()> {
    // A target leaves after two rates in a row over the ceiling (one can be a passing stall).
    let mut strikes: BTreeMap<&str, u32> = BTreeMap::new();
    let mut over: Vec<&str> = Vec::new();
    for &rate in rates {
        let is_fixed = fixed.contains(&rate);
        let active: Vec<&Target> = targets
            .iter()
            .copied()
            .filter(|t| is_fixed || !over.contains(&t.name))
            .collect();
        if active.is_empty() {
            break;
        }
        let mut merged: BTreeMap<&str, Outcome> = BTreeMap::new();
        let mut machine: BTreeMap<&str, Machine> = BTreeMap::new();
        for rep in 0..plan.reps {
            for t in rotated(&active, rep) {
                let shot = t.shot(chat_body("chat", false));
                let spec = OpenLoop {
                    rate,
                    duration: round,
                    warmup: plan.warmup,
                    max_in_flight: 2_000,
                    timeout: TIMEOUT,
                };
                let round = blocking(move || load::open_loop(&shot, spec));
                let outcome = machine.entry(t.name).or_default().count(round).await?;
                match merged.get_mut(t.name) {
                    Some(m) => m.merge(&outcome)?,
                    None => {
                        merged.insert(t.name, outcome);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for (name, outcome) in merged {
            let mut summary = Summary::of(&outcome, rate);
            summary.machine_cores = machine.get(name).map(Machine::cores);
            eprintln!(
                "  {:>6} rps {:<12} p50 {:>9.1} µs  p99 {:>10.1} µs  errors {}  late {}",
                rate,
                name,
                summary.latency.p50_us,
                summary.latency.p99_us,
                summary.error_count(),
                summary.late_sends
            );
            let strike = strikes.entry(name).or_default();
            if summary.latency.p99_us > ceiling_ms * 1_000.0 || summary.error_rate() > 0.01 {
                *strike += 1;
                if *strike >= 2 {
                    over.push(name);
                }
            } else {
                *strike = 0;
            }
            results
                .rates
                .entry(rate as u64)
                .or_default()
                .insert(name.to_owned(), summary);
        }
    }
    Ok(())
}

/// Streams at a fixed concurrency, interleaved; returns each target's merged figures, with
/// each round's TTFT p99 and what the whole machine spent per stream during its rounds.
pub async fn streams(
    targets: &[&Target<'_>],
    model: &str,
    concurrency: usize,
    round: Duration,
    reps: usize,
) -> anyhow::Result<BTreeMap<String, StreamSummary>> {
    let mut merged: BTreeMap<&str, StreamOutcome> = BTreeMap::new();
    // Per target, per round: TTFT p99 (µs) and time stolen by the hypervisor (ms).
    let mut rounds: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    let mut machine: BTreeMap<&str, Machine> = BTreeMap::new();
    for rep in 0..reps {
        for t in rotated(targets, rep) {
            let shot = t.shot(chat_body(model, true));
            let stolen = procs::stolen();
            let streamed = blocking(move || {
                streams::closed_loop(&shot, concurrency, round, Duration::from_secs(1))
            });
            let outcome = machine.entry(t.name).or_default().count(streamed).await?;
            rounds.entry(t.name).or_default().push((
                crate::results::Pct::of(&outcome.ttft).p99_us,
                procs::stolen().saturating_sub(stolen).as_secs_f64() * 1e3,
            ));
            match merged.get_mut(t.name) {
                Some(m) => m.merge(&outcome)?,
                None => {
                    merged.insert(t.name, outcome);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(merged
        .into_iter()
        .map(|(name, o)| {
            let mut s = StreamSummary::of(&o);
            (s.round_ttft_p99_us, s.round_steal_ms) =
                rounds.remove(name).unwrap_or_default().into_iter().unzip();
            if let Some(spent) = machine.get(name) {
                let streams = (s.completed + s.stalled).max(1) as f64;
                s.machine_us_per_stream = Some(spent.busy.as_secs_f64() * 1e6 / streams);
                s.machine_cores = Some(spent.cores());
            }
            eprintln!(
                "  streams c{concurrency} {:<12} ttft p99 {:>9.1} µs (median of rounds {:>9.1} µs)  chunk p99 {:>9.1} µs  done {} stalled {} errors {}",
                name,
                s.ttft.p99_us,
                s.ttft_p99_us(),
                s.chunk_delay.p99_us,
                s.completed,
                s.stalled,
                s.errors
            );
            (name.to_owned(), s)
        })
        .collect())
}

/// Resident memory of each target's process with idle streams held through it.
pub async fn memory(
    plan: &Plan,
    targets: &[&Target<'_>],
    results: &mut Results,
) -> anyhow::Result<()> {
    for t in targets {
        let counts = t.sized(vec![plan.litellm_held], plan.held.clone());
        let mut memory = Memory {
            idle_rss_bytes: t.main.rss_bytes(),
            points: Vec::new(),
        };
        let idle_files = t.main.open_files();
        for n in counts {
            let shot = t.shot(chat_body("hold", true));
            let held = blocking(move || streams::hold(&shot, n, 1_500.0)).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let point = HeldPoint {
                streams: n,
                established: held.established,
                failed: held.failed,
                rss_bytes: t.main.rss_bytes(),
            };
            eprintln!(
                "  held {:<12} {:>5} streams ({} up, {} failed): {:.1} MB",
                t.name,
                n,
                point.established,
                point.failed,
                point.rss_bytes as f64 / 1e6
            );
            memory.points.push(point);
            blocking(move || {
                held.release();
                Ok(())
            })
            .await?;
            settle(t, idle_files, &mut results.notes).await;
        }
        results.memory.insert(t.name.to_owned(), memory);
    }
    Ok(())
}

/// Waits until the target has closed what the released streams held. An edge reads an
/// abandoned stream's upstream on for its usage (30 s by default), so without this wait the
/// next point would count those connections too, and the phase after this one would start on
/// an edge near its file limit.
async fn settle(t: &Target<'_>, idle_files: usize, notes: &mut Vec<String>) {
    const SLACK: usize = 64;
    const PATIENCE: Duration = Duration::from_secs(60);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    while t.main.open_files() > idle_files + SLACK {
        if started.elapsed() > PATIENCE {
            notes.push(format!(
                "{}: {} files still open {} s after its held streams were released ({} when idle)",
                t.name,
                t.main.open_files(),
                PATIENCE.as_secs(),
                idle_files
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// CPU time per request at a fixed rate, from `/proc` before and after.
pub async fn cpu(
    plan: &Plan,
    targets: &[&Target<'_>],
    results: &mut Results,
) -> anyhow::Result<()> {
    for t in targets {
        let rate = t.sized(plan.litellm_cpu_rate, plan.cpu_rate);
        let shot = t.shot(chat_body("chat", false));
        let spec = OpenLoop {
            rate,
            duration: plan.cpu_round,
            warmup: Duration::ZERO,
            max_in_flight: 2_000,
            timeout: TIMEOUT,
        };
        // Counting starts first: its moment of attaching falls outside the round's figures.
        let counting = Counting::start(t.main.pid()).await;
        let main_before = t.main.cpu_time();
        let switches_before = t.main.switches();
        let waited_before = t.main.run_delay();
        let all_before: Duration = t.all.iter().map(|p| p.cpu_time()).sum();
        let machine_before = procs::processes_busy();
        let servers_before = procs::servers_busy();
        let outcome = blocking(move || load::open_loop(&shot, spec)).await?;
        // Usage events are written by the aggregator a little after the answers.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let syscalls = counting.and_then(Counting::stop);
        let main = t.main.cpu_time().saturating_sub(main_before);
        let switches = t.main.switches() - switches_before;
        let waited = t.main.run_delay().saturating_sub(waited_before);
        let all = t
            .all
            .iter()
            .map(|p| p.cpu_time())
            .sum::<Duration>()
            .saturating_sub(all_before);
        let machine = procs::processes_busy().saturating_sub(machine_before);
        let servers = procs::servers_busy();
        let requests = outcome.ok.max(1) as f64;
        let micros = |d: Duration| d.as_secs_f64() * 1e6 / requests;
        let cpu = Cpu {
            rate,
            requests: outcome.ok,
            us_per_request: micros(main),
            whole_us_per_request: micros(all),
            wakeups_per_request: Some(switches.voluntary as f64 / requests),
            preemptions_per_request: Some(switches.involuntary as f64 / requests),
            machine_us_per_request: Some(micros(machine)),
            waited_us_per_request: Some(micros(waited)),
            nats_us_per_request: Some(micros(servers.nats.saturating_sub(servers_before.nats))),
            postgres_us_per_request: Some(micros(
                servers.postgres.saturating_sub(servers_before.postgres),
            )),
            syscalls,
        };
        eprintln!(
            "  cpu {:<12} {:>7.1} µs/request ({:.1} µs whole, {:.1} µs machine, NATS {:.1}, PostgreSQL {:.1}), {:.2} wake-ups/request, {:.2} system calls/request",
            t.name,
            cpu.us_per_request,
            cpu.whole_us_per_request,
            cpu.machine_us_per_request.unwrap_or_default(),
            cpu.nats_us_per_request.unwrap_or_default(),
            cpu.postgres_us_per_request.unwrap_or_default(),
            cpu.wakeups_per_request.unwrap_or_default(),
            cpu.syscalls_per_request().unwrap_or_default()
        );
        results.cpu.insert(t.name.to_owned(), cpu);
    }
    Ok(())
}

/// CPU per request of two more edges, beside the plain one measured by [`cpu`]: one exporting
/// every request's trace over OTLP/HTTP (to the mock, which keeps nothing), one writing a JSON
/// log line per request.
pub async fn telemetry_cpu(
    plan: &Plan,
    stack: &mut crate::tollgate::Stack,
    mock_addr: &str,
    results: &mut Results,
) -> anyhow::Result<()> {
    let traced = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{mock_addr}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
    ];
    let logged = [
        ("RUST_LOG", "warn,tollgate::access=info".to_owned()),
        ("TOLLGATE_LOG_FORMAT", "json".to_owned()),
    ];
    stack.add_edge_with(&traced).await?;
    stack.add_edge_with(&logged).await?;
    let [.., traced, logged] = stack.edges.as_slice() else {
        anyhow::bail!("the telemetry edges did not start");
    };
    let mut targets = Vec::new();
    for (name, edge) in [(TOLLGATE_TRACED, traced), (TOLLGATE_LOGGED, logged)] {
        targets.push(Target {
            name,
            authority: edge.addr.clone(),
            auth: stack.key.clone(),
            main: &edge.proc,
            all: vec![&edge.proc, &stack.control_plane, &stack.aggregator],
        });
    }
    let targets: Vec<&Target> = targets.iter().collect();
    cpu(plan, &targets, results).await
}
