//! Budget statuses reach a running edge as they are published, and keep reaching it after
//! NATS restarts: the edge watches them again, and enforces what arrives.

use tollgate_test_support::edge as common;

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use common::*;
use prost::Message;
use tollgate_test_support::own_nats::OwnNats;

async fn chat(edge: &TestEdge, secret: &str) -> Result<u16> {
    let response = edge.chat(secret, &chat_request("mock", "hi")).await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_published_after_nats_restarts_is_enforced_by_a_running_edge() -> Result<()> {
    let mut nats = OwnNats::start().await?;
    let (prefix, bus) = jetstream_at(&nats.url()).await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(&mut admin, "mock", &[]).await?;
    // Budgets refuse unpriced models.
    set_price(&mut admin, "mock", [1.0, 0.0, 0.0, 0.0]).await?;
    let (key_id, secret) = create_key(&mut admin, &[]).await?;
    let budget = cp.budget("key", &key_id, 5.0, "daily", &[]).await?;
    let edge = TestEdge::start(&nats.url(), &prefix, bus.clone(), Some(cp.url())).await?;
    edge.wait_for_sequence(last_sequence(&mut admin).await?)
        .await?;
    assert_eq!(chat(&edge, &secret).await?, 200);

    // Down for longer than a bus call waits (5 s): the edge's watch fails, not just pauses.
    nats.restart(Duration::from_secs(6)).await?;
    let exhausted = exhausted_daily_status(&budget, chrono::Utc::now())?;
    let name = format!("budget.{budget}");
    eventually(Duration::from_secs(30), || async {
        let status = Bytes::from(exhausted.encode_to_vec());
        bus.kv_put(&name, status).await.is_ok()
    })
    .await?;
    eventually(Duration::from_secs(30), || async {
        chat(&edge, &secret).await.ok() == Some(429)
    })
    .await?;
    Ok(())
}
