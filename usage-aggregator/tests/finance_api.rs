//! The finance surface: `QueryUsage` and the CSV export report what the ledger holds, to
//! finance and admin tokens only.

use tollgate_test_support::aggregator as common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::{UsageEvent, UsageRow};

const HEADER: &str = "bucket_start,team,model,requests,input_tokens,output_tokens,cached_input_tokens,cost_usd,errors";

fn first_day() -> Result<DateTime<Utc>> {
    Utc.with_ymd_and_hms(2025, 5, 10, 0, 0, 0)
        .single()
        .context("a valid date")
}

fn day_of(e: &UsageEvent) -> i64 {
    let seconds = e.occurred_at.as_ref().map_or(0, |t| t.seconds);
    seconds - seconds.rem_euclid(86_400)
}

/// The sums of `rows` by `key`.
fn rows_by<K: Ord>(rows: &[UsageRow], key: impl Fn(&UsageRow) -> K) -> BTreeMap<K, Sums> {
    rows.iter().map(|r| (key(r), Sums::of_row(r))).collect()
}

/// The events `keep` keeps.
fn only(events: &[UsageEvent], keep: impl Fn(&UsageEvent) -> bool) -> Vec<UsageEvent> {
    events.iter().filter(|e| keep(e)).cloned().collect()
}

