//! Conversions between the admin API's messages and the domain's entities.

use std::str::FromStr;

use tollgate_policy::model::{
    AccessGroup, AdminToken, Budget, CachePolicy, CacheScope, Credential, Deployment, Guardrail,
    LimitSchedule, Price, RateLimit, RoutingRule, SemanticMatch, Team, TimeWindow, TrafficAction,
    TrafficMatch, TrafficRule, User, VirtualKey,
};
use tollgate_proto::admin as pb;
use tollgate_proto::convert::timestamp;

use crate::error::ControlError;

/// Parses one of a closed set of names, naming the field in the error.
pub fn parse<T: FromStr<Err = String>>(field: &str, value: &str) -> Result<T, ControlError> {
    value
        .parse()
        .map_err(|e: String| ControlError::InvalidArgument(format!("{field}: {e}")))
}

/// Each of `values` parsed as a `T`.
pub fn parse_list<T: FromStr<Err = String>>(
    field: &str,
    values: &[String],
) -> Result<Vec<T>, ControlError> {
    values.iter().map(|v| parse(field, v)).collect()
}

/// An empty string as "absent".
pub fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

pub fn team(t: &Team) -> pb::Team {
    pb::Team {
        id: t.id.clone(),
        name: t.name.clone(),
        metadata: t.metadata.clone().into_iter().collect(),
    }
}

pub fn user(u: &User) -> pb::User {
    pb::User {
        id: u.id.clone(),
        email: u.email.clone(),
        team_id: u.team_id.clone().unwrap_or_default(),
        role: u.role.to_string(),
        metadata: u.metadata.clone().into_iter().collect(),
    }
}

pub fn key(k: &VirtualKey) -> pb::Key {
    pb::Key {
        id: k.id.clone(),
        alias: k.alias.clone(),
        prefix: k.prefix.clone(),
        team_id: k.team_id.clone().unwrap_or_default(),
        user_id: k.user_id.clone().unwrap_or_default(),
        models: k.models.clone(),
        blocked: k.blocked,
        revoked: k.revoked,
        expires_at: k.expires_at.map(timestamp),
        created_at: Some(timestamp(k.created_at)),
        tags: k.tags.clone(),
        metadata: k.metadata.clone().into_iter().collect(),
        previous_valid_until: k.previous.as_ref().map(|p| timestamp(p.valid_until)),
    }
}

pub fn credential(c: &Credential) -> pb::Credential {
    pb::Credential {
        id: c.id.clone(),
        name: c.name.clone(),
        provider: c.provider.to_string(),
        field_names: c.field_names.clone(),
    }
}

pub fn deployment(d: &Deployment) -> pb::Deployment {
    pb::Deployment {
        id: d.id.clone(),
        model_name: d.model_name.clone(),
        provider: d.provider.to_string(),
        upstream_model: d.upstream_model.clone(),
        api_base: d.api_base.clone(),
        region: d.region.clone(),
        credential_id: d.credential_id.clone().unwrap_or_default(),
        weight: d.weight,
        priority: d.priority,
        rpm: d.rpm,
        tpm: d.tpm,
        settings: d.settings.clone().into_iter().collect(),
    }
}

pub fn deployment_from(d: pb::Deployment, new_id: String) -> Result<Deployment, ControlError> {
    Ok(Deployment {
        id: non_empty(d.id).unwrap_or(new_id),
        provider: parse("provider", &d.provider)?,
        model_name: d.model_name,
        upstream_model: d.upstream_model,
        api_base: d.api_base,
        region: d.region,
        credential_id: non_empty(d.credential_id),
        weight: d.weight,
        priority: d.priority,
        rpm: d.rpm,
        tpm: d.tpm,
        settings: d.settings.into_iter().collect(),
    })
}

pub fn price(p: &Price) -> pb::Price {
    pb::Price {
        model: p.model.clone(),
        input_per_mtok: p.input_per_mtok,
        output_per_mtok: p.output_per_mtok,
        cached_input_per_mtok: p.cached_input_per_mtok,
        cache_write_per_mtok: p.cache_write_per_mtok,
    }
}

