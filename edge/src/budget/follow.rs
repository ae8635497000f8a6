//! Following the published budget statuses and the live edges, off the request path.
//!
//! Each edge watches the statuses (`budget.<id>` in the shared-state bucket) rather than reading
//! them all on a timer: one consumer on the server for the edge's life, which hears only what
//! changes. A status counts only when signed by a key policy names (any, when it names none);
//! the latest entry of each is kept, so that a status refused under old keys is checked again
//! when policy names new ones, without being written again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use prost::Message;
use tokio::sync::watch;
use tollgate_policy::PolicyState;
use tollgate_proto::usage::BudgetStatus;
use tollgate_runtime::bus::{Bus, KvEntry};
use tollgate_runtime::follow::PolicyView;
use tollgate_runtime::signing::{PublicKey, Purpose};

use super::Budgets;

/// How often this edge announces itself and reads the set of live edges, and how long it
/// waits before watching budget statuses again after the watch failed.
const REFRESH: Duration = Duration::from_millis(200);
/// An edge that has not announced itself for this long no longer counts for shares.
const EDGE_EXPIRY_MS: i64 = 10_000;
/// The shared-state keys budget statuses are published under.
const STATUS_PREFIX: &str = "budget.";

/// What the last signature check of each status entry found.
#[derive(Default)]
pub(super) struct Checked {
    /// The keys the entries were checked with; other keys start afresh.
    keys: Vec<PublicKey>,
    /// Per bus key: the entry's revision, and whether it was accepted.
    verdicts: HashMap<String, (u64, bool)>,
}

impl Budgets {
    /// Follows published statuses (checked against the status keys `policy` names) and live
    /// edges, and announces this edge, until `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        bus: Arc<dyn Bus>,
        policy: Arc<PolicyView>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let watcher = tokio::spawn(self.clone().watch_statuses(
            bus.clone(),
            policy.clone(),
            shutdown.clone(),
        ));
        let mut keys_checked = None;
        while !*shutdown.borrow() {
            self.announce(bus.as_ref()).await;
            let keys = policy.current().map(|state| status_keys(&state));
            if keys != keys_checked {
                // Statuses refused under the old keys may be signed by a new one.
                self.check_watched(keys.as_deref().unwrap_or_default());
                keys_checked = keys;
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.changed() => {}
            }
        }
        let _ = watcher.await;
    }

    /// Announces this edge and counts the live ones.
    async fn announce(&self, bus: &dyn Bus) {
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
    }

    /// Takes each status as it is published. A watch that fails (the bus lost) is started
    /// again after [`REFRESH`]; meanwhile the last known statuses stand.
    async fn watch_statuses(
        self: Arc<Self>,
        bus: Arc<dyn Bus>,
        policy: Arc<PolicyView>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            match bus.kv_watch(STATUS_PREFIX).await {
                Ok(mut statuses) => loop {
                    tokio::select! {
                        change = statuses.next() => match change {
                            Some(Ok((name, entry))) => self.take_status(&policy, name, entry),
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "budget status watch failed; using the last known");
                                break;
                            }
                            None => break,
                        },
                        _ = shutdown.changed() => return,
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "budget status unavailable; using the last known")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Keeps the status `entry` under `name`, and takes it if it is signed as the policy says.
    fn take_status(&self, policy: &PolicyView, name: String, entry: KvEntry) {
        let keys = policy.current().map(|state| status_keys(&state));
        let keys = keys.as_deref().unwrap_or_default();
        let mut watched = self.watched();
        self.absorb(keys, [(&name, &entry)].into_iter());
        watched.insert(name, entry);
    }

    /// Checks every status the watch delivered against `keys` again.
    fn check_watched(&self, keys: &[PublicKey]) {
        let watched = self.watched();
        self.absorb(keys, watched.iter());
    }

    /// Takes the statuses of `entries` that are signed by one of `keys`.
    fn absorb<'a>(
        &self,
        keys: &[PublicKey],
        entries: impl Iterator<Item = (&'a String, &'a KvEntry)>,
    ) {
        // Checked and decoded before the write lock: requests read the statuses meanwhile.
        let signed: Vec<BudgetStatus> = entries
            .filter(|(name, entry)| self.signed(keys, name, entry))
            .filter_map(|(_, e)| BudgetStatus::decode(e.value.clone()).ok())
            .collect();
        let mut known = self.statuses.write().unwrap_or_else(|e| e.into_inner());
        merge(&mut known, signed.into_iter());
    }

    fn watched(&self) -> MutexGuard<'_, HashMap<String, KvEntry>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
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

/// Takes newly delivered statuses into the known ones; a budget not among them keeps its last
/// known status. Statuses of deleted budgets stay behind unused: which budgets apply comes
/// from the policy. A status computed before the known one is ignored, so an old one written
/// back (or delivered again when the watch restarts) cannot lower spend.
fn merge(known: &mut HashMap<String, BudgetStatus>, delivered: impl Iterator<Item = BudgetStatus>) {
    let computed = |status: &BudgetStatus| {
        status
            .computed_at
            .as_ref()
            .map_or((i64::MIN, 0), |at| (at.seconds, at.nanos))
    };
    for status in delivered {
        if known
            .get(&status.budget_id)
            .is_some_and(|old| computed(old) > computed(&status))
        {
            continue;
        }
        known.insert(status.budget_id.clone(), status);
    }
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
    fn a_budget_not_delivered_again_keeps_its_last_known_status() {
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
