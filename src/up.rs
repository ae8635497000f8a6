//! `tollgate up`: control plane, edge and aggregator in one process, on SQLite files in the
//! data directory and the in-process bus. Creates what a first start needs (admin token,
//! credential key, a `mock` model, a first key) and prints how to call it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_control_plane::auth::Authenticator;
use tollgate_control_plane::console::ConsoleConfig;
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::secrets::{ADMIN_TOKEN_PREFIX, KEY_PREFIX, display_prefix, new_secret};
use tollgate_control_plane::snapshot::LogSnapshots;
use tollgate_control_plane::{ControlPlane, store};
use tollgate_edge::Edge;
use tollgate_edge::config::EdgeConfig;
use tollgate_policy::Command;
use tollgate_policy::model::{Deployment, Provider, VirtualKey, hash_secret};
use tollgate_policy::sealing::SealingKey;
use tollgate_runtime::bus::{Bus, MemoryBus};
use tollgate_usage_aggregator::config::AggregatorConfig;
use tollgate_usage_aggregator::{Aggregator, AggregatorParts, ListenerTls};

use crate::models;
use crate::settings::Settings;

/// The role name of `tollgate up` in the configuration file (`[up]`).
const ROLE: &str = "up";

/// Runs everything until `shutdown` completes.
pub async fn run(
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let get = |name: &str| settings.get(ROLE, name);
    let data_dir =
        PathBuf::from(get("TOLLGATE_DATA_DIR").unwrap_or_else(|| "./.tollgate".to_owned()));
    private_dir(&data_dir)?;
    let (admin_token, sealing) = secrets(&get, &data_dir)?;
    let log = open_policy_log(settings, &data_dir, &sealing).await?;

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let lookup = |name: &str| match name {
        // Everything is in this process: there is no NATS, and the ledger sits beside the log
        // (whatever DATABASE_URL and NATS_URL the environment has are for the distributed roles).
        "NATS_URL" => Some("in-process".to_owned()),
        "DATABASE_URL" => Some(sqlite_url(&data_dir.join("usage.db"))),
        _ => get(name),
    };
    let mut edge_config = EdgeConfig::from_lookup(lookup)?;
    edge_config.credential_key = Some(sealing.clone());
    let aggregator_config = AggregatorConfig::from_lookup(lookup)?;
    // One certificate for every listener: the edge, the console, the admin and usage APIs and
    // the CSV export (its roles reach policy in-process, so none of them calls another).
    let tls = edge_config.tls.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let Listeners {
        admin: admin_listener,
        edge: edge_listener,
        usage: usage_listener,
        export: export_listener,
        console,
    } = bind_listeners(lookup, &edge_config, &aggregator_config, scheme).await?;
    let ui_addr = match &console {
        Some((listener, _)) => Some(listener.local_addr()?),
        None => None,
    };
    let (admin_addr, edge_addr) = (admin_listener.local_addr()?, edge_listener.local_addr()?);
    let (usage_addr, export_addr) = (usage_listener.local_addr()?, export_listener.local_addr()?);

    let (stop_edge, edge_stopped) = watch::channel(false);
    let (stop_rest, rest_stopped) = watch::channel(false);
    let control_plane = ControlPlane {
        log: log.clone(),
        bus: bus.clone(),
        auth: Authenticator::new(Some(&admin_token)),
        sealing: Some(sealing),
        kek: Default::default(),
        tls: tls.clone(),
        metrics_addr: None,
        trust: Default::default(),
    };
    let control_plane = tokio::spawn(control_plane.serve_with_console(
        admin_listener,
        console,
        until(rest_stopped.clone()),
    ));
    // The edge and the aggregator take snapshots from the log itself, not over the admin API.
    let snapshots = || -> anyhow::Result<_> {
        Ok(Some(Arc::new(LogSnapshots {
            log: log.clone(),
            signing: None,
        }) as _))
    };
    let edge = Edge::start(edge_config, bus.clone(), snapshots()?)?;
    let edge = tokio::spawn(edge.serve(edge_listener, until(edge_stopped)));
    let aggregator = Aggregator::start(AggregatorParts {
        database_url: aggregator_config.database_url,
        bus,
        snapshots: snapshots()?,
        admin_token: Some(admin_token.as_str().into()),
        sinks: aggregator_config.sinks,
        batch: aggregator_config.batch,
        linger: aggregator_config.linger,
        keys: Default::default(),
    })
    .await
    .context("opening the usage ledger")?;
    let aggregator = tokio::spawn(aggregator.serve_with_tls(
        usage_listener,
        export_listener,
        tls.map(ListenerTls::load).transpose()?,
        until(rest_stopped),
    ));

    print_banner(
        &data_dir,
        scheme,
        edge_addr,
        admin_addr,
        ui_addr,
        usage_addr,
        export_addr,
    );
    shutdown.await;
    tracing::info!("stopping: edge first, so that its last usage reaches the ledger");
    let _ = stop_edge.send(true);
    let _ = edge.await;
    // The in-process bus dies with the process: give the aggregator time to take the rest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop_rest.send(true);
    let _ = aggregator.await;
    let _ = control_plane.await;
    Ok(())
}

