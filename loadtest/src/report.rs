//! The report: `loadtest/results/<date>-<machine>.md` with its SVG charts and the raw figures
//! as JSON beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::charts::{self, Chart, Series};
use crate::results::{Pct, Results, Summary};
use crate::suite::{DIRECT, FLOOR, TOLLGATE};
use crate::verdict::{fmt_signed, fmt_us, litellm_best, rss_at, verdicts};

pub use crate::verdict::latency_missed;

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

fn added(t: f64, d: Option<f64>) -> String {
    d.map_or("—".into(), |d| fmt_signed(t - d))
}

/// Writes the report, its charts and its JSON; returns the report's path.
pub fn write(r: &Results, out_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out_dir)?;
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let machine = r.meta.get("machine").cloned().unwrap_or_default();
    let mode = r.meta.get("mode").cloned().unwrap_or_default();
    let stem = if mode == "full" {
        format!("{date}-{machine}")
    } else {
        format!("{date}-{machine}-{mode}")
    };
    let chart = |name: &str| format!("{stem}-{name}.svg");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Tollgate load test: {} on {machine} ({mode} run)\n",
        r.meta.get("date").cloned().unwrap_or_default()
    );
    if mode == "smoke" {
        let _ = writeln!(
            out,
            "> **Smoke run**: every phase at a minimal size on whatever build CI has. No figure here means anything.\n"
        );
    }
    header(&mut out, &["", ""]);
    for (k, v) in &r.meta {
        row(&mut out, &[k.clone(), v.clone()]);
    }
    if !r.other_work.is_empty() {
        let phases: Vec<String> = r
            .other_work
            .iter()
            .map(|(p, c)| format!("{p} {c:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "\nOther work on the machine (cores busy outside this run, by phase; 2.00 = both cores): {}. Above ~0.2 the figures of that phase are disturbed, references included.",
            phases.join(", ")
        );
    }
    out.push('\n');
    for note in &r.notes {
        let _ = writeln!(out, "- Note: {note}");
    }

    let _ = writeln!(out, "\n## Verdict against the issue's targets\n");
    header(
        &mut out,
        &["target", "goal", "measured (same run)", "verdict"],
    );
    for v in verdicts(r) {
        let verdict = match v.met {
            Some(true) => format!("✅ {}", v.margin),
            Some(false) => format!("❌ {}", v.margin),
            None => format!("— {}", v.margin),
        };
        row(&mut out, &[v.target, v.goal, v.measured, verdict]);
    }
    if let Some((path, previous)) = crate::compare::previous(out_dir, &mode, &stem) {
        out.push_str(&crate::compare::section(&previous, &path, r));
    }

    // 1. Concurrency 1.
    let _ = writeln!(out, "\n## 1. Added latency at concurrency 1\n");
    let _ = writeln!(
        out,
        "One connection, one request at a time, blocks interleaved across targets. Added = target minus direct, percentile by percentile.\n"
    );
    header(
        &mut out,
        &[
            "target",
            "requests",
            "errors",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "added p50",
            "added p99",
        ],
    );
    let d = r.c1.get(DIRECT);
    for (name, s) in &r.c1 {
        row(
            &mut out,
            &[
                name.clone(),
                s.ok.to_string(),
                s.error_count().to_string(),
                fmt_us(s.latency.p50_us),
                fmt_us(s.latency.p90_us),
                fmt_us(s.latency.p99_us),
                fmt_us(s.latency.p999_us),
                added(s.latency.p50_us, d.map(|d| d.latency.p50_us)),
                added(s.latency.p99_us, d.map(|d| d.latency.p99_us)),
            ],
        );
    }
    let series: Vec<Series> =
        r.c1.iter()
            .map(|(n, s)| Series {
                name: n.clone(),
                points: pct_points(&s.latency, 1.0),
            })
            .collect();
    charts::draw(
        &out_dir.join(chart("c1")),
        &Chart {
            title: "Latency at concurrency 1",
            x_desc: "percentile",
            y_desc: "µs (log)",
            log_x: false,
            log_y: true,
            x_names: Some(&PCT_NAMES),
            h_lines: &[],
        },
        &series,
    )?;
    let _ = writeln!(out, "\n![latency at concurrency 1]({})", chart("c1"));
    features(&mut out, r);

    // 2. Open loop.
    let _ = writeln!(
        out,
        "\n## 2. Open-loop load: added latency and the throughput frontier\n"
    );
    let _ = writeln!(
        out,
        "Constant arrival rate; latency from each request's intended send time (coordinated-omission safe). Late = sends that left more than 1 ms after their intended time (a generator limit, not the target's).\n"
    );
    header(
        &mut out,
        &[
            "RPS",
            "target",
            "ok / sent",
            "errors",
            "late sends",
            "p50",
            "p99",
            "p99.9",
            "added p50",
            "added p99",
        ],
    );
    for (rate, by) in &r.rates {
        let d = by.get(DIRECT);
        for (name, s) in by {
            let errors = if s.errors.is_empty() {
                "0".into()
            } else {
                format!("{:?}", s.errors)
            };
            row(
                &mut out,
                &[
                    rate.to_string(),
                    name.clone(),
                    format!("{} / {}", s.ok, s.sent),
                    errors,
                    s.late_sends.to_string(),
                    fmt_us(s.latency.p50_us),
                    fmt_us(s.latency.p99_us),
                    fmt_us(s.latency.p999_us),
                    added(s.latency.p50_us, d.map(|d| d.latency.p50_us)),
                    added(s.latency.p99_us, d.map(|d| d.latency.p99_us)),
                ],
            );
        }
    }
    let _ = writeln!(
        out,
        "\n**Throughput frontier**: highest offered rate with p99 within the bound, no errors. `direct` is the mock's own ceiling with this generator on this machine.\n"
    );
    header(
        &mut out,
        &[
            "target",
            "p99 ≤ 1 ms",
            "p99 ≤ 5 ms",
            "p99 ≤ 10 ms",
            "sustained (≥ 99 % ok, p99 ≤ 1 s)",
            "highest rate tried",
        ],
    );
    let mut names: Vec<String> = r.rates.values().flat_map(|m| m.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let fmt_rate = |v: Option<u64>| v.map_or("none".into(), |v| format!("{v} RPS"));
    for name in &names {
        let tried = r
            .rates
            .iter()
            .filter(|(_, m)| m.contains_key(name))
            .map(|(k, _)| *k)
            .max();
        row(
            &mut out,
            &[
                name.clone(),
                fmt_rate(r.frontier(name, 1.0)),
                fmt_rate(r.frontier(name, 5.0)),
                fmt_rate(r.frontier(name, 10.0)),
                fmt_rate(r.sustained(name)),
                fmt_rate(tried),
            ],
        );
    }
    if let Some((name, rate)) = litellm_best(r) {
        let _ = writeln!(
            out,
            "\nLiteLLM's best configuration here: `{name}`, {rate} RPS sustained."
        );
    }
    let series: Vec<Series> = names
        .iter()
        .map(|n| Series {
            name: n.clone(),
            points: r
                .rates
                .iter()
                .filter_map(|(rate, m)| {
                    m.get(n).map(|s| (*rate as f64, s.latency.p99_us / 1_000.0))
                })
                .collect(),
        })
        .collect();
    charts::draw(
        &out_dir.join(chart("frontier")),
        &Chart {
            title: "p99 against offered rate",
            x_desc: "offered RPS (log)",
            y_desc: "p99 ms (log)",
            log_x: true,
            log_y: true,
            x_names: None,
            h_lines: &[(1.0, "1 ms"), (5.0, "5 ms"), (10.0, "10 ms")],
        },
        &series,
    )?;
    let _ = writeln!(out, "\n![p99 against rate]({})", chart("frontier"));
    let added_series = |name: String, target: &str, pick: fn(&Summary) -> f64| Series {
        name,
        points: r
            .rates
            .iter()
            .filter_map(|(rate, m)| match (m.get(target), m.get(DIRECT)) {
                (Some(s), Some(d)) => Some((*rate as f64, pick(s) - pick(d))),
                _ => None,
            })
            .collect(),
    };
    let mut series = Vec::new();
    for name in [FLOOR, TOLLGATE] {
        series.push(added_series(format!("{name} added p50"), name, |s| {
            s.latency.p50_us
        }));
        series.push(added_series(format!("{name} added p99"), name, |s| {
            s.latency.p99_us
        }));
    }
    charts::draw(
        &out_dir.join(chart("added")),
        &Chart {
            title: "Added latency over direct, open loop",
            x_desc: "offered RPS",
            y_desc: "µs",
            log_x: false,
            log_y: false,
            x_names: None,
            h_lines: &[],
        },
        &series,
    )?;
    let _ = writeln!(out, "\n![added latency against rate]({})", chart("added"));

    crate::report_tail::streams_memory_cpu(&mut out, r, out_dir, &chart)?;
    crate::report_tail::propagation(&mut out, r, out_dir, &chart)?;
    if let Some(profile) = &r.profile {
        let _ = writeln!(
            out,
            "\n## Profile of the edge under load\n\nA target above was missed; where the edge's CPU goes at the load of the profile (`perf record`, self time):\n"
        );
        if let (Some(t), Some(f)) = (r.cpu.get(TOLLGATE), r.cpu.get(FLOOR)) {
            let _ = writeln!(
                out,
                "The edge spends {} of CPU per request against floor-proxy's {} ({:.1}×); with the aggregator and control plane, {}. On 2 cores shared with the generator and the mock, that CPU is what sets the frontier and, queued behind other work, the tail.\n",
                fmt_us(t.us_per_request),
                fmt_us(f.us_per_request),
                t.us_per_request / f.us_per_request.max(0.001),
                fmt_us(t.whole_us_per_request)
            );
        }
        let _ = writeln!(out, "```\n{profile}\n```");
    }
    let _ = writeln!(
        out,
        "\n---\nRaw figures: [`{stem}.json`]({stem}.json). How to read this report: [`loadtest/README.md`](../README.md)."
    );
    let path = out_dir.join(format!("{stem}.md"));
    std::fs::write(&path, out)?;
    std::fs::write(
        out_dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(r)?,
    )?;
    let _ = rss_at;
    Ok(path)
}

/// Tollgate's guardrail and cache figures beside the same request without them.
fn features(out: &mut String, r: &Results) {
    if r.features.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Guardrail and cache on a 2 KB prompt (Tollgate, concurrency 1)\n\n\
         A masking `pii` guardrail (every built-in entity; the prompt holds one e-mail address) \
         and a cache hit, against the same request with neither. A hit never reaches the \
         upstream, so its figure is the whole answer time.\n"
    );
    header(
        out,
        &[
            "case",
            "requests",
            "errors",
            "p50",
            "p99",
            "vs. plain p50",
            "vs. plain p99",
        ],
    );
    let plain = r.features.get(crate::suite::FEATURE_CASES[0].0);
    for (name, _) in crate::suite::FEATURE_CASES {
        let Some(s) = r.features.get(name) else {
            continue;
        };
        row(
            out,
            &[
                name.to_owned(),
                s.ok.to_string(),
                s.error_count().to_string(),
                fmt_us(s.latency.p50_us),
                fmt_us(s.latency.p99_us),
                added(s.latency.p50_us, plain.map(|p| p.latency.p50_us)),
                added(s.latency.p99_us, plain.map(|p| p.latency.p99_us)),
            ],
        );
    }
}
