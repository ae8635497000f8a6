//! `PolicyState`: the fold of the event log. The control plane and every edge run this same
//! code, so an edge's view of policy is the control plane's view at some sequence.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{PolicyEvent, RecordedEvent};
use crate::model::{
    AccessGroup, AdminRole, AdminToken, Budget, CachePolicy, Credential, Deployment, Guardrail,
    PreviousSecret, Price, RateLimit, RoutingRule, SealedSecret, SigningKeyRotation, Team,
    TrafficRule, User, VirtualKey,
};

/// All policy as of `sequence`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    /// The sequence of the last event applied; 0 for the empty log.
    pub sequence: u64,
    pub teams: BTreeMap<String, Team>,
    pub users: BTreeMap<String, User>,
    pub keys: BTreeMap<String, VirtualKey>,
    /// Secret hash (current or still-in-grace previous) → key id, for O(log n) authentication.
    pub key_by_hash: BTreeMap<String, String>,
    pub credentials: BTreeMap<String, Credential>,
    pub deployments: BTreeMap<String, Deployment>,
    /// Keyed by model name.
    pub prices: BTreeMap<String, Price>,
    pub budgets: BTreeMap<String, Budget>,
    pub rate_limits: BTreeMap<String, RateLimit>,
    pub routing_rules: BTreeMap<String, RoutingRule>,
    #[serde(default)]
    pub traffic_rules: BTreeMap<String, TrafficRule>,
    #[serde(default)]
    pub access_groups: BTreeMap<String, AccessGroup>,
    pub guardrails: BTreeMap<String, Guardrail>,
    #[serde(default)]
    pub cache_policies: BTreeMap<String, CachePolicy>,
    pub admin_tokens: BTreeMap<String, AdminToken>,
    /// The bootstrap token (`TOLLGATE_ADMIN_TOKEN`) is refused.
    #[serde(default)]
    pub bootstrap_disabled: bool,
    /// Every policy signing key rotation, oldest first: together they lead from the key edges
    /// were configured to trust to the key that signs policy now.
    #[serde(default)]
    pub signing_keys: Vec<AdoptedSigningKey>,
    /// The public keys whose signatures edges accept on budget statuses: the current one, then
    /// the one it replaced (statuses signed before a change stay valid until rewritten).
    #[serde(default)]
    pub status_keys: Vec<String>,
    /// Aggregate id → version of its last event, for optimistic concurrency on append.
    pub versions: BTreeMap<String, u64>,
}

/// A signing key rotation and the sequence of its event: events after it carry the new key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedSigningKey {
    pub sequence: u64,
    pub rotation: SigningKeyRotation,
}

impl PolicyState {
    /// The policy signing key that signs the event after `sequence`, when a rotation has
    /// named one (before any, the key edges were configured with).
    pub fn signing_key_after(&self, sequence: u64) -> Option<&str> {
        self.signing_keys
            .iter()
            .rev()
            .find(|adopted| adopted.sequence <= sequence)
            .map(|adopted| adopted.rotation.public_key.as_str())
    }

