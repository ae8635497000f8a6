//! `tollgate up` for the binary's end-to-end tests: every listener on a free port, one model
//! served by a given upstream, the logs in `up.err` beside the data.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};

/// A setting whose name says it holds a secret: the deployments must never give one as a
/// plain value.
pub fn secret_looking(name: &str) -> bool {
    ["TOKEN", "KEY", "PASSWORD", "SECRET"]
        .iter()
        .any(|word| name.to_uppercase().contains(word))
}

/// The arguments of a command line whose values hold no spaces, as a shell splits it.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The bootstrap admin token of the instances started here.
pub const ADMIN_TOKEN: &str = "tga-observability-test-admin-token";

pub use tollgate_test_support::free_port;

/// A child process killed (SIGKILL) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on `port`; fails with the process's `log` (when given) if
/// nothing does `within` that time.
pub async fn wait_for_port(port: u16, within: Duration, log: Option<&Path>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = log
        .and_then(|log| std::fs::read_to_string(log).ok())
        .unwrap_or_default();
    bail!("nothing listened on port {port} within {within:?}; the log:\n{log}")
}

/// `tollgate up`; stopped on drop.
pub struct Up {
    child: Child,
    /// Where its log goes.
    log: PathBuf,
    /// Its data directory.
    data: PathBuf,
    /// `https` when started with the test certificate (`TOLLGATE_TLS_CERT`), else `http`.
    pub scheme: &'static str,
    pub edge: u16,
    pub admin: u16,
    /// The web console.
    pub ui: u16,
}

/// A test TLS file: `ca-a.pem` (the CA), `edge-a.pem` and `edge-a.key` (a certificate for
/// 127.0.0.1 and localhost it signed).
pub fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("edge/tests/fixtures/tls")
        .join(name)
}

/// A client for `Up`'s listeners: over HTTPS it trusts only the test CA.
pub fn client(scheme: &str) -> Result<reqwest::Client> {
    let mut client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if scheme == "https" {
        let ca = std::fs::read(tls_fixture("ca-a.pem"))?;
        client = client.tls_certs_only([reqwest::Certificate::from_pem(&ca)?]);
    }
    Ok(client.build()?)
}

impl Up {
    /// Starts `tollgate up` in `dir` with one model served by `upstream`, exporting traces to
    /// `otlp` (protocol, endpoint) when given.
    pub fn start(dir: &Path, upstream: &str, otlp: Option<(&str, &str)>) -> Result<Up> {
        let (protocol, endpoint) = otlp.unwrap_or(("grpc", ""));
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ];
        Up::start_with(dir, upstream, &env)
    }

    /// Starts `tollgate up` in `dir` with one model served by `upstream` and `env` over the
    /// defaults.
    pub fn start_with(dir: &Path, upstream: &str, env: &[(&str, String)]) -> Result<Up> {
        std::fs::write(
            dir.join("tollgate.toml"),
            format!(
                "[[models]]\nname = \"traced-model\"\nprovider = \"openai_compatible\"\n\
                 api_base = \"{upstream}\"\napi_key_env = \"TRACES_TEST_UPSTREAM_KEY\"\n\
                 input_per_mtok = 1.0\noutput_per_mtok = 2.0\n"
            ),
        )?;
        let (edge, admin, ui) = (free_port()?, free_port()?, free_port()?);
        let log = dir.join("up.err");
        let scheme = if env.iter().any(|(name, _)| *name == "TOLLGATE_TLS_CERT") {
            "https"
        } else {
            "http"
        };
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("up")
            .env("TOLLGATE_DATA_DIR", dir.join("data"))
            .env("TOLLGATE_CONFIG", dir.join("tollgate.toml"))
            .env("TRACES_TEST_UPSTREAM_KEY", "sk-upstream-secret-credential")
            .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
            .env("TOLLGATE_UI_ADDR", format!("127.0.0.1:{ui}"))
            .env("TOLLGATE_EDGE_ADDR", format!("127.0.0.1:{edge}"))
            .env("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{}", free_port()?))
            .env(
                "TOLLGATE_USAGE_HTTP_ADDR",
                format!("127.0.0.1:{}", free_port()?),
            )
            .env("TOLLGATE_RETRY_BACKOFF_MS", "1")
            .env("OTEL_SERVICE_NAME", "gateway-under-test")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("RUST_LOG", "warn,tollgate::access=info")
            .env("TOLLGATE_LOG_FORMAT", "json")
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Up {
            child,
            log,
            data: dir.join("data"),
            scheme,
            edge,
            admin,
            ui,
        })
    }

    /// Starts `tollgate up` as [`Up::start`] does and waits until it is ready.
    pub async fn ready(dir: &Path, upstream: &str, otlp: Option<(&str, &str)>) -> Result<Up> {
        let up = Up::start(dir, upstream, otlp)?;
        up.wait_ready().await?;
        Ok(up)
    }

    /// The secret of the virtual key `tollgate up` made on its first start.
    pub fn first_key(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.data.join("first-key"))?
            .trim()
            .to_owned())
    }

    /// `tollgate admin` against this instance's admin API, sending `token`.
    pub fn admin_command(&self, token: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .arg("admin")
            .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{}", self.admin))
            .env("TOLLGATE_ADMIN_TOKEN", token);
        command
    }

    pub async fn wait_ready(&self) -> Result<()> {
        let url = format!("{}://127.0.0.1:{}/health/ready", self.scheme, self.edge);
        let client = client(self.scheme)?;
        // Generous: a debug build on a busy CI machine starts slowly.
        for _ in 0..1200 {
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        bail!("tollgate up did not become ready in 60 s; its log:\n{log}")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tollgate <role>` process; killed on drop.
pub struct Process {
    child: Child,
    /// Where its standard error goes.
    pub log: PathBuf,
}

impl Process {
    /// Starts `tollgate <role>` with `env` (and the web console off), logging to
    /// `<dir>/<name>.err`.
    pub fn start(role: &str, name: &str, dir: &Path, env: &[(&str, String)]) -> Result<Process> {
        let log = dir.join(format!("{name}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg(role)
            .env("TOLLGATE_UI_ADDR", "off")
            .env("RUST_LOG", "warn")
            .env_remove("TOLLGATE_ADMIN_TOKEN")
            .env_remove("TOLLGATE_EDGE_TOKEN")
            .env_remove("TOLLGATE_CONTROL_PLANE_URL")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Process { child, log })
    }
}

/// Waits until `check` holds, for up to 30 s; fails with the logs (`*.err`) of the processes
/// started in `dir`.
pub async fn eventually_in<F, Fut>(dir: &Path, what: &str, check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "err") {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            logs.push_str(&format!("--- {}\n{log}\n", path.display()));
        }
    }
    bail!("{what} did not happen within 30 s\n{logs}")
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
