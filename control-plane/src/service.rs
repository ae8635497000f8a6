//! `tollgate.admin.v1.AdminService`: each call authorizes the caller, turns the request into a
//! domain command (choosing ids and secrets), executes it on the log and answers from the state.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost_types::Timestamp;
use tollgate_policy::command::KeyChanges;
use tollgate_policy::model::{self as domain, AdminRole, UserRole, VirtualKey, hash_secret};
use tollgate_policy::sealing::SealingKey;
use tollgate_policy::{Command, PolicyState, RecordedEvent};
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::*;
use tollgate_proto::convert::from_timestamp;
use tollgate_proto::policy::{PolicyEvent, PolicySnapshot};
use tollgate_proto::usage::UsageEvent;
use tollgate_runtime::bus::Bus;
use tollgate_runtime::envelope::Keks;
use tollgate_runtime::events::event_to_proto;
use tonic::{Request, Response, Status};

use crate::auth::{Access, Actor, Authenticator};
use crate::convert::{self, non_empty, parse};
use crate::credentials;
use crate::error::ControlError;
use crate::health;
use crate::log::PolicyLog;
use crate::metrics::ControlMetrics;
use crate::secrets::{
    ADMIN_TOKEN_PREFIX, KEY_PREFIX, display_prefix, new_id, new_nonce, new_secret,
};
use crate::trust::PolicySigning;
use crate::{tail, watch};

/// The admin API over a policy log.
pub struct AdminApi {
    log: Arc<PolicyLog>,
    auth: Authenticator,
    /// Seals virtual keys' SigV4 secrets.
    sealing: Option<SealingKey>,
    /// Wrap provider credentials' data keys; without them PutCredential is refused.
    keks: Option<Keks>,
    /// Signs snapshots, when policy is signed.
    signing: Option<PolicySigning>,
    /// Where edges report their deployments' health.
    bus: Arc<dyn Bus>,
    /// One per open `WatchEvents` stream (each polls the store): a bounded number.
    watchers: Arc<tokio::sync::Semaphore>,
    /// One per open `TailRequests` stream (each reads every usage event): a bounded number.
    tails: Arc<tokio::sync::Semaphore>,
    metrics: Arc<ControlMetrics>,
}

/// `WatchEvents` streams served at once by one control plane (edges and aggregators hold one
/// each; more are refused with RESOURCE_EXHAUSTED until one closes).
pub const MAX_WATCHERS: usize = 1024;

/// `TailRequests` streams served at once by one control plane.
pub const MAX_TAILS: usize = 32;
/// The longest time to live an admin token may be given: ten years.
const MAX_TOKEN_TTL_SECONDS: u64 = 10 * 366 * 24 * 3600;

type Reply<T> = Result<Response<T>, Status>;

