//! The distributed bus: one JetStream stream per topic, published with `Nats-Msg-Id` so the
//! server deduplicates, read back with ordered consumers.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::Context, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::nats_auth::NatsAuth;
use super::{
    ALERTS, Acknowledge, Bus, BusError, BusLimits, BusMessage, BusResult, Consumer, Delivery,
    KvEntry, KvWatch, POLICY, PublishAck, RESPONSE_CACHE, Retention, Subscription, USAGE,
    USAGE_ACK_WAIT, USAGE_DEAD_LETTER, topic_settings,
};

/// How long one bus operation may take before it is reported as a timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// A bus over NATS JetStream. Stream and subject names start with a prefix, so several
/// installations (or tests) can share one NATS server.
#[derive(Clone)]
pub struct JetStreamBus {
    context: Context,
    prefix: String,
    state: kv::Store,
    limits: BusLimits,
}

impl JetStreamBus {
    /// Connects to `url` and makes sure the streams of the known topics exist. The client
    /// keeps reconnecting in the background if the server goes away later.
    pub async fn connect(url: &str, prefix: &str) -> BusResult<Self> {
        Self::connect_with(url, prefix, BusLimits::default()).await
    }

    /// [`connect`](Self::connect) with other limits than the defaults.
    pub async fn connect_with(url: &str, prefix: &str, limits: BusLimits) -> BusResult<Self> {
        Self::connect_as(url, prefix, limits, &NatsAuth::default()).await
    }

    /// [`connect_with`](Self::connect_with), proving who it is as `auth` says.
    pub async fn connect_as(
        url: &str,
        prefix: &str,
        limits: BusLimits,
        auth: &NatsAuth,
    ) -> BusResult<Self> {
        let options = async_nats::ConnectOptions::new().connection_timeout(OPERATION_TIMEOUT);
        let client = auth
            .apply(options)
            .await?
            .connect(url)
            .await
            .map_err(unavailable)?;
        let mut context = jetstream::new(client);
        context.set_timeout(OPERATION_TIMEOUT);
        let state = shared_state_bucket(
            &context,
            &format!("{prefix}_STATE").to_uppercase(),
            limits.replicas,
        )
        .await?;
        let bus = JetStreamBus {
            context,
            prefix: prefix.to_owned(),
            state,
            limits,
        };
        for topic in [POLICY, USAGE, USAGE_DEAD_LETTER, ALERTS, RESPONSE_CACHE] {
            bus.ensure_stream(topic).await?;
        }
        Ok(bus)
    }

    /// The JetStream stream that holds `topic` (for example `TOLLGATE_POLICY`).
    pub fn stream_name(&self, topic: &str) -> String {
        format!("{}_{}", self.prefix, topic).to_uppercase()
    }

    /// The subject `topic` is published on (for example `tollgate.policy`).
    pub fn subject(&self, topic: &str) -> String {
        format!("{}.{}", self.prefix, topic)
    }

    /// Creates the topic's stream, or brings an existing one to today's settings; a stream
    /// that cannot be changed (a retention policy this server cannot convert) is kept as it
    /// is, loudly.
    async fn ensure_stream(&self, topic: &str) -> BusResult<()> {
        let settings = topic_settings(topic, &self.limits);
        let (retention, discard, max_messages, max_bytes) = match settings.retention {
            Retention::Forever => (
                stream::RetentionPolicy::Limits,
                stream::DiscardPolicy::Old,
                -1,
                -1,
            ),
            Retention::Newest {
                max_messages,
                max_bytes,
            } => (
                stream::RetentionPolicy::Limits,
                stream::DiscardPolicy::Old,
                max_messages as i64,
                i64::try_from(max_bytes).unwrap_or(-1),
            ),
            Retention::UntilConsumed { max_messages, .. } => (
                stream::RetentionPolicy::Interest,
                stream::DiscardPolicy::New,
                max_messages as i64,
                -1,
            ),
        };
        let config = stream::Config {
            name: self.stream_name(topic),
            subjects: vec![self.subject(topic)],
            storage: stream::StorageType::File,
            duplicate_window: settings.duplicate_window,
            retention,
            discard,
            max_messages,
            max_bytes,
            allow_direct: true,
            num_replicas: self.limits.replicas,
            ..Default::default()
        };
        if let Err(e) = with_timeout(self.context.create_or_update_stream(config)).await {
            let existing = self.stream(topic).await.map_err(|_| e)?;
            tracing::warn!(
                stream = %existing.cached_info().config.name,
                "the stream keeps its earlier settings: it cannot be brought to this version's (see the README's usage aggregator section)"
            );
        }
        if let Retention::UntilConsumed { consumer, .. } = settings.retention {
            // Interest retention drops a message nobody is interested in at once: the
            // consumer must exist before the first publish.
            self.durable(topic, consumer, USAGE_ACK_WAIT).await?;
        }
        Ok(())
    }

