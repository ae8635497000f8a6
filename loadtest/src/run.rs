//! One run of the suite: build, start every process, run the phases, write the report.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;

use crate::embedded::Embedded;
use crate::litellm::LiteLlm;
use crate::plan::Plan;
use crate::procs::{Proc, answers};
use crate::results::Results;
use crate::suite::{self, DIRECT, FLOOR, LITELLM, LITELLM_2W, TOLLGATE, TOLLGATE_UP, Target};
use crate::tollgate::{Infra, Stack};
use crate::{litellm, propagation, report};

/// Flags of `loadtest`.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "loadtest",
    about = "Measure Tollgate against a direct call, a minimal proxy and LiteLLM; write loadtest/results/<date>-<machine>.md"
)]
pub struct Options {
    /// Everyday size: finishes in under three minutes.
    #[arg(long)]
    pub quick: bool,
    /// CI's smoke test: every phase at a minimal size; no figure means anything.
    #[arg(long)]
    pub smoke: bool,
    /// Skip LiteLLM (not installed, not measured).
    #[arg(long)]
    pub no_litellm: bool,
    /// The `tollgate` binary to measure (default: next to this binary, built first).
    #[arg(long)]
    pub tollgate_bin: Option<PathBuf>,
    /// Do not run `cargo build` first.
    #[arg(long)]
    pub no_build: bool,
    /// Where the report goes (default: loadtest/results).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Python used to create LiteLLM's venv.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Record a `perf` profile of the edge when a latency or throughput target is missed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub profile: bool,
    /// Measure nothing: write the report of an earlier run again from its JSON, beside it
    /// (after the report's code changed, or to compare it with another run).
    #[arg(long, value_name = "JSON")]
    pub render: Option<PathBuf>,
}

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn build(release: bool) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(WORKSPACE).args([
        "build",
        "-p",
        "tollgate",
        "-p",
        "tollgate-loadtest",
        "--bins",
    ]);
    if release {
        command.arg("--release");
    }
    eprintln!("loadtest: {command:?}");
    if !command.status()?.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

async fn infra() -> anyhow::Result<Infra> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let nats_url = match env("NATS_URL") {
        Some(url) => url,
        None if answers("127.0.0.1:4222") => "nats://127.0.0.1:4222".into(),
        None => tollgate_test_support::nats_url().await?,
    };
    let postgres_admin_url = match env("DATABASE_URL") {
        Some(url) => Some(url),
        None if answers("127.0.0.1:5432") => {
            Some("postgres://postgres@127.0.0.1:5432/postgres".into())
        }
        // An ephemeral server (initdb) started by the test harness.
        None => None,
    };
    Ok(Infra {
        nats_url,
        postgres_admin_url,
    })
}

/// The CPU's model name, with its widest vector extension: a VM may name two different hosts'
/// CPUs alike ("AMD EPYC"), and runs are compared only on the same CPU.
fn cpu_label(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map_or("", str::trim)
    };
    let flags: Vec<&str> = field("flags").split_whitespace().collect();
    let model = field("model name");
    if flags.contains(&"avx512f") {
        format!("{model} (AVX-512)")
    } else if flags.contains(&"avx2") {
        format!("{model} (AVX2)")
    } else {
        model.to_owned()
    }
}

/// The `authorization` the load test sends to the mock and to floor-proxy, directly.
const DIRECT_AUTH: &str = "Bearer sk-direct";

