//! One contract, two buses: JetStream and the in-process bus must behave the same for every
//! property the relay, the edges and the aggregator rely on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use tollgate_runtime::bus::{
    Bus, BusError, BusLimits, BusMessage, JetStreamBus, MemoryBus, POLICY, Subscription, USAGE,
    USAGE_CONSUMER,
};

/// Small enough to fill in a test.
const LIMITS: BusLimits = BusLimits {
    usage_max_messages: 10,
    replicas: 1,
};

async fn jetstream() -> Result<Arc<dyn Bus>> {
    let url = tollgate_test_support::nats_url().await?;
    let prefix = tollgate_test_support::unique_name("bus");
    Ok(Arc::new(
        JetStreamBus::connect_with(&url, &prefix, LIMITS).await?,
    ))
}

fn memory() -> Arc<dyn Bus> {
    Arc::new(MemoryBus::with_limits(LIMITS))
}

async fn next(sub: &mut Subscription) -> Result<BusMessage> {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(message)) => Ok(message?),
        Ok(None) => bail!("subscription ended"),
        Err(_) => bail!("no message within 10 s"),
    }
}

async fn publish_n(bus: &dyn Bus, n: usize) -> Result<()> {
    for i in 1..=n {
        bus.publish(POLICY, &format!("id-{i}"), Bytes::from(format!("m{i}")))
            .await?;
    }
    Ok(())
}

async fn messages_are_replayed_in_order(bus: Arc<dyn Bus>) -> Result<()> {
    publish_n(bus.as_ref(), 5).await?;
    let mut sub = bus.subscribe(POLICY, 0).await?;
    for i in 1..=5 {
        let m = next(&mut sub).await?;
        assert_eq!(m.msg_id, format!("id-{i}"));
        assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
    }
    Ok(())
}

async fn duplicate_ids_are_stored_once(bus: Arc<dyn Bus>) -> Result<()> {
    let first = bus
        .publish(POLICY, "same", Bytes::from_static(b"a"))
        .await?;
    let second = bus
        .publish(POLICY, "same", Bytes::from_static(b"b"))
        .await?;
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "the second publish is acknowledged as a duplicate"
    );
    assert_eq!(second.sequence, first.sequence);
    bus.publish(POLICY, "other", Bytes::from_static(b"c"))
        .await?;
    let mut sub = bus.subscribe(POLICY, 0).await?;
    assert_eq!(&next(&mut sub).await?.payload[..], b"a");
    assert_eq!(&next(&mut sub).await?.payload[..], b"c");
    Ok(())
}

async fn subscription_starts_after_a_position_and_follows_new_messages(
    bus: Arc<dyn Bus>,
) -> Result<()> {
    publish_n(bus.as_ref(), 3).await?;
    let mut replay = bus.subscribe(POLICY, 0).await?;
    next(&mut replay).await?;
    let second = next(&mut replay).await?.sequence;
    let mut sub = bus.subscribe(POLICY, second).await?;
    assert_eq!(next(&mut sub).await?.msg_id, "id-3");
    let publisher = bus.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        publisher
            .publish(POLICY, "late", Bytes::from_static(b"late"))
            .await
    });
    assert_eq!(
        next(&mut sub).await?.msg_id,
        "late",
        "a live message reaches a caught-up subscriber"
    );
    Ok(())
}

async fn last_is_the_newest_message(bus: Arc<dyn Bus>) -> Result<()> {
    assert_eq!(
        bus.last(POLICY).await?,
        None,
        "an empty topic has no last message"
    );
    publish_n(bus.as_ref(), 4).await?;
    let last = bus.last(POLICY).await?.context("a last message")?;
    assert_eq!(last.msg_id, "id-4");
    assert_eq!(&last.payload[..], b"m4");
    Ok(())
}

