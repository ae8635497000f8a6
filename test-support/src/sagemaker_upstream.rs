//! A fake Amazon SageMaker runtime: a real HTTP server on `127.0.0.1:0` answering
//! `POST /endpoints/{name}/invocations` (the container's answer as the body) and
//! `POST /endpoints/{name}/invocations-response-stream` (AWS binary event stream of `PayloadPart`
//! events whose payload is raw container bytes, `application/octet-stream`), in SageMaker's wire
//! format, so that the official AWS SDK can be pointed at it with `endpoint_url`.
//!
//! The container format is chosen by the endpoint name: names starting with `tgi` behave like
//! Hugging Face TGI (`{"inputs", "parameters"}` in, `[{"generated_text", "details"}]` or
//! `data:{"token":…}` lines out); all others like a Messages API container (LMI), which takes an
//! OpenAI chat body and answers OpenAI JSON or OpenAI `data:` events. The stream's events are cut
//! across PayloadParts at arbitrary places, as real containers' are. `lmi-no-usage` ignores
//! `stream_options.include_usage`. Offered tools on a user's turn, a Messages API container calls
//! the first one (as OpenAI's API would, with [`TOOL_ARGUMENTS`]); TGI has no tools.
//!
//! Failures by endpoint name: `fail-throttle` (`ThrottlingException`), `fail-validation`
//! (`ValidationError` with [`VALIDATION_MESSAGE`]), `fail-model` (`ModelError`: the container
//! answered 400 with `{"error": MODEL_ERROR_MESSAGE}`), `fail-model-500` (the container answered
//! 500), `fail-denied` (`AccessDeniedException`), `fail-unavailable` (`ServiceUnavailable`),
//! `fail-internal` (`InternalFailure`), `hang` (sleeps 30 s), `fail-midstream` (a little text,
//! then a `ModelStreamError` event), `stall-stream` (stops for 30 s after two parts).
//!
//! Token counts: prompt tokens are the whitespace-separated words of all message contents (or of
//! TGI's `inputs`) plus 3; completion tokens the words of the answer.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::aws_wire::{self, AwsCall, AwsRuntime, Failure};
use crate::fake_server::{Fake, Logged, words};
pub use crate::openai_upstream::TOOL_ARGUMENTS;
use crate::openai_upstream::{tool_call, tool_call_deltas};

/// The text of every answer.
pub const ANSWER: &str = "Hello from the fake SageMaker.";
/// The message of `fail-validation`.
pub const VALIDATION_MESSAGE: &str = "Endpoint fail-validation of account 000000000000 not found.";
/// The container's message of `fail-model`.
pub const MODEL_ERROR_MESSAGE: &str =
    "Input validation error: inputs tokens + max_new_tokens must be <= 4096";
/// The message of the `fail-midstream` stream error.
pub const STREAM_ERROR_MESSAGE: &str = "The model container stopped while streaming.";

/// One request as received (`resource` is the endpoint name).
pub type RecordedRequest = AwsCall;

type Shared = Logged<RecordedRequest, SagemakerState>;

/// What the fake SageMaker keeps beside its request log: nothing.
#[derive(Default)]
pub struct SagemakerState;

/// A running fake SageMaker runtime; it stops accepting connections when dropped.
pub type FakeSagemaker = Fake<Shared>;

impl FakeSagemaker {
    /// Starts serving on a random port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeSagemaker> {
        let routes = Router::new().route("/endpoints/{name}/{operation}", post(aws_wire::handle));
        Fake::serve(routes).await
    }

    /// The endpoint to configure (`endpoint_url`, a deployment's `api_base`).
    pub fn endpoint_url(&self) -> String {
        self.url()
    }
}

/// SageMaker's errors' namespace.
const NAMESPACE: &str = "com.amazon.sagemaker.runtime";

/// The endpoints that fail on command.
#[rustfmt::skip]
const FAILURES: [Failure; 5] = [
    ("fail-throttle", 400, "ThrottlingException", "Rate exceeded"),
    ("fail-validation", 400, "ValidationError", VALIDATION_MESSAGE),
    ("fail-denied", 403, "AccessDeniedException", "User is not authorized to perform: sagemaker:InvokeEndpoint"),
    ("fail-unavailable", 503, "ServiceUnavailable", "The service is unavailable. Try again later."),
    ("fail-internal", 500, "InternalFailure", "An internal failure occurred."),
];