    /// An ordered consumer of `topic` starting where `deliver_policy` says.
    async fn ordered(
        &self,
        topic: &str,
        deliver_policy: consumer::DeliverPolicy,
    ) -> BusResult<Subscription> {
        let stream = self.stream(topic).await?;
        // An ordered consumer is recreated by the client on any gap or reconnect, so the
        // subscriber sees every message exactly once and in order.
        let consumer = with_timeout(stream.create_consumer(consumer::pull::OrderedConfig {
            filter_subject: self.subject(topic),
            deliver_policy,
            ..Default::default()
        }))
        .await?;
        let messages = with_timeout(consumer.messages()).await?;
        let stream = messages
            .map_err(unavailable)
            .and_then(|message| async move {
                let sequence = message.info().map_err(unavailable)?.stream_sequence;
                let msg_id = message.headers.as_ref().map(msg_id).unwrap_or_default();
                Ok(BusMessage {
                    sequence,
                    msg_id,
                    payload: message.payload.clone(),
                })
            });
        Ok(stream.boxed())
    }

    async fn durable(
        &self,
        topic: &str,
        durable: &str,
        ack_wait: Duration,
    ) -> BusResult<consumer::Consumer<consumer::pull::Config>> {
        let stream = self.stream(topic).await?;
        with_timeout(stream.get_or_create_consumer(
            durable,
            consumer::pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: self.subject(topic),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                // Bounds what is in flight across all members.
                max_ack_pending: 20_000,
                ..Default::default()
            },
        ))
        .await
    }

    async fn stream(&self, topic: &str) -> BusResult<stream::Stream> {
        with_timeout(self.context.get_stream(self.stream_name(topic))).await
    }
}

