//! The policy entities: what the event log describes and every edge caches.
//!
//! Plain data. Invariants between entities (a key's team exists, names are unique) are enforced
//! by `decide`, never here, so that folding an old log can never fail.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Free-form labels attached to an entity (cost centre, owner, ticket…).
pub type Metadata = BTreeMap<String, String>;

/// Declares a closed set of names stored as snake_case strings in events and the API.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every accepted value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in events, the API and configuration.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

named_enum!(
    /// A person's role in Tollgate.
    UserRole {
        Admin => "admin",
        Member => "member",
        Viewer => "viewer",
        Finance => "finance",
    }
);

named_enum!(
    /// What an admin-API token may do: `admin` everything, `viewer` read policy, `finance` read
    /// usage; the service roles `edge` and `aggregator` only follow policy (snapshots and the
    /// event stream).
    AdminRole {
        Admin => "admin",
        Viewer => "viewer",
        Finance => "finance",
        Edge => "edge",
        Aggregator => "aggregator",
    }
);

named_enum!(
    /// The wire protocol a deployment speaks.
    Provider {
        Openai => "openai",
        OpenaiCompatible => "openai_compatible",
        Anthropic => "anthropic",
        Bedrock => "bedrock",
        Sagemaker => "sagemaker",
        AzureOpenai => "azure_openai",
        Gemini => "gemini",
        Mock => "mock",
    }
);

named_enum!(
    /// Whom a budget or a rate limit applies to (`tag`, the keys carrying a tag, only for rate
    /// limits).
    Scope {
        Key => "key",
        User => "user",
        Team => "team",
        Model => "model",
        Tag => "tag",
    }
);

named_enum!(
    /// A budget's period; calendar boundaries are taken in the budget's time zone.
    Period {
        Daily => "daily",
        Weekly => "weekly",
        Monthly => "monthly",
        Total => "total",
    }
);

named_enum!(
    /// How a model's deployments are chosen.
    RoutingStrategy {
        SimpleShuffle => "simple_shuffle",
        Weighted => "weighted",
        Priority => "priority",
        LeastBusy => "least_busy",
        LatencyBased => "latency_based",
        CostBased => "cost_based",
        UsageBased => "usage_based",
    }
);

named_enum!(
    /// What kind of request a traffic rule matches; a request is `chat` or `embeddings`, and
    /// may also be `stream` and `tools` (a chat request that declares tools).
    RequestType {
        Chat => "chat",
        Embeddings => "embeddings",
        Stream => "stream",
        Tools => "tools",
    }
);

named_enum!(
    /// A day of the week, for time-of-day traffic rules.
    Weekday {
        Mon => "mon",
        Tue => "tue",
        Wed => "wed",
        Thu => "thu",
        Fri => "fri",
        Sat => "sat",
        Sun => "sun",
    }
);

named_enum!(
    /// Whose requests share cached answers.
    CacheScope {
        Team => "team",
        Key => "key",
        Global => "global",
    }
);

named_enum!(
    /// When a guardrail runs relative to the provider call.
    GuardrailMode {
        PreCall => "pre_call",
        PostCall => "post_call",
        DuringCall => "during_call",
    }
);

/// A group of users and keys that shares budgets and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub metadata: Metadata,
}

/// A person known to Tollgate, optionally in a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub team_id: Option<String>,
    pub role: UserRole,
    #[serde(default)]
    pub metadata: Metadata,
}

/// The secret a rotated key replaced, still accepted until `valid_until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub hash: String,
    pub valid_until: DateTime<Utc>,
    /// The replaced secret, sealed, for SigV4 signatures made with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SealedSecret>,
}

/// A key's secret sealed with the credential key: SigV4 signs with the secret itself, so
/// verifying a signature needs it, not only its hash. Kept only when the control plane has a
/// credential key; without one, a key cannot sign SigV4 requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// base64(nonce ‖ ciphertext), as credentials are sealed.
    pub sealed: String,
    /// The credential key that sealed it.
    pub key_id: String,
}

