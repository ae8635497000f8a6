//! The performance targets (issue 25's table, with the earlier issues' stream, propagation and
//! LiteLLM targets kept), judged on one run's figures: each compares Tollgate with references
//! measured in the same run, and says by how much a missed target is missed.

use crate::results::{Results, Summary};
use crate::suite::{DIRECT, FLOOR, LITELLM, LITELLM_2W, TOLLGATE};

pub struct Verdict {
    pub target: String,
    pub goal: String,
    pub measured: String,
    /// None: could not be judged (a figure is missing).
    pub met: Option<bool>,
    pub margin: String,
    /// Latency or throughput (a profile explains those when missed).
    pub latency: bool,
}

/// A difference with its sign: `+34.3 µs`, `−1.20 ms`.
pub fn fmt_signed(v: f64) -> String {
    if v < 0.0 {
        format!("−{}", fmt_us(-v))
    } else {
        format!("+{}", fmt_us(v))
    }
}

/// Microseconds, or milliseconds from 1,000 µs.
pub fn fmt_us(v: f64) -> String {
    if v.abs() >= 1_000.0 {
        format!("{:.2} ms", v / 1_000.0)
    } else {
        format!("{v:.1} µs")
    }
}

fn c1<'a>(r: &'a Results, t: &str) -> Option<&'a Summary> {
    r.c1.get(t)
}

fn judge(
    target: &str,
    goal: String,
    measured: String,
    value: Option<f64>,
    limit: f64,
    unit: &str,
    latency: bool,
) -> Verdict {
    let (met, margin) = match value {
        Some(v) if v <= limit => (
            Some(true),
            format!("met with {:.1} {unit} to spare", limit - v),
        ),
        Some(v) => (Some(false), format!("missed by {:.1} {unit}", v - limit)),
        None => (None, "not measured".into()),
    };
    Verdict {
        target: target.into(),
        goal,
        measured,
        met,
        margin,
        latency,
    }
}

/// Linear fit of RSS against held streams, evaluated at `n` (bytes).
pub fn rss_at(r: &Results, target: &str, n: f64) -> Option<f64> {
    let m = r.memory.get(target)?;
    let mut pts: Vec<(f64, f64)> = vec![(0.0, m.idle_rss_bytes as f64)];
    pts.extend(
        m.points
            .iter()
            .map(|p| (p.established as f64, p.rss_bytes as f64)),
    );
    if pts.len() < 2 {
        return None;
    }
    let k = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / k, sy / k);
    let sxx: f64 = pts.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some(my + slope * (n - mx))
}

/// What the issue says LiteLLM's proxy reaches with two workers on this machine kind.
const ISSUE_LITELLM_RPS: u64 = 250;

/// LiteLLM's best configuration: the highest rate either configuration sustained.
pub fn litellm_best(r: &Results) -> Option<(String, u64)> {
    [LITELLM, LITELLM_2W]
        .iter()
        .filter_map(|t| r.sustained(t).map(|rate| ((*t).to_owned(), rate)))
        .max_by_key(|(_, rate)| *rate)
}

/// Every target of the issue, judged on `r`, in the report's order.
pub fn verdicts(r: &Results) -> Vec<Verdict> {
    let mut out = added_at_concurrency_one(r);
    out.push(cpu_per_request(r));
    out.push(throughput_vs_floor(r));
    out.push(throughput_vs_litellm(r));
    out.extend(at_5000_rps(r));
    out.extend(streams(r));
    out.push(memory_per_stream(r));
    out.extend(propagation(r));
    out
}

/// Added p50 and p99 at concurrency 1, against floor-proxy's with some slack.
fn added_at_concurrency_one(r: &Results) -> Vec<Verdict> {
    let (d, f, t) = (c1(r, DIRECT), c1(r, FLOOR), c1(r, TOLLGATE));
    let mut out = Vec::new();
    for (name, pick, slack) in [
        (
            "p50",
            (|s: &Summary| s.latency.p50_us) as fn(&Summary) -> f64,
            25.0,
        ),
        ("p99", |s: &Summary| s.latency.p99_us, 50.0),
    ] {
        let (value, measured) = match (d, f, t) {
            (Some(d), Some(f), Some(t)) => {
                let (ta, fa) = (pick(t) - pick(d), pick(f) - pick(d));
                (
                    Some(ta - fa),
                    format!(
                        "Tollgate +{}, floor-proxy +{} over direct",
                        fmt_us(ta),
                        fmt_us(fa)
                    ),
                )
            }
            _ => (None, "—".into()),
        };
        out.push(judge(
            &format!("Added {name} at concurrency 1"),
            format!("≤ floor-proxy's + {slack:.0} µs"),
            measured,
            value,
            slack,
            "µs",
            true,
        ));
    }
    out
}

