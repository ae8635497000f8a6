//! The request path of `/v1/chat/completions` and `/v1/embeddings`, in order: auth → model
//! access → route → provider call → response (streamed as it arrives) → usage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Deployment, RequestType};

use super::AppState;
use super::dispatch::{self, Outgoing};
use super::openai::{parse_chat, parse_embeddings, response_usage};
use super::record::UsageRecord;
use super::stream::{RelayParts, relay};
use crate::auth::authenticate;
use crate::error::EdgeError;
use crate::health::InFlight;
use crate::limits::RateHeaders;
use crate::pricing::{self, Tokens, cost};
use crate::providers::{UpstreamError, UpstreamReply};
use crate::route::rules::{self, RequestFacts};

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
    /// Counts the request against its deployment until the response ends.
    in_flight: InFlight,
    /// The client asked for the usage chunk of a stream itself.
    client_wants_usage: bool,
    /// Time spent in the edge before the upstream call.
    overhead: Duration,
    /// Input tokens to charge a stream that is abandoned before the provider reports usage.
    estimated_input: u64,
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
    let mut trace = Trace::default();
    let answer = call(&app, &headers, body, kind, &mut record, &mut trace).await;
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
            in_flight,
            ..
        }) => {
            drop(in_flight);
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
            in_flight,
            estimated_input,
        }) => {
            let relayed = relay(RelayParts {
                upstream,
                record,
                client_wants_usage,
                estimated_input,
                grace: app.config.abandoned_stream_grace,
                max_duration: app.config.max_stream_duration,
            });
            // The deployment counts the stream as in flight until it ends.
            let body = Body::from_stream(relayed.map(move |chunk| {
                let _held = &in_flight;
                chunk
            }));
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
    if trace.attempts > 0 {
        set_header(
            &mut response,
            "x-tollgate-attempts",
            &trace.attempts.to_string(),
        );
    }
    if let Some(model) = &trace.fallback {
        set_header(&mut response, "x-tollgate-fallback", model);
    }
    trace.rate.apply(response.headers_mut());
    if !response.headers().contains_key("x-tollgate-cost-usd")
        && response.status() != StatusCode::OK
    {
        set_header(&mut response, "x-tollgate-cost-usd", "0.000000");
    }
    response
}

