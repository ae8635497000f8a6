//! Test harness that hands every test a REAL PostgreSQL database and a REAL NATS JetStream server.
//!
//! `DATABASE_URL` / `NATS_URL` name existing servers (CI, or a developer's local services). When
//! they are unset, one ephemeral `postgres` and one ephemeral `nats-server` are started per test
//! process on first use, in temp dirs under `/tmp`, and stopped again when the process exits.
//!
//! Everything is runtime-agnostic on purpose: each `#[tokio::test]` has its own runtime, so this
//! crate keeps no pools or tasks alive between calls, only plain URLs and `std` child processes.

#[cfg(feature = "aggregator")]
pub mod aggregator;
pub mod anthropic_upstream;
pub mod authorizing_nats;
pub mod aws_wire;
mod bearer;
pub mod bedrock_upstream;
mod binaries;
#[cfg(feature = "edge")]
pub mod edge;
pub mod fake_server;
#[cfg(feature = "roles")]
pub mod faulty_bus;
pub mod gemini_upstream;
pub mod kms_upstream;
pub mod openai_upstream;
pub mod otlp_receiver;
pub mod own_nats;
mod ports;
mod python;
#[cfg(feature = "roles")]
pub mod roles;
pub mod sagemaker_upstream;
mod served;
pub mod severable;

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, PoisonError};

pub use bearer::Bearer;
pub use binaries::nats_server;
pub use ports::{free_port, listening};
pub use python::{python, python_with, run_python};
pub use served::{Served, Shutdown};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// URL of a fresh, empty PostgreSQL database that belongs to the calling test alone.
pub async fn fresh_postgres_database() -> Result<String> {
    match env_url("DATABASE_URL") {
        Some(admin_url) => create_database(&admin_url).await,
        None => create_database(start_ephemeral_postgres().await?).await,
    }
}

/// URL of a real NATS server with JetStream enabled (shared; isolate with `unique_name`).
pub async fn nats_url() -> Result<String> {
    match env_url("NATS_URL") {
        Some(url) => Ok(url),
        None => Ok(start_ephemeral_nats().await?.to_owned()),
    }
}

/// A name unique to this call, usable as a NATS stream/subject prefix or a database name: `{prefix}_{short random}` using only [A-Za-z0-9_].
pub fn unique_name(prefix: &str) -> String {
    let prefix: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // The low 48 bits of a v4 UUID are all random; lowercase hex keeps the name a valid
    // unquoted PostgreSQL identifier and NATS token.
    format!(
        "{prefix}_{:012x}",
        uuid::Uuid::new_v4().as_u128() & 0xffff_ffff_ffff
    )
}

/// A fresh SQLite database file in its own temp dir; keep the TempDir alive as long as the URL is used. URL has `?mode=rwc`.
pub fn fresh_sqlite_database() -> Result<(TempDir, String)> {
    let dir = tempfile::Builder::new()
        .prefix("tollgate-sqlite-")
        .tempdir()
        .context("creating a temp dir for a SQLite test database")?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    Ok((dir, url))
}

/// Test databases older than this are dropped by the next run that creates one.
const STALE_AFTER_SECS: u64 = 2 * 3600;

/// Drops, once per process and best effort, test databases created long enough ago that no
/// test can still be using them (a shared server would otherwise fill its disk run by run).
async fn drop_stale_databases(conn: &mut PgConnection, now: u64) {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tg\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name
            .strip_prefix("tg_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|at| at + STALE_AFTER_SECS < now) {
            let _ = conn
                .execute(AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .await;
        }
    }
}

/// Creates an empty database `tg_test_<time>_<random>` on the server behind `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str) -> Result<String> {
    // The creation time in the name lets later runs drop what earlier runs left behind.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = unique_name(&format!("tg_test_{now}"));
    let mut conn = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to PostgreSQL admin database {admin_url}"))?;
    drop_stale_databases(&mut conn, now).await;
    conn.execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .await
        .with_context(|| {
            format!("CREATE DATABASE {name} via {admin_url} (does the user have CREATEDB?)")
        })?;
    // Best effort: the database exists either way, and an unclean close only costs a log line.
    let _ = conn.close().await;
    with_database(admin_url, &name)
}

/// Admin URL of this process's ephemeral PostgreSQL server, started (with `initdb`) on the first call only.
pub async fn start_ephemeral_postgres() -> Result<&'static str> {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_try_init(start_postgres)
        .await
        .map(String::as_str)
}

