//! The relay: publishes committed policy events to the bus in sequence order.
//!
//! Crash-safe without a cursor of its own: on start (and after any failure) it reads the last
//! event on the bus and resumes after it, so nothing committed is ever skipped; an event
//! published twice (the ack was lost, or two control planes relay at once) carries the same
//! `Nats-Msg-Id` and is stored once. Each pass ends by announcing the last published sequence
//! under `POLICY_HEAD`, which tells edges that the control plane is alive and how far it is.
//!
//! With a signing key, each event is signed as it is published, with the key in effect before
//! it: a rotation event is signed by the key it replaces, the events after it by the new one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;
use tollgate_proto::policy::PolicyEvent;
use tollgate_runtime::bus::{Bus, BusError, POLICY, POLICY_HEAD};
use tollgate_runtime::events::event_to_proto;
use tollgate_runtime::signing::{PrivateKey, Purpose};

use crate::log::PolicyLog;
use crate::metrics::ControlMetrics;
use crate::store::{READ_BATCH, StoreError};
use crate::trust::{PolicySigning, TrustError};

/// How often the relay looks for events committed by another process.
const POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the last message on the policy topic is not a policy event: {0}")]
    Foreign(prost::DecodeError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Publishes every committed event of `log`, in order (signed when `signing` is given), until
/// `shutdown` flips to true.
pub async fn run(
    log: Arc<PolicyLog>,
    bus: Arc<dyn Bus>,
    signing: Option<PolicySigning>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<ControlMetrics>,
) {
    let mut committed = log.committed();
    let mut published: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let pass = publish_pending(&log, bus.as_ref(), signing.as_ref(), &mut published).await;
        if let Some(sequence) = published {
            metrics.relayed.store(sequence, Ordering::Relaxed);
        }
        let wait = match pass {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                POLL
            }
            Err(e) => {
                metrics.relay_failures.inc();
                tracing::warn!(error = %e, retry_in = ?backoff, "policy relay failed; will retry");
                // The failed publish may or may not have been stored: ask the bus again.
                published = None;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        tokio::select! {
            _ = committed.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The sequence of the last policy event on the bus (0 when there is none).
pub async fn last_published(bus: &dyn Bus) -> Result<u64, BusError> {
    Ok(match bus.last(POLICY).await? {
        Some(message) => PolicyEvent::decode(message.payload)
            .map(|e| e.sequence)
            .map_err(|e| BusError::Unavailable(RelayError::Foreign(e).to_string()))?,
        None => 0,
    })
}

async fn publish_pending(
    log: &PolicyLog,
    bus: &dyn Bus,
    signing: Option<&PolicySigning>,
    published: &mut Option<u64>,
) -> Result<(), RelayError> {
    let mut after = match *published {
        Some(sequence) => sequence,
        None => last_published(bus).await?,
    };
    *published = Some(after);
    let mut key = None;
    loop {
        let events = log.store().read_after(after, READ_BATCH).await?;
        if events.is_empty() {
            // The heartbeat edges measure their staleness by: everything up to `after` is out.
            bus.kv_put(POLICY_HEAD, Bytes::from(after.to_string()))
                .await?;
            return Ok(());
        }
        for event in events {
            let mut payload = event_to_proto(&event).encode_to_vec();
            if let Some(signing) = signing {
                let signer = match key.take() {
                    Some(signer) => signer,
                    None => signer_after(log, signing, after).await?,
                };
                payload = signer.seal(Purpose::PolicyEvent, payload);
                key = Some(match &event.event {
                    tollgate_policy::PolicyEvent::SigningKeyRotated { rotation } => signing
                        .holding(&rotation.public_key)
                        .ok_or_else(|| TrustError::NotHeld(rotation.public_key.clone()))?,
                    _ => signer,
                });
            }
            bus.publish(POLICY, &event.id.to_string(), Bytes::from(payload))
                .await?;
            after = event.sequence;
            *published = Some(after);
        }
    }
}

/// The key that signs the event after `sequence`, from a state that has folded it.
async fn signer_after<'a>(
    log: &PolicyLog,
    signing: &'a PolicySigning,
    sequence: u64,
) -> Result<&'a PrivateKey, RelayError> {
    if log.state().sequence < sequence {
        log.catch_up().await?;
    }
    Ok(signing.key_after(&log.state(), sequence)?)
}
