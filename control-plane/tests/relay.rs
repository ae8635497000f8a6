//! The relay: every committed event reaches the bus exactly once, in order, even when the
//! control plane dies between commit and publish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use prost::Message;
use tollgate_control_plane::relay::last_published;
use tollgate_proto::admin::CreateTeamRequest;
use tollgate_proto::policy::PolicyEvent;
use tollgate_runtime::bus::{Bus, POLICY};
use tollgate_test_support::faulty_bus::{FaultyBus, Publish};
use tollgate_test_support::on_both_backends;
use tollgate_test_support::roles::*;

/// Stands for a control plane process that dies while publishing: the real bus stores the
/// first `survive` publishes, stores the next one but "dies" before its ack arrives, and never
/// publishes again.
fn dies_while_publishing(bus: Arc<dyn Bus>, survive: usize) -> Arc<FaultyBus> {
    Arc::new(FaultyBus::new(bus).publishes(move |n| match n {
        n if n < survive => Publish::Passes,
        n if n == survive => Publish::AckLost,
        _ => Publish::Refused,
    }))
}

async fn create_teams(cp: &TestControlPlane, names: std::ops::Range<usize>) -> Result<()> {
    let mut admin = cp.admin().await?;
    for i in names {
        admin
            .create_team(CreateTeamRequest {
                name: format!("team-{i}"),
                metadata: Default::default(),
            })
            .await?;
    }
    Ok(())
}

async fn wait_until_published(bus: &dyn Bus, sequence: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while last_published(bus).await? < sequence {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the relay published up to {} of {sequence}",
                last_published(bus).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Stops `cp` (its process dies), asserts that the last event on `bus` is then number
/// `published` (`what` names the moment in the failure message), and starts a control plane on
/// that store again, publishing to `bus`.
async fn restarted(
    cp: TestControlPlane,
    bus: &Arc<dyn Bus>,
    published: u64,
    what: &str,
) -> Result<TestControlPlane> {
    let store = cp.stop().await?;
    assert_eq!(last_published(bus.as_ref()).await?, published, "{what}");
    TestControlPlane::start_with(store, bus.clone()).await
}

/// Every message on the policy topic, decoded.
async fn policy_topic(bus: &dyn Bus) -> Result<Vec<(String, PolicyEvent)>> {
    let last = bus
        .last(POLICY)
        .await?
        .context("policy topic is empty")?
        .sequence;
    let mut sub = bus.subscribe(POLICY, 0).await?;
    let mut out = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await?
            .context("subscription ended")??;
        out.push((
            message.msg_id.clone(),
            PolicyEvent::decode(message.payload)?,
        ));
        if message.sequence == last {
            return Ok(out);
        }
    }
}

async fn killed_between_commit_and_publish_the_stream_still_gets_every_event_once(
    backend: Backend,
) -> Result<()> {
    let bus = backend.bus().await?;
    let dying = dies_while_publishing(bus.clone(), 4);
    let cp = TestControlPlane::start_with(backend.store().await?, dying).await?;
    create_teams(&cp, 0..12).await?;
    assert_eq!(cp.log.state().sequence, 12, "all twelve changes committed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cp = restarted(cp, &bus, 5, "the process died having stored five events").await?;
    wait_until_published(bus.as_ref(), 12).await?;
    create_teams(&cp, 12..15).await?;
    wait_until_published(bus.as_ref(), 15).await?;

    let on_bus = policy_topic(bus.as_ref()).await?;
    let sequences: Vec<u64> = on_bus.iter().map(|(_, e)| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=15).collect::<Vec<_>>(),
        "each committed event once, in order"
    );
    let committed = cp.store.store.read_after(0, 100).await?;
    for ((msg_id, published), event) in on_bus.iter().zip(&committed) {
        assert_eq!(msg_id, &event.id.to_string(), "Nats-Msg-Id is the event id");
        assert_eq!(published.id, event.id.to_string());
    }
    cp.stop().await?;
    Ok(())
}

async fn events_committed_while_the_bus_is_down_are_published_when_it_returns(
    backend: Backend,
) -> Result<()> {
    let bus = backend.bus().await?;
    let down = Arc::new(FaultyBus::new(bus.clone()).publishes(|_| Publish::Refused));
    let cp = TestControlPlane::start_with(backend.store().await?, down).await?;
    create_teams(&cp, 0..3).await?;
    let cp = restarted(cp, &bus, 0, "nothing reached the bus").await?;
    wait_until_published(bus.as_ref(), 3).await?;
    assert_eq!(policy_topic(bus.as_ref()).await?.len(), 3);
    cp.stop().await?;
    Ok(())
}

on_both_backends!(
    killed_between_commit_and_publish_the_stream_still_gets_every_event_once,
    events_committed_while_the_bus_is_down_are_published_when_it_returns,
);
