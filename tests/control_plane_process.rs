//! The `tollgate control-plane` process, SIGKILLed while NATS is down, so that events are
//! committed but not yet published: after NATS and the control plane come back, the POLICY
//! stream holds every committed event exactly once, in order.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{Killed, free_port, wait_for_port};
use futures::StreamExt;
use prost::Message;
use tollgate_proto::admin::CreateTeamRequest;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::policy::PolicyEvent;
use tollgate_runtime::bus::{Bus, JetStreamBus, POLICY};

const TOKEN: &str = "process-test-token";

fn start_nats(port: u16, dir: &Path) -> Result<Killed> {
    let child = Command::new(tollgate_test_support::nats_server()?)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server")?;
    Ok(Killed(child))
}

fn start_control_plane(admin_port: u16, database_url: &str, nats_port: u16) -> Result<Killed> {
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("control-plane")
        .env("TOLLGATE_UI_ADDR", "off")
        .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("DATABASE_URL", database_url)
        .env("NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Killed(child))
}

async fn create_teams(admin_port: u16, names: std::ops::Range<usize>) -> Result<()> {
    let mut client = AdminServiceClient::connect(format!("http://127.0.0.1:{admin_port}")).await?;
    for i in names {
        let mut request = tonic::Request::new(CreateTeamRequest {
            name: format!("team-{i}"),
            metadata: Default::default(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse()?);
        client.create_team(request).await?;
    }
    Ok(())
}

/// The policy sequences on the stream, in stream order, once `expected` have arrived.
async fn stream_sequences(nats_port: u16, expected: usize) -> Result<Vec<u64>> {
    let bus = JetStreamBus::connect(&format!("nats://127.0.0.1:{nats_port}"), "tollgate").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = bus
            .last(POLICY)
            .await?
            .map(|m| PolicyEvent::decode(m.payload))
            .transpose()?;
        if last.is_some_and(|e| e.sequence as usize >= expected) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the stream did not reach sequence {expected}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = bus.last(POLICY).await?.context("empty stream")?.sequence;
    let mut sub = bus.subscribe(POLICY, 0).await?;
    let mut sequences = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), sub.next()).await? {
        let message = message?;
        sequences.push(PolicyEvent::decode(message.payload)?.sequence);
        if message.sequence == last {
            break;
        }
    }
    Ok(sequences)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_between_commit_and_publish_loses_and_duplicates_nothing() -> Result<()>
{
    let database_url = tollgate_test_support::fresh_postgres_database().await?;
    let nats_dir = tempfile::tempdir()?;
    let (nats_port, admin_port) = (free_port()?, free_port()?);

    let nats = start_nats(nats_port, nats_dir.path())?;
    wait_for_port(nats_port, Duration::from_secs(15), None).await?;
    let control_plane = start_control_plane(admin_port, &database_url, nats_port)?;
    wait_for_port(admin_port, Duration::from_secs(15), None).await?;
    create_teams(admin_port, 0..3).await?;
    assert_eq!(stream_sequences(nats_port, 3).await?, vec![1, 2, 3]);

    // NATS goes away: changes still commit, the relay cannot publish them.
    drop(nats);
    create_teams(admin_port, 3..8).await?;
    // The control plane dies with five committed, unpublished events.
    drop(control_plane);

    let _nats = start_nats(nats_port, nats_dir.path())?;
    wait_for_port(nats_port, Duration::from_secs(15), None).await?;
    let _control_plane = start_control_plane(admin_port, &database_url, nats_port)?;
    wait_for_port(admin_port, Duration::from_secs(15), None).await?;
    create_teams(admin_port, 8..10).await?;
    assert_eq!(
        stream_sequences(nats_port, 10).await?,
        (1..=10).collect::<Vec<u64>>()
    );
    Ok(())
}
