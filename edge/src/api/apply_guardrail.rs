//! Bedrock's `ApplyGuardrail` (`POST /guardrail/{id}/version/{version}/apply`), for boto3 code
//! that checks text on its own: the Tollgate guardrail with that id (or name) runs on the
//! texts — a built-in PII or regex guardrail locally, a `bedrock` one on Amazon Bedrock —
//! and the answer is Bedrock's. Tollgate guardrails have no versions: any version names the
//! current definition. Nothing is sent to a model and nothing is charged.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::AppState;
use super::pipeline::{read_body, signed_key};
use crate::auth::{authenticate, sigv4};
use crate::error::EdgeError;
use crate::guardrails::{Source, Tally};
use crate::surfaces::{Surface, render_error};

pub async fn apply_guardrail(
    State(app): State<Arc<AppState>>,
    Path((id, _version)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match apply(&app, &id, &uri, &headers, body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => render_error(Surface::Bedrock, &error),
    }
}

async fn apply(
    app: &AppState,
    id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, EdgeError> {
    let state = app.policy.current().ok_or(EdgeError::NotReady)?;
    let now = Utc::now();
    let key = if sigv4::is_signed(headers) {
        None
    } else {
        Some(authenticate(headers, &state, now)?)
    };
    let bytes = read_body(app, body).await?;
    let key = match key {
        Some(key) => key,
        None => signed_key(app, &state, uri, headers, &bytes, now)?,
    };
    let check = app
        .guardrails
        .named(&state, id)
        .filter(|check| check.covers(key))
        .ok_or_else(|| EdgeError::GuardrailNotFound(id.to_owned()))?;
    let request: Value = serde_json::from_slice(&bytes)
        .map_err(|e| EdgeError::InvalidRequest(format!("the request body is not JSON: {e}")))?;
    let source = match request["source"].as_str() {
        Some("INPUT") => Source::Input,
        Some("OUTPUT") => Source::Output,
        _ => {
            return Err(EdgeError::InvalidRequest(
                "`source` must be INPUT or OUTPUT".into(),
            ));
        }
    };
    let texts = request["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .map(|b| b["text"]["text"].as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .unwrap_or_default()
        .filter(|texts| !texts.is_empty())
        .ok_or_else(|| {
            EdgeError::InvalidRequest("`content` must be a non-empty list of text blocks".into())
        })?;
    let mut tally = Tally::default();
    let checked = app
        .guardrails
        .run(&state, &[check], &texts, source, &mut tally)
        .await;
    let (action, outputs, reason) = match checked {
        Ok(None) => ("NONE", Vec::new(), None),
        Ok(Some(masked)) => ("GUARDRAIL_INTERVENED", masked, None),
        Err(EdgeError::GuardrailIntervened { summary, .. }) => (
            "GUARDRAIL_INTERVENED",
            vec!["Sorry, this content was blocked by a guardrail.".to_owned()],
            Some(summary),
        ),
        Err(error) => return Err(error),
    };
    let mut answer = json!({
        "action": action,
        "outputs": outputs.into_iter().map(|text| json!({"text": text})).collect::<Vec<_>>(),
        "assessments": [],
        "usage": {"topicPolicyUnits": 0, "contentPolicyUnits": 0, "wordPolicyUnits": 0,
            "sensitiveInformationPolicyUnits": 0, "sensitiveInformationPolicyFreeUnits": 0,
            "contextualGroundingPolicyUnits": 0},
    });
    if let Some(reason) = reason {
        answer["actionReason"] = json!(reason);
    }
    Ok(answer)
}
