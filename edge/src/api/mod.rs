//! The edge's HTTP routes: the OpenAI-compatible API, the translated surfaces (Bedrock's
//! runtime API, Anthropic Messages), health and metrics.

mod apply_guardrail;
mod count_tokens;
mod dispatch;
mod info;
pub mod names;
pub mod openai;
mod pipeline;
mod record;
mod semantic;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};
use tollgate_policy::sealing::SealingKey;

use crate::budget::Budgets;
use crate::cache::ResponseCache;
use crate::config::EdgeConfig;
use crate::guardrails::Guardrails;
use crate::health::Health;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::providers::credentials::CredentialKeys;
use crate::usage::UsageSink;
use tollgate_runtime::follow::PolicyView;

/// What every request handler shares.
pub struct AppState {
    pub config: EdgeConfig,
    pub policy: Arc<PolicyView>,
    pub providers: Providers,
    pub usage: UsageSink,
    pub metrics: Arc<Metrics>,
    /// Seals and opens virtual keys' SigV4 secrets.
    pub sealing: Option<SealingKey>,
    /// Open provider credentials.
    pub credentials: Arc<CredentialKeys>,
    pub budgets: Arc<Budgets>,
    /// Rate limits, and this edge's leases of them.
    pub limits: Arc<Limiter>,
    /// Deployments' circuits, load and latency as seen by this edge.
    pub health: Arc<Health>,
    /// The policy's guardrails, compiled, and the clients of remote ones.
    pub guardrails: Arc<Guardrails>,
    /// Answers of models with a cache policy.
    pub cache: Arc<ResponseCache>,
    /// SigV4 signatures already accepted, against replays.
    pub replays: crate::auth::sigv4::Replays,
}

/// The edge's routes. OpenAI's routes exist with and without the `/v1` prefix, since clients
/// differ in whether their base URL ends in `/v1`.
pub fn router(state: Arc<AppState>) -> Router {
    let openai: [(&str, MethodRouter<Arc<AppState>>); 4] = [
        ("/chat/completions", post(pipeline::chat_completions)),
        ("/embeddings", post(pipeline::embeddings)),
        ("/responses", post(pipeline::responses)),
        ("/models", get(info::models)),
    ];
    let router = openai
        .into_iter()
        .fold(Router::new(), |router, (path, method)| {
            router
                .route(&format!("/v1{path}"), method.clone())
                .route(path, method)
        })
        .route("/model/{model_id}/{operation}", post(pipeline::bedrock))
        .route(
            "/guardrail/{id}/version/{version}/apply",
            post(apply_guardrail::apply_guardrail),
        )
        .route("/v1/messages", post(pipeline::messages))
        .route(
            "/v1/messages/count_tokens",
            post(count_tokens::count_tokens),
        )
        .route("/health/live", get(info::live))
        .route("/health/ready", get(info::ready));
    // With a metrics address of its own, the scrape is not served to the API's clients.
    let router = match state.config.metrics_addr {
        Some(_) => router,
        None => router.route("/metrics", get(info::metrics)),
    };
    router
        // Bodies are read with the configured limit inside the handlers, so that an oversized
        // body gets an OpenAI-shaped 413 instead of axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `/metrics` alone, for `TOLLGATE_METRICS_ADDR`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(info::metrics))
        .with_state(state)
}