/// A virtual key. Its secret is stored as its SHA-256, and sealed (see [`SealedSecret`]) when
/// the control plane has a credential key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualKey {
    pub id: String,
    pub alias: String,
    /// The first characters of the secret, safe to display (`tg-AbCd…`).
    pub prefix: String,
    /// Lower-case hex SHA-256 of the secret.
    pub hash: String,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// Models this key may call; empty means every model.
    pub models: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub blocked: bool,
    pub revoked: bool,
    pub previous: Option<PreviousSecret>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    /// The secret, sealed, for verifying SigV4 signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SealedSecret>,
}

impl VirtualKey {
    /// A key for every model, with no owner, expiry, tags or sealed secret: `hash` is the
    /// secret's SHA-256 and `prefix` its displayable start.
    pub fn new(
        id: String,
        alias: String,
        prefix: String,
        hash: String,
        created_at: DateTime<Utc>,
    ) -> Self {
        VirtualKey {
            id,
            alias,
            prefix,
            hash,
            team_id: None,
            user_id: None,
            models: Vec::new(),
            expires_at: None,
            blocked: false,
            revoked: false,
            previous: None,
            tags: Vec::new(),
            metadata: Metadata::default(),
            created_at,
            signing: None,
        }
    }

    /// Whether the key may call `model` (an empty list allows every model).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    /// Whether a request authenticated by `hash` at `now` is accepted by this key's state.
    pub fn accepts(&self, hash: &str, now: DateTime<Utc>) -> bool {
        if self.blocked || self.revoked || self.expires_at.is_some_and(|at| at <= now) {
            return false;
        }
        hash == self.hash
            || self
                .previous
                .as_ref()
                .is_some_and(|p| p.hash == hash && now < p.valid_until)
    }
}

/// Provider secrets, sealed by the control plane; only the field names are readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    pub name: String,
    pub provider: Provider,
    /// The names of the sealed fields (`api_key`, `aws_secret_access_key`…), for display.
    pub field_names: Vec<String>,
    /// base64(nonce ‖ ciphertext) of the JSON object of fields, sealed with the credential's
    /// data key (with the credential key itself when it has no envelope).
    pub sealed: String,
    /// Identifies the key that sealed it (a fingerprint, never the key).
    pub key_id: String,
    /// The credential's data key, wrapped by a key encryption key; `None` for credentials
    /// sealed directly with the credential key, before envelopes existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Envelope>,
}

/// A data key wrapped by a key encryption key (KEK).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The KEK: `local:<fingerprint>` (the credential key) or `kms:<key id>` (AWS KMS).
    pub kek: String,
    /// The data key, wrapped by `kek` (base64).
    pub wrapped_key: String,
}

/// One upstream a model name can be routed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    /// The name clients ask for.
    pub model_name: String,
    pub provider: Provider,
    /// The provider's own name for the model.
    pub upstream_model: String,
    pub api_base: String,
    pub region: String,
    pub credential_id: Option<String>,
    /// Relative share of traffic among deployments of the same priority (at least 1).
    pub weight: u32,
    /// Lower numbers are tried first.
    pub priority: u32,
    /// Upstream's own requests-per-minute limit; 0 = none.
    pub rpm: u64,
    /// Upstream's own tokens-per-minute limit; 0 = none.
    pub tpm: u64,
    /// Provider-specific settings (for example `api_version` for Azure OpenAI).
    #[serde(default)]
    pub settings: Metadata,
}

impl Deployment {
    /// `model_name` served by `provider` as `upstream_model` at the provider's own address, with
    /// no credential, region, limits or settings, weight 1 and priority 0.
    pub fn new(id: String, model_name: String, provider: Provider, upstream_model: String) -> Self {
        Deployment {
            id,
            model_name,
            provider,
            upstream_model,
            api_base: String::new(),
            region: String::new(),
            credential_id: None,
            weight: 1,
            priority: 0,
            rpm: 0,
            tpm: 0,
            settings: Metadata::default(),
        }
    }
}

