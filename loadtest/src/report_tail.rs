//! The report's sections on streams, memory, CPU and policy propagation.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::charts::{Chart, Series};
use crate::markdown::{
    Charts, PCT_NAMES, header, latency_chart, pct_points, pct_series, row, section,
};
use crate::results::{Cpu, Pct, Propagation, Results};
use crate::suite::DIRECT;
use crate::syscalls::Syscalls;
use crate::verdict::{fmt_us, rss_at};

/// What a stream figure adds over direct's, or a dash when direct was not measured.
fn added_us(t: f64, d: Option<f64>) -> String {
    d.map_or("—".into(), |d| format!("{:+.1} µs", t - d))
}

/// Section 3: time to first token and per-chunk delay on streams, with its chart.
pub fn streams(out: &mut String, r: &Results, charts: &Charts) -> anyhow::Result<()> {
    section(
        out,
        "3. Streams: time to first token and per-chunk delay",
        "Closed loop of streaming chat requests (16 chunks, 5 ms apart). TTFT = send to first content chunk. Chunk delay = arrival minus the mock's wall-clock stamp in each chunk: the time a chunk spends between the mock and the client. *tollgate, other roles stopped* is the same edge in a round of its own with its aggregator and control plane stopped: what their work on the shared cores adds.",
    );
    header(
        out,
        "target | streams | stalled | errors | TTFT p50 | TTFT p99 | added TTFT p99 | chunk delay p50 | chunk delay p99 | added chunk p99",
    );
    let d = r.streams.get(DIRECT);
    for (name, s) in &r.streams {
        row(
            out,
            &[
                format!("{name} (c{})", s.concurrency),
                s.completed.to_string(),
                s.stalled.to_string(),
                s.errors.to_string(),
                fmt_us(s.ttft.p50_us),
                fmt_us(s.ttft.p99_us),
                added_us(s.ttft.p99_us, d.map(|d| d.ttft.p99_us)),
                fmt_us(s.chunk_delay.p50_us),
                fmt_us(s.chunk_delay.p99_us),
                added_us(s.chunk_delay.p99_us, d.map(|d| d.chunk_delay.p99_us)),
            ],
        );
    }
    rounds(out, r);
    let series = pct_series(&r.streams, |s| &s.ttft);
    let chart = latency_chart("Time to first token");
    charts.draw(out, "ttft", "TTFT", &chart, &series)
}

/// TTFT p99 round by round, with the median the verdict reads and what the machine spent per
/// stream: a p99 over all rounds follows the worst one, and the spread says how far one
/// round's figure can be trusted.
pub(crate) fn rounds(out: &mut String, r: &Results) {
    let with_rounds = || {
        r.streams
            .iter()
            .filter(|(_, s)| s.ttft_p99_of_rounds().is_some())
    };
    if with_rounds().next().is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "\n**TTFT p99 round by round.** Each round's p99 on its own, in the order run; the verdict reads their median, which one outlying round does not move. *Machine CPU per stream* is every process on the machine (generator, mock, the target and the servers it uses) during the target's rounds. *Stolen* is the time the hypervisor ran something else while the machine's vCPUs had work, round by round (in 10 ms steps).\n"
    );
    header(
        out,
        "target | rounds' TTFT p99 | median | added median | machine CPU per stream | cores busy | stolen",
    );
    let direct = r.streams.get(DIRECT).map(|d| d.ttft_p99_us());
    for (name, s) in with_rounds() {
        let each: Vec<String> = s.round_ttft_p99_us.iter().map(|&us| fmt_us(us)).collect();
        row(
            out,
            &[
                name.clone(),
                each.join(", "),
                fmt_us(s.ttft_p99_us()),
                added_us(s.ttft_p99_us(), direct),
                s.machine_us_per_stream
                    .map_or("—".into(), |us| format!("{us:.0} µs")),
                s.machine_cores.map_or("—".into(), |c| format!("{c:.2}")),
                if s.round_steal_ms.is_empty() {
                    "—".into()
                } else {
                    let each: Vec<String> = s
                        .round_steal_ms
                        .iter()
                        .map(|ms| format!("{ms:.0}"))
                        .collect();
                    format!("{} ms", each.join(", "))
                },
            ],
        );
    }
}

/// The stall check: many slow streams at once, and how many of them stalled.
pub fn stalls(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "\n**Stall check**: many concurrent slow streams (chunks 100 ms apart); a stream stalls when a gap between chunks passes 1 s or it ends early.\n"
    );
    header(
        out,
        "target | concurrency | completed | stalled | errors | TTFT p99 | chunk delay p99 | chunk delay max",
    );
    for (name, s) in &r.stall {
        row(
            out,
            &[
                name.clone(),
                s.concurrency.to_string(),
                s.completed.to_string(),
                s.stalled.to_string(),
                s.errors.to_string(),
                fmt_us(s.ttft.p99_us),
                fmt_us(s.chunk_delay.p99_us),
                fmt_us(s.chunk_delay.max_us),
            ],
        );
    }
}

