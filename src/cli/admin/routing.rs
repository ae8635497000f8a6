//! `tollgate admin routing-rules …`, `traffic-rules …` and `deployment-health`: where requests
//! go and how they fail over.

use clap::{Args, Subcommand};
use tollgate_proto::admin::{
    ListDeploymentHealthRequest, ListRoutingRulesRequest, ListTrafficRulesRequest, RoutingRule,
    TrafficAction, TrafficMatch, TrafficRule,
};

use super::{AdminClient, delete};
use crate::cli::reply::Out;

/// `tollgate admin routing-rules …`.
#[derive(Subcommand)]
pub enum RoutingRules {
    /// Create a routing rule for a model, or replace the one with --id.
    Set {
        /// The model name the rule applies to.
        #[arg(long)]
        model: String,
        /// weighted (default) | simple_shuffle | priority | least_busy | latency_based |
        /// cost_based | usage_based.
        #[arg(long)]
        strategy: Option<String>,
        /// A model tried when every deployment failed, in order (repeatable).
        #[arg(long = "fallback", value_name = "MODEL")]
        fallbacks: Vec<String>,
        /// A model tried when the input is too long for this one (repeatable).
        #[arg(long = "context-window-fallback", value_name = "MODEL")]
        context_window_fallbacks: Vec<String>,
        /// A model tried when the provider refuses the content (repeatable).
        #[arg(long = "content-policy-fallback", value_name = "MODEL")]
        content_policy_fallbacks: Vec<String>,
        /// Retries after the first attempt, on another deployment when there is one.
        #[arg(long, default_value_t = 0)]
        max_retries: u32,
        /// Failures within the edge's window that cool a deployment down (0: edge default).
        #[arg(long, default_value_t = 0)]
        allowed_fails: u32,
        /// How long a failing deployment is left out (0: edge default).
        #[arg(long, default_value_t = 0)]
        cooldown_seconds: u32,
        /// The whole request's deadline, retries included, in milliseconds (0: edge default).
        #[arg(long, default_value_t = 0)]
        timeout_ms: u64,
        /// The rule's id (none: a new rule).
        #[arg(long)]
        id: Option<String>,
    },
    /// List routing rules.
    List,
    /// Delete a routing rule.
    Delete {
        /// The rule's id.
        id: String,
    },
}

impl RoutingRules {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            RoutingRules::Set {
                model,
                strategy,
                fallbacks,
                context_window_fallbacks,
                content_policy_fallbacks,
                max_retries,
                allowed_fails,
                cooldown_seconds,
                timeout_ms,
                id,
            } => {
                let request = RoutingRule {
                    id: id.unwrap_or_default(),
                    model_name: model,
                    strategy: strategy.unwrap_or_default(),
                    fallbacks,
                    max_retries,
                    cooldown_seconds,
                    timeout_ms,
                    context_window_fallbacks,
                    content_policy_fallbacks,
                    allowed_fails,
                };
                out.show(
                    "setting the routing rule",
                    client.set_routing_rule(request).await,
                )
            }
            RoutingRules::List => out.show(
                "listing routing rules",
                client.list_routing_rules(ListRoutingRulesRequest {}).await,
            ),
            RoutingRules::Delete { id } => {
                delete(out, "routing rule", id, |r| client.delete_routing_rule(r)).await
            }
        }
    }
}

/// `tollgate admin traffic-rules …`.
#[derive(Subcommand)]
pub enum TrafficRules {
    /// Create a traffic rule, or replace the one with --id. Conditions left out match
    /// everything; a repeated condition matches any of its values.
    Set(Box<TrafficRuleArgs>),
    /// List traffic rules in evaluation order.
    List,
    /// Delete a traffic rule.
    Delete {
        /// The rule's id.
        id: String,
    },
}

