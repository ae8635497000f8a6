//! Budget threshold alerts reach the webhook signed, once per threshold and period, even when
//! the aggregator restarts and usage is delivered again.

use tollgate_test_support::aggregator as common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use common::*;
use tollgate_usage_aggregator::alerts::{AlertSinks, sign};

/// One call the webhook received.
#[derive(Clone, Debug)]
struct Call {
    alert_id: String,
    signature_valid: bool,
    payload: serde_json::Value,
}

impl Call {
    fn threshold(&self) -> f64 {
        self.payload["threshold_pct"].as_f64().unwrap_or(-1.0)
    }
}

type Calls = Arc<Mutex<Vec<Call>>>;

async fn receive(State(calls): State<Calls>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let expected = format!("sha256={}", sign(WEBHOOK_SECRET, body.as_bytes()));
    let call = Call {
        alert_id: header("x-tollgate-alert-id"),
        signature_valid: header("x-tollgate-signature") == expected,
        payload: serde_json::from_str(&body).unwrap_or_default(),
    };
    let status = if call.signature_valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    calls.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    status
}

/// A webhook receiver on an ephemeral port; returns its URL and what it received.
async fn webhook() -> Result<(String, Calls)> {
    let calls: Calls = Arc::default();
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((url, calls))
}

fn received(calls: &Calls) -> Vec<Call> {
    calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn count(calls: &Calls, threshold: f64) -> usize {
    received(calls)
        .iter()
        .filter(|c| c.threshold() == threshold)
        .count()
}

async fn a_threshold_crossing_calls_the_webhook_exactly_once_even_across_a_restart(
    backend: Backend,
) -> Result<()> {
    let bus = backend.bus().await?;
    let control_plane = TestControlPlane::start_with(backend.store().await?, bus.clone()).await?;
    let team = control_plane.team("alerted").await?;
    let budget = control_plane
        .budget("team", &team, 1.0, "total", &[50.0, 80.0])
        .await?;
    let (url, calls) = webhook().await?;
    let sinks = AlertSinks {
        webhook_url: Some(url.into()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Default::default()
    };
    let database = backend.database().await?;
    let aggregator =
        TestAggregator::start(&database.url, bus.clone(), &control_plane, sinks.clone()).await?;

    let spend = |n: usize| {
        let mut event = usage_event(&format!("alert-req-{n}"), Utc::now());
        event.team_id = team.clone();
        event.cost_usd = 0.30;
        event
    };

    // $0.30 of $1: below every threshold.
    publish_one(&bus, &spend(1)).await?;
    aggregator
        .wait_for_requests(1, Duration::from_secs(20))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(received(&calls).is_empty(), "no alert at 30 %");

    // $0.60: past 50 %.
    publish_one(&bus, &spend(2)).await?;
    eventually(Duration::from_secs(20), || async {
        count(&calls, 50.0) >= 1
    })
    .await
    .context("the 50 % alert reaches the webhook")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = received(&calls);
    assert_eq!(first.len(), 1, "exactly one call at 60 %: {first:?}");
    let call = &first[0];
    assert!(call.signature_valid, "the signature verifies: {call:?}");
    assert_eq!(call.payload["budget_id"], budget.as_str());
    assert_eq!(call.payload["scope"], "team");
    assert_eq!(call.payload["scope_id"], team.as_str());
    assert_eq!(call.payload["amount_usd"], 1.0);
    assert!(
        call.alert_id.starts_with(&budget),
        "the alert id names the budget: {call:?}"
    );

    // The aggregator stops; another starts on the same ledger and bus.
    aggregator.stop().await?;
    let aggregator =
        TestAggregator::start(&database.url, bus.clone(), &control_plane, sinks).await?;

    // The second request again, under another msg id: already counted, no alert.
    let again = spend(2);
    bus.publish(
        tollgate_runtime::bus::USAGE,
        "alert-req-2-again",
        prost::Message::encode_to_vec(&again).into(),
    )
    .await?;
    // $0.90: past 80 %.
    publish_one(&bus, &spend(3)).await?;
    eventually(Duration::from_secs(20), || async {
        count(&calls, 80.0) >= 1
    })
    .await
    .context("the 80 % alert reaches the webhook after the restart")?;
    aggregator
        .wait_for_requests(3, Duration::from_secs(20))
        .await?;
    // Long enough for any repeat (the outbox is polled four times a second).
    tokio::time::sleep(Duration::from_secs(4)).await;

    let all = received(&calls);
    assert_eq!(count(&calls, 50.0), 1, "one call for 50 %: {all:?}");
    assert_eq!(count(&calls, 80.0), 1, "one call for 80 %: {all:?}");
    assert_eq!(all.len(), 2, "no other calls: {all:?}");
    assert!(
        all.iter().all(|c| c.signature_valid),
        "every signature verifies: {all:?}"
    );
    let eighty = all
        .iter()
        .find(|c| c.threshold() == 80.0)
        .context("the 80 % call")?;
    assert_eq!(
        tollgate_usage_aggregator::entry::nanos(
            eighty.payload["spent_usd"].as_f64().unwrap_or_default()
        ),
        900_000_000,
        "the 80 % alert reports $0.90 spent: {eighty:?}"
    );
    assert_eq!(aggregator.ledger.ledger_totals().await?.4, 900_000_000);

    aggregator.stop().await?;
    control_plane.stop().await?;
    Ok(())
}

on_both_backends!(a_threshold_crossing_calls_the_webhook_exactly_once_even_across_a_restart);
