//! Bedrock's runtime API, as boto3's `bedrock-runtime` client calls it with `endpoint_url` set
//! to the edge: `Converse`, `ConverseStream`, `InvokeModel` and
//! `InvokeModelWithResponseStream`, with Bedrock's error shape.

pub mod converse;
pub mod eventstream;
pub mod invoke;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_policy::PolicyState;
use tollgate_policy::model::Provider;

use crate::error::EdgeError;

/// The Tollgate model a path's `modelId` names: a Tollgate model name, or — so that code
/// written for Bedrock runs unchanged — a Bedrock model id, inference profile id or ARN that
/// one of the model's Bedrock deployments calls.
pub fn resolve_model(state: &PolicyState, model_id: &str) -> String {
    if state.deployments_for(model_id).next().is_some() {
        return model_id.to_owned();
    }
    let short = model_id
        .strip_prefix("arn:")
        .and_then(|_| model_id.rsplit('/').next())
        .unwrap_or(model_id);
    state
        .deployments
        .values()
        .filter(|d| d.provider == Provider::Bedrock)
        .find(|d| d.upstream_model == model_id || d.upstream_model == short)
        .map_or_else(|| short.to_owned(), |d| d.model_name.clone())
}

/// Bedrock's error code and HTTP status for an edge error.
fn error_kind(error: &EdgeError) -> (&'static str, StatusCode) {
    let status = error.status();
    match error.code() {
        "invalid_api_key" => match error {
            EdgeError::SignatureRejected(_) => ("InvalidSignatureException", StatusCode::FORBIDDEN),
            _ => ("UnrecognizedClientException", StatusCode::FORBIDDEN),
        },
        "model_not_allowed" | "routing_denied" => ("AccessDeniedException", StatusCode::FORBIDDEN),
        "model_not_found" | "not_found" => ("ResourceNotFoundException", StatusCode::NOT_FOUND),
        "rate_limit_exceeded" => ("ThrottlingException", StatusCode::TOO_MANY_REQUESTS),
        // Bedrock's own quota error: not retried by the AWS SDKs, as an exhausted budget
        // should not be.
        "budget_exceeded" => ("ServiceQuotaExceededException", StatusCode::BAD_REQUEST),
        // The edge has already retried and fallen back: the SDK should not multiply that.
        "upstream_error" => ("ModelErrorException", StatusCode::FAILED_DEPENDENCY),
        "upstream_timeout" => ("ModelTimeoutException", StatusCode::REQUEST_TIMEOUT),
        "policy_not_loaded" => ("ServiceUnavailableException", status),
        _ => ("ValidationException", status),
    }
}

/// An error as Bedrock answers one: the code in `x-amzn-ErrorType`, the message in the body.
pub fn error_response(error: &EdgeError) -> Response {
    let (kind, status) = error_kind(error);
    let body = serde_json::json!({ "message": error.to_string() });
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(kind));
    response
}
