//! The live request tail page, and its server-sent events.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tollgate_proto::admin::TailRequestsRequest;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::convert::from_timestamp;

use super::pages;
use super::{SignedIn, call, page, refusal, teams};

#[derive(Deserialize, Default)]
pub(super) struct TailFilter {
    #[serde(default)]
    team_id: String,
}

pub(super) async fn tail(Query(filter): Query<TailFilter>, signed_in: SignedIn) -> Response {
    let (console, session) = (signed_in.console, signed_in.session);
    let teams = teams(&console, &session).await;
    page(
        StatusCode::OK,
        pages::tail(&session, &teams, &filter.team_id),
    )
}

/// The tail as server-sent events named `request`, one JSON object each.
pub(super) async fn tail_events(Query(filter): Query<TailFilter>, signed_in: SignedIn) -> Response {
    let (console, session) = (signed_in.console, signed_in.session);
    let request = TailRequestsRequest {
        team_id: filter.team_id,
        ..Default::default()
    };
    let stream = match console.api.tail_requests(call(&session, request)).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => {
            let (code, _) = refusal(&status, "team_id");
            return (code, status.message().to_owned()).into_response();
        }
    };
    let events = stream
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(|event| async move {
            let event = event.ok()?;
            let at = event
                .occurred_at
                .as_ref()
                .and_then(from_timestamp)
                .map(|at| at.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            let row = serde_json::json!({
                "occurred_at": at,
                "request_id": event.request_id,
                "status": event.status,
                "error_code": event.error_code,
                "model": event.model,
                "team_id": event.team_id,
                "key_id": event.key_id,
                "input_tokens": event.input_tokens,
                "output_tokens": event.output_tokens,
                "cost_usd": event.cost_usd,
                "latency_ms": event.latency_ms,
            });
            Some(Ok::<_, std::convert::Infallible>(
                Event::default().event("request").data(row.to_string()),
            ))
        });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
