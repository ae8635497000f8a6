//! Commands and `decide`: a request to change policy, validated against the current state,
//! becomes zero or more events. Pure: ids, secrets' hashes, sealed credentials and the clock
//! are chosen by the caller and passed in, so the same input always decides the same way.

use chrono::{DateTime, Duration, Utc};

use crate::event::PolicyEvent;
use crate::model::{
    AccessGroup, AdminToken, Budget, CachePolicy, Credential, Deployment, Envelope, Guardrail,
    Metadata, PreviousSecret, Price, RateLimit, RoutingRule, Scope, SealedSecret,
    SigningKeyRotation, Team, TrafficRule, User, UserRole, VirtualKey,
};
use crate::state::PolicyState;
use crate::validate;

pub use error::CommandError;

/// The most schedules one rate limit may carry.
const MAX_SCHEDULES: usize = 16;

mod checks;
pub(crate) mod error;
mod guardrail;
mod traffic;

use checks::{
    absent, check_hash, checked_alias, checked_deployment, checked_new_key, found, future_expiry,
    live_key, live_keys, optional_team, scope_target, unique_email, unique_team_name,
};

/// The longest a rotated key's old secret may stay valid.
pub const MAX_ROTATION_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// The most retries a routing rule may ask for: each one can cost a provider call.
pub const MAX_RETRIES: u32 = 10;
/// The longest a cache policy may keep an answer.
pub const MAX_CACHE_TTL_SECONDS: u32 = 30 * 24 * 3600;

/// A request to change policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    CreateTeam {
        id: String,
        name: String,
        metadata: Metadata,
    },
    /// `None` fields stay as they are.
    UpdateTeam {
        id: String,
        name: Option<String>,
        metadata: Option<Metadata>,
    },
    DeleteTeam {
        id: String,
    },
    CreateUser {
        id: String,
        email: String,
        team_id: Option<String>,
        role: UserRole,
        metadata: Metadata,
    },
    /// `None` fields stay as they are; `team_id: Some(None)` takes the user out of its team.
    UpdateUser {
        id: String,
        email: Option<String>,
        team_id: Option<Option<String>>,
        role: Option<UserRole>,
        metadata: Option<Metadata>,
    },
    DeleteUser {
        id: String,
    },
    CreateKey {
        key: VirtualKey,
    },
    /// `None` fields stay as they are.
    UpdateKey {
        id: String,
        alias: Option<String>,
        models: Option<Vec<String>>,
        expires_at: Option<Option<DateTime<Utc>>>,
        tags: Option<Vec<String>>,
        metadata: Option<Metadata>,
    },
    RotateKey {
        id: String,
        prefix: String,
        hash: String,
        grace_seconds: u64,
        signing: Option<SealedSecret>,
    },
    BlockKey {
        id: String,
    },
    UnblockKey {
        id: String,
    },
    RevokeKey {
        id: String,
    },
    /// Creates the credential, or replaces the one with the same name (keeping its id).
    PutCredential {
        credential: Credential,
    },
    DeleteCredential {
        id: String,
    },
    /// Stores credential `id`'s data key, whose fingerprint is `key_id`, wrapped anew.
    RewrapCredential {
        id: String,
        key_id: String,
        envelope: Envelope,
    },
    UpsertDeployment {
        deployment: Deployment,
    },
    DeleteDeployment {
        id: String,
    },
    SetPrice {
        price: Price,
    },
    DeletePrice {
        model: String,
    },
    SetBudget {
        budget: Budget,
    },
    DeleteBudget {
        id: String,
    },
    SetRateLimit {
        rate_limit: RateLimit,
    },
    DeleteRateLimit {
        id: String,
    },
    SetRoutingRule {
        rule: RoutingRule,
    },
    DeleteRoutingRule {
        id: String,
    },
    SetAccessGroup {
        group: AccessGroup,
    },
    DeleteAccessGroup {
        id: String,
    },
    SetTrafficRule {
        rule: TrafficRule,
    },
    DeleteTrafficRule {
        id: String,
    },
    SetGuardrail {
        guardrail: Guardrail,
    },
    DeleteGuardrail {
        id: String,
    },
    SetCachePolicy {
        policy: CachePolicy,
    },
    DeleteCachePolicy {
        id: String,
    },
    CreateAdminToken {
        token: AdminToken,
    },
    RevokeAdminToken {
        id: String,
    },
    DisableBootstrapToken,
    /// From the control plane's own configuration, never the admin API.
    RotateSigningKey {
        rotation: SigningKeyRotation,
    },
    /// From the control plane's own configuration, never the admin API.
    SetStatusKey {
        public_key: String,
    },
}

