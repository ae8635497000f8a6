//! Budgets end to end — edges, control plane and aggregator on PostgreSQL and NATS: an
//! exhausted budget is refused by every edge within a second and allowed again in the next
//! period or when raised; and concurrent spending on several edges overshoots by at most one
//! maximum-cost request per edge.

#[path = "../edge/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use prost::Message;
use serde_json::{Value, json};
use tollgate_proto::admin::Budget;
use tollgate_proto::bus::Bus;
use tollgate_proto::follow::GrpcSnapshots;
use tollgate_proto::usage::BudgetStatus;
use tollgate_usage_aggregator::alerts::AlertSinks;
use tollgate_usage_aggregator::{Aggregator, AggregatorParts};

/// Each answer has 10 output tokens at $5,000 per million: $0.05 a request, its maximum too.
const REQUEST_COST: f64 = 0.05;

struct World {
    cp: TestControlPlane,
    edges: Vec<TestEdge>,
    bus: Arc<dyn Bus>,
    key_id: String,
    secret: String,
    _stop_aggregator: tokio::sync::oneshot::Sender<()>,
    aggregator_ledger: tollgate_usage_aggregator::ledger::Ledger,
}

async fn world(edges: usize, budget_usd: f64, latency_ms: &str) -> Result<World> {
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::start(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(
        &mut admin,
        "mock",
        &[("output_tokens", "10"), ("latency_ms", latency_ms)],
    )
    .await?;
    admin
        .set_price(tollgate_proto::admin::Price {
            model: "mock".into(),
            output_per_mtok: 5000.0,
            ..Default::default()
        })
        .await?;
    let (key_id, secret) = create_key(&mut admin, &[]).await?;
    admin
        .set_budget(Budget {
            id: "key-daily".into(),
            scope: "key".into(),
            scope_id: key_id.clone(),
            amount_usd: budget_usd,
            period: "daily".into(),
            ..Default::default()
        })
        .await?;
    let sequence = last_sequence(&mut admin).await?;

    let database_url = tollgate_test_support::fresh_postgres_database().await?;
    let aggregator = Aggregator::start(AggregatorParts {
        database_url,
        bus: bus.clone(),
        snapshots: Some(Arc::new(
            GrpcSnapshots::new(&cp.url(), ADMIN_TOKEN).map_err(anyhow::Error::msg)?,
        )),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        sinks: AlertSinks::default(),
        batch: 100,
    })
    .await?;
    let aggregator_ledger = aggregator.ledger().clone();
    let (grpc, http) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aggregator.serve(grpc, http, async {
        let _ = stopped.await;
    }));

    let mut started = Vec::new();
    for _ in 0..edges {
        let edge = TestEdge::start(&nats, &prefix, bus.clone(), Some(cp.url())).await?;
        edge.wait_for_sequence(sequence).await?;
        started.push(edge);
    }
    // Shares are split between live edges: wait until every edge sees the others.
    for edge in &started {
        eventually(Duration::from_secs(5), || async {
            edge.budgets.live_edges() == edges
        })
        .await?;
    }
    Ok(World {
        cp,
        edges: started,
        bus,
        key_id,
        secret,
        _stop_aggregator: stop,
        aggregator_ledger,
    })
}

async fn call(http: &reqwest::Client, edge: &TestEdge, secret: &str) -> Result<(u16, Value)> {
    let body =
        json!({"model": "mock", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response = http
        .post(edge.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn status(bus: &dyn Bus) -> Result<Option<BudgetStatus>> {
    Ok(match bus.kv_get("budget.key-daily").await? {
        Some(entry) => Some(BudgetStatus::decode(entry.value)?),
        None => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_is_refused_everywhere_within_a_second_and_allowed_again_later()
-> Result<()> {
    let w = world(3, 0.2, "0").await?;
    let http = reqwest::Client::new();
    // Spend through the first edge until the aggregator reports the budget exhausted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exhausted_at = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the budget was never reported exhausted"
        );
        if status(w.bus.as_ref()).await?.is_some_and(|s| s.exceeded) {
            break Instant::now();
        }
        let _ = call(&http, &w.edges[0], &w.secret).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for edge in &w.edges {
        eventually(Duration::from_secs(1), || async {
            matches!(call(&http, edge, &w.secret).await, Ok((429, body)) if body["error"]["code"] == "budget_exceeded")
        })
        .await
        .context("an edge still serves an exhausted budget")?;
    }
    assert!(exhausted_at.elapsed() < Duration::from_secs(2));
    let (_, refusal) = call(&http, &w.edges[1], &w.secret).await?;
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("key-daily") && message.contains("resets at"),
        "{message}"
    );

    // The next day is a new period.
    for edge in &w.edges {
        edge.budgets.shift_clock(chrono::Duration::days(1));
        assert_eq!(
            call(&http, edge, &w.secret).await?.0,
            200,
            "a new period starts with nothing spent"
        );
        edge.budgets.shift_clock(chrono::Duration::days(-1));
    }
    // Raising the budget lets the key through today.
    let mut admin = w.cp.admin().await?;
    admin
        .set_budget(Budget {
            id: "key-daily".into(),
            scope: "key".into(),
            scope_id: w.key_id.clone(),
            amount_usd: 10.0,
            period: "daily".into(),
            ..Default::default()
        })
        .await?;
    let sequence = last_sequence(&mut admin).await?;
    for edge in &w.edges {
        edge.wait_for_sequence(sequence).await?;
        eventually(Duration::from_secs(3), || async {
            matches!(call(&http, edge, &w.secret).await, Ok((200, _)))
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spending_on_three_edges_overshoots_by_at_most_one_request_per_edge()
-> Result<()> {
    let w = world(3, 1.0, "300").await?;
    let http = reqwest::Client::new();
    let calls = (0..50).map(|i| {
        let (http, edge, secret) = (http.clone(), &w.edges[i % 3], w.secret.clone());
        async move { call(&http, edge, &secret).await.map(|(status, _)| status) }
    });
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // Every request, served or refused, yields a usage event: wait for all fifty.
    eventually(Duration::from_secs(15), || async {
        w.aggregator_ledger
            .ledger_totals()
            .await
            .is_ok_and(|t| t.0 >= 50)
    })
    .await?;
    let spent = w.aggregator_ledger.ledger_totals().await?.4 as f64 / 1e9;
    let bound = 1.0 + 3.0 * REQUEST_COST;
    println!("served {served} of 50, spent ${spent:.2} (bound ${bound:.2})");
    assert!(spent <= bound + 1e-9, "spent ${spent} > ${bound}");
    assert!(
        served >= 10,
        "most of the budget is usable: served {served}"
    );
    Ok(())
}
