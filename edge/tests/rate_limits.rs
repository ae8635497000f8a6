//! Rate limits through real edges on PostgreSQL and NATS JetStream: requests per minute held
//! across three edges within the documented bound, token and concurrency limits that refuse
//! at the limit and recover without touching other keys, schedules that open and close on
//! time in their time zone, an edge cut off from NATS that admits at most its share, and the
//! `x-ratelimit-*` / `retry-after` headers.

use tollgate_test_support::edge as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::TimeZone;
use common::*;
use futures::StreamExt;
use serde_json::json;
use tollgate_edge::clock::Clock;
use tollgate_edge::config::EdgeConfig;
use tollgate_proto::admin::{LimitSchedule, ListRateLimitsRequest, RateLimit};
use tollgate_runtime::bus::{Bus, JetStreamBus};
use tollgate_test_support::severable::Severable;

struct World {
    cluster: TestCluster,
    edges: Vec<TestEdge>,
    http: reqwest::Client,
}

/// A control plane with the `mock` model (and `slow`, 800 ms per answer), and `edges` edges
/// configured by `configure`.
async fn world(edges: usize, configure: impl Fn(&mut EdgeConfig)) -> Result<World> {
    let mut cluster = TestCluster::start().await?;
    mock_deployment(&mut cluster.admin, "mock", &[("output_tokens", "10")]).await?;
    mock_deployment(&mut cluster.admin, "slow", &[("latency_ms", "800")]).await?;
    let mut w = World {
        cluster,
        edges: Vec::new(),
        http: reqwest::Client::new(),
    };
    for _ in 0..edges {
        let bus = w.cluster.bus.clone();
        w.add_edge(bus, &configure).await?;
    }
    w.all_see_each_other().await?;
    Ok(w)
}

impl World {
    async fn add_edge(
        &mut self,
        bus: Arc<dyn Bus>,
        configure: &impl Fn(&mut EdgeConfig),
    ) -> Result<()> {
        let edge = self.cluster.edge_on(bus, configure).await?;
        self.edges.push(edge);
        Ok(())
    }

    /// Limits are shared between live edges: wait until every edge counts them all.
    async fn all_see_each_other(&self) -> Result<()> {
        let n = self.edges.len();
        for edge in &self.edges {
            eventually(Duration::from_secs(5), || async {
                edge.budgets.live_edges() == n
            })
            .await?;
        }
        Ok(())
    }

    /// Sets `limit` and waits until every edge has it.
    async fn limit(&mut self, limit: RateLimit) -> Result<()> {
        self.cluster.admin.set_rate_limit(limit).await?;
        self.cluster.sync_all(&self.edges).await
    }

    async fn key(&mut self) -> Result<(String, String)> {
        create_key(&mut self.cluster.admin, &[]).await
    }

    /// One chat request for `model` with `secret` to edge `i`.
    async fn ask(&self, i: usize, secret: &str, model: &str) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(self.edges[i].url("/v1/chat/completions"))
            .bearer_auth(secret)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await?)
    }
}

/// What a refusal must say: 429 `rate_limit_exceeded` with `retry-after` and the figures.
async fn assert_refused(response: reqwest::Response, what: &str) -> Result<()> {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = header(&response, "retry-after")
        .context("retry-after")?
        .parse()?;
    assert!(retry_after >= 1, "retry-after {retry_after}");
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(what), "{message}");
    Ok(())
}

/// The gap between a client's sequential requests in the single-edge tests.
const PACE: Duration = Duration::from_millis(20);

/// The gap that lets a lease of a limit of a few requests arrive between two of them, on a
/// busy machine.
const LEASE_PACE: Duration = Duration::from_millis(100);

/// The window the rpm tests count in, and a start well inside one.
const WINDOW: Duration = Duration::from_secs(30);

