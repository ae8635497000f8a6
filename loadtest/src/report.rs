//! The report: `loadtest/results/<date>-<machine>.md` with its SVG charts and the raw figures
//! as JSON beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::charts::{Chart, Series};
use crate::markdown::{Charts, header, latency_chart, pct_series, row, section};
use crate::results::{Pct, Results, Summary};
use crate::suite::{DIRECT, FLOOR, TOLLGATE};
use crate::verdict::{Verdict, fmt_signed, fmt_us, litellm_best, verdicts};

pub use crate::verdict::latency_missed;

/// What a target adds over `d` (direct, or another baseline), or a dash when `d` is missing.
fn added(t: f64, d: Option<f64>) -> String {
    d.map_or("—".into(), |d| fmt_signed(t - d))
}

/// Writes the report, its charts and its JSON; returns the report's path.
pub fn write(r: &Results, out_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out_dir)?;
    // The run's own date ("2026-12-06 15:00 UTC"), so a report written again keeps its name.
    let date = match r.meta.get("date").and_then(|d| d.get(..10)) {
        Some(day) => day.to_owned(),
        None => chrono::Utc::now().format("%Y-%m-%d").to_string(),
    };
    let machine = r.meta.get("machine").cloned().unwrap_or_default();
    let mode = r.meta.get("mode").cloned().unwrap_or_default();
    // A full run is the reference one: only the others carry their mode in the name.
    let stem = if mode == "full" {
        format!("{date}-{machine}")
    } else {
        format!("{date}-{machine}-{mode}")
    };
    let stem = unclaimed(out_dir, stem, r);
    let charts = Charts {
        dir: out_dir,
        stem: &stem,
    };
    let mut out = String::new();
    heading(&mut out, r, &machine, &mode);
    verdict_table(&mut out, verdicts(r));
    let cpu = r.meta.get("cpu").map(String::as_str);
    let when = r.meta.get("date").map(String::as_str);
    if let Some((path, previous)) = crate::compare::previous(out_dir, &mode, &stem, cpu, when) {
        out.push_str(&crate::compare::section(&previous, &path, r));
    }
    concurrency_one(&mut out, r, &charts)?;
    features(&mut out, r);
    open_loop(&mut out, r, &charts)?;
    crate::report_tail::streams(&mut out, r, &charts)?;
    crate::report_tail::stalls(&mut out, r);
    crate::report_tail::memory(&mut out, r, &charts)?;
    crate::report_tail::cpu(&mut out, r);
    crate::report_tail::propagation(&mut out, r, &charts)?;
    profile(&mut out, r);
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
    Ok(path)
}