impl AdminApi {
    pub fn new(
        log: Arc<PolicyLog>,
        auth: Authenticator,
        sealing: Option<SealingKey>,
        keks: Option<Keks>,
        signing: Option<PolicySigning>,
        bus: Arc<dyn Bus>,
        metrics: Arc<ControlMetrics>,
    ) -> Self {
        AdminApi {
            log,
            auth,
            sealing,
            keks,
            signing,
            bus,
            watchers: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS)),
            tails: Arc::new(tokio::sync::Semaphore::new(MAX_TAILS)),
            metrics,
        }
    }

    /// Who `token` is, when it may sign in to the console (an admin, viewer or finance token).
    pub fn who(&self, token: &str) -> Result<Actor, Status> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::unauthenticated("that is not an admin token"))?;
        metadata.insert("authorization", value);
        let state = self.log.state();
        self.auth
            .authorize(&metadata, &state, Access::ReadPolicy)
            .or_else(|_| self.auth.authorize(&metadata, &state, Access::ReadUsage))
            .map_err(Status::from)
    }

    /// Sets the gauges read at scrape time and renders every metric.
    pub fn render_metrics(&self) -> String {
        let open = |permits: &tokio::sync::Semaphore, max: usize| {
            i64::try_from(max.saturating_sub(permits.available_permits())).unwrap_or(0)
        };
        let metrics = &self.metrics;
        metrics.watchers.set(open(&self.watchers, MAX_WATCHERS));
        metrics.tails.set(open(&self.tails, MAX_TAILS));
        let committed = self.log.state().sequence;
        metrics
            .committed
            .set(i64::try_from(committed).unwrap_or(i64::MAX));
        metrics.render()
    }

    fn authorize<T>(
        &self,
        request: &Request<T>,
        access: Access,
    ) -> Result<(Actor, Arc<PolicyState>), Status> {
        let state = self.log.state();
        let actor = self.auth.authorize(request.metadata(), &state, access)?;
        Ok((actor, state))
    }

    /// Authorizes a policy read and answers from the state including what other control
    /// planes sharing the store committed.
    async fn read<T>(&self, request: &Request<T>) -> Result<Arc<PolicyState>, Status> {
        self.read_as(request, Access::ReadPolicy).await
    }

    /// The current state, for a caller allowed `access`.
    async fn read_as<T>(
        &self,
        request: &Request<T>,
        access: Access,
    ) -> Result<Arc<PolicyState>, Status> {
        self.authorize(request, access)?;
        self.log.catch_up().await.map_err(ControlError::from)?;
        Ok(self.log.state())
    }

    /// Runs `command` for an admin caller and returns the state after it. Methods that parse
    /// their request before building the command authorize first themselves, so that nothing
    /// about a request is said to a caller who may not make it.
    async fn change<T>(
        &self,
        request: &Request<T>,
        command: Command,
    ) -> Result<(Arc<PolicyState>, Vec<RecordedEvent>), Status> {
        let result = async {
            let (actor, _) = self.authorize(request, Access::WritePolicy)?;
            Ok::<_, Status>(self.log.execute(&actor.name, command).await?)
        }
        .await;
        self.metrics
            .changed(result.as_ref().err().map(Status::code));
        Ok((self.log.state(), result?))
    }

    /// Runs `command` for an admin caller and answers with what `written` finds of the entity it
    /// wrote in the state after it.
    async fn write<T, R>(
        &self,
        request: &Request<T>,
        command: Command,
        written: impl FnOnce(&PolicyState) -> Option<R>,
    ) -> Reply<R> {
        let (state, _) = self.change(request, command).await?;
        found(written(&state))
    }

    /// Sets the entity `from` makes of the request (a new one gets a fresh id) with the command
    /// `set` makes of it, which comes with the entity's id, and answers with the entity as
    /// `stored` finds it under that id.
    async fn set<P: Clone, E>(
        &self,
        request: &Request<P>,
        from: fn(P, String) -> Result<E, ControlError>,
        set: impl FnOnce(E) -> (String, Command),
        stored: impl FnOnce(&PolicyState, &str) -> Option<P>,
    ) -> Reply<P> {
        // Before the request is read, so that nothing about it is said to a caller who may not
        // make it.
        self.authorize(request, Access::WritePolicy)?;
        let (id, command) = set(from(request.get_ref().clone(), new_id())?);
        self.write(request, command, |state| stored(state, &id))
            .await
    }

    async fn delete<T>(&self, request: &Request<T>, command: Command) -> Reply<DeleteResponse> {
        let (state, events) = self.change(request, command).await?;
        let sequence = events.last().map_or(state.sequence, |e| e.sequence);
        Ok(Response::new(DeleteResponse { sequence }))
    }

    /// Deletes what the request's id names, with the command `delete` makes of the id.
    async fn delete_by_id(
        &self,
        request: &Request<DeleteRequest>,
        delete: fn(String) -> Command,
    ) -> Reply<DeleteResponse> {
        self.delete(request, delete(request.get_ref().id.clone()))
            .await
    }

    /// Runs the command `act` makes of the request's key id and answers with the key.
    async fn act_on_key(
        &self,
        request: &Request<KeyRequest>,
        act: fn(String) -> Command,
    ) -> Reply<Key> {
        let id = request.get_ref().key_id.clone();
        self.write(request, act(id.clone()), |state| {
            state.keys.get(&id).map(convert::key)
        })
        .await
    }

    /// Answers a policy read with what `answer` makes of the state.
    async fn list<T, R>(
        &self,
        request: &Request<T>,
        answer: impl FnOnce(&PolicyState) -> R,
    ) -> Reply<R> {
        let state = self.read(request).await?;
        Ok(Response::new(answer(&state)))
    }

    /// A new key secret sealed for SigV4 verification, when this control plane can seal.
    fn seal_secret(&self, secret: &str) -> Option<tollgate_policy::model::SealedSecret> {
        let sealing = self.sealing.as_ref()?;
        Some(tollgate_policy::model::SealedSecret {
            sealed: sealing.seal(new_nonce(), secret.as_bytes()),
            key_id: sealing.id(),
        })
    }

    fn key_reply(state: &PolicyState, id: &str) -> Reply<Key> {
        found(state.keys.get(id).map(convert::key))
    }
}