fn machine_meta(plan: &Plan, tollgate_bin: &Path) -> std::collections::BTreeMap<String, String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = cpu_label(&read("/proc/cpuinfo"));
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(WORKSPACE)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(
        "date".into(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
    );
    meta.insert("machine".into(), hostname());
    meta.insert("cpu".into(), cpu);
    meta.insert(
        "cores".into(),
        std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .to_string(),
    );
    meta.insert("kernel".into(), output("uname", &["-r"]));
    meta.insert(
        "commit".into(),
        output("git", &["rev-parse", "--short", "HEAD"]),
    );
    meta.insert(
        "dirty".into(),
        (!output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty()).to_string(),
    );
    meta.insert("mode".into(), plan.mode.into());
    meta.insert("load average at start".into(), load_average());
    if let Some(wake_ups) = crate::wakeup::measure() {
        meta.insert(
            "thread wake-up (median, same CPU / other CPU)".into(),
            format!(
                "{:.1} µs / {:.1} µs",
                wake_ups.same_cpu.as_secs_f64() * 1e6,
                wake_ups.other_cpu.as_secs_f64() * 1e6
            ),
        );
    }
    meta.insert("tollgate_bin".into(), tollgate_bin.display().to_string());
    if let Ok(modified) = std::fs::metadata(tollgate_bin).and_then(|m| m.modified()) {
        let built: chrono::DateTime<chrono::Utc> = modified.into();
        meta.insert(
            "tollgate_bin built".into(),
            built.format("%Y-%m-%d %H:%M UTC").to_string(),
        );
    }
    meta
}

/// Tracks other work on the machine phase by phase.
#[derive(Default)]
struct Phase {
    current: Option<(String, crate::procs::Foreign)>,
}

impl Phase {
    fn next(&mut self, results: &mut Results, name: &str) {
        if let Some((previous, foreign)) = self.current.take() {
            results.other_work.push((previous, foreign.cores()));
        }
        if !name.is_empty() {
            self.current = Some((name.to_owned(), crate::procs::Foreign::start()));
        }
    }
}

/// The 1, 5 and 15 minute load averages: other work on the machine shows here.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "machine".into())
}

/// The binaries a run starts, and the profile they were built with.
struct Binaries {
    /// Where `mock-provider` and `floor-proxy` are: next to this binary.
    dir: PathBuf,
    tollgate: PathBuf,
    release: bool,
}

/// Builds the binaries unless told not to, and finds the `tollgate` binary to measure.
fn binaries(options: &Options) -> anyhow::Result<Binaries> {
    let dir = std::env::current_exe()?
        .parent()
        .context("the binary's directory")?
        .to_owned();
    // The profile this binary was built with is the one it builds and measures.
    let release = !cfg!(debug_assertions);
    if !options.no_build {
        build(release)?;
    }
    let tollgate = options
        .tollgate_bin
        .clone()
        .unwrap_or_else(|| dir.join("tollgate"));
    if !tollgate.exists() {
        bail!("no tollgate binary at {}", tollgate.display());
    }
    if !release && !options.smoke {
        eprintln!(
            "loadtest: WARNING: a debug build; run with --release for figures that mean anything"
        );
    }
    Ok(Binaries {
        dir,
        tollgate,
        release,
    })
}

/// The results of a run before any phase: the machine, the build and where the logs go.
fn first_results(plan: &Plan, bins: &Binaries, run_dir: &Path) -> Results {
    let mut results = Results {
        meta: machine_meta(plan, &bins.tollgate),
        ..Default::default()
    };
    results.meta.insert(
        "build".into(),
        if bins.release { "release" } else { "debug" }.into(),
    );
    results
        .meta
        .insert("logs".into(), run_dir.display().to_string());
    if results.meta.get("dirty").is_some_and(|d| d == "true") {
        results.notes.push(
            "The working tree had uncommitted changes: the binaries measured include them, so `commit` alone does not identify the code."
                .into(),
        );
    }
    results
}

/// Starts a floor-proxy in front of `upstream`, logging to `log` in `run_dir`.
fn floor_proxy(
    bins: &Binaries,
    name: &str,
    upstream: &str,
    run_dir: &Path,
    log: &str,
) -> anyhow::Result<Proc> {
    let mut command = Command::new(bins.dir.join("floor-proxy"));
    command.args(["--upstream", upstream, "--workers", "2"]);
    Proc::spawn(name, command, &run_dir.join(log), true)
}

