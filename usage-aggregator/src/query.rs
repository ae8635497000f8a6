//! Usage queries over the rollups: buckets of an hour, a day or a month (UTC), grouped by the
//! dimensions asked for and filtered on any of them. Shared by `QueryUsage`, `ExportUsage` and
//! the CSV export.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::entry::{RollupKey, RollupSums};
use crate::ledger::{Ledger, LedgerError};

/// The dimensions usage can be grouped and filtered by.
pub const DIMENSIONS: &[&str] = &[
    "team",
    "user",
    "key",
    "model",
    "deployment",
    "provider",
    "region",
];

/// A validated usage query.
#[derive(Clone, Debug)]
pub struct UsageQuery {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub granularity: Granularity,
    pub group_by: Vec<String>,
    pub filters: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

/// One result row: a bucket, the grouped dimensions (by name), and the sums.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub bucket_start: DateTime<Utc>,
    pub dimensions: BTreeMap<String, String>,
    pub sums: RollupSums,
}

/// Why a query was refused; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl UsageQuery {
    /// Checks the parts of a query.
    pub fn new(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        granularity: &str,
        group_by: Vec<String>,
        filters: BTreeMap<String, String>,
    ) -> Result<Self, QueryError> {
        let invalid = |m: String| QueryError::Invalid(m);
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if s < e => (s, e),
            (Some(_), Some(_)) => return Err(invalid("start must be before end".into())),
            _ => {
                return Err(invalid(
                    "start and end are required (ISO-8601 UTC times)".into(),
                ));
            }
        };
        let granularity = match granularity {
            "hour" => Granularity::Hour,
            "" | "day" => Granularity::Day,
            "month" => Granularity::Month,
            other => {
                return Err(invalid(format!(
                    "granularity {other:?} must be hour, day or month"
                )));
            }
        };
        for name in group_by.iter().chain(filters.keys()) {
            if !DIMENSIONS.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "unknown dimension {name:?}; use {}",
                    DIMENSIONS.join(", ")
                )));
            }
        }
        Ok(UsageQuery {
            start,
            end,
            granularity,
            group_by,
            filters,
        })
    }

    /// Runs the query.
    pub async fn run(&self, ledger: &Ledger) -> Result<Vec<Row>, QueryError> {
        let table = if self.granularity == Granularity::Hour {
            "hour"
        } else {
            "day"
        };
        let rows = ledger
            .rollups(
                table,
                self.start.timestamp_millis(),
                self.end.timestamp_millis(),
            )
            .await?;
        let mut grouped: BTreeMap<(i64, Vec<String>), RollupSums> = BTreeMap::new();
        for (bucket_ms, key, sums) in rows {
            if self
                .filters
                .iter()
                .any(|(dim, value)| dimension(&key, dim) != value)
            {
                continue;
            }
            let bucket = self.bucket(bucket_ms);
            let values = self
                .group_by
                .iter()
                .map(|d| dimension(&key, d).to_owned())
                .collect();
            grouped.entry((bucket, values)).or_default().merge(&sums);
        }
        Ok(grouped
            .into_iter()
            .map(|((bucket, values), sums)| Row {
                bucket_start: DateTime::from_timestamp_millis(bucket).unwrap_or_default(),
                dimensions: self.group_by.iter().cloned().zip(values).collect(),
                sums,
            })
            .collect())
    }

    fn bucket(&self, bucket_ms: i64) -> i64 {
        if self.granularity != Granularity::Month {
            return bucket_ms;
        }
        let day = DateTime::from_timestamp_millis(bucket_ms).unwrap_or_default();
        Utc.with_ymd_and_hms(day.year(), day.month(), 1, 0, 0, 0)
            .single()
            .map_or(bucket_ms, |d| d.timestamp_millis())
    }
}

fn dimension<'k>(key: &'k RollupKey, name: &str) -> &'k str {
    match name {
        "team" => &key.team_id,
        "user" => &key.user_id,
        "key" => &key.key_id,
        "model" => &key.model,
        "deployment" => &key.deployment_id,
        "provider" => &key.provider,
        _ => &key.region,
    }
}

/// A cost in nano-USD as USD with six decimals (rounded half away from zero).
pub fn usd6(nanos: i64) -> String {
    let micros = (nanos + nanos.signum() * 500) / 1000;
    format!(
        "{}{}.{:06}",
        if micros < 0 { "-" } else { "" },
        (micros / 1_000_000).abs(),
        (micros % 1_000_000).abs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_have_six_decimals() {
        assert_eq!(usd6(1_234_567_890), "1.234568");
        assert_eq!(usd6(0), "0.000000");
        assert_eq!(usd6(499), "0.000000");
        assert_eq!(usd6(500), "0.000001");
    }
}
