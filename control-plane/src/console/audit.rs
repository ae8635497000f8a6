//! The audit trail: the policy log's latest events with their actor and time, filtered by
//! event type and actor.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_proto::admin::ListEventsRequest;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::convert::from_timestamp;

use super::forms::{Notice, table};
use super::{Drawing, SignedIn, page};

/// The most events the page reads (the newest).
const SHOWN: u64 = 500;

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    /// Only event types starting with this (`key.`, `budget.set`…).
    #[serde(default)]
    r#type: String,
    /// Only events by actors containing this.
    #[serde(default)]
    actor: String,
}

pub(super) async fn audit(Query(query): Query<AuditQuery>, signed_in: SignedIn) -> Response {
    let (console, session) = (signed_in.console, signed_in.session);
    let mut drawing = Drawing::new(&console, &session, Notice::default());
    let newest = |after_sequence, limit| ListEventsRequest {
        after_sequence,
        limit,
    };
    // The last sequence first, then the newest events before it.
    let head = drawing
        .list(AdminService::list_events, newest(u64::MAX - 1, 1))
        .await;
    let after = head.last_sequence.saturating_sub(SHOWN);
    let events = if drawing.notice.message.is_empty() {
        let request = newest(after, SHOWN as u32);
        drawing
            .list(AdminService::list_events, request)
            .await
            .events
    } else {
        Vec::new()
    };
    let shown = events.iter().rev().filter(|e| {
        e.r#type.starts_with(query.r#type.trim()) && e.actor.contains(query.actor.trim())
    });
    let body = html! {
        form.inline method="get" action="/audit" {
            label for="type" { "Type" }
            input type="text" id="type" name="type" value=(query.r#type) placeholder="key.";
            label for="actor" { "Actor" }
            input type="text" id="actor" name="actor" value=(query.actor) placeholder="admin-token:…";
            button type="submit" { "Filter" }
        }
        p.hint { "The newest " (SHOWN) " changes, newest first. Each is an event in the policy log." }
        (table(&["Sequence", "Time (UTC)", "Type", "Actor", "Entity"], html! {
            @for event in shown {
                tr data-type=(event.r#type) {
                    td { (event.sequence) }
                    td {
                        (event.occurred_at.as_ref().and_then(from_timestamp)
                            .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default())
                    }
                    td { code { (event.r#type) } }
                    td { (event.actor) }
                    td { code { (event.aggregate_id) } }
                }
            }
        }))
    };
    page(StatusCode::OK, drawing.layout("Audit trail", body))
}
