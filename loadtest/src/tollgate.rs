//! Tollgate as production runs it: `tollgate control-plane` on a fresh PostgreSQL database,
//! `tollgate edge` processes and `tollgate aggregator`, all on NATS JetStream under a bus
//! prefix of their own; policy set up through the admin gRPC API so that every request takes
//! the full policy path (key auth, model access, rate limit, budget reservation, a usage
//! event to JetStream that the aggregator writes to its ledger).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::admin::{
    Budget, CachePolicy, CreateKeyRequest, CreateTeamRequest, Deployment, Guardrail,
    ListEventsRequest, Price, RateLimit,
};
use tollgate_test_support::Bearer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::http;
use crate::procs::{Proc, free_addr};

/// Base64 of 32 bytes: seals provider credentials (none are stored in this run).
pub const CREDENTIAL_KEY: &str = "dG9sbGdhdGUtbG9hZHRlc3Qtc2VhbGluZy1rZXktMzI=";
/// The models the suite calls; the mock answers each (`slow` streams pace chunks 100 ms apart, `hold` streams go idle).
pub const MODELS: &[&str] = &["chat", "slow", "hold", "embed"];
/// Models only Tollgate serves, for its features phase: `chat` behind a `pii` guardrail that
/// masks, and `chat` with a cache policy.
pub const FEATURE_MODELS: &[&str] = &["chat-pii", "chat-cached"];

pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// Where the suite's Tollgate talks to PostgreSQL and NATS.
#[derive(Clone, Debug)]
pub struct Infra {
    pub nats_url: String,
    /// Creates a fresh database per call.
    pub postgres_admin_url: Option<String>,
}

impl Infra {
    async fn fresh_database(&self) -> anyhow::Result<String> {
        match &self.postgres_admin_url {
            Some(url) => tollgate_test_support::create_database(url).await,
            None => tollgate_test_support::fresh_postgres_database().await,
        }
    }
}

/// A running Tollgate: control plane, edges, aggregator.
pub struct Stack {
    pub bin: PathBuf,
    pub control_plane: Proc,
    pub control_plane_url: String,
    pub edges: Vec<Edge>,
    pub aggregator: Proc,
    pub admin: AdminClient,
    admin_token: String,
    prefix: String,
    nats_url: String,
    log_dir: PathBuf,
    /// The virtual key every load request uses.
    pub key: String,
    pub key_id: String,
    pub team_id: String,
}

/// One edge process.
pub struct Edge {
    pub proc: Proc,
    pub addr: String,
}

impl Stack {
    /// Starts the roles with `edges` edges and sets up policy pointing at `mock` (host:port).
    pub async fn start(
        bin: &Path,
        infra: &Infra,
        edges: usize,
        mock: &str,
        log_dir: &Path,
    ) -> anyhow::Result<Stack> {
        let prefix = tollgate_test_support::unique_name("loadtest");
        let admin_token = format!("tga-loadtest-{}", tollgate_test_support::unique_name("t"));
        let cp_addr = free_addr()?;
        let mut command = role_command(bin, "control-plane");
        command
            .env("TOLLGATE_UI_ADDR", "off")
            .env("DATABASE_URL", infra.fresh_database().await?)
            .env("NATS_URL", &infra.nats_url)
            .env("TOLLGATE_ADMIN_ADDR", &cp_addr)
            .env("TOLLGATE_ADMIN_TOKEN", &admin_token)
            .env("TOLLGATE_CREDENTIAL_KEY", CREDENTIAL_KEY)
            .env("TOLLGATE_BUS_PREFIX", &prefix);
        let control_plane = spawn_role("control-plane", command, log_dir)?;
        let control_plane_url = format!("http://{cp_addr}");
        let mut admin = admin_client(
            &cp_addr,
            admin_token.clone(),
            "the control plane",
            "control-plane.log",
        )
        .await?;
        let load = set_up_policy(&mut admin, mock).await?;

        let mut command = role_command(bin, "aggregator");
        command
            .env("DATABASE_URL", infra.fresh_database().await?)
            .env("NATS_URL", &infra.nats_url)
            .env("TOLLGATE_USAGE_ADDR", free_addr()?)
            .env("TOLLGATE_USAGE_HTTP_ADDR", free_addr()?)
            .env("TOLLGATE_CONTROL_PLANE_URL", &control_plane_url)
            .env("TOLLGATE_EDGE_TOKEN", &admin_token)
            .env("TOLLGATE_ADMIN_TOKEN", &admin_token)
            .env("TOLLGATE_BUS_PREFIX", &prefix);
        let aggregator = spawn_role("aggregator", command, log_dir)?;

        let mut stack = Stack {
            bin: bin.to_owned(),
            control_plane,
            control_plane_url,
            edges: Vec::new(),
            aggregator,
            admin,
            admin_token,
            prefix,
            nats_url: infra.nats_url.clone(),
            log_dir: log_dir.to_owned(),
            key: load.key,
            key_id: load.key_id,
            team_id: load.team_id,
        };
        for _ in 0..edges {
            stack.add_edge().await?;
        }
        Ok(stack)
    }

