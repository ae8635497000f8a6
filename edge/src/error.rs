//! The edge's errors, each mapped once to an HTTP status and an OpenAI-shaped error body.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::providers::UpstreamError;

/// Why a request was refused or failed. Messages never contain secrets or upstream URLs.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("{0}")]
    InvalidApiKey(&'static str),
    /// A SigV4-signed request whose signature does not hold (wrong, expired or replayed).
    #[error("{0}")]
    SignatureRejected(String),
    #[error("this key may not use model {0:?}")]
    ModelNotAllowed(String),
    #[error("model {0:?} does not exist")]
    ModelNotFound(String),
    #[error("guardrail {0:?} does not exist, or does not apply to this key")]
    GuardrailNotFound(String),
    /// A traffic rule refused the request, or left it no deployment to go to.
    #[error("{0}")]
    RoutingDenied(String),
    #[error("{message}")]
    UpstreamRateLimited {
        message: String,
        retry_after: Option<HeaderValue>,
    },
    /// The provider answered with a client error that the client should see as-is (400-class).
    #[error("{message}")]
    UpstreamRejected { status: StatusCode, message: String },
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    #[error("policy is not loaded yet; this edge is not ready")]
    NotReady,
    #[error("budget {budget_id} ({scope} {scope_id}, ${amount_usd:.2}) is exhausted{}", resets_at.map(|t| format!("; it resets at {}", t.to_rfc3339())).unwrap_or_else(|| "; raise it to continue".to_owned()))]
    BudgetExceeded {
        budget_id: String,
        scope: String,
        scope_id: String,
        amount_usd: f64,
        resets_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// A gateway rate limit is reached.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A budget applies, and the model has no price: its spend could not be counted.
    #[error(
        "model {model:?} has no price, so it cannot be used under budget {budget_id}: an admin sets one with SetPrice"
    )]
    Unpriced { model: String, budget_id: String },
    /// A guardrail blocked the request or the answer; `summary` names what it found, never
    /// the text.
    #[error("guardrail {guardrail} intervened: {summary}")]
    GuardrailIntervened { guardrail: String, summary: String },
    /// A guardrail could not run; the request is refused rather than let through unchecked.
    #[error("guardrail {guardrail} could not be applied: {reason}")]
    GuardrailFailed { guardrail: String, reason: String },
}

impl EdgeError {
    /// (HTTP status, OpenAI error `type`, contract error `code`).
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            EdgeError::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request_error",
            ),
            EdgeError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            EdgeError::InvalidApiKey(_) | EdgeError::SignatureRejected(_) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
            ),
            EdgeError::ModelNotAllowed(_) => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "model_not_allowed",
            ),
            EdgeError::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            EdgeError::GuardrailNotFound(_) => {
                (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
            }
            EdgeError::RoutingDenied(_) => {
                (StatusCode::FORBIDDEN, "permission_error", "routing_denied")
            }
            EdgeError::UpstreamRateLimited { .. } | EdgeError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            EdgeError::UpstreamRejected { status, .. } => {
                (*status, "invalid_request_error", "upstream_rejected")
            }
            EdgeError::Upstream(_) => (StatusCode::BAD_GATEWAY, "api_error", "upstream_error"),
            EdgeError::UpstreamTimeout(_) => {
                (StatusCode::GATEWAY_TIMEOUT, "api_error", "upstream_timeout")
            }
            EdgeError::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "policy_not_loaded",
            ),
            EdgeError::BudgetExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "budget_exceeded_error",
                "budget_exceeded",
            ),
            EdgeError::BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
            ),
            EdgeError::Unpriced { .. } => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "model_not_allowed",
            ),
            EdgeError::GuardrailIntervened { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "guardrail_intervened",
            ),
            EdgeError::GuardrailFailed { .. } => {
                (StatusCode::BAD_GATEWAY, "api_error", "upstream_error")
            }
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The contract error code (`invalid_api_key`, `upstream_timeout`, …).
    pub fn code(&self) -> &'static str {
        self.parts().2
    }
}

impl EdgeError {
    /// The OpenAI-shaped response for this error.
    pub fn to_response(&self) -> Response {
        let (status, kind, code) = self.parts();
        let body = json!({
            "error": {"message": self.to_string(), "type": kind, "param": null, "code": code}
        });
        let mut response = (status, Json(body)).into_response();
        self.add_retry_headers(response.headers_mut());
        response
    }

    /// Adds the headers that tell a client when to retry (`Retry-After`) or not to
    /// (`x-should-retry`), whichever surface's shape the error's body has.
    pub fn add_retry_headers(&self, headers: &mut HeaderMap) {
        if let Some(value) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, value);
        }
        if !self.worth_retrying() {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
    }

    /// `Retry-After` for errors that end by themselves.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            EdgeError::UpstreamRateLimited { retry_after, .. } => retry_after.clone(),
            EdgeError::RateLimited { retry_after, .. } => {
                HeaderValue::from_str(&retry_after.as_secs_f64().ceil().max(1.0).to_string()).ok()
            }
            EdgeError::BudgetExceeded {
                resets_at: Some(at),
                ..
            } => {
                let seconds = (*at - chrono::Utc::now()).num_seconds().max(1);
                HeaderValue::from_str(&seconds.to_string()).ok()
            }
            _ => None,
        }
    }

    /// Whether an SDK's automatic retry could succeed. An exhausted budget answers 429 like a
    /// rate limit, but retrying it within seconds only spends the client's time: the OpenAI
    /// and Anthropic SDKs honour `x-should-retry: false`.
    pub fn worth_retrying(&self) -> bool {
        !matches!(self, EdgeError::BudgetExceeded { .. })
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        self.to_response()
    }
}

/// The client-facing error for an upstream failure.
impl From<UpstreamError> for EdgeError {
    fn from(e: UpstreamError) -> Self {
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
            UpstreamError::Failed(message) | UpstreamError::Local(message) => {
                EdgeError::Upstream(message)
            }
            UpstreamError::Timeout(message) => EdgeError::UpstreamTimeout(message),
            UpstreamError::Intervened {
                guardrail, summary, ..
            } => EdgeError::GuardrailIntervened { guardrail, summary },
        }
    }
}
