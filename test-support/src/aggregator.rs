//! An aggregator in-process for the tests (the aggregator's own, the binary's end-to-end ones):
//! a real control plane (policy comes from it over the bus, as in production), an aggregator
//! served on ephemeral ports, a usage event generator that knows what the ledger must add up
//! to, and a macro that runs a test on both backends (PostgreSQL + NATS JetStream, SQLite + the
//! in-process bus).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::Served;
pub use crate::on_both_backends;
use crate::roles::wait_for_policy;
pub use crate::roles::{
    ADMIN_TOKEN, AdminClient, Backend, Bearer, TestControlPlane, TestDatabase, eventually,
};
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tollgate_proto::usage::usage_service_client::UsageServiceClient;
use tollgate_proto::usage::{QueryUsageRequest, UsageEvent, UsageRow};
use tollgate_runtime::bus::{Bus, USAGE};
use tollgate_runtime::follow::{GrpcSnapshots, PolicyView, SnapshotSource};
use tollgate_usage_aggregator::ConsumerCounters;
use tollgate_usage_aggregator::alerts::AlertSinks;
use tollgate_usage_aggregator::config::DEFAULT_LINGER_MS;
use tollgate_usage_aggregator::entry::{RollupSums, nanos};
use tollgate_usage_aggregator::ledger::Ledger;
use tollgate_usage_aggregator::{Aggregator, AggregatorParts};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The HMAC key of the alert webhook.
pub const WEBHOOK_SECRET: &str = "aggregator-test-webhook-secret";

pub type UsageClient = UsageServiceClient<InterceptedService<Channel, Bearer>>;

/// An aggregator serving `UsageService` and the CSV export on ephemeral ports.
pub struct TestAggregator {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub ledger: Ledger,
    pub policy: Arc<PolicyView>,
    pub counters: Arc<ConsumerCounters>,
    served: Served,
}

impl TestAggregator {
    /// An aggregator on `database_url` and `bus`, bootstrapping policy from the control plane;
    /// it reads each batch as soon as there is one.
    pub async fn start(
        database_url: &str,
        bus: Arc<dyn Bus>,
        control_plane: &TestControlPlane,
        sinks: AlertSinks,
    ) -> Result<Self> {
        Self::start_lingering(database_url, bus, control_plane, sinks, Duration::ZERO).await
    }

    /// [`TestAggregator::start`], letting a batch gather for `linger` after a smaller one.
    pub async fn start_lingering(
        database_url: &str,
        bus: Arc<dyn Bus>,
        control_plane: &TestControlPlane,
        sinks: AlertSinks,
        linger: Duration,
    ) -> Result<Self> {
        let snapshots: Arc<dyn SnapshotSource> = Arc::new(
            GrpcSnapshots::new(&control_plane.url(), ADMIN_TOKEN).map_err(anyhow::Error::msg)?,
        );
        let aggregator = Aggregator::start(AggregatorParts {
            database_url: database_url.into(),
            bus,
            snapshots: Some(snapshots),
            admin_token: Some(ADMIN_TOKEN.into()),
            sinks,
            batch: 500,
            linger,
            keys: Default::default(),
        })
        .await?;
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let ledger = aggregator.ledger().clone();
        let policy = aggregator.policy().clone();
        let counters = aggregator.consumer_counters().clone();
        let served = Served::spawn("the aggregator", |shutdown| {
            aggregator.serve(grpc, http, shutdown)
        });
        let started = TestAggregator {
            grpc_addr,
            http_addr,
            ledger,
            policy,
            counters,
            served,
        };
        // Everything the control plane has committed so far is what the test set up.
        started
            .wait_for_sequence(control_plane.last_sequence().await?)
            .await?;
        Ok(started)
    }

    /// A `UsageService` client sending `token`.
    pub async fn usage(&self, token: &str) -> Result<UsageClient> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))?
            .connect()
            .await?;
        Ok(UsageServiceClient::with_interceptor(
            channel,
            Bearer(token.to_owned()),
        ))
    }

    pub fn http_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.http_addr)
    }

    /// Waits until this aggregator has applied policy up to `sequence`.
    pub async fn wait_for_sequence(&self, sequence: u64) -> Result<()> {
        let within = Duration::from_secs(20);
        wait_for_policy(&self.policy, sequence, within, "the aggregator").await
    }

    /// Waits until the ledger holds exactly `requests` requests (fails if it holds more).
    pub async fn wait_for_requests(&self, requests: i64, within: Duration) -> Result<()> {
        wait_for_ledger(&self.ledger, requests, within).await
    }

    /// Waits until the ledger holds as many requests as `events`, and checks that they are
    /// exactly those (`what`).
    pub async fn holds_exactly(&self, events: &[UsageEvent], what: &str) -> Result<()> {
        let requests = events.len() as i64;
        self.wait_for_requests(requests, Duration::from_secs(30))
            .await?;
        let totals = self.ledger.ledger_totals().await?;
        assert_eq!(totals, Sums::of(events).ledger_totals(), "{what}");
        Ok(())
    }

    /// Stops serving and the background work, as on SIGTERM.
    pub async fn stop(self) -> Result<()> {
        tokio::time::timeout(Duration::from_secs(30), self.served.stop())
            .await
            .context("the aggregator did not stop within 30 s")?
    }
}

