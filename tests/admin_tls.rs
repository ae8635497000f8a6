//! The admin API over TLS: `tollgate control-plane` with `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY`
//! serves gRPC over TLS only, and the CLI reaches it at an `https://` address, verifying the
//! server against `TOLLGATE_TLS_CA`. With `TOLLGATE_TLS_CLIENT_CA` a client must show a
//! certificate that CA signed: without one the handshake fails, so no call is read, whatever
//! token it carries. Certificates: `edge/tests/fixtures/tls`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};
use common::{free_port, tls_fixture};

const TOKEN: &str = "tls-test-admin-token";

/// `tollgate control-plane` over TLS; killed on drop.
struct ControlPlane {
    child: Child,
    port: u16,
}

impl ControlPlane {
    async fn start(dir: &Path, client_ca: Option<&str>) -> Result<ControlPlane> {
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
        let control_plane = ControlPlane { child, port };
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(control_plane);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(dir.join("control-plane.err")).unwrap_or_default();
        bail!("the control plane did not listen within 30 s; its log:\n{log}")
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

impl Drop for ControlPlane {
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
    let cp = ControlPlane::start(dir.path(), None).await?;
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
    let cp = ControlPlane::start(dir.path(), Some("ca-c.pem")).await?;
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
    Ok(())
}