#[async_trait]
impl Bus for JetStreamBus {
    async fn publish(&self, topic: &str, msg_id: &str, payload: Bytes) -> BusResult<PublishAck> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let ack = with_timeout(async {
            self.context
                .publish_with_headers(self.subject(topic), headers, payload)
                .await?
                .await
        })
        .await
        .map_err(|e| full_or(topic, e))?;
        Ok(PublishAck {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Each message goes out as a core publish whose reply subject names its place in
    /// `messages`, and JetStream's acknowledgements come back on one subscription for all of
    /// them: the same messages and acks as [`publish`](Bus::publish), without a timer, a
    /// response channel and an inbox per message.
    async fn publish_all(
        &self,
        topic: &str,
        messages: &[(&str, Bytes)],
    ) -> Vec<BusResult<PublishAck>> {
        let mut results: Vec<Option<BusResult<PublishAck>>> =
            messages.iter().map(|_| None).collect();
        let deadline = tokio::time::Instant::now() + OPERATION_TIMEOUT;
        let client = self.context.client();
        let inbox = client.new_inbox();
        // Subscribed before anything is published: the server reads commands in order, so
        // no acknowledgement can arrive before the subscription does.
        let subscribed = tokio::time::timeout_at(deadline, client.subscribe(format!("{inbox}.*")));
        let every = |why: BusError| messages.iter().map(|_| Err(why.clone())).collect();
        let mut acks = match subscribed.await {
            Ok(Ok(acks)) => acks,
            Ok(Err(e)) => return every(unavailable(e)),
            Err(_) => return every(BusError::Timeout(OPERATION_TIMEOUT)),
        };
        let subject = async_nats::Subject::from(self.subject(topic));
        let mut waiting = 0;
        for (place, (msg_id, payload)) in messages.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, *msg_id);
            let sent = client.publish_with_reply_and_headers(
                subject.clone(),
                format!("{inbox}.{place}"),
                headers,
                payload.clone(),
            );
            match tokio::time::timeout_at(deadline, sent).await {
                Ok(Ok(())) => waiting += 1,
                Ok(Err(e)) => results[place] = Some(Err(unavailable(e))),
                Err(_) => results[place] = Some(Err(BusError::Timeout(OPERATION_TIMEOUT))),
            }
        }
        while waiting > 0 {
            let Ok(Some(reply)) = tokio::time::timeout_at(deadline, acks.next()).await else {
                break;
            };
            let place = reply
                .subject
                .rsplit('.')
                .next()
                .and_then(|p| p.parse().ok());
            if let Some(result @ None) = place.and_then(|p: usize| results.get_mut(p)) {
                *result = Some(publish_ack(topic, &reply));
                waiting -= 1;
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(BusError::Timeout(OPERATION_TIMEOUT))))
            .collect()
    }

