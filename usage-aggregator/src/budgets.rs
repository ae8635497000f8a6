//! Budgets on the aggregator's side: which budget periods a request's cost counts toward, when
//! a threshold is crossed, and the status published to the bus for edges.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message;
use serde_json::json;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Budget, Scope};
use tollgate_policy::period::period_bounds;
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::BudgetStatus;
use tollgate_runtime::bus::Bus;
use tollgate_runtime::signing::{PrivateKey, Purpose};

use crate::entry::{Entry, nanos};
use crate::ledger::{Ledger, LedgerError, NewAlert, SpendKey};

/// The bus key under which a budget's status is published.
pub fn status_key(budget_id: &str) -> String {
    format!("budget.{budget_id}")
}

fn applies(budget: &Budget, entry: &Entry) -> bool {
    let subject = match budget.scope {
        Scope::Key => &entry.key.key_id,
        Scope::User => &entry.key.user_id,
        Scope::Team => &entry.key.team_id,
        // The model that spent: a fallback's own budget, not the one asked for.
        Scope::Model => &entry.served_model,
        // Refused for budgets by the control plane.
        Scope::Tag => return false,
    };
    !subject.is_empty() && *subject == budget.scope_id
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The budget periods `entry`'s cost counts toward.
pub fn spend_keys(state: &PolicyState, entry: &Entry) -> Vec<SpendKey> {
    state
        .budgets
        .values()
        .filter(|b| entry.cost_nanos > 0 && applies(b, entry))
        .map(|b| SpendKey {
            budget_id: b.id.clone(),
            period_start_ms: period_bounds(b.period, &b.timezone, at_ms(entry.occurred_at_ms))
                .0
                .timestamp_millis(),
            edge_id: entry.edge_id.clone(),
        })
        .collect()
}

/// The alerts due when a budget period's spend goes from `before` to `after` nano-USD.
pub fn crossed(state: &PolicyState, key: &SpendKey, before: i64, after: i64) -> Vec<NewAlert> {
    let Some(budget) = state.budgets.get(&key.budget_id) else {
        return Vec::new();
    };
    let amount = nanos(budget.amount_usd);
    budget
        .thresholds
        .iter()
        .filter(|pct| {
            let limit = (amount as f64 * **pct / 100.0).round() as i64;
            before < limit && limit <= after
        })
        .map(|pct| {
            let (start, end) =
                period_bounds(budget.period, &budget.timezone, at_ms(key.period_start_ms));
            let payload = json!({
                "type": "budget.threshold_crossed",
                "budget_id": budget.id,
                "scope": budget.scope.as_str(),
                "scope_id": budget.scope_id,
                "threshold_pct": pct,
                "amount_usd": budget.amount_usd,
                "spent_usd": after as f64 / 1e9,
                "period": budget.period.as_str(),
                "period_start": start.to_rfc3339(),
                "period_end": end.map(|e| e.to_rfc3339()),
            });
            NewAlert {
                budget_id: budget.id.clone(),
                period_start_ms: key.period_start_ms,
                threshold_pct: *pct,
                payload: payload.to_string(),
            }
        })
        .collect()
}

/// The status of `budget` in the period containing `now`.
pub async fn status(
    ledger: &Ledger,
    budget: &Budget,
    now: DateTime<Utc>,
) -> Result<BudgetStatus, LedgerError> {
    let (start, end) = period_bounds(budget.period, &budget.timezone, now);
    let by_edge = ledger.spend(&budget.id, start.timestamp_millis()).await?;
    let spent: i64 = by_edge.values().sum();
    let spent_usd = spent as f64 / 1e9;
    Ok(BudgetStatus {
        budget_id: budget.id.clone(),
        scope: budget.scope.to_string(),
        scope_id: budget.scope_id.clone(),
        spent_usd,
        amount_usd: budget.amount_usd,
        period_start: Some(timestamp(start)),
        period_end: end.map(timestamp),
        exceeded: spent_usd >= budget.amount_usd,
        spent_by_edge_usd: by_edge
            .into_iter()
            .map(|(edge, n)| (edge, n as f64 / 1e9))
            .collect(),
        period: budget.period.to_string(),
        computed_at: Some(timestamp(now)),
        signature: Default::default(),
    })
}

/// Publishes the status of each budget in `ids` (all budgets when `None`), signed with `key`
/// when given.
pub async fn publish(
    ledger: &Ledger,
    bus: &dyn Bus,
    key: Option<&PrivateKey>,
    state: &PolicyState,
    ids: Option<&[String]>,
) -> Result<(), String> {
    let now = Utc::now();
    let budgets: Vec<&Budget> = match ids {
        Some(ids) => ids.iter().filter_map(|id| state.budgets.get(id)).collect(),
        None => state.budgets.values().collect(),
    };
    for budget in budgets {
        let status = status(ledger, budget, now)
            .await
            .map_err(|e| e.to_string())?;
        let mut encoded = status.encode_to_vec();
        if let Some(key) = key {
            encoded = key.seal(Purpose::BudgetStatus, encoded);
        }
        bus.kv_put(&status_key(&budget.id), Bytes::from(encoded))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
