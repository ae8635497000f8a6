//! The `tollgate` binary: parses the command line and starts the role asked for.

mod cli;
mod health;
mod models;
mod settings;
mod telemetry;
mod up;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_control_plane::auth::Authenticator;
use tollgate_control_plane::config::ControlPlaneConfig;
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::{ControlPlane, store};
use tollgate_edge::Edge;
use tollgate_edge::config::EdgeConfig;
use tollgate_runtime::bus::{BusLimits, JetStreamBus, NatsAuth};
use tollgate_runtime::follow::{GrpcSnapshots, SnapshotSource};
use tollgate_runtime::tls::ClientTls;
use tollgate_usage_aggregator::config::AggregatorConfig;
use tollgate_usage_aggregator::{Aggregator, AggregatorParts, ListenerTls};

use crate::settings::Settings;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate: a self-hosted generative-AI gateway",
    after_help = "Settings come from the environment and the TOML file named by TOLLGATE_CONFIG; see the README's configuration reference."
)]
struct Cli {
    #[command(subcommand)]
    command: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run everything in one process on SQLite files in TOLLGATE_DATA_DIR (./.tollgate) and an
    /// in-process bus: the quickest way to try Tollgate.
    Up,
    /// Run the control plane (admin gRPC API + relay) on PostgreSQL (or SQLite) and NATS
    /// JetStream. Configured by DATABASE_URL, NATS_URL, TOLLGATE_ADMIN_ADDR,
    /// TOLLGATE_ADMIN_TOKEN, TOLLGATE_CREDENTIAL_KEY and TOLLGATE_BUS_PREFIX.
    ControlPlane,
    /// Run an edge (the OpenAI-compatible HTTP API) following policy from NATS JetStream.
    /// Configured by NATS_URL, TOLLGATE_EDGE_ADDR, TOLLGATE_CONTROL_PLANE_URL,
    /// TOLLGATE_EDGE_TOKEN, TOLLGATE_CREDENTIAL_KEY, TOLLGATE_REGION and more (see README).
    Edge,
    /// Run the usage aggregator (ledger, budgets, alerts, finance API) on PostgreSQL (or
    /// SQLite) and NATS JetStream. Configured by DATABASE_URL, NATS_URL, TOLLGATE_USAGE_ADDR,
    /// TOLLGATE_USAGE_HTTP_ADDR, TOLLGATE_CONTROL_PLANE_URL and the TOLLGATE_ALERT_* variables.
    Aggregator,
    /// Manage policy through the admin API (teams, users, keys, credentials, deployments,
    /// prices, budgets, rate limits, tokens, events).
    Admin(cli::AdminArgs),
    /// Query usage and export it for finance.
    Usage(cli::UsageArgs),
    /// Print a new Ed25519 key pair for signing policy (TOLLGATE_POLICY_SIGNING_KEY, with
    /// TOLLGATE_POLICY_PUBLIC_KEY for edges and aggregators) or budget statuses
    /// (TOLLGATE_STATUS_SIGNING_KEY, with TOLLGATE_STATUS_PUBLIC_KEY for the control plane).
    Keygen,
    /// Exit 0 when this machine's role answers healthy on its own port (the edge's
    /// /health/ready, gRPC health for the others): the container image's health check.
    Health {
        /// edge | control-plane | aggregator.
        #[arg(env = "TOLLGATE_ROLE", default_value = "edge")]
        role: String,
    },
}

/// The request path allocates many small, short-lived buffers across threads; glibc's malloc
/// showed up at ~10 % of the edge's CPU under load (loadtest profile). Built without
/// transparent huge pages (`no_thp`): with them, each held stream cost ~20 KB more resident
/// memory (its connections' buffers pinned 2 MiB pages) for no measurable CPU gain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    let service = match &command {
        Role::Up => Some("tollgate"),
        Role::ControlPlane => Some("tollgate-control-plane"),
        Role::Edge => Some("tollgate-edge"),
        Role::Aggregator => Some("tollgate-aggregator"),
        Role::Admin(_) | Role::Usage(_) | Role::Keygen | Role::Health { .. } => None,
    };
    let telemetry = telemetry::init(service)?;
    let settings = Settings::load()?;
    let result = match command {
        Role::Up => up::run(&settings, shutdown_signal()).await,
        Role::ControlPlane => control_plane(&settings).await,
        Role::Edge => edge(&settings).await,
        Role::Aggregator => aggregator(&settings).await,
        Role::Admin(args) => cli::admin(args).await,
        Role::Usage(args) => cli::usage(args).await,
        Role::Health { role } => {
            let section = role.replace('-', "_");
            health::check(&role, settings.lookup(&section)).await
        }
        Role::Keygen => {
            let key = tollgate_runtime::signing::PrivateKey::generate();
            println!("private_key={}", key.to_base64());
            println!("public_key={}", key.public_key());
            Ok(())
        }
    };
    // The exporter blocks while it flushes: off the runtime's threads.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    result
}