/// USD per million tokens of each class, for one model name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: f64,
    #[serde(default)]
    pub cache_write_per_mtok: f64,
}

/// A spending cap over a period for one key, user, team or model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub id: String,
    pub scope: Scope,
    pub scope_id: String,
    pub amount_usd: f64,
    pub period: Period,
    /// IANA time zone whose calendar the period follows.
    pub timezone: String,
    /// Alert thresholds as percentages of `amount_usd`, ascending.
    pub thresholds: Vec<f64>,
}

/// Request, token and concurrency limits for one key, user, team, model or key tag, counted
/// across all edges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub id: String,
    pub scope: Scope,
    pub scope_id: String,
    /// 0 = unlimited, for each of the three.
    pub rpm: u64,
    pub tpm: u64,
    pub max_concurrent: u64,
    /// Counts only requests for this model (a key, user, team or tag limit on one model).
    #[serde(default)]
    pub model: Option<String>,
    /// Other limits at some times of the week: the first open schedule's apply instead.
    #[serde(default)]
    pub schedules: Vec<LimitSchedule>,
}

/// A named set of models and who may use them. A model in at least one group may be used
/// only by keys that one of its groups is granted to: directly, through the key's team or user,
/// or through its user's role. A model in no group is open to every key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGroup {
    pub id: String,
    pub name: String,
    pub models: Vec<String>,
    pub team_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub key_ids: Vec<String>,
    pub roles: Vec<UserRole>,
}

/// Limits that replace a rate limit's own while their time window is open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSchedule {
    pub window: TimeWindow,
    /// 0 = unlimited, for each of the three, as on the limit itself.
    pub rpm: u64,
    pub tpm: u64,
    pub max_concurrent: u64,
}

/// The three figures of a rate limit in force at one moment; 0 = unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowance {
    pub rpm: u64,
    pub tpm: u64,
    pub max_concurrent: u64,
}

impl RateLimit {
    /// What the limit allows at `now`: the first open schedule's figures, else its own.
    pub fn at(&self, now: DateTime<Utc>) -> Allowance {
        match self.schedules.iter().find(|s| s.window.contains(now)) {
            Some(s) => Allowance {
                rpm: s.rpm,
                tpm: s.tpm,
                max_concurrent: s.max_concurrent,
            },
            None => Allowance {
                rpm: self.rpm,
                tpm: self.tpm,
                max_concurrent: self.max_concurrent,
            },
        }
    }

    /// Whether a request by `key` for `model` counts toward this limit.
    pub fn applies(&self, key: &VirtualKey, model: &str) -> bool {
        let subject = match self.scope {
            Scope::Key => key.id == self.scope_id,
            Scope::User => key.user_id.as_deref() == Some(self.scope_id.as_str()),
            Scope::Team => key.team_id.as_deref() == Some(self.scope_id.as_str()),
            Scope::Model => model == self.scope_id,
            Scope::Tag => key.tags.contains(&self.scope_id),
        };
        subject && self.model.as_deref().is_none_or(|m| m == model)
    }
}

/// How requests for one model name are routed, retried and failed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    pub id: String,
    pub model_name: String,
    pub strategy: RoutingStrategy,
    /// Model names tried, in order, when every deployment of `model_name` failed.
    pub fallbacks: Vec<String>,
    /// Retries after the first attempt on this model (on another deployment when there is one).
    pub max_retries: u32,
    /// How long a failing deployment is taken out of rotation; 0 = the edge's default.
    pub cooldown_seconds: u32,
    /// The whole request's deadline, retries and fallbacks included, when the client sets no
    /// `x-tollgate-timeout`; 0 = the edge's default.
    pub timeout_ms: u64,
    /// Models tried, in order, when the input is too long for this model's context window.
    #[serde(default)]
    pub context_window_fallbacks: Vec<String>,
    /// Models tried, in order, when the provider refuses the content under its policy.
    #[serde(default)]
    pub content_policy_fallbacks: Vec<String>,
    /// Failures of one deployment within the edge's failure window that open its circuit;
    /// 0 = the edge's default.
    #[serde(default)]
    pub allowed_fails: u32,
}