pub fn price_from(p: pb::Price) -> Price {
    Price {
        model: p.model,
        input_per_mtok: p.input_per_mtok,
        output_per_mtok: p.output_per_mtok,
        cached_input_per_mtok: p.cached_input_per_mtok,
        cache_write_per_mtok: p.cache_write_per_mtok,
    }
}

pub fn budget(b: &Budget) -> pb::Budget {
    pb::Budget {
        id: b.id.clone(),
        scope: b.scope.to_string(),
        scope_id: b.scope_id.clone(),
        amount_usd: b.amount_usd,
        period: b.period.to_string(),
        timezone: b.timezone.clone(),
        thresholds: b.thresholds.clone(),
    }
}

pub fn budget_from(b: pb::Budget, new_id: String) -> Result<Budget, ControlError> {
    Ok(Budget {
        id: non_empty(b.id).unwrap_or(new_id),
        scope: parse("scope", &b.scope)?,
        scope_id: b.scope_id,
        amount_usd: b.amount_usd,
        period: parse("period", &b.period)?,
        timezone: b.timezone,
        thresholds: b.thresholds,
    })
}

pub fn rate_limit(r: &RateLimit) -> pb::RateLimit {
    pb::RateLimit {
        id: r.id.clone(),
        scope: r.scope.to_string(),
        scope_id: r.scope_id.clone(),
        rpm: r.rpm,
        tpm: r.tpm,
        max_concurrent: r.max_concurrent,
        model: r.model.clone().unwrap_or_default(),
        schedules: r
            .schedules
            .iter()
            .map(|s| pb::LimitSchedule {
                time_start: clock(s.window.start_minute),
                time_end: clock(s.window.end_minute),
                timezone: s.window.timezone.clone(),
                weekdays: s.window.weekdays.iter().map(ToString::to_string).collect(),
                rpm: s.rpm,
                tpm: s.tpm,
                max_concurrent: s.max_concurrent,
            })
            .collect(),
    }
}

pub fn rate_limit_from(r: pb::RateLimit, new_id: String) -> Result<RateLimit, ControlError> {
    let schedules = r
        .schedules
        .into_iter()
        .map(|s| {
            Ok(LimitSchedule {
                window: TimeWindow {
                    start_minute: clock_minute("time_start", &s.time_start)?,
                    end_minute: clock_minute("time_end", &s.time_end)?,
                    timezone: s.timezone,
                    weekdays: parse_list("weekdays", &s.weekdays)?,
                },
                rpm: s.rpm,
                tpm: s.tpm,
                max_concurrent: s.max_concurrent,
            })
        })
        .collect::<Result<_, ControlError>>()?;
    Ok(RateLimit {
        id: non_empty(r.id).unwrap_or(new_id),
        scope: parse("scope", &r.scope)?,
        scope_id: r.scope_id,
        rpm: r.rpm,
        tpm: r.tpm,
        max_concurrent: r.max_concurrent,
        model: non_empty(r.model),
        schedules,
    })
}

