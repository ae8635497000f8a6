//! Edges follow policy from the stream: revocations reach every edge fast, edges keep serving
//! when the control plane dies, bootstrap from the stream alone, and resync after a gap.

use tollgate_test_support::edge as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use prost::Message;
use serde_json::Value;
use tollgate_proto::admin::KeyRequest;
use tollgate_runtime::bus::POLICY;
use tollgate_test_support::faulty_bus::FaultyBus;

async fn status(edge: &TestEdge, key: &str) -> Result<u16> {
    let response = edge.chat(key, &chat_request("mock", "hi")).await?;
    Ok(response.status().as_u16())
}

async fn readiness(http: &reqwest::Client, edge: &TestEdge) -> Result<(u16, Value)> {
    let response = http.get(edge.url("/health/ready")).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_keys_are_refused_by_three_edges_within_a_second() -> Result<()> {
    let mut cluster = TestCluster::start().await?;
    mock_deployment(&mut cluster.admin, "mock", &[]).await?;
    let mut keys = Vec::new();
    for _ in 0..100 {
        keys.push(create_key(&mut cluster.admin, &[]).await?);
    }
    let edges = cluster.edges(3).await?;
    let mut delays = Vec::new();
    for (id, secret) in &keys {
        let started = Instant::now();
        let revoke = KeyRequest { key_id: id.clone() };
        cluster.admin.revoke_key(revoke).await?;
        let revoked_at = last_sequence(&mut cluster.admin).await?;
        for edge in &edges {
            edge.wait_for_sequence(revoked_at).await?;
            delays.push(started.elapsed());
            assert_eq!(status(edge, secret).await?, 401, "a revoked key is refused");
        }
    }
    delays.sort();
    let (p50, p99, max) = (
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100 - 1],
        delays[delays.len() - 1],
    );
    let figures =
        format!("revocation to applied on 3 edges: p50 {p50:?}, p99 {p99:?}, max {max:?}");
    // The README's bounds: every revocation applied by every edge within a second, and
    // typically within a few milliseconds (measured p50 ≈ 5 ms, p99 ≈ 10 ms on an idle
    // machine; the 100 ms median bound leaves room for a loaded one).
    println!("{figures}");
    assert!(max < Duration::from_secs(1), "{figures}");
    assert!(p50 < Duration::from_millis(100), "{figures}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_keep_serving_while_the_control_plane_is_down_and_catch_up_after() -> Result<()> {
    let mut cluster = TestCluster::start().await?;
    let (database_url, addr) = (cluster.cp.store.url.clone(), cluster.cp.addr);
    mock_deployment(&mut cluster.admin, "mock", &[]).await?;
    let (_, secret) = create_key(&mut cluster.admin, &[]).await?;
    let edge = cluster.edge().await?;
    let http = reqwest::Client::new();
    assert_eq!(status(&edge, &secret).await?, 200);

    cluster.cp.stop().await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (ready, first) = readiness(&http, &edge).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, second) = readiness(&http, &edge).await?;
    assert_eq!(ready, 200, "an edge with policy stays ready");
    let age = |v: &Value| v["policy_age_seconds"].as_f64().unwrap_or_default();
    assert!(
        age(&first) >= 1.0 && age(&second) > age(&first),
        "staleness grows: {first} then {second}"
    );
    assert_eq!(
        status(&edge, &secret).await?,
        200,
        "existing keys keep working"
    );
    let metrics = http.get(edge.url("/metrics")).send().await?.text().await?;
    assert!(metrics.contains("tollgate_policy_staleness_seconds"));

    let store = TestStore::at(&database_url).await?;
    let cp = TestControlPlane::start_on(store, cluster.bus, addr, Default::default()).await?;
    let mut admin = cp.admin().await?;
    let (_, new_secret) = create_key(&mut admin, &[]).await?;
    edge.wait_for_sequence(last_sequence(&mut admin).await?)
        .await?;
    assert_eq!(
        status(&edge, &new_secret).await?,
        200,
        "changes made after the restart arrive"
    );
    eventually(Duration::from_secs(5), || async {
        readiness(&http, &edge)
            .await
            .is_ok_and(|(_, v)| age(&v) < 2.0)
    })
    .await
    .context("staleness back to normal")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_started_while_the_control_plane_is_down_bootstraps_from_the_stream() -> Result<()>
{
    let mut cluster = TestCluster::start().await?;
    mock_deployment(&mut cluster.admin, "mock", &[]).await?;
    let (_, secret) = create_key(&mut cluster.admin, &[]).await?;
    let sequence = last_sequence(&mut cluster.admin).await?;
    // The first edge shows when the relay has published everything.
    let _witness = cluster.edge().await?;
    let (cp_url, expected) = (cluster.cp.url(), cluster.cp.log.state());
    cluster.cp.stop().await?;

    let (nats, prefix) = (&cluster.nats, &cluster.prefix);
    let edge = TestEdge::start(nats, prefix, cluster.bus.clone(), Some(cp_url)).await?;
    edge.wait_for_sequence(sequence).await?;
    let http = reqwest::Client::new();
    assert_eq!(readiness(&http, &edge).await?.0, 200);
    assert_eq!(status(&edge, &secret).await?, 200);
    assert_eq!(
        edge.policy.current().as_deref(),
        Some(expected.as_ref()),
        "the stream rebuilds the same policy"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_policy_stream_leads_to_a_resync_and_the_control_planes_state() -> Result<()> {
    let mut cluster = TestCluster::start().await?;
    mock_deployment(&mut cluster.admin, "mock", &[]).await?;
    let start = last_sequence(&mut cluster.admin).await?;
    // The real bus, except that one policy event never reaches the subscriber once (lost).
    let (lost_sequence, lost) = (start + 3, Arc::new(AtomicBool::new(false)));
    let losing = lost.clone();
    let lossy = Arc::new(FaultyBus::new(cluster.bus.clone()).drops(move |topic, m| {
        topic == POLICY
            && tollgate_proto::policy::PolicyEvent::decode(m.payload.clone())
                .is_ok_and(|e| e.sequence == lost_sequence)
            && !losing.swap(true, Ordering::SeqCst)
    }));
    let (nats, prefix) = (&cluster.nats, &cluster.prefix);
    let edge = TestEdge::start(nats, prefix, lossy.clone(), Some(cluster.cp.url())).await?;
    edge.wait_for_sequence(start).await?;
    for _ in 0..6 {
        create_key(&mut cluster.admin, &[]).await?;
    }
    cluster.sync(&edge).await?;
    assert!(lost.load(Ordering::SeqCst), "the event was lost on the way");
    assert_eq!(edge.policy.resyncs(), 1, "the gap caused one resync");
    let metrics = reqwest::get(edge.url("/metrics")).await?.text().await?;
    assert!(metrics.contains("tollgate_policy_resyncs 1"), "{metrics}");
    assert_eq!(
        edge.policy.current().as_deref(),
        Some(cluster.cp.log.state().as_ref())
    );
    Ok(())
}
