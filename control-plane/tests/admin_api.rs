//! The admin API as a client sees it: who may do what, the audit trail, the status codes of
//! refused commands, secrets that never come back, idempotent set commands, and the health and
//! reflection services next to it.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use anyhow::{Context, Result, bail, ensure};
use chrono::{Duration, Utc};
use tollgate_policy::model::hash_secret;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::admin::*;
use tollgate_proto::convert::{from_timestamp, timestamp};
use tollgate_proto::policy::PolicyEvent;
use tollgate_test_support::on_both_backends;
use tollgate_test_support::roles::*;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

type Client = AdminClient;

/// The latest committed sequence, as the audit trail reports it.
async fn last_sequence(client: &mut Client) -> Result<u64> {
    let page = client.list_events(events_request(0, 1)).await?;
    Ok(page.into_inner().last_sequence)
}

/// One page of the audit trail.
async fn events_page(
    client: &mut Client,
    after_sequence: u64,
    limit: u32,
) -> Result<Vec<PolicyEvent>> {
    let page = client
        .list_events(events_request(after_sequence, limit))
        .await?;
    Ok(page.into_inner().events)
}

/// Every event in the log, oldest first, read in pages of `page`.
async fn all_events(client: &mut Client, page: u32) -> Result<Vec<PolicyEvent>> {
    let mut events: Vec<PolicyEvent> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.sequence);
        let next = events_page(client, after, page).await?;
        if next.is_empty() {
            return Ok(events);
        }
        events.extend(next);
    }
}