/// Installs LiteLLM and starts it with one and with two workers; what fails becomes a note.
async fn start_litellms(
    options: &Options,
    mock: &str,
    run_dir: &Path,
    results: &mut Results,
) -> anyhow::Result<Vec<LiteLlm>> {
    let mut litellms = Vec::new();
    if options.no_litellm {
        results.notes.push("LiteLLM skipped (--no-litellm).".into());
        return Ok(litellms);
    }
    let python = options.python.clone();
    match tokio::task::spawn_blocking(move || litellm::install(&python)).await? {
        Ok(version) => {
            results.meta.insert("litellm".into(), version);
            for workers in [1, 2] {
                match litellm::start(mock, workers, run_dir).await {
                    Ok(l) => litellms.push(l),
                    Err(e) => results.notes.push(format!(
                        "LiteLLM with {workers} worker(s) did not start: {e:#}"
                    )),
                }
            }
        }
        Err(e) => results.notes.push(format!(
            "LiteLLM could not be installed, so it is not measured: {e:#}"
        )),
    }
    Ok(litellms)
}

/// A target served by one process, which is both its own and its whole.
fn single<'a>(name: &'static str, authority: &str, auth: String, proc: &'a Proc) -> Target<'a> {
    Target {
        name,
        authority: authority.to_owned(),
        auth,
        main: proc,
        all: vec![proc],
    }
}

/// A LiteLLM proxy as a target, named by its worker count.
fn litellm_target(l: &LiteLlm) -> Target<'_> {
    let name = if l.workers > 1 { LITELLM_2W } else { LITELLM };
    single(
        name,
        &l.addr,
        format!("Bearer {}", litellm::MASTER_KEY),
        &l.proc,
    )
}

/// Every target measured under load: direct, floor-proxy, Tollgate in both shapes and each
/// LiteLLM.
fn load_targets<'a>(
    mock: &'a Proc,
    floor: &'a Proc,
    stack: &'a Stack,
    up: &'a Embedded,
    litellms: &'a [LiteLlm],
) -> Vec<Target<'a>> {
    let edge = &stack.edges[0];
    let mut targets = vec![
        single(DIRECT, &mock.addr, DIRECT_AUTH.into(), mock),
        single(FLOOR, &floor.addr, DIRECT_AUTH.into(), floor),
        Target {
            name: TOLLGATE,
            authority: edge.addr.clone(),
            auth: stack.key.clone(),
            main: &edge.proc,
            all: stack.processes(),
        },
        single(TOLLGATE_UP, &up.addr, up.key.clone(), &up.proc),
    ];
    targets.extend(litellms.iter().map(litellm_target));
    targets
}

