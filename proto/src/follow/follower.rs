//! Keeps a `PolicyView` current: load a snapshot (or rebuild from the stream when the control
//! plane is unreachable), then apply the POLICY stream in order; on a gap, resync.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::{Bus, BusMessage, POLICY, POLICY_HEAD};
use crate::convert::event_from_proto;
use crate::policy::PolicyEvent;
use futures::{FutureExt, StreamExt};
use prost::Message;
use tokio::sync::watch;
use tollgate_policy::{PolicyState, RecordedEvent};

use super::snapshot::SnapshotSource;
use super::view::{Gap, PolicyView};

/// How often the edge reads the relay's announcement (the relay makes one every second).
const HEARTBEAT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Events applied per state copy when many are waiting.
const BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("bus: {0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("no snapshot and the policy stream is empty")]
    NothingToLoad,
    #[error("out of order: expected event {expected}, got {got}")]
    Gap { expected: u64, got: u64 },
    #[error("subscription ended")]
    Ended,
}

impl From<Gap> for FollowError {
    fn from(gap: Gap) -> Self {
        FollowError::Gap {
            expected: gap.expected,
            got: gap.got,
        }
    }
}

/// Follows policy until `shutdown` flips to true.
pub async fn run(
    view: Arc<PolicyView>,
    snapshots: Option<Arc<dyn SnapshotSource>>,
    bus: Arc<dyn Bus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let heartbeat = tokio::spawn(heartbeat(view.clone(), bus.clone(), shutdown.clone()));
    let mut resync = true;
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let result = tokio::select! {
            r = follow_once(&view, snapshots.as_deref(), bus.as_ref(), resync) => r,
            _ = shutdown.changed() => break,
        };
        let error = match result {
            Ok(()) => continue,
            Err(e) => e,
        };
        resync = matches!(error, FollowError::Gap { .. } | FollowError::NothingToLoad);
        if let FollowError::Gap { .. } = error {
            view.count_resync();
            tracing::warn!(%error, "policy stream gap; resyncing");
            continue;
        }
        tracing::warn!(%error, retry_in = ?backoff, "policy follower interrupted");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    heartbeat.abort();
}

async fn follow_once(
    view: &PolicyView,
    snapshots: Option<&dyn SnapshotSource>,
    bus: &dyn Bus,
    resync: bool,
) -> Result<(), FollowError> {
    if resync || view.current().is_none() {
        load(view, snapshots, bus).await?;
    }
    let start = stream_position(bus, view.sequence()).await?;
    let mut subscription = bus.subscribe(POLICY, start).await?;
    loop {
        let first = subscription.next().await.ok_or(FollowError::Ended)??;
        let mut batch = vec![decode(&first)?];
        // Apply whatever else is already waiting in one copy of the state.
        while batch.len() < BATCH {
            match subscription.next().now_or_never() {
                Some(Some(message)) => batch.push(decode(&message?)?),
                _ => break,
            }
        }
        view.apply(&batch)?;
    }
}

/// Loads a snapshot from the control plane, or rebuilds the state from the stream when the
/// control plane cannot be reached; never goes back to an older state than the one served.
async fn load(
    view: &PolicyView,
    snapshots: Option<&dyn SnapshotSource>,
    bus: &dyn Bus,
) -> Result<(), FollowError> {
    if let Some(source) = snapshots {
        match source.fetch().await {
            Ok(state) => {
                if view.current().is_none() || state.sequence >= view.sequence() {
                    tracing::info!(sequence = state.sequence, "policy loaded from a snapshot");
                    view.replace(state);
                }
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(%error, "no snapshot from the control plane; rebuilding policy from the stream");
            }
        }
    }
    let state = rebuild_from_stream(bus).await?;
    if view.current().is_none() || state.sequence >= view.sequence() {
        tracing::info!(sequence = state.sequence, "policy rebuilt from the stream");
        view.replace(state);
    }
    Ok(())
}

/// Folds the whole POLICY stream up to its last event as of now.
async fn rebuild_from_stream(bus: &dyn Bus) -> Result<PolicyState, FollowError> {
    let last = match bus.last(POLICY).await? {
        Some(message) => decode(&message)?.sequence,
        None => return Err(FollowError::NothingToLoad),
    };
    let mut state = PolicyState::default();
    let mut subscription = bus.subscribe(POLICY, 0).await?;
    while state.sequence < last {
        let event = decode(&subscription.next().await.ok_or(FollowError::Ended)??)?;
        if event.sequence <= state.sequence {
            continue;
        }
        if event.sequence != state.sequence + 1 {
            return Err(FollowError::Gap {
                expected: state.sequence + 1,
                got: event.sequence,
            });
        }
        state.apply(&event);
    }
    Ok(state)
}

/// The stream position after which the event following policy `sequence` is found. The relay
/// publishes events in order, one message each, so positions and sequences advance together;
/// if the stream was trimmed or recreated the guess is early or late, which the order check
/// turns into skipped duplicates or a resync.
async fn stream_position(bus: &dyn Bus, sequence: u64) -> Result<u64, FollowError> {
    let Some(last) = bus.last(POLICY).await? else {
        return Ok(0);
    };
    let last_sequence = decode(&last)?.sequence;
    Ok(last
        .sequence
        .saturating_sub(last_sequence.saturating_sub(sequence)))
}

fn decode(message: &BusMessage) -> Result<RecordedEvent, FollowError> {
    let unreadable = |reason: String| {
        tracing::error!(stream_sequence = message.sequence, %reason, "unreadable policy event");
        FollowError::Gap {
            expected: 0,
            got: message.sequence,
        }
    };
    let wire =
        PolicyEvent::decode(message.payload.clone()).map_err(|e| unreadable(e.to_string()))?;
    event_from_proto(&wire).map_err(|e| unreadable(e.to_string()))
}

/// Marks the policy current each time the relay's `POLICY_HEAD` announcement is new and not
/// ahead of what is applied: staleness grows when the control plane, the relay or NATS stop.
async fn heartbeat(view: Arc<PolicyView>, bus: Arc<dyn Bus>, mut shutdown: watch::Receiver<bool>) {
    let mut last_revision = 0;
    loop {
        if view.current().is_some()
            && let Ok(Some(head)) = bus.kv_get(POLICY_HEAD).await
            && head.revision != last_revision
        {
            let announced = std::str::from_utf8(&head.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if announced.is_some_and(|sequence| sequence <= view.sequence()) {
                last_revision = head.revision;
                view.mark_synced();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = shutdown.changed() => return,
        }
    }
}