/// Nano-USD as USD with six decimals, rounded half up (costs are never negative).
fn usd6(nanos: i64) -> String {
    let micros = (nanos + 500) / 1000;
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

async fn query_usage_and_csv_match_the_ledger(backend: Backend) -> Result<()> {
    let (bus, control_plane) = start_control_plane(backend).await?;
    let viewer = control_plane.token("dashboards", "viewer").await?;
    let finance = control_plane.token("finance-team", "finance").await?;
    let (_database, aggregator) = start_aggregator(backend, &bus, &control_plane).await?;

    let mut rng = Rng::new(0x5eed_0004);
    let dims = Dimensions {
        // A comma in a team name must be quoted in the CSV.
        teams: &["team-a", "team-b", "research, ml"],
        models: &["gpt-4o", "claude-sonnet"],
        regions: &["eu-west-1"],
        edges: &["edge-a"],
    };
    let start = first_day()?;
    let events = generate(&mut rng, 600, start, chrono::Duration::days(2), &dims);
    publish_usage(&bus, with_resends(&mut rng, &events, 10)).await?;
    aggregator
        .wait_for_requests(events.len() as i64, Duration::from_secs(60))
        .await?;

    let mut usage = aggregator.usage(ADMIN_TOKEN).await?;
    let end = start + chrono::Duration::days(2);

    // By day, team and model, over both days.
    let rows = query_rows(
        &mut usage,
        usage_request(start, end, "day", &["team", "model"], &[]),
    )
    .await?;
    let got = rows_by(&rows, |r| {
        let day = r.bucket_start.as_ref().map_or(-1, |t| t.seconds);
        (day, r.team.clone(), r.model.clone())
    });
    let expected = sums_by(&events, |e| (day_of(e), e.team_id.clone(), e.model.clone()));
    ensure!(expected.len() == 12, "2 days x 3 teams x 2 models");
    assert_eq!(got.len(), rows.len(), "one row per (day, team, model)");
    assert_eq!(got, expected, "QueryUsage by day, team and model");

    // By team over the first day only.
    let rows = query_rows(
        &mut usage,
        usage_request(
            start,
            start + chrono::Duration::days(1),
            "day",
            &["team"],
            &[],
        ),
    )
    .await?;
    let got = rows_by(&rows, |r| r.team.clone());
    let first_day_events = only(&events, |e| day_of(e) == start.timestamp());
    assert_eq!(
        got,
        sums_by(&first_day_events, |e| e.team_id.clone()),
        "QueryUsage by team over one day"
    );
    assert!(
        rows.iter().all(|r| r.model.is_empty()),
        "dimensions not grouped by are empty"
    );

    // By model, for one team, over both days in one monthly bucket.
    let rows = query_rows(
        &mut usage,
        usage_request(start, end, "month", &["model"], &[("team", "team-b")]),
    )
    .await?;
    let got = rows_by(&rows, |r| r.model.clone());
    let team_b = only(&events, |e| e.team_id == "team-b");
    assert_eq!(
        got,
        sums_by(&team_b, |e| e.model.clone()),
        "QueryUsage by model filtered on a team"
    );
    let month = Utc
        .with_ymd_and_hms(2025, 5, 1, 0, 0, 0)
        .single()
        .context("a valid date")?;
    assert!(
        rows.iter()
            .all(|r| r.bucket_start == Some(timestamp(month))),
        "monthly buckets start on the 1st: {rows:?}"
    );

    // The CSV export.
    let http = reqwest::Client::new();
    let url = aggregator.http_url(
        "/v1/usage/export?start=2025-05-10T00:00:00Z&end=2025-05-12T00:00:00Z&granularity=day&group_by=team,model&format=csv",
    );
    let get = |token: Option<&str>| {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    let response = get(Some(ADMIN_TOKEN)).await?;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let csv = response.text().await?;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(HEADER), "the header row");
    let mut exported: BTreeMap<(i64, String, String), Vec<String>> = BTreeMap::new();
    for line in lines {
        let fields = split_csv(line);
        assert_eq!(fields.len(), 9, "nine fields in {line:?}");
        let bucket = &fields[0];
        assert!(
            bucket.ends_with('Z') && bucket.len() == "2025-05-10T00:00:00Z".len(),
            "ISO-8601 UTC bucket start: {line:?}"
        );
        let bucket: DateTime<Utc> = bucket
            .parse()
            .with_context(|| format!("bucket start of {line:?}"))?;
        let cost = &fields[7];
        let decimals = cost.split_once('.').map(|(_, d)| d.len());
        assert_eq!(decimals, Some(6), "cost with six decimals: {line:?}");
        exported.insert(
            (bucket.timestamp(), fields[1].clone(), fields[2].clone()),
            fields[3..].to_vec(),
        );
    }
    let expected_csv: BTreeMap<(i64, String, String), Vec<String>> = expected
        .iter()
        .map(|(key, s)| {
            (
                key.clone(),
                vec![
                    s.requests.to_string(),
                    s.input_tokens.to_string(),
                    s.output_tokens.to_string(),
                    s.cached_input_tokens.to_string(),
                    usd6(s.cost_nanos),
                    s.errors.to_string(),
                ],
            )
        })
        .collect();
    assert_eq!(exported, expected_csv, "the CSV rows");
    assert!(
        csv.contains("\"research, ml\""),
        "a field with a comma is quoted"
    );

    // Who may read usage.
    let response = get(Some(&finance)).await?;
    assert_eq!(response.status(), reqwest::StatusCode::OK, "finance token");
    assert_eq!(response.text().await?, csv);
    assert_eq!(
        get(Some(&viewer)).await?.status(),
        reqwest::StatusCode::FORBIDDEN,
        "viewer token"
    );
    assert_eq!(
        get(Some("tga-not-a-real-token")).await?.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "wrong token"
    );
    assert_eq!(
        get(None).await?.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "no token"
    );

    let one_day = usage_request(start, end, "day", &["team", "model"], &[]);
    let by_finance = aggregator
        .usage(&finance)
        .await?
        .query_usage(one_day.clone())
        .await?
        .into_inner();
    assert_eq!(by_finance.rows.len(), expected.len(), "finance over gRPC");
    for (who, token, code) in [
        ("a viewer", viewer.as_str(), tonic::Code::PermissionDenied),
        (
            "an unknown token",
            "tga-not-a-real-token",
            tonic::Code::Unauthenticated,
        ),
    ] {
        let refused = aggregator
            .usage(token)
            .await?
            .query_usage(one_day.clone())
            .await
            .err()
            .with_context(|| format!("{who} is refused"))?;
        assert_eq!(refused.code(), code, "{refused:?}");
    }

    // ExportUsage streams the same rows as QueryUsage.
    let mut stream = usage.export_usage(one_day.clone()).await?.into_inner();
    let mut streamed = Vec::new();
    while let Some(row) = stream.message().await? {
        streamed.push(row);
    }
    let queried = usage.query_usage(one_day).await?.into_inner().rows;
    assert_eq!(streamed, queried, "ExportUsage and QueryUsage agree");

    aggregator.stop().await?;
    control_plane.stop().await?;
    Ok(())
}

/// Splits one CSV line (RFC 4180 quoting).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

on_both_backends!(query_usage_and_csv_match_the_ledger);
