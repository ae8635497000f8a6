//! The request path of every model route — OpenAI's chat and embeddings, and the translated
//! surfaces (Bedrock runtime, Anthropic Messages, OpenAI Responses; see [`crate::surfaces`]):
//! one function per phase, in the order they run — authenticate → parse (a surface's request
//! is translated to a chat request here) → access → limits → budget → cache → guardrails (in)
//! → route and call → guardrails (out) → respond (rendered in the surface's format, and the
//! answer cached). Usage is recorded when the request's [`UsageRecord`] is dropped (after the
//! last byte of a stream), whatever happened on the way. Each phase runs in a span of the
//! request's trace and is timed in `tollgate_phase_duration_seconds` (see [`crate::telemetry`]).

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hyper::body::Body as _;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{RequestType, TrafficAction, VirtualKey};
use tracing::{Instrument, Span};

use super::AppState;
use super::dispatch::{self, Outgoing};
use super::openai::{model_span, parse_chat, parse_embeddings, response_usage};
use super::record::UsageRecord;
use super::semantic;
use super::stream::{RelayParts, relay};
use crate::auth::{authenticate, authenticate_signed, sigv4};
use crate::cache;
use crate::error::EdgeError;
use crate::guardrails::stream::{StreamGuard, guarded};
use crate::guardrails::text::{Shape, Texts};
use crate::guardrails::{Applicable, Source, Tally};
use crate::health::InFlight;
use crate::limits::RateHeaders;
use crate::metrics::Phase;
use crate::pricing::{self, Tokens, cost};
use crate::providers::UpstreamReply;
use crate::route::rules::{self, RequestFacts};
use crate::surfaces::{self, Present, Route, Surface};
use crate::telemetry;

/// Output tokens assumed for a budget reservation when the request sets no maximum.
const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;
/// The most a client may ask `x-tollgate-timeout` for.
const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(3600);

// The answer's own headers. Names made once: inserting a `&'static str` name copies it into
// every response.
const COST_USD: HeaderName = HeaderName::from_static("x-tollgate-cost-usd");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const OVERHEAD_MS: HeaderName = HeaderName::from_static("x-tollgate-overhead-ms");
const DEPLOYMENT: HeaderName = HeaderName::from_static("x-tollgate-deployment");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-tollgate-attempts");
const FALLBACK: HeaderName = HeaderName::from_static("x-tollgate-fallback");
const CACHE: HeaderName = HeaderName::from_static("x-tollgate-cache");

/// Which OpenAI route the request came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Embeddings,
}

impl Kind {
    /// The route's name in metrics and cache keys.
    fn route(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Embeddings => "embeddings",
        }
    }
}

/// The edge's state, as the route handlers take it.
type App = State<Arc<AppState>>;

/// OpenAI `Chat Completions`.
pub async fn chat_completions(State(app): App, headers: HeaderMap, body: Body) -> Response {
    handle(app, headers, body, Kind::Chat, None).await
}

/// OpenAI `Embeddings`.
pub async fn embeddings(State(app): App, headers: HeaderMap, body: Body) -> Response {
    handle(app, headers, body, Kind::Embeddings, None).await
}