    async fn last(&self, topic: &str) -> BusResult<Option<BusMessage>> {
        let stream = self.stream(topic).await?;
        let subject = self.subject(topic);
        let last = tokio::time::timeout(
            OPERATION_TIMEOUT,
            stream.get_last_raw_message_by_subject(&subject),
        )
        .await
        .map_err(|_| BusError::Timeout(OPERATION_TIMEOUT))?;
        match last {
            Ok(message) => Ok(Some(BusMessage {
                sequence: message.sequence,
                msg_id: msg_id(&message.headers),
                payload: message.payload,
            })),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn subscribe(&self, topic: &str, after: u64) -> BusResult<Subscription> {
        let deliver_policy = if after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        self.ordered(topic, deliver_policy).await
    }

    async fn subscribe_new(&self, topic: &str) -> BusResult<Subscription> {
        self.ordered(topic, consumer::DeliverPolicy::New).await
    }

    async fn kv_put(&self, key: &str, value: Bytes) -> BusResult<u64> {
        with_timeout(self.state.put(key, value)).await
    }

    async fn kv_update(&self, key: &str, value: Bytes, expected: u64) -> BusResult<Option<u64>> {
        let written = if expected == 0 {
            match with_timeout_raw(self.state.create(key, value)).await? {
                Ok(revision) => Some(revision),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(e) => return Err(unavailable(e)),
            }
        } else {
            match with_timeout_raw(self.state.update(key, value, expected)).await? {
                Ok(revision) => Some(revision),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                Err(e) => return Err(unavailable(e)),
            }
        };
        Ok(written)
    }

    async fn kv_scan(&self, prefix: &str) -> BusResult<Vec<(String, KvEntry)>> {
        // The keys come from the bucket stream's own index of subjects. Listing them through a
        // consumer (`Store::keys`) would leave an ephemeral consumer on the server for 30
        // seconds after every scan, and edges scan several times a second.
        let filter = format!("{}{}", self.state.prefix, key_filter(prefix));
        let subjects: Vec<(String, usize)> = with_timeout(async {
            self.state
                .stream
                .info_with_subjects(&filter)
                .await?
                .try_collect()
                .await
        })
        .await?;
        let mut keys: Vec<&str> = subjects
            .iter()
            .filter_map(|(subject, _)| subject.strip_prefix(self.state.prefix.as_str()))
            .filter(|key| key.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        for key in keys {
            if let Some(entry) = self.kv_get(key).await? {
                out.push((key.to_owned(), entry));
            }
        }
        Ok(out)
    }

    async fn consumer(
        &self,
        topic: &str,
        durable: &str,
        ack_wait: Duration,
    ) -> BusResult<Box<dyn Consumer>> {
        let consumer = self.durable(topic, durable, ack_wait).await?;
        Ok(Box::new(JetStreamConsumer { consumer }))
    }

    async fn backlog(&self, topic: &str, durable: &str) -> BusResult<u64> {
        let stream = self.stream(topic).await?;
        let info = with_timeout(stream.consumer_info(durable)).await?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    async fn kv_watch(&self, prefix: &str) -> BusResult<KvWatch> {
        let watch = with_timeout(self.state.watch_with_history(key_filter(prefix))).await?;
        let prefix = prefix.to_owned();
        Ok(watch
            .filter_map(move |entry| {
                let change = match entry {
                    Ok(e) if e.operation == kv::Operation::Put && e.key.starts_with(&prefix) => {
                        Some(Ok((
                            e.key,
                            KvEntry {
                                revision: e.revision,
                                value: e.value,
                            },
                        )))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(unavailable(e))),
                };
                std::future::ready(change)
            })
            .boxed())
    }

    async fn kv_get(&self, key: &str) -> BusResult<Option<KvEntry>> {
        let entry = with_timeout(self.state.entry(key)).await?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| KvEntry {
                revision: e.revision,
                value: e.value,
            }))
    }
}

struct JetStreamConsumer {
    consumer: consumer::Consumer<consumer::pull::Config>,
}

#[async_trait]
impl Consumer for JetStreamConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> BusResult<Vec<Delivery>> {
        let batch = with_timeout(
            self.consumer
                .fetch()
                .max_messages(max.max(1))
                .expires(wait)
                .messages(),
        )
        .await?;
        let messages: Vec<jetstream::Message> =
            tokio::time::timeout(wait + OPERATION_TIMEOUT, batch.try_collect())
                .await
                .map_err(|_| BusError::Timeout(wait + OPERATION_TIMEOUT))?
                .map_err(unavailable)?;
        messages
            .into_iter()
            .map(|message| {
                let sequence = message.info().map_err(unavailable)?.stream_sequence;
                let bus_message = BusMessage {
                    sequence,
                    msg_id: message.headers.as_ref().map(msg_id).unwrap_or_default(),
                    payload: message.payload.clone(),
                };
                Ok(Delivery::new(bus_message, Box::new(JetStreamAck(message))))
            })
            .collect()
    }
}

struct JetStreamAck(jetstream::Message);

#[async_trait]
impl Acknowledge for JetStreamAck {
    async fn ack(self: Box<Self>) -> BusResult<()> {
        with_timeout(self.0.ack()).await
    }
}

/// The shared-state KV bucket, created (or brought to `replicas` copies) through its backing
/// stream: the reply of nats-server 2.9 to async-nats' `create_key_value` does not parse, while
/// stream creation works on every server version.
async fn shared_state_bucket(
    context: &Context,
    bucket: &str,
    replicas: usize,
) -> BusResult<kv::Store> {
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let created = with_timeout(context.create_or_update_stream(config)).await;
    match with_timeout(context.get_key_value(bucket)).await {
        Ok(store) => {
            if let Err(e) = created {
                tracing::warn!(%bucket, error = %e, "the shared-state bucket keeps its earlier settings");
            }
            Ok(store)
        }
        // Why it could not be made says more than that it is not there.
        Err(missing) => Err(created.err().unwrap_or(missing)),
    }
}

fn msg_id(headers: &async_nats::HeaderMap) -> String {
    headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// A publish's error, said as `Full` when the server refused it for the stream's limit.
fn full_or(topic: &str, e: BusError) -> BusError {
    match e {
        // The server's words for a discard-new stream at its limit (error 10077).
        BusError::Unavailable(why)
            if why.contains("maximum messages") || why.contains("maximum bytes") =>
        {
            BusError::Full(topic.to_owned())
        }
        other => other,
    }
}

/// What JetStream answered to one publish: its acknowledgement or why it refused. Without a
/// stream for the subject the server says "no responders" (status 503) in place of JetStream.
fn publish_ack(topic: &str, reply: &async_nats::Message) -> BusResult<PublishAck> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        duplicate: bool,
        error: Option<Refusal>,
    }
    #[derive(serde::Deserialize)]
    struct Refusal {
        #[serde(default)]
        description: String,
    }
    if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(BusError::Unavailable(
            "no stream found for given subject".into(),
        ));
    }
    match serde_json::from_slice::<Answer>(&reply.payload) {
        Ok(Answer {
            error: Some(refusal),
            ..
        }) => Err(full_or(topic, BusError::Unavailable(refusal.description))),
        Ok(answer) => Ok(PublishAck {
            sequence: answer.seq,
            duplicate: answer.duplicate,
        }),
        Err(e) => Err(BusError::Unavailable(format!(
            "unreadable publish acknowledgement: {e}"
        ))),
    }
}

