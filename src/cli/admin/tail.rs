//! `tollgate admin tail`: the requests every edge serves, live, one line each.

use clap::Args;
use tollgate_proto::admin::TailRequestsRequest;
use tollgate_proto::convert::from_timestamp;
use tollgate_proto::usage::UsageEvent;

use super::AdminClient;
use crate::cli::output::{self, Format};
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
        let mut stream = out.reply("tailing requests", client.tail_requests(request).await)?;
        if out.format == Format::Table {
            output::emit(&format!(
                "{:<20}  {:>6}  {:<24}  {:<14}  {:<14}  {:>7}  {:>7}  {:>10}  {:>8}  {}\n",
                "occurred_at",
                "status",
                "model",
                "team",
                "key",
                "input",
                "output",
                "cost_usd",
                "ms",
                "request_id"
            ))?;
        }
        loop {
            match stream.message().await {
                Ok(Some(event)) => output::emit(&line(&event, out.format)?)?,
                Ok(None) => return Ok(()),
                Err(status) => return Err(out.api.failed("tailing requests", &status)),
            }
        }
    }
}

/// One request as a line: compact JSON, or the table's columns.
fn line(event: &UsageEvent, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string(event)? + "\n",
        Format::Table => {
            let at = event
                .occurred_at
                .as_ref()
                .and_then(from_timestamp)
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            let status = if event.error_code.is_empty() {
                event.status.to_string()
            } else {
                format!("{} {}", event.status, event.error_code)
            };
            format!(
                "{at:<20}  {status:>6}  {:<24}  {:<14}  {:<14}  {:>7}  {:>7}  {:>10.6}  {:>8}  {}\n",
                event.model,
                event.team_id,
                event.key_id,
                event.input_tokens,
                event.output_tokens,
                event.cost_usd,
                event.latency_ms,
                event.request_id
            )
        }
    })
}
