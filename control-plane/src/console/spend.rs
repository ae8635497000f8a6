//! The spend page: the last two weeks' spend per day as a server-drawn SVG chart, and the
//! period's spend by team, model or key, from the usage API.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Duration, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use tollgate_proto::convert::{from_timestamp, timestamp};
use tollgate_proto::usage::{QueryUsageRequest, UsageRow};

use super::pages::{self, Spend};
use super::{SignedIn, call, page, teams};

/// Days the chart covers, today included.
const DAYS: i64 = 14;

#[derive(Deserialize, Default)]
pub(super) struct SpendQuery {
    /// `team` (default), `model` or `key`.
    #[serde(default)]
    by: String,
}

pub(super) async fn spend(Query(query): Query<SpendQuery>, signed_in: SignedIn) -> Response {
    let (console, session) = (signed_in.console, signed_in.session);
    let by = match query.by.as_str() {
        "model" => "model",
        "key" => "key",
        _ => "team",
    };
    let today = Utc::now().date_naive();
    let start = (today - Duration::days(DAYS - 1)).and_time(chrono::NaiveTime::MIN);
    let request = QueryUsageRequest {
        start: Some(timestamp(start.and_utc())),
        end: Some(timestamp(Utc::now() + Duration::minutes(1))),
        granularity: "day".to_owned(),
        group_by: vec![by.to_owned()],
        ..QueryUsageRequest::default()
    };
    let rows = match console.usage.clone() {
        None => Err("no usage API configured (TOLLGATE_USAGE_URL)".to_owned()),
        Some(mut usage) => usage
            .query_usage(call(&session, request))
            .await
            .map(|answer| answer.into_inner().rows)
            .map_err(|status| status.message().to_owned()),
    };
    let teams = teams(&console, &session).await;
    let names: BTreeMap<&str, &str> = teams
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    let spend = rows.map(|rows| {
        let mut days: Vec<(String, f64)> = (0..DAYS)
            .map(|d| {
                let day = today - Duration::days(DAYS - 1 - d);
                (day.format("%m-%d").to_string(), 0.0)
            })
            .collect();
        let mut groups: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for row in &rows {
            if let Some(day) = row
                .bucket_start
                .as_ref()
                .and_then(from_timestamp)
                .map(|at| at.date_naive())
            {
                let index = (day - (today - Duration::days(DAYS - 1))).num_days();
                if let Some((_, cost)) = usize::try_from(index).ok().and_then(|i| days.get_mut(i)) {
                    *cost += row.cost_usd;
                }
            }
            let group = group_name(row, by, &names);
            let entry = groups.entry(group).or_default();
            entry.0 += row.cost_usd;
            entry.1 += row.requests;
        }
        Spend { by, days, groups }
    });
    page(StatusCode::OK, pages::spend(&session, by, &spend))
}

/// What a row is grouped by, as a person reads it (a team's name rather than its id).
fn group_name(row: &UsageRow, by: &str, teams: &BTreeMap<&str, &str>) -> String {
    let value = match by {
        "model" => &row.model,
        "key" => &row.key,
        _ => &row.team,
    };
    if value.is_empty() {
        return "(none)".to_owned();
    }
    match by {
        "team" => teams
            .get(value.as_str())
            .map_or(value.clone(), |n| (*n).to_owned()),
        _ => value.clone(),
    }
}
