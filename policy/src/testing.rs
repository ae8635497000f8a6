//! Proptest strategies for commands, for property tests here and in the control plane.
//!
//! Ids are drawn from small pools so that commands often refer to what earlier ones created,
//! which is where validation and the fold meet.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use std::collections::BTreeMap;

use crate::command::{Command, KeyChanges};
use crate::event::RecordedEvent;
use crate::model::*;
use crate::state::PolicyState;

/// A pre-call guardrail `g` of `kind` on every model, team and key.
pub fn guardrail(kind: &str, config: serde_json::Value) -> Guardrail {
    Guardrail {
        id: "g".into(),
        name: "g".into(),
        kind: kind.into(),
        mode: GuardrailMode::PreCall,
        models: vec![],
        team_ids: vec![],
        key_ids: vec![],
        config,
    }
}

/// A fixed clock for generated commands.
pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

fn pick(prefix: &'static str) -> impl Strategy<Value = String> {
    (0..4u8).prop_map(move |i| format!("{prefix}{i}"))
}

fn opt(prefix: &'static str) -> impl Strategy<Value = Option<String>> {
    prop::option::of(pick(prefix))
}

fn hash() -> impl Strategy<Value = String> {
    (0..12u8).prop_map(|i| format!("{i:064x}"))
}

fn models() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(pick("m"), 0..3)
}

fn metadata() -> impl Strategy<Value = Metadata> {
    prop::collection::btree_map(pick("k"), pick("v"), 0..2)
}

fn scope() -> impl Strategy<Value = (Scope, String)> {
    prop_oneof![
        pick("key").prop_map(|id| (Scope::Key, id)),
        pick("u").prop_map(|id| (Scope::User, id)),
        pick("t").prop_map(|id| (Scope::Team, id)),
        pick("m").prop_map(|id| (Scope::Model, id)),
        pick("tag").prop_map(|id| (Scope::Tag, id)),
    ]
}

fn key() -> impl Strategy<Value = VirtualKey> {
    (
        pick("key"),
        pick("alias"),
        opt("t"),
        opt("u"),
        models(),
        hash(),
        0..3i64,
    )
        .prop_map(
            |(id, alias, team_id, user_id, models, hash, expiry)| VirtualKey {
                id,
                alias,
                prefix: hash[..6].to_owned(),
                hash,
                team_id,
                user_id,
                models,
                // -1: in the past (refused), 0: never, 1+: in the future.
                expires_at: (expiry != 0).then(|| epoch() + Duration::hours(expiry * 2 - 3)),
                blocked: false,
                revoked: false,
                previous: None,
                tags: vec![],
                metadata: BTreeMap::new(),
                created_at: epoch(),
                signing: None,
            },
        )
}

fn deployment() -> impl Strategy<Value = Deployment> {
    (
        pick("d"),
        pick("m"),
        prop::sample::select(Provider::ALL),
        opt("c"),
        0..3u32,
        prop::sample::select(vec!["", "http://127.0.0.1:9", "https://a:b@x"]),
    )
        .prop_map(
            |(id, model_name, provider, credential_id, weight, api_base)| Deployment {
                id,
                model_name,
                provider,
                upstream_model: String::new(),
                api_base: api_base.to_owned(),
                region: if weight == 0 {
                    String::new()
                } else {
                    "us-east-1".to_owned()
                },
                credential_id,
                weight,
                priority: 0,
                rpm: 0,
                tpm: 0,
                settings: BTreeMap::new(),
            },
        )
}

/// Any command, valid or not against whatever state it meets.
pub fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => org_command(),
        6 => keys_command(),
        5 => providers_command(),
        4 => spend_command(),
        3 => traffic_command(),
        6 => guards_command(),
    ]
}

/// Team and user commands.
fn org_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (pick("t"), pick("team"), metadata())
            .prop_map(|(id, name, metadata)| Command::CreateTeam { id, name, metadata }),
        (pick("t"), opt("team")).prop_map(|(id, name)| Command::UpdateTeam {
            id,
            name,
            metadata: None
        }),
        pick("t").prop_map(|id| Command::DeleteTeam { id }),
        (
            pick("u"),
            pick("e"),
            opt("t"),
            prop::sample::select(UserRole::ALL)
        )
            .prop_map(|(id, e, team_id, role)| Command::CreateUser {
                id,
                email: format!("{e}@example.com"),
                team_id,
                role,
                metadata: BTreeMap::new(),
            }),
        (pick("u"), prop::option::of(opt("t"))).prop_map(|(id, team_id)| Command::UpdateUser {
            id,
            email: None,
            team_id,
            role: None,
            metadata: None,
        }),
        pick("u").prop_map(|id| Command::DeleteUser { id }),
    ]
}

/// Key commands: create, change, rotate, block, unblock, revoke.
fn keys_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        key().prop_map(|key| Command::CreateKey { key }),
        (pick("key"), prop::option::of(models())).prop_map(|(id, models)| Command::UpdateKey {
            id,
            changes: KeyChanges {
                models,
                ..KeyChanges::default()
            },
        }),
        (pick("key"), hash(), 0..2u64).prop_map(|(id, hash, grace)| Command::RotateKey {
            id,
            prefix: hash[..6].to_owned(),
            hash,
            grace_seconds: grace * 3600,
            signing: None,
        }),
        pick("key").prop_map(|id| Command::BlockKey { id }),
        pick("key").prop_map(|id| Command::UnblockKey { id }),
        pick("key").prop_map(|id| Command::RevokeKey { id }),
    ]
}

