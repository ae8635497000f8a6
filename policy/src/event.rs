//! Policy events: past-tense facts, the only way policy ever changes.
//!
//! Events are stored and published as JSON (`type` names the variant). A change of shape gets
//! a new `SCHEMA_VERSION` and an upcaster here, never an edit of an old variant.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{
    AccessGroup, AdminToken, Budget, CachePolicy, Credential, Deployment, Envelope, Guardrail,
    Metadata, PreviousSecret, Price, RateLimit, RoutingRule, SealedSecret, SigningKeyRotation,
    Team, TrafficRule, User, VirtualKey,
};

/// The version of the event JSON written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// One change of policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PolicyEvent {
    #[serde(rename = "team.created")]
    TeamCreated { team: Team },
    #[serde(rename = "team.updated")]
    TeamUpdated { team: Team },
    #[serde(rename = "team.deleted")]
    TeamDeleted { id: String },

    #[serde(rename = "user.created")]
    UserCreated { user: User },
    #[serde(rename = "user.updated")]
    UserUpdated { user: User },
    #[serde(rename = "user.deleted")]
    UserDeleted { id: String },

    #[serde(rename = "key.created")]
    KeyCreated { key: VirtualKey },
    #[serde(rename = "key.updated")]
    KeyUpdated {
        id: String,
        alias: String,
        models: Vec<String>,
        expires_at: Option<DateTime<Utc>>,
        tags: Vec<String>,
        metadata: Metadata,
    },
    #[serde(rename = "key.rotated")]
    KeyRotated {
        id: String,
        prefix: String,
        hash: String,
        previous: Option<PreviousSecret>,
        /// The new secret, sealed (see [`crate::model::SealedSecret`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signing: Option<SealedSecret>,
    },
    #[serde(rename = "key.blocked")]
    KeyBlocked { id: String },
    #[serde(rename = "key.unblocked")]
    KeyUnblocked { id: String },
    #[serde(rename = "key.revoked")]
    KeyRevoked { id: String },

    #[serde(rename = "credential.put")]
    CredentialPut { credential: Credential },
    #[serde(rename = "credential.deleted")]
    CredentialDeleted { id: String },
    /// The credential's data key is wrapped anew (a KEK rotation); what it seals is unchanged.
    #[serde(rename = "credential.rewrapped")]
    CredentialRewrapped { id: String, envelope: Envelope },

    #[serde(rename = "deployment.upserted")]
    DeploymentUpserted { deployment: Deployment },
    #[serde(rename = "deployment.deleted")]
    DeploymentDeleted { id: String },

    #[serde(rename = "price.set")]
    PriceSet { price: Price },
    #[serde(rename = "price.deleted")]
    PriceDeleted { model: String },

    #[serde(rename = "budget.set")]
    BudgetSet { budget: Budget },
    #[serde(rename = "budget.deleted")]
    BudgetDeleted { id: String },

    #[serde(rename = "rate_limit.set")]
    RateLimitSet { rate_limit: RateLimit },
    #[serde(rename = "rate_limit.deleted")]
    RateLimitDeleted { id: String },

    #[serde(rename = "routing_rule.set")]
    RoutingRuleSet { rule: RoutingRule },
    #[serde(rename = "routing_rule.deleted")]
    RoutingRuleDeleted { id: String },
    #[serde(rename = "traffic_rule.set")]
    TrafficRuleSet { rule: TrafficRule },
    #[serde(rename = "traffic_rule.deleted")]
    TrafficRuleDeleted { id: String },

    #[serde(rename = "access_group.set")]
    AccessGroupSet { group: AccessGroup },
    #[serde(rename = "access_group.deleted")]
    AccessGroupDeleted { id: String },

    #[serde(rename = "guardrail.set")]
    GuardrailSet { guardrail: Guardrail },
    #[serde(rename = "guardrail.deleted")]
    GuardrailDeleted { id: String },

    #[serde(rename = "cache_policy.set")]
    CachePolicySet { policy: CachePolicy },
    #[serde(rename = "cache_policy.deleted")]
    CachePolicyDeleted { id: String },

    #[serde(rename = "admin_token.created")]
    AdminTokenCreated { token: AdminToken },
    #[serde(rename = "admin_token.revoked")]
    AdminTokenRevoked { id: String },
    /// From now on the bootstrap token (`TOLLGATE_ADMIN_TOKEN`) is refused.
    #[serde(rename = "admin_token.bootstrap_disabled")]
    BootstrapTokenDisabled {},

    /// Policy is signed with a new key from the next event on.
    #[serde(rename = "policy_signing_key.rotated")]
    SigningKeyRotated { rotation: SigningKeyRotation },
    /// Edges accept budget statuses signed with `public_key` (and the key it replaces).
    #[serde(rename = "status_key.set")]
    StatusKeySet { public_key: String },
}

