//! The in-process bus of `tollgate up`: the JetStream semantics (order, dedup window,
//! retention, replay from a position) over a mutex-guarded log per topic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::{
    Acknowledge, Bus, BusError, BusLimits, BusMessage, BusResult, Consumer, Delivery, KvEntry,
    KvWatch, PublishAck, Retention, Subscription, TopicSettings, topic_settings,
};

/// The bus for a single process. Cloning shares the same topics.
#[derive(Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    kv: Arc<Mutex<Kv>>,
    limits: BusLimits,
}

#[derive(Default)]
struct Kv {
    revision: u64,
    entries: HashMap<String, KvEntry>,
    /// Tells watchers the newest revision.
    changed: watch::Sender<u64>,
}

impl Kv {
    /// Writes `key` at the next revision, and returns it.
    fn set(&mut self, key: &str, value: Bytes) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        self.entries
            .insert(key.to_owned(), KvEntry { revision, value });
        self.changed.send_replace(revision);
        revision
    }

    /// The keys starting with `prefix` written after revision `seen`, oldest first.
    fn since(&self, seen: u64, prefix: &str) -> VecDeque<(String, KvEntry)> {
        let mut changed: Vec<_> = self
            .entries
            .iter()
            .filter(|(k, e)| e.revision > seen && k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        changed.sort_unstable_by_key(|(_, e)| e.revision);
        changed.into()
    }
}

struct Topic {
    settings: TopicSettings,
    messages: VecDeque<BusMessage>,
    /// Payload bytes of `messages`.
    bytes: u64,
    last_sequence: u64,
    /// Message ids inside the duplicate window, oldest first, with when they were stored.
    recent_ids: VecDeque<(Instant, String)>,
    recent_seq: HashMap<String, u64>,
    /// Tells subscribers the newest sequence.
    tail: watch::Sender<u64>,
    consumers: HashMap<String, ConsumerState>,
}

/// A durable consumer's progress: what it has handed out, and what awaits an ack.
#[derive(Default)]
struct ConsumerState {
    delivered_up_to: u64,
    /// Unacknowledged sequences and when they are due again.
    pending: std::collections::BTreeMap<u64, Instant>,
}

impl Topic {
    fn new(name: &str, limits: &BusLimits) -> Self {
        Topic {
            settings: topic_settings(name, limits),
            messages: VecDeque::new(),
            bytes: 0,
            last_sequence: 0,
            recent_ids: VecDeque::new(),
            recent_seq: HashMap::new(),
            tail: watch::channel(0).0,
            consumers: HashMap::new(),
        }
    }