/// A restJson1 error as SageMaker sends it: the fields in the body.
fn error_with(status: u16, kind: &str, body: Value) -> Response {
    aws_wire::error(status, kind, NAMESPACE, body)
}

/// SageMaker's ModelError: the container answered `original` with `body`.
fn model_error(endpoint: &str, original: u16, body: &str) -> Response {
    let client_or_server = if original < 500 { "client" } else { "server" };
    let message = format!(
        "Received {client_or_server} error ({original}) from primary with message \"{body}\". \
         See https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logEventViewer:group=/aws/sagemaker/Endpoints/{endpoint} \
         in account 000000000000 for more information."
    );
    error_with(
        424,
        "ModelError",
        json!({
            "ErrorCode": format!("{}_ERROR_FROM_MODEL", client_or_server.to_uppercase()),
            "Message": message,
            "OriginalMessage": body,
            "OriginalStatusCode": original,
            "LogStreamArn": format!("arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/{endpoint}"),
        }),
    )
}

impl AwsRuntime for SagemakerState {
    const OPERATIONS: &'static [&'static str] = &["invocations", "invocations-response-stream"];

    /// SageMaker's checks, in its order: the signature and the endpoints told to fail first,
    /// then the container's own failures and refusals.
    async fn admit(call: &AwsCall, headers: &HeaderMap) -> Result<(), Response> {
        if let Some(refusal) = aws_wire::common_refusal(call, headers, &FAILURES, NAMESPACE) {
            return Err(refusal);
        }
        let endpoint = call.resource.as_str();
        match endpoint {
            "fail-model" => {
                let body = json!({"error": MODEL_ERROR_MESSAGE, "error_type": "validation"});
                return Err(model_error(endpoint, 400, &body.to_string()));
            }
            "fail-model-500" => {
                return Err(model_error(endpoint, 500, "CUDA out of memory"));
            }
            "hang" => tokio::time::sleep(Duration::from_secs(30)).await,
            _ => {}
        }
        let valid = if is_tgi(endpoint) {
            call.body["inputs"].is_string()
        } else {
            call.body["messages"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        };
        if !valid {
            // What the container answers, wrapped by SageMaker.
            let body = json!({"error": "the request body is not what this container expects"});
            return Err(model_error(endpoint, 422, &body.to_string()));
        }
        Ok(())
    }

    fn respond(&self, call: &AwsCall) -> Response {
        let (endpoint, request) = (call.resource.as_str(), &call.body);
        match call.operation.as_str() {
            "invocations" => invocations(endpoint, request),
            _ => invocations_stream(endpoint, request),
        }
    }
}

fn is_tgi(endpoint: &str) -> bool {
    endpoint.starts_with("tgi")
}

/// Prompt tokens of a request in either format.
fn prompt_tokens(request: &Value) -> usize {
    if let Some(inputs) = request["inputs"].as_str() {
        return words(inputs) + 3;
    }
    let mut count = 3;
    for message in request["messages"].as_array().into_iter().flatten() {
        match &message["content"] {
            Value::String(s) => count += words(s),
            Value::Array(parts) => {
                count += parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .map(words)
                    .sum::<usize>();
            }
            _ => {}
        }
    }
    count
}

/// The tool a Messages API container calls: the first offered, when the user spoke last.
fn tool_to_call(request: &Value) -> Option<&str> {
    let last = request["messages"].as_array().and_then(|m| m.last());
    if last.and_then(|m| m["role"].as_str()) != Some("user") {
        return None;
    }
    request["tools"][0]["function"]["name"].as_str()
}

fn openai_usage(request: &Value) -> Value {
    let prompt = prompt_tokens(request);
    let completion = match tool_to_call(request) {
        Some(_) => words(TOOL_ARGUMENTS),
        None => words(ANSWER),
    };
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion})
}

