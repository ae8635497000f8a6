//! A bus that fails on purpose, for the tests of what survives a failing bus (the control
//! plane's relay, an edge's policy follower): every call goes to a real bus, except the
//! publishes and deliveries a test takes over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tollgate_runtime::bus::{
    Bus, BusError, BusMessage, BusResult, Consumer, KvEntry, KvWatch, PublishAck, Subscription,
};

/// What becomes of a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// It reaches the bus, and its ack comes back.
    Passes,
    /// It fails without reaching the bus.
    Refused,
    /// The bus stores the message, but the publisher gets an error instead of the ack.
    AckLost,
}

type PublishFault = Box<dyn Fn(usize) -> Publish + Send + Sync>;
type Dropped = Arc<dyn Fn(&str, &BusMessage) -> bool + Send + Sync>;

/// A real bus with the faults a test chose.
pub struct FaultyBus {
    inner: Arc<dyn Bus>,
    publishes: AtomicUsize,
    publish: PublishFault,
    dropped: Dropped,
}

impl FaultyBus {
    /// `inner`, with no fault yet.
    pub fn new(inner: Arc<dyn Bus>) -> Self {
        FaultyBus {
            inner,
            publishes: AtomicUsize::new(0),
            publish: Box::new(|_| Publish::Passes),
            dropped: Arc::new(|_, _| false),
        }
    }

    /// The `n`th publish (counting from 0) becomes `fault(n)`.
    pub fn publishes(self, fault: impl Fn(usize) -> Publish + Send + Sync + 'static) -> Self {
        FaultyBus {
            publish: Box::new(fault),
            ..self
        }
    }

    /// Subscribers never see the messages of a topic that `dropped(topic, message)` picks.
    pub fn drops(
        self,
        dropped: impl Fn(&str, &BusMessage) -> bool + Send + Sync + 'static,
    ) -> Self {
        FaultyBus {
            dropped: Arc::new(dropped),
            ..self
        }
    }
}

#[async_trait]
impl Bus for FaultyBus {
    async fn publish(&self, topic: &str, msg_id: &str, payload: Bytes) -> BusResult<PublishAck> {
        let fault = (self.publish)(self.publishes.fetch_add(1, Ordering::SeqCst));
        if fault == Publish::Refused {
            return Err(BusError::Unavailable(
                "the publish was refused (a test's fault)".into(),
            ));
        }
        let ack = self.inner.publish(topic, msg_id, payload).await?;
        if fault == Publish::AckLost {
            return Err(BusError::Unavailable(
                "the ack was lost (a test's fault)".into(),
            ));
        }
        Ok(ack)
    }

    async fn last(&self, topic: &str) -> BusResult<Option<BusMessage>> {
        self.inner.last(topic).await
    }

    async fn subscribe(&self, topic: &str, after: u64) -> BusResult<Subscription> {
        let (dropped, topic) = (self.dropped.clone(), topic.to_owned());
        let inner = self.inner.subscribe(&topic, after).await?;
        let kept = move |m: &BusResult<BusMessage>| {
            let drop_it = m.as_ref().is_ok_and(|m| dropped(&topic, m));
            std::future::ready(!drop_it)
        };
        Ok(inner.filter(kept).boxed())
    }

    async fn kv_put(&self, key: &str, value: Bytes) -> BusResult<u64> {
        self.inner.kv_put(key, value).await
    }

    async fn kv_get(&self, key: &str) -> BusResult<Option<KvEntry>> {
        self.inner.kv_get(key).await
    }

    async fn kv_update(&self, key: &str, value: Bytes, expected: u64) -> BusResult<Option<u64>> {
        self.inner.kv_update(key, value, expected).await
    }

    async fn kv_scan(&self, prefix: &str) -> BusResult<Vec<(String, KvEntry)>> {
        self.inner.kv_scan(prefix).await
    }

    async fn kv_watch(&self, prefix: &str) -> BusResult<KvWatch> {
        self.inner.kv_watch(prefix).await
    }

    async fn consumer(
        &self,
        topic: &str,
        durable: &str,
        ack_wait: Duration,
    ) -> BusResult<Box<dyn Consumer>> {
        self.inner.consumer(topic, durable, ack_wait).await
    }

    async fn backlog(&self, topic: &str, durable: &str) -> BusResult<u64> {
        self.inner.backlog(topic, durable).await
    }
}
