//! The report's sections on streams, memory, CPU and policy propagation.

use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{self, Chart, Series};
use crate::results::{Pct, Results};
use crate::suite::{DIRECT, TOLLGATE};
use crate::verdict::{fmt_us, rss_at};

const PCT_NAMES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

fn pct_points(p: &Pct, scale: f64) -> Vec<(f64, f64)> {
    [p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64, v / scale))
        .collect()
}

fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn header(out: &mut String, cells: &[&str]) {
    row(
        out,
        &cells.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>(),
    );
    row(
        out,
        &cells.iter().map(|_| "---".to_owned()).collect::<Vec<_>>(),
    );
}

pub fn streams_memory_cpu(
    out: &mut String,
    r: &Results,
    dir: &Path,
    chart: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    let _ = writeln!(
        out,
        "\n## 3. Streams: time to first token and per-chunk delay\n"
    );
    let _ = writeln!(
        out,
        "Closed loop of streaming chat requests (16 chunks, 5 ms apart). TTFT = send to first content chunk. Chunk delay = arrival minus the mock's wall-clock stamp in each chunk: the time a chunk spends between the mock and the client.\n"
    );
    header(
        out,
        &[
            "target",
            "streams",
            "stalled",
            "errors",
            "TTFT p50",
            "TTFT p99",
            "added TTFT p99",
            "chunk delay p50",
            "chunk delay p99",
            "added chunk p99",
        ],
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
                d.map_or("—".into(), |d| {
                    format!("{:+.1} µs", s.ttft.p99_us - d.ttft.p99_us)
                }),
                fmt_us(s.chunk_delay.p50_us),
                fmt_us(s.chunk_delay.p99_us),
                d.map_or("—".into(), |d| {
                    format!("{:+.1} µs", s.chunk_delay.p99_us - d.chunk_delay.p99_us)
                }),
            ],
        );
    }
    let series: Vec<Series> = r
        .streams
        .iter()
        .map(|(n, s)| Series {
            name: n.clone(),
            points: pct_points(&s.ttft, 1.0),
        })
        .collect();
    charts::draw(
        &dir.join(chart("ttft")),
        &Chart {
            title: "Time to first token",
            x_desc: "percentile",
            y_desc: "µs (log)",
            log_x: false,
            log_y: true,
            x_names: Some(&PCT_NAMES),
            h_lines: &[],
        },
        &series,
    )?;
    let _ = writeln!(out, "\n![TTFT]({})", chart("ttft"));
    let _ = writeln!(
        out,
        "\n**Stall check**: many concurrent slow streams (chunks 100 ms apart); a stream stalls when a gap between chunks passes 1 s or it ends early.\n"
    );
    header(
        out,
        &[
            "target",
            "concurrency",
            "completed",
            "stalled",
            "errors",
            "TTFT p99",
            "chunk delay p99",
            "chunk delay max",
        ],
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

    let _ = writeln!(out, "\n## 4. Memory with idle streams held open\n");
    let _ = writeln!(
        out,
        "Streams that received their first chunk and then go idle, held through the target; resident memory (VmRSS of the process and its children) while they are held.\n"
    );
    header(
        out,
        &[
            "target",
            "idle",
            "held streams",
            "established",
            "failed",
            "RSS",
            "per stream",
            "fit at 10,000",
        ],
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
    charts::draw(
        &dir.join(chart("rss")),
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
    )?;
    let _ = writeln!(out, "\n![RSS]({})", chart("rss"));

    let _ = writeln!(out, "\n## 5. CPU time per request\n");
    let _ = writeln!(
        out,
        "utime + stime from `/proc/<pid>/stat` across an open-loop round, divided by the requests answered. `direct` is the mock's own cost. For Tollgate, *own* is the edge; *whole* adds the aggregator (usage ledger) and the control plane. `tollgate traced` is another edge exporting every request's trace (sampled at 100 %) over OTLP/HTTP to a collector that keeps nothing; `tollgate logged` another writing one JSON log line per request (`tollgate` itself logs warnings only).\n"
    );
    header(
        out,
        &[
            "target",
            "rate",
            "requests",
            "CPU / request (own)",
            "CPU / request (whole)",
        ],
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
            ],
        );
    }
    let _ = TOLLGATE;
    Ok(())
}

pub fn propagation(
    out: &mut String,
    r: &Results,
    dir: &Path,
    chart: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    let Some(p) = &r.propagation else {
        return Ok(());
    };
    let _ = writeln!(
        out,
        "\n## 6. Policy propagation across {} edges\n",
        p.per_edge.len()
    );
    let _ = writeln!(
        out,
        "{} changes at {:.0} per second ({}), each from the admin API's answer (the commit acknowledged) until the edge's `/health/ready` showed that sequence applied. `/health/ready` was polled every {:.0} µs on average: that is the resolution.\n",
        p.changes,
        p.change_rate,
        p.kinds
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        p.poll_interval_us
    );
    header(out, &["edge", "changes seen", "p50", "p90", "p99", "max"]);
    for (i, e) in p.per_edge.iter().enumerate() {
        row(
            out,
            &[
                format!("edge-{i}"),
                e.count.to_string(),
                fmt_us(e.p50_us),
                fmt_us(e.p90_us),
                fmt_us(e.p99_us),
                fmt_us(e.max_us),
            ],
        );
    }
    row(
        out,
        &[
            "all".into(),
            p.all.count.to_string(),
            fmt_us(p.all.p50_us),
            fmt_us(p.all.p90_us),
            fmt_us(p.all.p99_us),
            fmt_us(p.all.max_us),
        ],
    );
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
    charts::draw(
        &dir.join(chart("propagation")),
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
    )?;
    let _ = writeln!(out, "\n![propagation]({})", chart("propagation"));
    Ok(())
}