    /// The bootstrap token's hash, unless the policy has disabled it.
    pub fn bootstrap<'a>(&self, hash: Option<&'a str>) -> Option<&'a str> {
        hash.filter(|_| !self.bootstrap_disabled)
    }

    /// Whether an `admin` token other than `except` is neither revoked nor expired at `now`.
    pub fn has_live_admin_token(&self, except: Option<&str>, now: DateTime<Utc>) -> bool {
        self.admin_tokens
            .values()
            .any(|t| t.role == AdminRole::Admin && t.is_live(now) && Some(t.id.as_str()) != except)
    }

    /// Folds one committed event. Never fails: the log is the truth, and an event that refers
    /// to something absent (only possible in a hand-edited log) changes nothing.
    pub fn apply(&mut self, recorded: &RecordedEvent) {
        self.sequence = recorded.sequence;
        self.versions
            .insert(recorded.aggregate_id.clone(), recorded.version);
        if let PolicyEvent::SigningKeyRotated { rotation } = &recorded.event {
            self.signing_keys.push(AdoptedSigningKey {
                sequence: recorded.sequence,
                rotation: rotation.clone(),
            });
        }
        self.apply_event(&recorded.event);
    }

    /// The version the next event of `aggregate_id` must carry.
    pub fn next_version(&self, aggregate_id: &str) -> u64 {
        self.versions.get(aggregate_id).copied().unwrap_or(0) + 1
    }

    /// The live key whose current or in-grace secret hashes to `hash`.
    pub fn key_by_hash(&self, hash: &str) -> Option<&VirtualKey> {
        self.key_by_hash.get(hash).and_then(|id| self.keys.get(id))
    }

    /// Whether `key` may call `model`: its own model list allows it, and when the model is in
    /// access groups, one of them is granted to the key, its team, its user or its user's role.
    pub fn may_use(&self, key: &VirtualKey, model: &str) -> bool {
        if !key.allows_model(model) {
            return false;
        }
        let mut groups = self
            .access_groups
            .values()
            .filter(|g| g.models.iter().any(|m| m == model))
            .peekable();
        if groups.peek().is_none() {
            return true;
        }
        let role = key
            .user_id
            .as_ref()
            .and_then(|id| self.users.get(id))
            .map(|u| u.role);
        groups.any(|g| {
            g.key_ids.contains(&key.id)
                || key.team_id.as_ref().is_some_and(|t| g.team_ids.contains(t))
                || key.user_id.as_ref().is_some_and(|u| g.user_ids.contains(u))
                || role.is_some_and(|r| g.roles.contains(&r))
        })
    }

    /// Deployments serving `model_name`, in id order.
    pub fn deployments_for<'a>(
        &'a self,
        model_name: &'a str,
    ) -> impl Iterator<Item = &'a Deployment> {
        self.deployments
            .values()
            .filter(move |d| d.model_name == model_name)
    }

    /// The routing rule of `model_name`, if it has one (there is at most one per model).
    pub fn routing_rule_for(&self, model_name: &str) -> Option<&RoutingRule> {
        self.routing_rules
            .values()
            .find(|r| r.model_name == model_name)
    }

    fn apply_event(&mut self, event: &PolicyEvent) {
        use PolicyEvent::*;
        match event {
            TeamCreated { team } | TeamUpdated { team } => put(&mut self.teams, &team.id, team),
            TeamDeleted { id } => forget(&mut self.teams, id),
            UserCreated { user } | UserUpdated { user } => put(&mut self.users, &user.id, user),
            UserDeleted { id } => forget(&mut self.users, id),
            KeyCreated { .. }
            | KeyUpdated { .. }
            | KeyRotated { .. }
            | KeyBlocked { .. }
            | KeyUnblocked { .. }
            | KeyRevoked { .. } => self.apply_key_event(event),
            CredentialPut { credential } => put(&mut self.credentials, &credential.id, credential),
            CredentialDeleted { id } => forget(&mut self.credentials, id),
            CredentialRewrapped { id, envelope } => {
                if let Some(credential) = self.credentials.get_mut(id) {
                    credential.envelope = Some(envelope.clone());
                }
            }
            DeploymentUpserted { deployment } => {
                put(&mut self.deployments, &deployment.id, deployment)
            }
            DeploymentDeleted { id } => forget(&mut self.deployments, id),
            PriceSet { price } => put(&mut self.prices, &price.model, price),
            PriceDeleted { model } => forget(&mut self.prices, model),
            BudgetSet { budget } => put(&mut self.budgets, &budget.id, budget),
            BudgetDeleted { id } => forget(&mut self.budgets, id),
            RateLimitSet { rate_limit } => put(&mut self.rate_limits, &rate_limit.id, rate_limit),
            RateLimitDeleted { id } => forget(&mut self.rate_limits, id),
            RoutingRuleSet { rule } => put(&mut self.routing_rules, &rule.id, rule),
            RoutingRuleDeleted { id } => forget(&mut self.routing_rules, id),
            TrafficRuleSet { rule } => put(&mut self.traffic_rules, &rule.id, rule),
            TrafficRuleDeleted { id } => forget(&mut self.traffic_rules, id),
            AccessGroupSet { group } => put(&mut self.access_groups, &group.id, group),
            AccessGroupDeleted { id } => forget(&mut self.access_groups, id),
            GuardrailSet { guardrail } => put(&mut self.guardrails, &guardrail.id, guardrail),
            GuardrailDeleted { id } => forget(&mut self.guardrails, id),
            CachePolicySet { policy } => put(&mut self.cache_policies, &policy.id, policy),
            CachePolicyDeleted { id } => forget(&mut self.cache_policies, id),
            AdminTokenCreated { token } => put(&mut self.admin_tokens, &token.id, token),
            AdminTokenRevoked { id } => {
                if let Some(token) = self.admin_tokens.get_mut(id) {
                    token.revoked = true;
                }
            }
            BootstrapTokenDisabled {} => self.bootstrap_disabled = true,
            // Needs the event's sequence: recorded in `apply`.
            SigningKeyRotated { .. } => {}
            StatusKeySet { public_key } => {
                // The newest first; the one it replaces stays accepted while edges switch.
                self.status_keys.retain(|k| k != public_key);
                self.status_keys.insert(0, public_key.clone());
                self.status_keys.truncate(2);
            }
        }
    }

    /// The events of the keys aggregate; others change nothing here.
    fn apply_key_event(&mut self, event: &PolicyEvent) {
        use PolicyEvent::*;
        match event {
            KeyCreated { key } => {
                self.key_by_hash.insert(key.hash.clone(), key.id.clone());
                self.keys.insert(key.id.clone(), key.clone());
            }
            KeyUpdated {
                id,
                alias,
                models,
                expires_at,
                tags,
                metadata,
            } => {
                if let Some(key) = self.keys.get_mut(id) {
                    key.alias.clone_from(alias);
                    key.models.clone_from(models);
                    key.expires_at = *expires_at;
                    key.tags.clone_from(tags);
                    key.metadata.clone_from(metadata);
                }
            }
            KeyRotated {
                id,
                prefix,
                hash,
                previous,
                signing,
            } => self.rotate_key(id, prefix, hash, previous, signing),
            KeyBlocked { id } => self.set_key_blocked(id, true),
            KeyUnblocked { id } => self.set_key_blocked(id, false),
            KeyRevoked { id } => self.revoke_key(id),
            _ => {}
        }
    }

    fn rotate_key(
        &mut self,
        id: &str,
        prefix: &str,
        hash: &str,
        previous: &Option<PreviousSecret>,
        signing: &Option<SealedSecret>,
    ) {
        let Some(key) = self.keys.get_mut(id) else {
            return;
        };
        // A second rotation ends the grace of the first one's secret at once.
        if let Some(old) = key.previous.take() {
            self.key_by_hash.remove(&old.hash);
        }
        if previous.as_ref().is_none_or(|p| p.hash != key.hash) {
            self.key_by_hash.remove(&key.hash);
        }
        prefix.clone_into(&mut key.prefix);
        hash.clone_into(&mut key.hash);
        key.previous.clone_from(previous);
        key.signing.clone_from(signing);
        self.key_by_hash.insert(hash.to_owned(), id.to_owned());
    }

    fn revoke_key(&mut self, id: &str) {
        if let Some(key) = self.keys.get_mut(id) {
            key.revoked = true;
            self.key_by_hash.remove(&key.hash);
            if let Some(old) = key.previous.take() {
                self.key_by_hash.remove(&old.hash);
            }
        }
    }

    fn set_key_blocked(&mut self, id: &str, blocked: bool) {
        if let Some(key) = self.keys.get_mut(id) {
            key.blocked = blocked;
        }
    }
}

