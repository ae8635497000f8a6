//! Why some requests at concurrency 1 are slow. A target is asked again, one request at a time,
//! while `perf` records the scheduler's events on every core (`sched_switch`, `sched_wakeup`).
//! For each request over [`SLOW`], the trace tells whether a thread serving it (the
//! generator's, the target's or the mock's) was ready to run but had no core, and which
//! processes held the core meanwhile: the target's own work, or other work on shared cores
//! (PostgreSQL, NATS, the aggregator) that a deployment would run elsewhere. For the typical
//! request, the same trace splits its time into the target's work before the upstream call,
//! the upstream's turn and the target's work on the answer, and tells whether the scheduler ran
//! the target's thread on the core that woke it or woke another core for it.

// perf stamps its trace with CLOCK_MONOTONIC (`-k CLOCK_MONOTONIC`); std's `Instant` reads that
// clock but does not show its value, so the generator reads it through libc.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::load::{self, Shot};
use crate::procs::Proc;
use crate::results::{Hops, Stalls, median};
use crate::suite::{Target, chat_body};

/// A request slower than this is looked into.
pub const SLOW: Duration = Duration::from_millis(1);
/// A wait for a core this long or longer counts as the reason a request was slow.
pub const WAIT: Duration = Duration::from_micros(500);
/// Requests sent while the scheduler is traced.
const REQUESTS: u64 = 10_000;
const TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before tracing.
const SETTLE: Duration = Duration::from_secs(3);

/// Sends `REQUESTS` sequential chat requests to `target` while tracing the scheduler; the
/// threads serving a request are the target's, the `mock`'s and this process's (the
/// generator). The trace stays in `dir` as `sched-<target>.perf.data`.
pub async fn trace(target: &Target<'_>, mock: &Proc, dir: &Path) -> anyhow::Result<Stalls> {
    crate::profile::ensure_perf()?;
    // Work queued by the phase before (usage still being written) is not this trace's.
    tokio::time::sleep(SETTLE).await;
    let data = dir.join(format!("sched-{}.perf.data", target.name));
    let mut record = Command::new("perf")
        .args(["record", "-a", "-k", "CLOCK_MONOTONIC"])
        .args(["-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    // perf needs a moment to open its events on every core.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shot = target.shot(chat_body("chat", false));
    let sent = tokio::task::spawn_blocking(move || sequential(&shot)).await?;
    let _ = Command::new("kill")
        .args(["-INT", &record.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || record.wait()).await??;
    let sent = sent?;
    let slow: Vec<Window> = sent
        .iter()
        .copied()
        .filter(|&(_, took)| took > SLOW.as_nanos() as u64)
        .collect();
    // perf ends on the interrupt it was sent, by exiting or by the signal itself.
    anyhow::ensure!(
        status.success() || status.signal() == Some(libc::SIGINT),
        "perf record failed ({status}); perf_event_paranoid may forbid tracing"
    );
    let script = Command::new("perf")
        .args(["script", "--ns", "-F", "tid,cpu,time,event,trace", "-i"])
        .arg(&data)
        .output()
        .context("perf script")?;
    let events: Vec<Event> = String::from_utf8_lossy(&script.stdout)
        .lines()
        .filter_map(Event::parse)
        .collect();
    anyhow::ensure!(!events.is_empty(), "the scheduler trace was empty");
    let roles = Roles {
        target: threads_of(target.main.pid()).into_iter().collect(),
        upstream: threads_of(mock.pid()).into_iter().collect(),
        generator: threads_of(std::process::id()).into_iter().collect(),
    };
    let threads: HashSet<u32> = roles.all().collect();
    let found = attribute(&events, &slow, &threads, WAIT.as_nanos() as u64);
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, ns) in &found.held_ns {
        *held.entry(process_of(*tid)).or_default() += ns;
    }
    let total = held.values().sum::<u64>().max(1) as f64;
    let mut held_by: Vec<(String, f64)> = held
        .into_iter()
        .map(|(name, ns)| (name, ns as f64 / total))
        .collect();
    held_by.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Stalls {
        requests: REQUESTS,
        slow: slow.len() as u64,
        waited: found.waited,
        held_by,
        hops: hops(&events, &sent, &roles),
    })
}

/// A request's start on CLOCK_MONOTONIC and its duration, in nanoseconds.
type Window = (u64, u64);

/// `REQUESTS` sequential requests (after a warm-up).
fn sequential(shot: &Shot) -> anyhow::Result<Vec<Window>> {
    load::runtime()?.block_on(async {
        let client = load::client();
        let mut sent = Vec::new();
        for i in 0..REQUESTS + REQUESTS / 10 {
            let start = monotonic_ns();
            load::send_one(&client, shot, TIMEOUT)
                .await
                .map_err(|e| anyhow::anyhow!("a traced request failed: {e}"))?;
            let took = monotonic_ns().saturating_sub(start);
            if i >= REQUESTS / 10 {
                sent.push((start, took));
            }
        }
        Ok(sent)
    })
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The threads of `pid` now.
fn threads_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// The process a thread belongs to, by name: `tollgate aggregator`, `postgres`, `nats-server`.
fn process_of(tid: u32) -> String {
    if tid == 0 {
        return "idle".into();
    }
    let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        });
    let Some(tgid) = tgid else {
        return "a thread that has exited".into();
    };
    if tgid == std::process::id() {
        return "load generator".into();
    }
    // The executable's name, which PostgreSQL's retitled backends keep.
    let name = std::fs::read_to_string(format!("/proc/{tgid}/comm")).map_or_else(
        |_| "a thread that has exited".into(),
        |c| c.trim().to_owned(),
    );
    if name != "tollgate" {
        return name;
    }
    // Every role is the same binary: the role names the process.
    let cmdline = std::fs::read(format!("/proc/{tgid}/cmdline")).unwrap_or_default();
    let role = cmdline
        .split(|&b| b == 0)
        .nth(1)
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .unwrap_or_default();
    format!("tollgate {role}")
}