/// How the request was served, for the response headers.
#[derive(Default)]
struct Trace {
    attempts: u32,
    /// The fallback model that answered.
    fallback: Option<String>,
    /// The rate limits that applied, for `x-ratelimit-*`.
    rate: RateHeaders,
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
    trace: &mut Trace,
) -> Result<Answer, EdgeError> {
    let state = app.policy.current().ok_or(EdgeError::NotReady)?;
    let now = chrono::Utc::now();
    let key = authenticate(headers, &state, now)?;
    record.set_key(key);
    let deadline_header = client_deadline(headers)?;
    let read = axum::body::to_bytes(body, app.config.max_body_bytes);
    let bytes = tokio::time::timeout(app.config.body_read_timeout, read)
        .await
        .map_err(|_| EdgeError::BodyTimeout(app.config.body_read_timeout))?
        .map_err(|_| EdgeError::TooLarge(app.config.max_body_bytes))?;
    let mut types = Vec::with_capacity(3);
    let (model, stream, client_wants_usage, max_output_requested) = match kind {
        Kind::Chat => {
            let request = parse_chat(&bytes)?;
            let wants_usage = request
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                == Some(true);
            let max_output = request.max_completion_tokens.or(request.max_tokens);
            let stream = request.stream == Some(true);
            types.push(RequestType::Chat);
            if stream {
                types.push(RequestType::Stream);
            }
            if request.tools.is_some() {
                types.push(RequestType::Tools);
            }
            (request.model.into_owned(), stream, wants_usage, max_output)
        }
        Kind::Embeddings => {
            types.push(RequestType::Embeddings);
            let model = parse_embeddings(&bytes)?.model.into_owned();
            (model, false, false, Some(0))
        }
    };
    // Unknown whatever the key may use (as OpenAI answers); only a known name is recorded.
    if state.deployments_for(&model).next().is_none() {
        return Err(EdgeError::ModelNotFound(model));
    }
    record.set_model(&model, stream);
    if !state.may_use(key, &model) {
        return Err(EdgeError::ModelNotAllowed(model));
    }
    let tags = request_tags(headers);
    let facts = RequestFacts {
        model: &model,
        key,
        client_tags: &tags,
        client_region: header_str(headers, "x-tollgate-region"),
        edge_region: &app.config.region,
        types: &types,
        body_bytes: bytes.len() as u64,
        now,
    };
    let decided = rules::decide(&state, &facts);
    let traffic = decided.as_ref();
    if let Some(message) = traffic.and_then(|t| t.deny.as_ref()) {
        return Err(EdgeError::RoutingDenied(message.clone()));
    }
    let estimated_input = bytes.len() as u64 / 4;
    let admitted = app.limits.admit(
        &state,
        key,
        &model,
        estimated_input + max_output_requested.unwrap_or(0),
        app.budgets.live_edges(),
    );
    match admitted {
        Ok(admission) => {
            trace.rate = admission.headers.clone();
            record.admit(admission);
        }
        Err(refusal) => {
            trace.rate = refusal.headers;
            return Err(refusal.error);
        }
    }
    let price = pricing::model_price(&state, &model);
    let worst_case_tokens = Tokens {
        // No tokenizer on the hot path: a token is at least ~2 bytes of JSON.
        input: bytes.len() as u64 / 2,
        output: max_output_requested.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
        ..Tokens::default()
    };
    record.hold(app.budgets.reserve(
        &state,
        key,
        &model,
        price.is_some(),
        cost(price, worst_case_tokens),
    )?);
    let timeout = deadline_header.unwrap_or_else(|| {
        state
            .routing_rule_for(&model)
            .map(|r| r.timeout_ms)
            .filter(|&ms| ms > 0)
            .map_or(
                app.config
                    .request_timeout
                    .unwrap_or(app.config.upstream_timeout),
                Duration::from_millis,
            )
    });
    let out = Outgoing {
        bytes: &bytes,
        model: &model,
        key,
        embeddings: kind == Kind::Embeddings,
        stream,
        // Streams always ask the upstream for usage, so that every stream is accounted; the
        // usage chunk is passed on only to clients that asked for it.
        request_stream_usage: stream && !client_wants_usage,
        estimated_tokens: estimated_input,
        worst_case_tokens,
        deadline: record.started() + timeout,
    };
    let overhead = record.started().elapsed();
    let dispatched = dispatch::dispatch(app, &state, &out, traffic, record).await;
    trace.attempts = dispatched.attempts;
    trace.fallback = dispatched.fallback;
    let served = dispatched.result?;
    Ok(Answer {
        reply: served.reply,
        deployment_id: served.deployment_id,
        in_flight: served.in_flight,
        client_wants_usage,
        overhead,
        estimated_input,
    })
}

/// The most a client may ask `x-tollgate-timeout` for.
const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The request's deadline from `x-tollgate-timeout` (seconds, fractions allowed), if set.
fn client_deadline(headers: &HeaderMap) -> Result<Option<Duration>, EdgeError> {
    let Some(value) = header_str(headers, "x-tollgate-timeout") else {
        return Ok(None);
    };
    let seconds: f64 = value.trim().parse().unwrap_or(f64::NAN);
    if !(seconds > 0.0 && seconds <= MAX_CLIENT_TIMEOUT.as_secs_f64()) {
        return Err(EdgeError::InvalidRequest(format!(
            "x-tollgate-timeout must be a number of seconds above 0 and at most {}, got {value:?}",
            MAX_CLIENT_TIMEOUT.as_secs()
        )));
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// The comma-separated tags of `x-tollgate-tags`.
fn request_tags(headers: &HeaderMap) -> Vec<String> {
    header_str(headers, "x-tollgate-tags")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
}

/// Opens the deployment's credential just for this call.
pub(super) fn open_secrets(
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
        UpstreamError::Unsupported(message) => EdgeError::InvalidRequest(message),
        UpstreamError::Failed(message) => EdgeError::Upstream(message),
        UpstreamError::Timeout(message) => EdgeError::UpstreamTimeout(message),
    }
}