/// The subject filter, below the bucket's prefix, that holds every key starting with
/// `prefix`: its whole dot-separated parts, then `>`.
fn key_filter(prefix: &str) -> String {
    match prefix.rsplit_once('.') {
        Some((whole_parts, _)) => format!("{whole_parts}.>"),
        None => ">".to_owned(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

async fn with_timeout<T, E: std::fmt::Display>(
    operation: impl Future<Output = Result<T, E>>,
) -> BusResult<T> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .map_err(|_| BusError::Timeout(OPERATION_TIMEOUT))?
        .map_err(unavailable)
}

/// `operation` within the operation timeout, its own error left to the caller.
async fn with_timeout_raw<T>(operation: impl Future<Output = T>) -> BusResult<T> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .map_err(|_| BusError::Timeout(OPERATION_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(payload: &'static str, status: Option<async_nats::StatusCode>) -> async_nats::Message {
        async_nats::Message {
            subject: "_INBOX.x.0".into(),
            reply: None,
            payload: Bytes::from_static(payload.as_bytes()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn an_acknowledgement_gives_the_sequence_and_whether_it_was_a_duplicate() {
        let stored = publish_ack(USAGE, &reply(r#"{"stream":"T_USAGE","seq":7}"#, None));
        assert!(matches!(
            stored,
            Ok(PublishAck {
                sequence: 7,
                duplicate: false
            })
        ));
        let again = r#"{"stream":"T_USAGE","seq":7,"duplicate":true}"#;
        let again = publish_ack(USAGE, &reply(again, None));
        assert!(matches!(
            again,
            Ok(PublishAck {
                sequence: 7,
                duplicate: true
            })
        ));
    }

    #[test]
    fn a_refusal_for_the_stream_limit_is_full_and_any_other_unavailable() {
        let full =
            r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#;
        let full = publish_ack(USAGE, &reply(full, None));
        assert!(
            matches!(full, Err(BusError::Full(ref t)) if t == USAGE),
            "{full:?}"
        );
        let other = r#"{"error":{"code":500,"description":"something else"}}"#;
        let other = publish_ack(USAGE, &reply(other, None));
        assert!(
            matches!(other, Err(BusError::Unavailable(ref why)) if why == "something else"),
            "{other:?}"
        );
    }

    #[test]
    fn no_stream_or_an_unreadable_answer_is_unavailable() {
        let none = publish_ack(
            USAGE,
            &reply("", Some(async_nats::StatusCode::NO_RESPONDERS)),
        );
        assert!(matches!(none, Err(BusError::Unavailable(ref why)) if why.contains("no stream")));
        let garbled = publish_ack(USAGE, &reply("not json", None));
        assert!(
            matches!(garbled, Err(BusError::Unavailable(_))),
            "{garbled:?}"
        );
    }
}
