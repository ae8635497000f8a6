//! The audit trail: the policy log's latest events with their actor and time, filtered by
//! event type and actor.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_proto::admin::ListEventsRequest;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::convert::from_timestamp;

use super::pages::{Notice, layout};
use super::{Console, Refused, call, listed, page, signed_in};

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

pub(super) async fn audit(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Response, Refused> {
    let (_, session) = signed_in(&console, &headers)?;
    let mut notice = Notice::default();
    let newest = |after, limit| {
        console.api.list_events(call(
            &session,
            ListEventsRequest {
                after_sequence: after,
                limit,
            },
        ))
    };
    // The last sequence first, then the newest events before it.
    let head = listed(newest(u64::MAX - 1, 1).await, &mut notice);
    let after = head.last_sequence.saturating_sub(SHOWN);
    let events = if notice.message.is_empty() {
        listed(newest(after, SHOWN as u32).await, &mut notice).events
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
        table {
            thead { tr { th { "Sequence" } th { "Time (UTC)" } th { "Type" } th { "Actor" } th { "Entity" } } }
            tbody {
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
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        layout("Audit trail", &session, &notice, body),
    ))
}
