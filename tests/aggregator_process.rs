//! The `tollgate aggregator` process, SIGKILLed twice while it consumes 100,000 usage events
//! (a tenth of them published twice under different msg ids): after each restart it resumes
//! from its durable consumer, and in the end the ledger and the rollups add up to exactly what
//! was generated — nothing lost, nothing counted twice.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::DateTime;
use common::{Killed, free_port};
use tollgate_proto::usage::usage_service_client::UsageServiceClient;
use tollgate_proto::usage::{QueryUsageRequest, UsageEvent};
use tollgate_runtime::bus::{Bus, JetStreamBus, POLICY, USAGE_DEAD_LETTER};
use tollgate_test_support::aggregator::{
    Dimensions, Rng, Sums, generate, publish_usage, with_resends,
};
use tollgate_test_support::roles::TestControlPlane;
use tollgate_usage_aggregator::ledger::Ledger;

const TOKEN: &str = "aggregator-process-test-token";
const EVENTS: usize = 100_000;
const RESENT_PERCENT: u64 = 10;
/// 2025-06-01T10:00:00Z: every event falls in this hour, so rollups stay small.
const HOUR_START: i64 = 1_748_772_000;
const DAY_START: i64 = HOUR_START - 10 * 3600;
/// The aggregator's redelivery delay for a batch fetched by a member that died.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The settings every run of the aggregator gets.
struct Settings<'a> {
    database_url: &'a str,
    nats_url: &'a str,
    prefix: &'a str,
    log: &'a Path,
}

