//! Several aggregator replicas share one durable consumer and one ledger, so their batches are
//! recorded concurrently. These tests drive the ledger the way the consumer does
//! (`Ledger::record` with `budgets::spend_keys` and `budgets::crossed`), from two replicas
//! (two connection pools) at once.

mod common;

use std::sync::Arc;

use anyhow::Result;
use chrono::{TimeZone, Utc};
use common::*;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Budget, Period, Scope};
use tollgate_usage_aggregator::budgets;
use tollgate_usage_aggregator::entry::Entry;
use tollgate_usage_aggregator::ledger::{Ledger, LedgerError};

const ROUNDS: usize = 50;

/// Records `entries` as the consumer does.
async fn record(ledger: Ledger, state: Arc<PolicyState>, entries: Vec<Entry>) -> Result<()> {
    let sinks = vec!["webhook".to_owned()];
    ledger
        .record(
            &entries,
            |e| budgets::spend_keys(&state, e),
            |k, before, after| budgets::crossed(&state, k, before, after),
            &sinks,
        )
        .await?;
    Ok(())
}

fn entry(request_id: &str, key: &str, team: &str, edge: &str, usd: f64) -> Result<Entry> {
    let at = Utc
        .with_ymd_and_hms(2025, 7, 1, 12, 0, 0)
        .single()
        .unwrap_or_default();
    let mut event = usage_event(request_id, at);
    event.key_id = key.to_owned();
    event.team_id = team.to_owned();
    event.edge_id = edge.to_owned();
    event.cost_usd = usd;
    Entry::from_event(event).map_err(anyhow::Error::msg)
}

/// Two replicas each record $0.30 on a $1 budget with a 50 % threshold at the same moment
/// (requests from different edges and teams): together they cross it, so exactly one alert
/// must be in the outbox, whichever commits last.
async fn two_replicas_recording_at_once_still_cross_a_threshold(backend: Backend) -> Result<()> {
    let database = backend.database().await?;
    let (a, b) = (
        Ledger::connect(&database.url).await?,
        Ledger::connect(&database.url).await?,
    );
    let mut state = PolicyState::default();
    for round in 0..ROUNDS {
        let id = format!("budget-{round}");
        state.budgets.insert(
            id.clone(),
            Budget {
                id,
                scope: Scope::Key,
                scope_id: format!("key-{round}"),
                amount_usd: 1.0,
                period: Period::Total,
                timezone: "UTC".to_owned(),
                thresholds: vec![50.0],
            },
        );
    }
    let state = Arc::new(state);
    for round in 0..ROUNDS {
        let key = format!("key-{round}");
        let from_a = entry(&format!("a-{round}"), &key, "team-a", "edge-a", 0.30)?;
        let from_b = entry(&format!("b-{round}"), &key, "team-b", "edge-b", 0.30)?;
        let (ra, rb) = tokio::join!(
            tokio::spawn(record(a.clone(), state.clone(), vec![from_a])),
            tokio::spawn(record(b.clone(), state.clone(), vec![from_b])),
        );
        ra??;
        rb??;
    }
    let due = a.due_alerts(i64::MAX).await?;
    let missed: Vec<usize> = (0..ROUNDS)
        .filter(|round| {
            !due.iter()
                .any(|alert| alert.budget_id == format!("budget-{round}"))
        })
        .collect();
    assert_eq!(
        a.ledger_totals().await?.4,
        ROUNDS as i64 * 600_000_000,
        "all spend recorded"
    );
    assert!(
        missed.is_empty(),
        "$0.60 of $1 crossed 50 % in every round, but {} of {ROUNDS} rounds have no alert \
         (each replica read only its own uncommitted spend): rounds {missed:?}",
        missed.len()
    );
    assert_eq!(due.len(), ROUNDS, "one alert per budget: {due:?}");
    Ok(())
}

/// Two replicas record batches over the same rollup rows at the same moment: both commit
/// (one may wait for the other), neither is aborted as a deadlock victim.
async fn two_replicas_writing_the_same_rollups_do_not_deadlock(backend: Backend) -> Result<()> {
    let database = backend.database().await?;
    let (a, b) = (
        Ledger::connect(&database.url).await?,
        Ledger::connect(&database.url).await?,
    );
    let state = Arc::new(PolicyState::default());
    let batch = |round: usize, side: &str| -> Result<Vec<Entry>> {
        (0..100)
            .map(|i| {
                let team = format!("team-{}", i % 50);
                entry(&format!("{round}-{side}-{i}"), "key", &team, "edge", 0.001)
            })
            .collect()
    };
    let mut failures: Vec<String> = Vec::new();
    for round in 0..10 {
        let (ra, rb) = tokio::join!(
            tokio::spawn(record(a.clone(), state.clone(), batch(round, "a")?)),
            tokio::spawn(record(b.clone(), state.clone(), batch(round, "b")?)),
        );
        for result in [ra?, rb?] {
            if let Err(e) = result {
                let deadlock = e
                    .downcast_ref::<LedgerError>()
                    .is_some_and(|e| e.to_string().contains("deadlock"));
                failures.push(format!("round {round}: {e} (deadlock: {deadlock})"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 20 concurrent batches failed (the consumer retries them, after a deadlock \
         timeout each): {failures:#?}",
        failures.len()
    );
    assert_eq!(a.ledger_totals().await?.0, 2_000);
    Ok(())
}

on_both_backends!(
    two_replicas_recording_at_once_still_cross_a_threshold,
    two_replicas_writing_the_same_rollups_do_not_deadlock,
);
