//! A throwaway nats-server with JetStream and authorization on: one user per role, with the
//! publish permissions `deploy/README.md` gives (edges and the aggregator may not publish
//! policy).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// The users of [`AuthorizingNats`] as (user, password).
pub const CONTROL_PLANE_USER: (&str, &str) = ("control-plane", "cp-secret");
pub const EDGE_USER: (&str, &str) = ("edge", "edge-secret");
pub const AGGREGATOR_USER: (&str, &str) = ("aggregator", "aggregator-secret");

/// The server; killed on drop.
pub struct AuthorizingNats {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    _dir: TempDir,
}

impl Drop for AuthorizingNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AuthorizingNats {
    /// Starts a server whose roles use the bus prefix `prefix`.
    pub async fn start(prefix: &str) -> Result<AuthorizingNats> {
        let dir = tempfile::tempdir()?;
        let port = crate::free_port()?;
        let policy = format!("{prefix}.policy");
        let user = |(name, password): (&str, &str), deny: &str| {
            format!("{{ user: \"{name}\", password: \"{password}\"{deny} }}")
        };
        let deny =
            format!(", permissions: {{ publish: {{ deny: [\"{policy}\", \"{policy}.>\"] }} }}");
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{store}\" }}\n\
             authorization {{ users = [\n  {}\n  {}\n  {}\n] }}\n",
            user(CONTROL_PLANE_USER, ""),
            user(EDGE_USER, &deny),
            user(AGGREGATOR_USER, &deny),
            store = dir.path().join("store").display(),
        );
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config)?;
        let child = Command::new(crate::nats_server()?)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        let server = AuthorizingNats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        if crate::listening(port, Duration::from_secs(15)).await {
            return Ok(server);
        }
        bail!("nats-server with authorization did not listen on {port}")
    }
}