/// The title, the run's metadata table, other work on the machine and the run's notes.
fn heading(out: &mut String, r: &Results, machine: &str, mode: &str) {
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
    // Two columns, a name and its value, with no heading.
    header(out, " | ");
    for (k, v) in &r.meta {
        row(out, &[k.clone(), v.clone()]);
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
}

/// The table of every target with its goal, what was measured and whether it was met.
fn verdict_table(out: &mut String, verdicts: Vec<Verdict>) {
    let _ = writeln!(out, "\n## Verdict against the issue's targets\n");
    header(out, "target | goal | measured (same run) | verdict");
    for v in verdicts {
        let mark = match v.met {
            Some(true) => "✅",
            Some(false) => "❌",
            None => "—",
        };
        let verdict = format!("{mark} {}", v.margin);
        row(out, &[v.target, v.goal, v.measured, verdict]);
    }
}

/// `stem`, or when another run of the same day already has it, `stem` with this run's time
/// (`2026-12-07-vm-0907`): a second run never overwrites the first.
fn unclaimed(out_dir: &Path, stem: String, r: &Results) -> String {
    let Some(date) = r.meta.get("date") else {
        return stem;
    };
    let claimed_by = std::fs::read_to_string(out_dir.join(format!("{stem}.json")))
        .ok()
        .and_then(|text| serde_json::from_str::<Results>(&text).ok())
        .and_then(|other| other.meta.get("date").cloned());
    match (claimed_by, date.get(11..16)) {
        (Some(other), Some(time)) if &other != date => format!("{stem}-{}", time.replace(':', "")),
        _ => stem,
    }
}

/// Section 1: latency at concurrency 1, with what each target adds over direct.
fn concurrency_one(out: &mut String, r: &Results, charts: &Charts) -> anyhow::Result<()> {
    section(
        out,
        "1. Added latency at concurrency 1",
        "One connection, one request at a time, blocks interleaved across targets. Added = target minus direct, percentile by percentile. *tollgate, other roles stopped* is the same edge measured after the others with its aggregator and control plane stopped: what their work on the shared cores adds.",
    );
    header(
        out,
        "target | requests | errors | p50 | p90 | p99 | p99.9 | added p50 | added p99",
    );
    let d = r.c1.get(DIRECT);
    for (name, s) in &r.c1 {
        let l = &s.latency;
        summary_row(
            out,
            name.clone(),
            s,
            &[l.p50_us, l.p90_us, l.p99_us, l.p999_us],
            d,
        );
    }
    blocks(out, r);
    own_time(out, r);
    stalls(out, r);
    hops(out, r);
    let series = pct_series(&r.c1, |s| &s.latency);
    let chart = latency_chart("Latency at concurrency 1");
    charts.draw(out, "c1", "latency at concurrency 1", &chart, &series)
}

/// Each block's p50 at concurrency 1, and Tollgate's gap to floor-proxy block by block: a gap
/// of about the same size in every block is the build's, one that moves between blocks by as
/// much as the target's allowance is the machine's.
fn blocks(out: &mut String, r: &Results) {
    let with_blocks = || r.c1.iter().filter(|(_, s)| s.block_p50_us.len() >= 2);
    if with_blocks().next().is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "\n**Block by block.** Each target's requests came in interleaved blocks: each block's p50 in the order run, their median, and what the median adds over direct's.\n"
    );
    header(out, "target | blocks' p50 | median | added median");
    let median_of = |s: &Summary| crate::results::median(&s.block_p50_us);
    let direct = r.c1.get(DIRECT).and_then(median_of);
    for (name, s) in with_blocks() {
        let each: Vec<String> = s.block_p50_us.iter().map(|&us| fmt_us(us)).collect();
        let median = median_of(s).unwrap_or_default();
        row(
            out,
            &[
                name.clone(),
                each.join(", "),
                fmt_us(median),
                added(median, direct),
            ],
        );
    }
    let (Some(t), Some(f)) = (r.c1.get(TOLLGATE), r.c1.get(FLOOR)) else {
        return;
    };
    if t.block_p50_us.len() == f.block_p50_us.len() {
        let gaps: Vec<String> = t
            .block_p50_us
            .iter()
            .zip(&f.block_p50_us)
            .map(|(t, f)| fmt_signed(t - f))
            .collect();
        let _ = writeln!(
            out,
            "\nTollgate's p50 less floor-proxy's, block by block (the blocks of a round run seconds apart): {}.",
            gaps.join(", ")
        );
    }
}

/// Tollgate's added latency at concurrency 1, split into the edge's own work on each request
/// (by its `x-tollgate-overhead-ms` header) and the rest: the hop itself, which floor-proxy
/// pays too.
fn own_time(out: &mut String, r: &Results) {
    let d = r.c1.get(DIRECT).map(|s| s.latency.p50_us);
    let floor_added =
        r.c1.get(FLOOR)
            .map_or("—".into(), |f| added(f.latency.p50_us, d));
    let own: Vec<(&String, &Summary, &Pct)> =
        r.c1.iter()
            .filter_map(|(name, s)| Some((name, s, s.own.as_ref()?)))
            .collect();
    if own.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n**Tollgate's own time.** The edge says in `x-tollgate-overhead-ms` how long it worked on \
         each request itself: from the handler's start to the upstream call (authentication, \
         parsing, access, limits, budget) and from the upstream's answer to its own (usage, \
         cost, headers). The rest of its added latency is the hop: choosing the deployment, and \
         reading and writing the client's and the upstream's connections, which floor-proxy \
         does too. The split subtracts medians, so it is a guide, not an exact sum.\n"
    );
    header(
        out,
        "target | own time p50 | own time p99 | added p50 | added p50 less own time p50 | floor-proxy's added p50",
    );
    for (name, s, own) in own {
        row(
            out,
            &[
                name.clone(),
                fmt_us(own.p50_us),
                fmt_us(own.p99_us),
                added(s.latency.p50_us, d),
                added(s.latency.p50_us - own.p50_us, d),
                floor_added.clone(),
            ],
        );
    }
}

