//! The consumer loop: batches from the USAGE topic's durable consumer into the ledger,
//! acknowledged only after the ledger committed; unreadable events go to the dead-letter
//! topic; touched budgets get a fresh status on the bus.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use prost::Message;
use serde_json::json;
use tokio::sync::watch;
use tollgate_proto::usage::UsageEvent;
use tollgate_runtime::bus::{
    Bus, Delivery, USAGE, USAGE_ACK_WAIT, USAGE_CONSUMER, USAGE_DEAD_LETTER,
};
use tollgate_runtime::follow::PolicyView;
use tollgate_runtime::signing::PrivateKey;

use crate::budgets;
use crate::entry::Entry;
use crate::ledger::Ledger;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What this aggregator's consumer has done since it started.
#[derive(Debug, Default)]
pub struct ConsumerCounters {
    /// Usage events committed to the ledger by this replica.
    pub recorded: AtomicU64,
    /// Batch writes that failed (and were retried).
    pub failed_writes: AtomicU64,
    /// Events parked on the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Ledger transactions that committed usage events.
    pub batches: AtomicU64,
}

impl ConsumerCounters {
    /// (recorded, failed writes, dead-lettered, batches).
    pub fn read(&self) -> (u64, u64, u64, u64) {
        (
            self.recorded.load(Ordering::Relaxed),
            self.failed_writes.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }
}

/// What the consumer loop works with.
pub struct Consumer {
    pub ledger: Ledger,
    pub bus: Arc<dyn Bus>,
    pub policy: Arc<PolicyView>,
    pub sinks: Vec<String>,
    pub batch: usize,
    /// After a batch smaller than `batch`, how long the next one gathers.
    pub linger: Duration,
    pub counters: Arc<ConsumerCounters>,
    /// Signs the budget statuses it publishes.
    pub status_signing_key: Option<PrivateKey>,
}

/// Consumes usage until `shutdown` flips to true.
pub async fn run(parts: Consumer, mut shutdown: watch::Receiver<bool>) {
    let (bus, policy, batch) = (parts.bus.clone(), parts.policy.clone(), parts.batch);
    // Spend is assigned to budgets from policy: wait for it rather than miss one.
    let mut applied = policy.applied();
    while policy.current().is_none() {
        tokio::select! {
            _ = applied.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
    let mut backoff = Duration::from_millis(100);
    let mut consumer = None;
    while !*shutdown.borrow() {
        if consumer.is_none() {
            match bus.consumer(USAGE, USAGE_CONSUMER, USAGE_ACK_WAIT).await {
                Ok(c) => consumer = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the usage consumer; retrying");
                    pause(&mut backoff, &mut shutdown).await;
                    continue;
                }
            }
        }
        let Some(members) = consumer.as_mut() else {
            continue;
        };
        let deliveries = tokio::select! {
            fetched = members.fetch(batch, Duration::from_secs(1)) => fetched,
            _ = shutdown.changed() => return,
        };
        match deliveries {
            Ok(deliveries) if deliveries.is_empty() => {}
            Ok(deliveries) => {
                let short = deliveries.len() < batch;
                handle(&parts, deliveries, &mut shutdown).await;
                backoff = Duration::from_millis(100);
                // Under steady load a fetch right away would find the few events that came
                // during this batch: one transaction, ledger round trips and budget status
                // publish each. Gathering first makes that one per `linger`, whatever the
                // rate; the first event after a quiet spell is still read at once.
                if short && !parts.linger.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(parts.linger) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetching usage failed; retrying");
                consumer = None;
                pause(&mut backoff, &mut shutdown).await;
            }
        }
    }
}

async fn pause(backoff: &mut Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = shutdown.changed() => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// Records one batch; returns once it is committed and acknowledged (or shutdown came first,
/// in which case the bus delivers it again).
async fn handle(
    consumer: &Consumer,
    deliveries: Vec<Delivery>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let Consumer {
        ledger,
        policy,
        sinks,
        counters,
        ..
    } = consumer;
    let bus = consumer.bus.as_ref();
    let mut readable = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let parsed = UsageEvent::decode(delivery.message.payload.clone())
            .map_err(|e| format!("not a usage event: {e}"))
            .and_then(Entry::from_event);
        match parsed {
            Ok(entry) => readable.push((entry, delivery)),
            Err(reason) => {
                if dead_letter(bus, delivery, &reason).await {
                    counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    // A part the database refuses for its data is halved until the event it chokes on stands
    // alone; that one is parked, and the rest is recorded. One poisoned event can thus never
    // hold up every later one (a batch refused whole would be retried forever).
    let mut parts = vec![readable];
    let mut touched = BTreeSet::new();
    while let Some(mut part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let entries: Vec<Entry> = part.iter().map(|(entry, _)| entry.clone()).collect();
        match record(ledger, policy, sinks, counters, &entries, shutdown).await {
            Recorded::Done(budgets) => {
                touched.extend(budgets);
                let acks = join_all(part.into_iter().map(|(_, delivery)| delivery.ack())).await;
                if let Some(Err(e)) = acks.into_iter().find(Result::is_err) {
                    // Harmless: the batch comes back after the ack wait and the ledger ignores
                    // repeats.
                    tracing::warn!(error = %e, "acknowledging usage failed");
                }
            }
            Recorded::Refused(reason) if part.len() == 1 => {
                if let Some((_, delivery)) = part.pop() {
                    let reason = format!("the ledger refused it: {reason}");
                    if dead_letter(bus, delivery, &reason).await {
                        counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Recorded::Refused(_) => {
                let second = part.split_off(part.len() / 2);
                parts.push(second);
                parts.push(part);
            }
            Recorded::Stopped => return,
        }
    }
    if !touched.is_empty()
        && let Some(state) = policy.current()
    {
        let ids: Vec<String> = touched.into_iter().collect();
        let key = consumer.status_signing_key.as_ref();
        if let Err(e) = budgets::publish(ledger, bus, key, &state, Some(&ids)).await {
            tracing::warn!(error = %e, "publishing budget status failed");
        }
    }
}

/// How writing one part of a batch ended.
enum Recorded {
    /// Committed; the budgets it touched.
    Done(BTreeSet<String>),
    /// The database refused the data itself: retrying the same rows cannot help.
    Refused(String),
    /// Shutdown came first; the bus delivers the part again.
    Stopped,
}

/// Writes `entries` to the ledger, retrying with back-off through failures that may pass.
async fn record(
    ledger: &Ledger,
    policy: &PolicyView,
    sinks: &[String],
    counters: &ConsumerCounters,
    entries: &[Entry],
    shutdown: &mut watch::Receiver<bool>,
) -> Recorded {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(state) = policy.current() else {
            return Recorded::Stopped;
        };
        let result = ledger
            .record(
                entries,
                |e| budgets::spend_keys(&state, e),
                |k, before, after| budgets::crossed(&state, k, before, after),
                sinks,
            )
            .await;
        match result {
            Ok(_) => {
                counters
                    .recorded
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
                let touched = entries
                    .iter()
                    .flat_map(|e| budgets::spend_keys(&state, e))
                    .map(|k| k.budget_id)
                    .collect();
                return Recorded::Done(touched);
            }
            Err(e) if e.is_about_the_data() => {
                counters.failed_writes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, events = entries.len(), "the ledger refused a batch's data; isolating the event");
                return Recorded::Refused(e.to_string());
            }
            Err(e) => {
                counters.failed_writes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, events = entries.len(), "ledger write failed; retrying the batch");
                pause(&mut backoff, shutdown).await;
                if *shutdown.borrow() {
                    return Recorded::Stopped;
                }
            }
        }
    }
}

/// Parks an unreadable event on the dead-letter topic with the reason, then lets it go;
/// whether it was parked (if not, it comes back and is tried again).
async fn dead_letter(bus: &dyn Bus, delivery: Delivery, reason: &str) -> bool {
    use base64::Engine;
    let record = json!({
        "reason": reason,
        "stream_sequence": delivery.message.sequence,
        "msg_id": delivery.message.msg_id,
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&delivery.message.payload),
    });
    let id = format!("dlq-{}", delivery.message.sequence);
    tracing::warn!(sequence = delivery.message.sequence, %reason, "usage event sent to the dead-letter topic");
    match bus
        .publish(USAGE_DEAD_LETTER, &id, Bytes::from(record.to_string()))
        .await
    {
        Ok(_) => {
            let _ = delivery.ack().await;
            true
        }
        // Not acknowledged: it comes back and is tried again.
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter publish failed");
            false
        }
    }
}
