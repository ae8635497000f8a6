//! LiteLLM's proxy, the comparison: installed from PyPI into a venv of its own (reused by
//! later runs), pointed at the same mock, without a database (so only its master key
//! authenticates), with telemetry off, quiet logs and the bundled cost map.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::procs::{Proc, free_port};
use crate::tollgate::{MODELS, wait_for};

pub const MASTER_KEY: &str = "sk-loadtest-master";

/// The venv holding LiteLLM: `$HOME/.cache/tollgate-loadtest/litellm-venv`.
pub fn venv_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/tollgate-loadtest/litellm-venv")
}

/// Installs `litellm[proxy]` unless the venv has it; returns its version.
pub fn install(python: &str) -> anyhow::Result<String> {
    let venv = venv_dir();
    let litellm = venv.join("bin/litellm");
    if !litellm.exists() {
        eprintln!(
            "loadtest: installing litellm[proxy] into {}",
            venv.display()
        );
        if let Some(parent) = venv.parent() {
            std::fs::create_dir_all(parent)?;
        }
        run(Command::new(python).args(["-m", "venv"]).arg(&venv))
            .context("creating the venv (is python3-venv installed?)")?;
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", "litellm[proxy]"]))
            .context("pip install 'litellm[proxy]'")?;
    }
    let output = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ])
        .output()?;
    if !output.status.success() {
        bail!("litellm is not importable from {}", venv.display());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{command:?} failed: {}",
            stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}

/// A running LiteLLM proxy.
pub struct LiteLlm {
    pub proc: Proc,
    pub addr: String,
    pub workers: u32,
}

/// Starts `litellm --config … --port …` (with `--num_workers` when `workers` > 1) in front of
/// `mock` and waits until it answers.
pub async fn start(mock: &str, workers: u32, dir: &Path) -> anyhow::Result<LiteLlm> {
    let config = dir.join(format!("litellm-{workers}w.yaml"));
    let mut yaml = String::from("model_list:\n");
    for model in MODELS {
        yaml.push_str(&format!(
            "  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n      api_base: http://{mock}/v1\n      api_key: sk-mock\n"
        ));
    }
    yaml.push_str(&format!("general_settings:\n  master_key: {MASTER_KEY}\n"));
    std::fs::write(&config, yaml)?;
    let port = free_port()?;
    let mut command = Command::new(venv_dir().join("bin/litellm"));
    command
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_TELEMETRY_DISABLED", "true")
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env_remove("DATABASE_URL");
    if workers > 1 {
        command.args(["--num_workers", &workers.to_string()]);
    }
    let name = format!("litellm-{workers}w");
    let mut proc = Proc::spawn(&name, command, &dir.join(format!("{name}.log")), false)?;
    let addr = format!("127.0.0.1:{port}");
    let ready = wait_for(Duration::from_secs(120), || crate::procs::answers(&addr)).await;
    proc.check_alive()?;
    ready.with_context(|| format!("{name} did not listen within 120 s (see {name}.log)"))?;
    // Listening is not serving yet: wait for a real answer through it.
    let body = bytes::Bytes::from(crate::suite::chat_body("chat", false));
    let auth = format!("Bearer {MASTER_KEY}");
    for _ in 0..600 {
        if let Ok((200, _)) =
            crate::http::post(&addr, "/v1/chat/completions", Some(&auth), body.clone()).await
        {
            return Ok(LiteLlm {
                proc,
                addr,
                workers,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{name} never answered a chat completion (see {name}.log)")
}