/// The phases under load: concurrency 1, features, open-loop rates, streams and CPU.
async fn load_phases(
    plan: &Plan,
    targets: &[Target<'_>],
    phase: &mut Phase,
    results: &mut Results,
) -> anyhow::Result<()> {
    let all: Vec<&Target> = targets.iter().collect();
    let ours: Vec<&Target> = targets.iter().filter(|t| !t.is_litellm()).collect();
    let theirs: Vec<&Target> = targets.iter().filter(|t| t.is_litellm()).collect();
    eprintln!("loadtest: concurrency 1");
    phase.next(results, "concurrency 1");
    suite::concurrency_one(plan, &all, results).await?;
    if let Some(tollgate) = targets.iter().find(|t| t.name == suite::TOLLGATE) {
        eprintln!("loadtest: concurrency 1 with Tollgate's other roles stopped");
        suite::concurrency_one_alone(plan, tollgate, results).await?;
        eprintln!("loadtest: guardrail and cache at concurrency 1");
        phase.next(results, "features");
        suite::features(plan, tollgate, results).await?;
    }
    eprintln!("loadtest: open-loop rates and the throughput ladder");
    phase.next(results, "open-loop rates");
    open_loop(plan, &ours, &theirs, results).await?;
    eprintln!("loadtest: streams");
    phase.next(results, "streams");
    // The stream rounds and the stall check ask the same of both of Tollgate's shapes (the
    // relay is one code path): the distributed one stands for both.
    let streamed: Vec<&Target> = all
        .iter()
        .copied()
        .filter(|t| t.name != TOLLGATE_UP)
        .collect();
    results.streams = suite::streams(
        &streamed,
        "chat",
        plan.stream_concurrency,
        plan.stream_round,
        plan.stream_reps,
    )
    .await?;
    if let Some(tollgate) = targets.iter().find(|t| t.name == suite::TOLLGATE) {
        eprintln!("loadtest: streams with Tollgate's other roles stopped");
        suite::streams_alone(plan, tollgate, results).await?;
    }
    let best_litellm = theirs.iter().copied().filter(|t| t.name == LITELLM_2W);
    let distributed = ours.iter().copied().filter(|t| t.name != TOLLGATE_UP);
    let stall_targets: Vec<&Target> = distributed.chain(best_litellm).collect();
    results.stall = suite::streams(
        &stall_targets,
        "slow",
        plan.stall_concurrency,
        plan.stall_round,
        1,
    )
    .await?;
    eprintln!("loadtest: CPU per request");
    phase.next(results, "CPU per request");
    let cpu_targets: Vec<&Target> = stall_targets
        .iter()
        .copied()
        .chain(ours.iter().copied().filter(|t| t.name == TOLLGATE_UP))
        .collect();
    suite::cpu(plan, &cpu_targets, results).await
}

/// The open-loop rounds: our targets up the ladder and at the fixed rates, LiteLLM on its own.
async fn open_loop(
    plan: &Plan,
    ours: &[&Target<'_>],
    theirs: &[&Target<'_>],
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut rates: Vec<f64> = plan
        .ladder
        .iter()
        .chain(&plan.fixed_rates)
        .copied()
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    suite::ladder(
        plan,
        ours,
        &rates,
        &plan.fixed_rates,
        plan.round,
        suite::LADDER_P99_MS,
        results,
    )
    .await?;
    if !theirs.is_empty() {
        suite::ladder(
            plan,
            theirs,
            &plan.litellm_ladder,
            &[],
            plan.litellm_round,
            1_000.0,
            results,
        )
        .await?;
    }
    Ok(())
}

/// Memory with held streams, on a fresh floor-proxy and a fresh edge (and LiteLLM as it is).
async fn memory_phase(
    plan: &Plan,
    bins: &Binaries,
    mock: &Proc,
    run_dir: &Path,
    stack: &mut Stack,
    litellms: &[LiteLlm],
    results: &mut Results,
) -> anyhow::Result<()> {
    // Memory on processes that have served no load yet: a process that has just run at its
    // limit keeps the memory of its queues, which says nothing about what a stream costs.
    stack.add_edge().await?;
    let fresh_floor = floor_proxy(
        bins,
        "floor-proxy (fresh)",
        &mock.addr,
        run_dir,
        "floor-fresh.log",
    )?;
    let Some(fresh_edge) = stack.edges.last() else {
        bail!("no edge")
    };
    let mut held = vec![
        single(FLOOR, &fresh_floor.addr, DIRECT_AUTH.into(), &fresh_floor),
        single(
            TOLLGATE,
            &fresh_edge.addr,
            stack.key.clone(),
            &fresh_edge.proc,
        ),
    ];
    held.extend(
        litellms
            .iter()
            .filter(|l| l.workers > 1)
            .map(litellm_target),
    );
    let held: Vec<&Target> = held.iter().collect();
    suite::memory(plan, &held, results).await?;
    if !litellms.is_empty() {
        results.notes.push("LiteLLM's memory is measured on the process that ran its load rounds (restarting it costs a minute); Tollgate's and floor-proxy's on fresh processes.".into());
    }
    Ok(())
}

/// Runs the suite and returns the report's path.
pub async fn run(options: Options) -> anyhow::Result<PathBuf> {
    if let Some(json) = &options.render {
        let text =
            std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run's figures", json.display()))?;
        let dir = json.parent().unwrap_or(Path::new("."));
        return report::write(&results, dir);
    }
    let plan = if options.smoke {
        Plan::smoke()
    } else if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let bins = binaries(&options)?;
    let run_dir = std::env::temp_dir().join(format!(
        "tollgate-loadtest-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    ));
    std::fs::create_dir_all(&run_dir)?;
    eprintln!("loadtest: {} run, logs in {}", plan.mode, run_dir.display());
    let mut results = first_results(&plan, &bins, &run_dir);

    let infra = infra().await?;
    let mut mock_cmd = Command::new(bins.dir.join("mock-provider"));
    mock_cmd.args(["--chunks", "16", "--chunk-delay-ms", "5", "--workers", "1"]);
    let mock = Proc::spawn("mock-provider", mock_cmd, &run_dir.join("mock.log"), true)?;
    let floor = floor_proxy(&bins, "floor-proxy", &mock.addr, &run_dir, "floor.log")?;
    eprintln!("loadtest: starting Tollgate (control plane, edge, aggregator)");
    let mut stack = Stack::start(&bins.tollgate, &infra, 1, &mock.addr, &run_dir).await?;
    eprintln!("loadtest: starting tollgate up (every role in one process)");
    let up = Embedded::start(&bins.tollgate, &mock.addr, &run_dir).await?;
    let litellms = start_litellms(&options, &mock.addr, &run_dir, &mut results).await?;

    let mut phase = Phase::default();
    {
        let targets = load_targets(&mock, &floor, &stack, &up, &litellms);
        suite::sanity(&targets, &mut results.notes).await?;
        load_phases(&plan, &targets, &mut phase, &mut results).await?;
    }

    eprintln!("loadtest: memory with held streams (fresh floor-proxy and edge)");
    phase.next(&mut results, "memory");
    memory_phase(
        &plan,
        &bins,
        &mock,
        &run_dir,
        &mut stack,
        &litellms,
        &mut results,
    )
    .await?;
    drop(litellms);
    // `tollgate up` stays for the scheduler trace, which asks it too: with no NATS at all, it
    // tells the edge's own scheduling from what the usage path's servers do to it.

    eprintln!("loadtest: policy propagation across 3 edges");
    phase.next(&mut results, "propagation");
    results.propagation = Some(propagation::run(&mut stack, &plan).await?);

    eprintln!("loadtest: CPU per request with request traces, and with request log lines");
    phase.next(&mut results, "CPU with telemetry");
    suite::telemetry_cpu(&plan, &mut stack, &mock.addr, &mut results).await?;

    if options.profile && !options.smoke && report::latency_missed(&results) {
        eprintln!("loadtest: a target was missed: profiling the edge under load");
        let edge = &stack.edges[0];
        let traced = [
            single(TOLLGATE, &edge.addr, stack.key.clone(), &edge.proc),
            single(FLOOR, &floor.addr, DIRECT_AUTH.into(), &floor),
            single(TOLLGATE_UP, &up.addr, up.key.clone(), &up.proc),
        ];
        match crate::profile::perf(&traced[0], &run_dir).await {
            Ok(summary) => results.profile = Some(summary),
            Err(e) => results.notes.push(format!("No profile: {e:#}")),
        }
        eprintln!("loadtest: tracing the scheduler at concurrency 1");
        for target in &traced {
            match crate::stalls::trace(target, &mock, &run_dir).await {
                Ok(stalls) => {
                    results.stalls.insert(target.name.to_owned(), stalls);
                }
                Err(e) => results
                    .notes
                    .push(format!("No scheduler trace of {}: {e:#}", target.name)),
            }
        }
    }
    drop(up);
    drop(stack);
    drop(floor);
    drop(mock);

    phase.next(&mut results, "");
    results
        .meta
        .insert("load average at end".into(), load_average());
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    report::write(&results, &out_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_named_alike_are_told_apart_by_their_vector_extensions() {
        let cpuinfo =
            |flags: &str| format!("model name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n");
        assert_eq!(cpu_label(&cpuinfo("avx2 avx512f")), "AMD EPYC (AVX-512)");
        assert_eq!(cpu_label(&cpuinfo("avx2")), "AMD EPYC (AVX2)");
        assert_eq!(cpu_label(&cpuinfo("")), "AMD EPYC");
        assert_eq!(cpu_label(""), "");
    }
}
