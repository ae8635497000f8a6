//! `tollgate admin budgets …`, `rate-limits …`, `access-groups …`, `guardrails …` and
//! `cache-policies …`: the rules a request is held to.

use clap::Subcommand;
use tollgate_proto::admin::{
    AccessGroup, Budget, CachePolicy, Guardrail, LimitSchedule, ListAccessGroupsRequest,
    ListBudgetsRequest, ListCachePoliciesRequest, ListGuardrailsRequest, ListRateLimitsRequest,
    RateLimit,
};

use super::{AdminClient, delete};
use crate::cli::reply::Out;

/// `tollgate admin budgets …`.
#[derive(Subcommand)]
pub enum Budgets {
    /// Create a budget, or replace the one with --id.
    Set {
        /// key | user | team | model.
        #[arg(long)]
        scope: String,
        /// The id of the key, user or team, or the model name.
        #[arg(long)]
        scope_id: String,
        /// The cap, in USD per period.
        #[arg(long, value_name = "USD")]
        amount: f64,
        /// daily | weekly | monthly | total.
        #[arg(long)]
        period: String,
        /// IANA time zone the periods start in (default UTC).
        #[arg(long, value_name = "TZ")]
        timezone: Option<String>,
        /// Alert at this percentage of the amount (repeatable).
        #[arg(long = "threshold", value_name = "PCT")]
        thresholds: Vec<f64>,
        /// The budget's id (none: a new budget).
        #[arg(long)]
        id: Option<String>,
    },
    /// List budgets.
    List {
        /// Only budgets on this scope (key | user | team | model).
        #[arg(long)]
        scope: Option<String>,
        /// Only budgets on this key, user, team or model.
        #[arg(long)]
        scope_id: Option<String>,
    },
    /// Delete a budget.
    Delete {
        /// The budget's id.
        id: String,
    },
}

impl Budgets {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Budgets::Set {
                scope,
                scope_id,
                amount,
                period,
                timezone,
                thresholds,
                id,
            } => {
                let request = Budget {
                    id: id.unwrap_or_default(),
                    scope,
                    scope_id,
                    amount_usd: amount,
                    period,
                    timezone: timezone.unwrap_or_default(),
                    thresholds,
                };
                out.show("setting the budget", client.set_budget(request).await)
            }
            Budgets::List { scope, scope_id } => {
                let request = ListBudgetsRequest {
                    scope: scope.unwrap_or_default(),
                    scope_id: scope_id.unwrap_or_default(),
                };
                out.show("listing budgets", client.list_budgets(request).await)
            }
            Budgets::Delete { id } => delete(out, "budget", id, |r| client.delete_budget(r)).await,
        }
    }
}

/// `tollgate admin rate-limits …`.
#[derive(Subcommand)]
pub enum RateLimits {
    /// Create a rate limit, or replace the one with --id.
    Set {
        /// key | user | team | model | tag.
        #[arg(long)]
        scope: String,
        /// The id of the key, user or team, the model name, or the key tag.
        #[arg(long)]
        scope_id: String,
        /// Count only requests for this model.
        #[arg(long)]
        model: Option<String>,
        /// Other figures during a weekly window (repeatable; the first open one applies), as
        /// `from=20:00,to=06:00,tz=Europe/Berlin,days=mon+tue,rpm=6000,tpm=0,max_concurrent=0`
        /// (days, tz and the figures optional; a figure left out is 0, unlimited).
        #[arg(long = "schedule", value_name = "SCHEDULE", value_parser = parse_schedule)]
        schedules: Vec<LimitSchedule>,
        /// Requests per minute (0: unlimited).
        #[arg(long, default_value_t = 0)]
        rpm: u64,
        /// Tokens per minute (0: unlimited).
        #[arg(long, default_value_t = 0)]
        tpm: u64,
        /// Requests in flight at once (0: unlimited).
        #[arg(long, default_value_t = 0)]
        max_concurrent: u64,
        /// The rate limit's id (none: a new one).
        #[arg(long)]
        id: Option<String>,
    },
    /// List rate limits.
    List {
        /// Only limits on this scope (key | user | team | model | tag).
        #[arg(long)]
        scope: Option<String>,
        /// Only limits on this key, user, team or model.
        #[arg(long)]
        scope_id: Option<String>,
    },
    /// Delete a rate limit.
    Delete {
        /// The rate limit's id.
        id: String,
    },
}