/// One scheduler event of `perf script -F tid,cpu,time,event,trace --ns`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Event {
    ns: u64,
    cpu: u32,
    /// The thread on `cpu` when the event was recorded (0: the core was idle, as when another
    /// core's wake-up reaches it by interrupt).
    by: u32,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `tid` became runnable on `cpu`.
    Wakeup { tid: u32, cpu: u32 },
    /// The core switched from `prev` to `next`; `preempted` when `prev` was still runnable.
    Switch {
        prev: u32,
        preempted: bool,
        next: u32,
    },
}

impl Event {
    /// `  18139 [000]  1931.688404123: sched:sched_wakeup: comm=… pid=17174 prio=120 target_cpu=001`
    fn parse(line: &str) -> Option<Event> {
        let mut parts = line.split_whitespace();
        let by = parts.next()?.parse().ok()?;
        let cpu = parts.next()?.trim_matches(['[', ']']).parse().ok()?;
        let ns = timestamp_ns(parts.next()?.trim_end_matches(':'))?;
        let event = parts.next()?;
        let trace = line.split_once(event)?.1;
        let kind = match event {
            "sched:sched_wakeup:" => Kind::Wakeup {
                tid: field(trace, "pid=")?.parse().ok()?,
                cpu: field(trace, "target_cpu=")?.parse().ok()?,
            },
            "sched:sched_switch:" => Kind::Switch {
                prev: field(trace, "prev_pid=")?.parse().ok()?,
                preempted: field(trace, "prev_state=")?.starts_with('R'),
                next: field(trace, "next_pid=")?.parse().ok()?,
            },
            _ => return None,
        };
        Some(Event { ns, cpu, by, kind })
    }
}

/// `1931.688404123` in nanoseconds.
fn timestamp_ns(text: &str) -> Option<u64> {
    let (secs, frac) = text.split_once('.')?;
    let frac = format!("{frac:0<9}");
    Some(secs.parse::<u64>().ok()? * 1_000_000_000 + frac.get(..9)?.parse::<u64>().ok()?)
}

/// The value of `key` in a trace's `key=value` list (a key preceded by a space, so `pid=` is
/// not found inside `prev_pid=`).
fn field<'t>(trace: &'t str, key: &str) -> Option<&'t str> {
    let at = trace.match_indices(key).find(|(i, _)| {
        *i == 0
            || trace
                .as_bytes()
                .get(i - 1)
                .is_some_and(u8::is_ascii_whitespace)
    })?;
    trace[at.0 + key.len()..].split_whitespace().next()
}

/// The threads serving a request, by process.
struct Roles {
    target: HashSet<u32>,
    upstream: HashSet<u32>,
    generator: HashSet<u32>,
}

impl Roles {
    fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.target
            .iter()
            .chain(&self.upstream)
            .chain(&self.generator)
            .copied()
    }
}