async fn concurrent_publishers_lose_and_duplicate_nothing(bus: Arc<dyn Bus>) -> Result<()> {
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                // Every message is sent twice, as a retrying publisher would.
                let id = format!("w{writer}-{i}");
                bus.publish(POLICY, &id, Bytes::from(id.clone())).await?;
                bus.publish(POLICY, &id, Bytes::from(id.clone())).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut sub = bus.subscribe(POLICY, 0).await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut last_sequence = 0;
    for _ in 0..200 {
        let m = next(&mut sub).await?;
        assert!(m.sequence > last_sequence, "sequences increase");
        last_sequence = m.sequence;
        assert!(seen.insert(m.msg_id), "no message is stored twice");
    }
    assert_eq!(
        bus.last(POLICY).await?.map(|m| m.sequence),
        Some(last_sequence)
    );
    Ok(())
}

async fn kv_keeps_the_latest_value_with_increasing_revisions(bus: Arc<dyn Bus>) -> Result<()> {
    assert_eq!(bus.kv_get("policy.head").await?, None);
    let first = bus.kv_put("policy.head", Bytes::from_static(b"1")).await?;
    let second = bus.kv_put("policy.head", Bytes::from_static(b"2")).await?;
    assert!(second > first, "revisions increase");
    let entry = bus.kv_get("policy.head").await?.context("the key is set")?;
    assert_eq!((entry.revision, &entry.value[..]), (second, &b"2"[..]));
    Ok(())
}

async fn a_durable_consumer_redelivers_until_acknowledged(bus: Arc<dyn Bus>) -> Result<()> {
    let topic = tollgate_runtime::bus::USAGE;
    for i in 0..6 {
        bus.publish(topic, &format!("u{i}"), Bytes::from(format!("{i}")))
            .await?;
    }
    let ack_wait = Duration::from_secs(1);
    let mut first = bus.consumer(topic, "ledger", ack_wait).await?;
    let mut second = bus.consumer(topic, "ledger", ack_wait).await?;
    let a = first.fetch(3, Duration::from_secs(5)).await?;
    let b = second.fetch(10, Duration::from_secs(5)).await?;
    let ids = |d: &[tollgate_runtime::bus::Delivery]| {
        d.iter()
            .map(|d| d.message.msg_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), vec!["u0", "u1", "u2"]);
    assert_eq!(
        ids(&b),
        vec!["u3", "u4", "u5"],
        "members share the messages"
    );
    // Acknowledge everything but u1: only u1 comes back after ack_wait.
    for delivery in a.into_iter().chain(b) {
        if delivery.message.msg_id != "u1" {
            delivery.ack().await?;
        }
    }
    tokio::time::sleep(ack_wait + Duration::from_millis(500)).await;
    let again = first.fetch(10, Duration::from_secs(5)).await?;
    assert_eq!(ids(&again), vec!["u1"]);
    for delivery in again {
        delivery.ack().await?;
    }
    assert!(
        second
            .fetch(10, Duration::from_millis(1500))
            .await?
            .is_empty(),
        "nothing acknowledged comes back"
    );
    Ok(())
}

async fn kv_scan_lists_keys_by_prefix(bus: Arc<dyn Bus>) -> Result<()> {
    bus.kv_put("budget.a", Bytes::from_static(b"1")).await?;
    bus.kv_put("budget.b", Bytes::from_static(b"2")).await?;
    bus.kv_put("budget.b", Bytes::from_static(b"2'")).await?;
    bus.kv_put("budget.team.c", Bytes::from_static(b"3"))
        .await?;
    bus.kv_put("budgetary", Bytes::from_static(b"4")).await?;
    bus.kv_put("policy.head", Bytes::from_static(b"5")).await?;
    let scan = |prefix: &'static str| {
        let bus = bus.clone();
        async move {
            let mut found: Vec<(String, Vec<u8>)> = bus
                .kv_scan(prefix)
                .await?
                .into_iter()
                .map(|(k, e)| (k, e.value.to_vec()))
                .collect();
            found.sort();
            anyhow::Ok(found)
        }
    };
    let pair = |k: &str, v: &[u8]| (k.to_owned(), v.to_vec());
    assert_eq!(
        scan("budget.").await?,
        vec![
            pair("budget.a", b"1"),
            pair("budget.b", b"2'"),
            pair("budget.team.c", b"3")
        ]
    );
    // A prefix that ends inside a key's last part.
    assert_eq!(scan("budget.t").await?, vec![pair("budget.team.c", b"3")]);
    assert_eq!(
        scan("budget").await?.len(),
        4,
        "every key starting with the text"
    );
    assert!(scan("nothing.").await?.is_empty());
    Ok(())
}