impl RateLimits {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            RateLimits::Set {
                scope,
                scope_id,
                model,
                schedules,
                rpm,
                tpm,
                max_concurrent,
                id,
            } => {
                let request = RateLimit {
                    id: id.unwrap_or_default(),
                    scope,
                    scope_id,
                    rpm,
                    tpm,
                    max_concurrent,
                    model: model.unwrap_or_default(),
                    schedules,
                };
                out.show(
                    "setting the rate limit",
                    client.set_rate_limit(request).await,
                )
            }
            RateLimits::List { scope, scope_id } => {
                let request = ListRateLimitsRequest {
                    scope: scope.unwrap_or_default(),
                    scope_id: scope_id.unwrap_or_default(),
                };
                out.show(
                    "listing rate limits",
                    client.list_rate_limits(request).await,
                )
            }
            RateLimits::Delete { id } => {
                delete(out, "rate limit", id, |r| client.delete_rate_limit(r)).await
            }
        }
    }
}

/// `tollgate admin access-groups …`.
#[derive(Subcommand)]
pub enum AccessGroups {
    /// Create an access group, or replace the one with --id.
    Set {
        /// The group's name (unique).
        #[arg(long)]
        name: String,
        /// A model in the group (repeatable, at least one).
        #[arg(long = "model", value_name = "MODEL", required = true)]
        models: Vec<String>,
        /// A team granted the group (repeatable).
        #[arg(long = "team", value_name = "TEAM_ID")]
        team_ids: Vec<String>,
        /// A user granted the group (repeatable).
        #[arg(long = "user", value_name = "USER_ID")]
        user_ids: Vec<String>,
        /// A key granted the group (repeatable).
        #[arg(long = "key", value_name = "KEY_ID")]
        key_ids: Vec<String>,
        /// A user role granted the group: admin, member, viewer, finance (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// The group's id (none: a new one).
        #[arg(long)]
        id: Option<String>,
    },
    /// List access groups.
    List,
    /// Delete an access group.
    Delete {
        /// The group's id.
        id: String,
    },
}

impl AccessGroups {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            AccessGroups::Set {
                name,
                models,
                team_ids,
                user_ids,
                key_ids,
                roles,
                id,
            } => {
                let group = AccessGroup {
                    id: id.unwrap_or_default(),
                    name,
                    models,
                    team_ids,
                    user_ids,
                    key_ids,
                    roles,
                };
                out.show(
                    "setting the access group",
                    client.set_access_group(group).await,
                )
            }
            AccessGroups::List => out.show(
                "listing access groups",
                client.list_access_groups(ListAccessGroupsRequest {}).await,
            ),
            AccessGroups::Delete { id } => {
                delete(out, "access group", id, |r| client.delete_access_group(r)).await
            }
        }
    }
}

/// A `--schedule` of `rate-limits set`.
fn parse_schedule(value: &str) -> Result<LimitSchedule, String> {
    let mut schedule = LimitSchedule::default();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not name=value"))?;
        let number = || {
            v.parse::<u64>()
                .map_err(|_| format!("{name} must be a whole number, got {v:?}"))
        };
        match name {
            "from" => schedule.time_start = v.to_owned(),
            "to" => schedule.time_end = v.to_owned(),
            "tz" => schedule.timezone = v.to_owned(),
            "days" => schedule.weekdays = v.split('+').map(str::to_owned).collect(),
            "rpm" => schedule.rpm = number()?,
            "tpm" => schedule.tpm = number()?,
            "max_concurrent" => schedule.max_concurrent = number()?,
            other => {
                return Err(format!(
                    "unknown {other:?}: use from, to, tz, days, rpm, tpm, max_concurrent"
                ));
            }
        }
    }
    if schedule.time_start.is_empty() || schedule.time_end.is_empty() {
        return Err("a schedule needs from=HH:MM and to=HH:MM".to_owned());
    }
    Ok(schedule)
}