/// Completes on Ctrl-C or SIGTERM (what orchestrators send).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn control_plane(settings: &Settings) -> anyhow::Result<()> {
    let config = ControlPlaneConfig::from_lookup(settings.lookup("control_plane"))?;
    let store = store::connect(&config.database_url)
        .await
        .context("opening the policy event store")?;
    let bus = connect_bus(
        &config.nats_url,
        &config.bus_prefix,
        settings.lookup("control_plane"),
    )
    .await?;
    let log = Arc::new(PolicyLog::open(store).await?);
    let applied = models::apply(&log, config.credential_key.as_ref(), &settings.models)
        .await
        .context("applying the models of the configuration file")?;
    if applied > 0 {
        tracing::info!(
            events = applied,
            "applied the models of the configuration file"
        );
    }
    if config.admin_token.is_none() {
        tracing::warn!(
            "TOLLGATE_ADMIN_TOKEN is not set: only admin tokens already in the log can call the admin API"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin API to {}", config.admin_addr))?;
    tracing::info!(addr = %config.admin_addr, sequence = log.state().sequence, "control plane serving");
    let control_plane = ControlPlane {
        log,
        bus: Arc::new(bus),
        auth: Authenticator::new(config.admin_token.as_deref()),
        sealing: config.credential_key,
        kek: config.kek.clone(),
        tls: config.tls.clone(),
        metrics_addr: config.metrics_addr,
        trust: config.trust.clone(),
    };
    let console = match config.console {
        Some((addr, console)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the web console to {addr} (TOLLGATE_UI_ADDR)"))?;
            tracing::info!(%addr, "web console serving");
            Some((listener, console))
        }
        None => None,
    };
    control_plane
        .serve_with_console(listener, console, shutdown_signal())
        .await?;
    Ok(())
}

async fn edge(settings: &Settings) -> anyhow::Result<()> {
    let config = EdgeConfig::from_lookup(settings.lookup("edge"))?;
    let bus = connect_bus(
        &config.nats_url,
        &config.bus_prefix,
        settings.lookup("edge"),
    )
    .await?;
    let snapshots = snapshot_source(
        config.control_plane_url.as_deref(),
        &config.control_plane_token,
        settings.lookup("edge"),
    )?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding the edge to {}", config.addr))?;
    tracing::info!(addr = %config.addr, "edge serving");
    let edge = Edge::start(config, Arc::new(bus), snapshots)?;
    edge.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn aggregator(settings: &Settings) -> anyhow::Result<()> {
    let config = AggregatorConfig::from_lookup(settings.lookup("aggregator"))?;
    let bus = connect_bus(
        &config.nats_url,
        &config.bus_prefix,
        settings.lookup("aggregator"),
    )
    .await?;
    let snapshots = snapshot_source(
        config.control_plane_url.as_deref(),
        &config.control_plane_token,
        settings.lookup("aggregator"),
    )?;
    let grpc = tokio::net::TcpListener::bind(config.usage_addr)
        .await
        .with_context(|| format!("binding the usage API to {}", config.usage_addr))?;
    let http = tokio::net::TcpListener::bind(config.usage_http_addr)
        .await
        .with_context(|| format!("binding the usage export to {}", config.usage_http_addr))?;
    // Unusable certificate files stop the start here, before anything is served.
    let tls = config.tls.clone().map(ListenerTls::load).transpose()?;
    let aggregator = Aggregator::start(AggregatorParts {
        database_url: config.database_url,
        bus: Arc::new(bus),
        snapshots,
        admin_token: config.admin_token,
        sinks: config.sinks,
        batch: config.batch,
        linger: config.linger,
        keys: config.keys.clone(),
    })
    .await
    .context("opening the usage ledger")?;
    let aggregator = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding /metrics to {addr} (TOLLGATE_METRICS_ADDR)"))?;
            aggregator.with_metrics_listener(listener)
        }
        None => aggregator,
    };
    tracing::info!(grpc = %config.usage_addr, http = %config.usage_http_addr, "aggregator serving");
    aggregator
        .serve_with_tls(grpc, http, tls, shutdown_signal())
        .await?;
    Ok(())
}

/// The role's bus: NATS JetStream at `url`, with the credentials and TLS settings of its
/// `NATS_*` variables.
async fn connect_bus(
    url: &str,
    prefix: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<JetStreamBus> {
    let auth = NatsAuth::from_settings(&lookup).map_err(anyhow::Error::msg)?;
    let limits = BusLimits {
        replicas: bus_replicas(lookup("TOLLGATE_BUS_REPLICAS").as_deref())?,
        ..BusLimits::default()
    };
    JetStreamBus::connect_as(url, prefix, limits, &auth)
        .await
        .context("connecting to NATS JetStream")
}

/// `TOLLGATE_BUS_REPLICAS`: 1 (a single server) unless set; JetStream keeps at most 5 copies.
fn bus_replicas(setting: Option<&str>) -> anyhow::Result<usize> {
    match setting.map(str::trim) {
        None | Some("") => Ok(1),
        Some(value) => match value.parse::<usize>() {
            Ok(n @ 1..=5) => Ok(n),
            _ => anyhow::bail!(
                "TOLLGATE_BUS_REPLICAS={value}: give the number of NATS servers that keep each stream, 1 to 5"
            ),
        },
    }
}

/// Snapshots from the control plane at `url`, reached as the role's TLS settings say.
fn snapshot_source(
    url: Option<&str>,
    token: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Arc<dyn SnapshotSource>>> {
    let tls = ClientTls::from_settings(lookup)
        .map_err(|missing| anyhow::anyhow!("{missing} is required beside the other half"))?;
    Ok(match url {
        Some(url) => Some(Arc::new(
            GrpcSnapshots::with_tls(url, token, &tls).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::bus_replicas;

    #[test]
    fn bus_replicas_are_one_to_five() {
        assert_eq!(bus_replicas(None).ok(), Some(1));
        assert_eq!(bus_replicas(Some("3")).ok(), Some(3));
        for wrong in ["0", "6", "three", "-1"] {
            let refused = bus_replicas(Some(wrong)).err().map(|e| e.to_string());
            assert!(refused.is_some_and(|m| m.contains("1 to 5")), "{wrong}");
        }
    }
}
