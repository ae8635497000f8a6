//! `TOLLGATE_METRICS_ADDR`: each distributed role (`tollgate control-plane`, `edge`,
//! `aggregator`) serves `/metrics` on that address, and no longer on the listener its clients
//! use, so that the scrape need not be public.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};
use common::free_port;

const TOKEN: &str = "metrics-address-test-token";

/// A role's process; killed on drop.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tollgate <role>` with `env` and its metrics on `metrics_port`; waits for the port.
async fn start(role: &str, dir: &Path, metrics_port: u16, env: &[(&str, String)]) -> Result<Role> {
    let log = dir.join(format!("{role}.err"));
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg(role)
        .env("NATS_URL", tollgate_test_support::nats_url().await?)
        .env(
            "TOLLGATE_BUS_PREFIX",
            tollgate_test_support::unique_name("metrics"),
        )
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("TOLLGATE_UI_ADDR", "off")
        .env("TOLLGATE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env_remove("TOLLGATE_CONTROL_PLANE_URL")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let role_process = Role(child);
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
            .await
            .is_ok()
        {
            return Ok(role_process);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    bail!("{role} did not serve its metrics within 30 s; its log:\n{log}")
}

/// The body of `url` when it answers 200.
async fn scraped(url: &str) -> Option<String> {
    let response = reqwest::get(url).await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.text().await.ok()
}

#[tokio::test]
async fn every_role_serves_metrics_on_its_own_address_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());

    let (admin, metrics) = (free_port()?, free_port()?);
    let env = [
        ("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin}")),
        ("DATABASE_URL", sqlite("policy.db")),
    ];
    let _control_plane = start("control-plane", dir.path(), metrics, &env).await?;
    let body = scraped(&format!("http://127.0.0.1:{metrics}/metrics")).await;
    assert!(body.is_some_and(|b| b.contains("tollgate_policy_committed_sequence")));
    let public = scraped(&format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(!public.is_some_and(|b| b.contains("tollgate_")));

    let (edge, metrics) = (free_port()?, free_port()?);
    let env = [("TOLLGATE_EDGE_ADDR", format!("127.0.0.1:{edge}"))];
    let _edge = start("edge", dir.path(), metrics, &env).await?;
    let body = scraped(&format!("http://127.0.0.1:{metrics}/metrics")).await;
    assert!(body.is_some_and(|b| b.contains("tollgate_policy_sequence")));
    let live = reqwest::get(format!("http://127.0.0.1:{edge}/health/live")).await?;
    assert_eq!(live.status(), 200, "the edge's API is served");
    let public = reqwest::get(format!("http://127.0.0.1:{edge}/metrics")).await?;
    assert_eq!(public.status(), 404);

    let (usage, export, metrics) = (free_port()?, free_port()?, free_port()?);
    let env = [
        ("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{usage}")),
        ("TOLLGATE_USAGE_HTTP_ADDR", format!("127.0.0.1:{export}")),
        ("DATABASE_URL", sqlite("usage.db")),
    ];
    let _aggregator = start("aggregator", dir.path(), metrics, &env).await?;
    let body = scraped(&format!("http://127.0.0.1:{metrics}/metrics")).await;
    assert!(body.is_some_and(|b| b.contains("tollgate_usage_recorded")));
    let public = reqwest::get(format!("http://127.0.0.1:{export}/metrics")).await?;
    assert_eq!(public.status(), 404);
    Ok(())
}