/// Section 4: resident memory with idle streams held open, with its chart.
pub fn memory(out: &mut String, r: &Results, charts: &Charts) -> anyhow::Result<()> {
    section(
        out,
        "4. Memory with idle streams held open",
        "Streams that received their first chunk and then go idle, held through the target; resident memory (VmRSS of the process and its children) while they are held.",
    );
    header(
        out,
        "target | idle | held streams | established | failed | RSS | per stream | fit at 10,000",
    );
    for (name, m) in &r.memory {
        for p in &m.points {
            let per = (p.rss_bytes as f64 - m.idle_rss_bytes as f64) / p.established.max(1) as f64;
            row(
                out,
                &[
                    name.clone(),
                    format!("{:.1} MB", m.idle_rss_bytes as f64 / 1e6),
                    p.streams.to_string(),
                    p.established.to_string(),
                    p.failed.to_string(),
                    format!("{:.1} MB", p.rss_bytes as f64 / 1e6),
                    format!("{:.1} KB", per / 1e3),
                    rss_at(r, name, 10_000.0)
                        .map_or("—".into(), |b| format!("{:.0} MB", b / 1e6)),
                ],
            );
        }
    }
    let series: Vec<Series> = r
        .memory
        .iter()
        .map(|(n, m)| Series {
            name: n.clone(),
            points: std::iter::once((0.0, m.idle_rss_bytes as f64 / 1e6))
                .chain(
                    m.points
                        .iter()
                        .map(|p| (p.established as f64, p.rss_bytes as f64 / 1e6)),
                )
                .collect(),
        })
        .collect();
    charts.draw(
        out,
        "rss",
        "RSS",
        &Chart {
            title: "Resident memory with held streams",
            x_desc: "idle streams held",
            y_desc: "MB",
            log_x: false,
            log_y: false,
            x_names: None,
            h_lines: &[(300.0, "300 MB target at 10,000")],
        },
        &series,
    )
}

/// Section 5: CPU time per request, the target's own and its whole.
pub fn cpu(out: &mut String, r: &Results) {
    section(
        out,
        "5. CPU time per request",
        "utime + stime from `/proc/<pid>/stat` across an open-loop round, divided by the requests answered. `direct` is the mock's own cost. For Tollgate, *own* is the edge; *whole* adds the aggregator (usage ledger) and the control plane. `tollgate up` is the embedded shape: every role in one process, on SQLite and the in-process bus (its own is its whole). `tollgate traced` is another edge exporting every request's trace (sampled at 100 %) over OTLP/HTTP to a collector that keeps nothing; `tollgate logged` another writing one JSON log line per request (`tollgate` itself logs warnings only). *Machine* is the CPU of every process on the machine over the round (each from its own `/proc/<pid>/stat`), per request: the target with the generator, the mock and the servers it uses (NATS, PostgreSQL), so what one request costs this machine in all; the NATS and PostgreSQL servers' own share is beside it. *Waiting for a core* is the time the serving process's threads spent runnable but not running (`/proc/<pid>/task/*/schedstat`), per request: latency that is the machine's lack of a free core, not the target's work. *Wake-ups* are the voluntary context switches of the serving process's threads (`/proc/<pid>/task/*/status`) per request — each is a thread that went to sleep and had to be woken — and *preemptions* the involuntary ones. *System calls* are every entry of the serving process's threads into the kernel over the round (`perf stat` on the syscall tracepoints; — where `perf` could not count), per request.",
    );
    header(
        out,
        "target | rate | requests | CPU / request (own) | CPU / request (whole) | CPU / request (machine) | of which NATS / PostgreSQL | waiting for a core / request | wake-ups / request | preemptions / request | system calls / request",
    );
    for (name, c) in &r.cpu {
        row(
            out,
            &[
                name.clone(),
                format!("{:.0} RPS", c.rate),
                c.requests.to_string(),
                fmt_us(c.us_per_request),
                fmt_us(c.whole_us_per_request),
                c.machine_us_per_request
                    .map_or_else(|| "—".to_owned(), fmt_us),
                match (c.nats_us_per_request, c.postgres_us_per_request) {
                    (Some(n), Some(p)) => format!("{} / {}", fmt_us(n), fmt_us(p)),
                    _ => "—".to_owned(),
                },
                c.waited_us_per_request
                    .map_or_else(|| "—".to_owned(), fmt_us),
                per_request(c.wakeups_per_request),
                per_request(c.preemptions_per_request),
                per_request(c.syscalls_per_request()),
            ],
        );
    }
    syscall_kinds(out, r);
}

