//! A CPU profile of an edge under load, for the report when a target is missed: `perf record`
//! when the machine allows it, else a note saying why not.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::load::{self, OpenLoop, Shot};
use crate::suite::chat_body;

const RATE: f64 = 2_000.0;
const SECONDS: u64 = 6;

/// Profiles the edge `pid` while it serves `RATE` requests per second; returns the top of
/// `perf report` (self time by symbol).
pub async fn perf(pid: u32, addr: &str, auth: &str, dir: &Path) -> anyhow::Result<String> {
    if !Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        bail!("perf is not installed");
    }
    let data = dir.join("edge.perf.data");
    let mut record = Command::new("perf")
        .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &SECONDS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    let shot = Shot {
        authority: addr.to_owned(),
        path: "/v1/chat/completions".into(),
        auth: Some(auth.to_owned()),
        body: Bytes::from(chat_body("chat", false)),
    };
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
    let report = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "dso,symbol",
            "-g",
            "none",
            "--percent-limit",
            "0.7",
            "-i",
        ])
        .arg(&data)
        .output()
        .context("perf report")?;
    let text = String::from_utf8_lossy(&report.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(45)
        .collect();
    if lines.is_empty() {
        bail!("perf report was empty");
    }
    Ok(format!(
        "edge at {RATE:.0} RPS for {SECONDS} s, {}\n{}",
        "self time",
        lines.join("\n")
    ))
}
