//! The Python interpreter that runs the real client SDKs (OpenAI's, …) against the edge.

use std::ffi::OsStr;

use anyhow::{Context, Result, bail};

/// The interpreter named by `TOLLGATE_PYTHON` (set by `scripts/test` to its virtualenv's), else `python3`.
pub fn python() -> String {
    std::env::var("TOLLGATE_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// [`python`], once it is known to import `module`; otherwise an error saying how to get it.
pub async fn python_with(module: &str) -> Result<String> {
    let python = python();
    let probe = tokio::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .await
        .with_context(|| {
            format!("running {python}: run the tests with `scripts/test`, or set TOLLGATE_PYTHON")
        })?;
    if !probe.status.success() {
        bail!(
            "the Python package `{module}` is not importable by {python}: run the tests with \
             `scripts/test` (it installs tests/requirements.txt into a cached virtualenv), or \
             point TOLLGATE_PYTHON at an interpreter that has it\n{}",
            String::from_utf8_lossy(&probe.stderr)
        );
    }
    Ok(python)
}

/// Runs `python` with `args` and `env` (unbuffered, killed if it outlives two minutes); its
/// stdout when it exits 0, otherwise an error holding what it printed.
pub async fn run_python(python: &str, args: &[&OsStr], env: &[(&str, &str)]) -> Result<String> {
    let mut command = tokio::process::Command::new(python);
    command
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
        .await
        .context("the Python script did not finish within 120 s")??;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    if !out.status.success() {
        bail!(
            "the Python script {args:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
    }
    Ok(stdout)
}