/// The fields of `traffic-rules set`.
#[derive(Args)]
pub struct TrafficRuleArgs {
    /// The rule's id (none: a new rule).
    #[arg(long)]
    id: Option<String>,
    /// Rules are evaluated by ascending order; the first that matches applies.
    #[arg(long, default_value_t = 0)]
    order: u32,
    #[arg(long, default_value = "")]
    description: String,
    /// Match: the requested model (repeatable).
    #[arg(long = "model")]
    models: Vec<String>,
    /// Match: the calling key's id (repeatable).
    #[arg(long = "key")]
    key_ids: Vec<String>,
    /// Match: the calling key's team id (repeatable).
    #[arg(long = "team")]
    team_ids: Vec<String>,
    /// Match: a tag from x-tollgate-tags or the key's tags (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Match: the client's region, from x-tollgate-region or the edge's (repeatable).
    #[arg(long = "client-region")]
    client_regions: Vec<String>,
    /// Match: chat | embeddings | stream | tools (repeatable).
    #[arg(long = "request-type")]
    request_types: Vec<String>,
    /// Match: request bodies of at least this many bytes.
    #[arg(long, default_value_t = 0)]
    min_body_bytes: u64,
    /// Match: request bodies of at most this many bytes.
    #[arg(long, default_value_t = 0)]
    max_body_bytes: u64,
    /// Match: from this time of day (HH:MM), with --until.
    #[arg(long, default_value = "")]
    from: String,
    /// Match: until this time of day (HH:MM, exclusive).
    #[arg(long, default_value = "")]
    until: String,
    /// The time zone of --from and --until (default UTC).
    #[arg(long, default_value = "")]
    timezone: String,
    /// Match: on these days, mon … sun (repeatable).
    #[arg(long = "weekday")]
    weekdays: Vec<String>,
    /// Action: refuse the request with this message.
    #[arg(long, default_value = "")]
    deny: String,
    /// Action: only these deployments may serve it (repeatable).
    #[arg(long = "deployment")]
    deployment_ids: Vec<String>,
    /// Action: only deployments in these regions may serve it (repeatable).
    #[arg(long = "region")]
    regions: Vec<String>,
    /// Action: try deployments in this region first.
    #[arg(long, default_value = "")]
    prefer_region: String,
    /// Action: use this routing strategy.
    #[arg(long, default_value = "")]
    strategy: String,
}

impl TrafficRules {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            TrafficRules::Set(a) => {
                let a = *a;
                let request = TrafficRule {
                    id: a.id.unwrap_or_default(),
                    order: a.order,
                    description: a.description,
                    when: Some(TrafficMatch {
                        models: a.models,
                        key_ids: a.key_ids,
                        team_ids: a.team_ids,
                        tags: a.tags,
                        regions: a.client_regions,
                        request_types: a.request_types,
                        min_body_bytes: a.min_body_bytes,
                        max_body_bytes: a.max_body_bytes,
                        time_start: a.from,
                        time_end: a.until,
                        timezone: a.timezone,
                        weekdays: a.weekdays,
                    }),
                    then: Some(TrafficAction {
                        deny: a.deny,
                        deployment_ids: a.deployment_ids,
                        regions: a.regions,
                        prefer_region: a.prefer_region,
                        strategy: a.strategy,
                    }),
                };
                out.show(
                    "setting the traffic rule",
                    client.set_traffic_rule(request).await,
                )
            }
            TrafficRules::List => out.show(
                "listing traffic rules",
                client.list_traffic_rules(ListTrafficRulesRequest {}).await,
            ),
            TrafficRules::Delete { id } => {
                delete(out, "traffic rule", id, |r| client.delete_traffic_rule(r)).await
            }
        }
    }
}

/// `tollgate admin deployment-health`.
#[derive(Args)]
pub struct DeploymentHealth {
    /// Only this deployment.
    #[arg(long, default_value = "")]
    deployment: String,
}

impl DeploymentHealth {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        let request = ListDeploymentHealthRequest {
            deployment_id: self.deployment,
        };
        out.show(
            "listing deployment health",
            client.list_deployment_health(request).await,
        )
    }
}
