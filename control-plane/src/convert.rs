//! Conversions between the admin API's messages and the domain's entities.

use std::str::FromStr;

use tollgate_policy::model::{
    AdminToken, Budget, Credential, Deployment, Guardrail, Price, RateLimit, RoutingRule, Team,
    User, VirtualKey,
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
    }
}

pub fn rate_limit_from(r: pb::RateLimit, new_id: String) -> Result<RateLimit, ControlError> {
    Ok(RateLimit {
        id: non_empty(r.id).unwrap_or(new_id),
        scope: parse("scope", &r.scope)?,
        scope_id: r.scope_id,
        rpm: r.rpm,
        tpm: r.tpm,
        max_concurrent: r.max_concurrent,
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
    }
}