/// The system calls per request by kind, a column per target that was counted: which of
/// them a target makes that a bare forwarder does not.
fn syscall_kinds(out: &mut String, r: &Results) {
    let counted: Vec<(&String, &Cpu, &Syscalls)> = r
        .cpu
        .iter()
        .filter_map(|(name, c)| Some((name, c, c.syscalls.as_ref()?)))
        .collect();
    if counted.is_empty() {
        return;
    }
    let kinds: BTreeSet<&String> = counted
        .iter()
        .flat_map(|(_, c, s)| {
            s.by_kind
                .iter()
                .filter(|(_, n)| c.per_request(**n) >= 0.01)
                .map(|(kind, _)| kind)
        })
        .collect();
    let _ = writeln!(
        out,
        "\nSystem calls per request by kind (kinds under 0.01 per request everywhere are left out; *other* is the rest):\n"
    );
    let names: Vec<&str> = counted.iter().map(|(name, _, _)| name.as_str()).collect();
    header(out, &format!("system call | {}", names.join(" | ")));
    for kind in &kinds {
        let mut cells = vec![format!("`{kind}`")];
        for (_, c, s) in &counted {
            let n = s.by_kind.get(*kind).copied().unwrap_or(0);
            cells.push(format!("{:.2}", c.per_request(n)));
        }
        row(out, &cells);
    }
    let mut other = vec!["other".to_owned()];
    for (_, c, s) in &counted {
        let listed: u64 = kinds.iter().filter_map(|k| s.by_kind.get(*k)).sum();
        other.push(format!(
            "{:.2}",
            c.per_request(s.total.saturating_sub(listed))
        ));
    }
    row(out, &other);
}

/// A count per request to two decimals, or a dash where the run did not measure it.
fn per_request(count: Option<f64>) -> String {
    count.map_or_else(|| "—".to_owned(), |n| format!("{n:.2}"))
}

/// Section 6, when the run measured it: policy propagation per edge, revocation, and a chart.
pub fn propagation(out: &mut String, r: &Results, charts: &Charts) -> anyhow::Result<()> {
    let Some(p) = &r.propagation else {
        return Ok(());
    };
    propagation_table(out, p);
    let _ = writeln!(
        out,
        "\nRevocation of a key in use: from the revoke call's answer until that edge answered the key with 401 (requests sent back to back): p50 {}, p99 {}, max {} over {} edge observations; {} failures; {} requests served by an edge after it reported the revocation applied.",
        fmt_us(p.revocation.p50_us),
        fmt_us(p.revocation.p99_us),
        fmt_us(p.revocation.max_us),
        p.revocation.count,
        p.revocation_failures,
        p.revocation_violations
    );
    let series: Vec<Series> = p
        .per_edge
        .iter()
        .enumerate()
        .map(|(i, e)| Series {
            name: format!("edge-{i}"),
            points: pct_points(e, 1_000.0),
        })
        .collect();
    charts.draw(
        out,
        "propagation",
        "propagation",
        &Chart {
            title: "Commit to applied, per edge",
            x_desc: "percentile",
            y_desc: "ms",
            log_x: false,
            log_y: false,
            x_names: Some(&PCT_NAMES),
            h_lines: &[(100.0, "100 ms target (p99)")],
        },
        &series,
    )
}

/// What the propagation run changed, and commit-to-applied per edge and over all edges.
fn propagation_table(out: &mut String, p: &Propagation) {
    let kinds: Vec<String> = p.kinds.iter().map(|(k, v)| format!("{v} {k}")).collect();
    section(
        out,
        &format!("6. Policy propagation across {} edges", p.per_edge.len()),
        &format!(
            "{} changes at {:.0} per second ({}), each from the admin API's answer (the commit acknowledged) until the edge's `/health/ready` showed that sequence applied. `/health/ready` was polled every {:.0} µs on average: that is the resolution.",
            p.changes,
            p.change_rate,
            kinds.join(", "),
            p.poll_interval_us
        ),
    );
    header(out, "edge | changes seen | p50 | p90 | p99 | max");
    for (i, e) in p.per_edge.iter().enumerate() {
        latency_row(out, format!("edge-{i}"), e);
    }
    latency_row(out, "all".into(), &p.all);
}

/// One row of the propagation table: how many changes were seen, and how fast.
fn latency_row(out: &mut String, label: String, e: &Pct) {
    row(
        out,
        &[
            label,
            e.count.to_string(),
            fmt_us(e.p50_us),
            fmt_us(e.p90_us),
            fmt_us(e.p99_us),
            fmt_us(e.max_us),
        ],
    );
}
