//! This run beside the previous one of the same mode in the results directory, figure by
//! figure: the headline figures of the report, each with its change, so that a regression or
//! an improvement shows without reading two reports side by side. Runs on different machines
//! or builds differ for those reasons too; the report's metadata says which.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::results::{Cpu, Results};
use crate::suite::{DIRECT, FLOOR, TOLLGATE, TOLLGATE_UP};
use crate::verdict::{fmt_us, rss_at};

/// How a figure reads.
#[derive(Clone, Copy)]
enum Unit {
    Micros,
    Rps,
    Megabytes,
    /// A count per request (context switches).
    Count,
}

/// One headline figure of a run: (name, value, unit, whether lower is better).
type Figure = (&'static str, Option<f64>, Unit, bool);

/// The headline figures of `r`.
fn figures(r: &Results) -> Vec<Figure> {
    use Unit::{Count, Megabytes, Micros, Rps};
    let c1 = |t: &str, pick: fn(&crate::results::Summary) -> f64| {
        Some(pick(r.c1.get(t)?) - pick(r.c1.get(DIRECT)?))
    };
    let p50 = |s: &crate::results::Summary| s.latency.p50_us;
    let p99 = |s: &crate::results::Summary| s.latency.p99_us;
    let ttft =
        |t: &str| Some(r.streams.get(t)?.ttft_p99_us() - r.streams.get(DIRECT)?.ttft_p99_us());
    let cpu = |t: &str| r.cpu.get(t).map(|c| c.us_per_request);
    let machine_cpu = |t: &str| r.cpu.get(t).and_then(|c| c.machine_us_per_request);
    let frontier = |t: &str| r.frontier(t, 10.0).map(|rate| rate as f64);
    let at_5000 = r
        .rates
        .get(&5_000)
        .and_then(|by| by.get(TOLLGATE))
        .map(|s| s.latency.p99_us);
    let rss = |t: &str| rss_at(r, t, 10_000.0).map(|bytes| bytes / 1e6);
    let propagation = r.propagation.as_ref().map(|p| p.all.p99_us);
    vec![
        lower(
            "Tollgate added p50, concurrency 1",
            c1(TOLLGATE, p50),
            Micros,
        ),
        lower(
            "Tollgate added p99, concurrency 1",
            c1(TOLLGATE, p99),
            Micros,
        ),
        lower(
            "Tollgate's own time p50, concurrency 1",
            r.c1.get(TOLLGATE)
                .and_then(|s| Some(s.own.as_ref()?.p50_us)),
            Micros,
        ),
        lower(
            "floor-proxy added p50, concurrency 1",
            c1(FLOOR, p50),
            Micros,
        ),
        lower(
            "floor-proxy added p99, concurrency 1",
            c1(FLOOR, p99),
            Micros,
        ),
        lower("edge CPU per request", cpu(TOLLGATE), Micros),
        lower(
            "Tollgate CPU per request, all roles",
            r.cpu.get(TOLLGATE).map(|c| c.whole_us_per_request),
            Micros,
        ),
        lower("floor-proxy CPU per request", cpu(FLOOR), Micros),
        lower(
            "machine CPU per request, Tollgate",
            machine_cpu(TOLLGATE),
            Micros,
        ),
        lower(
            "machine CPU per request, floor-proxy",
            machine_cpu(FLOOR),
            Micros,
        ),
        lower(
            "edge wake-ups per request",
            r.cpu.get(TOLLGATE).and_then(|c| c.wakeups_per_request),
            Count,
        ),
        lower(
            "floor-proxy wake-ups per request",
            r.cpu.get(FLOOR).and_then(|c| c.wakeups_per_request),
            Count,
        ),
        lower(
            "edge system calls per request",
            r.cpu.get(TOLLGATE).and_then(Cpu::syscalls_per_request),
            Count,
        ),
        lower(
            "floor-proxy system calls per request",
            r.cpu.get(FLOOR).and_then(Cpu::syscalls_per_request),
            Count,
        ),
        higher(
            "Tollgate throughput at p99 ≤ 10 ms",
            frontier(TOLLGATE),
            Rps,
        ),
        higher(
            "floor-proxy throughput at p99 ≤ 10 ms",
            frontier(FLOOR),
            Rps,
        ),
        higher(
            "`tollgate up` throughput at p99 ≤ 10 ms",
            frontier(TOLLGATE_UP),
            Rps,
        ),
        lower("`tollgate up` CPU per request", cpu(TOLLGATE_UP), Micros),
        lower("Tollgate p99 at 5,000 RPS", at_5000, Micros),
        lower("Tollgate added TTFT p99", ttft(TOLLGATE), Micros),
        lower("floor-proxy added TTFT p99", ttft(FLOOR), Micros),
        lower(
            "Tollgate RSS at 10,000 held streams",
            rss(TOLLGATE),
            Megabytes,
        ),
        lower(
            "floor-proxy RSS at 10,000 held streams",
            rss(FLOOR),
            Megabytes,
        ),
        lower("propagation p99, all edges", propagation, Micros),
    ]
}

/// A figure that is better lower.
fn lower(name: &'static str, value: Option<f64>, unit: Unit) -> Figure {
    (name, value, unit, true)
}

/// A figure that is better higher.
fn higher(name: &'static str, value: Option<f64>, unit: Unit) -> Figure {
    (name, value, unit, false)
}

fn show(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Micros => fmt_us(value),
        Unit::Rps => format!("{value:.0} RPS"),
        Unit::Megabytes => format!("{value:.0} MB"),
        Unit::Count => format!("{value:.2}"),
    }
}