/// A custom routing rule: when a request matches `when`, `then` shapes where it may go.
/// Rules are evaluated by ascending `order` (then id); the first match applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficRule {
    pub id: String,
    pub order: u32,
    pub description: String,
    pub when: TrafficMatch,
    pub then: TrafficAction,
}

/// What a request must have for a traffic rule to apply; every non-empty field must match
/// (a list matches when any of its values does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficMatch {
    pub models: Vec<String>,
    pub key_ids: Vec<String>,
    pub team_ids: Vec<String>,
    /// Matches the request's `x-tollgate-tags` and its key's tags.
    pub tags: Vec<String>,
    /// The client's region: the `x-tollgate-region` header, or else the edge's own.
    pub regions: Vec<String>,
    pub request_types: Vec<RequestType>,
    /// Request body size bounds in bytes; 0 = unbounded.
    pub min_body_bytes: u64,
    pub max_body_bytes: u64,
    /// A daily time window; none = at any time.
    pub time: Option<TimeWindow>,
}

/// A part of each day, in a time zone: `[start_minute, end_minute)` after midnight, wrapping
/// past midnight when `end_minute < start_minute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    pub start_minute: u32,
    pub end_minute: u32,
    /// IANA time zone.
    pub timezone: String,
    /// Days the window is open on (the day it starts); empty = every day.
    pub weekdays: Vec<Weekday>,
}

impl TimeWindow {
    /// Whether `now` falls in the window, on one of its days (the day the window opened, for
    /// a window that wraps past midnight). A time zone that does not parse is never open.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let Ok(tz) = self.timezone.parse::<chrono_tz::Tz>() else {
            return false;
        };
        let local = now.with_timezone(&tz);
        let minute = local.hour() * 60 + local.minute();
        let (start, end) = (self.start_minute, self.end_minute);
        let (inside, opened_yesterday) = if start < end {
            (start <= minute && minute < end, false)
        } else {
            (minute >= start || minute < end, minute < end)
        };
        if !inside {
            return false;
        }
        if self.weekdays.is_empty() {
            return true;
        }
        let mut day = local.weekday();
        if opened_yesterday {
            day = day.pred();
        }
        // `Weekday::ALL` is declared Monday first, as chrono counts.
        self.weekdays
            .contains(&Weekday::ALL[day.num_days_from_monday() as usize])
    }
}

/// What a matching traffic rule does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficAction {
    /// Refuse the request with this message (no other action may be set).
    pub deny: Option<String>,
    /// Only these deployments may serve the request; empty = no restriction.
    pub deployment_ids: Vec<String>,
    /// Only deployments in these regions may serve the request; empty = no restriction.
    pub regions: Vec<String>,
    /// Deployments in this region are tried first; others only when none of them can serve.
    pub prefer_region: Option<String>,
    /// Overrides the model's routing strategy.
    pub strategy: Option<RoutingStrategy>,
}

/// A content check run before or after the provider call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Guardrail {
    pub id: String,
    pub name: String,
    /// The implementation: `bedrock`, `pii` or `regex` (see [`crate::guardrail`]).
    pub kind: String,
    pub mode: GuardrailMode,
    /// Models it applies to; empty means every model.
    pub models: Vec<String>,
    /// Teams whose keys it applies to; empty means every team (and keys without one).
    #[serde(default)]
    pub team_ids: Vec<String>,
    /// Keys it applies to; empty means every key.
    #[serde(default)]
    pub key_ids: Vec<String>,
    /// Settings of the implementation, a JSON object.
    pub config: serde_json::Value,
}

