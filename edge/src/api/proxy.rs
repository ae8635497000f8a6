//! The request path of `/v1/chat/completions` and `/v1/embeddings`, in order: auth → model
//! access → route → provider call → response (streamed as it arrives) → usage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_policy::PolicyState;
use tollgate_policy::model::Deployment;

use super::AppState;
use super::openai::{parse_chat, parse_embeddings, response_usage, upstream_body};
use super::record::UsageRecord;
use super::stream::relay;
use crate::auth::authenticate;
use crate::error::EdgeError;
use crate::metrics::UpstreamLabels;
use crate::pricing::{Tokens, cost};
use crate::providers::{Timeouts, UpstreamCall, UpstreamError, UpstreamReply};
use crate::route;

/// Output tokens assumed for a budget reservation when the request sets no maximum.
const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Embeddings,
}

pub async fn chat_completions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(app, headers, body, Kind::Chat).await
}

pub async fn embeddings(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(app, headers, body, Kind::Embeddings).await
}

/// What the upstream answered, and what the response needs to say about it.
struct Answer {
    reply: UpstreamReply,
    deployment_id: String,
    /// The client asked for the usage chunk of a stream itself.
    client_wants_usage: bool,
    /// Time spent in the edge before the upstream call.
    overhead: Duration,
}

