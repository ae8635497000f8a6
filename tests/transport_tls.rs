//! The admin and usage APIs over TLS: `tollgate control-plane` and `tollgate aggregator` with
//! `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY` serve TLS only, and the CLI and the roles' snapshot
//! client reach them at `https://` addresses, verifying the server against `TOLLGATE_TLS_CA`.
//! With `TOLLGATE_TLS_CLIENT_CA` a client must show a certificate that CA signed: without one
//! the handshake fails, so no call is read, whatever token it carries. Certificates:
//! `edge/tests/fixtures/tls`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::Result;
use common::{ADMIN_TOKEN, Up, free_port, tls_fixture, wait_for_port};
use tollgate_runtime::follow::{GrpcSnapshots, SnapshotSource};
use tollgate_runtime::tls::ClientTls;

const TOKEN: &str = "tls-test-admin-token";

/// A `tollgate` role over TLS; killed on drop.
struct Role {
    child: Child,
    port: u16,
}

impl Role {
    async fn control_plane(dir: &Path, client_ca: Option<&str>) -> Result<Role> {
        let port = free_port()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .arg("control-plane")
            .env("TOLLGATE_UI_ADDR", "off")
            .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", dir.join("policy.db").display()),
            )
            .env("NATS_URL", tollgate_test_support::nats_url().await?)
            .env(
                "TOLLGATE_BUS_PREFIX",
                tollgate_test_support::unique_name("tls"),
            )
            .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
            .env("TOLLGATE_TLS_CERT", tls_fixture("edge-a.pem"))
            .env("TOLLGATE_TLS_KEY", tls_fixture("edge-a.key"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("control-plane.err"))?);
        if let Some(ca) = client_ca {
            command.env("TOLLGATE_TLS_CLIENT_CA", tls_fixture(ca));
        }
        let child = command.spawn()?;
        let control_plane = Role { child, port };
        wait_for_port(
            port,
            Duration::from_secs(30),
            Some(&dir.join("control-plane.err")),
        )
        .await?;
        Ok(control_plane)
    }

    /// `tollgate admin ARGS` at `https://127.0.0.1:PORT` with the admin token and `env`.
    fn admin(&self, args: &[&str], env: &[(&str, &Path)]) -> Result<Output> {
        Ok(Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["admin", "--output", "json"])
            .args(args)
            .env(
                "TOLLGATE_ADMIN_ADDR",
                format!("https://127.0.0.1:{}", self.port),
            )
            .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
            .env_remove("TOLLGATE_TLS_CA")
            .env_remove("TOLLGATE_TLS_CLIENT_CERT")
            .env_remove("TOLLGATE_TLS_CLIENT_KEY")
            .envs(env.iter().copied())
            .output()?)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_cli_reaches_the_admin_api_over_tls_and_verifies_the_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cp = Role::control_plane(dir.path(), None).await?;
    let trusted = tls_fixture("ca-a.pem");
    let created = cp.admin(
        &["teams", "create", "--name", "over-tls"],
        &[("TOLLGATE_TLS_CA", &trusted)],
    )?;
    assert!(created.status.success(), "{}", stderr(&created));
    let listed = cp.admin(&["teams", "list"], &[("TOLLGATE_TLS_CA", &trusted)])?;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("over-tls"));

    // A server whose certificate does not chain to the CA the client trusts is not spoken to.
    let other = tls_fixture("ca-b.pem");
    let refused = cp.admin(&["teams", "list"], &[("TOLLGATE_TLS_CA", &other)])?;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot reach the admin API"),
        "{}",
        stderr(&refused)
    );

    // Plain gRPC to the TLS port gets nothing.
    let plain = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["admin", "teams", "list"])
        .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{}", cp.port))
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .output()?;
    assert!(!plain.status.success());
    Ok(())
}

#[tokio::test]
async fn with_mutual_tls_a_client_without_a_certificate_is_refused_before_any_call() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cp = Role::control_plane(dir.path(), Some("ca-c.pem")).await?;
    let trusted = tls_fixture("ca-a.pem");
    let (cert, key) = (tls_fixture("client-c.pem"), tls_fixture("client-c.key"));

    // The admin token alone is not enough: the handshake fails, and nothing is created.
    let refused = cp.admin(
        &["teams", "create", "--name", "no-certificate"],
        &[("TOLLGATE_TLS_CA", &trusted)],
    )?;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot reach the admin API"),
        "{}",
        stderr(&refused)
    );

    // A certificate from another CA is refused the same way.
    let (wrong_cert, wrong_key) = (tls_fixture("edge-b.pem"), tls_fixture("edge-b.key"));
    let wrong = cp.admin(
        &["teams", "create", "--name", "wrong-certificate"],
        &[
            ("TOLLGATE_TLS_CA", &trusted),
            ("TOLLGATE_TLS_CLIENT_CERT", &wrong_cert),
            ("TOLLGATE_TLS_CLIENT_KEY", &wrong_key),
        ],
    )?;
    assert!(!wrong.status.success(), "{}", stderr(&wrong));

    let with_certificate = [
        ("TOLLGATE_TLS_CA", trusted.as_path()),
        ("TOLLGATE_TLS_CLIENT_CERT", cert.as_path()),
        ("TOLLGATE_TLS_CLIENT_KEY", key.as_path()),
    ];
    let created = cp.admin(
        &["teams", "create", "--name", "with-certificate"],
        &with_certificate,
    )?;
    assert!(created.status.success(), "{}", stderr(&created));
    let listed = cp.admin(&["teams", "list"], &with_certificate)?;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("with-certificate"), "{listed}");
    assert!(!listed.contains("no-certificate"), "{listed}");
    assert!(!listed.contains("wrong-certificate"), "{listed}");

    // Edges and the aggregator fetch snapshots the same way (TOLLGATE_CONTROL_PLANE_URL).
    let url = format!("https://127.0.0.1:{}", cp.port);
    let mut tls = ClientTls {
        ca: Some(trusted.clone()),
        identity: Some((cert, key)),
    };
    let snapshot = GrpcSnapshots::with_tls(&url, TOKEN, &tls)
        .map_err(anyhow::Error::msg)?
        .fetch()
        .await
        .map_err(anyhow::Error::msg)?;
    let snapshot = tollgate_runtime::follow::open_snapshot(&snapshot, None)?;
    assert!(
        snapshot
            .teams
            .values()
            .any(|t| t.name == "with-certificate")
    );
    tls.identity = None;
    let refused = GrpcSnapshots::with_tls(&url, TOKEN, &tls)
        .map_err(anyhow::Error::msg)?
        .fetch()
        .await;
    assert!(refused.is_err(), "a snapshot without a client certificate");
    Ok(())
}