/// What the scheduler's trace says about the slow requests at concurrency 1.
fn stalls(out: &mut String, r: &Results) {
    if r.stalls.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n**Why requests are slow at concurrency 1.** Each target was asked again, one request \
         at a time, while `perf` traced the scheduler on every core (`sched_switch`, \
         `sched_wakeup`). For each request over {slow} ms, the trace shows whether a thread \
         serving it (the generator's, the target's or the mock's) was ready to run for {wait} µs \
         or longer without a core, and what ran on that core meanwhile: work of the request \
         itself, or other work sharing the machine's cores.\n",
        slow = crate::stalls::SLOW.as_millis(),
        wait = crate::stalls::WAIT.as_micros(),
    );
    header(
        out,
        &format!(
            "target | requests | over {} ms | of those, waited for a core | the core ran meanwhile",
            crate::stalls::SLOW.as_millis()
        ),
    );
    let share = |n: u64, of: u64| 100.0 * n as f64 / of.max(1) as f64;
    for (name, s) in &r.stalls {
        let held: Vec<String> = s
            .held_by
            .iter()
            .filter(|(_, part)| *part >= 0.01)
            .map(|(who, part)| format!("{who} {:.0} %", 100.0 * part))
            .collect();
        row(
            out,
            &[
                name.clone(),
                s.requests.to_string(),
                format!("{} ({:.1} %)", s.slow, share(s.slow, s.requests)),
                format!("{} ({:.0} %)", s.waited, share(s.waited, s.slow)),
                if held.is_empty() {
                    "—".into()
                } else {
                    held.join(", ")
                },
            ],
        );
    }
}

/// Where the typical request's time went at concurrency 1, from the same traces.
fn hops(out: &mut String, r: &Results) {
    let traced: Vec<_> = r
        .stalls
        .iter()
        .filter_map(|(name, s)| Some((name, s.hops.as_ref()?)))
        .collect();
    if traced.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n**Where a typical request's time goes at concurrency 1.** The same traces, step by \
         step, as medians over the requests whose every step they show: from the target's thread \
         taking a core to the mock's thread being woken (the target reads the request, works, \
         and writes it upstream); the mock's turn, until its thread sleeps again; from then to \
         the generator's thread being woken (the target reads the answer, works, and writes it \
         back). A wake-up is stamped when the woken core takes it, so a step that wakes another \
         core includes that core's answer to the interrupt. *Woken beside its waker* is the share \
         of the target thread's wake-ups that the scheduler put on the core of the thread that \
         woke it; the rest went to another core, idle until the interrupt reached it.\n"
    );
    header(
        out,
        "target | requests | to the upstream | the upstream | back to the generator | \
         sum | target woken beside its waker",
    );
    for (name, h) in traced {
        row(
            out,
            &[
                name.clone(),
                h.requests.to_string(),
                fmt_us(h.to_upstream_us),
                fmt_us(h.upstream_us),
                fmt_us(h.back_us),
                fmt_us(h.to_upstream_us + h.upstream_us + h.back_us),
                format!("{:.0} %", 100.0 * h.beside_waker),
            ],
        );
    }
}

/// A row of `name`'s summary: requests, errors, the `latencies` given (µs), then p50 and p99
/// over `base`'s.
fn summary_row(
    out: &mut String,
    name: String,
    s: &Summary,
    latencies: &[f64],
    base: Option<&Summary>,
) {
    let mut cells = vec![name, s.ok.to_string(), s.error_count().to_string()];
    cells.extend(latencies.iter().map(|v| fmt_us(*v)));
    let over = |pick: fn(&Pct) -> f64| added(pick(&s.latency), base.map(|b| pick(&b.latency)));
    cells.extend([over(|p| p.p50_us), over(|p| p.p99_us)]);
    row(out, &cells);
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
        "case | requests | errors | p50 | p99 | vs. plain p50 | vs. plain p99",
    );
    let plain = r.features.get(crate::suite::FEATURE_CASES[0].0);
    for (name, _) in crate::suite::FEATURE_CASES {
        let Some(s) = r.features.get(name) else {
            continue;
        };
        let l = &s.latency;
        summary_row(out, name.to_owned(), s, &[l.p50_us, l.p99_us], plain);
    }
}

