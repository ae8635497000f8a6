//! Commands and `decide`: a request to change policy, validated against the current state,
//! becomes zero or more events. Pure: ids, secrets' hashes, sealed credentials and the clock
//! are chosen by the caller and passed in, so the same input always decides the same way.

use chrono::{DateTime, Utc};

use crate::event::PolicyEvent;
use crate::model::{
    AccessGroup, AdminToken, Budget, CachePolicy, Credential, Deployment, Envelope, Guardrail,
    Metadata, Price, RateLimit, RoutingRule, SealedSecret, SigningKeyRotation, TrafficRule,
    UserRole, VirtualKey,
};
use crate::state::PolicyState;

pub use crate::error::CommandError;
pub use keys::KeyChanges;

/// The most schedules one rate limit may carry.
const MAX_SCHEDULES: usize = 16;

mod access;
mod budgets;
mod cache;
mod checks;
mod credentials;
mod deployments;
mod guardrail;
mod keys;
mod limits;
mod org;
mod prices;
mod routing;
mod tokens;
mod traffic;

/// What a command decides: the event it causes, or none when it asks for what already is.
type Decision = Result<Option<PolicyEvent>, CommandError>;

/// `event` setting `wanted`, or nothing when `current` already is it (set commands are
/// idempotent).
fn changed<T: PartialEq>(
    current: Option<&T>,
    wanted: T,
    event: impl FnOnce(T) -> PolicyEvent,
) -> Decision {
    Ok((current != Some(&wanted)).then(|| event(wanted)))
}

/// `event` deleting the `what` `id`, which must exist (`current`).
fn deleted<T>(
    current: Option<&T>,
    what: &str,
    id: String,
    event: impl FnOnce(String) -> PolicyEvent,
) -> Decision {
    checks::found(current, what, &id)?;
    Ok(Some(event(id)))
}

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
    /// What `changes` leaves `None` stays as it is.
    UpdateKey {
        id: String,
        changes: KeyChanges,
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
    let decision = match command {
        CreateTeam { id, name, metadata } => org::create_team(state, id, name, metadata),
        UpdateTeam { id, name, metadata } => org::update_team(state, id, name, metadata),
        DeleteTeam { id } => org::delete_team(state, id),
        CreateUser {
            id,
            email,
            team_id,
            role,
            metadata,
        } => org::create_user(state, id, email, team_id, role, metadata),
        UpdateUser {
            id,
            email,
            team_id,
            role,
            metadata,
        } => org::update_user(state, id, email, team_id, role, metadata),
        DeleteUser { id } => org::delete_user(state, id),
        CreateKey { key } => keys::create(state, key, now),
        UpdateKey { id, changes } => keys::update(state, id, changes, now),
        RotateKey {
            id,
            prefix,
            hash,
            grace_seconds,
            signing,
        } => keys::rotate(state, id, prefix, hash, grace_seconds, signing, now),
        BlockKey { id } => keys::block(state, id),
        UnblockKey { id } => keys::unblock(state, id),
        RevokeKey { id } => keys::revoke(state, id),
        PutCredential { credential } => credentials::put(state, credential),
        DeleteCredential { id } => credentials::delete(state, id),
        RewrapCredential {
            id,
            key_id,
            envelope,
        } => credentials::rewrap(state, id, key_id, envelope),
        UpsertDeployment { deployment } => deployments::upsert(state, deployment),
        DeleteDeployment { id } => deployments::delete(state, id),
        SetPrice { price } => prices::set(state, price),
        DeletePrice { model } => prices::delete(state, model),
        SetBudget { budget } => budgets::set(state, budget),
        DeleteBudget { id } => budgets::delete(state, id),
        SetRateLimit { rate_limit } => limits::set(state, rate_limit),
        DeleteRateLimit { id } => limits::delete(state, id),
        SetRoutingRule { rule } => routing::set_rule(state, rule),
        DeleteRoutingRule { id } => routing::delete_rule(state, id),
        SetAccessGroup { group } => access::set(state, group),
        DeleteAccessGroup { id } => access::delete(state, id),
        SetTrafficRule { rule } => traffic::set(state, rule),
        DeleteTrafficRule { id } => traffic::delete(state, id),
        SetGuardrail { guardrail } => guardrail::set(state, guardrail),
        DeleteGuardrail { id } => guardrail::delete(state, id),
        SetCachePolicy { policy } => cache::set(state, policy),
        DeleteCachePolicy { id } => cache::delete(state, id),
        CreateAdminToken { token } => tokens::create(state, token, now),
        RevokeAdminToken { id } => tokens::revoke(state, id, now),
        DisableBootstrapToken => tokens::disable_bootstrap(state, now),
        RotateSigningKey { rotation } => tokens::rotate_signing_key(state, rotation),
        SetStatusKey { public_key } => tokens::set_status_key(state, public_key),
    };
    Ok(decision?.into_iter().collect())
}
