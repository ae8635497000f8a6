//! Budgets end to end — edges, control plane and aggregator on PostgreSQL and NATS: an
//! exhausted budget is refused by every edge (with `budget_exceeded`) soon after the aggregator
//! reports it, and allowed again in the next period or when raised; concurrent spending on
//! several edges overshoots by at most one maximum-cost request per edge; and a request's
//! worst-case reservation is released down to its actual cost.

use tollgate_test_support::edge as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use prost::Message;
use serde_json::{Value, json};
use tollgate_edge::clock::Clock;
use tollgate_proto::admin::Budget;
use tollgate_proto::usage::BudgetStatus;
use tollgate_runtime::bus::Bus;
use tollgate_test_support::aggregator::serve_aggregator;

/// Each answer has 10 output tokens at $5,000 per million: $0.05 a request.
const REQUEST_COST: f64 = 0.05;
/// The `max_tokens` that makes a request's worst case its actual cost ($0.05).
const EXACT_MAX_TOKENS: u32 = 10;
/// How long after the aggregator reports a budget exhausted every edge must refuse it: edges
/// read budget status every 200 ms; the rest is margin for a loaded two-core machine.
const REFUSAL_WITHIN: Duration = Duration::from_secs(2);

struct World {
    cp: TestControlPlane,
    /// Added to the wall clock of every edge, to move them into another budget period.
    clock_offset_ms: Arc<AtomicI64>,
    edges: Vec<TestEdge>,
    bus: Arc<dyn Bus>,
    key_id: String,
    secret: String,
    _aggregator: tollgate_test_support::Served,
    aggregator_ledger: tollgate_usage_aggregator::ledger::Ledger,
}

async fn world(edges: usize, budget_usd: f64, latency_ms: &str) -> Result<World> {
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
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

    let (aggregator_ledger, served) = serve_aggregator(bus.clone(), &cp.url()).await?;

    let clock_offset_ms = Arc::new(AtomicI64::new(0));
    let offset = clock_offset_ms.clone();
    let clock = Clock::from_fn(move || {
        chrono::Utc::now() + chrono::Duration::milliseconds(offset.load(Ordering::SeqCst))
    });
    let mut started = Vec::new();
    for _ in 0..edges {
        let mut config = TestEdge::config(&nats, &prefix);
        config.clock = clock.clone();
        let edge = TestEdge::start_with(config, bus.clone(), Some(cp.url())).await?;
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
        clock_offset_ms,
        edges: started,
        bus,
        key_id,
        secret,
        _aggregator: served,
        aggregator_ledger,
    })
}