/// Section 2: every open-loop round, the throughput frontier and their charts.
fn open_loop(out: &mut String, r: &Results, charts: &Charts) -> anyhow::Result<()> {
    section(
        out,
        "2. Open-loop load: added latency and the throughput frontier",
        "Constant arrival rate; latency from each request's intended send time (coordinated-omission safe). Late = sends that left more than 1 ms after their intended time (a generator limit, not the target's). Machine busy = cores in use on the whole machine during that target's rounds: the generator, the mock, the target and the servers it uses (NATS, PostgreSQL); near the core count, the machine itself is the limit.",
    );
    open_loop_rounds(out, r);
    let names = rate_targets(r);
    frontier(out, r, &names);
    frontier_chart(out, r, &names, charts)?;
    added_chart(out, r, charts)
}

/// Every target measured in the open-loop rounds, by name.
fn rate_targets(r: &Results) -> Vec<String> {
    let mut names: Vec<String> = r.rates.values().flat_map(|m| m.keys().cloned()).collect();
    names.sort();
    names.dedup();
    names
}

/// One row per offered rate and target: what was answered, and how late.
fn open_loop_rounds(out: &mut String, r: &Results) {
    header(
        out,
        "RPS | target | ok / sent | errors | late sends | p50 | p99 | p99.9 | added p50 | added p99 | machine busy",
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
                out,
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
                    s.machine_cores
                        .map_or_else(|| "—".to_owned(), |c| format!("{c:.2} cores")),
                ],
            );
        }
    }
}

