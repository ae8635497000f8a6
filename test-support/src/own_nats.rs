//! A nats-server of one test's own, with JetStream on disk, so the test can restart it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::{free_port, listening, nats_server, terminate};

/// A nats-server that keeps its JetStream store across restarts; killed when dropped.
pub struct OwnNats {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl OwnNats {
    /// Starts the server and waits until it listens.
    pub async fn start() -> Result<Self> {
        let mut nats = OwnNats {
            port: free_port()?,
            dir: tempfile::tempdir()?,
            child: None,
        };
        nats.spawn().await?;
        Ok(nats)
    }

    async fn spawn(&mut self) -> Result<()> {
        let child = Command::new(nats_server()?)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        self.child = Some(child);
        if !listening(self.port, Duration::from_secs(15)).await {
            bail!(
                "nats-server did not listen on port {} within 15 s",
                self.port
            );
        }
        Ok(())
    }

    /// Stops the server (SIGTERM, as an orchestrator would) and starts it again `down_for` later.
    pub async fn restart(&mut self, down_for: Duration) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // std's `kill` sends SIGKILL; an orderly restart is SIGTERM.
            terminate(&child);
            child.wait()?;
        }
        tokio::time::sleep(down_for).await;
        self.spawn().await
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