/// The edge's CPU per request against twice floor-proxy's.
fn cpu_per_request(r: &Results) -> Verdict {
    let (tc, fc) = (r.cpu.get(TOLLGATE), r.cpu.get(FLOOR));
    judge(
        "CPU per request, edge",
        "≤ 2 × floor-proxy's".into(),
        match (tc, fc) {
            (Some(t), Some(f)) => format!(
                "edge {}, floor-proxy {} ({:.1}×); all Tollgate roles {}",
                fmt_us(t.us_per_request),
                fmt_us(f.us_per_request),
                t.us_per_request / f.us_per_request.max(0.001),
                fmt_us(t.whole_us_per_request)
            ),
            _ => "—".into(),
        },
        tc.zip(fc)
            .map(|(t, f)| t.us_per_request - 2.0 * f.us_per_request),
        0.0,
        "µs",
        true,
    )
}

/// Tollgate's throughput frontier (p99 ≤ 10 ms) against 95 % of floor-proxy's.
fn throughput_vs_floor(r: &Results) -> Verdict {
    let (tf, ff) = (r.frontier(TOLLGATE, 10.0), r.frontier(FLOOR, 10.0));
    match (tf, ff) {
        (Some(tf), Some(ff)) => {
            let need = ff as f64 * 0.95;
            Verdict {
                target: "Throughput with p99 ≤ 10 ms vs floor-proxy".into(),
                goal: "≥ 95 % of floor-proxy's".into(),
                measured: format!(
                    "Tollgate {tf} RPS, floor-proxy {ff} RPS ({:.0} %)",
                    100.0 * tf as f64 / ff as f64
                ),
                met: Some(tf as f64 >= need),
                margin: if tf as f64 >= need {
                    format!("met ({:.0} RPS above 95 %)", tf as f64 - need)
                } else {
                    format!("missed by {:.0} RPS", need - tf as f64)
                },
                latency: true,
            }
        }
        _ => judge(
            "Throughput with p99 ≤ 10 ms vs floor-proxy",
            "≥ 95 % of floor-proxy's".into(),
            format!("Tollgate {tf:?}, floor {ff:?}"),
            None,
            0.0,
            "",
            true,
        ),
    }
}

/// Tollgate's throughput frontier (p99 ≤ 10 ms) against 50 × LiteLLM's best.
fn throughput_vs_litellm(r: &Results) -> Verdict {
    match (r.frontier(TOLLGATE, 10.0), litellm_best(r)) {
        (Some(tf), Some((name, measured_best))) => {
            // LiteLLM's sustained rate swings between ladder steps from run to run (100 and
            // 200 RPS in two runs here); judging against the higher of it and the issue's own
            // figure keeps the verdict the same from one run to the next.
            let best = measured_best.max(ISSUE_LITELLM_RPS);
            let need = 50.0 * best as f64;
            Verdict {
                target: "Throughput with p99 ≤ 10 ms vs LiteLLM".into(),
                goal: "≥ 50× LiteLLM's best configuration (measured, or the issue's 250 RPS if higher)".into(),
                measured: format!(
                    "Tollgate {tf} RPS; LiteLLM best: {name}, {best} RPS sustained at any latency (p99 ≤ 10 ms: {}) → {:.1}× (against the 250 RPS the issue quotes for LiteLLM on this machine kind: {:.1}×)",
                    r.frontier(&name, 10.0).map_or("never".into(), |v| format!("{v} RPS")),
                    tf as f64 / measured_best.max(1) as f64,
                    tf as f64 / ISSUE_LITELLM_RPS as f64
                ),
                met: Some(tf as f64 >= need),
                margin: if tf as f64 >= need {
                    format!("met ({:.0} RPS above 50×)", tf as f64 - need)
                } else {
                    format!("missed by {:.0} RPS ({:.1}× short)", need - tf as f64, 50.0 - tf as f64 / best.max(1) as f64)
                },
                latency: true,
            }
        }
        _ => judge(
            "Throughput with p99 ≤ 10 ms vs LiteLLM",
            "≥ 50× LiteLLM's best".into(),
            "LiteLLM not measured".into(),
            None,
            0.0,
            "",
            false,
        ),
    }
}