/// Starts `tollgate aggregator`; returns it with its gRPC port.
fn start_aggregator(settings: &Settings<'_>) -> Result<(Killed, u16)> {
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(settings.log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("aggregator")
        .env("DATABASE_URL", settings.database_url)
        .env("NATS_URL", settings.nats_url)
        .env("TOLLGATE_BUS_PREFIX", settings.prefix)
        .env("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("TOLLGATE_USAGE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        // Policy comes from the POLICY stream alone.
        .env_remove("TOLLGATE_CONTROL_PLANE_URL")
        .env_remove("TOLLGATE_EDGE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting tollgate aggregator")?;
    Ok((Killed(child), grpc_port))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Puts one event on the POLICY stream through a real control plane, so that the aggregator
/// has policy to rebuild (it waits for policy before it consumes usage).
async fn seed_policy(bus: Arc<dyn Bus>) -> Result<()> {
    let control_plane = TestControlPlane::on_bus(bus.clone()).await?;
    control_plane.team("process-test").await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.last(POLICY).await?.is_none() {
        if Instant::now() > deadline {
            bail!("the relay did not publish the policy event");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control_plane.stop().await?;
    Ok(())
}

/// The events, each once, in one hour of one day, and the messages to publish: each event
/// under its request id, and a tenth of them again under another id, later in the sequence.
fn events_and_messages(seed: u64) -> (Vec<UsageEvent>, Vec<(String, UsageEvent)>) {
    let mut rng = Rng::new(seed);
    let hour = DateTime::UNIX_EPOCH + chrono::Duration::seconds(HOUR_START);
    let dimensions = Dimensions {
        teams: &["team-a", "team-b", "team-c"],
        models: &["gpt-4o", "claude-sonnet"],
        regions: &["eu-west-1"],
        edges: &["edge-0", "edge-1"],
    };
    let events = generate(
        &mut rng,
        EVENTS,
        hour,
        chrono::Duration::hours(1),
        &dimensions,
    );
    let messages = with_resends(&mut rng, &events, RESENT_PERCENT);
    (events, messages)
}

async fn rollup_sums(ledger: &Ledger, granularity: &str) -> Result<Sums> {
    let mut sums = Sums::default();
    let rows = ledger
        .rollups(granularity, DAY_START * 1000, (DAY_START + 86_400) * 1000)
        .await?;
    for (_, _, row) in &rows {
        sums.merge(&Sums::of_rollup(row));
    }
    Ok(sums)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_killed_twice_loses_and_doubles_nothing() -> Result<()> {
    let began = Instant::now();
    let database_url = tollgate_test_support::fresh_postgres_database().await?;
    let nats_url = tollgate_test_support::nats_url().await?;
    let prefix = tollgate_test_support::unique_name("aggproc");
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("aggregator.log");
    let settings = Settings {
        database_url: &database_url,
        nats_url: &nats_url,
        prefix: &prefix,
        log: &log,
    };

    let bus: Arc<dyn Bus> = Arc::new(JetStreamBus::connect(&nats_url, &prefix).await?);
    seed_policy(bus.clone()).await?;
    // The test's own view of the ledger (this also creates its tables).
    let ledger = Ledger::connect(&database_url).await?;
    let (events, messages) = events_and_messages(0x5eed_a66e);
    let expected = Sums::of(&events);
    ensure!(messages.len() > EVENTS + EVENTS / 20, "a tenth sent twice");
    eprintln!(
        "generated {} events, {} messages in {:?}",
        events.len(),
        messages.len(),
        began.elapsed()
    );

    let (mut aggregator, _) = start_aggregator(&settings)?;

    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let duplicates = publish_usage(&bus, messages).await?;
            anyhow::Ok((duplicates, started.elapsed()))
        })
    };

    // Kill the aggregator when the ledger passes 30 % and 60 %, restarting it each time.
    let mut kills: Vec<(i64, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut grpc_port = 0;
    loop {
        let (recorded, ..) = ledger.ledger_totals().await?;
        ensure!(
            recorded <= EVENTS as i64,
            "the ledger holds {recorded} requests, more than the {EVENTS} sent"
        );
        if recorded == EVENTS as i64 && kills.len() == 2 {
            break;
        }
        let threshold = EVENTS as i64 * [30, 60][kills.len().min(1)] / 100;
        if kills.len() < 2 && recorded >= threshold {
            aggregator.0.kill()?;
            aggregator.0.wait()?;
            kills.push((recorded, Instant::now()));
            eprintln!(
                "SIGKILLed the aggregator at {recorded} requests ({:?})",
                began.elapsed()
            );
            let (restarted, port) = start_aggregator(&settings)?;
            aggregator = restarted;
            grpc_port = port;
        }
        if let Some(status) = aggregator.0.try_wait()? {
            bail!(
                "the aggregator exited by itself ({status}):\n{}",
                log_tail(&log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the ledger holds {recorded} of {EVENTS} requests after {:?} (kills at {:?}):\n{}",
                began.elapsed(),
                kills.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                log_tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (duplicates, publish_time) = publisher.await??;
    assert_eq!(duplicates, 0, "every publish had its own msg id");
    eprintln!(
        "all {EVENTS} recorded at {:?} (publishing took {publish_time:?}); kills at {:?}",
        began.elapsed(),
        kills.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert!(
        kills.iter().all(|(n, _)| *n < EVENTS as i64),
        "both kills happened midway: {:?}",
        kills.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );

    // Batches the killed processes had fetched come back after the ack wait; once they have
    // been handled again, nothing may have changed.
    if let Some((_, last_kill)) = kills.last() {
        let settled = *last_kill + ACK_WAIT + Duration::from_secs(3);
        tokio::time::sleep(settled.saturating_duration_since(Instant::now())).await;
    }

    assert_eq!(
        ledger.ledger_totals().await?,
        expected.ledger_totals(),
        "ledger totals (requests, input, output, cached, cost nanos)"
    );
    assert_eq!(rollup_sums(&ledger, "day").await?, expected, "day rollups");
    assert_eq!(
        rollup_sums(&ledger, "hour").await?,
        expected,
        "hour rollups"
    );

    // The same through the restarted process's UsageService.
    let mut usage = UsageServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?;
    let mut query = QueryUsageRequest {
        start: Some(Default::default()),
        end: Some(Default::default()),
        granularity: "day".to_owned(),
        group_by: vec!["team".to_owned(), "model".to_owned()],
        ..Default::default()
    };
    if let (Some(start), Some(end)) = (query.start.as_mut(), query.end.as_mut()) {
        start.seconds = DAY_START;
        end.seconds = DAY_START + 86_400;
    }
    let mut request = tonic::Request::new(query);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let rows = usage.query_usage(request).await?.into_inner().rows;
    assert_eq!(rows.len(), 6, "3 teams x 2 models: {rows:?}");
    let mut queried = Sums::default();
    for row in &rows {
        queried.merge(&Sums::of_row(row));
    }
    assert_eq!(queried, expected, "QueryUsage summed");

    assert!(
        bus.last(USAGE_DEAD_LETTER).await?.is_none(),
        "no event was dead-lettered"
    );
    eprintln!("done in {:?}", began.elapsed());
    Ok(())
}
