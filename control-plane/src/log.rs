//! `PolicyLog`: the live policy state and the only way to change it. A command is decided
//! against the state caught up with the store, appended with optimistic concurrency on the
//! whole log, and folded into the live state with the same `apply` the edges run.

use std::sync::{Arc, RwLock};

use chrono::Utc;
use tokio::sync::{Mutex, watch};
use tollgate_policy::{Command, PolicyState, RecordedEvent, decide};
use uuid::Uuid;

use crate::error::ControlError;
use crate::store::{self, EventStore, NewEvent, StoreError};

/// How many times a command is decided again after losing a race with another writer.
const MAX_ATTEMPTS: usize = 8;
/// A snapshot is stored each time the log passes a multiple of this many events.
const SNAPSHOT_EVERY: u64 = 500;

/// The policy state and the writer of the log.
pub struct PolicyLog {
    store: Arc<dyn EventStore>,
    state: RwLock<Arc<PolicyState>>,
    /// One command at a time per process; other processes are fenced by the store.
    writer: Mutex<()>,
    /// The last committed sequence known here, for the relay and watchers.
    committed: watch::Sender<u64>,
}

impl PolicyLog {
    /// Loads the state from the latest snapshot plus the events after it.
    pub async fn open(store: Arc<dyn EventStore>) -> Result<Self, StoreError> {
        let state = store::load_state(store.as_ref()).await?;
        let committed = watch::channel(state.sequence).0;
        Ok(PolicyLog {
            store,
            state: RwLock::new(Arc::new(state)),
            writer: Mutex::new(()),
            committed,
        })
    }

    /// The event store behind this log.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The current state (cheap: shares the state until the next change).
    pub fn state(&self) -> Arc<PolicyState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Follows the last committed sequence.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Validates `command` as `actor` and appends its events; returns them as committed (empty
    /// when the command asked for what already is).
    pub async fn execute(
        &self,
        actor: &str,
        command: Command,
    ) -> Result<Vec<RecordedEvent>, ControlError> {
        let _writer = self.writer.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            self.catch_up().await?;
            let state = self.state();
            let now = Utc::now();
            let events = decide(&state, command.clone(), now)?;
            if events.is_empty() {
                return Ok(vec![]);
            }
            let mut versions = std::collections::BTreeMap::new();
            let new_events = events
                .into_iter()
                .map(|event| {
                    let aggregate_id = event.aggregate_id();
                    let version = versions
                        .entry(aggregate_id.clone())
                        .and_modify(|v| *v += 1)
                        .or_insert_with(|| state.next_version(&aggregate_id));
                    NewEvent {
                        id: Uuid::now_v7(),
                        aggregate_id,
                        version: *version,
                        actor: actor.to_owned(),
                        occurred_at: now,
                        event,
                    }
                })
                .collect();
            match self.store.append(Some(state.sequence), new_events).await {
                Ok(recorded) => {
                    self.fold(&recorded);
                    self.snapshot_if_due(state.sequence).await;
                    return Ok(recorded);
                }
                Err(StoreError::Conflict(reason)) => {
                    tracing::debug!(%reason, "lost a race for the log; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControlError::Contended)
    }

    /// Applies events committed by other writers since the state's sequence.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        loop {
            let after = self.state().sequence;
            let events = self.store.read_after(after, store::READ_BATCH).await?;
            if events.is_empty() {
                return Ok(());
            }
            self.fold(&events);
        }
    }

    fn fold(&self, events: &[RecordedEvent]) {
        let last = {
            let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
            let state = Arc::make_mut(&mut guard);
            for event in events {
                // A concurrent catch-up may have applied it already.
                if event.sequence == state.sequence + 1 {
                    state.apply(event);
                }
            }
            state.sequence
        };
        self.committed.send_if_modified(|seen| {
            let newer = last > *seen;
            *seen = (*seen).max(last);
            newer
        });
    }

    async fn snapshot_if_due(&self, before: u64) {
        let state = self.state();
        if state.sequence / SNAPSHOT_EVERY == before / SNAPSHOT_EVERY {
            return;
        }
        // A missing snapshot only makes the next start slower; never fail the command for it.
        if let Err(e) = self.store.save_snapshot(&state).await {
            tracing::warn!(error = %e, sequence = state.sequence, "could not store a snapshot");
        }
    }
}