/// Errors and p99 of Tollgate's open-loop round at 5,000 RPS.
fn at_5000_rps(r: &Results) -> [Verdict; 2] {
    let at5k = r.rates.get(&5_000);
    let (t5, d5) = (
        at5k.and_then(|m| m.get(TOLLGATE)),
        at5k.and_then(|m| m.get(DIRECT)),
    );
    let errors = judge(
        "Errors at 5,000 RPS",
        "zero".into(),
        t5.map_or("—".into(), |s| {
            format!(
                "{} of {} requests ({:?})",
                s.error_count(),
                s.sent,
                s.errors
            )
        }),
        t5.map(|s| s.error_count() as f64),
        0.0,
        "errors",
        false,
    );
    let p99 = t5.map(|s| s.latency.p99_us);
    let tail = judge(
        "p99 at 5,000 RPS",
        "no stall: ≤ 10 ms".into(),
        p99.map_or("—".into(), |p| {
            let busy = t5
                .and_then(|s| s.machine_cores)
                .map_or_else(String::new, |c| format!("; machine {c:.2} cores busy"));
            format!(
                "Tollgate {} (direct {}){busy}",
                fmt_us(p),
                fmt_us(d5.map_or(0.0, |s| s.latency.p99_us))
            )
        }),
        p99.map(|p| p / 1_000.0),
        10.0,
        "ms",
        true,
    );
    [errors, tail]
}

/// Added TTFT p99 on streams against floor-proxy's, and stalled slow streams.
fn streams(r: &Results) -> [Verdict; 2] {
    let (sd, sf, st) = (
        r.streams.get(DIRECT),
        r.streams.get(FLOOR),
        r.streams.get(TOLLGATE),
    );
    let ttft = match (sd, sf, st) {
        (Some(d), Some(f), Some(t)) => Some((
            t.ttft_p99_us() - d.ttft_p99_us(),
            f.ttft_p99_us() - d.ttft_p99_us(),
            t.ttft_p99_of_rounds().map(|_| t.round_ttft_p99_us.len()),
        )),
        _ => None,
    };
    let added_ttft = judge(
        "Added TTFT p99 on streams",
        "≤ floor-proxy's + 100 µs".into(),
        ttft.map_or("—".into(), |(t, f, rounds)| {
            let over = rounds.map_or(String::new(), |n| format!(" (median of {n} rounds' p99s)"));
            format!(
                "Tollgate {}, floor-proxy {}{over}",
                fmt_signed(t),
                fmt_signed(f)
            )
        }),
        ttft.map(|(t, f, _)| t - f),
        100.0,
        "µs",
        true,
    );
    let stall = r.stall.get(TOLLGATE);
    let stalled = judge(
        "Stalled streams at 512 concurrent",
        "none".into(),
        stall.map_or("—".into(), |s| {
            format!(
                "{} stalled, {} errors, {} completed (c{})",
                s.stalled, s.errors, s.completed, s.concurrency
            )
        }),
        stall.map(|s| (s.stalled + s.errors) as f64),
        0.0,
        "streams",
        false,
    );
    [added_ttft, stalled]
}

/// What each held stream costs Tollgate in memory, against floor-proxy's.
fn memory_per_stream(r: &Results) -> Verdict {
    // The slope of the linear fit: what each held stream adds.
    let per_stream =
        |t: &str| Some((rss_at(r, t, 10_000.0)? - rss_at(r, t, 0.0)?) / 10_000.0 / 1e3);
    let largest = r
        .memory
        .get(TOLLGATE)
        .and_then(|m| m.points.last())
        .map_or(0, |p| p.established);
    let (tk, fk) = (per_stream(TOLLGATE), per_stream(FLOOR));
    judge(
        "Memory per held stream",
        "≤ floor-proxy's + 10 KB".into(),
        match (tk, fk) {
            (Some(t), Some(f)) => format!(
                "Tollgate {t:.1} KB, floor-proxy {f:.1} KB (linear fit up to {largest} streams; at 10,000: {})",
                rss_at(r, TOLLGATE, 10_000.0)
                    .map_or("—".into(), |b| format!("{:.0} MB", b / 1e6))
            ),
            _ => "—".into(),
        },
        tk.zip(fk).map(|(t, f)| t - f),
        10.0,
        "KB",
        false,
    )
}