/// One of the `max` streams of kind `rpc` a control plane serves at once, or RESOURCE_EXHAUSTED.
fn stream_permit(
    streams: &Arc<tokio::sync::Semaphore>,
    max: usize,
    rpc: &str,
) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
    streams.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "this control plane already serves {max} {rpc} streams; retry later"
        ))
    })
}

/// `stream`, holding `permit` until the caller goes away.
fn holding<T: Send + 'static>(
    permit: tokio::sync::OwnedSemaphorePermit,
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    Box::pin(futures::StreamExt::map(stream, move |item| {
        let _held = &permit;
        item
    }))
}

/// The entity just written, which the state must hold.
fn found<T>(value: Option<T>) -> Reply<T> {
    value
        .map(Response::new)
        .ok_or_else(|| Status::internal("the change was committed but is not in the state"))
}

fn time(
    ts: Option<Timestamp>,
    field: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    ts.map(|t| {
        from_timestamp(&t)
            .ok_or_else(|| Status::invalid_argument(format!("{field} is out of range")))
    })
    .transpose()
}

fn role_or(value: &str, default: UserRole) -> Result<UserRole, ControlError> {
    if value.is_empty() {
        Ok(default)
    } else {
        parse("role", value)
    }
}

/// Every entity of one kind, as the API answers it.
fn all<E, P>(entities: &BTreeMap<String, E>, answer: fn(&E) -> P) -> Vec<P> {
    entities.values().map(answer).collect()
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_team(&self, request: Request<CreateTeamRequest>) -> Reply<Team> {
        let id = new_id();
        let r = request.get_ref();
        let command = Command::CreateTeam {
            id: id.clone(),
            name: r.name.clone(),
            metadata: r.metadata.clone().into_iter().collect(),
        };
        self.write(&request, command, |state| {
            state.teams.get(&id).map(convert::team)
        })
        .await
    }

    async fn list_teams(&self, request: Request<ListTeamsRequest>) -> Reply<ListTeamsResponse> {
        self.list(&request, |state| ListTeamsResponse {
            teams: all(&state.teams, convert::team),
        })
        .await
    }

    async fn update_team(&self, request: Request<UpdateTeamRequest>) -> Reply<Team> {
        let r = request.get_ref().clone();
        let command = Command::UpdateTeam {
            id: r.id.clone(),
            name: r.name,
            metadata: r.metadata.map(|m| m.entries.into_iter().collect()),
        };
        self.write(&request, command, |state| {
            state.teams.get(&r.id).map(convert::team)
        })
        .await
    }

    async fn delete_team(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteTeam { id })
            .await
    }

    async fn create_user(&self, request: Request<CreateUserRequest>) -> Reply<User> {
        self.authorize(&request, Access::WritePolicy)?;
        let id = new_id();
        let r = request.get_ref().clone();
        let command = Command::CreateUser {
            id: id.clone(),
            email: r.email,
            team_id: non_empty(r.team_id),
            role: role_or(&r.role, UserRole::Member)?,
            metadata: r.metadata.into_iter().collect(),
        };
        self.write(&request, command, |state| {
            state.users.get(&id).map(convert::user)
        })
        .await
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Reply<ListUsersResponse> {
        let team = non_empty(request.get_ref().team_id.clone());
        self.list(&request, |state| ListUsersResponse {
            users: state
                .users
                .values()
                .filter(|u| team.is_none() || u.team_id == team)
                .map(convert::user)
                .collect(),
        })
        .await
    }

    async fn update_user(&self, request: Request<UpdateUserRequest>) -> Reply<User> {
        self.authorize(&request, Access::WritePolicy)?;
        let r = request.get_ref().clone();
        let command = Command::UpdateUser {
            id: r.id.clone(),
            email: r.email,
            team_id: r.team_id.map(non_empty),
            role: r.role.map(|role| parse("role", &role)).transpose()?,
            metadata: r.metadata.map(|m| m.entries.into_iter().collect()),
        };
        self.write(&request, command, |state| {
            state.users.get(&r.id).map(convert::user)
        })
        .await
    }

    async fn delete_user(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteUser { id })
            .await
    }

    async fn create_key(&self, request: Request<CreateKeyRequest>) -> Reply<CreateKeyResponse> {
        self.authorize(&request, Access::WritePolicy)?;
        let r = request.get_ref().clone();
        let secret = new_secret(KEY_PREFIX);
        let id = new_id();
        let key = VirtualKey {
            id: id.clone(),
            alias: r.alias,
            prefix: display_prefix(&secret),
            hash: hash_secret(&secret),
            team_id: non_empty(r.team_id),
            user_id: non_empty(r.user_id),
            models: r.models,
            expires_at: time(r.expires_at, "expires_at")?,
            blocked: false,
            revoked: false,
            previous: None,
            tags: r.tags,
            metadata: r.metadata.into_iter().collect(),
            // Set by decide from its clock.
            created_at: chrono::DateTime::UNIX_EPOCH,
            signing: self.seal_secret(&secret),
        };
        let (state, _) = self.change(&request, Command::CreateKey { key }).await?;
        let key = Self::key_reply(&state, &id)?.into_inner();
        Ok(Response::new(CreateKeyResponse {
            key: Some(key),
            secret,
        }))
    }

    async fn update_key(&self, request: Request<UpdateKeyRequest>) -> Reply<Key> {
        self.authorize(&request, Access::WritePolicy)?;
        let r = request.get_ref().clone();
        let expires_at = if r.clear_expires_at {
            Some(None)
        } else {
            time(r.expires_at, "expires_at")?.map(Some)
        };
        let command = Command::UpdateKey {
            id: r.key_id.clone(),
            changes: KeyChanges {
                alias: r.alias,
                models: r.models.map(|m| m.values),
                expires_at,
                tags: r.tags.map(|t| t.values),
                metadata: r.metadata.map(|m| m.entries.into_iter().collect()),
            },
        };
        let (state, _) = self.change(&request, command).await?;
        Self::key_reply(&state, &r.key_id)
    }

    async fn rotate_key(&self, request: Request<RotateKeyRequest>) -> Reply<CreateKeyResponse> {
        let r = request.get_ref().clone();
        let secret = new_secret(KEY_PREFIX);
        let command = Command::RotateKey {
            id: r.key_id.clone(),
            prefix: display_prefix(&secret),
            hash: hash_secret(&secret),
            grace_seconds: r.grace_seconds,
            signing: self.seal_secret(&secret),
        };
        let (state, _) = self.change(&request, command).await?;
        let key = Self::key_reply(&state, &r.key_id)?.into_inner();
        Ok(Response::new(CreateKeyResponse {
            key: Some(key),
            secret,
        }))
    }

    async fn revoke_key(&self, request: Request<KeyRequest>) -> Reply<Key> {
        self.act_on_key(&request, |id| Command::RevokeKey { id })
            .await
    }

    async fn block_key(&self, request: Request<KeyRequest>) -> Reply<Key> {
        self.act_on_key(&request, |id| Command::BlockKey { id })
            .await
    }

    async fn unblock_key(&self, request: Request<KeyRequest>) -> Reply<Key> {
        self.act_on_key(&request, |id| Command::UnblockKey { id })
            .await
    }

    async fn list_keys(&self, request: Request<ListKeysRequest>) -> Reply<ListKeysResponse> {
        let r = request.get_ref();
        let (team, user) = (non_empty(r.team_id.clone()), non_empty(r.user_id.clone()));
        self.list(&request, |state| ListKeysResponse {
            keys: state
                .keys
                .values()
                .filter(|k| r.include_revoked || !k.revoked)
                .filter(|k| team.is_none() || k.team_id == team)
                .filter(|k| user.is_none() || k.user_id == user)
                .map(convert::key)
                .collect(),
        })
        .await
    }

    async fn put_credential(&self, request: Request<PutCredentialRequest>) -> Reply<Credential> {
        let r = request.get_ref().clone();
        // Check the caller before saying anything about this control plane's configuration.
        self.authorize(&request, Access::WritePolicy)?;
        let keks = self.keks.as_ref().ok_or_else(|| {
            ControlError::NotConfigured(
                "this control plane has neither TOLLGATE_CREDENTIAL_KEY nor TOLLGATE_KMS_KEY_ID, \
                 so it cannot store credentials"
                    .to_owned(),
            )
        })?;
        let provider = parse("provider", &r.provider)?;
        let mut field_names: Vec<String> = r.secret_fields.keys().cloned().collect();
        field_names.sort();
        if let Some(empty) = r.secret_fields.iter().find(|(_, v)| v.is_empty()) {
            return Err(ControlError::InvalidArgument(format!(
                "secret field {} is empty",
                empty.0
            ))
            .into());
        }
        let plaintext =
            serde_json::to_vec(&r.secret_fields).map_err(|e| Status::internal(e.to_string()))?;
        let (sealed, key_id, envelope) = credentials::seal(keks, &plaintext)
            .await
            .map_err(|e| Status::unavailable(format!("cannot wrap the credential's key: {e}")))?;
        let credential = tollgate_policy::model::Credential {
            id: new_id(),
            name: r.name.clone(),
            provider,
            field_names,
            sealed,
            key_id,
            envelope: Some(envelope),
        };
        let command = Command::PutCredential { credential };
        self.write(&request, command, |state| {
            let mut stored = state.credentials.values();
            stored
                .find(|c| c.name == r.name.trim())
                .map(convert::credential)
        })
        .await
    }

    async fn list_credentials(
        &self,
        request: Request<ListCredentialsRequest>,
    ) -> Reply<ListCredentialsResponse> {
        self.list(&request, |state| ListCredentialsResponse {
            credentials: all(&state.credentials, convert::credential),
        })
        .await
    }

    async fn delete_credential(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteCredential { id })
            .await
    }

    async fn upsert_deployment(&self, request: Request<Deployment>) -> Reply<Deployment> {
        let upsert = |d: domain::Deployment| {
            let id = d.id.clone();
            (id, Command::UpsertDeployment { deployment: d })
        };
        let stored =
            |state: &PolicyState, id: &str| state.deployments.get(id).map(convert::deployment);
        self.set(&request, convert::deployment_from, upsert, stored)
            .await
    }

    async fn delete_deployment(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteDeployment { id })
            .await
    }

    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Reply<ListDeploymentsResponse> {
        let model = non_empty(request.get_ref().model_name.clone());
        self.list(&request, |state| ListDeploymentsResponse {
            deployments: state
                .deployments
                .values()
                .filter(|d| model.as_ref().is_none_or(|m| &d.model_name == m))
                .map(convert::deployment)
                .collect(),
        })
        .await
    }

    async fn set_price(&self, request: Request<Price>) -> Reply<Price> {
        let price = convert::price_from(request.get_ref().clone());
        let model = price.model.clone();
        let command = Command::SetPrice { price };
        self.write(&request, command, |state| {
            state.prices.get(&model).map(convert::price)
        })
        .await
    }

    async fn delete_price(&self, request: Request<DeletePriceRequest>) -> Reply<DeleteResponse> {
        let model = request.get_ref().model.clone();
        self.delete(&request, Command::DeletePrice { model }).await
    }

    async fn list_prices(&self, request: Request<ListPricesRequest>) -> Reply<ListPricesResponse> {
        self.list(&request, |state| ListPricesResponse {
            prices: all(&state.prices, convert::price),
        })
        .await
    }

    async fn set_budget(&self, request: Request<Budget>) -> Reply<Budget> {
        let set = |budget: domain::Budget| (budget.id.clone(), Command::SetBudget { budget });
        let stored = |state: &PolicyState, id: &str| state.budgets.get(id).map(convert::budget);
        self.set(&request, convert::budget_from, set, stored).await
    }

    async fn delete_budget(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteBudget { id })
            .await
    }

    async fn list_budgets(
        &self,
        request: Request<ListBudgetsRequest>,
    ) -> Reply<ListBudgetsResponse> {
        let r = request.get_ref();
        self.list(&request, |state| ListBudgetsResponse {
            budgets: state
                .budgets
                .values()
                .filter(|b| r.scope.is_empty() || b.scope.as_str() == r.scope)
                .filter(|b| r.scope_id.is_empty() || b.scope_id == r.scope_id)
                .map(convert::budget)
                .collect(),
        })
        .await
    }

    async fn set_rate_limit(&self, request: Request<RateLimit>) -> Reply<RateLimit> {
        let set = |l: domain::RateLimit| (l.id.clone(), Command::SetRateLimit { rate_limit: l });
        let stored =
            |state: &PolicyState, id: &str| state.rate_limits.get(id).map(convert::rate_limit);
        self.set(&request, convert::rate_limit_from, set, stored)
            .await
    }

    async fn delete_rate_limit(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteRateLimit { id })
            .await
    }

    async fn list_rate_limits(
        &self,
        request: Request<ListRateLimitsRequest>,
    ) -> Reply<ListRateLimitsResponse> {
        let r = request.get_ref();
        self.list(&request, |state| ListRateLimitsResponse {
            rate_limits: state
                .rate_limits
                .values()
                .filter(|l| r.scope.is_empty() || l.scope.as_str() == r.scope)
                .filter(|l| r.scope_id.is_empty() || l.scope_id == r.scope_id)
                .map(convert::rate_limit)
                .collect(),
        })
        .await
    }

    async fn set_routing_rule(&self, request: Request<RoutingRule>) -> Reply<RoutingRule> {
        let set = |rule: domain::RoutingRule| (rule.id.clone(), Command::SetRoutingRule { rule });
        let stored =
            |state: &PolicyState, id: &str| state.routing_rules.get(id).map(convert::routing_rule);
        self.set(&request, convert::routing_rule_from, set, stored)
            .await
    }

    async fn delete_routing_rule(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteRoutingRule { id })
            .await
    }

    async fn list_routing_rules(
        &self,
        request: Request<ListRoutingRulesRequest>,
    ) -> Reply<ListRoutingRulesResponse> {
        self.list(&request, |state| ListRoutingRulesResponse {
            rules: all(&state.routing_rules, convert::routing_rule),
        })
        .await
    }

    async fn set_traffic_rule(&self, request: Request<TrafficRule>) -> Reply<TrafficRule> {
        let set = |rule: domain::TrafficRule| (rule.id.clone(), Command::SetTrafficRule { rule });
        let stored =
            |state: &PolicyState, id: &str| state.traffic_rules.get(id).map(convert::traffic_rule);
        self.set(&request, convert::traffic_rule_from, set, stored)
            .await
    }

    async fn delete_traffic_rule(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteTrafficRule { id })
            .await
    }

    async fn list_traffic_rules(
        &self,
        request: Request<ListTrafficRulesRequest>,
    ) -> Reply<ListTrafficRulesResponse> {
        self.list(&request, |state| {
            let mut rules: Vec<_> = state.traffic_rules.values().collect();
            rules.sort_by(|a, b| (a.order, &a.id).cmp(&(b.order, &b.id)));
            ListTrafficRulesResponse {
                rules: rules.into_iter().map(convert::traffic_rule).collect(),
            }
        })
        .await
    }

    async fn set_access_group(&self, request: Request<AccessGroup>) -> Reply<AccessGroup> {
        let set =
            |group: domain::AccessGroup| (group.id.clone(), Command::SetAccessGroup { group });
        let stored =
            |state: &PolicyState, id: &str| state.access_groups.get(id).map(convert::access_group);
        self.set(&request, convert::access_group_from, set, stored)
            .await
    }

    async fn delete_access_group(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteAccessGroup { id })
            .await
    }

    async fn list_access_groups(
        &self,
        request: Request<ListAccessGroupsRequest>,
    ) -> Reply<ListAccessGroupsResponse> {
        self.list(&request, |state| ListAccessGroupsResponse {
            groups: all(&state.access_groups, convert::access_group),
        })
        .await
    }

    async fn list_deployment_health(
        &self,
        request: Request<ListDeploymentHealthRequest>,
    ) -> Reply<ListDeploymentHealthResponse> {
        self.authorize(&request, Access::ReadPolicy)?;
        let wanted = &request.get_ref().deployment_id;
        let deployments = health::list(self.bus.as_ref(), wanted).await?;
        Ok(Response::new(ListDeploymentHealthResponse { deployments }))
    }

    async fn set_guardrail(&self, request: Request<Guardrail>) -> Reply<Guardrail> {
        let set = |g: domain::Guardrail| (g.id.clone(), Command::SetGuardrail { guardrail: g });
        let stored =
            |state: &PolicyState, id: &str| state.guardrails.get(id).map(convert::guardrail);
        self.set(&request, convert::guardrail_from, set, stored)
            .await
    }

    async fn delete_guardrail(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteGuardrail { id })
            .await
    }

    async fn list_guardrails(
        &self,
        request: Request<ListGuardrailsRequest>,
    ) -> Reply<ListGuardrailsResponse> {
        self.list(&request, |state| ListGuardrailsResponse {
            guardrails: all(&state.guardrails, convert::guardrail),
        })
        .await
    }

    async fn set_cache_policy(&self, request: Request<CachePolicy>) -> Reply<CachePolicy> {
        let set =
            |policy: domain::CachePolicy| (policy.id.clone(), Command::SetCachePolicy { policy });
        let stored =
            |state: &PolicyState, id: &str| state.cache_policies.get(id).map(convert::cache_policy);
        self.set(&request, convert::cache_policy_from, set, stored)
            .await
    }

    async fn delete_cache_policy(&self, request: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        self.delete_by_id(&request, |id| Command::DeleteCachePolicy { id })
            .await
    }

    async fn list_cache_policies(
        &self,
        request: Request<ListCachePoliciesRequest>,
    ) -> Reply<ListCachePoliciesResponse> {
        self.list(&request, |state| ListCachePoliciesResponse {
            policies: all(&state.cache_policies, convert::cache_policy),
        })
        .await
    }

    async fn create_admin_token(
        &self,
        request: Request<CreateAdminTokenRequest>,
    ) -> Reply<CreateAdminTokenResponse> {
        self.authorize(&request, Access::WritePolicy)?;
        let r = request.get_ref().clone();
        let role: AdminRole = parse("role", &r.role)?;
        let expires_at = match r.ttl_seconds {
            0 => None,
            ttl if ttl > MAX_TOKEN_TTL_SECONDS => {
                return Err(ControlError::InvalidArgument(format!(
                    "ttl_seconds is at most {MAX_TOKEN_TTL_SECONDS} (ten years), got {ttl}"
                ))
                .into());
            }
            ttl => Some(chrono::Utc::now() + chrono::Duration::seconds(ttl as i64)),
        };
        let secret = new_secret(ADMIN_TOKEN_PREFIX);
        let id = new_id();
        let token = domain::AdminToken {
            id: id.clone(),
            name: r.name,
            role,
            prefix: display_prefix(&secret),
            hash: hash_secret(&secret),
            revoked: false,
            created_at: chrono::DateTime::UNIX_EPOCH,
            expires_at,
        };
        let (state, _) = self
            .change(&request, Command::CreateAdminToken { token })
            .await?;
        let token = found(state.admin_tokens.get(&id).map(convert::admin_token))?.into_inner();
        Ok(Response::new(CreateAdminTokenResponse {
            token: Some(token),
            secret,
        }))
    }

    async fn disable_bootstrap_token(
        &self,
        request: Request<DisableBootstrapTokenRequest>,
    ) -> Reply<DisableBootstrapTokenResponse> {
        self.change(&request, Command::DisableBootstrapToken)
            .await?;
        Ok(Response::new(DisableBootstrapTokenResponse {}))
    }

    async fn revoke_admin_token(&self, request: Request<DeleteRequest>) -> Reply<AdminToken> {
        let id = request.get_ref().id.clone();
        let command = Command::RevokeAdminToken { id: id.clone() };
        self.write(&request, command, |state| {
            state.admin_tokens.get(&id).map(convert::admin_token)
        })
        .await
    }

    async fn list_admin_tokens(
        &self,
        request: Request<ListAdminTokensRequest>,
    ) -> Reply<ListAdminTokensResponse> {
        self.list(&request, |state| ListAdminTokensResponse {
            tokens: all(&state.admin_tokens, convert::admin_token),
        })
        .await
    }

    async fn list_events(&self, request: Request<ListEventsRequest>) -> Reply<ListEventsResponse> {
        self.authorize(&request, Access::ReadPolicy)?;
        let r = request.get_ref();
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000),
        };
        let store = self.log.store();
        let events = store
            .read_after(r.after_sequence, limit)
            .await
            .map_err(ControlError::from)?;
        let last_sequence = store.last_sequence().await.map_err(ControlError::from)?;
        Ok(Response::new(ListEventsResponse {
            events: events.iter().map(event_to_proto).collect(),
            last_sequence,
        }))
    }

    async fn get_snapshot(&self, request: Request<GetSnapshotRequest>) -> Reply<PolicySnapshot> {
        let state = self.read_as(&request, Access::FollowPolicy).await?;
        let snapshot = crate::snapshot::snapshot(&state, self.signing.as_ref())
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(snapshot))
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<PolicyEvent, Status>> + Send>>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        self.authorize(&request, Access::FollowPolicy)?;
        let permit = stream_permit(&self.watchers, MAX_WATCHERS, "WatchEvents")?;
        let stream = watch::events_after(self.log.clone(), request.get_ref().after_sequence);
        Ok(Response::new(holding(permit, stream)))
    }

    type TailRequestsStream = Pin<Box<dyn Stream<Item = Result<UsageEvent, Status>> + Send>>;

    async fn tail_requests(
        &self,
        request: Request<TailRequestsRequest>,
    ) -> Reply<Self::TailRequestsStream> {
        self.authorize(&request, Access::ReadPolicy)?;
        let filter = tail::Filter::parse(request.into_inner())?;
        let permit = stream_permit(&self.tails, MAX_TAILS, "TailRequests")?;
        let stream = tail::requests(self.bus.clone(), filter).await?;
        Ok(Response::new(holding(permit, stream)))
    }
}