/// Answers of a model kept in the edges' response cache, and for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachePolicy {
    pub id: String,
    /// The model (as clients name it) whose answers are cached.
    pub model: String,
    /// How long an answer is served from the cache.
    pub ttl_seconds: u32,
    pub scope: CacheScope,
    /// The semantic tier, off when `None`: an embeddings model whose vectors match a request to
    /// a cached one with a different wording.
    #[serde(default)]
    pub semantic: Option<SemanticMatch>,
}

/// How the semantic tier of a cache policy matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SemanticMatch {
    /// The embeddings model (as clients name it) that turns a request into a vector.
    pub embeddings_model: String,
    /// The least cosine similarity, in (0, 1], at which a cached answer is reused.
    pub threshold: f64,
}

/// A new policy signing key, endorsed by the key it replaces: whoever trusts the old key can
/// check the new one from this alone (the keys and the endorsement are base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRotation {
    /// The Ed25519 public key that signs policy from the event after this rotation on.
    pub public_key: String,
    /// The public key it replaces, which signs the rotation event itself.
    pub previous_key: String,
    /// The previous key's signature over both keys.
    pub endorsement: String,
}

/// A bearer token for the admin and usage APIs. Only its SHA-256 is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub role: AdminRole,
    pub prefix: String,
    pub hash: String,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
    /// After this the token is refused; `None`: it never expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl AdminToken {
    /// Whether the token is accepted at `now`: neither revoked nor expired.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|at| now < at)
    }
}

/// The stored form of a key or token secret: lower-case hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    // Every request with a key pays for this: one allocation, not one per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = sha2::Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// The admin-API caller a bearer `token` identifies: the bootstrap token (given as its hash)
/// or an admin token of the policy neither revoked nor expired at `now`. Every candidate is
/// compared in constant time.
pub fn admin_caller(
    tokens: &std::collections::BTreeMap<String, AdminToken>,
    bootstrap_hash: Option<&str>,
    token: &str,
    now: DateTime<Utc>,
) -> Option<(String, AdminRole)> {
    use subtle::ConstantTimeEq;
    let presented = hash_secret(token);
    let matches = |stored: &str| bool::from(stored.as_bytes().ct_eq(presented.as_bytes()));
    if bootstrap_hash.is_some_and(matches) {
        return Some(("bootstrap".to_owned(), AdminRole::Admin));
    }
    let mut found = None;
    for t in tokens.values() {
        if matches(&t.hash) && t.is_live(now) {
            found = Some((format!("admin-token:{}", t.id), t.role));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_to_lowercase_hex_sha256() {
        // FIPS 180-2's test vector: stored hashes must not change with the encoding code.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
    use chrono::TimeZone;

    fn window(start: u32, end: u32, days: &[Weekday]) -> TimeWindow {
        TimeWindow {
            start_minute: start,
            end_minute: end,
            timezone: "Europe/Paris".to_owned(),
            weekdays: days.to_vec(),
        }
    }

    #[test]
    fn windows_follow_the_local_clock_and_wrap_past_midnight() {
        // 2026-11-25 is a Wednesday; Paris is UTC+1 in November.
        let at = |h, m| Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0).unwrap();
        let office = window(9 * 60, 17 * 60, &[Weekday::Wed]);
        assert!(office.contains(at(8, 0)), "09:00 in Paris");
        assert!(!office.contains(at(7, 59)));
        assert!(!office.contains(at(16, 0)), "17:00 in Paris is the end");
        assert!(!window(9 * 60, 17 * 60, &[Weekday::Thu]).contains(at(10, 0)));

        let night = window(22 * 60, 6 * 60, &[Weekday::Tue]);
        assert!(
            night.contains(at(2, 0)),
            "03:00 Wednesday belongs to Tuesday's night"
        );
        assert!(
            !night.contains(at(22, 0)),
            "23:00 Wednesday opens Wednesday's night"
        );
    }
}