/// URL of this process's ephemeral `nats-server -js`, started on the first call only.
pub async fn start_ephemeral_nats() -> Result<&'static str> {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_try_init(start_nats).await.map(String::as_str)
}

fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|url| !url.trim().is_empty())
}

/// Replaces the database (path) of a `postgres://…/db?params` URL, keeping credentials and params.
fn with_database(url: &str, database: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("{url:?} is not a postgres://… URL"))?;
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    let authority = main
        .split_once('/')
        .map_or(main, |(authority, _)| authority);
    Ok(match query {
        Some(query) => format!("{scheme}://{authority}/{database}?{query}"),
        None => format!("{scheme}://{authority}/{database}"),
    })
}

async fn start_postgres() -> Result<String> {
    let bin_dir = binaries::postgres_bin_dir()?;
    // initdb and postgres refuse to run as root, so as root we run them as another OS user.
    // `Command::uid/gid` (rather than `runuser`) keeps postgres our direct child, so we can
    // signal and reap it without hunting for a grandchild's pid.
    let run_as = if is_root() {
        binaries::check_others_can_run(&bin_dir)?;
        Some(binaries::postgres_run_as()?)
    } else {
        None
    };
    let root = server_dir(SERVER_DIR_PREFIXES[0], run_as)?;
    let data = root.path().join("data");

    let initdb = bin_dir.join("initdb");
    let mut cmd = tokio::process::Command::new(&initdb);
    cmd.arg("-D").arg(&data);
    cmd.args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    cmd.current_dir(root.path()).stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {}", initdb.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            initdb.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let port = free_port()?;
    let postgres = bin_dir.join("postgres");
    let log = root.path().join("postgres.log");
    let mut cmd = Command::new(&postgres);
    cmd.arg("-D").arg(&data).arg("-p").arg(port.to_string());
    cmd.arg("-k").arg(root.path());
    for setting in [
        "listen_addresses=127.0.0.1",
        "fsync=off",
        "max_connections=300",
    ] {
        cmd.arg("-c").arg(setting);
    }
    cmd.current_dir(root.path());
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    // SIGINT = "fast shutdown": disconnect clients, checkpoint, exit.
    let pid = spawn_server(cmd, &log, libc::SIGINT, root)?;

    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let started = Started {
        program: &postgres,
        port,
        pid,
        log: &log,
    };
    started
        .wait(Duration::from_secs(30), || async {
            let conn = PgConnection::connect(&url).await?;
            let _ = conn.close().await;
            Ok::<_, sqlx::Error>(())
        })
        .await?;
    Ok(url)
}

async fn start_nats() -> Result<String> {
    let nats = binaries::nats_server()?;
    let root = server_dir(SERVER_DIR_PREFIXES[1], None)?;
    let port = free_port()?;
    let log = root.path().join("nats-server.log");
    let mut cmd = Command::new(&nats);
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]);
    cmd.arg(root.path()).current_dir(root.path());
    let pid = spawn_server(cmd, &log, libc::SIGTERM, root)?;

    // nats-server enables JetStream before it starts accepting clients, so an accepted TCP
    // connection means JetStream is ready too.
    let started = Started {
        program: &nats,
        port,
        pid,
        log: &log,
    };
    started
        .wait(Duration::from_secs(15), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
        })
        .await?;
    Ok(format!("nats://127.0.0.1:{port}"))
}

/// A server just spawned: its program, the port it is to listen on, its pid and its log.
struct Started<'a> {
    program: &'a Path,
    port: u16,
    pid: u32,
    log: &'a Path,
}

