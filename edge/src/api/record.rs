//! `UsageRecord`: the usage event of one request, filled in as the request goes, and recorded
//! exactly once — when the record is dropped, so that errors, panics and clients that hang up
//! mid-stream are counted like everything else.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use opentelemetry::trace::TraceContextExt;
use tollgate_policy::model::{Deployment, Price, VirtualKey};
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::UsageEvent;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::budget::Reservation;
use crate::error::EdgeError;
use crate::guardrails::Tally;
use crate::limits::Admission;
use crate::metrics::{Metrics, ModelLabels, RequestLabels, TokenLabels};
use crate::pricing::{Tokens, cost};
use crate::telemetry;
use crate::usage::UsageSink;

/// The target of the per-request log lines (`RUST_LOG=tollgate::access=off` turns them off).
pub const ACCESS_LOG: &str = "tollgate::access";
/// HTTP status recorded for a client that closed the connection before the end (nginx's 499).
pub const CLIENT_CLOSED: u32 = 499;
/// The most tokens of one kind a request is charged, whatever a provider reports: ten times
/// the largest context windows, so that a broken or hostile upstream cannot make a cost
/// absurd enough to overflow the ledger's sums.
pub const MAX_TOKENS: u64 = 10_000_000;

/// The usage of one request in progress.
pub struct UsageRecord {
    event: UsageEvent,
    route: &'static str,
    started: Instant,
    price: Option<Price>,
    tokens: Tokens,
    sink: UsageSink,
    metrics: Arc<Metrics>,
    /// Budget held for this request, settled with its cost when the record is dropped.
    reservation: Option<Reservation>,
    /// The request's place in its rate limits: its tokens are corrected, and its concurrency
    /// released, when the record is dropped.
    admission: Option<Admission>,
    /// What a stream's output guardrails did, filled in as the stream is checked.
    stream_guardrails: Option<Arc<Mutex<Tally>>>,
    /// The request's trace span, ended with the record.
    span: Span,
    /// The span of the provider attempt that answered, ended with the record (a stream's
    /// answer ends with its last byte).
    provider_span: Option<Span>,
}

impl UsageRecord {
    /// The record of request `request_id` on `route`, traced by `span` in trace `trace_id`.
    pub fn new(
        request_id: String,
        route: &'static str,
        (span, trace_id): (Span, String),
        edge_id: &str,
        region: &str,
        sink: UsageSink,
        metrics: Arc<Metrics>,
    ) -> Self {
        UsageRecord {
            event: UsageEvent {
                schema_version: 1,
                request_id,
                trace_id,
                occurred_at: Some(timestamp(chrono::Utc::now())),
                edge_id: edge_id.to_owned(),
                region: region.to_owned(),
                status: CLIENT_CLOSED,
                error_code: "client_closed".to_owned(),
                ..Default::default()
            },
            route,
            started: Instant::now(),
            price: None,
            tokens: Tokens::default(),
            sink,
            metrics,
            reservation: None,
            admission: None,
            stream_guardrails: None,
            span,
            provider_span: None,
        }
    }

    /// Keeps the span of the provider attempt that answered until the answer ends.
    pub fn set_provider_span(&mut self, span: Span) {
        self.provider_span = Some(span);
    }

    /// Adds what guardrails did to the request.
    pub fn note_guardrails(&mut self, tally: &Tally) {
        let micros = u64::try_from(tally.elapsed.as_micros()).unwrap_or(u64::MAX);
        self.event.guardrail_micros = self.event.guardrail_micros.saturating_add(micros);
        for id in &tally.intervened {
            if !self.event.guardrails_intervened.contains(id) {
                self.event.guardrails_intervened.push(id.clone());
            }
        }
    }

    /// Reads `tally` when the request is recorded: a stream's guardrails run after the
    /// record is handed to the relay.
    pub fn share_guardrails(&mut self, tally: Arc<Mutex<Tally>>) {
        self.stream_guardrails = Some(tally);
    }

    /// Marks the request as answered from the response cache.
    pub fn set_cache_hit(&mut self) {
        self.event.cache_hit = true;
    }

