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
use common::{Killed, free_port};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tollgate_control_plane::ControlPlane;
use tollgate_control_plane::auth::Authenticator;
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::store;
use tollgate_proto::admin::CreateTeamRequest;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::usage::usage_service_client::UsageServiceClient;
use tollgate_proto::usage::{QueryUsageRequest, UsageEvent};
use tollgate_runtime::bus::{Bus, JetStreamBus, POLICY, USAGE, USAGE_DEAD_LETTER};
use tollgate_usage_aggregator::entry::nanos;
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
async fn seed_policy(prefix: &str, nats_url: &str) -> Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(JetStreamBus::connect(nats_url, prefix).await?);
    let store = store::connect(&tollgate_test_support::fresh_postgres_database().await?).await?;
    let log = Arc::new(PolicyLog::open(store).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let control_plane = ControlPlane {
        log,
        bus: bus.clone(),
        auth: Authenticator::new(Some(TOKEN)),
        sealing: None,
        kek: Default::default(),
        tls: None,
        metrics_addr: None,
        trust: Default::default(),
    };
    let served = tollgate_test_support::Served::spawn("the control plane", |shutdown| {
        control_plane.serve(listener, shutdown)
    });
    let mut admin = AdminServiceClient::connect(format!("http://{addr}")).await?;
    let mut request = tonic::Request::new(CreateTeamRequest {
        name: "process-test".to_owned(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    admin.create_team(request).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.last(POLICY).await?.is_none() {
        if Instant::now() > deadline {
            bail!("the relay did not publish the policy event");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served.stop().await
}

/// SplitMix64: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the ledger must add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sums {
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_input_tokens: i64,
    cost_nanos: i64,
    errors: i64,
}

impl Sums {
    fn ledger_totals(&self) -> (i64, i64, i64, i64, i64) {
        (
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cost_nanos,
        )
    }
}

/// The events, each once, and the messages to publish: each event under its request id, and
/// a tenth of them again under another id, later in the sequence.
fn generate(seed: u64) -> (Vec<UsageEvent>, Vec<(String, UsageEvent)>) {
    let mut rng = Rng(seed);
    let teams = ["team-a", "team-b", "team-c"];
    let models = ["gpt-4o", "claude-sonnet"];
    let events: Vec<UsageEvent> = (0..EVENTS)
        .map(|i| {
            let team = teams[rng.below(3) as usize];
            let model = models[rng.below(2) as usize];
            let input_tokens = rng.below(10_000);
            let status = if rng.below(20) == 0 { 500 } else { 200 };
            let mut event = UsageEvent {
                schema_version: 1,
                request_id: format!("proc-{seed:x}-{i}"),
                occurred_at: Some(Default::default()),
                key_id: format!("key-{team}"),
                user_id: format!("user-{team}"),
                team_id: team.to_owned(),
                model: model.to_owned(),
                deployment_id: format!("dep-{model}"),
                provider: "mock".to_owned(),
                region: "eu-west-1".to_owned(),
                edge_id: format!("edge-{}", rng.below(2)),
                input_tokens,
                output_tokens: if status == 200 { rng.below(2_000) } else { 0 },
                cached_input_tokens: rng.below(input_tokens + 1),
                cost_usd: rng.unit() * 0.05,
                latency_ms: 100 + rng.below(2_000),
                status,
                ..Default::default()
            };
            if let Some(at) = event.occurred_at.as_mut() {
                at.seconds = HOUR_START + rng.below(3600) as i64;
                at.nanos = rng.below(1_000_000_000) as i32;
            }
            event
        })
        .collect();
    let mut keyed: Vec<(u64, String, UsageEvent)> = Vec::with_capacity(EVENTS * 11 / 10);
    for (i, e) in events.iter().enumerate() {
        let i = i as u64;
        keyed.push((i * 1000, e.request_id.clone(), e.clone()));
        if rng.below(100) < RESENT_PERCENT {
            let at = i * 1000 + 1 + rng.below((EVENTS as u64 - i) * 1000);
            keyed.push((at, format!("{}-resent", e.request_id), e.clone()));
        }
    }
    keyed.sort_by_key(|(at, ..)| *at);
    let messages = keyed.into_iter().map(|(_, id, e)| (id, e)).collect();
    (events, messages)
}

fn expected_sums(events: &[UsageEvent]) -> Sums {
    let mut sums = Sums::default();
    for e in events {
        sums.requests += 1;
        sums.input_tokens += e.input_tokens as i64;
        sums.output_tokens += e.output_tokens as i64;
        sums.cached_input_tokens += e.cached_input_tokens as i64;
        sums.cost_nanos += nanos(e.cost_usd);
        sums.errors += i64::from(!(200..300).contains(&e.status));
    }
    sums
}

async fn rollup_sums(ledger: &Ledger, granularity: &str) -> Result<Sums> {
    let mut sums = Sums::default();
    let rows = ledger
        .rollups(granularity, DAY_START * 1000, (DAY_START + 86_400) * 1000)
        .await?;
    for (_, _, row) in rows {
        sums.requests += row.requests;
        sums.input_tokens += row.input_tokens;
        sums.output_tokens += row.output_tokens;
        sums.cached_input_tokens += row.cached_input_tokens;
        sums.cost_nanos += row.cost_nanos;
        sums.errors += row.errors;
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

    seed_policy(&prefix, &nats_url).await?;
    // The test's own view of the ledger (this also creates its tables).
    let ledger = Ledger::connect(&database_url).await?;
    let (events, messages) = generate(0x5eed_a66e);
    let expected = expected_sums(&events);
    ensure!(messages.len() > EVENTS + EVENTS / 20, "a tenth sent twice");
    eprintln!(
        "generated {} events, {} messages in {:?}",
        events.len(),
        messages.len(),
        began.elapsed()
    );

    let (mut aggregator, _) = start_aggregator(&settings)?;

    let bus: Arc<dyn Bus> = Arc::new(JetStreamBus::connect(&nats_url, &prefix).await?);
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            futures::stream::iter(messages)
                .map(|(msg_id, event)| {
                    let bus = bus.clone();
                    async move {
                        bus.publish(USAGE, &msg_id, event.encode_to_vec().into())
                            .await
                            .with_context(|| format!("publishing {msg_id}"))
                    }
                })
                .buffer_unordered(500)
                .try_collect::<Vec<_>>()
                .await
                .map(|acks| {
                    (
                        acks.iter().filter(|a| a.duplicate).count(),
                        started.elapsed(),
                    )
                })
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
        queried.requests += row.requests as i64;
        queried.input_tokens += row.input_tokens as i64;
        queried.output_tokens += row.output_tokens as i64;
        queried.cached_input_tokens += row.cached_input_tokens as i64;
        queried.cost_nanos += nanos(row.cost_usd);
        queried.errors += row.errors as i64;
    }
    assert_eq!(queried, expected, "QueryUsage summed");

    assert!(
        bus.last(USAGE_DEAD_LETTER).await?.is_none(),
        "no event was dead-lettered"
    );
    eprintln!("done in {:?}", began.elapsed());
    Ok(())
}