/// Bedrock's runtime API: `/model/{modelId}/{operation}`, where the operation is `converse`,
/// `converse-stream`, `invoke` or `invoke-with-response-stream`.
pub async fn bedrock(
    State(app): App,
    Path((model_id, operation)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let stream = operation.ends_with("-stream");
    let route = match operation.as_str() {
        "converse" | "converse-stream" => Route::Converse { model_id, stream },
        "invoke" | "invoke-with-response-stream" => Route::Invoke { model_id, stream },
        _ => {
            let error = EdgeError::InvalidRequest(format!(
                "unknown Bedrock operation {operation:?}: this gateway serves converse, \
                 converse-stream, invoke and invoke-with-response-stream"
            ));
            return surfaces::render_error(Surface::Bedrock, &error);
        }
    };
    handle(app, headers, body, Kind::Chat, Some((route, Some(uri)))).await
}

/// OpenAI `Responses`.
pub async fn responses(State(app): App, headers: HeaderMap, body: Body) -> Response {
    let route = Some((Route::Responses, None));
    handle(app, headers, body, Kind::Chat, route).await
}

/// Anthropic `Messages`.
pub async fn messages(State(app): App, headers: HeaderMap, body: Body) -> Response {
    let route = Some((Route::Messages, None));
    handle(app, headers, body, Kind::Chat, route).await
}

/// What one request carries from phase to phase.
struct Ctx {
    kind: Kind,
    /// The translated surface the request came in on (`None`: OpenAI's own).
    route: Option<Route>,
    /// How the answer is rendered for the client.
    present: Present,
    /// The model, when the answer is rendered by a surface that names it.
    model: String,
    /// The request's URI, on routes that take SigV4 signatures.
    signed_uri: Option<Uri>,
    /// The usage event being filled in; recorded when dropped.
    record: UsageRecord,
    /// How the request was served, for the response headers.
    attempts: u32,
    fallback: Option<String>,
    rate: RateHeaders,
    /// What the response cache said, when a cache policy applies.
    cache: Option<cache::Status>,
}

/// The request as parsed: what every later phase reads.
struct Parsed {
    bytes: Bytes,
    model: String,
    /// Where the model name stands in `bytes`, when it can be replaced there.
    model_at: Option<Range<usize>>,
    stream: bool,
    /// The client asked for the usage chunk of a stream itself.
    client_wants_usage: bool,
    /// `max_completion_tokens` / `max_tokens`, when the client set one.
    max_output: Option<u64>,
    types: Vec<RequestType>,
    /// From `x-tollgate-timeout`.
    client_timeout: Option<Duration>,
}

impl Parsed {
    /// The body, rewritten (by a guardrail): where the model stood in the old one says nothing
    /// of the new one.
    fn replace_body(&mut self, bytes: Bytes) {
        self.bytes = bytes;
        self.model_at = None;
    }

    /// Input tokens as estimated without a tokenizer: one per four bytes of the body.
    fn estimated_input(&self) -> u64 {
        self.bytes.len() as u64 / 4
    }
}

/// Where the answer came from.
enum Served {
    Upstream(Answer),
    /// The response cache; a streamed request gets the entry replayed as a stream.
    Cache {
        entry: Arc<cache::Entry>,
        stream: bool,
        client_wants_usage: bool,
    },
}

/// What the upstream answered, and what the response needs to say about it.
struct Answer {
    reply: UpstreamReply,
    deployment_id: String,
    /// Counts the request against its deployment until the response ends.
    in_flight: InFlight,
    client_wants_usage: bool,
    /// Time spent in the edge before the upstream call.
    overhead: Duration,
    estimated_input: u64,
}

async fn handle(
    app: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
    route: Option<(Route, Option<Uri>)>,
) -> Response {
    let (route, signed_uri) = route.map_or((None, None), |(r, uri)| (Some(r), uri));
    let name = route.as_ref().map_or(kind.route(), Route::name);
    let request_id = uuid::Uuid::now_v7().to_string();
    let span = telemetry::request_span(name, &request_id, &headers);
    let trace_id = telemetry::trace_id(&span, &headers);
    let mut ctx = Ctx {
        kind,
        route,
        present: Present::OpenAi,
        model: String::new(),
        signed_uri,
        record: UsageRecord::new(
            request_id,
            name,
            (span.clone(), trace_id),
            &app.config.edge_id,
            &app.config.region,
            app.usage.clone(),
            app.metrics.clone(),
        ),
        attempts: 0,
        fallback: None,
        rate: RateHeaders::default(),
        cache: None,
    };
    let answer = run(&app, &headers, body, &mut ctx).instrument(span).await;
    respond(&app, ctx, answer)
}

/// The phases up to the answer; the first to refuse ends the request.
async fn run(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    ctx: &mut Ctx,
) -> Result<Served, EdgeError> {
    let state = app.policy.current().ok_or(EdgeError::NotReady)?;
    let now = Utc::now();
    // A SigV4 signature covers the body, so it is checked once the body is read.
    let key = if ctx.signed_uri.is_some() && sigv4::is_signed(headers) {
        None
    } else {
        Some(phase(app, Phase::Auth, || {
            authenticate_key(&state, headers, now, ctx)
        })?)
    };
    let body = read_body(app, body).await?;
    let key = match key {
        Some(key) => key,
        None => phase(app, Phase::Auth, || {
            authenticate_signature(app, &state, headers, &body, now, ctx)
        })?,
    };
    let request = phase(app, Phase::Parse, || parse(&state, headers, body, ctx))?;
    let traffic = phase(app, Phase::Access, || {
        access(app, &state, key, headers, &request, now, ctx)
    })?;
    phase(app, Phase::Limits, || {
        limits(app, &state, key, &request, ctx)
    })?;
    let worst_case = phase(app, Phase::Budget, || {
        budget(app, &state, key, &request, ctx)
    })?;
    let guardrails = app.guardrails.applicable(&state, key, &request.model);
    let asked = cache::Asked {
        route: ctx.kind.route(),
        model: &request.model,
        headers,
        body: &request.bytes,
    };
    let cached = app.cache.plan(&state, key, asked, &guardrails);
    let mut embedding = None;
    if let Some(plan) = &cached {
        let started = Instant::now();
        let hit = cache_lookup(app, &state, key, plan, &request, &mut embedding, ctx)
            .instrument(telemetry::phase_span(Phase::Cache))
            .await;
        app.metrics
            .time_phase(Phase::Cache, started.elapsed().as_secs_f64());
        if let Some(hit) = hit {
            return Ok(hit);
        }
    }
    let request = guard_input(app, &state, &guardrails, request, ctx).await?;
    let answer = route_and_call(
        app,
        &state,
        key,
        &request,
        traffic.as_ref(),
        worst_case,
        ctx,
    )
    .await?;
    let answer = guard_output(app, &state, &guardrails, answer, ctx).await?;
    if let (Some(plan), UpstreamReply::Complete(body)) = (&cached, &answer.reply) {
        app.cache
            .store(plan, body.clone(), embedding.as_deref())
            .await;
    }
    Ok(Served::Upstream(answer))
}

/// Cache: a fresh answer to the same request within the policy's scope is the answer; with a
/// semantic tier, so is the answer to a similar enough request (the request's `embedding` is
/// kept for storing its own answer).
async fn cache_lookup(
    app: &AppState,
    state: &PolicyState,
    key: &VirtualKey,
    plan: &cache::Plan,
    request: &Parsed,
    embedding: &mut Option<Vec<f32>>,
    ctx: &mut Ctx,
) -> Option<Served> {
    let (status, mut entry) = app.cache.lookup(plan).await;
    ctx.cache = Some(status);
    if status == cache::Status::Miss
        && let Some(semantic) = &plan.semantic
    {
        let model = &semantic.embeddings_model;
        *embedding = semantic::embed(app, state, key, model, &semantic.text).await;
        if let Some(vector) = embedding.as_deref() {
            entry = app.cache.lookup_similar(plan, vector).await;
            if entry.is_some() {
                ctx.cache = Some(cache::Status::Hit);
            }
        }
    }
    let entry = entry?;
    ctx.record.set_cache_hit();
    Some(Served::Cache {
        entry,
        stream: request.stream,
        client_wants_usage: request.client_wants_usage,
    })
}

/// Authenticate: the key, from `Authorization` or `x-api-key`.
fn authenticate_key<'s>(
    state: &'s PolicyState,
    headers: &HeaderMap,
    now: DateTime<Utc>,
    ctx: &mut Ctx,
) -> Result<&'s VirtualKey, EdgeError> {
    let key = authenticate(headers, state, now)?;
    ctx.record.set_key(key);
    Ok(key)
}