    /// Holds `reservation` until the request's cost is known.
    pub fn hold(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    /// Holds the request's rate-limit admission until the request ends.
    pub fn admit(&mut self, admission: Admission) {
        self.admission = Some(admission);
    }

    /// The request's rate-limit admission, to count the deployments it is sent to.
    pub fn admission_mut(&mut self) -> Option<&mut Admission> {
        self.admission.as_mut()
    }

    /// The reservation held for this request, to extend when it moves to a fallback model.
    pub fn reservation_mut(&mut self) -> Option<&mut Reservation> {
        self.reservation.as_mut()
    }

    pub fn request_id(&self) -> &str {
        &self.event.request_id
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn set_model(&mut self, model: &str, stream: bool) {
        self.event.model = model.to_owned();
        self.event.stream = stream;
    }

    /// The model that served the request, when a fallback answered instead of the one asked.
    pub fn set_served_model(&mut self, model: &str) {
        if model != self.event.model {
            self.event.served_model = model.to_owned();
        }
    }

    pub fn set_key(&mut self, key: &VirtualKey) {
        self.event.key_id.clone_from(&key.id);
        self.event.team_id = key.team_id.clone().unwrap_or_default();
        self.event.user_id = key.user_id.clone().unwrap_or_default();
    }

    pub fn set_deployment(&mut self, deployment: &Deployment, price: Option<&Price>) {
        self.event.deployment_id.clone_from(&deployment.id);
        self.event.provider = deployment.provider.to_string();
        self.price = price.cloned();
    }

    /// Records the tokens a provider reported, each kind capped at [`MAX_TOKENS`].
    pub fn set_tokens(&mut self, tokens: Tokens) {
        self.tokens = Tokens {
            input: tokens.input.min(MAX_TOKENS),
            output: tokens.output.min(MAX_TOKENS),
            cached_input: tokens.cached_input.min(MAX_TOKENS),
            cache_write: tokens.cache_write.min(MAX_TOKENS),
        };
    }

    /// Whether any token count is known.
    pub fn has_tokens(&self) -> bool {
        self.tokens != Tokens::default()
    }

    /// The cost so far, from the tokens recorded.
    pub fn cost_usd(&self) -> f64 {
        cost(self.price.as_ref(), self.tokens)
    }

    pub fn first_token(&mut self) {
        if self.event.ttft_ms == 0 {
            let ttft = self.started.elapsed();
            self.event.ttft_ms = ttft.as_millis().max(1) as u64;
            self.metrics.ttft_seconds.observe(ttft.as_secs_f64());
        }
    }

    /// The request ended with `status` (and a contract error code when it failed).
    pub fn finish(&mut self, status: u16, error_code: &str) {
        self.event.status = u32::from(status);
        error_code.clone_into(&mut self.event.error_code);
    }

    pub fn fail(&mut self, error: &EdgeError) {
        self.finish(error.status().as_u16(), error.code());
    }
}

impl Drop for UsageRecord {
    fn drop(&mut self) {
        if let Some(shared) = self.stream_guardrails.take() {
            let tally = shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            self.note_guardrails(&tally);
        }
        let mut event = std::mem::take(&mut self.event);
        let elapsed = self.started.elapsed();
        event.latency_ms = elapsed.as_millis() as u64;
        event.input_tokens = self.tokens.input;
        event.output_tokens = self.tokens.output;
        event.cached_input_tokens = self.tokens.cached_input;
        event.cache_write_tokens = self.tokens.cache_write;
        event.cost_usd = self.cost_usd();
        if let Some(reservation) = self.reservation.take() {
            reservation.settle(event.cost_usd);
        }
        if let Some(mut admission) = self.admission.take() {
            admission.settle_tokens(event.input_tokens + event.output_tokens);
        }
        let labels = RequestLabels {
            route: self.route,
            status: u16::try_from(event.status).unwrap_or(0),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !event.model.is_empty() {
            for (kind, count) in [
                ("input", event.input_tokens),
                ("output", event.output_tokens),
                ("cached_input", event.cached_input_tokens),
            ] {
                if count > 0 {
                    let labels = TokenLabels {
                        model: event.model.clone(),
                        kind,
                    };
                    self.metrics.tokens.get_or_create(&labels).inc_by(count);
                }
            }
            if event.cost_usd > 0.0 {
                let labels = ModelLabels {
                    model: event.model.clone(),
                };
                self.metrics
                    .cost_usd
                    .get_or_create(&labels)
                    .inc_by(event.cost_usd);
            }
        }
        self.trace(&event);
        log(&event, self.route);
        self.sink.record(event);
    }
}

impl UsageRecord {
    /// Writes what the request came to on its spans (they end when the record is dropped).
    fn trace(&self, event: &UsageEvent) {
        if self.span.is_disabled() {
            return;
        }
        let span = &self.span;
        let model = if event.served_model.is_empty() {
            &event.model
        } else {
            &event.served_model
        };
        if !event.model.is_empty() {
            let operation = if self.route == "embeddings" {
                "embeddings"
            } else {
                "chat"
            };
            // The span has started (its children needed it): the name is updated, not recorded.
            span.context()
                .span()
                .update_name(format!("{operation} {}", event.model));
            span.record("gen_ai.operation.name", operation);
            span.record("gen_ai.request.model", event.model.as_str());
            span.record("gen_ai.response.model", model.as_str());
        }
        span.record("http.response.status_code", event.status);
        span.record("tollgate.key_id", event.key_id.as_str());
        span.record("tollgate.team_id", event.team_id.as_str());
        span.record("tollgate.deployment_id", event.deployment_id.as_str());
        span.record("tollgate.cost_usd", event.cost_usd);
        span.record("tollgate.cache_hit", event.cache_hit);
        if !event.error_code.is_empty() {
            span.record("error.type", event.error_code.as_str());
            if event.status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
        }
        let spans = std::iter::once(span).chain(self.provider_span.as_ref());
        for span in spans {
            if !event.provider.is_empty() {
                span.record("gen_ai.provider.name", provider_label(&event.provider));
            }
            span.record("gen_ai.usage.input_tokens", event.input_tokens);
            span.record("gen_ai.usage.output_tokens", event.output_tokens);
        }
    }
}

/// The request's log line (target `tollgate::access`): what the usage event says, never content
/// or secrets. Its fields are documented in docs/observability.md.
fn log(event: &UsageEvent, route: &str) {
    tracing::info!(
        target: ACCESS_LOG,
        request_id = %event.request_id,
        route,
        edge_id = %event.edge_id,
        trace_id = %event.trace_id,
        status = event.status,
        error_code = %event.error_code,
        model = %event.model,
        served_model = %event.served_model,
        deployment_id = %event.deployment_id,
        provider = %event.provider,
        key_id = %event.key_id,
        team_id = %event.team_id,
        user_id = %event.user_id,
        input_tokens = event.input_tokens,
        output_tokens = event.output_tokens,
        cost_usd = event.cost_usd,
        latency_ms = event.latency_ms,
        ttft_ms = event.ttft_ms,
        stream = event.stream,
        cache_hit = event.cache_hit,
        "request"
    );
}

/// `gen_ai.provider.name` of a provider as the usage event names it.
fn provider_label(provider: &str) -> &str {
    match provider.parse() {
        Ok(known) => telemetry::provider_name(known),
        Err(_) => provider,
    }
}