/// The steps of each request in `windows`, found in `events` (in time order): the target's
/// thread takes a core, the upstream's is woken, the upstream's goes to sleep, the generator's
/// is woken. Requests where the trace lacks a step are left out.
fn hops(events: &[Event], windows: &[Window], roles: &Roles) -> Option<Hops> {
    let mut spans: [Vec<u64>; 3] = Default::default();
    let (mut woken, mut beside) = (0u64, 0u64);
    for &(start, took) in windows {
        let from = events.partition_point(|e| e.ns < start);
        let to = events.partition_point(|e| e.ns <= start + took);
        let mut steps: [Option<u64>; 4] = [None; 4];
        for e in &events[from..to] {
            if let Kind::Wakeup { tid, cpu } = e.kind
                && roles.target.contains(&tid)
            {
                woken += 1;
                if e.by != 0 && cpu == e.cpu {
                    beside += 1;
                }
            }
            let Some(step) = steps.iter().position(Option::is_none) else {
                continue;
            };
            let reached = match e.kind {
                Kind::Switch { next, .. } if step == 0 => roles.target.contains(&next),
                Kind::Wakeup { tid, .. } if step == 1 => roles.upstream.contains(&tid),
                // The upstream's thread sleeps (not preempted): its answer is written.
                Kind::Switch {
                    prev,
                    preempted: false,
                    ..
                } if step == 2 => roles.upstream.contains(&prev),
                Kind::Wakeup { tid, .. } if step == 3 => roles.generator.contains(&tid),
                _ => false,
            };
            if reached {
                steps[step] = Some(e.ns);
            }
        }
        if let [Some(a), Some(b), Some(c), Some(d)] = steps {
            for (span, took) in spans.iter_mut().zip([b - a, c - b, d - c]) {
                span.push(took);
            }
        }
    }
    let median_us = |v: &[u64]| {
        let micros: Vec<f64> = v.iter().map(|&ns| ns as f64 / 1_000.0).collect();
        median(&micros).unwrap_or_default()
    };
    let [to_upstream, upstream, back] = &spans;
    if to_upstream.is_empty() {
        return None;
    }
    Some(Hops {
        requests: to_upstream.len() as u64,
        to_upstream_us: median_us(to_upstream),
        upstream_us: median_us(upstream),
        back_us: median_us(back),
        beside_waker: beside as f64 / woken.max(1) as f64,
    })
}

/// What the trace says about the slow requests.
#[derive(Debug, Default, PartialEq)]
struct Found {
    /// Slow requests during which a thread of the chain waited `wait_ns` or longer for a core.
    waited: u64,
    /// Nanoseconds each thread held a core that a waiting thread of the chain was queued on.
    held_ns: HashMap<u32, u64>,
}