/// The throughput frontier table and LiteLLM's best configuration.
fn frontier(out: &mut String, r: &Results, names: &[String]) {
    let _ = writeln!(
        out,
        "\n**Throughput frontier**: highest offered rate with p99 within the bound, no errors. `direct` is the mock's own ceiling with this generator on this machine.\n"
    );
    header(
        out,
        "target | p99 ≤ 1 ms | p99 ≤ 5 ms | p99 ≤ 10 ms | sustained (≥ 99 % ok, p99 ≤ 1 s) | highest rate tried",
    );
    let fmt_rate = |v: Option<u64>| v.map_or("none".into(), |v| format!("{v} RPS"));
    for name in names {
        let tried = r
            .rates
            .iter()
            .filter(|(_, m)| m.contains_key(name))
            .map(|(k, _)| *k)
            .max();
        row(
            out,
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
}

/// The chart of p99 against offered rate, one line per target.
fn frontier_chart(
    out: &mut String,
    r: &Results,
    names: &[String],
    charts: &Charts,
) -> anyhow::Result<()> {
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
    charts.draw(
        out,
        "frontier",
        "p99 against rate",
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
    )
}

/// The chart of floor-proxy's and Tollgate's added p50 and p99 against offered rate.
fn added_chart(out: &mut String, r: &Results, charts: &Charts) -> anyhow::Result<()> {
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
    charts.draw(
        out,
        "added",
        "added latency against rate",
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
    )
}

/// The edge's CPU profile, when a missed target made the run take one.
fn profile(out: &mut String, r: &Results) {
    let Some(profile) = &r.profile else {
        return;
    };
    let _ = writeln!(
        out,
        "\n## Profile of the edge under load\n\nA target above was missed; where the edge's CPU goes at the load of the profile (`perf record`, self time):\n"
    );
    if let (Some(t), Some(f)) = (r.cpu.get(TOLLGATE), r.cpu.get(FLOOR)) {
        let machine = match (t.machine_us_per_request, f.machine_us_per_request) {
            (Some(t), Some(f)) => format!(
                "; the whole machine spends {} per request through Tollgate against {} through floor-proxy",
                fmt_us(t),
                fmt_us(f)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "The edge spends {} of CPU per request against floor-proxy's {} ({:.1}×); with the aggregator and control plane, {}{machine}. On 2 cores shared with the generator and the mock, that CPU is what sets the frontier and, queued behind other work, the tail.\n",
            fmt_us(t.us_per_request),
            fmt_us(f.us_per_request),
            t.us_per_request / f.us_per_request.max(0.001),
            fmt_us(t.whole_us_per_request)
        );
    }
    let _ = writeln!(out, "```\n{profile}\n```");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_of_the_day_gets_its_time_in_its_name_and_a_rerender_keeps_the_name()
    -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(tollgate_test_support::unique_name("stem"));
        std::fs::create_dir_all(&dir)?;
        let run = |date: &str| {
            let mut r = Results::default();
            r.meta.insert("date".into(), date.into());
            r
        };
        let first = run("2026-12-07 05:36 UTC");
        std::fs::write(
            dir.join("2026-12-07-vm.json"),
            serde_json::to_string(&first)?,
        )?;
        let second = unclaimed(&dir, "2026-12-07-vm".into(), &run("2026-12-07 09:07 UTC"));
        let again = unclaimed(&dir, "2026-12-07-vm".into(), &first);
        let fresh = unclaimed(&dir, "2026-12-08-vm".into(), &run("2026-12-08 10:00 UTC"));
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(second, "2026-12-07-vm-0907");
        assert_eq!(again, "2026-12-07-vm");
        assert_eq!(fresh, "2026-12-08-vm");
        Ok(())
    }

    /// A concurrency-1 summary with latency p50 `p50_us` and, when given, an own time whose p99
    /// is twice its p50.
    fn c1(p50_us: f64, own_p50_us: Option<f64>) -> Summary {
        let pct = |p50_us: f64| Pct {
            p50_us,
            p99_us: 2.0 * p50_us,
            ..Pct::default()
        };
        Summary {
            latency: pct(p50_us),
            own: own_p50_us.map(pct),
            ..Summary::default()
        }
    }

    #[test]
    fn tollgates_added_latency_is_split_into_its_own_time_and_the_hop() {
        let mut r = Results::default();
        r.c1.insert(DIRECT.into(), c1(100.0, None));
        r.c1.insert(FLOOR.into(), c1(180.0, None));
        r.c1.insert(TOLLGATE.into(), c1(250.0, Some(40.0)));
        let mut out = String::new();
        own_time(&mut out, &r);
        assert!(
            out.contains("| tollgate | 40.0 µs | 80.0 µs | +150.0 µs | +110.0 µs | +80.0 µs |"),
            "{out}"
        );
        assert!(!out.contains("| floor-proxy |"), "{out}");
    }

    #[test]
    fn runs_without_an_own_time_get_no_split() {
        let mut r = Results::default();
        r.c1.insert(DIRECT.into(), c1(100.0, None));
        r.c1.insert(TOLLGATE.into(), c1(250.0, None));
        let mut out = String::new();
        own_time(&mut out, &r);
        assert!(out.is_empty(), "{out}");
    }

    #[test]
    fn a_typical_request_s_steps_are_listed_per_traced_target() {
        let mut r = Results::default();
        let traced = |hops| crate::results::Stalls {
            requests: 10,
            hops,
            ..Default::default()
        };
        let hops = crate::results::Hops {
            requests: 9,
            to_upstream_us: 50.0,
            upstream_us: 30.0,
            back_us: 45.5,
            beside_waker: 0.2,
        };
        r.stalls.insert(TOLLGATE.into(), traced(Some(hops)));
        r.stalls.insert(FLOOR.into(), traced(None));
        let mut out = String::new();
        super::hops(&mut out, &r);
        assert!(
            out.contains("| tollgate | 9 | 50.0 µs | 30.0 µs | 45.5 µs | 125.5 µs | 20 % |"),
            "{out}"
        );
        // A run from before the steps were measured shows no row for them.
        assert!(!out.contains("| floor-proxy |"), "{out}");
        r.stalls.remove(TOLLGATE);
        let mut out = String::new();
        super::hops(&mut out, &r);
        assert!(out.is_empty(), "{out}");
    }

    #[test]
    fn ttft_p99_is_listed_round_by_round_with_the_machine_s_cpu_per_stream() {
        let mut r = Results::default();
        let streamed = |rounds: &[f64]| crate::results::StreamSummary {
            round_ttft_p99_us: rounds.to_vec(),
            machine_us_per_stream: Some(812.4),
            machine_cores: Some(1.5),
            round_steal_ms: vec![0.0, 30.0, 10.0],
            ..Default::default()
        };
        r.streams
            .insert(DIRECT.into(), streamed(&[900.0, 1_000.0, 1_100.0]));
        r.streams
            .insert(TOLLGATE.into(), streamed(&[2_500.0, 9_000.0, 2_000.0]));
        let mut out = String::new();
        crate::report_tail::rounds(&mut out, &r);
        assert!(
            out.contains(
                "| tollgate | 2.50 ms, 9.00 ms, 2.00 ms | 2.50 ms | +1500.0 µs | 812 µs | 1.50 | 0, 30, 10 ms |"
            ),
            "{out}"
        );
        // A run from before the rounds were kept shows no table.
        let mut out = String::new();
        r.streams.insert(TOLLGATE.into(), streamed(&[]));
        r.streams.insert(DIRECT.into(), streamed(&[1.0, 2.0]));
        crate::report_tail::rounds(&mut out, &r);
        assert!(out.is_empty(), "{out}");
    }

    #[test]
    fn each_block_s_p50_is_listed_with_tollgate_s_gap_to_floor_proxy_block_by_block() {
        let mut r = Results::default();
        let blocks = |p50s: &[f64]| Summary {
            block_p50_us: p50s.to_vec(),
            ..Summary::default()
        };
        r.c1.insert(DIRECT.into(), blocks(&[50.0, 60.0, 55.0]));
        r.c1.insert(FLOOR.into(), blocks(&[100.0, 140.0, 120.0]));
        r.c1.insert(TOLLGATE.into(), blocks(&[130.0, 150.0, 160.0]));
        let mut out = String::new();
        super::blocks(&mut out, &r);
        assert!(
            out.contains("| tollgate | 130.0 µs, 150.0 µs, 160.0 µs | 150.0 µs | +95.0 µs |"),
            "{out}"
        );
        assert!(
            out.contains("block by block (the blocks of a round run seconds apart): +30.0 µs, +10.0 µs, +40.0 µs."),
            "{out}"
        );
        // A run from before the blocks were kept shows nothing.
        r.c1.values_mut().for_each(|s| s.block_p50_us.clear());
        let mut out = String::new();
        super::blocks(&mut out, &r);
        assert!(out.is_empty(), "{out}");
    }

    #[test]
    fn system_calls_are_listed_per_request_and_by_kind() {
        use crate::results::Cpu;
        use crate::syscalls::Syscalls;
        let counted = |total: u64, kinds: &[(&str, u64)]| Cpu {
            requests: 1_000,
            syscalls: Some(Syscalls {
                total,
                by_kind: kinds.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
            }),
            ..Cpu::default()
        };
        let mut r = Results::default();
        r.cpu.insert(
            FLOOR.into(),
            counted(4_000, &[("read", 2_000), ("write", 2_000), ("madvise", 3)]),
        );
        r.cpu.insert(
            TOLLGATE.into(),
            counted(6_500, &[("read", 2_000), ("writev", 3_000)]),
        );
        r.cpu.insert(DIRECT.into(), Cpu::default());
        let mut out = String::new();
        crate::report_tail::cpu(&mut out, &r);
        assert!(out.contains("| — | — | 4.00 |"), "{out}");
        assert!(out.contains("| — | — | 6.50 |"), "{out}");
        assert!(
            out.contains("| system call | floor-proxy | tollgate |"),
            "{out}"
        );
        assert!(out.contains("| `read` | 2.00 | 2.00 |"), "{out}");
        assert!(out.contains("| `writev` | 0.00 | 3.00 |"), "{out}");
        assert!(!out.contains("`madvise`"), "rare kinds are left out: {out}");
        assert!(out.contains("| other | 0.00 | 1.50 |"), "{out}");
        // A run without counts shows no such table.
        r.cpu.values_mut().for_each(|c| c.syscalls = None);
        let mut out = String::new();
        crate::report_tail::cpu(&mut out, &r);
        assert!(!out.contains("system call |"), "{out}");
    }
}