/// The change from `before` to `after`, with its direction: better, worse or the same
/// (within 2 %, which is noise on a shared 2-core machine).
fn change(before: f64, after: f64, unit: Unit, lower_is_better: bool) -> String {
    let delta = after - before;
    let share = if before.abs() > f64::EPSILON {
        delta / before.abs() * 100.0
    } else {
        0.0
    };
    let signed = match unit {
        Unit::Micros if delta < 0.0 => format!("−{}", fmt_us(-delta)),
        Unit::Micros => format!("+{}", fmt_us(delta)),
        _ if delta < 0.0 => format!("−{}", show(-delta, unit)),
        _ => format!("+{}", show(delta, unit)),
    };
    let verdict = if share.abs() < 2.0 {
        "same"
    } else if (delta < 0.0) == lower_is_better {
        "better"
    } else {
        "worse"
    };
    format!("{signed} ({share:+.0} %) {verdict}")
}

/// The markdown section comparing `current` with `previous` (read from `previous_path`).
pub fn section(previous: &Results, previous_path: &Path, current: &Results) -> String {
    let name = previous_path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let meta = |r: &Results, key: &str| r.meta.get(key).cloned().unwrap_or_else(|| "?".into());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Compared with the previous run\n\nThe previous {} run in this directory (the newest on the same CPU, where there is one), [`{name}`]({name}) (commit {}, {} build, {}), figure by figure. A change under 2 % is called the same: that is the noise of this machine.\n",
        meta(previous, "mode"),
        meta(previous, "commit"),
        meta(previous, "build"),
        meta(previous, "cpu"),
    );
    let _ = writeln!(out, "| figure | previous | this run | change |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (before, after) in figures(previous).into_iter().zip(figures(current)) {
        let (name, before_value, unit, lower_is_better) = before;
        let cell = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| show(v, unit));
        let delta = match (before_value, after.1) {
            (Some(b), Some(a)) => change(b, a, unit, lower_is_better),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {delta} |",
            cell(before_value),
            cell(after.1)
        );
    }
    out
}