/// Authenticate, SigV4: the signature over the request as received, body included.
fn authenticate_signature<'s>(
    app: &AppState,
    state: &'s PolicyState,
    headers: &HeaderMap,
    body: &Bytes,
    now: DateTime<Utc>,
    ctx: &mut Ctx,
) -> Result<&'s VirtualKey, EdgeError> {
    let Some(uri) = &ctx.signed_uri else {
        return Err(EdgeError::InvalidApiKey(
            "SigV4 is accepted on Bedrock routes only",
        ));
    };
    let key = signed_key(app, state, uri, headers, body, now)?;
    ctx.record.set_key(key);
    Ok(key)
}

/// The key whose SigV4 signature `headers` carry for this POST of `body` to `uri`.
pub(super) fn signed_key<'s>(
    app: &AppState,
    state: &'s PolicyState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<&'s VirtualKey, EdgeError> {
    let auth = sigv4::parse(headers).map_err(EdgeError::SignatureRejected)?;
    let request = sigv4::Signed {
        method: "POST",
        uri,
        headers,
        body,
    };
    authenticate_signed(
        &auth,
        &request,
        state,
        app.sealing.as_ref(),
        &app.replays,
        now,
    )
}

/// The body, read within the body timeout, up to the size limit.
pub(super) async fn read_body(app: &AppState, body: Body) -> Result<Bytes, EdgeError> {
    // A declared length over the limit is refused before a byte is read: a hostile client
    // should not make the edge read ten megabytes to learn that.
    if body.size_hint().lower() > app.config.max_body_bytes as u64 {
        return Err(EdgeError::TooLarge(app.config.max_body_bytes));
    }
    let read = axum::body::to_bytes(body, app.config.max_body_bytes);
    tokio::time::timeout(app.config.body_read_timeout, read)
        .await
        .map_err(|_| EdgeError::BodyTimeout(app.config.body_read_timeout))?
        .map_err(|_| EdgeError::TooLarge(app.config.max_body_bytes))
}