/// Stores `item` under `id`, replacing what was there.
fn put<T: Clone>(map: &mut BTreeMap<String, T>, id: &str, item: &T) {
    map.insert(id.to_owned(), item.clone());
}

/// Removes `id`, if it is there.
fn forget<T>(map: &mut BTreeMap<String, T>, id: &str) {
    map.remove(id);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::command::{Command, decide};
    use crate::model::UserRole;
    use crate::testing::{command, epoch, replay};

    /// Runs commands the way the control plane does: decide against the live state, record
    /// each event with the next sequence and aggregate version, fold it.
    fn run(commands: Vec<Command>) -> (PolicyState, Vec<RecordedEvent>) {
        let mut live = PolicyState::default();
        let mut log = Vec::new();
        for command in commands {
            let before = live.clone();
            let Ok(events) = decide(&live, command, epoch()) else {
                assert_eq!(live, before, "a refused command changed nothing");
                continue;
            };
            for event in events {
                let recorded = RecordedEvent {
                    sequence: live.sequence + 1,
                    id: Uuid::new_v4(),
                    aggregate_id: event.aggregate_id(),
                    version: live.next_version(&event.aggregate_id()),
                    actor: "test".to_owned(),
                    occurred_at: epoch(),
                    event,
                };
                live.apply(&recorded);
                log.push(recorded);
            }
        }
        (live, log)
    }

    fn assert_key_index_consistent(state: &PolicyState) {
        for (hash, id) in &state.key_by_hash {
            let key = &state.keys[id];
            assert!(!key.revoked, "revoked key {id} still authenticates");
            let previous = key.previous.as_ref().map(|p| &p.hash);
            assert!(&key.hash == hash || previous == Some(hash));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn replaying_the_log_rebuilds_the_live_state(commands in prop::collection::vec(command(), 1..80)) {
            let (live, log) = run(commands);
            prop_assert_eq!(&replay(&log), &live);
            assert_key_index_consistent(&live);
        }

        #[test]
        fn snapshot_plus_later_events_equals_full_replay(
            commands in prop::collection::vec(command(), 1..80),
            cut in 0.0f64..1.0,
        ) {
            let (live, log) = run(commands);
            let at = (log.len() as f64 * cut) as usize;
            let snapshot = serde_json::to_vec(&replay(&log[..at])).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut restored: PolicyState = serde_json::from_slice(&snapshot).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for event in &log[at..] {
                restored.apply(event);
            }
            prop_assert_eq!(restored, live);
        }

        #[test]
        fn events_survive_their_storage_encoding(commands in prop::collection::vec(command(), 1..40)) {
            let (_, log) = run(commands);
            for recorded in log {
                let stored = crate::event::encode_payload(&recorded.event);
                let decoded = crate::event::decode_payload(crate::event::SCHEMA_VERSION, &stored);
                prop_assert_eq!(decoded.ok(), Some(recorded.event));
            }
        }
    }

    #[test]
    fn a_grouped_model_is_for_the_keys_its_groups_are_granted_to() {
        let user = |id: &str, role| User {
            id: id.into(),
            email: format!("{id}@example.com"),
            team_id: None,
            role,
            metadata: Default::default(),
        };
        let key = |id: &str, user_id: &str, models: &[&str]| VirtualKey {
            id: id.into(),
            alias: String::new(),
            prefix: format!("tg-{id}"),
            hash: id.repeat(64),
            team_id: None,
            user_id: Some(user_id.into()),
            models: models.iter().map(|m| m.to_string()).collect(),
            expires_at: None,
            blocked: false,
            revoked: false,
            previous: None,
            tags: vec![],
            metadata: Default::default(),
            created_at: epoch(),
            signing: None,
        };
        let mut state = PolicyState::default();
        state
            .users
            .insert("ann".into(), user("ann", UserRole::Member));
        state
            .users
            .insert("lee".into(), user("lee", UserRole::Admin));
        state.access_groups.insert(
            "large".into(),
            AccessGroup {
                id: "large".into(),
                name: "large".into(),
                models: vec!["big".into()],
                roles: vec![UserRole::Admin],
                key_ids: vec!["granted".into()],
                ..AccessGroup::default()
            },
        );
        let (ann, lee) = (key("a", "ann", &[]), key("l", "lee", &[]));
        assert!(state.may_use(&ann, "small"), "a model in no group is open");
        assert!(
            !state.may_use(&ann, "big"),
            "a member is not granted the group"
        );
        assert!(state.may_use(&lee, "big"), "an admin is");
        assert!(
            !state.may_use(&key("l2", "lee", &["small"]), "big"),
            "the key's own list still applies"
        );
        assert!(
            state.may_use(&key("granted", "ann", &[]), "big"),
            "granted to the key"
        );
    }

    #[test]
    fn rotated_key_accepts_old_secret_only_during_grace() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let key = VirtualKey {
            id: "k".into(),
            alias: String::new(),
            prefix: "tg-a".into(),
            hash: a.clone(),
            team_id: None,
            user_id: None,
            models: vec![],
            expires_at: None,
            blocked: false,
            revoked: false,
            previous: None,
            tags: vec![],
            metadata: Default::default(),
            created_at: epoch(),
            signing: None,
        };
        let (state, _) = run(vec![
            Command::CreateKey { key },
            Command::RotateKey {
                id: "k".into(),
                prefix: "tg-b".into(),
                hash: b.clone(),
                grace_seconds: 60,
                signing: None,
            },
        ]);
        let key = state
            .key_by_hash(&a)
            .cloned()
            .unwrap_or_else(|| panic!("old secret indexed"));
        assert!(key.accepts(&a, epoch() + chrono::Duration::seconds(59)));
        assert!(!key.accepts(&a, epoch() + chrono::Duration::seconds(60)));
        assert!(key.accepts(&b, epoch() + chrono::Duration::days(365)));
    }
}
