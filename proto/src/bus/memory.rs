//! The in-process bus of `tollgate up`: the JetStream semantics (order, dedup window,
//! retention, replay from a position) over a mutex-guarded log per topic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use super::{
    Bus, BusError, BusMessage, KvEntry, PublishAck, Subscription, TopicSettings, topic_settings,
};

/// The bus for a single process. Cloning shares the same topics.
#[derive(Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    kv: Arc<Mutex<Kv>>,
}

#[derive(Default)]
struct Kv {
    revision: u64,
    entries: HashMap<String, KvEntry>,
}

struct Topic {
    settings: TopicSettings,
    messages: VecDeque<BusMessage>,
    last_sequence: u64,
    /// Message ids inside the duplicate window, oldest first, with when they were stored.
    recent_ids: VecDeque<(Instant, String)>,
    recent_seq: HashMap<String, u64>,
    /// Tells subscribers the newest sequence.
    tail: watch::Sender<u64>,
}

impl Topic {
    fn new(name: &str) -> Self {
        Topic {
            settings: topic_settings(name),
            messages: VecDeque::new(),
            last_sequence: 0,
            recent_ids: VecDeque::new(),
            recent_seq: HashMap::new(),
            tail: watch::channel(0).0,
        }
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

    fn topics(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        // A panic while holding this lock cannot leave a topic half-written (every update is
        // a few infallible pushes), so a poisoned lock is still safe to use.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_topic<T>(&self, name: &str, f: impl FnOnce(&mut Topic) -> T) -> T {
        let mut topics = self.topics();
        let topic = topics
            .entry(name.to_owned())
            .or_insert_with(|| Topic::new(name));
        f(topic)
    }
}

/// How many messages a subscriber copies out per lock acquisition.
const BATCH: usize = 256;

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        topic: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<PublishAck, BusError> {
        let now = Instant::now();
        Ok(self.with_topic(topic, |t| {
            t.forget_expired_ids(now);
            if let Some(&sequence) = t.recent_seq.get(msg_id) {
                return PublishAck {
                    sequence,
                    duplicate: true,
                };
            }
            t.last_sequence += 1;
            let sequence = t.last_sequence;
            t.messages.push_back(BusMessage {
                sequence,
                msg_id: msg_id.to_owned(),
                payload,
            });
            if let Some(max) = t.settings.max_messages {
                while t.messages.len() as u64 > max {
                    t.messages.pop_front();
                }
            }
            t.recent_ids.push_back((now, msg_id.to_owned()));
            t.recent_seq.insert(msg_id.to_owned(), sequence);
            t.tail.send_replace(sequence);
            PublishAck {
                sequence,
                duplicate: false,
            }
        }))
    }

    async fn last(&self, topic: &str) -> Result<Option<BusMessage>, BusError> {
        Ok(self.with_topic(topic, |t| t.messages.back().cloned()))
    }

    async fn subscribe(&self, topic: &str, after: u64) -> Result<Subscription, BusError> {
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

    async fn kv_put(&self, key: &str, value: Bytes) -> Result<u64, BusError> {
        let mut kv = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        kv.revision += 1;
        let revision = kv.revision;
        kv.entries
            .insert(key.to_owned(), KvEntry { revision, value });
        Ok(revision)
    }

    async fn kv_get(&self, key: &str) -> Result<Option<KvEntry>, BusError> {
        let kv = self.kv.lock().unwrap_or_else(|e| e.into_inner());
        Ok(kv.entries.get(key).cloned())
    }
}