async fn kv_watch_sees_the_latest_values_then_each_change(bus: Arc<dyn Bus>) -> Result<()> {
    bus.kv_put("budget.a", Bytes::from_static(b"1")).await?;
    bus.kv_put("budget.a", Bytes::from_static(b"1'")).await?;
    bus.kv_put("budgetary", Bytes::from_static(b"x")).await?;
    let mut watch = bus.kv_watch("budget.").await?;
    let mut next = async || match tokio::time::timeout(Duration::from_secs(10), watch.next()).await
    {
        Ok(Some(change)) => {
            let (key, entry) = change?;
            anyhow::Ok((key, entry.value.to_vec(), entry.revision))
        }
        Ok(None) => bail!("the watch ended"),
        Err(_) => bail!("no change within 10 s"),
    };
    let (key, value, first_revision) = next().await?;
    assert_eq!(
        (key.as_str(), value.as_slice()),
        ("budget.a", &b"1'"[..]),
        "the latest value only"
    );
    bus.kv_put("policy.head", Bytes::from_static(b"7")).await?;
    bus.kv_put("budget.team.b", Bytes::from_static(b"2"))
        .await?;
    let (key, value, revision) = next().await?;
    assert_eq!(
        (key.as_str(), value.as_slice()),
        ("budget.team.b", &b"2"[..]),
        "other prefixes are not seen"
    );
    assert!(revision > first_revision);
    let written = bus
        .kv_update("budget.a", Bytes::from_static(b"1''"), first_revision)
        .await?;
    let (key, value, revision) = next().await?;
    assert_eq!((key.as_str(), value.as_slice()), ("budget.a", &b"1''"[..]));
    assert_eq!(
        Some(revision),
        written,
        "a compare-and-set write is seen too"
    );
    Ok(())
}

async fn usage_is_kept_until_the_ledger_consumer_acknowledges_it(bus: Arc<dyn Bus>) -> Result<()> {
    // Published before any aggregator ever connected: still there for the first one.
    for i in 0..4 {
        bus.publish(USAGE, &format!("u{i}"), Bytes::from(format!("{i}")))
            .await?;
    }
    assert_eq!(bus.backlog(USAGE, USAGE_CONSUMER).await?, 4);
    let mut ledger = bus
        .consumer(USAGE, USAGE_CONSUMER, Duration::from_secs(30))
        .await?;
    let deliveries = ledger.fetch(10, Duration::from_secs(5)).await?;
    assert_eq!(deliveries.len(), 4);
    assert_eq!(
        bus.backlog(USAGE, USAGE_CONSUMER).await?,
        4,
        "delivered is not consumed"
    );
    for delivery in deliveries.into_iter().take(3) {
        delivery.ack().await?;
    }
    eventually_backlog(bus.as_ref(), 1).await
}

/// A "from now on" subscription (the request tail) starts after the newest message even once
/// the ledger consumed, and the bus dropped, everything before; and it consumes nothing.
async fn a_new_subscription_sees_only_later_messages_and_consumes_none(
    bus: Arc<dyn Bus>,
) -> Result<()> {
    for i in 0..3 {
        bus.publish(USAGE, &format!("old{i}"), Bytes::from(format!("old{i}")))
            .await?;
    }
    let mut ledger = bus
        .consumer(USAGE, USAGE_CONSUMER, Duration::from_secs(30))
        .await?;
    for delivery in ledger.fetch(10, Duration::from_secs(5)).await? {
        delivery.ack().await?;
    }
    eventually_backlog(bus.as_ref(), 0).await?;
    let mut tail = bus.subscribe_new(USAGE).await?;
    for i in 0..2 {
        bus.publish(USAGE, &format!("new{i}"), Bytes::from(format!("new{i}")))
            .await?;
    }
    for i in 0..2 {
        assert_eq!(next(&mut tail).await?.payload, format!("new{i}"));
    }
    eventually_backlog(bus.as_ref(), 2).await
}

