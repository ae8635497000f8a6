//! `tollgate admin …`: one subcommand per group of `tollgate.admin.v1.AdminService` calls.

mod audit;
mod keys;
mod org;
mod policy;
mod providers;
mod routing;
mod tail;

use clap::Subcommand;
use tollgate_proto::admin::StringMap;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::connect::Bearer;
use super::reply::Out;

/// The admin API client, sending the token with every call.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// What `tollgate admin` can do.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Teams: create, list, update, delete.
    #[command(subcommand)]
    Teams(org::Teams),
    /// Users: create, list, update, delete.
    #[command(subcommand)]
    Users(org::Users),
    /// Virtual keys (tg-…): create, list, update, rotate, revoke, block, unblock.
    #[command(subcommand)]
    Keys(keys::Keys),
    /// Provider credentials (sealed; values are never shown): put, list, delete.
    #[command(subcommand)]
    Credentials(providers::Credentials),
    /// Deployments (a model served by a provider): upsert, list, delete.
    #[command(subcommand)]
    Deployments(providers::Deployments),
    /// Model prices in USD per million tokens: set, list, delete.
    #[command(subcommand)]
    Prices(providers::Prices),
    /// Spend budgets: set, list, delete.
    #[command(subcommand)]
    Budgets(policy::Budgets),
    /// Rate limits: set, list, delete.
    #[command(subcommand)]
    RateLimits(policy::RateLimits),
    /// Access groups (models granted to teams, users, user roles and keys): set, list, delete.
    #[command(subcommand)]
    AccessGroups(policy::AccessGroups),
    /// Routing rules (strategy, fallbacks, retries, cooldown): set, list, delete.
    #[command(subcommand)]
    RoutingRules(routing::RoutingRules),
    /// Traffic rules (custom routing by team, key, tags, region, request type, time): set,
    /// list, delete.
    #[command(subcommand)]
    TrafficRules(routing::TrafficRules),
    /// Each edge's circuit-breaker state of the deployments it calls.
    DeploymentHealth(routing::DeploymentHealth),
    /// Guardrails: set, list, delete.
    #[command(subcommand)]
    Guardrails(policy::Guardrails),
    /// Response cache policies (which models' answers the edges cache): set, list, delete.
    #[command(subcommand)]
    CachePolicies(policy::CachePolicies),
    /// Tokens for the admin and usage APIs (tga-…): create, list, revoke.
    #[command(subcommand)]
    Tokens(keys::Tokens),
    /// The audit trail: committed policy events, oldest first.
    Events(audit::Events),
    /// Follow policy events as they commit (Ctrl-C to stop).
    Watch(audit::Watch),
    /// The folded policy state at the latest sequence.
    Snapshot,
    /// Follow the requests every edge serves, live (metadata only; Ctrl-C to stop).
    Tail(tail::Tail),
}

impl AdminCommand {
    /// Runs the command against `client`, printing to `out`.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            AdminCommand::Teams(c) => c.run(client, out).await,
            AdminCommand::Users(c) => c.run(client, out).await,
            AdminCommand::Keys(c) => c.run(client, out).await,
            AdminCommand::Credentials(c) => c.run(client, out).await,
            AdminCommand::Deployments(c) => c.run(client, out).await,
            AdminCommand::Prices(c) => c.run(client, out).await,
            AdminCommand::Budgets(c) => c.run(client, out).await,
            AdminCommand::RateLimits(c) => c.run(client, out).await,
            AdminCommand::AccessGroups(c) => c.run(client, out).await,
            AdminCommand::RoutingRules(c) => c.run(client, out).await,
            AdminCommand::TrafficRules(c) => c.run(client, out).await,
            AdminCommand::DeploymentHealth(c) => c.run(client, out).await,
            AdminCommand::Guardrails(c) => c.run(client, out).await,
            AdminCommand::CachePolicies(c) => c.run(client, out).await,
            AdminCommand::Tokens(c) => c.run(client, out).await,
            AdminCommand::Events(c) => c.run(client, out).await,
            AdminCommand::Watch(c) => c.run(client, out).await,
            AdminCommand::Snapshot => audit::snapshot(client, out).await,
            AdminCommand::Tail(c) => c.run(client, out).await,
        }
    }
}

/// The metadata an update sets: the given pairs, nothing when `clear`, or unchanged (`None`).
fn replacement(pairs: Vec<(String, String)>, clear: bool) -> Option<StringMap> {
    if clear || !pairs.is_empty() {
        Some(StringMap {
            entries: pairs.into_iter().collect(),
        })
    } else {
        None
    }
}