/// Parse: the body (translated from its surface's format) and the headers.
fn parse(
    state: &PolicyState,
    headers: &HeaderMap,
    mut bytes: Bytes,
    ctx: &mut Ctx,
) -> Result<Parsed, EdgeError> {
    let client_timeout = client_timeout(headers)?;
    if let Some(route) = &ctx.route {
        let translated = surfaces::translate(route, state, &bytes)?;
        bytes = translated.body;
        ctx.present = translated.present;
        if translated.embeddings {
            ctx.kind = Kind::Embeddings;
        }
    }
    let mut types = Vec::with_capacity(3);
    let (model, model_at, stream, client_wants_usage, max_output) = match ctx.kind {
        Kind::Chat => {
            let request = parse_chat(&bytes)?;
            let model_at = model_span(&bytes, &request.model);
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
            let model = request.model.into_owned();
            (model, model_at, stream, wants_usage, max_output)
        }
        Kind::Embeddings => {
            types.push(RequestType::Embeddings);
            let model = parse_embeddings(&bytes)?.model;
            let model_at = model_span(&bytes, &model);
            (model.into_owned(), model_at, false, false, Some(0))
        }
    };
    if ctx.route.is_some() {
        ctx.model.clone_from(&model);
    }
    Ok(Parsed {
        bytes,
        model,
        model_at,
        stream,
        client_wants_usage,
        max_output,
        types,
        client_timeout,
    })
}

/// Access: the model exists, the key may use it, and no traffic rule denies the request;
/// returns the traffic rule's routing decision.
fn access(
    app: &AppState,
    state: &PolicyState,
    key: &VirtualKey,
    headers: &HeaderMap,
    request: &Parsed,
    now: DateTime<Utc>,
    ctx: &mut Ctx,
) -> Result<Option<TrafficAction>, EdgeError> {
    let model = &request.model;
    // Unknown whatever the key may use (as OpenAI answers); only a known name is recorded.
    if state.deployments_for(model).next().is_none() {
        return Err(EdgeError::ModelNotFound(model.clone()));
    }
    ctx.record.set_model(model, request.stream);
    if !state.may_use(key, model) {
        return Err(EdgeError::ModelNotAllowed(model.clone()));
    }
    let tags = request_tags(headers);
    let facts = RequestFacts {
        model,
        key,
        client_tags: &tags,
        client_region: header_str(headers, "x-tollgate-region"),
        edge_region: &app.config.region,
        types: &request.types,
        body_bytes: request.bytes.len() as u64,
        now,
    };
    let decided = rules::decide(state, &facts);
    if let Some(message) = decided.as_ref().and_then(|t| t.deny.as_ref()) {
        return Err(EdgeError::RoutingDenied(message.clone()));
    }
    Ok(decided)
}

