//! Keeps a `PolicyView` current: load a snapshot (or rebuild from the stream when the control
//! plane is unreachable), then apply the POLICY stream in order; on a gap, or a message that
//! is not a policy event signed by the trusted key, resync.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::{Bus, BusMessage, POLICY, POLICY_HEAD};
use crate::events::event_from_proto;
use crate::signing::{self, PublicKey, Purpose, SignatureError};
use futures::{FutureExt, StreamExt};
use prost::Message;
use tokio::sync::watch;
use tollgate_policy::{PolicyState, RecordedEvent};
use tollgate_proto::policy::PolicyEvent;

use super::snapshot::{SnapshotError, SnapshotSource, open as open_snapshot};
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
    #[error("refused the message at stream position {position}: {reason}")]
    Refused { position: u64, reason: String },
    #[error("the key rotation chain of the policy held is broken: {0}")]
    Trust(SignatureError),
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

/// Stream positions of refused messages remembered, so that one forged message costs one
/// resync rather than one each time the stream is read past it.
const REMEMBERED_REFUSALS: usize = 4096;

/// Follows policy until `shutdown` flips to true. With `anchor`, only events and snapshots
/// signed by it, or by a key it handed over to through signed rotations, are applied.
pub async fn run(
    view: Arc<PolicyView>,
    snapshots: Option<Arc<dyn SnapshotSource>>,
    bus: Arc<dyn Bus>,
    anchor: Option<PublicKey>,
    mut shutdown: watch::Receiver<bool>,
) {
    let heartbeat = tokio::spawn(heartbeat(view.clone(), bus.clone(), shutdown.clone()));
    let mut follower = Follower {
        view,
        snapshots,
        bus,
        anchor,
        refused: BTreeSet::new(),
    };
    let mut resync = true;
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let result = tokio::select! {
            r = follower.follow_once(resync) => r,
            _ = shutdown.changed() => break,
        };
        let error = match result {
            Ok(()) => continue,
            Err(e) => e,
        };
        resync = matches!(
            error,
            FollowError::Gap { .. } | FollowError::NothingToLoad | FollowError::Refused { .. }
        );
        if let FollowError::Gap { .. } | FollowError::Refused { .. } = error {
            follower.view.count_resync();
            tracing::warn!(%error, "resyncing policy");
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

struct Follower {
    view: Arc<PolicyView>,
    snapshots: Option<Arc<dyn SnapshotSource>>,
    bus: Arc<dyn Bus>,
    anchor: Option<PublicKey>,
    refused: BTreeSet<u64>,
}

impl Follower {
    async fn follow_once(&mut self, resync: bool) -> Result<(), FollowError> {
        if resync || self.view.current().is_none() {
            self.load().await?;
        }
        let start = stream_position(self.bus.as_ref(), self.view.sequence()).await?;
        let mut subscription = self.bus.subscribe(POLICY, start).await?;
        let current = self.view.current();
        let mut signatures = self.signatures(current.as_deref())?;
        loop {
            let first = subscription.next().await.ok_or(FollowError::Ended)??;
            let mut batch = Vec::new();
            let mut refused = self.accept(&mut signatures, &first, &mut batch).err();
            // Apply whatever else is already waiting in one copy of the state.
            while refused.is_none() && batch.len() < BATCH {
                match subscription.next().now_or_never() {
                    Some(Some(message)) => {
                        refused = self.accept(&mut signatures, &message?, &mut batch).err();
                    }
                    _ => break,
                }
            }
            self.view.apply(&batch)?;
            if let Some(refused) = refused {
                return Err(refused);
            }
        }
    }

    /// Adds the event `message` carries to `batch` when it is readable and signed (or was
    /// refused before: then it is skipped without a word); `Refused` the first time it is not.
    fn accept(
        &mut self,
        signatures: &mut Signatures,
        message: &BusMessage,
        batch: &mut Vec<RecordedEvent>,
    ) -> Result<(), FollowError> {
        if self.refused.contains(&message.sequence) {
            return Ok(());
        }
        match decode(message).and_then(|event| {
            signatures.check(message, &event)?;
            Ok(event)
        }) {
            Ok(event) => {
                batch.push(event);
                Ok(())
            }
            Err(reason) => {
                self.view.count_refused();
                if self.refused.len() >= REMEMBERED_REFUSALS {
                    self.refused.pop_first();
                }
                self.refused.insert(message.sequence);
                tracing::error!(
                    stream_sequence = message.sequence,
                    %reason,
                    "policy message refused"
                );
                Err(FollowError::Refused {
                    position: message.sequence,
                    reason,
                })
            }
        }
    }

    /// Loads a snapshot from the control plane, or rebuilds the state from the stream when the
    /// control plane cannot be reached or its snapshot is refused; never goes back to an older
    /// state than the one served.
    async fn load(&mut self) -> Result<(), FollowError> {
        if let Some(source) = &self.snapshots {
            let opened = source.fetch().await.and_then(|snapshot| {
                open_snapshot(&snapshot, self.anchor.as_ref()).map_err(|e| {
                    if let SnapshotError::Refused(_) = e {
                        self.view.count_refused();
                    }
                    e.to_string()
                })
            });
            match opened {
                Ok(state) => {
                    if self.view.current().is_none() || state.sequence >= self.view.sequence() {
                        tracing::info!(sequence = state.sequence, "policy loaded from a snapshot");
                        self.view.replace(state);
                    }
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(%error, "no snapshot from the control plane; rebuilding policy from the stream");
                }
            }
        }
        let state = self.rebuild_from_stream().await?;
        if self.view.current().is_none() || state.sequence >= self.view.sequence() {
            tracing::info!(sequence = state.sequence, "policy rebuilt from the stream");
            self.view.replace(state);
        }
        Ok(())
    }

    /// Folds the whole POLICY stream up to its last message as of now, skipping what it must
    /// refuse.
    async fn rebuild_from_stream(&mut self) -> Result<PolicyState, FollowError> {
        let Some(last) = self.bus.last(POLICY).await? else {
            return Err(FollowError::NothingToLoad);
        };
        let mut state = PolicyState::default();
        let mut signatures = self.signatures(None)?;
        let mut subscription = self.bus.subscribe(POLICY, 0).await?;
        loop {
            let message = subscription.next().await.ok_or(FollowError::Ended)??;
            let mut accepted = Vec::with_capacity(1);
            // A refused message is counted and skipped: there is nothing better to load.
            let _ = self.accept(&mut signatures, &message, &mut accepted);
            for event in accepted {
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
            if message.sequence >= last.sequence {
                break;
            }
        }
        if state.sequence == 0 {
            return Err(FollowError::NothingToLoad);
        }
        Ok(state)
    }

    /// The signature checks for events after `state` (the empty state when `None`).
    fn signatures(&self, state: Option<&PolicyState>) -> Result<Signatures, FollowError> {
        let Some(anchor) = &self.anchor else {
            return Ok(Signatures::Off);
        };
        let (chain, after) = state.map_or((&[][..], 0), |s| (&s.signing_keys[..], s.sequence));
        let key = signing::key_in_effect(anchor, chain).map_err(FollowError::Trust)?;
        Ok(Signatures::On { key, after })
    }
}

/// Which key must have signed the next event.
enum Signatures {
    /// No anchor configured: events are taken as they come.
    Off,
    /// Events after `after` must be signed by `key`, until a rotation hands over.
    On { key: PublicKey, after: u64 },
}

impl Signatures {
    /// Checks `event` (decoded from `message`). Events already applied pass unchecked: they
    /// are skipped. A later one than the next (a gap) is checked with the key in effect,
    /// which a rotation inside the gap makes look forged: either way the edge resyncs.
    fn check(&mut self, message: &BusMessage, event: &RecordedEvent) -> Result<(), String> {
        let Signatures::On { key, after } = self else {
            return Ok(());
        };
        if event.sequence <= *after {
            return Ok(());
        }
        key.check(Purpose::PolicyEvent, &message.payload)
            .map_err(|e| format!("policy event {}: {e}", event.sequence))?;
        if event.sequence == *after + 1 {
            if let tollgate_policy::PolicyEvent::SigningKeyRotated { rotation } = &event.event {
                *key = signing::follow_rotation(key, rotation)
                    .map_err(|e| format!("policy event {}: {e}", event.sequence))?;
            }
            *after = event.sequence;
        }
        Ok(())
    }
}

/// The stream position after which the event following policy `sequence` is found. The relay
/// publishes events in order, one message each, so positions and sequences advance together;
/// if the stream was trimmed or recreated (or its last message is not a policy event) the
/// guess is early or late, which the order check turns into skipped duplicates or a resync.
async fn stream_position(bus: &dyn Bus, sequence: u64) -> Result<u64, FollowError> {
    let Some(last) = bus.last(POLICY).await? else {
        return Ok(0);
    };
    let Ok(last_sequence) = decode(&last).map(|event| event.sequence) else {
        return Ok(0);
    };
    Ok(last
        .sequence
        .saturating_sub(last_sequence.saturating_sub(sequence)))
}

fn decode(message: &BusMessage) -> Result<RecordedEvent, String> {
    let wire = PolicyEvent::decode(message.payload.clone())
        .map_err(|e| format!("not a policy event: {e}"))?;
    event_from_proto(&wire).map_err(|e| format!("unreadable policy event: {e}"))
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