/// The bootstrap admin token and the credential key: from the settings, else from the data
/// directory, made there on the first start.
fn secrets(
    get: &impl Fn(&str) -> Option<String>,
    data_dir: &Path,
) -> anyhow::Result<(String, SealingKey)> {
    let admin_token = match get("TOLLGATE_ADMIN_TOKEN") {
        Some(token) => token,
        None => read_or_create(&data_dir.join("admin-token"), || {
            new_secret(ADMIN_TOKEN_PREFIX)
        })?,
    };
    let sealing = SealingKey::from_base64(&match get("TOLLGATE_CREDENTIAL_KEY") {
        Some(key) => key,
        None => read_or_create(&data_dir.join("credential-key"), || {
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        })?,
    })?;
    Ok((admin_token, sealing))
}

/// The policy log in the data directory, with the configuration file's models applied and,
/// on the first start, the starter policy.
async fn open_policy_log(
    settings: &Settings,
    data_dir: &Path,
    sealing: &SealingKey,
) -> anyhow::Result<Arc<PolicyLog>> {
    for database in ["policy.db", "usage.db"] {
        private_file(&data_dir.join(database))?;
    }
    let store = store::connect(&sqlite_url(&data_dir.join("policy.db")))
        .await
        .context("opening the policy log")?;
    let log = Arc::new(PolicyLog::open(store).await?);
    let first_start = log.state().sequence == 0;
    models::apply(&log, Some(sealing), &settings.models)
        .await
        .context("applying the models of the configuration file")?;
    if first_start {
        first_start_policy(&log, data_dir).await?;
    }
    Ok(log)
}

/// Every listener of `tollgate up`.
struct Listeners {
    admin: TcpListener,
    edge: TcpListener,
    usage: TcpListener,
    export: TcpListener,
    console: Option<(TcpListener, ConsoleConfig)>,
}

/// Binds every listener first, so that a port in use fails the start before anything runs.
async fn bind_listeners(
    lookup: impl Fn(&str) -> Option<String> + Copy,
    edge_config: &EdgeConfig,
    aggregator_config: &AggregatorConfig,
    scheme: &str,
) -> anyhow::Result<Listeners> {
    let admin_addr: SocketAddr = lookup("TOLLGATE_ADMIN_ADDR")
        .unwrap_or_else(|| tollgate_control_plane::config::DEFAULT_ADMIN_ADDR.to_owned())
        .parse()
        .context("TOLLGATE_ADMIN_ADDR")?;
    let admin_listener = bind(admin_addr, "TOLLGATE_ADMIN_ADDR").await?;
    let edge_listener = bind(edge_config.addr, "TOLLGATE_EDGE_ADDR").await?;
    let usage_listener = bind(aggregator_config.usage_addr, "TOLLGATE_USAGE_ADDR").await?;
    let export_listener = bind(
        aggregator_config.usage_http_addr,
        "TOLLGATE_USAGE_HTTP_ADDR",
    )
    .await?;
    let console = match tollgate_control_plane::config::console_from_lookup(lookup)? {
        Some((addr, mut config)) => {
            // The console reads spend from this process's own usage API.
            config.usage_url = Some(format!("{scheme}://{}", usage_listener.local_addr()?));
            Some((bind(addr, "TOLLGATE_UI_ADDR").await?, config))
        }
        None => None,
    };
    Ok(Listeners {
        admin: admin_listener,
        edge: edge_listener,
        usage: usage_listener,
        export: export_listener,
        console,
    })
}

