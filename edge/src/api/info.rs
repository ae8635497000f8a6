//! `/v1/models`, health and metrics.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::auth::authenticate;
use crate::error::EdgeError;

/// The models the calling key may use, in OpenAI's list format.
pub async fn models(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(state) = app.policy.current() else {
        return EdgeError::NotReady.into_response();
    };
    let key = match authenticate(&headers, &state, chrono::Utc::now()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let names: BTreeSet<&str> = state
        .deployments
        .values()
        .map(|d| d.model_name.as_str())
        .filter(|m| state.may_use(key, m))
        .collect();
    let data: Vec<_> = names
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// 200 once policy is loaded, with its sequence and age; 503 before.
pub async fn ready(State(app): State<Arc<AppState>>) -> Response {
    let loaded = app.policy.current().is_some();
    let body = Json(json!({
        "ready": loaded,
        "policy_sequence": app.policy.sequence(),
        "policy_age_seconds": app.policy.age().map(|a| a.as_secs_f64()),
    }));
    let status = if loaded {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let staleness = app.policy.age().map_or(f64::INFINITY, |a| a.as_secs_f64());
    app.metrics.policy_staleness_seconds.set(staleness);
    app.metrics
        .policy_sequence
        .set(app.policy.sequence() as i64);
    app.metrics.policy_resyncs.set(app.policy.resyncs() as i64);
    app.metrics.policy_refused.set(app.policy.refused() as i64);
    app.metrics
        .budget_status_refused
        .set(app.budgets.refused() as i64);
    let (entries, bytes) = app.cache.size().await;
    app.metrics.cache_entries.set(entries as i64);
    app.metrics.cache_bytes.set(bytes as i64);
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics.render(),
    )
        .into_response()
}
