//! The bus: per topic, a durable, ordered log of messages, deduplicated on a message id.
//!
//! Two implementations with the same semantics, checked by one contract suite
//! (`proto/runtime/tests/bus_contract.rs`): [`JetStreamBus`] for distributed mode and [`MemoryBus`] for
//! the single-process `tollgate up`. Core NATS (at-most-once) is never used for these topics.

mod jetstream;
mod memory;
mod nats_auth;
mod settings;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use jetstream::JetStreamBus;
pub use memory::MemoryBus;
pub use nats_auth::NatsAuth;
pub use settings::BusSettings;

/// Policy events from the control plane's relay, in sequence order. Kept forever: an edge can
/// rebuild policy from this topic alone when the control plane is unreachable.
pub const POLICY: &str = "policy";
/// Usage events from the edges, one per request.
pub const USAGE: &str = "usage";
/// Usage events the aggregator could not read, with the reason.
pub const USAGE_DEAD_LETTER: &str = "usage_dead_letter";
/// Budget alerts, for subscribers that prefer NATS to a webhook.
pub const ALERTS: &str = "alerts";
/// Answers the edges' response caches share: each edge adds what others stored to its own.
pub const RESPONSE_CACHE: &str = "response_cache";
/// The most bytes of shared cache entries the bus keeps; the oldest go first. The topic only
/// carries answers between edges (each keeps its own in memory) and warms new ones, so it is
/// small: JetStream reserves a stream's byte limit on disk as soon as the stream exists.
pub const RESPONSE_CACHE_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// The durable consumer through which the aggregator replicas read the USAGE topic; it exists
/// from the moment the topic does, so that no usage event is ever stored without a reader.
pub const USAGE_CONSUMER: &str = "usage-ledger";
/// How long a usage event handed to an aggregator waits for its acknowledgement before it is
/// delivered again (to whichever replica asks next).
pub const USAGE_ACK_WAIT: Duration = Duration::from_secs(30);
/// The most usage events waiting for the aggregator, by default; beyond it publishes are
/// refused (the edges then hold events in their own bounded buffers).
pub const USAGE_MAX_MESSAGES: u64 = 10_000_000;
/// The most messages kept on the dead-letter and alert topics; the oldest go first.
const KEPT_MESSAGES: u64 = 10_000_000;

/// How long and how much a topic keeps, the same for every implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    /// A message id seen within this window is acknowledged as a duplicate and not stored.
    pub duplicate_window: Duration,
    pub retention: Retention,
}

/// When a topic lets go of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Never.
    Forever,
    /// The oldest messages are dropped beyond `max_messages` or `max_bytes` of payload: for
    /// topics read as a feed.
    Newest { max_messages: u64, max_bytes: u64 },
    /// A message is kept until the durable consumer `consumer` acknowledges it, and at most
    /// `max_messages` wait: beyond that a publish is refused, never an unread message dropped.
    UntilConsumed {
        consumer: &'static str,
        max_messages: u64,
    },
}

/// The limits an installation may tune; every role must be given the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusLimits {
    /// The most usage events waiting for the aggregator.
    pub usage_max_messages: u64,
    /// How many servers of a JetStream cluster keep each stream and the shared-state bucket
    /// (`TOLLGATE_BUS_REPLICAS`): 3 on a three-node cluster, so losing a node loses nothing.
    pub replicas: usize,
}

impl Default for BusLimits {
    fn default() -> Self {
        BusLimits {
            usage_max_messages: USAGE_MAX_MESSAGES,
            replicas: 1,
        }
    }
}

/// The settings of a known topic under `limits`; unknown topics are kept like alerts.
pub fn topic_settings(topic: &str, limits: &BusLimits) -> TopicSettings {
    match topic {
        POLICY => TopicSettings {
            duplicate_window: Duration::from_secs(3600),
            retention: Retention::Forever,
        },
        USAGE => TopicSettings {
            duplicate_window: Duration::from_secs(600),
            retention: Retention::UntilConsumed {
                consumer: USAGE_CONSUMER,
                max_messages: limits.usage_max_messages,
            },
        },
        RESPONSE_CACHE => TopicSettings {
            duplicate_window: Duration::from_secs(60),
            retention: Retention::Newest {
                max_messages: 20_000,
                max_bytes: RESPONSE_CACHE_MAX_BYTES,
            },
        },
        _ => TopicSettings {
            duplicate_window: Duration::from_secs(600),
            retention: Retention::Newest {
                max_messages: KEPT_MESSAGES,
                max_bytes: u64::MAX,
            },
        },
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    /// Position in the topic, starting at 1, increasing (not necessarily contiguous once
    /// old messages are trimmed).
    pub sequence: u64,
    /// The id it was published with, used for deduplication.
    pub msg_id: String,
    pub payload: Bytes,
}

/// The bus's answer to a publish, given once the message is durably stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishAck {
    pub sequence: u64,
    /// The id was seen within the duplicate window; nothing new was stored.
    pub duplicate: bool,
}