/// The newest run of `mode` in `dir` other than `stem` that is older than `before` (this run's
/// `date`, when known), with its figures: the newest on the same `cpu` if there is one (a VM's
/// CPU can change between runs, and figures move with it), else the newest on the same CPU
/// model whatever its vector extension, else the newest; `None` when there
/// is none or it cannot be read. Runs are ordered by their recorded date, then by name (the
/// date it starts with), so a second run of one day follows the first.
pub fn previous(
    dir: &Path,
    mode: &str,
    stem: &str,
    cpu: Option<&str>,
    before: Option<&str>,
) -> Option<(PathBuf, Results)> {
    let mut runs: Vec<(String, PathBuf, Results)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .filter(|path| path.file_stem().is_some_and(|s| s != stem))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let results = serde_json::from_str::<Results>(&text).ok()?;
            let date = results.meta.get("date").cloned().unwrap_or_default();
            Some((date, path, results))
        })
        .filter(|(_, _, results)| results.meta.get("mode").map(String::as_str) == Some(mode))
        .filter(|(date, _, _)| {
            before.is_none_or(|before| date.is_empty() || date.as_str() < before)
        })
        .collect();
    runs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    // The CPU's name without the vector extension that labels have carried since 2026-12-07
    // ("AMD EPYC (AVX2)"), so that a run is still compared with those labelled before.
    let model = |label: &str| label.split(" (").next().unwrap_or(label).to_owned();
    let likeness = |results: &Results| match (cpu, results.meta.get("cpu")) {
        (Some(wanted), Some(label)) if label == wanted => 2,
        (Some(wanted), Some(label)) if model(label) == model(wanted) => 1,
        _ => 0,
    };
    runs.into_iter()
        .enumerate()
        .max_by_key(|(newer, (_, _, results))| (likeness(results), *newer))
        .map(|(_, (_, path, results))| (path, results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Cpu, Summary};

    fn run(edge_cpu: f64, tollgate_p50: f64) -> Results {
        let mut r = Results::default();
        r.meta.insert("mode".into(), "full".into());
        for (target, p50) in [(DIRECT, 100.0), (FLOOR, 190.0), (TOLLGATE, tollgate_p50)] {
            let mut summary = Summary::default();
            summary.latency.p50_us = p50;
            r.c1.insert(target.into(), summary);
        }
        let cpu = Cpu {
            us_per_request: edge_cpu,
            ..Cpu::default()
        };
        r.cpu.insert(TOLLGATE.into(), cpu);
        r
    }

    #[test]
    fn each_figure_is_shown_with_its_change_and_direction() {
        let text = section(
            &run(200.0, 400.0),
            Path::new("old.json"),
            &run(150.0, 404.0),
        );
        assert!(
            text.contains(
                "| edge CPU per request | 200.0 µs | 150.0 µs | −50.0 µs (-25 %) better |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| Tollgate added p50, concurrency 1 | 300.0 µs | 304.0 µs | +4.0 µs (+1 %) same |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| floor-proxy CPU per request | — | — | — |"),
            "{text}"
        );
    }

    #[test]
    fn the_previous_run_is_the_newest_of_the_same_mode_and_cpu_but_not_this_one()
    -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(tollgate_test_support::unique_name("compare"));
        std::fs::create_dir_all(&dir)?;
        let write = |name: &str, mode: &str, cpu: &str| -> anyhow::Result<()> {
            let mut r = Results::default();
            r.meta.insert("mode".into(), mode.into());
            r.meta.insert("cpu".into(), cpu.into());
            std::fs::write(dir.join(name), serde_json::to_string(&r)?)?;
            Ok(())
        };
        write("2026-11-26-vm.json", "full", "AMD")?;
        write("2026-12-02-vm.json", "full", "Intel")?;
        write("2026-12-03-vm.json", "full", "Intel")?;
        write("2026-12-04-vm-quick.json", "quick", "AMD")?;
        write("2026-12-05-vm.json", "full", "AMD")?;
        let name = |found: Option<(PathBuf, Results)>| found.map(|(path, _)| path);
        // (the CPU asked for, the run expected, why)
        let cases = [
            (None, "2026-12-03-vm.json", "the newest before this one"),
            (Some("AMD"), "2026-11-26-vm.json", "the newest on this CPU"),
            (Some("Arm"), "2026-12-03-vm.json", "none on it: the newest"),
            (Some("AMD (AVX2)"), "2026-11-26-vm.json", "same model"),
        ];
        let found: Vec<_> = cases
            .iter()
            .map(|(cpu, ..)| name(previous(&dir, "full", "2026-12-05-vm", *cpu, None)))
            .collect();
        let smoke = previous(&dir, "smoke", "x", None, None);
        std::fs::remove_dir_all(&dir)?;
        for ((_, expected, why), found) in cases.iter().zip(found) {
            assert!(found.is_some_and(|path| path.ends_with(expected)), "{why}");
        }
        assert!(smoke.is_none());
        Ok(())
    }

    #[test]
    fn a_second_run_of_one_day_is_compared_with_the_first_and_not_the_other_way()
    -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(tollgate_test_support::unique_name("compare"));
        std::fs::create_dir_all(&dir)?;
        for (name, date) in [
            ("2026-12-06-vm.json", "2026-12-06 15:00 UTC"),
            ("2026-12-07-vm.json", "2026-12-07 05:36 UTC"),
            ("2026-12-07-vm-0907.json", "2026-12-07 09:07 UTC"),
        ] {
            let mut r = Results::default();
            r.meta.insert("mode".into(), "full".into());
            r.meta.insert("date".into(), date.into());
            std::fs::write(dir.join(name), serde_json::to_string(&r)?)?;
        }
        let of = |stem: &str, date: &str| {
            previous(&dir, "full", stem, None, Some(date)).map(|(path, _)| path)
        };
        let second = of("2026-12-07-vm-0907", "2026-12-07 09:07 UTC");
        let first = of("2026-12-07-vm", "2026-12-07 05:36 UTC");
        std::fs::remove_dir_all(&dir)?;
        assert!(second.is_some_and(|p| p.ends_with("2026-12-07-vm.json")));
        assert!(first.is_some_and(|p| p.ends_with("2026-12-06-vm.json")));
        Ok(())
    }

    #[test]
    fn every_committed_run_can_be_compared_with() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let results: Results = serde_json::from_str(&std::fs::read_to_string(&path)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let figures = figures(&results);
                assert!(
                    figures.iter().any(|f| f.1.is_some()),
                    "{}: no figure read",
                    path.display()
                );
            }
        }
        Ok(())
    }
}