/// `tollgate admin guardrails …`.
#[derive(Subcommand)]
pub enum Guardrails {
    /// Create a guardrail, or replace the one with --id.
    Set {
        /// The guardrail's name.
        #[arg(long)]
        name: String,
        /// The implementation: bedrock, pii or regex.
        #[arg(long)]
        kind: String,
        /// pre_call | post_call | during_call.
        #[arg(long)]
        mode: String,
        /// A model it applies to (repeatable; none: every model).
        #[arg(long = "model", value_name = "MODEL")]
        models: Vec<String>,
        /// A team whose keys it applies to (repeatable; none: every team).
        #[arg(long = "team", value_name = "TEAM_ID")]
        team_ids: Vec<String>,
        /// A key it applies to (repeatable; none: every key).
        #[arg(long = "key", value_name = "KEY_ID")]
        key_ids: Vec<String>,
        /// The implementation's settings, a JSON object.
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        /// The guardrail's id (none: a new one).
        #[arg(long)]
        id: Option<String>,
    },
    /// List guardrails.
    List,
    /// Delete a guardrail.
    Delete {
        /// The guardrail's id.
        id: String,
    },
}

impl Guardrails {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Guardrails::Set {
                name,
                kind,
                mode,
                models,
                team_ids,
                key_ids,
                config,
                id,
            } => {
                if let Some(config) = &config {
                    serde_json::from_str::<serde_json::Value>(config)
                        .map_err(|e| anyhow::anyhow!("--config is not valid JSON: {e}"))?;
                }
                let request = Guardrail {
                    id: id.unwrap_or_default(),
                    name,
                    kind,
                    mode,
                    models,
                    team_ids,
                    key_ids,
                    config_json: config.unwrap_or_default(),
                };
                out.show("setting the guardrail", client.set_guardrail(request).await)
            }
            Guardrails::List => out.show(
                "listing guardrails",
                client.list_guardrails(ListGuardrailsRequest {}).await,
            ),
            Guardrails::Delete { id } => {
                delete(out, "guardrail", id, |r| client.delete_guardrail(r)).await
            }
        }
    }
}

/// `tollgate admin cache-policies …`.
#[derive(Subcommand)]
pub enum CachePolicies {
    /// Cache a model's answers, or change the policy with --id.
    Set {
        /// The model (as clients name it).
        #[arg(long)]
        model: String,
        /// How long an answer is served from the cache, in seconds.
        #[arg(long)]
        ttl_seconds: u32,
        /// team (default) | key | global: who shares an answer.
        #[arg(long, default_value = "team")]
        scope: String,
        /// Turns on the semantic tier with this embeddings model.
        #[arg(long, value_name = "MODEL")]
        semantic_model: Option<String>,
        /// The least cosine similarity at which the semantic tier reuses an answer.
        #[arg(long, default_value_t = 0.95)]
        semantic_threshold: f64,
        /// The policy's id (none: a new one).
        #[arg(long)]
        id: Option<String>,
    },
    /// List cache policies.
    List,
    /// Delete a cache policy.
    Delete {
        /// The policy's id.
        id: String,
    },
}

impl CachePolicies {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            CachePolicies::Set {
                model,
                ttl_seconds,
                scope,
                semantic_model,
                semantic_threshold,
                id,
            } => {
                let request = CachePolicy {
                    id: id.unwrap_or_default(),
                    model,
                    ttl_seconds,
                    scope,
                    semantic_embeddings_model: semantic_model.unwrap_or_default(),
                    semantic_threshold,
                };
                out.show(
                    "setting the cache policy",
                    client.set_cache_policy(request).await,
                )
            }
            CachePolicies::List => out.show(
                "listing cache policies",
                client
                    .list_cache_policies(ListCachePoliciesRequest {})
                    .await,
            ),
            CachePolicies::Delete { id } => {
                delete(out, "cache policy", id, |r| client.delete_cache_policy(r)).await
            }
        }
    }
}
