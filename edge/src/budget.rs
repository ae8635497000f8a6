//! Budget enforcement on the request path, without a network round trip: the aggregator's
//! published spend per budget period (refreshed in the background), plus this edge's own
//! in-flight reservations and not-yet-reported spend.
//!
//! Each live edge may use an equal share of what the aggregator reports as left. A request is
//! let through while this edge's unreported spend plus reservations is below its share, and
//! reserves its worst-case cost until it completes. So every edge overshoots its share by at
//! most one worst-case request, and the budget is overspent by at most one maximum-cost
//! request per edge (plus what arrives between two status refreshes of an edge that joins).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use prost::Message;
use tokio::sync::watch;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Budget, Scope, VirtualKey};
use tollgate_policy::period::period_bounds;
use tollgate_proto::convert::from_timestamp;
use tollgate_proto::usage::BudgetStatus;
use tollgate_runtime::bus::{Bus, KvEntry};
use tollgate_runtime::follow::PolicyView;
use tollgate_runtime::signing::{PublicKey, Purpose};

use crate::clock::Clock;
use crate::error::EdgeError;

/// How often the published budget status and the set of live edges are read.
const REFRESH: Duration = Duration::from_millis(200);
/// An edge that has not announced itself for this long no longer counts for shares.
const EDGE_EXPIRY_MS: i64 = 10_000;
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
    /// A revision of a status entry is checked, and a refusal counted, once: refreshes read
    /// every entry five times a second.
    checked: Mutex<Checked>,
}

/// What the last signature check of each status entry found.
#[derive(Default)]
struct Checked {
    /// The keys the entries were checked with; other keys start afresh.
    keys: Vec<PublicKey>,
    /// Per bus key: the entry's revision, and whether it was accepted.
    verdicts: HashMap<String, (u64, bool)>,
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

    /// Reads published statuses (checked against the status keys `policy` names) and live
    /// edges, and announces this edge, until `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        bus: Arc<dyn Bus>,
        policy: Arc<PolicyView>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            let keys = policy.current().map(|state| status_keys(&state));
            self.refresh(bus.as_ref(), keys.as_deref().unwrap_or_default())
                .await;
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn refresh(&self, bus: &dyn Bus, keys: &[PublicKey]) {
        let now_ms = Utc::now().timestamp_millis();
        let _ = bus
            .kv_put(
                &format!("edge.{}", self.edge_id),
                Bytes::from(now_ms.to_string()),
            )
            .await;
        if let Ok(edges) = bus.kv_scan("edge.").await {
            let live = edges
                .iter()
                .filter_map(|(_, e)| std::str::from_utf8(&e.value).ok()?.parse::<i64>().ok())
                .filter(|at| now_ms - at < EDGE_EXPIRY_MS)
                .count();
            self.live_edges.store(live.max(1), Ordering::Relaxed);
        }
        match bus.kv_scan("budget.").await {
            Ok(entries) => {
                let scanned = entries
                    .into_iter()
                    .filter(|(name, entry)| self.signed(keys, name, entry))
                    .filter_map(|(_, e)| BudgetStatus::decode(e.value).ok());
                let mut known = self.statuses.write().unwrap_or_else(|e| e.into_inner());
                merge(&mut known, scanned);
            }
            Err(e) => {
                tracing::debug!(error = %e, "budget status unavailable; using the last known")
            }
        }
    }

    /// Whether the status `entry` under `name` is signed by one of `keys` (any is, when policy
    /// names none).
    fn signed(&self, keys: &[PublicKey], name: &str, entry: &KvEntry) -> bool {
        if keys.is_empty() {
            return true;
        }
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.keys.as_slice() != keys {
            checked.keys = keys.to_vec();
            checked.verdicts.clear();
        }
        if let Some(&(revision, accepted)) = checked.verdicts.get(name)
            && revision == entry.revision
        {
            return accepted;
        }
        let accepted = keys
            .iter()
            .any(|key| key.check(Purpose::BudgetStatus, &entry.value).is_ok());
        checked
            .verdicts
            .insert(name.to_owned(), (entry.revision, accepted));
        if !accepted {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                key = name,
                "budget status refused: not signed by the status key policy names"
            );
        }
        accepted
    }
}

/// The budget status keys `state` names; one that does not parse is left out (the control
/// plane only commits keys it has parsed).
fn status_keys(state: &PolicyState) -> Vec<PublicKey> {
    state
        .status_keys
        .iter()
        .filter_map(|key| PublicKey::from_base64(key).ok())
        .collect()
}

impl Reservation {
    /// Replaces the worst case held by the request's actual cost.
    pub fn settle(self, actual: f64) {
        self.budgets.settle(&self.held, actual);
    }
}

/// Takes the statuses of a scan into the known ones. A budget missing from a scan keeps its
/// last known status: a JetStream key listing can miss a key that is being rewritten at that
/// moment (the aggregator rewrites them as it folds), and forgetting an exhausted budget's
/// status for one refresh would let every edge spend its whole share again. Statuses of
/// deleted budgets stay behind unused: which budgets apply comes from the policy. A status
/// computed before the known one is ignored, so an old one written back cannot lower spend.
fn merge(known: &mut HashMap<String, BudgetStatus>, scanned: impl Iterator<Item = BudgetStatus>) {
    let computed = |status: &BudgetStatus| {
        status
            .computed_at
            .as_ref()
            .map_or((i64::MIN, 0), |at| (at.seconds, at.nanos))
    };
    for status in scanned {
        if known
            .get(&status.budget_id)
            .is_some_and(|old| computed(old) > computed(&status))
        {
            continue;
        }
        known.insert(status.budget_id.clone(), status);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, spent_usd: f64) -> BudgetStatus {
        BudgetStatus {
            budget_id: id.to_owned(),
            spent_usd,
            ..Default::default()
        }
    }

    #[test]
    fn a_budget_missing_from_one_scan_keeps_its_last_known_status() {
        let mut known = HashMap::new();
        merge(&mut known, [status("a", 5.0), status("b", 1.0)].into_iter());
        merge(&mut known, [status("b", 2.0)].into_iter());
        assert_eq!(known.get("a").map(|s| s.spent_usd), Some(5.0));
        assert_eq!(known.get("b").map(|s| s.spent_usd), Some(2.0));
    }

    #[test]
    fn a_status_computed_before_the_known_one_is_ignored() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let mut known = HashMap::new();
        let newer = BudgetStatus {
            computed_at: at(200),
            ..status("a", 9.0)
        };
        let older = BudgetStatus {
            computed_at: at(100),
            ..status("a", 0.0)
        };
        merge(&mut known, [newer].into_iter());
        merge(&mut known, [older].into_iter());
        assert_eq!(known.get("a").map(|s| s.spent_usd), Some(9.0));
    }
}
