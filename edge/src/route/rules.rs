//! Traffic rules: what the first matching rules (by order, then id) decide for a request.
//!
//! A client may send `x-tollgate-tags` and `x-tollgate-region`, and nothing a client sends may
//! let it escape a rule: a rule that denies or restricts is matched only on what the gateway
//! trusts (the key's own tags, the edge's region). Client-sent tags and regions can only select
//! rules that express a preference (a preferred region, a strategy).

use chrono::{DateTime, Utc};
use tollgate_policy::PolicyState;
use tollgate_policy::model::{RequestType, TrafficAction, TrafficMatch, TrafficRule, VirtualKey};

/// What traffic rules can match on.
pub struct RequestFacts<'a> {
    pub model: &'a str,
    pub key: &'a VirtualKey,
    /// From the `x-tollgate-tags` header: for preference rules only.
    pub client_tags: &'a [String],
    /// From the `x-tollgate-region` header: for preference rules only.
    pub client_region: Option<&'a str>,
    /// The region of the edge serving the request.
    pub edge_region: &'a str,
    pub types: &'a [RequestType],
    pub body_bytes: u64,
    pub now: DateTime<Utc>,
}

/// Whose word a rule is matched on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// The key's tags and the edge's region only.
    Gateway,
    /// The client's tags and region too.
    Client,
}

/// What the rules decide for `facts`: deny or restrictions from the first enforcing rule that
/// matches on trusted facts; a preferred region and a strategy from the first rule that sets
/// them among that one and the pure preference rules matched with the client's facts.
pub fn decide(state: &PolicyState, facts: &RequestFacts<'_>) -> Option<TrafficAction> {
    let mut rules: Vec<&TrafficRule> = state.traffic_rules.values().collect();
    rules.sort_by(|a, b| (a.order, &a.id).cmp(&(b.order, &b.id)));
    let enforcing = rules
        .iter()
        .copied()
        .find(|rule| enforces(&rule.then) && matches(&rule.when, facts, Trust::Gateway));
    let preferring = rules
        .iter()
        .copied()
        .find(|rule| !enforces(&rule.then) && matches(&rule.when, facts, Trust::Client));
    let mut by_order: Vec<&TrafficRule> = enforcing.into_iter().chain(preferring).collect();
    if by_order.is_empty() {
        return None;
    }
    by_order.sort_by(|a, b| (a.order, &a.id).cmp(&(b.order, &b.id)));
    let mut action = enforcing.map(|rule| rule.then.clone()).unwrap_or_default();
    action.prefer_region = by_order
        .iter()
        .find_map(|rule| rule.then.prefer_region.clone());
    action.strategy = by_order.iter().find_map(|rule| rule.then.strategy);
    Some(action)
}

/// Whether an action limits what a request may do (rather than only steering it).
fn enforces(action: &TrafficAction) -> bool {
    action.deny.is_some() || !action.deployment_ids.is_empty() || !action.regions.is_empty()
}

fn matches(when: &TrafficMatch, facts: &RequestFacts<'_>, trust: Trust) -> bool {
    let any_of =
        |wanted: &[String], value: &str| wanted.is_empty() || wanted.iter().any(|w| w == value);
    let optional = |wanted: &[String], value: Option<&String>| {
        wanted.is_empty() || value.is_some_and(|v| wanted.contains(v))
    };
    let (client_tags, region) = match trust {
        Trust::Gateway => (&[][..], facts.edge_region),
        Trust::Client => (
            facts.client_tags,
            facts.client_region.unwrap_or(facts.edge_region),
        ),
    };
    any_of(&when.models, facts.model)
        && any_of(&when.key_ids, &facts.key.id)
        && optional(&when.team_ids, facts.key.team_id.as_ref())
        && any_of(&when.regions, region)
        && (when.tags.is_empty()
            || when
                .tags
                .iter()
                .any(|t| client_tags.contains(t) || facts.key.tags.contains(t)))
        && (when.request_types.is_empty()
            || when.request_types.iter().any(|t| facts.types.contains(t)))
        && facts.body_bytes >= when.min_body_bytes
        && (when.max_body_bytes == 0 || facts.body_bytes <= when.max_body_bytes)
        && when.time.as_ref().is_none_or(|w| w.contains(facts.now))
}