    /// Hands out up to `max` messages to consumer `durable`: overdue ones first, then new.
    fn take_for(
        &mut self,
        durable: &str,
        max: usize,
        ack_wait: Duration,
        now: Instant,
    ) -> Vec<BusMessage> {
        let state = self.consumers.entry(durable.to_owned()).or_default();
        let due: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(seq, _)| *seq)
            .take(max)
            .collect();
        let mut out: Vec<BusMessage> = Vec::new();
        for seq in due {
            state.pending.insert(seq, now + ack_wait);
            let index = self.messages.partition_point(|m| m.sequence < seq);
            match self.messages.get(index).filter(|m| m.sequence == seq) {
                Some(message) => out.push(message.clone()),
                // Trimmed away meanwhile: nothing left to deliver.
                None => {
                    state.pending.remove(&seq);
                }
            }
        }
        let start = self
            .messages
            .partition_point(|m| m.sequence <= state.delivered_up_to);
        for message in self.messages.range(start..).take(max - out.len()) {
            state.delivered_up_to = message.sequence;
            state.pending.insert(message.sequence, now + ack_wait);
            out.push(message.clone());
        }
        out
    }

    fn forget_expired_ids(&mut self, now: Instant) {
        while let Some((at, id)) = self.recent_ids.front() {
            if now.duration_since(*at) < self.settings.duplicate_window {
                break;
            }
            self.recent_seq.remove(id);
            self.recent_ids.pop_front();
        }
    }

    fn after(&self, after: u64, limit: usize) -> Vec<BusMessage> {
        // Sequences are increasing, so the first message after `after` is found by search.
        let start = self.messages.partition_point(|m| m.sequence <= after);
        self.messages.range(start..).take(limit).cloned().collect()
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bus with other limits than the defaults.
    pub fn with_limits(limits: BusLimits) -> Self {
        MemoryBus {
            limits,
            ..Self::default()
        }
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        // A panic while holding this lock cannot leave a topic half-written (every update is
        // a few infallible pushes), so a poisoned lock is still safe to use.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kv(&self) -> MutexGuard<'_, Kv> {
        self.kv.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_topic<T>(&self, name: &str, f: impl FnOnce(&mut Topic) -> T) -> T {
        let mut topics = self.topics();
        let topic = topics
            .entry(name.to_owned())
            .or_insert_with(|| Topic::new(name, &self.limits));
        f(topic)
    }
}

/// How many messages a subscriber copies out per lock acquisition.
const BATCH: usize = 256;

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &str, msg_id: &str, payload: Bytes) -> BusResult<PublishAck> {
        let now = Instant::now();
        self.with_topic(topic, |t| {
            t.forget_expired_ids(now);
            if let Some(&sequence) = t.recent_seq.get(msg_id) {
                return Ok(PublishAck {
                    sequence,
                    duplicate: true,
                });
            }
            if let Retention::UntilConsumed { max_messages, .. } = t.settings.retention
                && t.messages.len() as u64 >= max_messages
            {
                return Err(BusError::Full(topic.to_owned()));
            }
            t.last_sequence += 1;
            let sequence = t.last_sequence;
            t.bytes += payload.len() as u64;
            t.messages.push_back(BusMessage {
                sequence,
                msg_id: msg_id.to_owned(),
                payload,
            });
            if let Retention::Newest {
                max_messages,
                max_bytes,
            } = t.settings.retention
            {
                while t.messages.len() as u64 > max_messages || t.bytes > max_bytes {
                    match t.messages.pop_front() {
                        Some(gone) => t.bytes -= gone.payload.len() as u64,
                        None => break,
                    }
                }
            }
            t.recent_ids.push_back((now, msg_id.to_owned()));
            t.recent_seq.insert(msg_id.to_owned(), sequence);
            t.tail.send_replace(sequence);
            Ok(PublishAck {
                sequence,
                duplicate: false,
            })
        })
    }

    async fn last(&self, topic: &str) -> BusResult<Option<BusMessage>> {
        Ok(self.with_topic(topic, |t| t.messages.back().cloned()))
    }

    async fn subscribe(&self, topic: &str, after: u64) -> BusResult<Subscription> {
        let tail = self.with_topic(topic, |t| t.tail.subscribe());
        let bus = self.clone();
        let topic = topic.to_owned();
        let state = (bus, topic, tail, after, VecDeque::<BusMessage>::new());
        let stream = futures::stream::unfold(
            state,
            |(bus, topic, mut tail, mut after, mut buffered)| async move {
                loop {
                    if let Some(message) = buffered.pop_front() {
                        after = message.sequence;
                        return Some((Ok(message), (bus, topic, tail, after, buffered)));
                    }
                    // Mark the current tail seen before reading, so a publish racing the read
                    // still wakes the wait below.
                    tail.borrow_and_update();
                    buffered = bus.with_topic(&topic, |t| t.after(after, BATCH)).into();
                    if buffered.is_empty() && tail.changed().await.is_err() {
                        return None;
                    }
                }
            },
        );
        Ok(stream.boxed())
    }

    async fn subscribe_new(&self, topic: &str) -> BusResult<Subscription> {
        let after = self.with_topic(topic, |t| t.last_sequence);
        self.subscribe(topic, after).await
    }

    async fn kv_put(&self, key: &str, value: Bytes) -> BusResult<u64> {
        Ok(self.kv().set(key, value))
    }

    async fn kv_get(&self, key: &str) -> BusResult<Option<KvEntry>> {
        Ok(self.kv().entries.get(key).cloned())
    }

    async fn kv_update(&self, key: &str, value: Bytes, expected: u64) -> BusResult<Option<u64>> {
        let mut kv = self.kv();
        let current = kv.entries.get(key).map_or(0, |e| e.revision);
        if current != expected {
            return Ok(None);
        }
        Ok(Some(kv.set(key, value)))
    }

    async fn kv_scan(&self, prefix: &str) -> BusResult<Vec<(String, KvEntry)>> {
        Ok(self
            .kv()
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn kv_watch(&self, prefix: &str) -> BusResult<KvWatch> {
        let changed = self.kv().changed.subscribe();
        let state = (self.clone(), changed, prefix.to_owned(), 0, VecDeque::new());
        let stream = futures::stream::unfold(
            state,
            |(bus, mut changed, prefix, mut seen, mut buffered)| async move {
                loop {
                    if let Some(change) = buffered.pop_front() {
                        return Some((Ok(change), (bus, changed, prefix, seen, buffered)));
                    }
                    // Marked seen before reading, as in `subscribe`.
                    changed.borrow_and_update();
                    {
                        let kv = bus.kv();
                        buffered = kv.since(seen, &prefix);
                        seen = kv.revision;
                    }
                    if buffered.is_empty() && changed.changed().await.is_err() {
                        return None;
                    }
                }
            },
        );
        Ok(stream.boxed())
    }

    async fn consumer(
        &self,
        topic: &str,
        durable: &str,
        ack_wait: Duration,
    ) -> BusResult<Box<dyn Consumer>> {
        let tail = self.with_topic(topic, |t| {
            t.consumers.entry(durable.to_owned()).or_default();
            t.tail.subscribe()
        });
        Ok(Box::new(MemoryConsumer {
            bus: self.clone(),
            topic: topic.to_owned(),
            durable: durable.to_owned(),
            ack_wait,
            tail,
        }))
    }

    async fn backlog(&self, topic: &str, durable: &str) -> BusResult<u64> {
        Ok(self.with_topic(topic, |t| t.backlog(durable)))
    }
}

impl Topic {
    /// Unacknowledged messages of consumer `durable`: handed out and pending, or not yet
    /// handed out.
    fn backlog(&self, durable: &str) -> u64 {
        let (delivered_up_to, pending) = self
            .consumers
            .get(durable)
            .map_or((0, 0), |c| (c.delivered_up_to, c.pending.len()));
        let start = self
            .messages
            .partition_point(|m| m.sequence <= delivered_up_to);
        (self.messages.len() - start + pending) as u64
    }

    /// Drops a message consumed by the consumer that the topic keeps it for.
    fn consumed(&mut self, durable: &str, sequence: u64) {
        if let Retention::UntilConsumed { consumer, .. } = self.settings.retention
            && consumer == durable
        {
            let index = self.messages.partition_point(|m| m.sequence < sequence);
            if self
                .messages
                .get(index)
                .is_some_and(|m| m.sequence == sequence)
                && let Some(gone) = self.messages.remove(index)
            {
                self.bytes -= gone.payload.len() as u64;
            }
        }
    }
}

struct MemoryConsumer {
    bus: MemoryBus,
    topic: String,
    durable: String,
    ack_wait: Duration,
    tail: watch::Receiver<u64>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> BusResult<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.tail.borrow_and_update();
            let now = Instant::now();
            let messages = self.bus.with_topic(&self.topic, |t| {
                t.take_for(&self.durable, max.max(1), self.ack_wait, now)
            });
            if !messages.is_empty() {
                return Ok(messages
                    .into_iter()
                    .map(|message| {
                        let ack = MemoryAck {
                            bus: self.bus.clone(),
                            topic: self.topic.clone(),
                            durable: self.durable.clone(),
                            sequence: message.sequence,
                        };
                        Delivery::new(message, Box::new(ack))
                    })
                    .collect());
            }
            // Wake on a new message, or soon enough to redeliver an overdue one.
            let nap = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_millis(100));
            if nap.is_zero() {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout(nap, self.tail.changed()).await;
        }
    }
}

struct MemoryAck {
    bus: MemoryBus,
    topic: String,
    durable: String,
    sequence: u64,
}

#[async_trait]
impl Acknowledge for MemoryAck {
    async fn ack(self: Box<Self>) -> BusResult<()> {
        self.bus.with_topic(&self.topic, |t| {
            let acknowledged = t
                .consumers
                .get_mut(&self.durable)
                .is_some_and(|state| state.pending.remove(&self.sequence).is_some());
            if acknowledged {
                t.consumed(&self.durable, self.sequence);
            }
        });
        Ok(())
    }
}