    /// Starts one more edge and waits until it has the current policy.
    pub async fn add_edge(&mut self) -> anyhow::Result<()> {
        self.add_edge_with(&[]).await
    }

    /// Starts one more edge with `extra` environment variables (over the defaults) and waits
    /// until it has the current policy.
    pub async fn add_edge_with(&mut self, extra: &[(&str, String)]) -> anyhow::Result<()> {
        let n = self.edges.len();
        let addr = free_addr()?;
        let mut command = role_command(&self.bin, "edge");
        command
            .env("NATS_URL", &self.nats_url)
            .env("TOLLGATE_EDGE_ADDR", &addr)
            .env("TOLLGATE_CONTROL_PLANE_URL", &self.control_plane_url)
            .env("TOLLGATE_EDGE_TOKEN", &self.admin_token)
            .env("TOLLGATE_CREDENTIAL_KEY", CREDENTIAL_KEY)
            .env("TOLLGATE_BUS_PREFIX", &self.prefix)
            .env("TOLLGATE_REGION", "loadtest")
            .env("TOLLGATE_EDGE_ID", format!("loadtest-edge-{n}"));
        for (name, value) in extra {
            command.env(name, value);
        }
        let proc = spawn_role(&format!("edge-{n}"), command, &self.log_dir)?;
        let edge = Edge { proc, addr };
        let target = self.last_sequence().await?;
        serves_policy(&edge.addr, target, &format!("edge-{n}")).await?;
        self.edges.push(edge);
        Ok(())
    }

    /// The last committed policy sequence.
    pub async fn last_sequence(&mut self) -> anyhow::Result<u64> {
        last_sequence(&mut self.admin).await
    }

    /// Every Tollgate process, for whole-gateway CPU figures.
    pub fn processes(&self) -> Vec<&Proc> {
        let mut all = vec![&self.control_plane, &self.aggregator];
        all.extend(self.edges.iter().map(|e| &e.proc));
        all
    }
}

/// `tollgate <role>`, reading no configuration file and logging warnings only; the caller adds
/// the role's settings.
pub fn role_command(bin: &Path, role: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .arg(role)
        .env_remove("TOLLGATE_CONFIG")
        .env("RUST_LOG", "warn");
    command
}

/// Starts the role process `name`, its output going to `<name>.log` in `log_dir`.
fn spawn_role(name: &str, command: Command, log_dir: &Path) -> anyhow::Result<Proc> {
    Proc::spawn(name, command, &log_dir.join(format!("{name}.log")), false)
}

