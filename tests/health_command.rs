//! `tollgate health`, the container image's health check: it exits 0 for each role of a
//! running `tollgate up` (plain, and over TLS), and non-zero with a reason when nothing answers.

mod common;

use std::process::{Command, Output};

use anyhow::Result;
use common::{Up, free_port, tls_fixture};

fn health(role: &str, env: &[(&str, String)]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["health", role])
        .env_remove("TOLLGATE_TLS_CERT")
        .env_remove("TOLLGATE_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?)
}

async fn every_role_of_up_answers(tls: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let usage = ("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{}", free_port()?));
    let mut env = vec![usage.clone()];
    if tls {
        for (name, file) in [
            ("TOLLGATE_TLS_CERT", "edge-a.pem"),
            ("TOLLGATE_TLS_KEY", "edge-a.key"),
        ] {
            env.push((name, tls_fixture(file).display().to_string()));
        }
    }
    let up = Up::start_with(dir.path(), "http://127.0.0.1:9/v1", &env)?;
    up.wait_ready().await?;
    let mut settings = vec![
        ("TOLLGATE_EDGE_ADDR", format!("127.0.0.1:{}", up.edge)),
        ("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{}", up.admin)),
        usage,
    ];
    if tls {
        settings.extend([
            (
                "TOLLGATE_TLS_CERT",
                tls_fixture("edge-a.pem").display().to_string(),
            ),
            (
                "TOLLGATE_TLS_CA",
                tls_fixture("ca-a.pem").display().to_string(),
            ),
        ]);
    }
    for role in ["edge", "control-plane", "aggregator"] {
        let checked = health(role, &settings)?;
        assert!(
            checked.status.success(),
            "{role}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    Ok(())
}

#[tokio::test]
async fn every_role_of_up_is_healthy() -> Result<()> {
    every_role_of_up_answers(false).await
}

#[tokio::test]
async fn every_role_of_up_is_healthy_over_tls() -> Result<()> {
    every_role_of_up_answers(true).await
}

#[tokio::test]
async fn a_role_that_does_not_answer_is_unhealthy() -> Result<()> {
    let nothing = format!("127.0.0.1:{}", free_port()?);
    for (role, setting) in [
        ("edge", "TOLLGATE_EDGE_ADDR"),
        ("control-plane", "TOLLGATE_ADMIN_ADDR"),
        ("aggregator", "TOLLGATE_USAGE_ADDR"),
    ] {
        let checked = health(role, &[(setting, nothing.clone())])?;
        assert!(!checked.status.success(), "{role}");
        assert!(
            String::from_utf8_lossy(&checked.stderr).contains("answer"),
            "{role}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    Ok(())
}