impl PolicyEvent {
    /// The aggregate this event belongs to; versions are counted per aggregate.
    pub fn aggregate_id(&self) -> String {
        use PolicyEvent::*;
        let (kind, id) = match self {
            TeamCreated { team } | TeamUpdated { team } => ("team", team.id.as_str()),
            TeamDeleted { id } => ("team", id.as_str()),
            UserCreated { user } | UserUpdated { user } => ("user", user.id.as_str()),
            UserDeleted { id } => ("user", id.as_str()),
            KeyCreated { key } => ("key", key.id.as_str()),
            KeyUpdated { id, .. }
            | KeyRotated { id, .. }
            | KeyBlocked { id }
            | KeyUnblocked { id }
            | KeyRevoked { id } => ("key", id.as_str()),
            CredentialPut { credential } => ("credential", credential.id.as_str()),
            CredentialDeleted { id } | CredentialRewrapped { id, .. } => {
                ("credential", id.as_str())
            }
            DeploymentUpserted { deployment } => ("deployment", deployment.id.as_str()),
            DeploymentDeleted { id } => ("deployment", id.as_str()),
            PriceSet { price } => ("price", price.model.as_str()),
            PriceDeleted { model } => ("price", model.as_str()),
            BudgetSet { budget } => ("budget", budget.id.as_str()),
            BudgetDeleted { id } => ("budget", id.as_str()),
            RateLimitSet { rate_limit } => ("rate_limit", rate_limit.id.as_str()),
            RateLimitDeleted { id } => ("rate_limit", id.as_str()),
            AccessGroupSet { group } => ("access_group", group.id.as_str()),
            AccessGroupDeleted { id } => ("access_group", id.as_str()),
            RoutingRuleSet { rule } => ("routing_rule", rule.id.as_str()),
            RoutingRuleDeleted { id } => ("routing_rule", id.as_str()),
            TrafficRuleSet { rule } => ("traffic_rule", rule.id.as_str()),
            TrafficRuleDeleted { id } => ("traffic_rule", id.as_str()),
            GuardrailSet { guardrail } => ("guardrail", guardrail.id.as_str()),
            GuardrailDeleted { id } => ("guardrail", id.as_str()),
            CachePolicySet { policy } => ("cache_policy", policy.id.as_str()),
            CachePolicyDeleted { id } => ("cache_policy", id.as_str()),
            AdminTokenCreated { token } => ("admin_token", token.id.as_str()),
            AdminTokenRevoked { id } => ("admin_token", id.as_str()),
            BootstrapTokenDisabled {} => ("admin_token", "bootstrap"),
            SigningKeyRotated { .. } => ("trust", "policy_signing_key"),
            StatusKeySet { .. } => ("trust", "status_key"),
        };
        format!("{kind}:{id}")
    }

    /// The `type` name stored beside the payload (`team.created`, …).
    pub fn type_name(&self) -> String {
        // The serde tag is the single source of the names; read it back rather than repeat them.
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

/// An event as committed to the log: its place in the global order and who caused it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global, gap-free position in the log, starting at 1.
    pub sequence: u64,
    pub id: Uuid,
    pub aggregate_id: String,
    /// Position within the aggregate, starting at 1.
    pub version: u64,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    pub event: PolicyEvent,
}

/// Why a stored event could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    UnknownSchema(u32),
    #[error("malformed event payload: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Parses a stored payload written with `schema_version`, upcasting older shapes.
pub fn decode_payload(schema_version: u32, payload: &str) -> Result<PolicyEvent, DecodeError> {
    if schema_version > SCHEMA_VERSION {
        return Err(DecodeError::UnknownSchema(schema_version));
    }
    Ok(serde_json::from_str(payload)?)
}

/// Serialises an event for storage; the inverse of [`decode_payload`].
pub fn encode_payload(event: &PolicyEvent) -> String {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no floats
    // that JSON can't represent once `decide` has rejected non-finite numbers.
    serde_json::to_string(event).unwrap_or_default()
}
