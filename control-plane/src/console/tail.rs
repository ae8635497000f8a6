//! The live request tail page, and its server-sent events.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tollgate_proto::admin::TailRequestsRequest;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::convert::from_timestamp;

use super::pages;
use super::{Console, Refused, call, list_teams, page, refusal, signed_in};

#[derive(Deserialize, Default)]
pub(super) struct TailFilter {
    #[serde(default)]
    team_id: String,
}

pub(super) async fn tail(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<TailFilter>,
) -> Result<Response, Refused> {
    let (_, session) = signed_in(&console, &headers)?;
    let teams = list_teams(&console, &session).await.unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        pages::tail(&session, &teams, &filter.team_id),
    ))
}

/// The tail as server-sent events named `request`, one JSON object each.
pub(super) async fn tail_events(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filter): Query<TailFilter>,
) -> Result<Response, Refused> {
    let (_, session) = signed_in(&console, &headers)?;
    let request = TailRequestsRequest {
        team_id: filter.team_id,
        ..Default::default()
    };
    let stream = match console.api.tail_requests(call(&session, request)).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => {
            let (code, _) = refusal(&status, "team_id");
            return Ok((code, status.message().to_owned()).into_response());
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
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
