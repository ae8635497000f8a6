//! The Python interpreter that runs the real client SDKs (OpenAI's, …) against the edge.

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
