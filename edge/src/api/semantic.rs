//! The semantic cache's embedding of a request: one call to the policy's embeddings model,
//! accounted like any request of the key (its own usage event, route `embeddings`), with a
//! short deadline. Any failure is a miss: the request goes on to its provider.

use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tollgate_policy::PolicyState;
use tollgate_policy::model::VirtualKey;

use super::AppState;
use super::openai::response_usage;
use super::record::UsageRecord;
use crate::error::EdgeError;
use crate::pricing;
use crate::providers::{Timeouts, UpstreamCall, UpstreamReply, credentials};
use crate::telemetry;

/// How long the embedding may take before the request goes on without the semantic tier.
const EMBED_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedding of `text` by `model`'s first deployment, charged to `key`.
pub async fn embed(
    app: &AppState,
    state: &PolicyState,
    key: &VirtualKey,
    model: &str,
    text: &str,
) -> Option<Vec<f32>> {
    let deployment = state.deployments_for(model).next()?;
    let provider = app.providers.for_deployment(deployment)?;
    if !deployment.api_base.is_empty()
        && app.providers.check_api_base(&deployment.api_base).is_err()
    {
        return None;
    }
    let span = telemetry::attempt_span("embeddings", deployment, 1);
    let trace_id = telemetry::trace_id(&span, &HeaderMap::new());
    let mut record = UsageRecord::new(
        uuid::Uuid::now_v7().to_string(),
        "embeddings",
        (span, trace_id),
        &app.config.edge_id,
        &app.config.region,
        app.usage.clone(),
        app.metrics.clone(),
    );
    record.set_key(key);
    record.set_model(model, false);
    record.set_deployment(deployment, pricing::charged(state, deployment));
    let body = json!({"model": deployment.upstream_model, "input": text}).to_string();
    let call = UpstreamCall {
        deployment,
        secrets: credentials::open(&app.credentials, state, deployment).ok()?,
        body: body.into(),
        stream: false,
        timeouts: Timeouts {
            total: EMBED_TIMEOUT,
            first_byte: EMBED_TIMEOUT,
        },
    };
    let answer = match tokio::time::timeout(EMBED_TIMEOUT, provider.embeddings(call)).await {
        Ok(Ok(UpstreamReply::Complete(answer))) => answer,
        Ok(Ok(UpstreamReply::Stream(_))) => {
            record.fail(&EdgeError::Upstream(
                "an embedding answered as a stream".into(),
            ));
            return None;
        }
        Ok(Err(error)) => {
            record.fail(&EdgeError::from(error));
            return None;
        }
        Err(_) => {
            record.fail(&EdgeError::UpstreamTimeout(format!(
                "the semantic cache's embedding took longer than {EMBED_TIMEOUT:?}"
            )));
            return None;
        }
    };
    if let Some(tokens) = response_usage(&answer) {
        record.set_tokens(tokens);
    }
    record.finish(200, "");
    let parsed: Value = serde_json::from_slice(&answer).ok()?;
    parsed["data"][0]["embedding"]
        .as_array()?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32))
        .collect()
}
