//! The bus on a three-node JetStream cluster, as the deployments run it: with
//! `TOLLGATE_BUS_REPLICAS=3` every stream and the shared-state bucket are kept by all three
//! servers, so policy and usage survive losing one of them — the bus goes on taking events
//! and the events it had stay readable.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use tollgate_runtime::bus::{Bus, BusLimits, JetStreamBus, NatsAuth, POLICY};
use tollgate_test_support::free_port;

/// A nats-server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three clustered servers; their client ports.
fn cluster(dir: &Path) -> Result<(Vec<Server>, Vec<u16>)> {
    let clients = [free_port()?, free_port()?, free_port()?];
    let routes = [free_port()?, free_port()?, free_port()?];
    let all_routes = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::new();
    for n in 0..3 {
        let child = Command::new(tollgate_test_support::nats_server()?)
            .args(["-js", "-a", "127.0.0.1", "-p", &clients[n].to_string()])
            .args(["-n", &format!("node-{n}"), "--cluster_name", "tollgate"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[n])])
            .args(["--routes", &all_routes, "-sd"])
            .arg(dir.join(format!("node-{n}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        servers.push(Server(child));
    }
    Ok((servers, clients.to_vec()))
}

/// Connects once the cluster has elected its JetStream leader (a few seconds after start).
async fn connect(port: u16, replicas: usize) -> Result<JetStreamBus> {
    let limits = BusLimits {
        replicas,
        ..BusLimits::default()
    };
    let mut last = None;
    for _ in 0..60 {
        match JetStreamBus::connect_as(
            &format!("nats://127.0.0.1:{port}"),
            "cluster",
            limits,
            &NatsAuth::default(),
        )
        .await
        {
            Ok(bus) => return Ok(bus),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("no bus on the cluster within 30 s: {last:?}")
}

async fn replicas_of(port: u16, stream: &str) -> Result<usize> {
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}")).await?;
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(stream)
        .await?;
    Ok(stream.info().await?.config.num_replicas)
}

/// Publishes one policy event, retried for up to 10 s while the streams elect a leader.
async fn publish_within(bus: &JetStreamBus, id: &str, payload: &'static [u8]) -> Result<()> {
    let mut last = None;
    for _ in 0..40 {
        match bus.publish(POLICY, id, Bytes::from_static(payload)).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("no publish of {id} within 10 s: {last:?}")
}

#[tokio::test]
async fn three_replicas_keep_policy_through_the_loss_of_a_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut servers, ports) = cluster(dir.path())?;
    let bus = connect(ports[0], 3).await?;
    for stream in ["CLUSTER_POLICY", "CLUSTER_USAGE", "KV_CLUSTER_STATE"] {
        assert_eq!(replicas_of(ports[0], stream).await?, 3, "{stream}");
    }
    // A stream just created has no leader for a moment; until it has one, nothing answers a
    // publish (async-nats reports that as "no stream found").
    publish_within(&bus, "event-1", b"one").await?;

    // The server the test is not connected to goes away: every stream has two copies left.
    drop(servers.remove(2));
    publish_within(&bus, "event-2", b"two")
        .await
        .context("the cluster takes events with one node down")?;
    // A consumer is placed once the cluster has a leader again for it: retried like the publish.
    let mut subscribed = None;
    for _ in 0..40 {
        if let Ok(subscription) = bus.subscribe(POLICY, 0).await {
            subscribed = Some(subscription);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut policy = subscribed.context("no subscription with one node down within 10 s")?;
    for expected in [&b"one"[..], b"two"] {
        let message = tokio::time::timeout(Duration::from_secs(10), policy.next())
            .await
            .context("no policy event within 10 s")?
            .context("the subscription ended")??;
        assert_eq!(message.payload.as_ref(), expected);
    }
    Ok(())
}

#[tokio::test]
async fn more_replicas_than_servers_is_refused_with_a_reason() -> Result<()> {
    let url = tollgate_test_support::nats_url().await?;
    let limits = BusLimits {
        replicas: 3,
        ..BusLimits::default()
    };
    let prefix = tollgate_test_support::unique_name("replicas");
    let refused = JetStreamBus::connect_as(&url, &prefix, limits, &NatsAuth::default()).await;
    let message = refused
        .err()
        .context("a single server cannot keep three copies")?;
    assert!(message.to_string().contains("replica"), "{message}");
    Ok(())
}