/// Credential, deployment and price commands.
fn providers_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (pick("c"), pick("cred")).prop_map(|(id, name)| Command::PutCredential {
            credential: Credential {
                id,
                name,
                provider: Provider::Openai,
                field_names: vec!["api_key".to_owned()],
                sealed: "c2VhbGVk".to_owned(),
                key_id: "k1".to_owned(),
                envelope: None,
            }
        }),
        pick("c").prop_map(|id| Command::DeleteCredential { id }),
        deployment().prop_map(|deployment| Command::UpsertDeployment { deployment }),
        pick("d").prop_map(|id| Command::DeleteDeployment { id }),
        (pick("m"), 0..3u8).prop_map(|(model, p)| Command::SetPrice {
            price: Price {
                model,
                input_per_mtok: f64::from(p) - 0.5,
                output_per_mtok: 2.0,
                cached_input_per_mtok: 0.1,
                cache_write_per_mtok: 0.0,
            }
        }),
    ]
}

/// Budget and rate limit commands.
fn spend_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            pick("b"),
            scope(),
            0..3u8,
            prop::sample::select(Period::ALL)
        )
            .prop_map(
                |(id, (scope, scope_id), amount, period)| Command::SetBudget {
                    budget: Budget {
                        id,
                        scope,
                        scope_id,
                        amount_usd: f64::from(amount),
                        period,
                        timezone: String::new(),
                        thresholds: vec![80.0, 50.0],
                    }
                }
            ),
        pick("b").prop_map(|id| Command::DeleteBudget { id }),
        (pick("r"), scope(), 0..2u64, prop::option::of(pick("m"))).prop_map(
            |(id, (scope, scope_id), rpm, model)| Command::SetRateLimit {
                rate_limit: RateLimit {
                    id,
                    scope,
                    scope_id,
                    rpm,
                    tpm: 0,
                    max_concurrent: 0,
                    model,
                    schedules: Vec::new(),
                },
            }
        ),
        pick("r").prop_map(|id| Command::DeleteRateLimit { id }),
    ]
}

/// Routing and traffic rule commands.
fn traffic_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (pick("rr"), pick("m"), models()).prop_map(|(id, model_name, fallbacks)| {
            Command::SetRoutingRule {
                rule: RoutingRule {
                    id,
                    model_name,
                    strategy: RoutingStrategy::Weighted,
                    fallbacks,
                    max_retries: 2,
                    cooldown_seconds: 0,
                    timeout_ms: 0,
                    context_window_fallbacks: vec![],
                    content_policy_fallbacks: vec![],
                    allowed_fails: 0,
                },
            }
        }),
        (pick("tr"), pick("t"), pick("d"), 0..3u32).prop_map(|(id, team, deployment, order)| {
            Command::SetTrafficRule {
                rule: TrafficRule {
                    id,
                    order,
                    description: String::new(),
                    when: TrafficMatch {
                        team_ids: vec![team],
                        ..TrafficMatch::default()
                    },
                    then: TrafficAction {
                        deployment_ids: vec![deployment],
                        ..TrafficAction::default()
                    },
                },
            }
        }),
        pick("tr").prop_map(|id| Command::DeleteTrafficRule { id }),
    ]
}

/// Guardrail, cache policy and access group commands.
fn guards_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (pick("g"), models()).prop_map(|(id, models)| Command::SetGuardrail {
            guardrail: Guardrail {
                id,
                name: "pii".to_owned(),
                kind: "regex".to_owned(),
                mode: GuardrailMode::PreCall,
                models,
                team_ids: vec![],
                key_ids: vec![],
                config: serde_json::json!({"patterns": ["\\d{16}"], "action": "block"}),
            }
        }),
        pick("g").prop_map(|id| Command::DeleteGuardrail { id }),
        (
            pick("cp"),
            pick("m"),
            0u32..100,
            prop::sample::select(CacheScope::ALL)
        )
            .prop_map(|(id, model, ttl_seconds, scope)| Command::SetCachePolicy {
                policy: CachePolicy {
                    id,
                    model,
                    ttl_seconds,
                    scope,
                    semantic: None,
                },
            }),
        pick("cp").prop_map(|id| Command::DeleteCachePolicy { id }),
        (
            pick("ag"),
            models(),
            pick("t"),
            prop::sample::select(UserRole::ALL)
        )
            .prop_map(|(id, models, team, role)| Command::SetAccessGroup {
                group: AccessGroup {
                    name: id.clone(),
                    id,
                    models,
                    team_ids: vec![team],
                    roles: vec![role],
                    ..AccessGroup::default()
                },
            }),
        pick("ag").prop_map(|id| Command::DeleteAccessGroup { id }),
    ]
}

/// Folds `events` from the empty state.
pub fn replay(events: &[RecordedEvent]) -> PolicyState {
    let mut state = PolicyState::default();
    for event in events {
        state.apply(event);
    }
    state
}
