//! Signed policy: edges configured with the control plane's public key apply only what it
//! signed. Events forged straight onto the policy subject (a new key, a deployment pointed
//! elsewhere) are refused by every edge and counted; a key rotation is followed by running
//! edges, by new ones loading a snapshot and by ones rebuilding from the stream alone; and a
//! budget status not signed by a key policy names is refused until policy names its key.

use tollgate_test_support::edge as common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use common::*;
use prost::Message;
use tollgate_control_plane::trust::{PolicySigning, TrustConfig};
use tollgate_policy::PolicyEvent;
use tollgate_policy::model::hash_secret;
use tollgate_proto::admin::Deployment;
use tollgate_proto::policy::PolicySnapshot;
use tollgate_runtime::bus::{Bus, POLICY};
use tollgate_runtime::events::event_to_proto;
use tollgate_runtime::follow::{GrpcSnapshots, SnapshotSource};
use tollgate_runtime::signing::{PrivateKey, Purpose};
use tollgate_test_support::openai_upstream::FakeOpenAi;

const FORGED_SECRET: &str = "tg-forged-secret-nobody-was-given";

fn signing(current: &PrivateKey, previous: Option<&PrivateKey>) -> TrustConfig {
    TrustConfig {
        signing: Some(PolicySigning::new(current.clone(), previous.cloned())),
        status_key: None,
    }
}

async fn signed_control_plane(bus: Arc<dyn Bus>, trust: TrustConfig) -> Result<TestControlPlane> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    TestControlPlane::start_on(TestStore::postgres().await?, bus, addr, trust).await
}

async fn edge_trusting(
    nats: &str,
    prefix: &str,
    bus: Arc<dyn Bus>,
    key: &PrivateKey,
    control_plane_url: Option<String>,
) -> Result<TestEdge> {
    let mut config = TestEdge::config(nats, prefix);
    config.policy_key = Some(key.public_key());
    TestEdge::start_with(config, bus, control_plane_url).await
}

async fn chat(edge: &TestEdge, secret: &str, model: &str) -> Result<u16> {
    let response = edge.chat(secret, &chat_request(model, "hi")).await?;
    Ok(response.status().as_u16())
}

/// The committed event of `type_name` (the last one), to forge a variation of.
async fn committed(
    cp: &TestControlPlane,
    type_name: &str,
) -> Result<tollgate_policy::RecordedEvent> {
    cp.store
        .store
        .read_after(0, 10_000)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.event.type_name() == type_name)
        .with_context(|| format!("no {type_name} event"))
}

