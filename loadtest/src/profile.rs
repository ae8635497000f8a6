//! A CPU profile of an edge under load, for the report when a target is missed: `perf record`
//! when the machine allows it, else a note saying why not.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::{self, OpenLoop};
use crate::suite::{Target, chat_body};

const RATE: f64 = 2_000.0;
const SECONDS: u64 = 6;

/// Profiles the edge `edge` while it serves `RATE` requests per second; returns the top of
/// `perf report`: self time, and with `LOADTEST_CALL_GRAPH` set the time spent in each
/// function and what it calls, which shows where a subsystem's cost goes. `=dwarf` unwinds any
/// build by its unwind tables (heavier to record and to report); another value walks frame
/// pointers, for a build with them (`RUSTFLAGS="-C force-frame-pointers=yes"`).
/// `edge.perf.data` stays in `dir`.
pub async fn perf(edge: &Target<'_>, dir: &Path) -> anyhow::Result<String> {
    let call_graph = std::env::var("LOADTEST_CALL_GRAPH")
        .ok()
        .map(|how| if how == "dwarf" { "dwarf,8192" } else { "fp" });
    ensure_perf()?;
    let data = dir.join("edge.perf.data");
    let mut record = Command::new("perf");
    record.args(["record", "-F", "1999", "-p", &edge.main.pid().to_string()]);
    if let Some(how) = call_graph {
        record.args(["--call-graph", how]);
    }
    let mut record = record
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", &SECONDS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    let shot = edge.shot(chat_body("chat", false));
    let spec = OpenLoop {
        rate: RATE,
        duration: Duration::from_secs(SECONDS - 1),
        warmup: Duration::ZERO,
        max_in_flight: 2_000,
        timeout: Duration::from_secs(5),
    };
    tokio::task::spawn_blocking(move || load::open_loop(&shot, spec)).await??;
    let status = tokio::task::spawn_blocking(move || record.wait()).await??;
    if !status.success() {
        bail!("perf record failed ({status}); perf_event_paranoid may forbid it");
    }
    let by_dso = top(&data, &["--no-children", "--sort", "dso"], 10)?;
    let own = top(&data, &["--no-children", "--sort", "dso,symbol"], 30)?;
    let tollgate = top(
        &data,
        &[
            "--no-children",
            "--sort",
            "symbol",
            "--dsos",
            "tollgate",
            "--percent-limit",
            "0.1",
        ],
        25,
    )?;
    if own.is_empty() {
        bail!("perf report was empty");
    }
    let mut report = format!(
        "edge at {RATE:.0} RPS for {SECONDS} s\n\nself time by binary:\n{by_dso}\n\nself time by symbol:\n{own}\n\nself time in the tollgate binary (share of all samples):\n{tollgate}"
    );
    if call_graph.is_some() {
        let inclusive = top(&data, &["--children", "--sort", "symbol"], 60)?;
        report.push_str(&format!(
            "\n\ntime in each function and what it calls (share of all samples):\n{inclusive}"
        ));
    }
    Ok(report)
}

/// An error unless `perf` can be run.
pub(crate) fn ensure_perf() -> anyhow::Result<()> {
    if !Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        bail!("perf is not installed");
    }
    Ok(())
}

/// The first `lines` rows of `perf report` with `args`, as `percent  dso  symbol`.
fn top(data: &Path, args: &[&str], lines: usize) -> anyhow::Result<String> {
    let report = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "-g",
            "none",
            "--percent-limit",
            "0.5",
            "-i",
        ])
        .arg(data)
        .args(args)
        .output()
        .context("perf report")?;
    let text = String::from_utf8_lossy(&report.stdout);
    let rows: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            // Columns are padded for a terminal; keep the percentages, dso and symbol.
            let tokens: Vec<&str> = l.split_whitespace().take_while(|t| *t != "-").collect();
            let kind = tokens
                .iter()
                .position(|t| *t == "[k]" || *t == "[.]")
                .unwrap_or(tokens.len());
            let head = tokens[..kind].join("  ");
            let mut symbol = tokens
                .get(kind + 1..)
                .map_or_else(String::new, |rest| rest.join(" "));
            if symbol.len() > 110 {
                symbol = symbol.chars().take(110).collect::<String>() + "…";
            }
            format!("{head:<40} {symbol}")
        })
        .take(lines)
        .collect();
    Ok(rows.join("\n"))
}
