//! Budget enforcement on the request path, without a network round trip: the aggregator's
//! published spend per budget period (watched in the background: `follow`), plus this edge's own
//! in-flight reservations and not-yet-reported spend.
//!
//! Each live edge may use an equal share of what the aggregator reports as left. A request is
//! let through while this edge's unreported spend plus reservations is below its share, and
//! reserves its worst-case cost until it completes. So every edge overshoots its share by at
//! most one worst-case request, and the budget is overspent by at most one maximum-cost
//! request per edge (plus what arrives between two status refreshes of an edge that joins).

mod follow;

use follow::Checked;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tollgate_policy::PolicyState;
use tollgate_policy::model::{Budget, Scope, VirtualKey};
use tollgate_policy::period::period_bounds;
use tollgate_proto::convert::from_timestamp;
use tollgate_proto::usage::BudgetStatus;
use tollgate_runtime::bus::KvEntry;

use crate::clock::Clock;
use crate::error::EdgeError;

/// The ledger's unit, a nano-dollar: spend within it of a limit has reached the limit, so that
/// rounding in a sum of charges (twenty $0.05 requests add up to 0.99999… or 1.00000…2) never
/// decides whether one more request is let through.
const USD_EPSILON: f64 = 1e-9;

/// This edge's spend in one budget period.
#[derive(Clone, Copy, Debug, Default)]
struct Local {
    /// Worst-case cost of requests in flight.
    reserved: f64,
    /// Actual cost of completed requests, all of this period.
    settled: f64,
}

/// Budget state as this edge knows it.
pub struct Budgets {
    edge_id: String,
    statuses: RwLock<HashMap<String, BudgetStatus>>,
    local: Mutex<HashMap<(String, i64), Local>>,
    live_edges: AtomicUsize,
    /// What "now" is when a budget's period is judged.
    clock: Clock,
    /// Statuses refused for a missing or wrong signature.
    refused: AtomicU64,
    /// A revision of a status entry is checked, and a refusal counted, once, until the policy
    /// names other status keys.
    checked: Mutex<Checked>,
    /// The latest entry of each status the watch delivered, signed or not: checked again when
    /// the policy names other status keys.
    watched: Mutex<HashMap<String, KvEntry>>,
}

/// Worst-case cost held against budgets while a request runs; settled with the actual cost.
pub struct Reservation {
    budgets: Arc<Budgets>,
    held: Vec<Held>,
}

/// A budget period (budget id, period start in ms) and the worst case held in it.
struct Held {
    period: (String, i64),
    worst_case: f64,
}

impl Budgets {
    /// Budget state for the edge `edge_id`, judging periods by `clock`.
    pub fn new(edge_id: &str, clock: Clock) -> Arc<Self> {
        Arc::new(Budgets {
            edge_id: edge_id.to_owned(),
            statuses: RwLock::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            live_edges: AtomicUsize::new(1),
            clock,
            refused: AtomicU64::new(0),
            checked: Mutex::new(Checked::default()),
            watched: Mutex::new(HashMap::new()),
        })
    }

