//! `PolicyView`: the state readers use, swapped or updated copy-on-write so a request holds
//! one consistent version without any lock across an `.await`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tollgate_policy::{PolicyState, RecordedEvent};

/// The edge's current policy, if it has loaded one.
pub struct PolicyView {
    state: RwLock<Option<Arc<PolicyState>>>,
    /// When the policy was last known to be current (an event applied or the stream checked).
    synced_at: RwLock<Option<Instant>>,
    applied: watch::Sender<u64>,
    resyncs: AtomicU64,
    refused: AtomicU64,
}

/// An event arrived out of order: the edge must resync.
#[derive(Debug, PartialEq, Eq)]
pub struct Gap {
    pub expected: u64,
    pub got: u64,
}

impl Default for PolicyView {
    fn default() -> Self {
        PolicyView {
            state: RwLock::new(None),
            synced_at: RwLock::new(None),
            applied: watch::channel(0).0,
            resyncs: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

impl PolicyView {
    /// The current policy, or `None` before the first load (the edge then serves nothing).
    pub fn current(&self) -> Option<Arc<PolicyState>> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The sequence of the last applied event (0 before the first load).
    pub fn sequence(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Follows the applied sequence (tests and metrics wait on it).
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// How long ago the policy was last known to be current.
    pub fn age(&self) -> Option<Duration> {
        self.synced_at
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .map(|at| at.elapsed())
    }

    /// How many times a gap or a refused message forced a resync.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// How many policy messages and snapshots were refused: unreadable, unsigned or forged.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(super) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that the policy is known to be current now.
    pub fn mark_synced(&self) {
        *self.synced_at.write().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Replaces the whole state (a snapshot or a rebuild from the stream).
    pub fn replace(&self, state: PolicyState) {
        let sequence = state.sequence;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(state));
        self.applied.send_replace(sequence);
        self.mark_synced();
    }

    /// Applies `events` in order, skipping those already applied; stops at a gap.
    pub fn apply(&self, events: &[RecordedEvent]) -> Result<(), Gap> {
        let mut current = self.current().map(|s| (*s).clone()).unwrap_or_default();
        let before = current.sequence;
        let mut gap = None;
        for event in events {
            if event.sequence <= current.sequence {
                continue;
            }
            if event.sequence != current.sequence + 1 {
                gap = Some(Gap {
                    expected: current.sequence + 1,
                    got: event.sequence,
                });
                break;
            }
            current.apply(event);
        }
        if current.sequence != before {
            self.replace(current);
        }
        gap.map_or(Ok(()), Err)
    }
}