/// Policy propagation's worst edge p99, and the worst case of a revocation taking effect.
fn propagation(r: &Results) -> [Verdict; 2] {
    let p = r.propagation.as_ref();
    let worst_p99 = p.and_then(|p| p.per_edge.iter().map(|e| e.p99_us).reduce(f64::max));
    let applied = judge(
        "Propagation p99, commit to applied, every edge",
        "≤ 100 ms".into(),
        p.map_or("—".into(), |p| {
            format!(
                "worst edge p99 {} (all: p50 {}, max {}; {} changes × {} edges, {} never seen)",
                fmt_us(worst_p99.unwrap_or(0.0)),
                fmt_us(p.all.p50_us),
                fmt_us(p.all.max_us),
                p.changes,
                p.per_edge.len(),
                p.missing
            )
        }),
        match p {
            Some(p) if p.missing > 0 => Some(f64::INFINITY),
            _ => worst_p99.map(|v| v / 1_000.0),
        },
        100.0,
        "ms",
        false,
    );
    let worst = p.map(|p| {
        let failed = p.revocation_failures + p.revocation_violations + p.missing > 0;
        if failed {
            f64::INFINITY
        } else {
            p.revocation.max_us.max(p.all.max_us) / 1_000.0
        }
    });
    let revoked = judge(
        "Revocation effective on every edge, worst case",
        "≤ 1 s".into(),
        p.map_or("—".into(), |p| {
            format!(
                "revoked key refused after at most {} ({} revocations × {} edges; {} failures, {} served after applied); slowest change applied in {}",
                fmt_us(p.revocation.max_us),
                p.revocation.count / p.per_edge.len().max(1) as u64,
                p.per_edge.len(),
                p.revocation_failures,
                p.revocation_violations,
                fmt_us(p.all.max_us)
            )
        }),
        worst,
        1_000.0,
        "ms",
        false,
    );
    [applied, revoked]
}

/// Whether a latency or throughput target was missed (then a profile is worth taking).
pub fn latency_missed(r: &Results) -> bool {
    verdicts(r)
        .iter()
        .any(|v| v.latency && v.met == Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed full run of 2026-12-04 (a build with frame pointers), judged against the targets.
    #[test]
    fn the_targets_are_judged_on_a_committed_run() -> anyhow::Result<()> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/2026-12-04-vm-fp.json");
        let run: Results = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let verdicts = verdicts(&run);
        let met = |target: &str| {
            verdicts
                .iter()
                .find(|v| v.target == target)
                .map(|v| (v.met, v.measured.clone()))
        };
        // 195.0 µs against 2 × 78.1 µs.
        assert_eq!(met("CPU per request, edge").map(|m| m.0), Some(Some(false)));
        // 5,000 RPS against 95 % of 9,000.
        let throughput = met("Throughput with p99 ≤ 10 ms vs floor-proxy");
        assert_eq!(throughput.map(|m| m.0), Some(Some(false)));
        // 9.09 ms.
        assert_eq!(met("p99 at 5,000 RPS").map(|m| m.0), Some(Some(true)));
        let memory = met("Memory per held stream").ok_or_else(|| anyhow::anyhow!("no row"))?;
        assert_eq!(memory.0, Some(false), "{}", memory.1);
        assert!(memory.1.starts_with("Tollgate "), "{}", memory.1);
        Ok(())
    }

    /// A run whose streams kept their rounds: TTFT p99 is read as the median of the rounds'.
    #[test]
    fn ttft_p99_is_judged_on_the_median_of_the_rounds() {
        let streamed = |rounds: &[f64]| crate::results::StreamSummary {
            ttft: crate::results::Pct {
                p99_us: 50_000.0,
                ..Default::default()
            },
            round_ttft_p99_us: rounds.to_vec(),
            ..Default::default()
        };
        let mut r = Results::default();
        r.streams
            .insert(DIRECT.into(), streamed(&[1_000.0, 1_100.0, 900.0]));
        r.streams
            .insert(FLOOR.into(), streamed(&[2_000.0, 2_100.0, 1_900.0]));
        // One outlying round in three.
        r.streams
            .insert(TOLLGATE.into(), streamed(&[2_050.0, 9_000.0, 1_950.0]));
        let [ttft, _] = streams(&r);
        assert_eq!(ttft.met, Some(true), "{}", ttft.measured);
        assert_eq!(
            ttft.measured,
            "Tollgate +1.05 ms, floor-proxy +1.00 ms (median of 3 rounds' p99s)"
        );
        r.streams
            .insert(TOLLGATE.into(), streamed(&[2_050.0, 9_000.0, 2_150.0]));
        let [ttft, _] = streams(&r);
        assert_eq!(ttft.met, Some(false), "{}", ttft.measured);
    }
}