/// Validates `command` against `state` at time `now` and returns the events it causes; an
/// empty list means the command asks for what already is (set commands are idempotent).
pub fn decide(
    state: &PolicyState,
    command: Command,
    now: DateTime<Utc>,
) -> Result<Vec<PolicyEvent>, CommandError> {
    use Command::*;
    let event = match command {
        CreateTeam { id, name, metadata } => {
            validate::id("team id", &id)?;
            let name = validate::name("team name", &name)?;
            absent(state.teams.contains_key(&id), "team", &id)?;
            unique_team_name(state, &name, None)?;
            PolicyEvent::TeamCreated {
                team: Team { id, name, metadata },
            }
        }
        UpdateTeam { id, name, metadata } => {
            let mut team = found(state.teams.get(&id), "team", &id)?.clone();
            if let Some(name) = name {
                team.name = validate::name("team name", &name)?;
                unique_team_name(state, &team.name, Some(&id))?;
            }
            if let Some(metadata) = metadata {
                team.metadata = metadata;
            }
            if state.teams.get(&id) == Some(&team) {
                return Ok(vec![]);
            }
            PolicyEvent::TeamUpdated { team }
        }
        DeleteTeam { id } => {
            found(state.teams.get(&id), "team", &id)?;
            let users = state
                .users
                .values()
                .filter(|u| u.team_id.as_ref() == Some(&id));
            let keys = live_keys(state).filter(|k| k.team_id.as_ref() == Some(&id));
            let (users, keys) = (users.count(), keys.count());
            if users + keys > 0 {
                return Err(CommandError::FailedPrecondition(format!(
                    "team {id} still has {users} user(s) and {keys} live key(s); move or delete them first"
                )));
            }
            traffic::unreferenced(state, "team", &id, |r| &r.when.team_ids)?;
            ungranted(state, "team", &id, |g| &g.team_ids)?;
            PolicyEvent::TeamDeleted { id }
        }
        CreateUser {
            id,
            email,
            team_id,
            role,
            metadata,
        } => {
            validate::id("user id", &id)?;
            absent(state.users.contains_key(&id), "user", &id)?;
            let email = validate::email(&email)?;
            unique_email(state, &email, None)?;
            let team_id = optional_team(state, team_id)?;
            PolicyEvent::UserCreated {
                user: User {
                    id,
                    email,
                    team_id,
                    role,
                    metadata,
                },
            }
        }
        UpdateUser {
            id,
            email,
            team_id,
            role,
            metadata,
        } => {
            let current = found(state.users.get(&id), "user", &id)?;
            let mut user = current.clone();
            if let Some(email) = email {
                user.email = validate::email(&email)?;
                unique_email(state, &user.email, Some(&id))?;
            }
            if let Some(team_id) = team_id {
                user.team_id = optional_team(state, team_id)?;
            }
            user.role = role.unwrap_or(user.role);
            user.metadata = metadata.unwrap_or(user.metadata);
            if &user == current {
                return Ok(vec![]);
            }
            PolicyEvent::UserUpdated { user }
        }
        DeleteUser { id } => {
            found(state.users.get(&id), "user", &id)?;
            let keys = live_keys(state)
                .filter(|k| k.user_id.as_ref() == Some(&id))
                .count();
            if keys > 0 {
                return Err(CommandError::FailedPrecondition(format!(
                    "user {id} still owns {keys} live key(s); revoke them first"
                )));
            }
            ungranted(state, "user", &id, |g| &g.user_ids)?;
            PolicyEvent::UserDeleted { id }
        }
        CreateKey { key } => PolicyEvent::KeyCreated {
            key: checked_new_key(state, key, now)?,
        },
        UpdateKey {
            id,
            alias,
            models,
            expires_at,
            tags,
            metadata,
        } => {
            let current = live_key(state, &id)?;
            let alias = match alias {
                Some(alias) => checked_alias(state, alias, Some(&id))?,
                None => current.alias.clone(),
            };
            let models = match models {
                Some(models) => validate::model_list("models", &models)?,
                None => current.models.clone(),
            };
            let expires_at = match expires_at {
                Some(at) => future_expiry(at, now)?,
                None => current.expires_at,
            };
            let tags = tags.unwrap_or_else(|| current.tags.clone());
            let metadata = metadata.unwrap_or_else(|| current.metadata.clone());
            if (&alias, &models, &expires_at, &tags, &metadata)
                == (
                    &current.alias,
                    &current.models,
                    &current.expires_at,
                    &current.tags,
                    &current.metadata,
                )
            {
                return Ok(vec![]);
            }
            PolicyEvent::KeyUpdated {
                id,
                alias,
                models,
                expires_at,
                tags,
                metadata,
            }
        }
        RotateKey {
            id,
            prefix,
            hash,
            grace_seconds,
            signing,
        } => {
            let current = live_key(state, &id)?;
            check_hash(state, &hash)?;
            if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
                return Err(CommandError::invalid(format!(
                    "grace_seconds must be at most {MAX_ROTATION_GRACE_SECONDS} (30 days)"
                )));
            }
            let previous = (grace_seconds > 0).then(|| PreviousSecret {
                hash: current.hash.clone(),
                valid_until: now + Duration::seconds(grace_seconds as i64),
                signing: current.signing.clone(),
            });
            PolicyEvent::KeyRotated {
                id,
                prefix,
                hash,
                previous,
                signing,
            }
        }
        BlockKey { id } => {
            if live_key(state, &id)?.blocked {
                return Ok(vec![]);
            }
            PolicyEvent::KeyBlocked { id }
        }
        UnblockKey { id } => {
            if !live_key(state, &id)?.blocked {
                return Ok(vec![]);
            }
            PolicyEvent::KeyUnblocked { id }
        }
        RevokeKey { id } => {
            if found(state.keys.get(&id), "key", &id)?.revoked {
                return Ok(vec![]);
            }
            PolicyEvent::KeyRevoked { id }
        }
        PutCredential { mut credential } => {
            credential.name = validate::name("credential name", &credential.name)?;
            let same_name = state
                .credentials
                .values()
                .find(|c| c.name == credential.name);
            if let Some(existing) = same_name {
                credential.id.clone_from(&existing.id);
            }
            validate::id("credential id", &credential.id)?;
            if credential.field_names.is_empty() {
                return Err(CommandError::invalid(
                    "secret_fields must hold at least one field (for example api_key)".to_owned(),
                ));
            }
            let has = |name: &str| credential.field_names.iter().any(|f| f == name);
            if has("aws_access_key_id") != has("aws_secret_access_key") {
                return Err(CommandError::invalid(
                    "an AWS credential needs both aws_access_key_id and aws_secret_access_key"
                        .to_owned(),
                ));
            }
            PolicyEvent::CredentialPut { credential }
        }
        DeleteCredential { id } => {
            found(state.credentials.get(&id), "credential", &id)?;
            let users: Vec<&str> = state
                .deployments
                .values()
                .filter(|d| d.credential_id.as_ref() == Some(&id))
                .map(|d| d.id.as_str())
                .collect();
            if !users.is_empty() {
                return Err(CommandError::FailedPrecondition(format!(
                    "credential {id} is used by deployment(s) {}; change or delete them first",
                    users.join(", ")
                )));
            }
            PolicyEvent::CredentialDeleted { id }
        }
        RewrapCredential {
            id,
            key_id,
            envelope,
        } => {
            let credential = found(state.credentials.get(&id), "credential", &id)?;
            // The credential may have been replaced since its data key was unwrapped: that
            // wrapping would then belong to a key that seals nothing any more.
            if credential.key_id != key_id {
                return Err(CommandError::FailedPrecondition(format!(
                    "credential {id} was sealed anew since its data key was read; read it again"
                )));
            }
            if credential.envelope.as_ref() == Some(&envelope) {
                return Ok(vec![]);
            }
            PolicyEvent::CredentialRewrapped { id, envelope }
        }
        UpsertDeployment { deployment } => {
            let deployment = checked_deployment(state, deployment)?;
            if state.deployments.get(&deployment.id) == Some(&deployment) {
                return Ok(vec![]);
            }
            PolicyEvent::DeploymentUpserted { deployment }
        }
        DeleteDeployment { id } => {
            found(state.deployments.get(&id), "deployment", &id)?;
            traffic::unreferenced(state, "deployment", &id, |r| &r.then.deployment_ids)?;
            PolicyEvent::DeploymentDeleted { id }
        }
        SetPrice { price } => {
            validate::model_name("model", &price.model)?;
            validate::non_negative("input_per_mtok", price.input_per_mtok)?;
            validate::non_negative("output_per_mtok", price.output_per_mtok)?;
            validate::non_negative("cached_input_per_mtok", price.cached_input_per_mtok)?;
            validate::non_negative("cache_write_per_mtok", price.cache_write_per_mtok)?;
            if state.prices.get(&price.model) == Some(&price) {
                return Ok(vec![]);
            }
            PolicyEvent::PriceSet { price }
        }
        DeletePrice { model } => {
            found(state.prices.get(&model), "price for model", &model)?;
            PolicyEvent::PriceDeleted { model }
        }
        SetBudget { mut budget } => {
            validate::id("budget id", &budget.id)?;
            if budget.scope == Scope::Tag {
                return Err(CommandError::invalid(
                    "a budget applies to a key, user, team or model; tags are for rate limits"
                        .to_owned(),
                ));
            }
            scope_target(state, budget.scope, &budget.scope_id)?;
            if !budget.amount_usd.is_finite() || budget.amount_usd <= 0.0 {
                return Err(CommandError::invalid(format!(
                    "amount_usd must be a finite number > 0, got {}",
                    budget.amount_usd
                )));
            }
            budget.timezone = validate::timezone(&budget.timezone)?;
            if let Some(bad) = budget
                .thresholds
                .iter()
                .find(|t| !t.is_finite() || **t <= 0.0 || **t > 100.0)
            {
                return Err(CommandError::invalid(format!(
                    "thresholds are percentages of amount_usd in (0, 100]; got {bad}"
                )));
            }
            budget.thresholds.sort_by(f64::total_cmp);
            budget.thresholds.dedup();
            if state.budgets.get(&budget.id) == Some(&budget) {
                return Ok(vec![]);
            }
            PolicyEvent::BudgetSet { budget }
        }
        DeleteBudget { id } => {
            found(state.budgets.get(&id), "budget", &id)?;
            PolicyEvent::BudgetDeleted { id }
        }
        SetRateLimit { mut rate_limit } => {
            validate::id("rate limit id", &rate_limit.id)?;
            scope_target(state, rate_limit.scope, &rate_limit.scope_id)?;
            if rate_limit.rpm == 0 && rate_limit.tpm == 0 && rate_limit.max_concurrent == 0 {
                return Err(CommandError::invalid(
                    "set at least one of rpm, tpm, max_concurrent (0 means unlimited); to remove a limit use DeleteRateLimit".to_owned(),
                ));
            }
            if let Some(model) = &rate_limit.model {
                if rate_limit.scope == Scope::Model {
                    return Err(CommandError::invalid(
                        "a model-scoped limit already counts one model: leave model empty"
                            .to_owned(),
                    ));
                }
                validate::model_name("model", model)?;
            }
            if rate_limit.schedules.len() > MAX_SCHEDULES {
                return Err(CommandError::invalid(format!(
                    "at most {MAX_SCHEDULES} schedules per rate limit"
                )));
            }
            for schedule in &mut rate_limit.schedules {
                traffic::time_window(&mut schedule.window)?;
            }
            if state.rate_limits.get(&rate_limit.id) == Some(&rate_limit) {
                return Ok(vec![]);
            }
            PolicyEvent::RateLimitSet { rate_limit }
        }
        DeleteRateLimit { id } => {
            found(state.rate_limits.get(&id), "rate limit", &id)?;
            PolicyEvent::RateLimitDeleted { id }
        }
        SetRoutingRule { mut rule } => {
            validate::id("routing rule id", &rule.id)?;
            validate::model_name("model_name", &rule.model_name)?;
            rule.fallbacks = validate::model_list("fallbacks", &rule.fallbacks)?;
            rule.context_window_fallbacks =
                validate::model_list("context_window_fallbacks", &rule.context_window_fallbacks)?;
            rule.content_policy_fallbacks =
                validate::model_list("content_policy_fallbacks", &rule.content_policy_fallbacks)?;
            let lists = [
                &rule.fallbacks,
                &rule.context_window_fallbacks,
                &rule.content_policy_fallbacks,
            ];
            if lists.iter().any(|list| list.contains(&rule.model_name)) {
                return Err(CommandError::invalid(format!(
                    "model {} cannot be its own fallback",
                    rule.model_name
                )));
            }
            if rule.max_retries > MAX_RETRIES {
                return Err(CommandError::invalid(format!(
                    "max_retries is at most {MAX_RETRIES}, got {}",
                    rule.max_retries
                )));
            }
            if let Some(other) = state
                .routing_rules
                .values()
                .find(|r| r.model_name == rule.model_name && r.id != rule.id)
            {
                return Err(CommandError::AlreadyExists(format!(
                    "model {} already has routing rule {}; update that one instead",
                    rule.model_name, other.id
                )));
            }
            if state.routing_rules.get(&rule.id) == Some(&rule) {
                return Ok(vec![]);
            }
            PolicyEvent::RoutingRuleSet { rule }
        }
        DeleteRoutingRule { id } => {
            found(state.routing_rules.get(&id), "routing rule", &id)?;
            PolicyEvent::RoutingRuleDeleted { id }
        }
        SetAccessGroup { mut group } => {
            validate::id("access group id", &group.id)?;
            group.name = validate::name("name", &group.name)?;
            if let Some(other) = state
                .access_groups
                .values()
                .find(|g| g.name == group.name && g.id != group.id)
            {
                return Err(CommandError::AlreadyExists(format!(
                    "access group {:?} exists already (id {})",
                    group.name, other.id
                )));
            }
            group.models = validate::model_list("models", &group.models)?;
            if group.models.is_empty() {
                return Err(CommandError::invalid(
                    "an access group needs at least one model".to_owned(),
                ));
            }
            for id in &group.team_ids {
                found(state.teams.get(id), "team", id)?;
            }
            for id in &group.user_ids {
                found(state.users.get(id), "user", id)?;
            }
            for id in &group.key_ids {
                found(state.keys.get(id), "key", id)?;
            }
            for list in [&mut group.team_ids, &mut group.user_ids, &mut group.key_ids] {
                list.sort();
                list.dedup();
            }
            group.roles.sort();
            group.roles.dedup();
            if state.access_groups.get(&group.id) == Some(&group) {
                return Ok(vec![]);
            }
            PolicyEvent::AccessGroupSet { group }
        }
        DeleteAccessGroup { id } => {
            found(state.access_groups.get(&id), "access group", &id)?;
            PolicyEvent::AccessGroupDeleted { id }
        }
        SetTrafficRule { rule } => {
            let rule = traffic::checked(state, rule)?;
            if state.traffic_rules.get(&rule.id) == Some(&rule) {
                return Ok(vec![]);
            }
            PolicyEvent::TrafficRuleSet { rule }
        }
        DeleteTrafficRule { id } => {
            found(state.traffic_rules.get(&id), "traffic rule", &id)?;
            PolicyEvent::TrafficRuleDeleted { id }
        }
        SetGuardrail { guardrail } => {
            let guardrail = guardrail::checked(state, guardrail)?;
            if state.guardrails.get(&guardrail.id) == Some(&guardrail) {
                return Ok(vec![]);
            }
            PolicyEvent::GuardrailSet { guardrail }
        }
        DeleteGuardrail { id } => {
            found(state.guardrails.get(&id), "guardrail", &id)?;
            PolicyEvent::GuardrailDeleted { id }
        }
        SetCachePolicy { policy } => {
            validate::id("cache policy id", &policy.id)?;
            validate::model_name("model", &policy.model)?;
            if !(1..=MAX_CACHE_TTL_SECONDS).contains(&policy.ttl_seconds) {
                return Err(CommandError::invalid(format!(
                    "ttl_seconds must be between 1 and {MAX_CACHE_TTL_SECONDS} (30 days), got {}",
                    policy.ttl_seconds
                )));
            }
            let other = state
                .cache_policies
                .values()
                .find(|p| p.model == policy.model && p.id != policy.id);
            if let Some(other) = other {
                return Err(CommandError::AlreadyExists(format!(
                    "model {} already has cache policy {}: change that one instead",
                    policy.model, other.id
                )));
            }
            if let Some(semantic) = &policy.semantic {
                validate::model_name("embeddings_model", &semantic.embeddings_model)?;
                if state
                    .deployments_for(&semantic.embeddings_model)
                    .next()
                    .is_none()
                {
                    return Err(CommandError::invalid(format!(
                        "embeddings_model {:?} has no deployment: deploy it before using it \
                         for the semantic cache",
                        semantic.embeddings_model
                    )));
                }
                if !(semantic.threshold > 0.0 && semantic.threshold <= 1.0) {
                    return Err(CommandError::invalid(format!(
                        "the semantic threshold is a cosine similarity in (0, 1], got {}",
                        semantic.threshold
                    )));
                }
            }
            if state.cache_policies.get(&policy.id) == Some(&policy) {
                return Ok(vec![]);
            }
            PolicyEvent::CachePolicySet { policy }
        }
        DeleteCachePolicy { id } => {
            found(state.cache_policies.get(&id), "cache policy", &id)?;
            PolicyEvent::CachePolicyDeleted { id }
        }
        CreateAdminToken { mut token } => {
            validate::id("token id", &token.id)?;
            absent(
                state.admin_tokens.contains_key(&token.id),
                "token",
                &token.id,
            )?;
            token.name = validate::name("token name", &token.name)?;
            if state.admin_tokens.values().any(|t| t.hash == token.hash) {
                return Err(CommandError::AlreadyExists(
                    "token secret already in use".to_owned(),
                ));
            }
            if token.expires_at.is_some_and(|at| at <= now) {
                return Err(CommandError::invalid(
                    "the token would expire before it is created: give a time to live above 0"
                        .to_owned(),
                ));
            }
            token.revoked = false;
            token.created_at = now;
            PolicyEvent::AdminTokenCreated { token }
        }
        RevokeAdminToken { id } => {
            if found(state.admin_tokens.get(&id), "token", &id)?.revoked {
                return Ok(vec![]);
            }
            if state.bootstrap_disabled && !state.has_live_admin_token(Some(&id), now) {
                return Err(CommandError::FailedPrecondition(format!(
                    "token {id} is the last admin token and the bootstrap token is disabled: \
                     create another admin token first"
                )));
            }
            PolicyEvent::AdminTokenRevoked { id }
        }
        DisableBootstrapToken => {
            if state.bootstrap_disabled {
                return Ok(vec![]);
            }
            if !state.has_live_admin_token(None, now) {
                return Err(CommandError::FailedPrecondition(
                    "no admin token would be left: create an admin token (tokens create --role \
                     admin) before disabling the bootstrap token"
                        .to_owned(),
                ));
            }
            PolicyEvent::BootstrapTokenDisabled {}
        }
        RotateSigningKey { rotation } => {
            let in_effect = state.signing_key_after(state.sequence);
            if in_effect == Some(rotation.public_key.as_str()) {
                return Ok(vec![]);
            }
            if let Some(key) = in_effect
                && key != rotation.previous_key
            {
                return Err(CommandError::FailedPrecondition(format!(
                    "policy is signed with key {key}, not {}: only the key in effect can hand over",
                    rotation.previous_key
                )));
            }
            PolicyEvent::SigningKeyRotated { rotation }
        }
        SetStatusKey { public_key } => {
            if state.status_keys.first() == Some(&public_key) {
                return Ok(vec![]);
            }
            PolicyEvent::StatusKeySet { public_key }
        }
    };
    Ok(vec![event])
}

/// Refuses to delete a team or user an access group is granted to.
fn ungranted(
    state: &PolicyState,
    what: &str,
    id: &str,
    list: impl Fn(&AccessGroup) -> &Vec<String>,
) -> Result<(), CommandError> {
    match state
        .access_groups
        .values()
        .find(|g| list(g).iter().any(|x| x == id))
    {
        Some(group) => Err(CommandError::FailedPrecondition(format!(
            "access group {} is granted to {what} {id}; update or delete the group first",
            group.id
        ))),
        None => Ok(()),
    }
}