/// Limits: the rate limits that apply count the request, or refuse it.
fn limits(
    app: &AppState,
    state: &PolicyState,
    key: &VirtualKey,
    request: &Parsed,
    ctx: &mut Ctx,
) -> Result<(), EdgeError> {
    let estimated_tokens = request.estimated_input() + request.max_output.unwrap_or(0);
    let admitted = app.limits.admit(
        state,
        key,
        &request.model,
        estimated_tokens,
        app.budgets.live_edges(),
    );
    match admitted {
        Ok(admission) => {
            ctx.rate = admission.headers.clone();
            ctx.record.admit(admission);
            Ok(())
        }
        Err(refusal) => {
            ctx.rate = refusal.headers;
            Err(refusal.error)
        }
    }
}

/// Budget: the request's worst-case cost is held against every budget that applies, or the
/// request is refused; returns the worst case in tokens, for fallbacks to hold their own.
fn budget(
    app: &AppState,
    state: &PolicyState,
    key: &VirtualKey,
    request: &Parsed,
    ctx: &mut Ctx,
) -> Result<Tokens, EdgeError> {
    let price = pricing::model_price(state, &request.model);
    let worst_case = Tokens {
        // No tokenizer on the hot path: a token is at least ~2 bytes of JSON.
        input: request.bytes.len() as u64 / 2,
        output: request.max_output.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
        ..Tokens::default()
    };
    ctx.record.hold(app.budgets.reserve(
        state,
        key,
        &request.model,
        price.is_some(),
        cost(price, worst_case),
    )?);
    Ok(worst_case)
}

/// Guardrails (in): `pre_call` guardrails check the prompt before anything is sent; a mask
/// rewrites what goes upstream, a block ends the request before it costs anything.
async fn guard_input(
    app: &AppState,
    state: &PolicyState,
    guardrails: &Applicable,
    mut request: Parsed,
    ctx: &mut Ctx,
) -> Result<Parsed, EdgeError> {
    if guardrails.input.is_empty() {
        return Ok(request);
    }
    let shape = match ctx.kind {
        Kind::Chat => Shape::ChatRequest,
        Kind::Embeddings => Shape::EmbeddingsRequest,
    };
    let texts = Texts::read(&request.bytes, shape)?;
    let mut tally = Tally::default();
    let span = telemetry::phase_span(Phase::GuardrailsInput);
    let started = Instant::now();
    let checked = app
        .guardrails
        .run(
            state,
            &guardrails.input,
            &texts.texts,
            Source::Input,
            &mut tally,
        )
        .instrument(span.clone())
        .await;
    end_guardrails(app, Phase::GuardrailsInput, &span, started, &tally);
    ctx.record.note_guardrails(&tally);
    if let Some(masked) = checked? {
        request.replace_body(texts.write(masked));
    }
    Ok(request)
}

/// Guardrails (out): `post_call` and `during_call` guardrails check the answer. A complete
/// answer is checked before it is sent (and is charged even when blocked); a stream is checked
/// as it flows (see [`crate::guardrails::stream`]).
async fn guard_output(
    app: &AppState,
    state: &Arc<PolicyState>,
    guardrails: &Applicable,
    mut answer: Answer,
    ctx: &mut Ctx,
) -> Result<Answer, EdgeError> {
    if ctx.kind == Kind::Embeddings
        || (guardrails.output.is_empty() && guardrails.windowed.is_empty())
    {
        return Ok(answer);
    }
    let reply = std::mem::replace(&mut answer.reply, UpstreamReply::Complete(Bytes::new()));
    answer.reply = match reply {
        UpstreamReply::Complete(body) => {
            if let Some(tokens) = response_usage(&body) {
                ctx.record.set_tokens(tokens);
            }
            let texts = Texts::read(&body, Shape::ChatAnswer).map_err(|_| {
                EdgeError::Upstream("the provider's answer is not JSON guardrails can read".into())
            })?;
            let checks: Vec<_> = guardrails
                .output
                .iter()
                .chain(&guardrails.windowed)
                .cloned()
                .collect();
            let mut tally = Tally::default();
            let span = telemetry::phase_span(Phase::GuardrailsOutput);
            let started = Instant::now();
            let checked = app
                .guardrails
                .run(state, &checks, &texts.texts, Source::Output, &mut tally)
                .instrument(span.clone())
                .await;
            end_guardrails(app, Phase::GuardrailsOutput, &span, started, &tally);
            ctx.record.note_guardrails(&tally);
            match checked? {
                Some(masked) => UpstreamReply::Complete(texts.write(masked)),
                None => UpstreamReply::Complete(body),
            }
        }
        UpstreamReply::Stream(mut upstream) => {
            let tally = Arc::new(Mutex::new(Tally::default()));
            ctx.record.share_guardrails(tally.clone());
            for (checks, whole) in [(&guardrails.windowed, false), (&guardrails.output, true)] {
                if checks.is_empty() {
                    continue;
                }
                let guard = StreamGuard {
                    guardrails: app.guardrails.clone(),
                    state: state.clone(),
                    checks: checks.clone(),
                    whole,
                    tally: tally.clone(),
                };
                upstream = guarded(upstream, guard);
            }
            UpstreamReply::Stream(upstream)
        }
    };
    Ok(answer)
}

