//! The ledger counts each request once — however often the bus delivers it — and its rollups
//! add up to exactly what was spent; unreadable events are parked on the dead-letter topic
//! without holding up the readable ones.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use futures::StreamExt;
use prost::Message;
use tollgate_proto::bus::{USAGE, USAGE_DEAD_LETTER};
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::QueryUsageRequest;
use tollgate_usage_aggregator::alerts::AlertSinks;

const EVENTS: usize = 2_000;

fn day() -> Result<DateTime<Utc>> {
    Utc.with_ymd_and_hms(2025, 3, 4, 0, 0, 0)
        .single()
        .context("a valid date")
}

async fn ledger_and_rollups_count_each_request_once(backend: Backend) -> Result<()> {
    let bus = backend.bus().await?;
    let control_plane = TestControlPlane::start(backend, bus.clone()).await?;
    control_plane.team("finance-test").await?;
    let database = backend.database().await?;
    let aggregator = TestAggregator::start(
        &database.url,
        bus.clone(),
        &control_plane,
        AlertSinks::default(),
    )
    .await?;

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
    let rows = usage
        .query_usage(QueryUsageRequest {
            start: Some(timestamp(day()?)),
            end: Some(timestamp(day()? + chrono::Duration::days(1))),
            granularity: "day".to_owned(),
            group_by: vec!["team".to_owned(), "model".to_owned()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .rows;
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
    let hourly = usage
        .query_usage(QueryUsageRequest {
            start: Some(timestamp(day()?)),
            end: Some(timestamp(day()? + chrono::Duration::days(1))),
            granularity: "hour".to_owned(),
            group_by: vec!["region".to_owned()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .rows;
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
    let bus = backend.bus().await?;
    let control_plane = TestControlPlane::start(backend, bus.clone()).await?;
    control_plane.team("dlq-test").await?;
    let database = backend.database().await?;
    let aggregator = TestAggregator::start(
        &database.url,
        bus.clone(),
        &control_plane,
        AlertSinks::default(),
    )
    .await?;

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

    for (i, event) in good.iter().enumerate() {
        if i == 20 {
            bus.publish(USAGE, "garbage-1", garbage.to_vec().into())
                .await?;
        }
        if i == 40 {
            publish_one(&bus, &future_schema).await?;
        }
        publish_one(&bus, event).await?;
    }
    aggregator
        .wait_for_requests(good.len() as i64, Duration::from_secs(30))
        .await?;
    assert_eq!(
        aggregator.ledger.ledger_totals().await?,
        Sums::of(&good).ledger_totals(),
        "every readable event is recorded, and only those"
    );

    let mut dead = bus.subscribe(USAGE_DEAD_LETTER, 0).await?;
    let mut records = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(15), dead.next())
            .await
            .context("a dead-letter record within 15 s")?
            .context("the dead-letter subscription ended")??;
        let record: serde_json::Value = serde_json::from_slice(&message.payload)
            .with_context(|| format!("dead-letter record is JSON: {:?}", message.payload))?;
        records.push(record);
    }
    let more = tokio::time::timeout(Duration::from_secs(1), dead.next()).await;
    assert!(
        more.is_err(),
        "exactly two dead-letter records, got a third: {more:?}"
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
    assert_eq!(
        tollgate_proto::usage::UsageEvent::decode(kept.as_slice())?,
        future_schema
    );

    // Usage keeps flowing after the bad events.
    let later = generate(&mut rng, 5, day()?, chrono::Duration::hours(1), &dims);
    for event in &later {
        publish_one(&bus, event).await?;
    }
    aggregator
        .wait_for_requests((good.len() + later.len()) as i64, Duration::from_secs(30))
        .await?;
    aggregator.stop().await?;
    control_plane.stop().await?;
    Ok(())
}

on_both_backends!(
    ledger_and_rollups_count_each_request_once,
    malformed_events_go_to_the_dead_letter_topic_and_do_not_block,
);
