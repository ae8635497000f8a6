//! `tollgate admin …`: one subcommand per group of `tollgate.admin.v1.AdminService` calls.

mod audit;
mod keys;
mod org;
mod policy;
mod providers;
mod routing;
mod tail;

use std::collections::HashMap;

use clap::{Args, Subcommand};
use serde::Serialize;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::admin::{DeleteRequest, StringMap};
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::connect::Bearer;
use super::parse;
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

/// The `--meta` pairs of a command that creates a record.
#[derive(Args)]
pub struct Metadata {
    /// Metadata, as key=value (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    meta: Vec<(String, String)>,
}

impl Metadata {
    /// The pairs as a map (a later key wins).
    fn map(self) -> HashMap<String, String> {
        parse::map(self.meta)
    }
}

/// The `--meta` and `--clear-meta` of a command that updates a record.
#[derive(Args)]
pub struct MetadataUpdate {
    /// Replace the metadata with these key=value pairs (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse::key_value)]
    meta: Vec<(String, String)>,
    /// Remove all metadata.
    #[arg(long, conflicts_with = "meta")]
    clear_meta: bool,
}

impl MetadataUpdate {
    /// The metadata the update sets: the given pairs, nothing when cleared, or unchanged
    /// (`None`).
    fn replacement(self) -> Option<StringMap> {
        (self.clear_meta || !self.meta.is_empty()).then(|| StringMap {
            entries: parse::map(self.meta),
        })
    }
}

/// Deletes the `noun` with `id` by `call` and prints the reply.
async fn delete<T, F, Fut>(out: &Out, noun: &str, id: String, call: F) -> anyhow::Result<()>
where
    T: Serialize,
    F: FnOnce(DeleteRequest) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let what = format!("deleting {noun} {id}");
    out.show(&what, call(DeleteRequest { id }).await)
}
