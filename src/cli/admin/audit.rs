//! `tollgate admin events`, `watch` and `snapshot`: the audit trail and the folded state.

use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tollgate_proto::admin::{GetSnapshotRequest, ListEventsRequest, WatchEventsRequest};
use tollgate_proto::convert::from_timestamp;
use tollgate_proto::policy::PolicyEvent;

use super::AdminClient;
use crate::cli::output::{self, Align, Format, View, rfc3339};
use crate::cli::reply::Out;
use crate::cli::tree::Node;

/// The columns of the event table, and how `watch` pads them.
const EVENT_COLUMNS: [(&str, Align); 5] = [
    ("sequence", Align::Right(8)),
    ("type", Align::Left(22)),
    ("actor", Align::Left(12)),
    ("occurred_at", Align::Left(20)),
    ("aggregate_id", Align::Left(0)),
];

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
        let columns = EVENT_COLUMNS.map(|(name, _)| name);
        let view = View {
            columns: Some(&columns),
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

impl Watch {
    /// Runs the command until the stream ends or fails.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        let request = WatchEventsRequest {
            after_sequence: self.after,
        };
        out.follow(
            "watching events",
            client.watch_events(request).await,
            &EVENT_COLUMNS,
            cells,
        )
        .await
    }
}

/// An event's cells in the event table.
fn cells(event: &PolicyEvent) -> [String; 5] {
    [
        event.sequence.to_string(),
        event.r#type.clone(),
        event.actor.clone(),
        rfc3339(event.occurred_at.as_ref().and_then(from_timestamp)),
        event.aggregate_id.clone(),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_lines_up_under_the_header() {
        let aligns = EVENT_COLUMNS.map(|(_, align)| align);
        let event = PolicyEvent {
            sequence: 7,
            r#type: "team.created".into(),
            actor: "bootstrap".into(),
            aggregate_id: "t1".into(),
            ..PolicyEvent::default()
        };
        assert_eq!(
            output::aligned(&aligns, cells(&event)),
            "       7  team.created            bootstrap                           t1\n"
        );
        assert_eq!(
            output::aligned(&aligns, EVENT_COLUMNS.map(|(name, _)| name)),
            "sequence  type                    actor         occurred_at           aggregate_id\n"
        );
    }
}