/// Why the bus could not do what was asked; every case is worth a retry later.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus timed out after {0:?}")]
    Timeout(Duration),
    /// The topic holds as many unconsumed messages as it may; it takes more once they are read.
    #[error("topic {0} is full: its consumer is behind")]
    Full(String),
}

/// The latest value of a key in the bus's small shared-state bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// Increases with every put to the bucket; a changed revision means a live writer.
    pub revision: u64,
    pub value: Bytes,
}

/// The key under which the control plane's relay announces the last sequence it published;
/// edges read it to know their policy is current.
pub const POLICY_HEAD: &str = "policy.head";

/// What a bus call returns.
pub type BusResult<T> = Result<T, BusError>;

/// A live subscription: every stored message after a position, then new ones as they arrive.
pub type Subscription = BoxStream<'static, BusResult<BusMessage>>;

/// A live watch of the shared-state bucket: each key's latest value, then every new value as
/// it is written (a key written several times in quick succession may show only its last).
pub type KvWatch = BoxStream<'static, BusResult<(String, KvEntry)>>;

/// A durable, ordered, deduplicating log of messages per topic.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Stores `payload` at the end of `topic` unless `msg_id` was seen within the duplicate
    /// window; returns once the message is durable.
    async fn publish(&self, topic: &str, msg_id: &str, payload: Bytes) -> BusResult<PublishAck>;

    /// [`publish`](Self::publish) for each `(msg_id, payload)` of `messages`, all at once;
    /// one result each, in order. Each message is stored, deduplicated and acknowledged on
    /// its own, exactly as if published alone: this only spares the bookkeeping of separate
    /// calls.
    async fn publish_all(
        &self,
        topic: &str,
        messages: &[(&str, Bytes)],
    ) -> Vec<BusResult<PublishAck>> {
        futures::future::join_all(
            messages
                .iter()
                .map(|(msg_id, payload)| self.publish(topic, msg_id, payload.clone())),
        )
        .await
    }

    /// The last stored message of `topic`.
    async fn last(&self, topic: &str) -> BusResult<Option<BusMessage>>;

    /// Messages of `topic` with a sequence greater than `after`, in order, then new ones.
    async fn subscribe(&self, topic: &str, after: u64) -> BusResult<Subscription>;

    /// Messages of `topic` stored from now on, in order. The default reads after the last
    /// stored message, which is right for topics that keep it; buses whose topics drop
    /// consumed messages say "from now" themselves.
    async fn subscribe_new(&self, topic: &str) -> BusResult<Subscription> {
        let after = self.last(topic).await?.map_or(0, |m| m.sequence);
        self.subscribe(topic, after).await
    }

    /// Sets `key` in the shared-state bucket (latest value wins); returns the new revision.
    async fn kv_put(&self, key: &str, value: Bytes) -> BusResult<u64>;

    /// The latest value of `key` in the shared-state bucket.
    async fn kv_get(&self, key: &str) -> BusResult<Option<KvEntry>>;

    /// Sets `key` only if its latest revision is `expected` (0: only if it has none): the new
    /// revision, or `None` when another writer came first.
    async fn kv_update(&self, key: &str, value: Bytes, expected: u64) -> BusResult<Option<u64>>;

    /// Every key of the shared-state bucket starting with `prefix`, with its latest value.
    async fn kv_scan(&self, prefix: &str) -> BusResult<Vec<(String, KvEntry)>>;

    /// The keys of the shared-state bucket starting with `prefix`: their latest values, then
    /// each change. One watch replaces polling with [`kv_scan`](Self::kv_scan): it costs the
    /// bus one consumer for its lifetime and only sends what changed.
    async fn kv_watch(&self, prefix: &str) -> BusResult<KvWatch>;

    /// A durable consumer of `topic` named `durable`: its members share the messages, and a
    /// message is delivered again (after `ack_wait`) until one of them acknowledges it.
    async fn consumer(
        &self,
        topic: &str,
        durable: &str,
        ack_wait: Duration,
    ) -> BusResult<Box<dyn Consumer>>;

    /// How many messages of `topic` the durable consumer `durable` has not acknowledged yet.
    async fn backlog(&self, topic: &str, durable: &str) -> BusResult<u64>;
}

/// A member of a durable consumer.
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` messages, waiting at most `wait` for the first.
    async fn fetch(&mut self, max: usize, wait: Duration) -> BusResult<Vec<Delivery>>;
}

/// A delivered message, to acknowledge once it is durably handled.
pub struct Delivery {
    pub message: BusMessage,
    ack: Box<dyn Acknowledge>,
}

impl Delivery {
    /// A delivery acknowledged through `ack`.
    pub fn new(message: BusMessage, ack: Box<dyn Acknowledge>) -> Self {
        Delivery { message, ack }
    }

    /// Tells the bus the message is handled and must not be delivered again.
    pub async fn ack(self) -> BusResult<()> {
        self.ack.ack().await
    }
}

/// How an implementation acknowledges one delivery.
#[async_trait]
pub trait Acknowledge: Send {
    async fn ack(self: Box<Self>) -> BusResult<()>;
}
