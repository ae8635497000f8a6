//! The `tollgate` binary: parses the command line and starts the role asked for.

mod cli;
mod health;
mod models;
mod open_files;
mod settings;
mod telemetry;
mod up;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_control_plane::config::ControlPlaneConfig;
use tollgate_edge::config::EdgeConfig;
use tollgate_usage_aggregator::config::AggregatorConfig;

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
    if service.is_some() {
        open_files::raise();
    }
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
    let process = tollgate_control_plane::open(config).await?;
    let sealing = process.config().credential_key.as_ref();
    let applied = models::apply(process.log(), sealing, &settings.models)
        .await
        .context("applying the models of the configuration file")?;
    if applied > 0 {
        tracing::info!(
            events = applied,
            "applied the models of the configuration file"
        );
    }
    process.run(shutdown_signal()).await?;
    Ok(())
}

async fn edge(settings: &Settings) -> anyhow::Result<()> {
    let config = EdgeConfig::from_lookup(settings.lookup("edge"))?;
    tollgate_edge::run(config, shutdown_signal()).await?;
    Ok(())
}

async fn aggregator(settings: &Settings) -> anyhow::Result<()> {
    let config = AggregatorConfig::from_lookup(settings.lookup("aggregator"))?;
    tollgate_usage_aggregator::run(config, shutdown_signal()).await?;
    Ok(())
}