async fn a_full_usage_topic_refuses_new_events_and_keeps_every_unread_one(
    bus: Arc<dyn Bus>,
) -> Result<()> {
    let limit = LIMITS.usage_max_messages;
    for i in 0..limit {
        bus.publish(USAGE, &format!("u{i}"), Bytes::from(format!("{i}")))
            .await?;
    }
    let refused = bus
        .publish(USAGE, "one-too-many", Bytes::from_static(b"x"))
        .await;
    assert!(
        matches!(refused, Err(BusError::Full(ref topic)) if topic == USAGE),
        "{refused:?}"
    );
    // Nothing unread was dropped to make room: the first event is still the first delivered.
    let mut ledger = bus
        .consumer(USAGE, USAGE_CONSUMER, Duration::from_secs(30))
        .await?;
    let deliveries = ledger.fetch(limit as usize, Duration::from_secs(5)).await?;
    let ids: Vec<String> = deliveries
        .iter()
        .map(|d| d.message.msg_id.clone())
        .collect();
    let expected: Vec<String> = (0..limit).map(|i| format!("u{i}")).collect();
    assert_eq!(ids, expected);
    // Once the ledger has consumed some, there is room again.
    for delivery in deliveries.into_iter().take(2) {
        delivery.ack().await?;
    }
    eventually_backlog(bus.as_ref(), limit - 2).await?;
    bus.publish(USAGE, "room-again", Bytes::from_static(b"x"))
        .await?;
    Ok(())
}

async fn messages_published_together_are_each_stored_and_deduplicated_as_alone(
    bus: Arc<dyn Bus>,
) -> Result<()> {
    let alone = bus
        .publish(POLICY, "before", Bytes::from_static(b"0"))
        .await?;
    let together = [
        ("a", Bytes::from_static(b"1")),
        ("before", Bytes::from_static(b"again")),
        ("b", Bytes::from_static(b"2")),
        ("a", Bytes::from_static(b"again")),
    ];
    let acks = bus
        .publish_all(POLICY, &together)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let seen: Vec<(u64, bool)> = acks.iter().map(|a| (a.sequence, a.duplicate)).collect();
    let s = alone.sequence;
    assert_eq!(
        seen,
        [(s + 1, false), (s, true), (s + 2, false), (s + 1, true)]
    );
    let mut sub = bus.subscribe(POLICY, 0).await?;
    for (id, payload) in [("before", "0"), ("a", "1"), ("b", "2")] {
        let m = next(&mut sub).await?;
        assert_eq!(
            (m.msg_id.as_str(), &m.payload[..]),
            (id, payload.as_bytes())
        );
    }
    Ok(())
}

async fn messages_published_together_beyond_a_full_usage_topic_are_refused_one_by_one(
    bus: Arc<dyn Bus>,
) -> Result<()> {
    let limit = LIMITS.usage_max_messages as usize;
    let ids: Vec<String> = (0..limit + 2).map(|i| format!("u{i}")).collect();
    let messages: Vec<(&str, Bytes)> = ids
        .iter()
        .map(|id| (id.as_str(), Bytes::from_static(b"x")))
        .collect();
    let results = bus.publish_all(USAGE, &messages).await;
    assert_eq!(results.len(), limit + 2);
    for (i, result) in results.iter().enumerate() {
        if i < limit {
            assert!(result.is_ok(), "message {i}: {result:?}");
        } else {
            assert!(
                matches!(result, Err(BusError::Full(topic)) if topic == USAGE),
                "message {i}: {result:?}"
            );
        }
    }
    eventually_backlog(bus.as_ref(), limit as u64).await
}