/// A control plane on `backend` and the bus it publishes policy on.
pub async fn start_control_plane(backend: Backend) -> Result<(Arc<dyn Bus>, TestControlPlane)> {
    let bus = backend.bus().await?;
    let control_plane = TestControlPlane::start_with(backend.store().await?, bus.clone()).await?;
    Ok((bus, control_plane))
}

/// A fresh database on `backend` and an aggregator on it, without alert sinks, that follows
/// `control_plane` over `bus`; keep the database as long as the aggregator.
pub async fn start_aggregator(
    backend: Backend,
    bus: &Arc<dyn Bus>,
    control_plane: &TestControlPlane,
) -> Result<(TestDatabase, TestAggregator)> {
    let database = backend.database().await?;
    let aggregator = TestAggregator::start(
        &database.url,
        bus.clone(),
        control_plane,
        AlertSinks::default(),
    )
    .await?;
    Ok((database, aggregator))
}

/// A `QueryUsage` request over `[start, end)` in `granularity` buckets, grouped by `group_by`
/// and filtered on `filters`.
pub fn usage_request(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    granularity: &str,
    group_by: &[&str],
    filters: &[(&str, &str)],
) -> QueryUsageRequest {
    QueryUsageRequest {
        start: Some(tollgate_proto::convert::timestamp(start)),
        end: Some(tollgate_proto::convert::timestamp(end)),
        granularity: granularity.to_owned(),
        group_by: group_by.iter().map(|g| g.to_string()).collect(),
        filters: filters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The rows `QueryUsage` answers `request` with.
pub async fn query_rows(
    usage: &mut UsageClient,
    request: QueryUsageRequest,
) -> Result<Vec<UsageRow>> {
    Ok(usage.query_usage(request).await?.into_inner().rows)
}

/// Waits until `ledger` holds exactly `requests` requests (fails at once if it holds more).
pub async fn wait_for_ledger(ledger: &Ledger, requests: i64, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (recorded, ..) = ledger.ledger_totals().await?;
        if recorded > requests {
            bail!("the ledger holds {recorded} requests, more than the {requests} sent");
        }
        if recorded == requests {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the ledger holds {recorded} of {requests} requests after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small deterministic random source (SplitMix64), so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`, with all 53 bits of a double.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a>(&mut self, from: &'a [&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// A successful usage event as an edge publishes it; tests change the fields they care about.
pub fn usage_event(request_id: &str, at: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        schema_version: 1,
        request_id: request_id.to_owned(),
        occurred_at: Some(tollgate_proto::convert::timestamp(at)),
        key_id: "key-1".to_owned(),
        user_id: "user-1".to_owned(),
        team_id: "team-1".to_owned(),
        model: "gpt-4o".to_owned(),
        deployment_id: "dep-1".to_owned(),
        provider: "mock".to_owned(),
        region: "eu-west-1".to_owned(),
        edge_id: "edge-a".to_owned(),
        input_tokens: 100,
        output_tokens: 20,
        status: 200,
        latency_ms: 120,
        ttft_ms: 40,
        ..Default::default()
    }
}

/// The dimensions generated events take their values from.
pub struct Dimensions<'a> {
    pub teams: &'a [&'a str],
    pub models: &'a [&'a str],
    pub regions: &'a [&'a str],
    pub edges: &'a [&'a str],
}

/// `count` events with random tokens, costs (full double precision, so more than 6
/// decimals) and times in `[start, start + span)`; about 5 % failed with status 500.
pub fn generate(
    rng: &mut Rng,
    count: usize,
    start: DateTime<Utc>,
    span: chrono::Duration,
    dims: &Dimensions<'_>,
) -> Vec<UsageEvent> {
    let span_ms = span.num_milliseconds().max(1) as u64;
    let run = rng.next_u64();
    (0..count)
        .map(|i| {
            let at = start + chrono::Duration::milliseconds(rng.below(span_ms) as i64);
            let mut event = usage_event(&format!("req-{run:016x}-{i}"), at);
            event.team_id = rng.pick(dims.teams).to_owned();
            event.model = rng.pick(dims.models).to_owned();
            event.region = rng.pick(dims.regions).to_owned();
            event.edge_id = rng.pick(dims.edges).to_owned();
            event.key_id = format!("key-{}", event.team_id);
            event.user_id = format!("user-{}", event.team_id);
            event.deployment_id = format!("dep-{}", event.model);
            event.input_tokens = rng.below(20_000);
            event.output_tokens = rng.below(4_000);
            event.cached_input_tokens = rng.below(event.input_tokens + 1);
            event.cost_usd = rng.unit() * 0.25;
            event.latency_ms = 50 + rng.below(5_000);
            event.cache_hit = rng.below(10) == 0;
            event.stream = rng.below(2) == 0;
            if rng.below(20) == 0 {
                event.status = 500;
                event.error_code = "upstream_error".to_owned();
                event.output_tokens = 0;
            }
            event
        })
        .collect()
}

/// What the ledger must add up to for a set of distinct events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cost_nanos: i64,
    pub errors: i64,
}

impl Sums {
    pub fn add(&mut self, e: &UsageEvent) {
        self.requests += 1;
        self.input_tokens += e.input_tokens as i64;
        self.output_tokens += e.output_tokens as i64;
        self.cached_input_tokens += e.cached_input_tokens as i64;
        self.cost_nanos += nanos(e.cost_usd);
        self.errors += i64::from(!(200..300).contains(&e.status));
    }

    pub fn of<'a>(events: impl IntoIterator<Item = &'a UsageEvent>) -> Sums {
        let mut sums = Sums::default();
        for e in events {
            sums.add(e);
        }
        sums
    }

    /// As `Ledger::ledger_totals` reports them.
    pub fn ledger_totals(&self) -> (i64, i64, i64, i64, i64) {
        (
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cost_nanos,
        )
    }

    /// The sums of a `UsageService` row (cost converted back to nano-USD).
    pub fn of_row(row: &tollgate_proto::usage::UsageRow) -> Sums {
        Sums {
            requests: row.requests as i64,
            input_tokens: row.input_tokens as i64,
            output_tokens: row.output_tokens as i64,
            cached_input_tokens: row.cached_input_tokens as i64,
            cost_nanos: nanos(row.cost_usd),
            errors: row.errors as i64,
        }
    }

    /// The sums of a ledger rollup row.
    pub fn of_rollup(row: &RollupSums) -> Sums {
        Sums {
            requests: row.requests,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cached_input_tokens: row.cached_input_tokens,
            cost_nanos: row.cost_nanos,
            errors: row.errors,
        }
    }

    pub fn merge(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cost_nanos += other.cost_nanos;
        self.errors += other.errors;
    }
}

/// Sums of `events` grouped by `key`.
pub fn sums_by<K: Ord>(events: &[UsageEvent], key: impl Fn(&UsageEvent) -> K) -> BTreeMap<K, Sums> {
    let mut out: BTreeMap<K, Sums> = BTreeMap::new();
    for e in events {
        out.entry(key(e)).or_default().add(e);
    }
    out
}

/// Each event once with msg id = request id, as edges publish them, and `resent_percent` % of
/// them a second time under a different msg id (so the bus cannot drop the repeat; only the
/// ledger can), the repeats spread among the originals.
pub fn with_resends(
    rng: &mut Rng,
    events: &[UsageEvent],
    resent_percent: u64,
) -> Vec<(String, UsageEvent)> {
    let n = events.len() as u64;
    let mut keyed: Vec<(u64, String, UsageEvent)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let i = i as u64;
        keyed.push((i * 1000, e.request_id.clone(), e.clone()));
        if rng.below(100) < resent_percent {
            // Somewhere after its original: in the same batch or a later one.
            let at = i * 1000 + 1 + rng.below((n - i) * 1000);
            keyed.push((at, format!("{}-resent", e.request_id), e.clone()));
        }
    }
    keyed.sort_by_key(|(at, ..)| *at);
    keyed.into_iter().map(|(_, id, e)| (id, e)).collect()
}

/// Publishes `messages` to the USAGE topic, 500 in flight at a time; returns how many the bus
/// took for duplicates of earlier messages (by msg id).
pub async fn publish_usage(
    bus: &Arc<dyn Bus>,
    messages: Vec<(String, UsageEvent)>,
) -> Result<usize> {
    let acks = futures::stream::iter(messages)
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
        .await?;
    Ok(acks.iter().filter(|ack| ack.duplicate).count())
}

/// Publishes one event with msg id = request id and waits until the bus stored it.
pub async fn publish_one(bus: &Arc<dyn Bus>, event: &UsageEvent) -> Result<()> {
    bus.publish(USAGE, &event.request_id, event.encode_to_vec().into())
        .await?;
    Ok(())
}

/// An aggregator on a fresh PostgreSQL database, following the control plane at `cp_url` over
/// `bus` in batches of 100 gathered as in production (the budget bound must hold with the
/// default linger): its ledger, and the server, which runs as long as it is kept.
pub async fn serve_aggregator(bus: Arc<dyn Bus>, cp_url: &str) -> Result<(Ledger, Served)> {
    let database_url = crate::fresh_postgres_database().await?;
    let aggregator = Aggregator::start(AggregatorParts {
        database_url: database_url.into(),
        bus,
        snapshots: Some(Arc::new(
            GrpcSnapshots::new(cp_url, ADMIN_TOKEN).map_err(anyhow::Error::msg)?,
        )),
        admin_token: Some(ADMIN_TOKEN.into()),
        sinks: AlertSinks::default(),
        batch: 100,
        linger: std::time::Duration::from_millis(DEFAULT_LINGER_MS),
        keys: Default::default(),
    })
    .await?;
    let ledger = aggregator.ledger().clone();
    let (grpc, http) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    );
    let served = Served::spawn("the aggregator", |shutdown| {
        aggregator.serve(grpc, http, shutdown)
    });
    Ok((ledger, served))
}