    /// How many budget statuses were refused for a missing or wrong signature.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many edges (this one included) currently share each budget.
    pub fn live_edges(&self) -> usize {
        self.live_edges.load(Ordering::Relaxed)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request of `worst_case` USD for `key` on `model`, or says which budget is spent.
    /// An unpriced model (`priced` false) is refused wherever a budget applies: it would spend
    /// without anything being counted.
    pub fn reserve(
        self: &Arc<Self>,
        state: &PolicyState,
        key: &VirtualKey,
        model: &str,
        priced: bool,
        worst_case: f64,
    ) -> Result<Reservation, EdgeError> {
        let applicable: Vec<&Budget> = state
            .budgets
            .values()
            .filter(|b| applies(b, key, model))
            .collect();
        let held = self.hold(&applicable, model, priced, worst_case)?;
        Ok(Reservation {
            budgets: self.clone(),
            held,
        })
    }

    /// Adds to `reservation` the budgets scoped to `model`, a fallback the request moves to
    /// (the key's, user's and team's budgets are held already), or says which one is spent.
    pub fn reserve_fallback(
        &self,
        state: &PolicyState,
        reservation: &mut Reservation,
        model: &str,
        priced: bool,
        worst_case: f64,
    ) -> Result<(), EdgeError> {
        let applicable: Vec<&Budget> = state
            .budgets
            .values()
            .filter(|b| b.scope == Scope::Model && b.scope_id == model)
            .filter(|b| !reservation.held.iter().any(|h| h.period.0 == b.id))
            .collect();
        let held = self.hold(&applicable, model, priced, worst_case)?;
        reservation.held.extend(held);
        Ok(())
    }

    /// Reserves `worst_case` in the current period of every budget of `applicable`, or none
    /// of them when one is spent.
    fn hold(
        &self,
        applicable: &[&Budget],
        model: &str,
        priced: bool,
        worst_case: f64,
    ) -> Result<Vec<Held>, EdgeError> {
        if applicable.is_empty() {
            return Ok(Vec::new());
        }
        if !priced {
            return Err(EdgeError::Unpriced {
                model: model.to_owned(),
                budget_id: applicable[0].id.clone(),
            });
        }
        let now = self.clock.now();
        let statuses = self.statuses.read().unwrap_or_else(|e| e.into_inner());
        let edges = self.live_edges.load(Ordering::Relaxed).max(1) as f64;
        let mut local = self.local();
        let mut held = Vec::with_capacity(applicable.len());
        for budget in applicable {
            let (start, end) = period_bounds(budget.period, &budget.timezone, now);
            let period = (budget.id.clone(), start.timestamp_millis());
            let status = statuses
                .get(&budget.id)
                .filter(|s| s.period_start.as_ref().and_then(from_timestamp) == Some(start));
            let reported = status.map_or(0.0, |s| s.spent_usd);
            let reported_mine = status
                .and_then(|s| s.spent_by_edge_usd.get(&self.edge_id).copied())
                .unwrap_or(0.0);
            let mine = local.get(&period).copied().unwrap_or_default();
            let unreported = (mine.settled - reported_mine).max(0.0);
            let share = (budget.amount_usd - reported) / edges;
            if reported >= budget.amount_usd - USD_EPSILON
                || unreported + mine.reserved >= share - USD_EPSILON
            {
                return Err(EdgeError::BudgetExceeded {
                    budget_id: budget.id.clone(),
                    scope: budget.scope.to_string(),
                    scope_id: budget.scope_id.clone(),
                    amount_usd: budget.amount_usd,
                    resets_at: end,
                });
            }
            held.push(Held { period, worst_case });
        }
        for h in &held {
            // Looked up before it is made: `entry` would copy the key on every request.
            let spend = match local.get_mut(&h.period) {
                Some(spend) => spend,
                None => local.entry(h.period.clone()).or_default(),
            };
            spend.reserved += h.worst_case;
        }
        Ok(held)
    }

    fn settle(&self, held: &[Held], actual: f64) {
        let mut local = self.local();
        for h in held {
            let entry = match local.get_mut(&h.period) {
                Some(entry) => entry,
                None => local.entry(h.period.clone()).or_default(),
            };
            entry.reserved = (entry.reserved - h.worst_case).max(0.0);
            entry.settled += actual;
        }
    }
}

impl Reservation {
    /// Replaces the worst case held by the request's actual cost.
    pub fn settle(self, actual: f64) {
        self.budgets.settle(&self.held, actual);
    }
}

fn applies(budget: &Budget, key: &VirtualKey, model: &str) -> bool {
    let subject = match budget.scope {
        Scope::Key => Some(key.id.as_str()),
        Scope::User => key.user_id.as_deref(),
        Scope::Team => key.team_id.as_deref(),
        Scope::Model => Some(model),
        // Refused for budgets by the control plane.
        Scope::Tag => None,
    };
    subject == Some(budget.scope_id.as_str())
}