/// Finds, in `events` (in time order), the waits for a core of the `chain`'s threads during each
/// slow request (`slow`), and who ran on the core meanwhile.
fn attribute(events: &[Event], slow: &[Window], chain: &HashSet<u32>, wait_ns: u64) -> Found {
    // (cpu, from, to, tid): who ran where, and when each chain thread waited on which core.
    let mut ran: Vec<(u32, u64, u64, u32)> = Vec::new();
    let mut waits: Vec<(u32, u64, u64)> = Vec::new();
    let mut on_cpu: HashMap<u32, (u64, u32)> = HashMap::new();
    let mut runnable: HashMap<u32, (u64, u32)> = HashMap::new();
    for e in events {
        match e.kind {
            Kind::Wakeup { tid, cpu } if chain.contains(&tid) => {
                runnable.entry(tid).or_insert((e.ns, cpu));
            }
            Kind::Wakeup { .. } => {}
            Kind::Switch {
                prev,
                preempted,
                next,
            } => {
                if let Some((since, tid)) = on_cpu.insert(e.cpu, (e.ns, next)) {
                    ran.push((e.cpu, since, e.ns, tid));
                }
                if preempted && chain.contains(&prev) {
                    runnable.insert(prev, (e.ns, e.cpu));
                }
                if let Some((since, cpu)) = runnable.remove(&next) {
                    waits.push((cpu, since, e.ns));
                }
            }
        }
    }
    let mut found = Found::default();
    for &(start, took) in slow {
        let end = start + took;
        let long: Vec<(u32, u64, u64)> = waits
            .iter()
            .map(|&(cpu, from, to)| (cpu, from.max(start), to.min(end)))
            .filter(|&(_, from, to)| to > from && to - from >= wait_ns)
            .collect();
        if long.is_empty() {
            continue;
        }
        found.waited += 1;
        for (cpu, from, to) in long {
            for &(ran_cpu, a, b, tid) in &ran {
                let overlap = b.min(to).saturating_sub(a.max(from));
                if ran_cpu == cpu && overlap > 0 {
                    *found.held_ns.entry(tid).or_default() += overlap;
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\
    18139 [000]  1000.000100000: sched:sched_wakeup: comm=tokio-rt-worker pid=17174 prio=120 target_cpu=001
    0 [001]  1000.000105000: sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=postgres next_pid=900 next_prio=120
    18139 [000]  1000.000120000: sched:sched_switch: prev_comm=python3 prev_pid=18139 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
    900 [001]  1000.001900000: sched:sched_switch: prev_comm=postgres prev_pid=900 prev_prio=120 prev_state=S ==> next_comm=tokio-rt-worker next_pid=17174 next_prio=120
    17174 [001]  1000.001950000: sched:sched_wakeup: comm=mock pid=500 prio=120 target_cpu=001
    17174 [001]  1000.001960000: sched:sched_switch: prev_comm=tokio-rt-worker prev_pid=17174 prev_prio=120 prev_state=R+ ==> next_comm=mock next_pid=500 next_prio=120
    500 [001]  1000.001990000: sched:sched_switch: prev_comm=mock prev_pid=500 prev_prio=120 prev_state=S ==> next_comm=tokio-rt-worker next_pid=17174 next_prio=120";

    fn events() -> Vec<Event> {
        TRACE.lines().filter_map(Event::parse).collect()
    }

    #[test]
    fn perf_script_lines_are_read_as_wakeups_and_switches() {
        let e = events();
        assert_eq!(e.len(), 7);
        assert_eq!(
            e[0],
            Event {
                ns: 1_000_000_100_000,
                cpu: 0,
                by: 18139,
                kind: Kind::Wakeup { tid: 17174, cpu: 1 }
            }
        );
        assert_eq!(
            e[5].kind,
            Kind::Switch {
                prev: 17174,
                preempted: true,
                next: 500
            }
        );
        assert_eq!(Event::parse("not a trace line"), None);
    }

    #[test]
    fn a_chain_thread_queued_behind_another_process_is_blamed_on_it() {
        let chain: HashSet<u32> = [17174, 18139, 500].into();
        // The request from 1000.000050 to 1000.002050: the edge waited 1.8 ms behind postgres.
        let slow = [(1_000_000_050_000, 2_000_000)];
        let found = attribute(&events(), &slow, &chain, 500_000);
        assert_eq!(found.waited, 1);
        assert_eq!(found.held_ns.get(&900), Some(&1_795_000));
        // The edge's 30 µs behind the mock is too short to count.
        assert_eq!(found.held_ns.get(&500), None);
    }

    #[test]
    fn a_slow_request_without_a_long_wait_is_not_counted() {
        let chain: HashSet<u32> = [500].into();
        let found = attribute(
            &events(),
            &[(1_000_000_050_000, 2_000_000)],
            &chain,
            500_000,
        );
        assert_eq!(found, Found::default());
    }

    /// One request through a proxy (20) between a generator (10) and an upstream (30).
    const REQUEST: &str = "\
    10 [000]  1.000010000: sched:sched_wakeup: comm=proxy pid=20 prio=120 target_cpu=000
    10 [000]  1.000012000: sched:sched_switch: prev_comm=gen prev_pid=10 prev_prio=120 prev_state=S ==> next_comm=proxy next_pid=20 next_prio=120
    20 [000]  1.000040000: sched:sched_wakeup: comm=upstream pid=30 prio=120 target_cpu=001
    0 [001]  1.000041000: sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=upstream next_pid=30 next_prio=120
    0 [000]  1.000055000: sched:sched_wakeup: comm=proxy pid=20 prio=120 target_cpu=000
    30 [001]  1.000060000: sched:sched_switch: prev_comm=upstream prev_pid=30 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
    20 [000]  1.000090000: sched:sched_wakeup: comm=gen pid=10 prio=120 target_cpu=000";

    #[test]
    fn a_request_is_split_at_the_upstream_and_the_proxy_s_wake_ups_are_placed() {
        let events: Vec<Event> = REQUEST.lines().filter_map(Event::parse).collect();
        let roles = Roles {
            target: [20].into(),
            upstream: [30].into(),
            generator: [10].into(),
        };
        // The request from 1.000005 for 100 µs, and one the trace shows nothing of.
        let windows = [(1_000_005_000, 100_000), (2_000_000_000, 100_000)];
        let hops = hops(&events, &windows, &roles);
        assert_eq!(
            hops,
            Some(Hops {
                requests: 1,
                to_upstream_us: 28.0,
                upstream_us: 20.0,
                back_us: 30.0,
                // Once on the generator's core; once on a core the wake-up reached idle.
                beside_waker: 0.5,
            })
        );
        assert_eq!(super::hops(&events, &windows[1..], &roles), None);
    }
}
