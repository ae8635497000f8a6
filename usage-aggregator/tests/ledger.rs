//! The ledger counts each request once — however often the bus delivers it — and its rollups
//! add up to exactly what was spent; unreadable events are parked on the dead-letter topic
//! without holding up the readable ones.

use tollgate_test_support::aggregator as common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use futures::StreamExt;
use prost::Message;
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::UsageEvent;
use tollgate_runtime::bus::{Bus, Subscription, USAGE, USAGE_DEAD_LETTER};

const EVENTS: usize = 2_000;

fn day() -> Result<DateTime<Utc>> {
    Utc.with_ymd_and_hms(2025, 3, 4, 0, 0, 0)
        .single()
        .context("a valid date")
}

async fn ledger_and_rollups_count_each_request_once(backend: Backend) -> Result<()> {
    let (bus, control_plane) = start_control_plane(backend).await?;
    control_plane.team("finance-test").await?;
    let (_database, aggregator) = start_aggregator(backend, &bus, &control_plane).await?;

    let mut rng = Rng::new(0x5eed_0001);
    let dims = Dimensions {
        teams: &["team-a", "team-b", "team-c"],
        models: &["gpt-4o", "claude-sonnet", "llama-3-70b"],
        regions: &["eu-west-1", "us-east-1"],
        edges: &["edge-a", "edge-b"],
    };
    let events = generate(&mut rng, EVENTS, day()?, chrono::Duration::days(1), &dims);
    let messages = with_resends(&mut rng, &events, 10);
    ensure!(
        messages.len() > EVENTS + EVENTS / 20,
        "about 10 % of the events are sent twice ({} messages)",
        messages.len()
    );
    let expected = Sums::of(&events);
    ensure!(expected.errors > 0, "some generated requests failed");

    publish_usage(&bus, messages).await?;
    aggregator
        .wait_for_requests(EVENTS as i64, Duration::from_secs(60))
        .await?;

    assert_eq!(
        aggregator.ledger.ledger_totals().await?,
        expected.ledger_totals(),
        "ledger totals (requests, input, output, cached, cost nanos)"
    );

    let mut usage = aggregator.usage(ADMIN_TOKEN).await?;
    let (start, end) = (day()?, day()? + chrono::Duration::days(1));
    let rows = query_rows(
        &mut usage,
        usage_request(start, end, "day", &["team", "model"], &[]),
    )
    .await?;
    let mut total = Sums::default();
    let mut by_group: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for row in &rows {
        assert_eq!(
            row.bucket_start,
            Some(timestamp(day()?)),
            "one daily bucket"
        );
        let sums = Sums::of_row(row);
        total.merge(&sums);
        by_group
            .entry((row.team.clone(), row.model.clone()))
            .or_default()
            .merge(&sums);
    }
    assert_eq!(total, expected, "QueryUsage summed over all groups");
    assert_eq!(
        by_group,
        sums_by(&events, |e| (e.team_id.clone(), e.model.clone())),
        "QueryUsage per (team, model)"
    );

    // The hourly rollups add up to the same.
    let hourly = query_rows(
        &mut usage,
        usage_request(start, end, "hour", &["region"], &[]),
    )
    .await?;
    let mut by_hour_region: BTreeMap<(i64, String), Sums> = BTreeMap::new();
    for row in &hourly {
        let seconds = row.bucket_start.as_ref().map_or(-1, |t| t.seconds);
        by_hour_region
            .entry((seconds, row.region.clone()))
            .or_default()
            .merge(&Sums::of_row(row));
    }
    assert_eq!(
        by_hour_region,
        sums_by(&events, |e| {
            let seconds = e.occurred_at.as_ref().map_or(0, |t| t.seconds);
            (seconds - seconds.rem_euclid(3600), e.region.clone())
        }),
        "QueryUsage per (hour, region)"
    );

    // Nothing more arrives later (a repeat counted late would show here).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        aggregator.ledger.ledger_totals().await?,
        expected.ledger_totals()
    );
    aggregator.stop().await?;
    control_plane.stop().await?;
    Ok(())
}