impl Started<'_> {
    /// Tries `connect` every 50 ms until it succeeds; fails, with the server's log, once the
    /// server has exited or `within` has passed.
    async fn wait<F, Fut, E>(&self, within: Duration, mut connect: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), E>>,
        E: std::fmt::Display,
    {
        let deadline = Instant::now() + within;
        loop {
            match connect().await {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() > deadline || has_exited(self.pid) => bail!(
                    "{} did not accept connections on port {} (it exited, or was not ready within {}s: {err}); its log {}:\n{}",
                    self.program.display(),
                    self.port,
                    within.as_secs(),
                    self.log.display(),
                    fs::read_to_string(self.log).unwrap_or_default()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

const SERVER_DIR_PREFIXES: [&str; 2] = ["tollgate-pg-", "tollgate-nats-"];

/// A temp dir `/tmp/{prefix}{our pid}-…` (short path: the postgres unix socket lives in it), owned by `owner`.
fn server_dir(prefix: &str, owner: Option<(u32, u32)>) -> Result<TempDir> {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(sweep_stale_server_dirs);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in("/tmp")
        .context("creating a temp dir under /tmp")?;
    if let Some((uid, gid)) = owner {
        // 0755 so the other user can traverse to its files; /tmp itself is world-traversable.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755))
            .and_then(|()| std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)))
            .with_context(|| format!("handing {} to uid {uid}", dir.path().display()))?;
    }
    Ok(dir)
}

/// Removes server dirs of test processes that died without running `atexit` (SIGKILL, Ctrl-C);
/// their servers already got the parent-death signal, but a postgres data dir is ~40 MB.
fn sweep_stale_server_dirs() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|name| {
            SERVER_DIR_PREFIXES
                .iter()
                .find_map(|p| name.strip_prefix(p))
        }) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A server we started: stopped with `stop_signal`, then its dir removed, at process exit.
struct Server {
    child: Child,
    stop_signal: libc::c_int,
    _dir: TempDir,
}

static SERVERS: Mutex<Vec<Server>> = Mutex::new(Vec::new());

/// Spawns a long-running server with output to `log`, registered for cleanup at exit; returns its pid.
fn spawn_server(
    mut cmd: Command,
    log: &Path,
    stop_signal: libc::c_int,
    dir: TempDir,
) -> Result<u32> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    kill_with_parent(&mut cmd, stop_signal);

    // PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process.
    // Test threads and tokio workers come and go, so fork from a thread that never exits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tollgate-test-server-parent".into())
        .spawn(move || {
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })
        .context("spawning the server parent thread")?;
    let child = rx
        .recv()
        .context("server parent thread died")?
        .with_context(|| format!("starting {program}"))?;

    let pid = child.id();
    SERVERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Server {
            child,
            stop_signal,
            _dir: dir,
        });
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(register_at_exit);
    Ok(pid)
}

fn has_exited(pid: u32) -> bool {
    let mut servers = SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    servers
        .iter_mut()
        .find(|server| server.child.id() == pid)
        .is_none_or(|server| !matches!(server.child.try_wait(), Ok(None)))
}

/// Runs at process exit (libtest ends with `exit`, which runs `atexit` handlers).
extern "C" fn stop_servers() {
    let mut servers = std::mem::take(&mut *SERVERS.lock().unwrap_or_else(PoisonError::into_inner));
    for server in &servers {
        send_signal(server.child.id(), server.stop_signal);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for server in &mut servers {
        while matches!(server.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(server.child.try_wait(), Ok(None)) {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
    // Dropping `servers` removes the temp dirs.
}

#[allow(unsafe_code)]
fn register_at_exit() {
    // SAFETY: `stop_servers` is a plain `extern "C" fn()` that never unwinds (no panicking calls).
    let _ = unsafe { libc::atexit(stop_servers) };
}

/// Asks a child process to stop in order (SIGTERM, as an orchestrator or `kill` would); call before reaping it.
pub fn terminate(child: &Child) {
    send_signal(child.id(), libc::SIGTERM);
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own unreaped child.
    let _ = unsafe { libc::kill(pid, signal) };
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the kernel send `signal` to the child if we die without running `atexit` (e.g. SIGKILL).
#[allow(unsafe_code)]
fn kill_with_parent(cmd: &mut Command, signal: libc::c_int) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe. std runs it after setuid/setgid, which would otherwise clear it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() -> Result<()> {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/x?sslmode=disable",
            ),
            ("postgresql://h:1", "postgresql://h:1/x"),
            ("postgres://h?host=/run/pg", "postgres://h/x?host=/run/pg"),
        ];
        for (input, want) in cases {
            assert_eq!(with_database(input, "x")?, want);
        }
        assert!(with_database("nonsense", "x").is_err());
        Ok(())
    }

    #[test]
    fn unique_name_is_safe_and_unique() {
        let (a, b) = (unique_name("my-stream.x"), unique_name("my-stream.x"));
        assert_ne!(a, b);
        assert!(a.starts_with("my_stream_x_"), "{a}");
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{a}"
        );
    }
}