/// A future that completes when `flag` turns true.
async fn until(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: is another Tollgate running? Set {variable} to another address"))
}

/// The data directory, created (or narrowed) to its owner alone: it holds the admin token,
/// the credential key, a virtual key and both databases.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    narrow(dir, 0o700)
}

/// Creates `path` empty and private to its owner if it does not exist, so that SQLite (which
/// gives its journal files the database's permissions) never writes a readable database.
fn private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    narrow(path, 0o600)
}

/// Sets `path`'s permissions to `mode` (its owner's alone), narrowing any it had before.
fn narrow(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("making {} private to its owner", path.display()))
}

/// The content of `path`, created by `make` (readable by the owner only) when missing. Any
/// other failure to read it stops the start: making a new credential key because the old one
/// could not be read would leave every sealed credential unreadable.
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(existing) => return Ok(existing.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read {} (fix its permissions; it is not replaced, since a new one would \
                     make what the old one protects unusable)",
                    path.display()
                )
            });
        }
    }
    let value = make();
    write_private(path, &value)?;
    Ok(value)
}

fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{value}")?;
    Ok(())
}

/// A `mock` model and a first key, so that the first request works out of the box.
async fn first_start_policy(log: &PolicyLog, data_dir: &Path) -> anyhow::Result<()> {
    if log.state().deployments_for("mock").next().is_none() {
        let mock = || "mock".to_owned();
        let deployment = Deployment::new(mock(), mock(), Provider::Mock, mock());
        log.execute("bootstrap", Command::UpsertDeployment { deployment })
            .await?;
    }
    let secret = new_secret(KEY_PREFIX);
    let key = VirtualKey::new(
        uuid::Uuid::now_v7().to_string(),
        "first-key".to_owned(),
        display_prefix(&secret),
        hash_secret(&secret),
        chrono::DateTime::UNIX_EPOCH,
    );
    log.execute("bootstrap", Command::CreateKey { key }).await?;
    write_private(&data_dir.join("first-key"), &secret)
}

fn print_banner(
    data_dir: &Path,
    edge_scheme: &str,
    edge: SocketAddr,
    admin: SocketAddr,
    ui: Option<SocketAddr>,
    usage: SocketAddr,
    export: SocketAddr,
) {
    let console = ui.map_or_else(
        || "off (TOLLGATE_UI_ADDR=off)".to_owned(),
        // The console serves HTTPS with the edge's certificate when it has one.
        |ui| format!("{edge_scheme}://{ui}/   sign in with the admin token"),
    );
    // The secret itself is never printed (a terminal's scrollback and CI logs keep it); the
    // curl line reads it from its file, by an absolute path so that it works from anywhere.
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let key_file = dir.join("first-key");
    println!(
        "\nTollgate is up (data in {dir}).\n\n\
         \x20 OpenAI-compatible API  {edge_scheme}://{edge}/v1\n\
         \x20 admin API (gRPC)       {edge_scheme}://{admin}   token in {dir}/admin-token\n\
         \x20 web console            {console}\n\
         \x20 usage API (gRPC)       {edge_scheme}://{usage}\n\
         \x20 usage CSV export       {edge_scheme}://{export}/v1/usage/export\n\n\
         The first virtual key is in {key_path}. Try it:\n\n\
         curl {edge_scheme}://{edge}/v1/chat/completions -H \"Authorization: Bearer $(cat '{key_path}')\" -H 'content-type: application/json' \
         -d '{{\"model\":\"mock\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n",
        dir = dir.display(),
        key_path = key_file.display(),
    );
}