/// The status of a call that must fail with `code`.
fn refused<T: Debug>(
    what: &str,
    result: Result<Response<T>, Status>,
    code: Code,
) -> Result<Status> {
    match result {
        Ok(response) => bail!(
            "{what}: expected {code:?} but it succeeded: {:?}",
            response.get_ref()
        ),
        Err(status) if status.code() == code => Ok(status),
        Err(status) => bail!(
            "{what}: expected {code:?}, got {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

/// Reports every mismatch among `outcomes` of `refused` together.
fn all_refused(outcomes: Vec<Result<Status>>) -> Result<()> {
    let failures: Vec<String> = outcomes
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    ensure!(
        failures.is_empty(),
        "{} call(s) got the wrong code:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Writes that are malformed as well as not allowed to `client`: the caller and its role are
/// judged first, so each must fail with `code` (never with INVALID_ARGUMENT).
async fn malformed_writes(client: &mut Client, code: Code) -> Vec<Result<Status>> {
    let deployment = Deployment {
        provider: "nope".into(),
        ..mock_deployment("gpt-4o")
    };
    let budget = Budget {
        period: "fortnightly".into(),
        ..team_budget("any", 10.0)
    };
    let rate_limit = RateLimit {
        scope: "galaxy".into(),
        ..team_rate_limit("any", 10)
    };
    let rule = RoutingRule {
        model_name: "gpt-4o".into(),
        strategy: "coin_flip".into(),
        ..Default::default()
    };
    let guardrail = Guardrail {
        name: "pii".into(),
        kind: "regex".into(),
        mode: "sometimes".into(),
        ..Default::default()
    };
    let token = new_admin_token("root", "superuser");
    let user = CreateUserRequest {
        role: "overlord".into(),
        ..new_user("eve@example.com")
    };
    let credential = PutCredentialRequest {
        provider: "nope".into(),
        ..credential_request("x", "sk-x")
    };
    let out_of_range = prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    };
    let key = CreateKeyRequest {
        expires_at: Some(out_of_range),
        ..Default::default()
    };
    let user_update = UpdateUserRequest {
        id: "any".into(),
        role: Some("overlord".into()),
        ..Default::default()
    };
    vec![
        refused(
            "UpsertDeployment with provider nope",
            client.upsert_deployment(deployment).await,
            code,
        ),
        refused(
            "SetBudget with period fortnightly",
            client.set_budget(budget).await,
            code,
        ),
        refused(
            "SetRateLimit with scope galaxy",
            client.set_rate_limit(rate_limit).await,
            code,
        ),
        refused(
            "SetRoutingRule with strategy coin_flip",
            client.set_routing_rule(rule).await,
            code,
        ),
        refused(
            "SetGuardrail with mode sometimes",
            client.set_guardrail(guardrail).await,
            code,
        ),
        refused(
            "CreateAdminToken with role superuser",
            client.create_admin_token(token).await,
            code,
        ),
        refused(
            "CreateUser with role overlord",
            client.create_user(user).await,
            code,
        ),
        refused(
            "CreateKey with expires_at out of range",
            client.create_key(key).await,
            code,
        ),
        refused(
            "UpdateUser with role overlord",
            client.update_user(user_update).await,
            code,
        ),
        refused(
            "PutCredential with provider nope",
            client.put_credential(credential).await,
            code,
        ),
    ]
}

/// A CreateTeam request for `name`.
fn new_team(name: &str) -> CreateTeamRequest {
    CreateTeamRequest {
        name: name.to_owned(),
        ..Default::default()
    }
}

/// A CreateUser request for `email`, in no team.
fn new_user(email: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.to_owned(),
        ..Default::default()
    }
}

/// A CreateAdminToken request for `name` with `role` that does not expire.
fn new_admin_token(name: &str, role: &str) -> CreateAdminTokenRequest {
    CreateAdminTokenRequest {
        name: name.to_owned(),
        role: role.to_owned(),
        ..Default::default()
    }
}

/// An UpdateTeam request that renames team `id` to `name`.
fn rename_team(id: &str, name: &str) -> UpdateTeamRequest {
    UpdateTeamRequest {
        id: id.to_owned(),
        name: Some(name.to_owned()),
        metadata: None,
    }
}

/// A request naming the key `key_id`.
fn key_request(key_id: &str) -> KeyRequest {
    KeyRequest {
        key_id: key_id.to_owned(),
    }
}

/// A request naming the object `id`.
fn delete_request(id: &str) -> DeleteRequest {
    DeleteRequest { id: id.to_owned() }
}

/// A RotateKey request for `key_id` that keeps the old secret valid for `grace_seconds`.
fn rotation(key_id: &str, grace_seconds: u64) -> RotateKeyRequest {
    RotateKeyRequest {
        key_id: key_id.to_owned(),
        grace_seconds,
    }
}

/// A ListEvents request for up to `limit` events after `after_sequence` (0: no limit).
fn events_request(after_sequence: u64, limit: u32) -> ListEventsRequest {
    ListEventsRequest {
        after_sequence,
        limit,
    }
}

async fn create_team(client: &mut Client, name: &str) -> Result<Team> {
    Ok(client.create_team(new_team(name)).await?.into_inner())
}

/// A new key in `team_id` and its secret.
async fn create_key(client: &mut Client, team_id: &str, alias: &str) -> Result<(Key, String)> {
    let request = CreateKeyRequest {
        alias: alias.to_owned(),
        team_id: team_id.to_owned(),
        ..Default::default()
    };
    let response = client.create_key(request).await?.into_inner();
    Ok((
        response.key.context("CreateKey returned no key")?,
        response.secret,
    ))
}

/// A new admin token with `role` and its secret.
async fn create_admin_token(
    client: &mut Client,
    name: &str,
    role: &str,
) -> Result<(AdminToken, String)> {
    let request = new_admin_token(name, role);
    let response = client.create_admin_token(request).await?.into_inner();
    Ok((
        response
            .token
            .context("CreateAdminToken returned no token")?,
        response.secret,
    ))
}

fn credential_request(name: &str, api_key: &str) -> PutCredentialRequest {
    PutCredentialRequest {
        name: name.to_owned(),
        provider: "openai".to_owned(),
        secret_fields: [("api_key".to_owned(), api_key.to_owned())].into(),
    }
}

fn mock_deployment(model: &str) -> Deployment {
    Deployment {
        model_name: model.to_owned(),
        provider: "mock".to_owned(),
        ..Default::default()
    }
}

/// An openai_compatible deployment of `llama` served at `api_base`.
fn compatible_deployment(api_base: &str) -> Deployment {
    Deployment {
        provider: "openai_compatible".into(),
        api_base: api_base.to_owned(),
        ..mock_deployment("llama")
    }
}

/// An access group `name` to `models`, open to everyone.
fn access_group(name: &str, models: &[&str]) -> AccessGroup {
    AccessGroup {
        name: name.to_owned(),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        ..Default::default()
    }
}

/// A pre-call guardrail `g` of `kind`, configured by `config_json`, for every team.
fn guardrail(kind: &str, config_json: &str) -> Guardrail {
    Guardrail {
        name: "g".into(),
        kind: kind.to_owned(),
        mode: "pre_call".into(),
        config_json: config_json.to_owned(),
        team_ids: vec![],
        ..Default::default()
    }
}

/// A cache policy for `model` that keeps answers `ttl_seconds`.
fn cache_policy(model: &str, ttl_seconds: u32) -> CachePolicy {
    CachePolicy {
        model: model.to_owned(),
        ttl_seconds,
        ..Default::default()
    }
}

/// A rate limit of 10 rpm for `team_id` that allows 100 rpm from `time_start` to 06:00 in `timezone`.
fn scheduled_rate_limit(team_id: &str, time_start: &str, timezone: &str) -> RateLimit {
    RateLimit {
        schedules: vec![LimitSchedule {
            time_start: time_start.to_owned(),
            time_end: "06:00".into(),
            timezone: timezone.to_owned(),
            rpm: 100,
            ..Default::default()
        }],
        ..team_rate_limit(team_id, 10)
    }
}

fn team_budget(team_id: &str, amount_usd: f64) -> Budget {
    Budget {
        scope: "team".to_owned(),
        scope_id: team_id.to_owned(),
        amount_usd,
        period: "monthly".to_owned(),
        ..Default::default()
    }
}

fn team_rate_limit(team_id: &str, rpm: u64) -> RateLimit {
    RateLimit {
        scope: "team".to_owned(),
        scope_id: team_id.to_owned(),
        rpm,
        ..Default::default()
    }
}

fn price(model: &str, input_per_mtok: f64) -> Price {
    Price {
        model: model.to_owned(),
        input_per_mtok,
        output_per_mtok: 10.0,
        cached_input_per_mtok: 1.25,
        cache_write_per_mtok: 0.0,
    }
}

/// Whether `haystack` holds `needle` anywhere.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn viewer_token_cannot_change_anything(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    let team = create_team(&mut admin, "platform").await?;
    let (key, _) = create_key(&mut admin, &team.id, "ci").await?;
    let credential = admin
        .put_credential(credential_request("openai", "sk-1"))
        .await?
        .into_inner();
    let (viewer_token, viewer_secret) = create_admin_token(&mut admin, "auditor", "viewer").await?;
    let (_, finance_secret) = create_admin_token(&mut admin, "accounts", "finance").await?;
    let before = last_sequence(&mut admin).await?;

    let mut viewer = cp.client(&viewer_secret).await?;
    let denied = Code::PermissionDenied;
    let statuses = [
        refused(
            "CreateTeam",
            viewer.create_team(new_team("mine")).await,
            denied,
        )?,
        refused(
            "UpdateTeam",
            viewer.update_team(rename_team(&team.id, "renamed")).await,
            denied,
        )?,
        refused(
            "DeleteTeam",
            viewer.delete_team(delete_request(&team.id)).await,
            denied,
        )?,
        refused(
            "CreateUser",
            viewer.create_user(new_user("v@example.com")).await,
            denied,
        )?,
        refused(
            "CreateKey",
            viewer
                .create_key(CreateKeyRequest {
                    alias: "sneaky".into(),
                    team_id: team.id.clone(),
                    ..Default::default()
                })
                .await,
            denied,
        )?,
        refused(
            "RotateKey",
            viewer.rotate_key(rotation(&key.id, 0)).await,
            denied,
        )?,
        refused(
            "RevokeKey",
            viewer.revoke_key(key_request(&key.id)).await,
            denied,
        )?,
        refused(
            "BlockKey",
            viewer.block_key(key_request(&key.id)).await,
            denied,
        )?,
        refused(
            "PutCredential",
            viewer
                .put_credential(credential_request("stolen", "sk-2"))
                .await,
            denied,
        )?,
        refused(
            "DeleteCredential",
            viewer
                .delete_credential(delete_request(&credential.id))
                .await,
            denied,
        )?,
        refused(
            "UpsertDeployment",
            viewer.upsert_deployment(mock_deployment("gpt-4o")).await,
            denied,
        )?,
        refused(
            "SetPrice",
            viewer.set_price(price("gpt-4o", 2.5)).await,
            denied,
        )?,
        refused(
            "SetBudget",
            viewer.set_budget(team_budget(&team.id, 10.0)).await,
            denied,
        )?,
        refused(
            "SetRateLimit",
            viewer.set_rate_limit(team_rate_limit(&team.id, 10)).await,
            denied,
        )?,
        refused(
            "SetRoutingRule",
            viewer
                .set_routing_rule(RoutingRule {
                    model_name: "gpt-4o".into(),
                    ..Default::default()
                })
                .await,
            denied,
        )?,
        refused(
            "SetGuardrail",
            viewer
                .set_guardrail(Guardrail {
                    name: "pii".into(),
                    ..guardrail("regex", "")
                })
                .await,
            denied,
        )?,
        refused(
            "CreateAdminToken",
            viewer
                .create_admin_token(new_admin_token("escalate", "admin"))
                .await,
            denied,
        )?,
        refused(
            "RevokeAdminToken",
            viewer
                .revoke_admin_token(delete_request(&viewer_token.id))
                .await,
            denied,
        )?,
    ];
    for status in &statuses {
        ensure!(
            status.message().contains("viewer"),
            "the refusal should name the caller's role: {:?}",
            status.message()
        );
    }

    let teams = viewer
        .list_teams(ListTeamsRequest {})
        .await?
        .into_inner()
        .teams;
    ensure!(
        teams == vec![team.clone()],
        "the viewer sees the teams: {teams:?}"
    );
    let keys = viewer
        .list_keys(ListKeysRequest::default())
        .await?
        .into_inner()
        .keys;
    ensure!(
        keys.len() == 1 && keys[0].id == key.id && !keys[0].blocked && !keys[0].revoked,
        "{keys:?}"
    );
    let events = viewer.list_events(events_request(0, 0)).await?.into_inner();
    ensure!(
        events.last_sequence == before,
        "the refused calls appended events: {} != {before}",
        events.last_sequence
    );
    ensure!(events.events.len() as u64 == before);
    let snapshot = viewer
        .get_snapshot(GetSnapshotRequest {})
        .await?
        .into_inner();
    ensure!(
        snapshot.sequence == before,
        "snapshot at {} != {before}",
        snapshot.sequence
    );
    viewer.list_admin_tokens(ListAdminTokensRequest {}).await?;
    ensure!(cp.log.state().sequence == before);
    ensure!(last_sequence(&mut admin).await? == before);

    let mut finance = cp.client(&finance_secret).await?;
    refused(
        "finance CreateTeam",
        finance.create_team(new_team("f")).await,
        denied,
    )?;
    refused(
        "finance ListTeams",
        finance.list_teams(ListTeamsRequest {}).await,
        denied,
    )?;
    refused(
        "finance ListEvents",
        finance.list_events(ListEventsRequest::default()).await,
        denied,
    )?;
    ensure!(last_sequence(&mut admin).await? == before);

    // The role is judged before the request, so a viewer learns nothing from validation.
    all_refused(malformed_writes(&mut viewer, denied).await)?;
    cp.stop().await?;
    Ok(())
}

async fn service_tokens_follow_policy_and_do_nothing_else(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    create_team(&mut admin, "platform").await?;
    let denied = Code::PermissionDenied;
    for role in ["edge", "aggregator"] {
        let (_, secret) = create_admin_token(&mut admin, &format!("{role}s"), role).await?;
        let before = last_sequence(&mut admin).await?;
        let mut service = cp.client(&secret).await?;

        // What following policy needs: a snapshot and the event stream.
        let snapshot = service
            .get_snapshot(GetSnapshotRequest {})
            .await?
            .into_inner();
        ensure!(
            snapshot.sequence == before,
            "{role}: snapshot at {}",
            snapshot.sequence
        );
        let mut events = service
            .watch_events(WatchEventsRequest { after_sequence: 0 })
            .await?
            .into_inner();
        ensure!(
            events.message().await?.is_some(),
            "{role}: no event streamed"
        );

        // Nothing else: not the listings (with their names and metadata), no write at all.
        refused(
            &format!("{role} ListTeams"),
            service.list_teams(ListTeamsRequest {}).await,
            denied,
        )?;
        refused(
            &format!("{role} ListEvents"),
            service.list_events(ListEventsRequest::default()).await,
            denied,
        )?;
        all_refused(malformed_writes(&mut service, denied).await)?;
        refused(
            &format!("{role} CreateTeam"),
            service.create_team(new_team("from-an-edge")).await,
            denied,
        )?;
        refused(
            &format!("{role} CreateAdminToken"),
            service
                .create_admin_token(new_admin_token("escalate", "admin"))
                .await,
            denied,
        )?;
        ensure!(
            last_sequence(&mut admin).await? == before,
            "{role} changed the log"
        );
    }
    cp.stop().await?;
    Ok(())
}

async fn an_expired_token_is_unauthenticated(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    let request = CreateAdminTokenRequest {
        name: "contractor".into(),
        role: "viewer".into(),
        ttl_seconds: 1,
    };
    let created = admin.create_admin_token(request).await?.into_inner();
    let token = created.token.context("no token")?;
    ensure!(token.expires_at.is_some(), "{token:?}");
    let mut viewer = cp.client(&created.secret).await?;
    viewer.list_teams(ListTeamsRequest {}).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let expired = viewer.list_teams(ListTeamsRequest {}).await;
    let status = expired.err().context("an expired token was served")?;
    ensure!(status.code() == Code::Unauthenticated, "{status:?}");
    ensure!(status.message().contains("expired"), "{status:?}");

    // A time to live beyond ten years is refused, and creates nothing.
    let too_long = CreateAdminTokenRequest {
        name: "forever".into(),
        role: "viewer".into(),
        ttl_seconds: u64::MAX,
    };
    refused(
        "CreateAdminToken living forever",
        admin.create_admin_token(too_long).await,
        Code::InvalidArgument,
    )?;
    let listed = admin.list_admin_tokens(ListAdminTokensRequest {}).await?;
    ensure!(
        !listed
            .into_inner()
            .tokens
            .iter()
            .any(|t| t.name == "forever")
    );
    cp.stop().await?;
    Ok(())
}

async fn the_bootstrap_token_is_disabled_only_once_another_admin_can_act(
    backend: Backend,
) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut bootstrap = cp.admin().await?;
    // Alone, it cannot be disabled: nobody could administer Tollgate afterwards.
    let (_, viewer) = create_admin_token(&mut bootstrap, "auditor", "viewer").await?;
    refused(
        "DisableBootstrapToken with no other admin",
        bootstrap
            .disable_bootstrap_token(DisableBootstrapTokenRequest {})
            .await,
        Code::FailedPrecondition,
    )?;
    let (ops, ops_secret) = create_admin_token(&mut bootstrap, "ops", "admin").await?;
    bootstrap
        .disable_bootstrap_token(DisableBootstrapTokenRequest {})
        .await?;

    refused(
        "ListTeams with the disabled bootstrap token",
        bootstrap.list_teams(ListTeamsRequest {}).await,
        Code::Unauthenticated,
    )?;
    let mut ops_client = cp.client(&ops_secret).await?;
    ops_client.list_teams(ListTeamsRequest {}).await?;
    cp.client(&viewer)
        .await?
        .list_teams(ListTeamsRequest {})
        .await?;
    // The last admin token cannot be revoked now; it can once there is another.
    refused(
        "RevokeAdminToken of the last admin",
        ops_client.revoke_admin_token(delete_request(&ops.id)).await,
        Code::FailedPrecondition,
    )?;
    let (_, ops_2_secret) = create_admin_token(&mut ops_client, "ops-2", "admin").await?;
    ops_client
        .revoke_admin_token(delete_request(&ops.id))
        .await?;
    // Disabling again is answered as done, and appends nothing.
    let mut ops_2 = cp.client(&ops_2_secret).await?;
    let before = last_sequence(&mut ops_2).await?;
    ops_2
        .disable_bootstrap_token(DisableBootstrapTokenRequest {})
        .await?;
    ensure!(last_sequence(&mut ops_2).await? == before);
    cp.stop().await?;
    Ok(())
}

async fn wrong_or_missing_token_is_unauthenticated(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    let unauthenticated = Code::Unauthenticated;

    let mut wrong = cp.client("tga-not-a-real-token").await?;
    refused(
        "ListTeams with a wrong token",
        wrong.list_teams(ListTeamsRequest {}).await,
        unauthenticated,
    )?;
    refused(
        "CreateTeam with a wrong token",
        wrong.create_team(new_team("intruders")).await,
        unauthenticated,
    )?;
    let with_bootstrap_suffix = format!("{ADMIN_TOKEN}x");
    let mut almost = cp.client(&with_bootstrap_suffix).await?;
    refused(
        "ListEvents with the bootstrap token plus one character",
        almost.list_events(ListEventsRequest::default()).await,
        unauthenticated,
    )?;

    let (token, secret) = create_admin_token(&mut admin, "temporary", "admin").await?;
    let mut temporary = cp.client(&secret).await?;
    temporary.list_teams(ListTeamsRequest {}).await?;
    let revoked = admin
        .revoke_admin_token(delete_request(&token.id))
        .await?
        .into_inner();
    ensure!(
        revoked.revoked,
        "RevokeAdminToken answers the revoked token: {revoked:?}"
    );
    refused(
        "ListTeams with a revoked token",
        temporary.list_teams(ListTeamsRequest {}).await,
        unauthenticated,
    )?;
    refused(
        "CreateTeam with a revoked token",
        temporary.create_team(new_team("intruders")).await,
        unauthenticated,
    )?;

    let mut anonymous = AdminServiceClient::connect(format!("http://{}", cp.addr)).await?;
    let status = refused(
        "ListTeams without authorization",
        anonymous.list_teams(ListTeamsRequest {}).await,
        unauthenticated,
    )?;
    ensure!(
        status.message().contains("authorization"),
        "{:?}",
        status.message()
    );
    refused(
        "CreateTeam without authorization",
        anonymous.create_team(new_team("intruders")).await,
        unauthenticated,
    )?;
    refused(
        "ListEvents without authorization",
        anonymous.list_events(ListEventsRequest::default()).await,
        unauthenticated,
    )?;
    refused(
        "GetSnapshot without authorization",
        anonymous.get_snapshot(GetSnapshotRequest {}).await,
        unauthenticated,
    )?;

    let events = all_events(&mut admin, 100).await?;
    let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    ensure!(
        types == ["admin_token.created", "admin_token.revoked"],
        "only the admin's changes are in the log: {types:?}"
    );

    // Who is calling is settled before anything about the request is said.
    let mut outcomes = malformed_writes(&mut wrong, unauthenticated).await;
    let bad_deployment = Deployment {
        provider: "nope".into(),
        ..mock_deployment("gpt-4o")
    };
    outcomes.push(refused(
        "UpsertDeployment with provider nope and no authorization",
        anonymous.upsert_deployment(bad_deployment).await,
        unauthenticated,
    ));
    all_refused(outcomes)?;
    cp.stop().await?;
    Ok(())
}

async fn every_change_appears_in_list_events_with_its_actor(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    create_team(&mut admin, "alpha").await?;
    let (ops_token, ops_secret) = create_admin_token(&mut admin, "ops", "admin").await?;
    let mut ops = cp.client(&ops_secret).await?;
    let beta = create_team(&mut ops, "beta").await?;
    let (key, _) = create_key(&mut ops, &beta.id, "svc").await?;
    ops.set_price(price("gpt-4o", 2.5)).await?;
    admin.block_key(key_request(&key.id)).await?;
    ops.update_team(rename_team(&beta.id, "beta-2")).await?;
    admin.revoke_key(key_request(&key.id)).await?;

    let ops_actor = format!("admin-token:{}", ops_token.id);
    let expected = [
        ("team.created", "bootstrap"),
        ("admin_token.created", "bootstrap"),
        ("team.created", ops_actor.as_str()),
        ("key.created", ops_actor.as_str()),
        ("price.set", ops_actor.as_str()),
        ("key.blocked", "bootstrap"),
        ("team.updated", ops_actor.as_str()),
        ("key.revoked", "bootstrap"),
    ];
    let n = expected.len() as u64;
    let response = admin.list_events(events_request(0, 0)).await?.into_inner();
    ensure!(
        response.last_sequence == n,
        "last_sequence {} != {n}",
        response.last_sequence
    );
    let events = response.events;
    ensure!(
        events.len() == expected.len(),
        "{} events: {events:?}",
        events.len()
    );
    let now = Utc::now();
    let mut ids = std::collections::BTreeSet::new();
    for ((event, (kind, actor)), sequence) in events.iter().zip(expected).zip(1..) {
        let at = format!("event {sequence}");
        ensure!(
            event.sequence == sequence,
            "{at}: sequence {} (gap or disorder)",
            event.sequence
        );
        ensure!(
            event.r#type == kind,
            "{at}: type {:?}, expected {kind:?}",
            event.r#type
        );
        ensure!(
            event.actor == actor,
            "{at}: actor {:?}, expected {actor:?}",
            event.actor
        );
        let payload: serde_json::Value = serde_json::from_str(&event.payload_json)
            .with_context(|| format!("{at}: payload_json is not JSON: {}", event.payload_json))?;
        ensure!(
            payload["type"] == kind,
            "{at}: payload type {:?}",
            payload["type"]
        );
        let occurred = event
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .context("occurred_at")?;
        ensure!(
            (now - occurred).num_seconds().abs() < 60,
            "{at}: occurred_at {occurred}"
        );
        ensure!(
            ids.insert(event.id.clone()),
            "{at}: duplicate id {}",
            event.id
        );
    }
    ensure!(
        events[3].aggregate_id == format!("key:{}", key.id),
        "{:?}",
        events[3].aggregate_id
    );
    ensure!(events[2].payload_json.contains(&beta.id) && events[6].payload_json.contains("beta-2"));

    let page = events_page(&mut admin, 2, 3).await?;
    let sequences: Vec<u64> = page.iter().map(|e| e.sequence).collect();
    ensure!(sequences == [3, 4, 5], "after 2, limit 3: {sequences:?}");
    ensure!(
        events_page(&mut admin, n, 10).await?.is_empty(),
        "nothing after the last event"
    );
    let paged = all_events(&mut admin, 3).await?;
    ensure!(
        paged == events,
        "reading in pages of 3 gives the same trail"
    );
    cp.stop().await?;
    Ok(())
}

/// A call of `client`'s `$method` with `$request`, to make later on its own handle.
macro_rules! later {
    ($client:expr, $method:ident, $request:expr) => {{
        let request = $request;
        call($client, |mut c| async move { c.$method(request).await })
    }};
}

type Call = Pin<Box<dyn Future<Output = Result<Response<()>, Status>> + Send>>;

/// A call to make later, on its own handle to `client`.
fn call<T, F, Fut>(client: &Client, f: F) -> Call
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
{
    let future = f(client.clone());
    Box::pin(async move { future.await.map(|r| r.map(drop)) })
}

/// A bad request, the code it must get and what its message must name.
struct Case {
    what: &'static str,
    code: Code,
    mentions: Vec<String>,
    call: Call,
}

fn case(what: &'static str, code: Code, mentions: &[&str], call: Call) -> Case {
    let mentions = mentions.iter().map(|m| (*m).to_owned()).collect();
    Case {
        what,
        code,
        mentions,
        call,
    }
}

async fn invalid_commands_get_the_right_code_and_append_nothing(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    let team = create_team(&mut admin, "alpha").await?;
    let user = CreateUserRequest {
        email: "alice@example.com".into(),
        team_id: team.id.clone(),
        ..Default::default()
    };
    admin.create_user(user).await?;
    let credential = admin
        .put_credential(credential_request("openai-main", "sk-1"))
        .await?
        .into_inner();
    let deployment = Deployment {
        provider: "openai".into(),
        credential_id: credential.id.clone(),
        ..mock_deployment("gpt-4o")
    };
    let deployment = admin.upsert_deployment(deployment).await?.into_inner();
    let (live, _) = create_key(&mut admin, &team.id, "live").await?;
    let (revoked, _) = create_key(&mut admin, &team.id, "old").await?;
    admin.revoke_key(key_request(&revoked.id)).await?;

    admin
        .set_access_group(access_group("large", &["gpt-4o"]))
        .await?;

    let a = &admin;
    let past = timestamp(Utc::now() - Duration::hours(1));
    let (invalid, not_found, exists, precondition) = (
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::FailedPrecondition,
    );
    let cases = vec![
        case(
            "CreateTeam with an empty name",
            invalid,
            &["team name"],
            later!(a, create_team, new_team("  ")),
        ),
        case(
            "CreateTeam with a taken name",
            exists,
            &["alpha"],
            later!(a, create_team, new_team("alpha")),
        ),
        case(
            "CreateUser with a malformed email",
            invalid,
            &["email", "not-an-email"],
            later!(a, create_user, new_user("not-an-email")),
        ),
        case(
            "CreateUser in an unknown team",
            not_found,
            &["ghost-team"],
            later!(
                a,
                create_user,
                CreateUserRequest {
                    team_id: "ghost-team".into(),
                    ..new_user("bob@example.com")
                }
            ),
        ),
        case(
            "CreateUser with a taken email",
            exists,
            &["alice@example.com"],
            later!(a, create_user, new_user("alice@example.com")),
        ),
        case(
            "CreateUser with an unknown role",
            invalid,
            &["role", "overlord"],
            later!(
                a,
                create_user,
                CreateUserRequest {
                    role: "overlord".into(),
                    ..new_user("carol@example.com")
                }
            ),
        ),
        case(
            "CreateKey expiring in the past",
            invalid,
            &["expires_at"],
            later!(
                a,
                create_key,
                CreateKeyRequest {
                    alias: "late".into(),
                    expires_at: Some(past),
                    ..Default::default()
                }
            ),
        ),
        case(
            "CreateKey for an unknown user",
            not_found,
            &["ghost-user"],
            later!(
                a,
                create_key,
                CreateKeyRequest {
                    user_id: "ghost-user".into(),
                    ..Default::default()
                }
            ),
        ),
        case(
            "CreateKey with a live key's alias",
            exists,
            &["live"],
            later!(
                a,
                create_key,
                CreateKeyRequest {
                    alias: "live".into(),
                    ..Default::default()
                }
            ),
        ),
        case(
            "DeleteTeam that still has a user",
            precondition,
            &[&team.id, "user"],
            later!(a, delete_team, delete_request(&team.id)),
        ),
        case(
            "UpdateTeam of an unknown team",
            not_found,
            &["ghost-team"],
            later!(a, update_team, rename_team("ghost-team", "x")),
        ),
        case(
            "UpsertDeployment with provider nope",
            invalid,
            &["provider", "nope"],
            later!(
                a,
                upsert_deployment,
                Deployment {
                    provider: "nope".into(),
                    ..mock_deployment("gpt-4o")
                }
            ),
        ),
        case(
            "UpsertDeployment with user:pass@ in api_base",
            invalid,
            &["api_base"],
            later!(
                a,
                upsert_deployment,
                Deployment {
                    api_base: "https://user:hunter2@llm.example.com/v1".into(),
                    ..mock_deployment("gpt-4o")
                }
            ),
        ),
        case(
            "UpsertDeployment aimed at the cloud metadata address",
            invalid,
            &["api_base", "169.254.169.254"],
            later!(
                a,
                upsert_deployment,
                compatible_deployment("http://169.254.169.254/latest/meta-data")
            ),
        ),
        case(
            "UpsertDeployment aimed at an IPv6 link-local address",
            invalid,
            &["api_base", "fe80::1"],
            later!(
                a,
                upsert_deployment,
                compatible_deployment("http://[fe80::1]:8080/v1")
            ),
        ),
        case(
            "UpsertDeployment aimed at Google's metadata host",
            invalid,
            &["api_base", "metadata.google.internal"],
            later!(
                a,
                upsert_deployment,
                compatible_deployment("http://metadata.google.internal/computeMetadata/v1")
            ),
        ),
        case(
            "UpsertDeployment with another provider's credential",
            invalid,
            &["credential", "openai", "anthropic"],
            later!(
                a,
                upsert_deployment,
                Deployment {
                    provider: "anthropic".into(),
                    credential_id: credential.id.clone(),
                    ..mock_deployment("claude")
                }
            ),
        ),
        case(
            "UpsertDeployment of Bedrock without a credential, off AWS",
            invalid,
            &["AWS", "bedrock.example.com"],
            later!(
                a,
                upsert_deployment,
                Deployment {
                    provider: "bedrock".into(),
                    region: "us-east-1".into(),
                    api_base: "https://bedrock.example.com".into(),
                    ..mock_deployment("claude")
                }
            ),
        ),
        case(
            "UpsertDeployment of openai_compatible without api_base",
            invalid,
            &["api_base"],
            later!(a, upsert_deployment, compatible_deployment("")),
        ),
        case(
            "UpsertDeployment with an unknown credential",
            not_found,
            &["ghost-credential"],
            later!(
                a,
                upsert_deployment,
                Deployment {
                    credential_id: "ghost-credential".into(),
                    ..mock_deployment("gpt-4o")
                }
            ),
        ),
        case(
            "SetBudget of 0 USD",
            invalid,
            &["amount_usd"],
            later!(a, set_budget, team_budget(&team.id, 0.0)),
        ),
        case(
            "SetBudget in timezone Mars/Base",
            invalid,
            &["timezone", "Mars/Base"],
            later!(
                a,
                set_budget,
                Budget {
                    timezone: "Mars/Base".into(),
                    ..team_budget(&team.id, 10.0)
                }
            ),
        ),
        case(
            "SetBudget for an unknown team",
            not_found,
            &["ghost-team"],
            later!(a, set_budget, team_budget("ghost-team", 10.0)),
        ),
        case(
            "SetBudget with period fortnightly",
            invalid,
            &["period", "fortnightly"],
            later!(
                a,
                set_budget,
                Budget {
                    period: "fortnightly".into(),
                    ..team_budget(&team.id, 10.0)
                }
            ),
        ),
        case(
            "SetBudget with a threshold above 100%",
            invalid,
            &["thresholds"],
            later!(
                a,
                set_budget,
                Budget {
                    thresholds: vec![50.0, 150.0],
                    ..team_budget(&team.id, 10.0)
                }
            ),
        ),
        case(
            "SetRateLimit with every limit 0",
            invalid,
            &["rpm", "tpm", "max_concurrent"],
            later!(a, set_rate_limit, team_rate_limit(&team.id, 0)),
        ),
        case(
            "SetRateLimit with scope galaxy",
            invalid,
            &["scope", "galaxy"],
            later!(
                a,
                set_rate_limit,
                RateLimit {
                    scope: "galaxy".into(),
                    ..team_rate_limit(&team.id, 10)
                }
            ),
        ),
        case(
            "SetBudget with scope tag",
            invalid,
            &["tags are for rate limits"],
            later!(
                a,
                set_budget,
                Budget {
                    scope: "tag".into(),
                    scope_id: "batch".into(),
                    ..team_budget(&team.id, 10.0)
                }
            ),
        ),
        case(
            "SetRateLimit with a model on a model-scoped limit",
            invalid,
            &["model"],
            later!(
                a,
                set_rate_limit,
                RateLimit {
                    scope: "model".into(),
                    scope_id: "gpt-4o".into(),
                    model: "gpt-4o".into(),
                    rpm: 10,
                    ..Default::default()
                }
            ),
        ),
        case(
            "SetRateLimit with a schedule at 25:00",
            invalid,
            &["time_start", "25:00"],
            later!(
                a,
                set_rate_limit,
                scheduled_rate_limit(&team.id, "25:00", "")
            ),
        ),
        case(
            "SetRateLimit with a schedule in time zone Mars/Olympus",
            invalid,
            &["Mars/Olympus"],
            later!(
                a,
                set_rate_limit,
                scheduled_rate_limit(&team.id, "20:00", "Mars/Olympus")
            ),
        ),
        case(
            "SetAccessGroup without models",
            invalid,
            &["at least one model"],
            later!(a, set_access_group, access_group("empty", &[])),
        ),
        case(
            "SetAccessGroup for an unknown team",
            not_found,
            &["ghost-team"],
            later!(
                a,
                set_access_group,
                AccessGroup {
                    team_ids: vec!["ghost-team".into()],
                    ..access_group("haunted", &["gpt-4o"])
                }
            ),
        ),
        case(
            "SetAccessGroup with role superuser",
            invalid,
            &["roles", "superuser"],
            later!(
                a,
                set_access_group,
                AccessGroup {
                    roles: vec!["superuser".into()],
                    ..access_group("supers", &["gpt-4o"])
                }
            ),
        ),
        case(
            "SetAccessGroup with a name in use",
            exists,
            &["large"],
            later!(a, set_access_group, access_group("large", &["gpt-4o-mini"])),
        ),
        case(
            "SetPrice with a negative price",
            invalid,
            &["input_per_mtok"],
            later!(a, set_price, price("gpt-4o", -1.0)),
        ),
        case(
            "RevokeKey of an unknown key",
            not_found,
            &["ghost-key"],
            later!(a, revoke_key, key_request("ghost-key")),
        ),
        case(
            "BlockKey on a revoked key",
            precondition,
            &[&revoked.id, "revoked"],
            later!(a, block_key, key_request(&revoked.id)),
        ),
        case(
            "RotateKey with a grace of 31 days",
            invalid,
            &["grace_seconds"],
            later!(a, rotate_key, rotation(&live.id, 31 * 24 * 3600)),
        ),
        case(
            "DeleteCredential used by a deployment",
            precondition,
            &[&credential.id, &deployment.id],
            later!(a, delete_credential, delete_request(&credential.id)),
        ),
        case(
            "PutCredential without secret fields",
            invalid,
            &["secret_fields"],
            later!(
                a,
                put_credential,
                PutCredentialRequest {
                    name: "empty".into(),
                    provider: "openai".into(),
                    ..Default::default()
                }
            ),
        ),
        case(
            "PutCredential with half an AWS key pair",
            invalid,
            &["aws_access_key_id", "aws_secret_access_key"],
            later!(
                a,
                put_credential,
                PutCredentialRequest {
                    name: "bedrock-half".into(),
                    provider: "bedrock".into(),
                    secret_fields: [("aws_access_key_id".into(), "AKIAEXAMPLE".into())].into(),
                }
            ),
        ),
        case(
            "PutCredential with provider nope",
            invalid,
            &["provider", "nope"],
            later!(
                a,
                put_credential,
                PutCredentialRequest {
                    provider: "nope".into(),
                    ..credential_request("other", "sk-3")
                }
            ),
        ),
        case(
            "CreateAdminToken with role superuser",
            invalid,
            &["role", "superuser"],
            later!(a, create_admin_token, new_admin_token("root", "superuser")),
        ),
        case(
            "SetRoutingRule with the model as its own fallback",
            invalid,
            &["gpt-4o", "fallback"],
            later!(
                a,
                set_routing_rule,
                RoutingRule {
                    model_name: "gpt-4o".into(),
                    fallbacks: vec!["gpt-4o".into()],
                    ..Default::default()
                }
            ),
        ),
        case(
            "SetGuardrail with config_json that is not JSON",
            invalid,
            &["config_json"],
            later!(
                a,
                set_guardrail,
                Guardrail {
                    name: "pii".into(),
                    ..guardrail("regex", "{nope")
                }
            ),
        ),
        case(
            "SetCachePolicy with a TTL of 0",
            invalid,
            &["ttl_seconds", "between 1 and"],
            later!(a, set_cache_policy, cache_policy("gpt-4o", 0)),
        ),
        case(
            "SetCachePolicy with a scope that does not exist",
            invalid,
            &["world"],
            later!(
                a,
                set_cache_policy,
                CachePolicy {
                    scope: "world".into(),
                    ..cache_policy("gpt-4o", 60)
                }
            ),
        ),
        case(
            "SetCachePolicy whose semantic tier names an undeployed embeddings model",
            invalid,
            &["nowhere-embed", "no deployment"],
            later!(
                a,
                set_cache_policy,
                CachePolicy {
                    semantic_embeddings_model: "nowhere-embed".into(),
                    ..cache_policy("gpt-4o", 60)
                }
            ),
        ),
        case(
            "SetCachePolicy with a control character in the model",
            invalid,
            &["model"],
            later!(a, set_cache_policy, cache_policy("gpt\u{0}4o", 60)),
        ),
        case(
            "DeleteCachePolicy that does not exist",
            not_found,
            &["cache policy nope"],
            later!(a, delete_cache_policy, delete_request("nope")),
        ),
        case(
            "SetGuardrail of a kind nothing enforces",
            invalid,
            &["keywords", "bedrock, pii, regex"],
            later!(a, set_guardrail, guardrail("keywords", r#"{}"#)),
        ),
        case(
            "SetGuardrail with a pattern that is not a regular expression",
            invalid,
            &["(unclosed", "regular expression"],
            later!(
                a,
                set_guardrail,
                guardrail("regex", r#"{"patterns": ["(unclosed"], "action": "block"}"#)
            ),
        ),
        case(
            "SetGuardrail with an entity pii does not know",
            invalid,
            &["ssn"],
            later!(
                a,
                set_guardrail,
                guardrail("pii", r#"{"entities": ["ssn"], "action": "mask"}"#)
            ),
        ),
        case(
            "SetGuardrail with a misspelt setting",
            invalid,
            &["entitys"],
            later!(
                a,
                set_guardrail,
                guardrail("pii", r#"{"entitys": ["email"], "action": "mask"}"#)
            ),
        ),
        case(
            "SetGuardrail for a team that does not exist",
            not_found,
            &["team nobody"],
            later!(
                a,
                set_guardrail,
                Guardrail {
                    team_ids: vec!["nobody".into()],
                    ..guardrail("pii", r#"{"action": "mask"}"#)
                }
            ),
        ),
        case(
            "SetGuardrail on Bedrock signing with the edge identity off AWS",
            invalid,
            &["collector.example.com", "credential_id"],
            later!(
                a,
                set_guardrail,
                guardrail(
                    "bedrock",
                    r#"{"guardrail_id": "g", "version": "1", "region": "us-east-1", "endpoint": "http://collector.example.com"}"#
                )
            ),
        ),
    ];

    let mut failures = Vec::new();
    for Case {
        what,
        code,
        mentions,
        call,
    } in cases
    {
        let before = last_sequence(&mut admin).await?;
        let outcome = refused(what, call.await, code);
        let after = last_sequence(&mut admin).await?;
        match outcome {
            Err(e) => failures.push(format!("{e:#}")),
            Ok(status) => {
                let message = status.message();
                let missing: Vec<&String> = mentions
                    .iter()
                    .filter(|m| !message.contains(m.as_str()))
                    .collect();
                if message.is_empty() || !missing.is_empty() {
                    failures.push(format!(
                        "{what}: message {message:?} does not mention {missing:?}"
                    ));
                }
                if message.contains("hunter2") {
                    failures.push(format!("{what}: message repeats the password: {message:?}"));
                }
            }
        }
        if after != before {
            failures.push(format!("{what}: appended events {before} -> {after}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    ensure!(cp.log.state().sequence == last_sequence(&mut admin).await?);
    cp.stop().await?;
    Ok(())
}

async fn keys_are_created_rotated_and_revoked(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    let team = create_team(&mut admin, "search").await?;
    let (key, secret) = create_key(&mut admin, &team.id, "indexer").await?;
    ensure!(
        secret.starts_with("tg-") && secret.len() > 20,
        "secret {secret:?}"
    );
    ensure!(
        secret.get(..10) == Some(key.prefix.as_str()),
        "prefix {:?} of {secret:?}",
        key.prefix
    );
    ensure!(key.team_id == team.id && key.alias == "indexer" && !key.blocked && !key.revoked);
    ensure!(key.previous_valid_until.is_none());
    let hash = cp
        .log
        .state()
        .keys
        .get(&key.id)
        .context("key in the live state")?
        .hash
        .clone();
    ensure!(
        hash == hash_secret(&secret),
        "stored hash {hash} is not SHA-256 of the secret"
    );
    ensure!(
        hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );

    let rotated = admin
        .rotate_key(rotation(&key.id, 3600))
        .await?
        .into_inner();
    let new_secret = rotated.secret;
    let rotated = rotated.key.context("RotateKey returned no key")?;
    ensure!(new_secret.starts_with("tg-") && new_secret != secret);
    ensure!(
        new_secret.get(..10) == Some(rotated.prefix.as_str()),
        "prefix after rotation {:?}",
        rotated.prefix
    );
    let valid_until = rotated
        .previous_valid_until
        .as_ref()
        .and_then(from_timestamp)
        .context("previous_valid_until is set after a rotation with grace")?;
    let grace = (valid_until - Utc::now()).num_seconds();
    ensure!(
        (3540..=3600).contains(&grace),
        "old secret valid for {grace}s, expected about 3600"
    );
    let state = cp.log.state();
    let stored = state
        .keys
        .get(&key.id)
        .context("rotated key in the live state")?;
    ensure!(stored.hash == hash_secret(&new_secret));
    ensure!(
        state.key_by_hash.get(&hash_secret(&secret)) == Some(&key.id),
        "the old secret works during the grace"
    );
    ensure!(state.key_by_hash.get(&hash_secret(&new_secret)) == Some(&key.id));

    let events = all_events(&mut admin, 100).await?;
    for event in &events {
        for s in [&secret, &new_secret] {
            ensure!(
                !event.payload_json.contains(s.as_str()),
                "event {} holds a secret",
                event.sequence
            );
        }
    }
    let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    ensure!(
        types == ["team.created", "key.created", "key.rotated"],
        "{types:?}"
    );
    let snapshot = admin
        .get_snapshot(GetSnapshotRequest {})
        .await?
        .into_inner();
    ensure!(
        !contains(&snapshot.state_json, &secret) && !contains(&snapshot.state_json, &new_secret)
    );

    let revoked = admin.revoke_key(key_request(&key.id)).await?.into_inner();
    ensure!(
        revoked.revoked,
        "RevokeKey answers the revoked key: {revoked:?}"
    );
    let live = admin
        .list_keys(ListKeysRequest::default())
        .await?
        .into_inner()
        .keys;
    ensure!(live.is_empty(), "ListKeys hides revoked keys: {live:?}");
    let all = admin
        .list_keys(ListKeysRequest {
            include_revoked: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .keys;
    ensure!(
        all.len() == 1 && all[0].id == key.id && all[0].revoked,
        "{all:?}"
    );
    cp.stop().await?;
    Ok(())
}

async fn credentials_are_sealed_and_never_returned(backend: Backend) -> Result<()> {
    const SECRET: &str = "sk-very-secret-123";
    const REPLACEMENT: &str = "sk-replacement-456";
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    let credential = admin
        .put_credential(credential_request("openai-prod", SECRET))
        .await?
        .into_inner();
    ensure!(
        credential.field_names == ["api_key"],
        "{:?}",
        credential.field_names
    );
    ensure!(
        credential.name == "openai-prod"
            && credential.provider == "openai"
            && !credential.id.is_empty()
    );
    ensure!(
        !format!("{credential:?}").contains(SECRET),
        "the response holds the secret"
    );

    let mut replacement = credential_request("openai-prod", REPLACEMENT);
    replacement
        .secret_fields
        .insert("organization".into(), "org-42".into());
    let replaced = admin.put_credential(replacement).await?.into_inner();
    ensure!(
        replaced.id == credential.id,
        "a second PutCredential with the same name keeps the id"
    );
    ensure!(
        replaced.field_names == ["api_key", "organization"],
        "{:?}",
        replaced.field_names
    );
    let listed = admin
        .list_credentials(ListCredentialsRequest {})
        .await?
        .into_inner()
        .credentials;
    ensure!(listed == vec![replaced], "{listed:?}");

    let events = all_events(&mut admin, 100).await?;
    ensure!(events.len() == 2 && events.iter().all(|e| e.r#type == "credential.put"));
    let snapshot = admin
        .get_snapshot(GetSnapshotRequest {})
        .await?
        .into_inner();
    for secret in [SECRET, REPLACEMENT, "org-42"] {
        for event in &events {
            ensure!(
                !event.payload_json.contains(secret),
                "event {} holds {secret:?}",
                event.sequence
            );
        }
        ensure!(
            !contains(&snapshot.state_json, secret),
            "GetSnapshot's state holds {secret:?}"
        );
    }
    cp.stop().await?;
    Ok(())
}

async fn set_commands_are_idempotent(backend: Backend) -> Result<()> {
    let cp = TestControlPlane::start(backend).await?;
    let mut admin = cp.admin().await?;
    let team = create_team(&mut admin, "alpha").await?;

    let start = last_sequence(&mut admin).await?;
    let first = admin.set_price(price("gpt-4o", 2.5)).await?.into_inner();
    let second = admin.set_price(price("gpt-4o", 2.5)).await?.into_inner();
    ensure!(first == price("gpt-4o", 2.5) && second == first);
    ensure!(
        last_sequence(&mut admin).await? == start + 1,
        "the same SetPrice twice appends one event"
    );
    admin.set_price(price("gpt-4o", 3.0)).await?;
    ensure!(
        last_sequence(&mut admin).await? == start + 2,
        "a changed price appends an event"
    );

    let start = start + 2;
    let request = mock_deployment("gpt-4o");
    let created = admin.upsert_deployment(request.clone()).await?.into_inner();
    ensure!(
        !created.id.is_empty() && created.weight == 1 && created.upstream_model == "gpt-4o",
        "{created:?}"
    );
    let again = admin.upsert_deployment(created.clone()).await?.into_inner();
    ensure!(again == created, "{again:?} != {created:?}");
    let same_request = Deployment {
        id: created.id.clone(),
        ..request
    };
    admin.upsert_deployment(same_request).await?;
    ensure!(
        last_sequence(&mut admin).await? == start + 1,
        "the same UpsertDeployment again appends nothing"
    );

    let budget = Budget {
        thresholds: vec![80.0, 50.0],
        ..team_budget(&team.id, 100.0)
    };
    let created = admin.set_budget(budget.clone()).await?.into_inner();
    admin
        .set_budget(Budget {
            id: created.id.clone(),
            ..budget
        })
        .await?;
    admin.set_budget(created).await?;
    ensure!(
        last_sequence(&mut admin).await? == start + 2,
        "the same SetBudget again appends nothing"
    );

    let created = admin
        .set_rate_limit(team_rate_limit(&team.id, 60))
        .await?
        .into_inner();
    admin.set_rate_limit(created).await?;
    ensure!(
        last_sequence(&mut admin).await? == start + 3,
        "the same SetRateLimit again appends nothing"
    );

    let (key, _) = create_key(&mut admin, &team.id, "svc").await?;
    let block = || key_request(&key.id);
    admin.block_key(block()).await?;
    let blocked = admin.block_key(block()).await?.into_inner();
    ensure!(blocked.blocked);
    ensure!(
        last_sequence(&mut admin).await? == start + 5,
        "blocking a blocked key appends nothing"
    );
    ensure!(cp.log.state().sequence == start + 5);
    cp.stop().await?;
    Ok(())
}

/// The answer of reflection `$version` on `$channel` to `$request` (a `MessageRequest`).
macro_rules! reflection_answer {
    ($version:ident, $channel:expr, $request:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some($request),
        };
        let mut client = ServerReflectionClient::new($channel);
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await?
            .into_inner();
        responses
            .message()
            .await?
            .context(concat!("no reflection ", stringify!($version), " response"))?
            .message_response
    }};
}

/// The services that reflection `$version` on `$channel` lists.
macro_rules! reflection_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;

        let request = MessageRequest::ListServices(String::new());
        match reflection_answer!($version, $channel, request) {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => bail!(
                "reflection {} answered list_services with {other:?}",
                stringify!($version)
            ),
        }
    }};
}

async fn health_and_reflection_are_served(backend: Backend) -> Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let cp = TestControlPlane::start(backend).await?;
    let channel = Channel::from_shared(format!("http://{}", cp.addr))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel.clone());
    for service in ["tollgate.admin.v1.AdminService", ""] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(request).await?.into_inner().status;
        ensure!(
            status == ServingStatus::Serving as i32,
            "health of {service:?}: {status}"
        );
    }
    let unknown = HealthCheckRequest {
        service: "no.such.Service".into(),
    };
    refused(
        "Health/Check of an unknown service",
        health.check(unknown).await,
        Code::NotFound,
    )?;

    for (version, services) in [
        ("v1", reflection_v1_services(channel.clone()).await?),
        (
            "v1alpha",
            reflection_v1alpha_services(channel.clone()).await?,
        ),
    ] {
        for wanted in ["tollgate.admin.v1.AdminService", "grpc.health.v1.Health"] {
            ensure!(
                services.iter().any(|s| s == wanted),
                "reflection {version} lacks {wanted}: {services:?}"
            );
        }
    }
    ensure!(reflection_v1_describes(channel, "tollgate.admin.v1.AdminService").await?);
    cp.stop().await?;
    Ok(())
}

/// The services that reflection `v1` lists.
async fn reflection_v1_services(channel: Channel) -> Result<Vec<String>> {
    Ok(reflection_services!(v1, channel))
}

/// Whether reflection `v1` returns the file that declares `symbol`.
async fn reflection_v1_describes(channel: Channel, symbol: &str) -> Result<bool> {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let request = MessageRequest::FileContainingSymbol(symbol.to_owned());
    Ok(matches!(reflection_answer!(v1, channel, request),
        Some(MessageResponse::FileDescriptorResponse(files)) if !files.file_descriptor_proto.is_empty()))
}

/// The services that reflection `v1alpha` lists.
async fn reflection_v1alpha_services(channel: Channel) -> Result<Vec<String>> {
    Ok(reflection_services!(v1alpha, channel))
}

on_both_backends!(
    viewer_token_cannot_change_anything,
    service_tokens_follow_policy_and_do_nothing_else,
    an_expired_token_is_unauthenticated,
    the_bootstrap_token_is_disabled_only_once_another_admin_can_act,
    wrong_or_missing_token_is_unauthenticated,
    every_change_appears_in_list_events_with_its_actor,
    invalid_commands_get_the_right_code_and_append_nothing,
    keys_are_created_rotated_and_revoked,
    credentials_are_sealed_and_never_returned,
    set_commands_are_idempotent,
    health_and_reflection_are_served,
);