/// Publishes `event` as the next policy event, straight to the policy subject, sealed by
/// `signer` when given.
async fn forge(
    bus: &dyn Bus,
    mut event: tollgate_policy::RecordedEvent,
    next: u64,
    signer: Option<&PrivateKey>,
) -> Result<()> {
    event.sequence = next;
    event.id = uuid::Uuid::now_v7();
    let mut payload = event_to_proto(&event).encode_to_vec();
    if let Some(signer) = signer {
        payload = signer.seal(Purpose::PolicyEvent, payload);
    }
    bus.publish(POLICY, &event.id.to_string(), Bytes::from(payload))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_policy_events_are_refused_by_every_edge_which_stays_in_step() -> Result<()> {
    let genuine = FakeOpenAi::start().await?;
    let attacker = FakeOpenAi::start().await?;
    let (nats, prefix, bus) = jetstream().await?;
    let key = PrivateKey::generate();
    let cp = signed_control_plane(bus.clone(), signing(&key, None)).await?;
    let mut admin = cp.admin().await?;
    let credential = api_key_credential(&mut admin, "openai").await?;
    admin
        .upsert_deployment(Deployment {
            model_name: "gpt".into(),
            provider: "openai".into(),
            api_base: genuine.base_url(),
            credential_id: credential,
            ..Default::default()
        })
        .await?;
    let (_, secret) = create_key(&mut admin, &[]).await?;
    let mut edges = Vec::new();
    for _ in 0..2 {
        edges.push(edge_trusting(&nats, &prefix, bus.clone(), &key, Some(cp.url())).await?);
    }
    let sequence = last_sequence(&mut admin).await?;
    for edge in &edges {
        edge.wait_for_sequence(sequence).await?;
        assert_eq!(chat(edge, &secret, "gpt").await?, 200);
    }

    // A key nobody was given, unsigned; the deployment repointed, signed by another key.
    let mut new_key = committed(&cp, "key.created").await?;
    if let PolicyEvent::KeyCreated { key } = &mut new_key.event {
        key.id = "forged-key".into();
        key.alias = "forged".into();
        key.hash = hash_secret(FORGED_SECRET);
    }
    new_key.aggregate_id = "key:forged-key".into();
    new_key.version = 1;
    forge(bus.as_ref(), new_key, sequence + 1, None).await?;
    let mut repointed = committed(&cp, "deployment.upserted").await?;
    if let PolicyEvent::DeploymentUpserted { deployment } = &mut repointed.event {
        deployment.api_base = attacker.base_url();
    }
    let stranger = PrivateKey::generate();
    forge(bus.as_ref(), repointed, sequence + 1, Some(&stranger)).await?;

    for edge in &edges {
        eventually(Duration::from_secs(15), || async {
            edge.policy.refused() >= 2
        })
        .await
        .context("both forgeries counted")?;
        assert_eq!(chat(edge, FORGED_SECRET, "gpt").await?, 401);
        assert_eq!(chat(edge, &secret, "gpt").await?, 200);
        let metrics = reqwest::get(edge.url("/metrics")).await?.text().await?;
        assert!(metrics.contains("tollgate_policy_refused 2"), "{metrics}");
    }
    assert_eq!(
        attacker.requests(),
        0,
        "no request reached the forged api_base"
    );
    assert_eq!(genuine.requests(), 4);

    // The real next event takes the sequence the forgeries claimed, on every edge.
    let (_, second) = create_key(&mut admin, &[]).await?;
    let sequence = last_sequence(&mut admin).await?;
    for edge in &edges {
        edge.wait_for_sequence(sequence).await?;
        assert_eq!(chat(edge, &second, "gpt").await?, 200);
        assert_eq!(
            edge.policy.current().as_deref(),
            Some(cp.log.state().as_ref())
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_is_followed_from_events_snapshots_and_the_stream() -> Result<()> {
    let (nats, prefix, bus) = jetstream().await?;
    let (old, new) = (PrivateKey::generate(), PrivateKey::generate());
    let cp = signed_control_plane(bus.clone(), signing(&old, None)).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(&mut admin, "mock", &[]).await?;
    let (_, before) = create_key(&mut admin, &[]).await?;
    let running = edge_trusting(&nats, &prefix, bus.clone(), &old, Some(cp.url())).await?;
    running
        .wait_for_sequence(last_sequence(&mut admin).await?)
        .await?;

    // The operator sets the new key and keeps the old one as the previous: the restarted
    // control plane hands over with a rotation event signed by the old key.
    let addr = cp.addr;
    let store = cp.stop().await?;
    let cp =
        TestControlPlane::start_on(store, bus.clone(), addr, signing(&new, Some(&old))).await?;
    let mut admin = cp.admin().await?;
    let (_, after) = create_key(&mut admin, &[]).await?;
    let sequence = last_sequence(&mut admin).await?;
    assert_eq!(
        cp.log.state().signing_key_after(sequence),
        Some(new.public_key().to_string().as_str())
    );

    // Edges trust only the old key, as configured before the rotation.
    let from_snapshot = edge_trusting(&nats, &prefix, bus.clone(), &old, Some(cp.url())).await?;
    let from_stream = edge_trusting(&nats, &prefix, bus.clone(), &old, None).await?;
    let edges = [&running, &from_snapshot, &from_stream];
    for edge in edges {
        edge.wait_for_sequence(sequence).await?;
        assert_eq!(chat(edge, &before, "mock").await?, 200);
        assert_eq!(chat(edge, &after, "mock").await?, 200);
        assert_eq!(edge.policy.refused(), 0);
    }

    // After the rotation the old key signs nothing any more.
    let mut new_key = committed(&cp, "key.created").await?;
    if let PolicyEvent::KeyCreated { key } = &mut new_key.event {
        key.id = "forged-key".into();
        key.hash = hash_secret(FORGED_SECRET);
    }
    new_key.aggregate_id = "key:forged-key".into();
    forge(bus.as_ref(), new_key, sequence + 1, Some(&old)).await?;
    for edge in edges {
        eventually(Duration::from_secs(15), || async {
            edge.policy.refused() >= 1
        })
        .await?;
        assert_eq!(chat(edge, FORGED_SECRET, "mock").await?, 401);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_statuses_count_only_when_signed_by_a_status_key_policy_names() -> Result<()> {
    let (nats, prefix, bus) = jetstream().await?;
    let (policy_key, status_key) = (PrivateKey::generate(), PrivateKey::generate());
    let trust = TrustConfig {
        status_key: Some(status_key.public_key()),
        ..signing(&policy_key, None)
    };
    let cp = signed_control_plane(bus.clone(), trust).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(&mut admin, "mock", &[]).await?;
    // Budgets refuse unpriced models.
    set_price(&mut admin, "mock", [1.0, 0.0, 0.0, 0.0]).await?;
    let (key_id, secret) = create_key(&mut admin, &[]).await?;
    let budget = cp.budget("key", &key_id, 5.0, "daily", &[]).await?;
    let edge = edge_trusting(&nats, &prefix, bus.clone(), &policy_key, Some(cp.url())).await?;
    edge.wait_for_sequence(last_sequence(&mut admin).await?)
        .await?;
    assert_eq!(chat(&edge, &secret, "mock").await?, 200);

    let exhausted = |computed_at| exhausted_daily_status(&budget, computed_at);
    let status_key_name = format!("budget.{budget}");
    let put = |status: Vec<u8>| bus.kv_put(&status_key_name, Bytes::from(status));

    // Unsigned, or signed by a stranger: refused, counted, and the key keeps spending.
    put(exhausted(chrono::Utc::now())?.encode_to_vec()).await?;
    eventually(Duration::from_secs(10), || async {
        edge.budgets.refused() >= 1
    })
    .await?;
    let stranger = PrivateKey::generate();
    put(stranger.seal(
        Purpose::BudgetStatus,
        exhausted(chrono::Utc::now())?.encode_to_vec(),
    ))
    .await?;
    eventually(Duration::from_secs(10), || async {
        edge.budgets.refused() >= 2
    })
    .await?;
    assert_eq!(chat(&edge, &secret, "mock").await?, 200);
    let metrics = reqwest::get(edge.url("/metrics")).await?.text().await?;
    assert!(
        metrics.contains("tollgate_budget_status_refused 2"),
        "{metrics}"
    );

    // Signed by the status key: enforced.
    let signed = status_key.seal(
        Purpose::BudgetStatus,
        exhausted(chrono::Utc::now())?.encode_to_vec(),
    );
    put(signed).await?;
    eventually(Duration::from_secs(10), || async {
        chat(&edge, &secret, "mock").await.ok() == Some(429)
    })
    .await?;

    // An older signed status (spend before the budget ran out) does not reopen it.
    let mut older = exhausted(chrono::Utc::now() - chrono::Duration::minutes(5))?;
    older.spent_usd = 0.0;
    older.exceeded = false;
    put(status_key.seal(Purpose::BudgetStatus, older.encode_to_vec())).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(chat(&edge, &secret, "mock").await?, 429);
    assert_eq!(edge.budgets.refused(), 2);

    // A newer status, signed by a key policy does not name yet: refused while it is not named,
    // taken when the control plane comes back announcing that key (the status is not written
    // again; the edge checks what it already holds).
    let next_key = PrivateKey::generate();
    let mut reopened = exhausted(chrono::Utc::now())?;
    reopened.spent_usd = 0.0;
    reopened.exceeded = false;
    put(next_key.seal(Purpose::BudgetStatus, reopened.encode_to_vec())).await?;
    eventually(Duration::from_secs(10), || async {
        edge.budgets.refused() >= 3
    })
    .await?;
    assert_eq!(chat(&edge, &secret, "mock").await?, 429);
    let addr = cp.addr;
    let store = cp.stop().await?;
    let trust = TrustConfig {
        status_key: Some(next_key.public_key()),
        ..signing(&policy_key, None)
    };
    let _cp = TestControlPlane::start_on(store, bus.clone(), addr, trust).await?;
    eventually(Duration::from_secs(10), || async {
        chat(&edge, &secret, "mock").await.ok() == Some(200)
    })
    .await?;
    Ok(())
}

/// Hands out the control plane's snapshot with a key added to its state, re-signed by `signer`.
struct TamperedSnapshots {
    genuine: GrpcSnapshots,
    signer: PrivateKey,
}

#[async_trait::async_trait]
impl SnapshotSource for TamperedSnapshots {
    async fn fetch(&self) -> Result<PolicySnapshot, String> {
        let mut snapshot = self.genuine.fetch().await?;
        let mut state: tollgate_policy::PolicyState =
            serde_json::from_slice(&snapshot.state_json).map_err(|e| e.to_string())?;
        let mut key = state.keys.values().next().cloned().ok_or("no key")?;
        key.id = "forged-key".into();
        key.hash = hash_secret(FORGED_SECRET);
        state.key_by_hash.insert(key.hash.clone(), key.id.clone());
        state.keys.insert(key.id.clone(), key);
        snapshot.state_json = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
        snapshot.signature = self.signer.sign_snapshot(
            snapshot.sequence,
            snapshot.schema_version,
            &snapshot.state_json,
        );
        Ok(snapshot)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_not_signed_by_the_trusted_key_is_refused_and_policy_rebuilt_from_the_stream()
-> Result<()> {
    let (nats, prefix, bus) = jetstream().await?;
    let key = PrivateKey::generate();
    let cp = signed_control_plane(bus.clone(), signing(&key, None)).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(&mut admin, "mock", &[]).await?;
    let (_, secret) = create_key(&mut admin, &[]).await?;
    let sequence = last_sequence(&mut admin).await?;
    let snapshots = Arc::new(TamperedSnapshots {
        genuine: GrpcSnapshots::new(&cp.url(), ADMIN_TOKEN).map_err(anyhow::Error::msg)?,
        signer: PrivateKey::generate(),
    });
    let mut config = TestEdge::config(&nats, &prefix);
    config.policy_key = Some(key.public_key());
    let edge = TestEdge::start_from(config, bus.clone(), Some(snapshots)).await?;
    edge.wait_for_sequence(sequence).await?;
    assert!(
        edge.policy.refused() >= 1,
        "the tampered snapshot was counted"
    );
    assert_eq!(chat(&edge, &secret, "mock").await?, 200);
    assert_eq!(chat(&edge, FORGED_SECRET, "mock").await?, 401);
    assert_eq!(
        edge.policy.current().as_deref(),
        Some(cp.log.state().as_ref())
    );
    Ok(())
}
