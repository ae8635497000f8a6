//! Several aggregator replicas share one durable consumer and one ledger. Two real aggregators
//! consume one USAGE stream here, so their batches are recorded concurrently, through the
//! consumer loop itself: every event is counted once, a threshold crossed by spend that two
//! replicas record is alerted exactly once, and writes over the same rollup rows never fail
//! as deadlock victims.

use tollgate_test_support::aggregator as common;

use std::time::Duration;

use anyhow::Result;
use chrono::{TimeZone, Utc};
use common::*;
use tollgate_proto::usage::UsageEvent;
use tollgate_usage_aggregator::alerts::AlertSinks;

/// Team budgets of $1, each crossed by two $0.30 requests from different edges.
const BUDGETS: usize = 20;
/// Small requests over 50 teams between them, so both replicas write the same rollup rows.
const BULK: usize = 2_000;

fn event(request_id: &str, key: &str, team: &str, edge: &str, usd: f64) -> UsageEvent {
    let at = Utc
        .with_ymd_and_hms(2025, 7, 1, 12, 0, 0)
        .single()
        .unwrap_or_default();
    let mut event = usage_event(request_id, at);
    event.key_id = key.to_owned();
    event.team_id = team.to_owned();
    event.edge_id = edge.to_owned();
    event.cost_usd = usd;
    event
}

async fn two_aggregators_on_one_consumer_count_once_and_alert_once(backend: Backend) -> Result<()> {
    let bus = backend.bus().await?;
    let control_plane = TestControlPlane::start_with(backend.store().await?, bus.clone()).await?;
    let mut teams = Vec::new();
    let mut budget_ids = Vec::new();
    for round in 0..BUDGETS {
        let team = control_plane.team(&format!("replicas-{round}")).await?;
        budget_ids.push(
            control_plane
                .budget("team", &team, 1.0, "total", &[50.0])
                .await?,
        );
        teams.push(team);
    }
    // Alerts stay in the outbox (nothing listens on port 9), where they can be counted.
    let sinks = || AlertSinks {
        webhook_url: Some("http://127.0.0.1:9/alerts".into()),
        webhook_secret: Some("replica-test".into()),
        ..Default::default()
    };
    let database = backend.database().await?;
    let a = TestAggregator::start(&database.url, bus.clone(), &control_plane, sinks()).await?;
    let b = TestAggregator::start(&database.url, bus.clone(), &control_plane, sinks()).await?;

    // Each budget's two requests far apart in the stream, so that different batches (and
    // mostly different replicas) record them.
    let bulk = |side: &str| -> Vec<UsageEvent> {
        (0..BULK / 2)
            .map(|i| {
                let team = format!("team-{}", i % 50);
                event(
                    &format!("bulk-{side}-{i}"),
                    "key-bulk",
                    &team,
                    "edge-c",
                    0.001,
                )
            })
            .collect()
    };
    let mut events: Vec<UsageEvent> = Vec::new();
    events.extend(
        teams
            .iter()
            .map(|t| event(&format!("{t}-a"), "key-a", t, "edge-a", 0.30)),
    );
    events.extend(bulk("x"));
    events.extend(
        teams
            .iter()
            .map(|t| event(&format!("{t}-b"), "key-b", t, "edge-b", 0.30)),
    );
    events.extend(bulk("y"));
    let total = events.len() as i64;
    publish_usage(
        &bus,
        events
            .into_iter()
            .map(|e| (e.request_id.clone(), e))
            .collect(),
    )
    .await?;

    a.wait_for_requests(total, Duration::from_secs(60)).await?;
    let (totals, due) = (
        a.ledger.ledger_totals().await?,
        a.ledger.due_alerts(i64::MAX).await?,
    );
    assert_eq!(totals.0, total, "every event once");
    assert_eq!(
        totals.4,
        BUDGETS as i64 * 600_000_000 + BULK as i64 * 1_000_000,
        "all spend recorded once"
    );
    let (recorded_a, failed_a, _, _) = a.counters.read();
    let (recorded_b, failed_b, _, _) = b.counters.read();
    assert_eq!(
        recorded_a + recorded_b,
        total as u64,
        "the replicas recorded {recorded_a} + {recorded_b} events"
    );
    assert!(
        recorded_a > 0 && recorded_b > 0,
        "both replicas take part: {recorded_a} and {recorded_b} events"
    );
    assert_eq!(
        (failed_a, failed_b),
        (0, 0),
        "no batch write failed (a deadlock victim would be retried and counted here)"
    );
    for id in &budget_ids {
        let alerts = due.iter().filter(|alert| &alert.budget_id == id);
        assert_eq!(
            alerts.count(),
            1,
            "$0.60 of $1 crossed 50 % of {id}: exactly one alert, whichever replica \
             committed last: {due:?}"
        );
    }
    assert_eq!(due.len(), BUDGETS, "one alert per budget: {due:?}");
    a.stop().await?;
    b.stop().await?;
    control_plane.stop().await?;
    Ok(())
}

on_both_backends!(two_aggregators_on_one_consumer_count_once_and_alert_once);