async fn at_the_start_of_a_window() {
    let into = chrono::Utc::now().timestamp_millis() as u64 % WINDOW.as_millis() as u64;
    if into > WINDOW.as_millis() as u64 / 2 {
        tokio::time::sleep(Duration::from_millis(
            WINDOW.as_millis() as u64 - into + 100,
        ))
        .await;
    }
}

/// The most a limit lets through in a window: the limit plus one lease chunk per edge.
fn documented_bound(limit: u64, edges: u64) -> u64 {
    limit + edges * limit.div_ceil(8 * edges).max(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_edges_hold_a_key_to_its_rpm_within_the_documented_bound() -> Result<()> {
    let mut w = world(3, |c| c.rate_limit_window = WINDOW).await?;
    let (key_id, secret) = w.key().await?;
    w.limit(RateLimit {
        rpm: 600,
        ..key_limit(&key_id)
    })
    .await?;
    at_the_start_of_a_window().await;
    let w = &w;
    /// What the test keeps of one answer.
    struct Answer {
        status: u16,
        limit: Option<String>,
        retry_after: Option<String>,
    }
    let answers: Vec<Result<Answer>> = futures::stream::iter(0..3000)
        .map(|i| {
            let secret = secret.clone();
            async move {
                let response = w.ask(i % 3, &secret, "mock").await?;
                Ok(Answer {
                    status: response.status().as_u16(),
                    limit: header(&response, "x-ratelimit-limit-requests").map(str::to_owned),
                    retry_after: header(&response, "retry-after").map(str::to_owned),
                })
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let mut accepted = 0;
    for answer in answers {
        let answer = answer?;
        assert_eq!(
            answer.limit.as_deref(),
            Some("600"),
            "every answer names the limit"
        );
        match answer.status {
            200 => accepted += 1,
            429 => assert!(answer.retry_after.is_some(), "a refusal says when to retry"),
            other => anyhow::bail!("unexpected HTTP {other}"),
        }
    }
    let bound = documented_bound(600, 3);
    eprintln!("accepted {accepted} of 3000 (limit 600, bound {bound})");
    assert!(
        (600..=bound).contains(&accepted),
        "{accepted} accepted; the limit is 600 and the bound {bound}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_concurrency_limits_refuse_at_the_limit_and_recover() -> Result<()> {
    let window = Duration::from_secs(1);
    let mut w = world(1, |c| c.rate_limit_window = window).await?;
    let (tokens_id, tokens_key) = w.key().await?;
    let (concurrent_id, concurrent_key) = w.key().await?;
    let (_, free_key) = w.key().await?;
    w.limit(RateLimit {
        tpm: 200,
        ..key_limit(&tokens_id)
    })
    .await?;
    w.limit(RateLimit {
        max_concurrent: 2,
        ..key_limit(&concurrent_id)
    })
    .await?;

    // Tokens: each answer uses some input and 10 output tokens; 200 run out within a window.
    let mut served = 0;
    let refusal = loop {
        // Paced, as a client is: a burst faster than a lease round trip may be refused early.
        tokio::time::sleep(PACE).await;
        let response = w.ask(0, &tokens_key, "mock").await?;
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit-tokens"), Some("200"));
        served += 1;
        anyhow::ensure!(served < 100, "the token limit never refused");
    };
    assert!(served >= 2, "{served} requests before the token limit");
    assert!(header(&refusal, "x-ratelimit-remaining-tokens").is_some());
    assert_refused(refusal, "tokens per minute").await?;
    let other = w.ask(0, &free_key, "mock").await?;
    assert_eq!(other.status(), 200, "another key is not limited");
    assert!(header(&other, "x-ratelimit-limit-tokens").is_none());
    eventually(Duration::from_secs(5), || async {
        w.ask(0, &tokens_key, "mock")
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .context("the token limit never recovered")?;

    // Concurrency: two slow requests (800 ms each) hold both places; a third, sent while they
    // run, is refused; once they end, a place is free again.
    let slow = |after_ms: u64| {
        let (w, key) = (&w, &concurrent_key);
        async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            w.ask(0, key, "slow").await
        }
    };
    let (first, second, third) = tokio::join!(slow(0), slow(50), slow(300));
    assert_eq!(
        (first?.status().as_u16(), second?.status().as_u16()),
        (200, 200)
    );
    assert_refused(third?, "concurrent requests").await?;
    let slow = || w.ask(0, &concurrent_key, "slow");
    let after = slow().await?;
    assert_eq!(after.status(), 200, "a place is free again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_opens_and_closes_on_time_in_its_time_zone() -> Result<()> {
    let now_ms = Arc::new(AtomicI64::new(0));
    let read = now_ms.clone();
    let clock = Clock::from_fn(move || {
        chrono::DateTime::from_timestamp_millis(read.load(Ordering::SeqCst)).unwrap_or_default()
    });
    let berlin = |day: u32, h: u32, m: u32| -> Result<i64> {
        Ok(chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, 12, day, h, m, 10)
            .single()
            .context("a Berlin time")?
            .timestamp_millis())
    };
    now_ms.store(berlin(2, 12, 0)?, Ordering::SeqCst);
    let mut w = world(1, |c| c.clock = clock.clone()).await?;
    let (key_id, secret) = w.key().await?;
    // The batch key gets 3 requests a minute at night instead of 1.
    w.limit(RateLimit {
        rpm: 1,
        schedules: vec![LimitSchedule {
            time_start: "20:00".into(),
            time_end: "06:00".into(),
            timezone: "Europe/Berlin".into(),
            rpm: 3,
            ..Default::default()
        }],
        ..key_limit(&key_id)
    })
    .await?;
    let accepted_of = |n: usize| {
        let (w, secret) = (&w, &secret);
        async move {
            let mut accepted = 0;
            for _ in 0..n {
                tokio::time::sleep(PACE).await;
                if w.ask(0, secret, "mock").await?.status() == 200 {
                    accepted += 1;
                }
            }
            anyhow::Ok(accepted)
        }
    };
    for (day, hour, minute, expected, when) in [
        (2, 19, 58, 1, "before the window opens"),
        (2, 20, 0, 3, "as the window opens at 20:00 Berlin"),
        (3, 5, 58, 3, "late in the window, past midnight"),
        (3, 6, 0, 1, "as the window closes at 06:00 Berlin"),
    ] {
        now_ms.store(berlin(day, hour, minute)?, Ordering::SeqCst);
        assert_eq!(accepted_of(expected + 2).await?, expected, "{when}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_raised_mid_window_admits_again_at_once() -> Result<()> {
    // The clock stands still: every request counts in one window.
    let frozen = chrono::Utc::now();
    let mut w = world(1, |c| c.clock = Clock::from_fn(move || frozen)).await?;
    let (key_id, secret) = w.key().await?;
    w.limit(RateLimit {
        rpm: 1,
        ..key_limit(&key_id)
    })
    .await?;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(LEASE_PACE).await;
        statuses.push(w.ask(0, &secret, "mock").await?.status().as_u16());
    }
    assert_eq!(statuses[0], 200);
    assert_eq!(statuses[3], 429, "the limit of 1 was used up: {statuses:?}");

    let listed = w
        .cluster
        .admin
        .list_rate_limits(ListRateLimitsRequest::default())
        .await?;
    let id = listed.into_inner().rate_limits[0].id.clone();
    w.limit(RateLimit {
        id,
        rpm: 100,
        ..key_limit(&key_id)
    })
    .await?;
    assert_eq!(
        w.ask(0, &secret, "mock").await?.status(),
        200,
        "the raised limit has room in the same window"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cut_off_from_nats_admits_at_most_its_share() -> Result<()> {
    let mut w = world(2, |c| c.rate_limit_window = WINDOW).await?;
    // The third edge reaches NATS through a connection the test can cut, and its clock stands
    // still: everything it admits counts in one window, however slow the machine.
    let target = w.cluster.nats.trim_start_matches("nats://").to_owned();
    let proxy = Severable::start(&target).await?;
    let through = format!("nats://{}", proxy.addr());
    let bus: Arc<dyn Bus> = Arc::new(JetStreamBus::connect(&through, &w.cluster.prefix).await?);
    let frozen = chrono::Utc::now();
    w.add_edge(bus, &|c: &mut EdgeConfig| {
        c.rate_limit_window = WINDOW;
        c.clock = Clock::from_fn(move || frozen);
    })
    .await?;
    w.all_see_each_other().await?;
    let (key_id, secret) = w.key().await?;
    w.limit(RateLimit {
        rpm: 600,
        ..key_limit(&key_id)
    })
    .await?;
    proxy.sever();

    let cut_off = 2;
    let send = |n: usize| {
        let (w, secret) = (&w, &secret);
        async move {
            let statuses: Vec<u16> = futures::stream::iter(0..n)
                .map(|_| async move {
                    w.ask(cut_off, secret, "mock")
                        .await
                        .map_or(0, |r| r.status().as_u16())
                })
                .buffer_unordered(8)
                .collect()
                .await;
            statuses.iter().filter(|s| **s == 200).count()
        }
    };
    // It admits one lease chunk on credit (25), finds it cannot take a lease (the bus times
    // out after 5 s), and from then on falls back to its share: 600 / 3 = 200.
    let credit = 600_usize.div_ceil(8 * 3);
    let mut accepted = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while accepted <= credit {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the cut-off edge never fell back to its share: {accepted} accepted"
        );
        accepted += send(20).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    accepted += send(600).await;
    eprintln!("the cut-off edge accepted {accepted} (share 200)");
    assert!(
        accepted <= 200,
        "{accepted} accepted by the cut-off edge; its share is 200"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_at_its_rpm_gets_no_more_and_routing_moves_on() -> Result<()> {
    // One window throughout, however long the test takes.
    let frozen = chrono::Utc::now();
    let mut w = world(1, |c| c.clock = Clock::from_fn(move || frozen)).await?;
    let deployment = |model: &str, rpm: u64, priority: u32| tollgate_proto::admin::Deployment {
        model_name: model.into(),
        provider: "mock".into(),
        rpm,
        priority,
        ..Default::default()
    };
    // The preferred deployment takes 5 requests a minute; the other has no cap.
    let capped = w
        .cluster
        .admin
        .upsert_deployment(deployment("chat", 5, 0))
        .await?
        .into_inner();
    let spare = w
        .cluster
        .admin
        .upsert_deployment(deployment("chat", 0, 1))
        .await?
        .into_inner();
    w.cluster
        .admin
        .upsert_deployment(deployment("only-capped", 2, 0))
        .await?;
    w.cluster.sync(&w.edges[0]).await?;
    let (_, secret) = w.key().await?;

    let mut served_by = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(LEASE_PACE).await;
        let response = w.ask(0, &secret, "chat").await?;
        assert_eq!(response.status(), 200);
        served_by.push(
            header(&response, "x-tollgate-deployment")
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let on = |id: &str| served_by.iter().filter(|d| *d == id).count();
    assert_eq!(
        (on(&capped.id), on(&spare.id)),
        (5, 3),
        "the capped deployment got its 5, the rest went on: {served_by:?}"
    );

    // A model whose only deployment is full is refused as rate limited.
    for _ in 0..2 {
        tokio::time::sleep(LEASE_PACE).await;
        assert_eq!(w.ask(0, &secret, "only-capped").await?.status(), 200);
    }
    tokio::time::sleep(LEASE_PACE).await;
    assert_refused(w.ask(0, &secret, "only-capped").await?, "every deployment").await?;
    Ok(())
}
