//! `tollgate admin events`, `watch` and `snapshot`: the audit trail and the folded state.

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tollgate_proto::admin::{GetSnapshotRequest, ListEventsRequest, WatchEventsRequest};
use tollgate_proto::convert::from_timestamp;
use tollgate_proto::policy::PolicyEvent;

use super::AdminClient;
use crate::cli::output::{self, Format, View};
use crate::cli::reply::Out;
use crate::cli::tree::Node;

/// The columns of the event table.
const EVENT_COLUMNS: [&str; 5] = ["sequence", "type", "actor", "occurred_at", "aggregate_id"];

/// `tollgate admin events`.
#[derive(Args)]
pub struct Events {
    /// Only events after this sequence.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many (server default 100, at most 1000).
    #[arg(long, default_value_t = 0)]
    limit: u32,
}

impl Events {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        let request = ListEventsRequest {
            after_sequence: self.after,
            limit: self.limit,
        };
        let view = View {
            columns: Some(&EVENT_COLUMNS),
            ..View::default()
        };
        out.show_with("listing events", client.list_events(request).await, &view)
    }
}

/// `tollgate admin watch`.
#[derive(Args)]
pub struct Watch {
    /// Start after this sequence (0: the whole log, then new events).
    #[arg(long, default_value_t = 0)]
    after: u64,
}

/// A time as RFC 3339 UTC text, or empty.
fn rfc3339(at: Option<DateTime<Utc>>) -> String {
    at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Watch {
    /// Runs the command until the stream ends or fails.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        let request = WatchEventsRequest {
            after_sequence: self.after,
        };
        let mut stream = out.reply("watching events", client.watch_events(request).await)?;
        if out.format == Format::Table {
            let [sequence, kind, actor, at, aggregate] = EVENT_COLUMNS;
            output::emit(&format!(
                "{sequence:>8}  {kind:<22}  {actor:<12}  {at:<20}  {aggregate}\n"
            ))?;
        }
        loop {
            match stream.message().await {
                Ok(Some(event)) => output::emit(&line(&event, out.format)?)?,
                Ok(None) => return Ok(()),
                Err(status) => return Err(out.api.failed("watching events", &status)),
            }
        }
    }
}

/// One event as a line: compact JSON, or the event table's columns.
fn line(event: &PolicyEvent, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string(event)? + "\n",
        Format::Table => format!(
            "{:>8}  {:<22}  {:<12}  {:<20}  {}\n",
            event.sequence,
            event.r#type,
            event.actor,
            rfc3339(event.occurred_at.as_ref().and_then(from_timestamp)),
            event.aggregate_id
        ),
    })
}

/// What `snapshot` shows: the snapshot with its state as JSON.
#[derive(Serialize)]
struct Snapshot {
    sequence: u64,
    schema_version: u32,
    taken_at: String,
    state: Value,
}

/// `tollgate admin snapshot`: the state as JSON, or in table mode how many of each thing.
pub async fn snapshot(client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
    let snapshot = out.reply(
        "reading the snapshot",
        client.get_snapshot(GetSnapshotRequest {}).await,
    )?;
    let state: Value = serde_json::from_slice(&snapshot.state_json)
        .map_err(|e| anyhow::anyhow!("reading the snapshot: its state is not JSON: {e}"))?;
    let taken_at = rfc3339(snapshot.taken_at.as_ref().and_then(from_timestamp));
    if out.format == Format::Json {
        let shown = Snapshot {
            sequence: snapshot.sequence,
            schema_version: snapshot.schema_version,
            taken_at,
            state,
        };
        return output::print(&shown, out.format, &View::default());
    }
    // In a table, how many of each thing the state holds.
    let mut counts = Vec::new();
    if let Value::Object(fields) = state {
        for (name, value) in fields {
            let shown = match value {
                Value::Object(items) => Node::Int(items.len() as i128),
                Value::Array(items) => Node::Int(items.len() as i128),
                _ => continue,
            };
            counts.push((name, shown));
        }
    }
    let shown = Node::Record(vec![
        ("sequence".to_owned(), Node::Int(snapshot.sequence.into())),
        (
            "schema_version".to_owned(),
            Node::Int(snapshot.schema_version.into()),
        ),
        ("taken_at".to_owned(), Node::Text(taken_at)),
        ("state".to_owned(), Node::Record(counts)),
    ]);
    output::emit(&output::render(&shown, &View::default()))
}
