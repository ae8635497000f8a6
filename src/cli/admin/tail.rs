//! `tollgate admin tail`: the requests every edge serves, live, one line each.

use clap::Args;
use tollgate_proto::admin::TailRequestsRequest;
use tollgate_proto::convert::from_timestamp;
use tollgate_proto::usage::UsageEvent;

use super::AdminClient;
use crate::cli::output::{Align, rfc3339};
use crate::cli::reply::Out;

/// `tollgate admin tail`.
#[derive(Args)]
pub struct Tail {
    /// Only this team's requests.
    #[arg(long)]
    team: Option<String>,
    /// Only this key's requests (its id, not its secret).
    #[arg(long)]
    key: Option<String>,
    /// Only requests for this model (asked for, or answering as a fallback).
    #[arg(long)]
    model: Option<String>,
    /// Only requests answered with this HTTP status.
    #[arg(long)]
    status: Option<u32>,
    /// Only requests that failed (status 400 and above).
    #[arg(long)]
    errors: bool,
}

impl Tail {
    /// Runs the command until the stream ends, fails or is interrupted.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        let request = TailRequestsRequest {
            team_id: self.team.unwrap_or_default(),
            key_id: self.key.unwrap_or_default(),
            model: self.model.unwrap_or_default(),
            status: self.status.unwrap_or(0),
            errors_only: self.errors,
        };
        out.follow(
            "tailing requests",
            client.tail_requests(request).await,
            &COLUMNS,
            cells,
        )
        .await
    }
}

/// The columns of the lines, and how they are padded.
const COLUMNS: [(&str, Align); 10] = [
    ("occurred_at", Align::Left(20)),
    ("status", Align::Right(6)),
    ("model", Align::Left(24)),
    ("team", Align::Left(14)),
    ("key", Align::Left(14)),
    ("input", Align::Right(7)),
    ("output", Align::Right(7)),
    ("cost_usd", Align::Right(10)),
    ("ms", Align::Right(8)),
    ("request_id", Align::Left(0)),
];

/// A request's cells in the table.
fn cells(event: &UsageEvent) -> [String; 10] {
    let status = if event.error_code.is_empty() {
        event.status.to_string()
    } else {
        format!("{} {}", event.status, event.error_code)
    };
    [
        rfc3339(event.occurred_at.as_ref().and_then(from_timestamp)),
        status,
        event.model.clone(),
        event.team_id.clone(),
        event.key_id.clone(),
        event.input_tokens.to_string(),
        event.output_tokens.to_string(),
        format!("{:.6}", event.cost_usd),
        event.latency_ms.to_string(),
        event.request_id.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use tollgate_proto::convert::timestamp;

    use super::*;
    use crate::cli::output::aligned;

    #[test]
    fn a_request_lines_up_under_the_header() -> Result<(), chrono::ParseError> {
        let aligns = COLUMNS.map(|(_, align)| align);
        assert_eq!(
            aligned(&aligns, COLUMNS.map(|(name, _)| name)),
            "occurred_at           status  model                     team            \
             key               input   output    cost_usd        ms  request_id\n"
        );
        let event = UsageEvent {
            occurred_at: Some(timestamp("2026-11-01T08:00:00Z".parse::<DateTime<Utc>>()?)),
            status: 429,
            error_code: "rate_limited".into(),
            model: "gpt-4o".into(),
            team_id: "t1".into(),
            key_id: "k1".into(),
            input_tokens: 12,
            output_tokens: 3,
            cost_usd: 0.5,
            latency_ms: 250,
            request_id: "req-1".into(),
            ..UsageEvent::default()
        };
        assert_eq!(
            aligned(&aligns, cells(&event)),
            "2026-11-01T08:00:00Z  429 rate_limited  gpt-4o                    t1              \
             k1                   12        3    0.500000       250  req-1\n"
        );
        Ok(())
    }
}