/// Route and call: deployments, retries and fallbacks within the request's deadline.
async fn route_and_call(
    app: &AppState,
    state: &PolicyState,
    key: &VirtualKey,
    request: &Parsed,
    traffic: Option<&TrafficAction>,
    worst_case: Tokens,
    ctx: &mut Ctx,
) -> Result<Answer, EdgeError> {
    let rule = state.routing_rule_for(&request.model);
    let timeout = request.client_timeout.unwrap_or_else(|| {
        rule.map(|r| r.timeout_ms).filter(|&ms| ms > 0).map_or(
            app.config
                .request_timeout
                .unwrap_or(app.config.upstream_timeout),
            Duration::from_millis,
        )
    });
    let out = Outgoing {
        bytes: &request.bytes,
        model: &request.model,
        model_at: request.model_at.clone(),
        rule,
        key,
        embeddings: ctx.kind == Kind::Embeddings,
        stream: request.stream,
        // Streams always ask the upstream for usage, so that every stream is accounted; the
        // usage chunk is passed on only to clients that asked for it.
        request_stream_usage: request.stream && !request.client_wants_usage,
        estimated_tokens: request.estimated_input(),
        worst_case_tokens: worst_case,
        deadline: ctx.record.started() + timeout,
    };
    let overhead = ctx.record.started().elapsed();
    let dispatched = dispatch::dispatch(app, state, &out, traffic, &mut ctx.record).await;
    ctx.attempts = dispatched.attempts;
    ctx.fallback = dispatched.fallback;
    let served = dispatched.result?;
    Ok(Answer {
        reply: served.reply,
        deployment_id: served.deployment_id,
        in_flight: served.in_flight,
        client_wants_usage: request.client_wants_usage,
        overhead,
        estimated_input: request.estimated_input(),
    })
}