fn invocations(endpoint: &str, request: &Value) -> Response {
    if is_tgi(endpoint) {
        let parameters = &request["parameters"];
        let mut details = json!({"finish_reason": "eos_token",
            "generated_tokens": words(ANSWER), "seed": null});
        if parameters["decoder_input_details"] == json!(true) {
            let prefill: Vec<Value> = (0..prompt_tokens(request))
                .map(|i| json!({"id": i, "text": "t", "logprob": null}))
                .collect();
            details["prefill"] = Value::Array(prefill);
        }
        let mut answer = json!({"generated_text": ANSWER});
        if parameters["details"] == json!(true) {
            answer["details"] = details;
        }
        return Json(json!([answer])).into_response();
    }
    let (message, finish) = match tool_to_call(request) {
        Some(name) => (
            json!({"role": "assistant", "content": null, "tool_calls": [tool_call(name)]}),
            "tool_calls",
        ),
        None => (json!({"role": "assistant", "content": ANSWER}), "stop"),
    };
    Json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "lmi",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": openai_usage(request),
    }))
    .into_response()
}

/// One PayloadPart event carrying `bytes`.
fn payload_part(bytes: &[u8]) -> Bytes {
    aws_wire::event("PayloadPart", "application/octet-stream", bytes.to_vec())
}

/// An in-stream `ModelStreamError` exception.
fn stream_error(message: &str) -> Bytes {
    let payload = json!({"Message": message, "ErrorCode": "ModelStreamError"});
    aws_wire::exception("ModelStreamError", &payload)
}

/// The container's stream output, as text lines of server-sent events.
fn container_stream(endpoint: &str, request: &Value) -> String {
    let mut out = String::new();
    let pieces: Vec<&str> = ANSWER.split_inclusive(' ').collect();
    if is_tgi(endpoint) {
        for (i, piece) in pieces.iter().enumerate() {
            let event = json!({"index": i + 1,
                "token": {"id": 100 + i, "text": piece, "logprob": -0.25, "special": false},
                "generated_text": null, "details": null});
            out.push_str(&format!("data:{event}\n\n"));
        }
        let last = json!({"index": pieces.len() + 1,
            "token": {"id": 2, "text": "</s>", "logprob": -0.01, "special": true},
            "generated_text": ANSWER,
            "details": {"finish_reason": "eos_token", "generated_tokens": words(ANSWER) + 1,
                "seed": null, "input_length": prompt_tokens(request)}});
        out.push_str(&format!("data:{last}\n\n"));
        return out;
    }
    let chunk = |choices: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": "lmi", "choices": choices})
    };
    let (deltas, finish): (Vec<Value>, &str) = match tool_to_call(request) {
        Some(name) => (tool_call_deltas(name), "tool_calls"),
        None => (
            std::iter::once(json!({"role": "assistant", "content": ""}))
                .chain(pieces.iter().map(|piece| json!({"content": piece})))
                .collect(),
            "stop",
        ),
    };
    for delta in &deltas {
        let delta = chunk(json!([{"index": 0, "delta": delta,
            "logprobs": null, "finish_reason": null}]));
        out.push_str(&format!("data: {delta}\n\n"));
    }
    let finish = chunk(json!([{"index": 0, "delta": {}, "logprobs": null,
        "finish_reason": finish}]));
    out.push_str(&format!("data: {finish}\n\n"));
    if request["stream_options"]["include_usage"] == json!(true) && endpoint != "lmi-no-usage" {
        let mut usage = chunk(json!([]));
        usage["usage"] = openai_usage(request);
        out.push_str(&format!("data: {usage}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn invocations_stream(endpoint: &str, request: &Value) -> Response {
    let mut text = container_stream(endpoint, request);
    if endpoint == "fail-midstream" {
        // Two whole events, then the container breaks off.
        let cut = text.match_indices("\n\n").nth(1).map_or(0, |(i, _)| i + 2);
        text.truncate(cut);
    }
    // Cut the bytes into parts of varying sizes, so that events and even lines straddle parts.
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut size = 7;
    while start < bytes.len() {
        let end = (start + size).min(bytes.len());
        parts.push(payload_part(&bytes[start..end]));
        start = end;
        size = if size > 90 { 7 } else { size * 2 + 3 };
    }
    if endpoint == "fail-midstream" {
        parts.push(stream_error(STREAM_ERROR_MESSAGE));
    }
    let stall = endpoint == "stall-stream";
    let headers = [
        ("x-amzn-sagemaker-content-type", "text/event-stream"),
        ("x-amzn-invoked-production-variant", "AllTraffic"),
        ("x-amzn-requestid", "fake-request-id"),
    ];
    aws_wire::event_stream(parts, Duration::from_millis(2), stall, &headers)
}