/// Waits for the usage backlog to reach `expected` (the server applies acks asynchronously).
async fn eventually_backlog(bus: &dyn Bus, expected: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let backlog = bus.backlog(USAGE, USAGE_CONSUMER).await?;
        if backlog == expected {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the usage backlog is {backlog}, not {expected}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kv_update_writes_only_over_the_expected_revision(bus: Arc<dyn Bus>) -> Result<()> {
    let first = bus
        .kv_update("limit.a", Bytes::from_static(b"1"), 0)
        .await?
        .context("creating an absent key")?;
    assert_eq!(
        bus.kv_update("limit.a", Bytes::from_static(b"x"), 0)
            .await?,
        None,
        "the key exists: not created twice"
    );
    assert_eq!(
        bus.kv_update("limit.a", Bytes::from_static(b"x"), first + 100)
            .await?,
        None,
        "a stale revision loses"
    );
    let second = bus
        .kv_update("limit.a", Bytes::from_static(b"2"), first)
        .await?
        .context("the expected revision wins")?;
    assert!(second > first);
    let entry = bus.kv_get("limit.a").await?.context("the key is set")?;
    assert_eq!((entry.revision, &entry.value[..]), (second, &b"2"[..]));
    Ok(())
}

/// Runs every contract case against both implementations.
macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod jetstream_bus {
            $(#[tokio::test]
            async fn $case() -> anyhow::Result<()> {
                super::$case(super::jetstream().await?).await
            })+
        }
        mod memory_bus {
            $(#[tokio::test]
            async fn $case() -> anyhow::Result<()> {
                super::$case(super::memory()).await
            })+
        }
    };
}

contract!(
    messages_are_replayed_in_order,
    duplicate_ids_are_stored_once,
    subscription_starts_after_a_position_and_follows_new_messages,
    last_is_the_newest_message,
    concurrent_publishers_lose_and_duplicate_nothing,
    kv_keeps_the_latest_value_with_increasing_revisions,
    a_durable_consumer_redelivers_until_acknowledged,
    kv_scan_lists_keys_by_prefix,
    kv_watch_sees_the_latest_values_then_each_change,
    usage_is_kept_until_the_ledger_consumer_acknowledges_it,
    a_full_usage_topic_refuses_new_events_and_keeps_every_unread_one,
    kv_update_writes_only_over_the_expected_revision,
    a_new_subscription_sees_only_later_messages_and_consumes_none,
    messages_published_together_are_each_stored_and_deduplicated_as_alone,
    messages_published_together_beyond_a_full_usage_topic_are_refused_one_by_one,
);

/// Edges scan the shared bucket several times a second: a scan must not leave a consumer behind
/// on the server (an ordered consumer lingers there for 30 seconds).
#[tokio::test]
async fn a_jetstream_kv_scan_leaves_no_consumer_on_the_server() -> Result<()> {
    let url = tollgate_test_support::nats_url().await?;
    let prefix = tollgate_test_support::unique_name("bus");
    let bus = JetStreamBus::connect_with(&url, &prefix, LIMITS).await?;
    bus.kv_put("edge.one", Bytes::from_static(b"1")).await?;
    for _ in 0..5 {
        assert_eq!(bus.kv_scan("edge.").await?.len(), 1);
    }
    let client = async_nats::connect(&url).await?;
    let bucket = format!("KV_{prefix}_STATE").to_uppercase();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(&bucket)
        .await?;
    assert_eq!(stream.info().await?.state.consumer_count, 0);
    Ok(())
}

/// An edge watches budget statuses for its whole life: the watch is one consumer on the
/// server, however many changes it sees.
#[tokio::test]
async fn a_jetstream_kv_watch_is_one_consumer_for_its_lifetime() -> Result<()> {
    let url = tollgate_test_support::nats_url().await?;
    let prefix = tollgate_test_support::unique_name("bus");
    let bus = JetStreamBus::connect_with(&url, &prefix, LIMITS).await?;
    let client = async_nats::connect(&url).await?;
    let bucket = format!("KV_{prefix}_STATE").to_uppercase();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(&bucket)
        .await?;
    let mut watch = bus.kv_watch("budget.").await?;
    for i in 0..20 {
        bus.kv_put("budget.a", Bytes::from(format!("{i}"))).await?;
    }
    let mut last = Vec::new();
    while last != b"19" {
        let change = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
        let Ok(Some(change)) = change else {
            bail!("the watch stopped before the last change");
        };
        last = change?.1.value.to_vec();
    }
    assert_eq!(stream.info().await?.state.consumer_count, 1);
    Ok(())
}
