//! Budget status on the bus (`budget.<id>`), where edges read it to enforce budgets, and the
//! same figures from `GetBudgetStatus`.

use tollgate_test_support::aggregator as common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{Datelike, TimeZone, Utc};
use common::*;
use prost::Message;
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::{BudgetStatus, GetBudgetStatusRequest, GetBudgetStatusResponse};
use tollgate_runtime::bus::Bus;
use tollgate_usage_aggregator::entry::nanos;

async fn published(bus: &Arc<dyn Bus>, budget_id: &str) -> Option<BudgetStatus> {
    let entry = bus.kv_get(&format!("budget.{budget_id}")).await.ok()??;
    BudgetStatus::decode(entry.value).ok()
}

/// Waits until the published status of `budget_id` reports `spent_nanos`.
async fn wait_for_spend(
    bus: &Arc<dyn Bus>,
    budget_id: &str,
    spent_nanos: i64,
) -> Result<BudgetStatus> {
    eventually(Duration::from_secs(20), || async {
        published(bus, budget_id)
            .await
            .is_some_and(|s| nanos(s.spent_usd) == spent_nanos)
    })
    .await
    .with_context(|| format!("budget.{budget_id} reports {spent_nanos} nano-USD spent"))?;
    published(bus, budget_id)
        .await
        .context("the status is still there")
}

/// What `GetBudgetStatus` answers for the budgets on `scope` `scope_id`.
async fn budget_status(
    usage: &mut UsageClient,
    scope: &str,
    scope_id: &str,
) -> Result<GetBudgetStatusResponse, tonic::Status> {
    let request = GetBudgetStatusRequest {
        scope: scope.to_owned(),
        scope_id: scope_id.to_owned(),
    };
    Ok(usage.get_budget_status(request).await?.into_inner())
}

fn by_edge(status: &BudgetStatus) -> BTreeMap<String, i64> {
    status
        .spent_by_edge_usd
        .iter()
        .map(|(edge, usd)| (edge.clone(), nanos(*usd)))
        .collect()
}

async fn budget_status_is_published_for_edges(backend: Backend) -> Result<()> {
    let (bus, control_plane) = start_control_plane(backend).await?;
    let team = control_plane.team("spenders").await?;
    let team_budget = control_plane
        .budget("team", &team, 1.0, "monthly", &[])
        .await?;
    let model_budget = control_plane
        .budget("model", "gpt-4o", 10.0, "total", &[])
        .await?;
    let (_database, aggregator) = start_aggregator(backend, &bus, &control_plane).await?;

    // A new budget is published without waiting for traffic.
    let idle = wait_for_spend(&bus, &team_budget, 0).await?;
    assert!(!idle.exceeded, "{idle:?}");

    let now = Utc::now();
    let spend = |id: &str, edge: &str, usd: f64| {
        let mut event = usage_event(id, now);
        event.team_id = team.clone();
        event.model = "gpt-4o".to_owned();
        event.edge_id = edge.to_owned();
        event.cost_usd = usd;
        event
    };
    publish_one(&bus, &spend("status-1", "edge-a", 0.25)).await?;
    publish_one(&bus, &spend("status-2", "edge-b", 0.15)).await?;
    // Another team's spend does not count.
    let mut other = spend("status-3", "edge-a", 0.5);
    other.team_id = "someone-else".to_owned();
    other.model = "claude-sonnet".to_owned();
    publish_one(&bus, &other).await?;

    let status = wait_for_spend(&bus, &team_budget, 400_000_000).await?;
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .context("the first of this month")?;
    let next_month = if now.month() == 12 {
        Utc.with_ymd_and_hms(now.year() + 1, 1, 1, 0, 0, 0)
    } else {
        Utc.with_ymd_and_hms(now.year(), now.month() + 1, 1, 0, 0, 0)
    }
    .single()
    .context("the first of next month")?;
    assert_eq!(status.budget_id, team_budget);
    assert_eq!(status.scope, "team");
    assert_eq!(status.scope_id, team);
    assert_eq!(status.amount_usd, 1.0);
    assert_eq!(status.period, "monthly");
    assert_eq!(status.period_start, Some(timestamp(month_start)));
    assert_eq!(status.period_end, Some(timestamp(next_month)));
    assert!(!status.exceeded, "$0.40 of $1 is not exceeded: {status:?}");
    assert_eq!(
        by_edge(&status),
        BTreeMap::from([
            ("edge-a".to_owned(), 250_000_000),
            ("edge-b".to_owned(), 150_000_000)
        ]),
        "spend by edge"
    );

    let mut usage = aggregator.usage(ADMIN_TOKEN).await?;
    let grpc = budget_status(&mut usage, "team", &team).await?;
    assert_eq!(nanos(grpc.spent_usd), 400_000_000);
    assert_eq!(grpc.amount_usd, 1.0);
    assert!(!grpc.exceeded);
    assert_eq!(grpc.period_start, status.period_start);
    assert_eq!(grpc.period_end, status.period_end);

    // Spend reaches the amount: exceeded.
    publish_one(&bus, &spend("status-4", "edge-a", 0.60)).await?;
    let status = wait_for_spend(&bus, &team_budget, 1_000_000_000).await?;
    assert!(status.exceeded, "$1.00 of $1 is exceeded: {status:?}");
    let grpc = budget_status(&mut usage, "team", &team).await?;
    assert_eq!(nanos(grpc.spent_usd), 1_000_000_000);
    assert!(grpc.exceeded, "{grpc:?}");
    assert_eq!(grpc.budgets.len(), 1, "{grpc:?}");

    // The model budget counts the same requests (not the other team's other model).
    let model = wait_for_spend(&bus, &model_budget, 1_000_000_000).await?;
    assert!(!model.exceeded, "{model:?}");
    assert_eq!(model.period, "total");
    assert_eq!(model.period_end, None, "a total budget has no end");
    let grpc = budget_status(&mut usage, "model", "gpt-4o").await?;
    assert_eq!(nanos(grpc.spent_usd), 1_000_000_000);
    assert!(!grpc.exceeded);

    // No budget on a scope: NOT_FOUND.
    let missing = budget_status(&mut usage, "team", "no-such-team")
        .await
        .err()
        .context("no budget there")?;
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    aggregator.stop().await?;
    control_plane.stop().await?;
    Ok(())
}

on_both_backends!(budget_status_is_published_for_edges);