async fn call(
    http: &reqwest::Client,
    edge: &TestEdge,
    secret: &str,
    max_tokens: u32,
) -> Result<(u16, Value)> {
    let body = json!({"model": "mock", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = http
        .post(edge.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Whether `answer` is the budget refusal.
fn is_budget_refusal((status, body): &(u16, Value)) -> bool {
    *status == 429 && body["error"]["code"] == "budget_exceeded"
}

async fn status(bus: &dyn Bus) -> Result<Option<BudgetStatus>> {
    Ok(match bus.kv_get("budget.key-daily").await? {
        Some(entry) => Some(BudgetStatus::decode(entry.value)?),
        None => None,
    })
}

/// Prices `model`'s output at `usd_per_mtok` and waits until the edge has the price.
async fn set_output_price(
    w: &World,
    admin: &mut AdminClient,
    model: &str,
    usd_per_mtok: f64,
) -> Result<()> {
    admin
        .set_price(tollgate_proto::admin::Price {
            model: model.into(),
            output_per_mtok: usd_per_mtok,
            ..Default::default()
        })
        .await?;
    w.edges[0]
        .wait_for_sequence(last_sequence(admin).await?)
        .await
}

/// The ledger's (requests, spend in USD).
async fn ledger(w: &World) -> Result<(i64, f64)> {
    let totals = w.aggregator_ledger.ledger_totals().await?;
    Ok((totals.0, totals.4 as f64 / 1e9))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_is_refused_by_every_edge_soon_after_and_allowed_again_later()
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
        let answer = call(&http, &w.edges[0], &w.secret, EXACT_MAX_TOKENS).await?;
        assert!(answer.0 == 200 || is_budget_refusal(&answer), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (i, edge) in w.edges.iter().enumerate() {
        eventually(REFUSAL_WITHIN, || async {
            call(&http, edge, &w.secret, EXACT_MAX_TOKENS)
                .await
                .is_ok_and(|answer| is_budget_refusal(&answer))
        })
        .await
        .with_context(|| {
            format!(
                "edge {i} still serves a budget reported exhausted {:?} ago",
                exhausted_at.elapsed()
            )
        })?;
        println!(
            "edge {i} refuses {:?} after the exhaustion was reported (bound {REFUSAL_WITHIN:?})",
            exhausted_at.elapsed()
        );
    }
    let (_, refusal) = call(&http, &w.edges[1], &w.secret, EXACT_MAX_TOKENS).await?;
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("key-daily") && message.contains("resets at"),
        "{message}"
    );

    // The next day is a new period for every edge.
    w.clock_offset_ms.store(
        chrono::Duration::days(1).num_milliseconds(),
        Ordering::SeqCst,
    );
    for edge in &w.edges {
        let (status, body) = call(&http, edge, &w.secret, EXACT_MAX_TOKENS).await?;
        assert_eq!(
            status, 200,
            "a new period starts with nothing spent: {body}"
        );
    }
    w.clock_offset_ms.store(0, Ordering::SeqCst);
    for edge in &w.edges {
        let answer = call(&http, edge, &w.secret, EXACT_MAX_TOKENS).await?;
        assert!(
            is_budget_refusal(&answer),
            "today is still spent: {answer:?}"
        );
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
        eventually(REFUSAL_WITHIN, || async {
            matches!(
                call(&http, edge, &w.secret, EXACT_MAX_TOKENS).await,
                Ok((200, _))
            )
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
        async move { call(&http, edge, &secret, EXACT_MAX_TOKENS).await }
    });
    let answers: Vec<(u16, Value)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    for answer in &answers {
        assert!(
            answer.0 == 200 || is_budget_refusal(answer),
            "neither served nor refused for the budget: {answer:?}"
        );
    }
    // Every request, served or refused, yields a usage event: wait for all fifty.
    eventually(Duration::from_secs(15), || async {
        ledger(&w).await.is_ok_and(|(requests, _)| requests >= 50)
    })
    .await?;
    let (requests, spent) = ledger(&w).await?;
    assert_eq!(requests, 50, "one usage event per request");
    // Served requests are charged their cost, refused ones nothing.
    assert!(
        (spent - served as f64 * REQUEST_COST).abs() < 1e-9,
        "spent ${spent} for {served} served requests"
    );
    // The README's bound: at most one maximum-cost request per edge over the budget...
    let bound = 1.0 + 3.0 * REQUEST_COST;
    println!("served {served} of 50: spent ${spent:.2} of $1 (bound ${bound:.2})");
    assert!(spent <= bound + 1e-9, "spent ${spent} > ${bound}");
    // ...and the budget itself is usable to the last cent.
    assert!(spent >= 1.0 - 1e-9, "only ${spent} of $1 could be spent");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worst_case_reservation_is_released_down_to_the_actual_cost() -> Result<()> {
    // max_tokens 200 makes each request's worst case $1.00, the whole budget; each costs $0.05.
    let w = world(1, 1.0, "0").await?;
    let http = reqwest::Client::new();
    let mut served = 0;
    loop {
        let answer = call(&http, &w.edges[0], &w.secret, 200).await?;
        if is_budget_refusal(&answer) {
            break;
        }
        assert_eq!(answer.0, 200, "{answer:?}");
        served += 1;
        anyhow::ensure!(served <= 40, "the budget never ran out");
    }
    // Held at the worst case, the second request would have been refused; charged at the
    // worst case, the first would have spent the budget.
    assert_eq!(served, 20, "$1 buys exactly twenty $0.05 requests");
    eventually(Duration::from_secs(15), || async {
        ledger(&w).await.is_ok_and(|(requests, _)| requests == 21)
    })
    .await?;
    let (_, spent) = ledger(&w).await?;
    assert!((spent - 1.0).abs() < 1e-9, "spent ${spent}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpriced_model_is_refused_where_a_budget_applies_until_it_has_a_price() -> Result<()> {
    let w = world(1, 1.0, "0").await?;
    let mut admin = w.cp.admin().await?;
    mock_deployment(&mut admin, "unpriced", &[("output_tokens", "10")]).await?;
    w.edges[0]
        .wait_for_sequence(last_sequence(&mut admin).await?)
        .await?;
    let http = reqwest::Client::new();
    let ask = json!({"model": "unpriced", "messages": [{"role": "user", "content": "hi"}]});
    let send = || {
        http.post(w.edges[0].url("/v1/chat/completions"))
            .bearer_auth(&w.secret)
            .json(&ask)
            .send()
    };
    let response = send().await?;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no price") && message.contains("key-daily"),
        "{message}"
    );

    set_output_price(&w, &mut admin, "unpriced", 1.0).await?;
    let response = send().await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_model_spends_its_own_budget_and_is_skipped_once_that_is_spent() -> Result<()> {
    let w = world(1, 100.0, "0").await?;
    let mut admin = w.cp.admin().await?;
    mock_deployment(&mut admin, "broken", &[("fail_status", "500")]).await?;
    admin
        .set_routing_rule(tollgate_proto::admin::RoutingRule {
            model_name: "broken".into(),
            fallbacks: vec!["mock".into()],
            max_retries: 0,
            ..Default::default()
        })
        .await?;
    for (id, model, amount_usd) in [
        ("mock-model", "mock", 0.10),
        ("broken-model", "broken", 1.0),
    ] {
        admin
            .set_budget(Budget {
                id: id.into(),
                scope: "model".into(),
                scope_id: model.into(),
                amount_usd,
                period: "daily".into(),
                ..Default::default()
            })
            .await?;
    }
    set_output_price(&w, &mut admin, "broken", 1.0).await?;
    let http = reqwest::Client::new();
    let ask = json!({"model": "broken", "max_tokens": EXACT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "hi"}]});
    let send = || {
        http.post(w.edges[0].url("/v1/chat/completions"))
            .bearer_auth(&w.secret)
            .json(&ask)
            .send()
    };
    // $0.10 of "mock" buys two $0.05 answers through the fallback.
    for _ in 0..2 {
        let response = send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-tollgate-fallback"], "mock");
    }
    // The fallback's budget is spent: the third request is not moved to it and gets the
    // requested model's own failure.
    let response = send().await?;
    assert_eq!(response.status(), 502, "{:?}", response.text().await?);
    assert!(!response.headers().contains_key("x-tollgate-fallback"));

    // The aggregator counts the spend toward the model that served it.
    let spent = |id: &'static str| {
        let bus = w.bus.clone();
        async move {
            Ok::<_, anyhow::Error>(match bus.kv_get(&format!("budget.{id}")).await? {
                Some(entry) => BudgetStatus::decode(entry.value)?.spent_usd,
                None => 0.0,
            })
        }
    };
    eventually(Duration::from_secs(15), || async {
        spent("mock-model")
            .await
            .is_ok_and(|usd| (usd - 0.10).abs() < 1e-9)
    })
    .await
    .context("the fallback's budget never showed its spend")?;
    eventually(Duration::from_secs(15), || async {
        ledger(&w).await.is_ok_and(|(requests, _)| requests == 3)
    })
    .await?;
    assert_eq!(
        spent("broken-model").await?,
        0.0,
        "nothing was spent on \"broken\""
    );
    Ok(())
}