/// Respond: the answer (a stream is relayed as it arrives) or the error, with the headers
/// that say how the request was served.
fn respond(app: &AppState, ctx: Ctx, answer: Result<Served, EdgeError>) -> Response {
    let Ctx {
        mut record,
        attempts,
        fallback,
        rate,
        cache,
        route,
        present,
        model,
        ..
    } = ctx;
    let surface = route.as_ref().map_or(Surface::OpenAi, Route::surface);
    let started = record.started();
    let request_id = record.request_id().to_owned();
    let (mut response, deployment_id, overhead) = match answer {
        Err(error) => {
            record.fail(&error);
            let overhead = record.started().elapsed();
            (surfaces::render_error(surface, &error), None, overhead)
        }
        Ok(Served::Cache {
            entry,
            stream,
            client_wants_usage,
        }) => {
            record.finish(200, "");
            let mut response = replay_cached(
                &entry,
                stream,
                client_wants_usage,
                &present,
                &model,
                started,
            );
            set_header(&mut response, COST_USD, "0.000000");
            (response, None, record.started().elapsed())
        }
        Ok(Served::Upstream(Answer {
            reply: UpstreamReply::Complete(body),
            deployment_id,
            overhead,
            in_flight,
            ..
        })) => {
            drop(in_flight);
            let after = Instant::now();
            if let Some(tokens) = response_usage(&body) {
                record.set_tokens(tokens);
            }
            record.finish(200, "");
            let cost = record.cost_usd();
            let mut response = surfaces::render_answer(&present, body, &model, started);
            set_header(&mut response, COST_USD, format!("{cost:.6}"));
            (response, Some(deployment_id), overhead + after.elapsed())
        }
        Ok(Served::Upstream(Answer {
            reply: UpstreamReply::Stream(upstream),
            deployment_id,
            client_wants_usage,
            overhead,
            in_flight,
            estimated_input,
        })) => {
            let relayed = relay(RelayParts {
                upstream,
                record,
                client_wants_usage,
                estimated_input,
                grace: app.config.abandoned_stream_grace,
                max_duration: app.config.max_stream_duration,
            });
            // The deployment counts the stream as in flight until it ends.
            let relayed = relayed.map(move |chunk| {
                let _held = &in_flight;
                chunk
            });
            let response = if present == Present::OpenAi {
                event_stream(Body::from_stream(relayed))
            } else {
                surfaces::render_stream(&present, relayed, &model, started)
            };
            (response, Some(deployment_id), overhead)
        }
    };
    app.metrics.overhead_seconds.observe(overhead.as_secs_f64());
    set_header(&mut response, REQUEST_ID, request_id);
    set_header(
        &mut response,
        OVERHEAD_MS,
        format!("{:.3}", overhead.as_secs_f64() * 1000.0),
    );
    if let Some(id) = deployment_id {
        set_header(&mut response, DEPLOYMENT, id);
    }
    if attempts > 0 {
        set_header(&mut response, ATTEMPTS, attempts.to_string());
    }
    if let Some(model) = fallback {
        set_header(&mut response, FALLBACK, model);
    }
    rate.apply(response.headers_mut());
    if let Some(status) = cache {
        set_header(&mut response, CACHE, status.as_str());
    }
    if !response.headers().contains_key(COST_USD) && response.status() != StatusCode::OK {
        set_header(&mut response, COST_USD, "0.000000");
    }
    response
}

/// A cached answer as the client asked for it: replayed as a stream of events, or whole.
fn replay_cached(
    entry: &cache::Entry,
    stream: bool,
    client_wants_usage: bool,
    present: &Present,
    model: &str,
    started: Instant,
) -> Response {
    let replayed = stream
        .then(|| cache::replay::replay(&entry.body, client_wants_usage))
        .flatten();
    match replayed {
        Some(events) if *present == Present::OpenAi => event_stream(Body::from(events)),
        Some(events) => {
            let events = futures::stream::once(async move { Ok(events) });
            surfaces::render_stream(present, events, model, started)
        }
        None => surfaces::render_answer(present, entry.body.clone(), model, started),
    }
}

/// Server-sent events as OpenAI's API sends them.
fn event_stream(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Runs a synchronous phase: in its span, timed, a refusal counted and named on the span.
fn phase<T>(
    app: &AppState,
    phase: Phase,
    run: impl FnOnce() -> Result<T, EdgeError>,
) -> Result<T, EdgeError> {
    let span = telemetry::phase_span(phase);
    let started = Instant::now();
    let result = span.in_scope(run);
    app.metrics
        .time_phase(phase, started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        span.record("error.type", error.code());
        app.metrics.refused(phase, error.code());
    }
    result
}

/// Times a guardrail phase and names on its span the guardrails that intervened.
fn end_guardrails(app: &AppState, phase: Phase, span: &Span, started: Instant, tally: &Tally) {
    app.metrics
        .time_phase(phase, started.elapsed().as_secs_f64());
    if !span.is_disabled() && !tally.intervened.is_empty() {
        span.record("tollgate.guardrails_intervened", tally.intervened.join(","));
    }
}

/// Sets a response header to `value`, which becomes the header's bytes without a copy (text
/// the response owns, or a constant); a value that is not a valid header is left out.
fn set_header(response: &mut Response, name: HeaderName, value: impl Into<Bytes>) {
    if let Ok(value) = HeaderValue::from_maybe_shared(value.into()) {
        response.headers_mut().insert(name, value);
    }
}

/// The request's own deadline from `x-tollgate-timeout` (seconds, fractions allowed), if set.
fn client_timeout(headers: &HeaderMap) -> Result<Option<Duration>, EdgeError> {
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