async fn handle(app: Arc<AppState>, headers: HeaderMap, body: Body, kind: Kind) -> Response {
    let route = match kind {
        Kind::Chat => "chat",
        Kind::Embeddings => "embeddings",
    };
    let mut record = UsageRecord::new(
        uuid::Uuid::now_v7().to_string(),
        route,
        &app.config.edge_id,
        &app.config.region,
        app.usage.clone(),
        app.metrics.clone(),
    );
    let request_id = record.request_id().to_owned();
    let answer = call(&app, &headers, body, kind, &mut record).await;
    let (mut response, deployment_id, overhead) = match answer {
        Err(error) => {
            record.fail(&error);
            let overhead = record.started().elapsed();
            (error.into_response(), None, overhead)
        }
        Ok(Answer {
            reply: UpstreamReply::Complete(body),
            deployment_id,
            overhead,
            ..
        }) => {
            let after = Instant::now();
            if let Some(tokens) = response_usage(&body) {
                record.set_tokens(tokens);
            }
            record.finish(200, "");
            let cost = record.cost_usd();
            let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            set_header(&mut response, "x-tollgate-cost-usd", &format!("{cost:.6}"));
            (response, Some(deployment_id), overhead + after.elapsed())
        }
        Ok(Answer {
            reply: UpstreamReply::Stream(upstream),
            deployment_id,
            client_wants_usage,
            overhead,
        }) => {
            let body = Body::from_stream(relay(upstream, record, client_wants_usage));
            let response = (
                [
                    (header::CONTENT_TYPE, "text/event-stream"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
                .into_response();
            (response, Some(deployment_id), overhead)
        }
    };
    app.metrics.overhead_seconds.observe(overhead.as_secs_f64());
    set_header(&mut response, "x-request-id", &request_id);
    set_header(
        &mut response,
        "x-tollgate-overhead-ms",
        &format!("{:.3}", overhead.as_secs_f64() * 1000.0),
    );
    if let Some(id) = deployment_id {
        set_header(&mut response, "x-tollgate-deployment", &id);
    }
    if !response.headers().contains_key("x-tollgate-cost-usd")
        && response.status() != StatusCode::OK
    {
        set_header(&mut response, "x-tollgate-cost-usd", "0.000000");
    }
    response
}

fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

async fn call(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    kind: Kind,
    record: &mut UsageRecord,
) -> Result<Answer, EdgeError> {
    let state = app.policy.current().ok_or(EdgeError::NotReady)?;
    let key = authenticate(headers, &state, chrono::Utc::now())?;
    record.set_key(key);
    let bytes = axum::body::to_bytes(body, app.config.max_body_bytes)
        .await
        .map_err(|_| EdgeError::TooLarge(app.config.max_body_bytes))?;
    let (model, stream, client_wants_usage, max_output) = match kind {
        Kind::Chat => {
            let request = parse_chat(&bytes)?;
            let wants_usage = request
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                == Some(true);
            let max_output = request
                .max_completion_tokens
                .or(request.max_tokens)
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
            (
                request.model.into_owned(),
                request.stream == Some(true),
                wants_usage,
                max_output,
            )
        }
        Kind::Embeddings => (
            parse_embeddings(&bytes)?.model.into_owned(),
            false,
            false,
            0,
        ),
    };
    record.set_model(&model, stream);
    if !key.allows_model(&model) {
        return Err(EdgeError::ModelNotAllowed(model));
    }
    let deployment =
        route::pick(&state, &model).ok_or_else(|| EdgeError::ModelNotFound(model.clone()))?;
    let price = state
        .prices
        .get(&model)
        .or_else(|| state.prices.get(&deployment.upstream_model));
    record.set_deployment(deployment, price);
    let worst_case = cost(
        price,
        Tokens {
            // No tokenizer on the hot path: a token is at least ~2 bytes of JSON.
            input: bytes.len() as u64 / 2,
            output: max_output,
            ..Tokens::default()
        },
    );
    record.hold(app.budgets.reserve(&state, key, &model, worst_case)?);
    let provider = app.providers.for_deployment(deployment).ok_or_else(|| {
        EdgeError::Upstream(format!(
            "deployment {} uses provider {}, which this edge does not support yet",
            deployment.id, deployment.provider
        ))
    })?;
    // Streams always ask the upstream for usage, so that every stream is accounted; the
    // usage chunk is passed on only to clients that asked for it.
    let body = upstream_body(
        &bytes,
        &model,
        &deployment.upstream_model,
        stream && !client_wants_usage,
    )?;
    let call = UpstreamCall {
        deployment,
        secrets: open_secrets(app, &state, deployment)?,
        body,
        stream,
        timeouts: Timeouts {
            total: app.config.upstream_timeout,
            first_byte: app.config.first_byte_timeout,
        },
    };
    let overhead = record.started().elapsed();
    let reply = match kind {
        Kind::Chat => provider.chat(call).await,
        Kind::Embeddings => provider.embeddings(call).await,
    }
    .map_err(|e| {
        let labels = UpstreamLabels {
            provider: deployment.provider.as_str(),
            code: e.code(),
        };
        app.metrics.upstream_errors.get_or_create(&labels).inc();
        upstream_failure(e)
    })?;
    Ok(Answer {
        reply,
        deployment_id: deployment.id.clone(),
        client_wants_usage,
        overhead,
    })
}

/// Opens the deployment's credential just for this call.
fn open_secrets(
    app: &AppState,
    state: &PolicyState,
    deployment: &Deployment,
) -> Result<Option<BTreeMap<String, String>>, EdgeError> {
    let Some(id) = &deployment.credential_id else {
        return Ok(None);
    };
    let unusable = |why: &str| {
        tracing::error!(deployment = %deployment.id, credential = %id, why, "credential unusable");
        EdgeError::Upstream(format!(
            "deployment {} has no usable credential",
            deployment.id
        ))
    };
    let credential = state
        .credentials
        .get(id)
        .ok_or_else(|| unusable("missing"))?;
    let key = app
        .sealing
        .as_ref()
        .ok_or_else(|| unusable("this edge has no TOLLGATE_CREDENTIAL_KEY"))?;
    let plain = key
        .open(&credential.sealed)
        .map_err(|_| unusable("cannot be opened with this edge's key"))?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|_| unusable("malformed"))
}

/// The client-facing error for an upstream failure.
pub fn upstream_failure(e: UpstreamError) -> EdgeError {
    match e {
        UpstreamError::RateLimited { retry_after } => EdgeError::UpstreamRateLimited {
            message: "the upstream provider is rate limiting requests; retry later".into(),
            retry_after: retry_after.and_then(|v| HeaderValue::from_str(&v).ok()),
        },
        UpstreamError::Rejected { status, message } => EdgeError::UpstreamRejected {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            message,
        },
        UpstreamError::Failed(message) => EdgeError::Upstream(message),
        UpstreamError::Timeout(message) => EdgeError::UpstreamTimeout(message),
    }
}