/// `HH:MM` of minutes after midnight.
fn clock(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

pub fn access_group(g: &AccessGroup) -> pb::AccessGroup {
    pb::AccessGroup {
        id: g.id.clone(),
        name: g.name.clone(),
        models: g.models.clone(),
        team_ids: g.team_ids.clone(),
        user_ids: g.user_ids.clone(),
        key_ids: g.key_ids.clone(),
        roles: g.roles.iter().map(ToString::to_string).collect(),
    }
}

pub fn access_group_from(g: pb::AccessGroup, new_id: String) -> Result<AccessGroup, ControlError> {
    Ok(AccessGroup {
        id: non_empty(g.id).unwrap_or(new_id),
        name: g.name,
        models: g.models,
        team_ids: g.team_ids,
        user_ids: g.user_ids,
        key_ids: g.key_ids,
        roles: parse_list("roles", &g.roles)?,
    })
}

pub fn routing_rule(r: &RoutingRule) -> pb::RoutingRule {
    pb::RoutingRule {
        id: r.id.clone(),
        model_name: r.model_name.clone(),
        strategy: r.strategy.to_string(),
        fallbacks: r.fallbacks.clone(),
        max_retries: r.max_retries,
        cooldown_seconds: r.cooldown_seconds,
        timeout_ms: r.timeout_ms,
        context_window_fallbacks: r.context_window_fallbacks.clone(),
        content_policy_fallbacks: r.content_policy_fallbacks.clone(),
        allowed_fails: r.allowed_fails,
    }
}

pub fn routing_rule_from(r: pb::RoutingRule, new_id: String) -> Result<RoutingRule, ControlError> {
    let strategy = if r.strategy.is_empty() {
        "simple_shuffle"
    } else {
        &r.strategy
    };
    Ok(RoutingRule {
        id: non_empty(r.id).unwrap_or(new_id),
        strategy: parse("strategy", strategy)?,
        model_name: r.model_name,
        fallbacks: r.fallbacks,
        max_retries: r.max_retries,
        cooldown_seconds: r.cooldown_seconds,
        timeout_ms: r.timeout_ms,
        context_window_fallbacks: r.context_window_fallbacks,
        content_policy_fallbacks: r.content_policy_fallbacks,
        allowed_fails: r.allowed_fails,
    })
}

pub fn traffic_rule(r: &TrafficRule) -> pb::TrafficRule {
    let w = &r.when;
    let time = w.time.as_ref();
    pb::TrafficRule {
        id: r.id.clone(),
        order: r.order,
        description: r.description.clone(),
        when: Some(pb::TrafficMatch {
            models: w.models.clone(),
            key_ids: w.key_ids.clone(),
            team_ids: w.team_ids.clone(),
            tags: w.tags.clone(),
            regions: w.regions.clone(),
            request_types: w.request_types.iter().map(ToString::to_string).collect(),
            min_body_bytes: w.min_body_bytes,
            max_body_bytes: w.max_body_bytes,
            time_start: time.map(|t| clock(t.start_minute)).unwrap_or_default(),
            time_end: time.map(|t| clock(t.end_minute)).unwrap_or_default(),
            timezone: time.map(|t| t.timezone.clone()).unwrap_or_default(),
            weekdays: time
                .map(|t| t.weekdays.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        }),
        then: Some(pb::TrafficAction {
            deny: r.then.deny.clone().unwrap_or_default(),
            deployment_ids: r.then.deployment_ids.clone(),
            regions: r.then.regions.clone(),
            prefer_region: r.then.prefer_region.clone().unwrap_or_default(),
            strategy: r.then.strategy.map(|s| s.to_string()).unwrap_or_default(),
        }),
    }
}

pub fn traffic_rule_from(r: pb::TrafficRule, new_id: String) -> Result<TrafficRule, ControlError> {
    let w = r.when.unwrap_or_default();
    let then = r.then.unwrap_or_default();
    let time = match (w.time_start.is_empty(), w.time_end.is_empty()) {
        (true, true) if w.weekdays.is_empty() && w.timezone.is_empty() => None,
        (true, true) => {
            return Err(ControlError::InvalidArgument(
                "weekdays and timezone need a time window: set time_start and time_end (\"00:00\" to \"23:59\" for the whole day)".to_owned(),
            ));
        }
        (false, false) => Some(TimeWindow {
            start_minute: clock_minute("time_start", &w.time_start)?,
            end_minute: clock_minute("time_end", &w.time_end)?,
            timezone: w.timezone,
            weekdays: parse_list("weekdays", &w.weekdays)?,
        }),
        _ => {
            return Err(ControlError::InvalidArgument(
                "set both time_start and time_end, or neither".to_owned(),
            ));
        }
    };
    Ok(TrafficRule {
        id: non_empty(r.id).unwrap_or(new_id),
        order: r.order,
        description: r.description,
        when: TrafficMatch {
            request_types: parse_list("request_types", &w.request_types)?,
            models: w.models,
            key_ids: w.key_ids,
            team_ids: w.team_ids,
            tags: w.tags,
            regions: w.regions,
            min_body_bytes: w.min_body_bytes,
            max_body_bytes: w.max_body_bytes,
            time,
        },
        then: TrafficAction {
            deny: non_empty(then.deny),
            deployment_ids: then.deployment_ids,
            regions: then.regions,
            prefer_region: non_empty(then.prefer_region),
            strategy: non_empty(then.strategy)
                .map(|s| parse("strategy", &s))
                .transpose()?,
        },
    })
}

/// Minutes after midnight of an `HH:MM` time of day.
fn clock_minute(field: &str, value: &str) -> Result<u32, ControlError> {
    let invalid = || {
        ControlError::InvalidArgument(format!(
            "{field} {value:?} is not a time of day: use HH:MM between 00:00 and 23:59"
        ))
    };
    let (hours, minutes) = value.split_once(':').ok_or_else(invalid)?;
    let hours: u32 = hours.parse().map_err(|_| invalid())?;
    let minutes: u32 = minutes.parse().map_err(|_| invalid())?;
    if hours > 23 || minutes > 59 || value.len() != 5 {
        return Err(invalid());
    }
    Ok(hours * 60 + minutes)
}

/// The semantic cache's similarity threshold when a policy names none.
const DEFAULT_SEMANTIC_THRESHOLD: f64 = 0.95;

pub fn cache_policy(p: &CachePolicy) -> pb::CachePolicy {
    pb::CachePolicy {
        id: p.id.clone(),
        model: p.model.clone(),
        ttl_seconds: p.ttl_seconds,
        scope: p.scope.to_string(),
        semantic_embeddings_model: p
            .semantic
            .as_ref()
            .map(|s| s.embeddings_model.clone())
            .unwrap_or_default(),
        semantic_threshold: p.semantic.as_ref().map_or(0.0, |s| s.threshold),
    }
}

pub fn cache_policy_from(p: pb::CachePolicy, new_id: String) -> Result<CachePolicy, ControlError> {
    Ok(CachePolicy {
        id: non_empty(p.id).unwrap_or(new_id),
        scope: match p.scope.trim() {
            "" => CacheScope::Team,
            scope => parse("scope", scope)?,
        },
        semantic: non_empty(p.semantic_embeddings_model).map(|embeddings_model| SemanticMatch {
            embeddings_model,
            threshold: if p.semantic_threshold == 0.0 {
                DEFAULT_SEMANTIC_THRESHOLD
            } else {
                p.semantic_threshold
            },
        }),
        model: p.model,
        ttl_seconds: p.ttl_seconds,
    })
}

pub fn guardrail(g: &Guardrail) -> pb::Guardrail {
    pb::Guardrail {
        id: g.id.clone(),
        name: g.name.clone(),
        kind: g.kind.clone(),
        mode: g.mode.to_string(),
        models: g.models.clone(),
        config_json: g.config.to_string(),
        team_ids: g.team_ids.clone(),
        key_ids: g.key_ids.clone(),
    }
}

pub fn guardrail_from(g: pb::Guardrail, new_id: String) -> Result<Guardrail, ControlError> {
    let config = if g.config_json.trim().is_empty() {
        "{}"
    } else {
        &g.config_json
    };
    Ok(Guardrail {
        id: non_empty(g.id).unwrap_or(new_id),
        mode: parse("mode", &g.mode)?,
        config: serde_json::from_str(config).map_err(|e| {
            ControlError::InvalidArgument(format!("config_json is not valid JSON: {e}"))
        })?,
        name: g.name,
        kind: g.kind,
        models: g.models,
        team_ids: g.team_ids,
        key_ids: g.key_ids,
    })
}

pub fn admin_token(t: &AdminToken) -> pb::AdminToken {
    pb::AdminToken {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.to_string(),
        prefix: t.prefix.clone(),
        revoked: t.revoked,
        created_at: Some(timestamp(t.created_at)),
        expires_at: t.expires_at.map(timestamp),
    }
}