#[tokio::test]
async fn the_usage_api_and_its_export_are_served_over_mutual_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (grpc, http) = (free_port()?, free_port()?);
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("aggregator")
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("usage.db").display()
            ),
        )
        .env("NATS_URL", tollgate_test_support::nats_url().await?)
        .env(
            "TOLLGATE_BUS_PREFIX",
            tollgate_test_support::unique_name("tls"),
        )
        .env("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{grpc}"))
        .env("TOLLGATE_USAGE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("TOLLGATE_TLS_CERT", tls_fixture("edge-a.pem"))
        .env("TOLLGATE_TLS_KEY", tls_fixture("edge-a.key"))
        .env("TOLLGATE_TLS_CLIENT_CA", tls_fixture("ca-c.pem"))
        .env_remove("TOLLGATE_CONTROL_PLANE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("aggregator.err"))?)
        .spawn()?;
    let _aggregator = Role { child, port: grpc };
    wait_for_port(
        http,
        Duration::from_secs(30),
        Some(&dir.path().join("aggregator.err")),
    )
    .await?;

    let usage = |args: &[&str], with_certificate: bool| -> Result<Output> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .arg("usage")
            .args(args)
            .args(["--start", "2026-01-01", "--end", "2026-01-02"])
            .env("TOLLGATE_USAGE_ADDR", format!("https://127.0.0.1:{grpc}"))
            .env(
                "TOLLGATE_USAGE_HTTP_ADDR",
                format!("https://127.0.0.1:{http}"),
            )
            .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
            .env("TOLLGATE_TLS_CA", tls_fixture("ca-a.pem"))
            .env_remove("TOLLGATE_TLS_CLIENT_CERT")
            .env_remove("TOLLGATE_TLS_CLIENT_KEY");
        if with_certificate {
            command
                .env("TOLLGATE_TLS_CLIENT_CERT", tls_fixture("client-c.pem"))
                .env("TOLLGATE_TLS_CLIENT_KEY", tls_fixture("client-c.key"));
        }
        Ok(command.output()?)
    };
    let queried = usage(&["query"], true)?;
    assert!(queried.status.success(), "{}", stderr(&queried));
    let exported = usage(&["export"], true)?;
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert!(
        String::from_utf8_lossy(&exported.stdout).starts_with("bucket_start"),
        "{}",
        String::from_utf8_lossy(&exported.stdout)
    );
    for command in ["query", "export"] {
        let refused = usage(&[command], false)?;
        assert!(!refused.status.success(), "{command} without a certificate");
    }
    Ok(())
}

#[tokio::test]
async fn tollgate_up_serves_its_admin_and_usage_apis_over_tls_too() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let usage = free_port()?;
    let file = |name: &str| tls_fixture(name).display().to_string();
    let up = Up::start_with(
        dir.path(),
        "http://127.0.0.1:9/v1",
        &[
            ("TOLLGATE_TLS_CERT", file("edge-a.pem")),
            ("TOLLGATE_TLS_KEY", file("edge-a.key")),
            ("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{usage}")),
        ],
    )?;
    // Ready means policy loaded: up's edge takes it from the log, not over its TLS admin API.
    up.wait_ready().await?;
    let cli = |args: &[&str], addr: (&str, String)| -> Result<Output> {
        Ok(Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .env(addr.0, addr.1)
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TOLLGATE_TLS_CA", tls_fixture("ca-a.pem"))
            .output()?)
    };
    let admin = |scheme: &str| {
        (
            "TOLLGATE_ADMIN_ADDR",
            format!("{scheme}127.0.0.1:{}", up.admin),
        )
    };
    let listed = cli(&["admin", "teams", "list"], admin("https://"))?;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let plain = cli(&["admin", "teams", "list"], admin(""))?;
    assert!(!plain.status.success(), "plain gRPC to up's TLS admin API");
    let queried = cli(
        &[
            "usage",
            "query",
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-02",
        ],
        ("TOLLGATE_USAGE_ADDR", format!("https://127.0.0.1:{usage}")),
    )?;
    assert!(queried.status.success(), "{}", stderr(&queried));
    Ok(())
}