async fn malformed_events_go_to_the_dead_letter_topic_and_do_not_block(
    backend: Backend,
) -> Result<()> {
    let (bus, control_plane) = start_control_plane(backend).await?;
    control_plane.team("dlq-test").await?;
    let (_database, aggregator) = start_aggregator(backend, &bus, &control_plane).await?;

    let mut rng = Rng::new(0x5eed_0002);
    let dims = Dimensions {
        teams: &["team-a"],
        models: &["gpt-4o", "gpt-4o-mini"],
        regions: &["eu-west-1"],
        edges: &["edge-a"],
    };
    let good = generate(&mut rng, 60, day()?, chrono::Duration::hours(1), &dims);
    // Field 1 with wire type 7, which does not exist: not protobuf at all.
    let garbage: &[u8] = b"\x0f\xff\xffthis is not a usage event";
    let mut future_schema = usage_event("req-from-the-future", day()?);
    future_schema.schema_version = 99;
    future_schema.cost_usd = 1.0;
    // What PostgreSQL refuses to store (and an edge refuses to send): a NUL in a name.
    let mut nul_model = usage_event("req-with-a-nul", day()?);
    nul_model.model = "a\u{0}b".to_owned();

    for (i, event) in good.iter().enumerate() {
        if i == 20 {
            bus.publish(USAGE, "garbage-1", garbage.to_vec().into())
                .await?;
        }
        if i == 30 {
            publish_one(&bus, &nul_model).await?;
        }
        if i == 40 {
            publish_one(&bus, &future_schema).await?;
        }
        publish_one(&bus, event).await?;
    }
    aggregator
        .holds_exactly(&good, "every readable event is recorded, and only those")
        .await?;

    let mut dead = bus.subscribe(USAGE_DEAD_LETTER, 0).await?;
    let mut records = Vec::new();
    for _ in 0..3 {
        records.push(next_dead_letter(&mut dead).await?);
    }
    let more = tokio::time::timeout(Duration::from_secs(1), dead.next()).await;
    assert!(
        more.is_err(),
        "exactly three dead-letter records, got a fourth: {more:?}"
    );

    let by_msg_id: BTreeMap<String, &serde_json::Value> = records
        .iter()
        .map(|r| (r["msg_id"].as_str().unwrap_or_default().to_owned(), r))
        .collect();
    let garbage_record = by_msg_id
        .get("garbage-1")
        .with_context(|| format!("a record for the garbage: {records:?}"))?;
    let future_record = by_msg_id
        .get("req-from-the-future")
        .with_context(|| format!("a record for schema 99: {records:?}"))?;
    let nul_record = by_msg_id
        .get("req-with-a-nul")
        .with_context(|| format!("a record for the NUL: {records:?}"))?;
    assert!(
        nul_record["reason"]
            .as_str()
            .is_some_and(|r| r.contains("model")),
        "the reason names the field: {nul_record}"
    );
    for record in [garbage_record, future_record] {
        let reason = record["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "a reason in {record}");
    }
    assert!(
        future_record["reason"]
            .as_str()
            .is_some_and(|r| r.contains("99")),
        "the reason names the schema version: {future_record}"
    );
    let kept = base64::engine::general_purpose::STANDARD.decode(
        garbage_record["payload_base64"]
            .as_str()
            .unwrap_or_default(),
    )?;
    assert_eq!(kept, garbage, "the dead-letter record keeps the payload");
    let kept = base64::engine::general_purpose::STANDARD
        .decode(future_record["payload_base64"].as_str().unwrap_or_default())?;
    assert_eq!(UsageEvent::decode(kept.as_slice())?, future_schema);

    // Usage keeps flowing after the bad events.
    let recorded = more_usage_is_recorded(&bus, &aggregator, &mut rng, &dims, good.len()).await?;

    // `/metrics` tells an operator the same, and that nothing waits on the stream.
    eventually(Duration::from_secs(15), || async {
        let Ok(response) = reqwest::get(aggregator.http_url("/metrics")).await else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        text.contains(&format!("\ntollgate_usage_recorded_total {recorded}\n"))
            && text.contains("\ntollgate_usage_dead_lettered_total 3\n")
            && text.contains("\ntollgate_usage_backlog_messages 0\n")
    })
    .await
    .context("/metrics never showed the consumer's counts and an empty backlog")?;
    aggregator.stop().await?;
    control_plane.stop().await?;
    Ok(())
}

/// The next record on the dead-letter subscription `dead`, within 15 s.
async fn next_dead_letter(dead: &mut Subscription) -> Result<serde_json::Value> {
    let message = tokio::time::timeout(Duration::from_secs(15), dead.next())
        .await
        .context("a dead-letter record within 15 s")?
        .context("the dead-letter subscription ended")??;
    serde_json::from_slice(&message.payload)
        .with_context(|| format!("dead-letter record is JSON: {:?}", message.payload))
}

/// Publishes five more events like `dims` and waits until the ledger holds them after the
/// `recorded` already there; returns how many it holds then.
async fn more_usage_is_recorded(
    bus: &Arc<dyn Bus>,
    aggregator: &TestAggregator,
    rng: &mut Rng,
    dims: &Dimensions<'_>,
    recorded: usize,
) -> Result<usize> {
    let later = generate(rng, 5, day()?, chrono::Duration::hours(1), dims);
    for event in &later {
        publish_one(bus, event).await?;
    }
    let recorded = recorded + later.len();
    aggregator
        .wait_for_requests(recorded as i64, Duration::from_secs(30))
        .await?;
    Ok(recorded)
}

/// Usage trickling in under steady load is written in a few large transactions, not one per
/// event: after a short batch the next one gathers for the linger. The first event after a
/// quiet spell is written at once.
async fn usage_trickling_in_is_written_in_few_transactions(backend: Backend) -> Result<()> {
    let (bus, control_plane) = start_control_plane(backend).await?;
    control_plane.team("linger-test").await?;
    let database = backend.database().await?;
    let linger = Duration::from_secs(2);
    let aggregator = TestAggregator::start_lingering(
        &database.url,
        bus.clone(),
        &control_plane,
        Default::default(),
        linger,
    )
    .await?;
    let mut rng = Rng::new(0x5eed_0003);
    let dims = Dimensions {
        teams: &["team-a"],
        models: &["gpt-4o"],
        regions: &["eu-west-1"],
        edges: &["edge-a"],
    };
    let events = generate(&mut rng, 30, day()?, chrono::Duration::hours(1), &dims);
    let (first, rest) = events.split_first().context("events")?;
    publish_one(&bus, first).await?;
    aggregator
        .wait_for_requests(1, linger / 2)
        .await
        .context("the first event after a quiet spell waits for nothing")?;
    // One event every 10 ms, well within the linger: each would be a batch of its own.
    for event in rest {
        publish_one(&bus, event).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    aggregator
        .wait_for_requests(events.len() as i64, Duration::from_secs(30))
        .await?;
    let (recorded, _, _, batches) = aggregator.counters.read();
    assert_eq!(recorded, events.len() as u64);
    assert!(
        batches <= 3,
        "{recorded} events trickling in took {batches} transactions"
    );
    Ok(())
}

on_both_backends!(
    ledger_and_rollups_count_each_request_once,
    malformed_events_go_to_the_dead_letter_topic_and_do_not_block,
    usage_trickling_in_is_written_in_few_transactions,
);

/// An event that passes every check but that the database refuses (here: it would overflow a
/// rollup row that is already near the largest BIGINT) is isolated from its batch by halving,
/// parked on the dead-letter topic with the database's reason, and the rest of the batch is
/// committed. PostgreSQL only: SQLite turns an overflowing sum into a float instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_database_refuses_is_isolated_and_the_rest_is_committed() -> Result<()> {
    let backend = Backend::PostgresJetStream;
    let (bus, control_plane) = start_control_plane(backend).await?;
    control_plane.team("poison-test").await?;
    let (database, aggregator) = start_aggregator(backend, &bus, &control_plane).await?;

    let at = day()? + chrono::Duration::hours(3);
    let mut poison = usage_event("req-poison", at);
    poison.team_id = "team-poison".to_owned();
    poison.cost_usd = 1.0;
    let hour_ms = at.timestamp_millis();
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&database.url).await?;
        sqlx::query(
            "INSERT INTO usage_rollups (granularity, bucket_start_ms, team_id, user_id, key_id, \
             model, deployment_id, provider, region, requests, input_tokens, output_tokens, \
             cached_input_tokens, cost_nanos, errors, cache_hits, latency_ms_sum) \
             VALUES ('hour', $1, $2, $3, $4, $5, $6, $7, $8, 1, 0, 0, 0, $9, 0, 0, 0)",
        )
        .bind(hour_ms)
        .bind(&poison.team_id)
        .bind(&poison.user_id)
        .bind(&poison.key_id)
        .bind(&poison.model)
        .bind(&poison.deployment_id)
        .bind(&poison.provider)
        .bind(&poison.region)
        .bind(i64::MAX - 10)
        .execute(&mut conn)
        .await?;
    }

    let mut rng = Rng::new(0x5eed_0003);
    let dims = Dimensions {
        teams: &["team-a", "team-b"],
        models: &["gpt-4o"],
        regions: &["eu-west-1"],
        edges: &["edge-a"],
    };
    let good = generate(&mut rng, 40, day()?, chrono::Duration::hours(1), &dims);
    let mut messages: Vec<(String, UsageEvent)> = good
        .iter()
        .map(|e| (e.request_id.clone(), e.clone()))
        .collect();
    messages.insert(17, (poison.request_id.clone(), poison.clone()));
    publish_usage(&bus, messages).await?;

    aggregator
        .holds_exactly(&good, "every event but the poisoned one is recorded")
        .await?;
    let mut dead = bus.subscribe(USAGE_DEAD_LETTER, 0).await?;
    let record = next_dead_letter(&mut dead).await?;
    assert_eq!(record["msg_id"], "req-poison", "{record}");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the ledger refused it") && reason.contains("out of range"),
        "the reason is the database's: {reason}"
    );
    let (_, failed_writes, dead_lettered, _) = aggregator.counters.read();
    assert_eq!(dead_lettered, 1);
    assert!(failed_writes >= 1, "the refusal was seen");

    // Usage keeps flowing.
    more_usage_is_recorded(&bus, &aggregator, &mut rng, &dims, good.len()).await?;
    aggregator.stop().await?;
    control_plane.stop().await?;
    Ok(())
}