/// Waits up to a minute for `what` (logging to `log`) to listen on `addr`, then connects to its
/// admin API with `token`.
pub async fn admin_client(
    addr: &str,
    token: String,
    what: &str,
    log: &str,
) -> anyhow::Result<AdminClient> {
    wait_for(Duration::from_secs(60), || crate::procs::answers(addr))
        .await
        .with_context(|| format!("{what} did not start listening (see {log})"))?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(AdminServiceClient::with_interceptor(channel, Bearer(token)))
}

/// Sets up the policy every run uses, through `admin`: a team, the models pointing at `mock`
/// (host:port) with prices, a key for all of them under a budget and a rate limit, a guardrail
/// and a cache policy.
pub async fn set_up_policy(admin: &mut AdminClient, mock: &str) -> anyhow::Result<LoadKey> {
    let team = admin
        .create_team(CreateTeamRequest {
            name: "loadtest".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    for model in MODELS.iter().chain(FEATURE_MODELS) {
        admin
            .upsert_deployment(Deployment {
                model_name: (*model).into(),
                provider: "openai_compatible".into(),
                upstream_model: (*model).into(),
                api_base: format!("http://{mock}/v1"),
                ..Default::default()
            })
            .await?;
        admin
            .set_price(Price {
                model: (*model).into(),
                input_per_mtok: 0.5,
                output_per_mtok: 1.5,
                ..Default::default()
            })
            .await?;
    }
    let key = admin
        .create_key(CreateKeyRequest {
            alias: "load".into(),
            team_id: team.id.clone(),
            models: MODELS
                .iter()
                .chain(FEATURE_MODELS)
                .map(|m| (*m).into())
                .collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let key_id = key.key.context("CreateKey returned no key")?.id;
    // A budget and a rate limit far above what the run spends: checked on every request,
    // never binding.
    admin
        .set_budget(Budget {
            scope: "key".into(),
            scope_id: key_id.clone(),
            amount_usd: 1_000_000_000.0,
            period: "monthly".into(),
            ..Default::default()
        })
        .await?;
    admin
        .set_rate_limit(RateLimit {
            scope: "key".into(),
            scope_id: key_id.clone(),
            rpm: 1_000_000_000,
            tpm: 1_000_000_000_000,
            ..Default::default()
        })
        .await?;
    admin
        .set_guardrail(Guardrail {
            name: "pii".into(),
            kind: "pii".into(),
            mode: "pre_call".into(),
            models: vec!["chat-pii".into()],
            config_json: r#"{"action": "mask"}"#.into(),
            ..Default::default()
        })
        .await?;
    admin
        .set_cache_policy(CachePolicy {
            model: "chat-cached".into(),
            ttl_seconds: 3600,
            ..Default::default()
        })
        .await?;
    Ok(LoadKey {
        key: format!("Bearer {}", key.secret),
        key_id,
        team_id: team.id,
    })
}

/// The virtual key of the load, and what it belongs to.
pub struct LoadKey {
    /// `Bearer <secret>`.
    pub key: String,
    pub key_id: String,
    pub team_id: String,
}

/// The last policy sequence `admin`'s control plane committed.
pub async fn last_sequence(admin: &mut AdminClient) -> anyhow::Result<u64> {
    Ok(admin
        .list_events(ListEventsRequest {
            after_sequence: u64::MAX - 1,
            limit: 1,
        })
        .await?
        .into_inner()
        .last_sequence)
}

/// Waits up to a minute for the edge at `addr` (logging to `<name>.log`) to serve policy
/// sequence `target` or a later one.
pub async fn serves_policy(addr: &str, target: u64, name: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while !matches!(policy_sequence(addr).await, Ok(Some(seq)) if seq >= target) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{name} did not load policy within 60 s (see {name}.log)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The `policy_sequence` an edge reports on `/health/ready` (None before it is ready).
pub async fn policy_sequence(addr: &str) -> anyhow::Result<Option<u64>> {
    let (status, body) = http::get(addr, "/health/ready").await?;
    if status != 200 {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(value["policy_sequence"].as_u64())
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub async fn wait_for(within: Duration, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > within {
            bail!("gave up after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
