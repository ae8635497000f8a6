//! `POST /v1/messages/count_tokens`: the input tokens of an Anthropic Messages request, for
//! clients (Claude Code among them) that size their context with it. Nothing is sent upstream
//! and nothing is charged: the count is the edge's estimate (see
//! [`anthropic::estimate_input_tokens`]), whichever provider serves the model.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::AppState;
use super::pipeline::read_body;
use crate::auth::authenticate;
use crate::error::EdgeError;
use crate::surfaces::{Surface, anthropic, render_error};

pub async fn count_tokens(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match count(&app, &headers, body).await {
        Ok(counted) => Json(counted).into_response(),
        Err(error) => render_error(Surface::Anthropic, &error),
    }
}

async fn count(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, EdgeError> {
    let state = app.policy.current().ok_or(EdgeError::NotReady)?;
    let key = authenticate(headers, &state, Utc::now())?;
    let bytes = read_body(app, body).await?;
    let chat = anthropic::count_tokens_request(&bytes).map_err(EdgeError::InvalidRequest)?;
    let model = chat["model"].as_str().unwrap_or_default();
    super::names::check("model", model)?;
    if state.deployments_for(model).next().is_none() {
        return Err(EdgeError::ModelNotFound(model.to_owned()));
    }
    if !state.may_use(key, model) {
        return Err(EdgeError::ModelNotAllowed(model.to_owned()));
    }
    Ok(json!({ "input_tokens": anthropic::estimate_input_tokens(&chat) }))
}
