//! A fake Amazon Bedrock runtime: a real HTTP server on `127.0.0.1:0` answering
//! `POST /model/{modelId}/converse` (JSON) and `POST /model/{modelId}/converse-stream` (AWS
//! binary event stream, `application/vnd.amazon.eventstream`) exactly in Bedrock's wire format,
//! so that the official AWS SDK can be pointed at it with `endpoint_url`.
//!
//! Behaviour is chosen by the model id:
//! `fail-throttle` (429 `ThrottlingException`), `fail-validation` (400 `ValidationException`
//! with [`VALIDATION_MESSAGE`]), `fail-denied` (403 `AccessDeniedException`), `fail-500` (500
//! `InternalServerException`), `hang` (sleeps 30 s), `fail-midstream` (a stream that sends a
//! little text and then a `modelStreamErrorException` event), `slow-stream` (250 ms between
//! events), `stall-stream` (a stream that stops for 30 s after two events), `raw-stream` (the
//! bytes last given to [`FakeBedrock::set_raw_stream`], in three pieces, whatever they are).
//! Any other model answers:
//! with a call of the first tool when `toolConfig` has tools and the last message is the user's
//! text; with "The tool said: …" after a tool result; with [`ANSWER`] otherwise. A
//! `guardrailConfig` whose identifier is `gr-block` makes the guardrail intervene.
//!
//! `POST /guardrail/{id}/version/{version}/apply` is `ApplyGuardrail`: guardrail `gr-block`
//! intervenes (BLOCKED, denied topic `Forbidden`) on any text containing "forbidden";
//! `gr-anonymize` replaces e-mail addresses with `{EMAIL}` (ANONYMIZED); any other guardrail
//! finds nothing. [`FakeBedrock::guardrail_calls`] counts these calls apart from model calls.
//!
//! Token counts: `inputTokens` is the number of whitespace-separated words in all text blocks
//! (system and messages) plus 3, `outputTokens` the number of words in the answer; when the
//! request holds a `cachePoint`, 5 cache-read and 1 cache-write input tokens are reported too.
//!
//! `POST /model/{modelId}/invoke` answers embedding models: `amazon.titan-embed-*` (body
//! `{"inputText": …}`, optional `dimensions`) with `{"embedding": […], "inputTextTokenCount": n}`,
//! and `cohere.embed-*` (body `{"texts": […], "input_type": …}`) with `{"embeddings": [[…]],
//! "id": …, "texts": […]}`. Vectors come from [`fake_embedding`] ([`EMBEDDING_DIMENSIONS`] long
//! unless `dimensions` says otherwise); token counts are the words of the inputs, also sent in
//! the `x-amzn-bedrock-input-token-count` header. Other models answer `ValidationException`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::aws_wire::{self, AwsCall, AwsRuntime, Failure};
use crate::fake_server::{Fake, Logged, lock, words};

/// The text of every plain answer.
pub const ANSWER: &str = "Hello from the fake Bedrock.";
/// The input of every tool call the fake makes.
pub const TOOL_INPUT: &str = r#"{"location":"Paris"}"#;
/// The message of `fail-validation`.
pub const VALIDATION_MESSAGE: &str =
    "The model returned the following errors: messages: the conversation is malformed";
/// What the guardrail answers when it intervenes.
pub const GUARDRAIL_ANSWER: &str = "Sorry, the guardrail blocked this.";

/// The length of the fake's embeddings when the request names no `dimensions`.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// The fake's embedding of `text`: deterministic, each value a multiple of 1/16 in [0, 1)
/// (exact as an f32).
pub fn fake_embedding(text: &str, dimensions: usize) -> Vec<f64> {
    let seed = text.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    (0..dimensions)
        .map(|i| (seed.wrapping_add(i * 7) % 16) as f64 / 16.0)
        .collect()
}

/// One request as received (`resource` is the model id).
pub type RecordedRequest = AwsCall;

type Shared = Logged<RecordedRequest, BedrockState>;

/// What the fake Bedrock keeps beside its request log.
#[derive(Default)]
pub struct BedrockState {
    guardrail_calls: AtomicUsize,
    /// The texts of the last ApplyGuardrail call.
    guardrail_texts: Mutex<Vec<String>>,
    raw_stream: Mutex<Bytes>,
}

/// A running fake Bedrock runtime; it stops accepting connections when dropped.
pub type FakeBedrock = Fake<Shared>;

impl FakeBedrock {
    /// Starts serving on a random port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeBedrock> {
        let routes = Router::new()
            .route("/model/{model_id}/{operation}", post(aws_wire::handle))
            .route(
                "/guardrail/{guardrail_id}/version/{version}/apply",
                post(apply_guardrail),
            );
        Fake::serve(routes).await
    }

    /// The endpoint to configure (`endpoint_url`, a deployment's `api_base`).
    pub fn endpoint_url(&self) -> String {
        self.url()
    }

    /// How many ApplyGuardrail calls were received.
    pub fn guardrail_calls(&self) -> usize {
        self.shared().guardrail_calls.load(Ordering::SeqCst)
    }

    /// The texts the last ApplyGuardrail call was given.
    pub fn guardrail_texts(&self) -> Vec<String> {
        lock(&self.shared().guardrail_texts).clone()
    }

    /// What `raw-stream` answers from now on.
    pub fn set_raw_stream(&self, bytes: Bytes) {
        *lock(&self.shared().raw_stream) = bytes;
    }

    /// A well-formed ConverseStream answer of a few words with usage: a start for
    /// property tests to mutate.
    pub fn valid_stream() -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&event("messageStart", json!({"role": "assistant"})));
        for word in ["Hello ", "there."] {
            let delta = json!({"contentBlockIndex": 0, "delta": {"text": word}});
            out.extend_from_slice(&event("contentBlockDelta", delta));
        }
        out.extend_from_slice(&event("contentBlockStop", json!({"contentBlockIndex": 0})));
        out.extend_from_slice(&event("messageStop", json!({"stopReason": "end_turn"})));
        let usage = json!({"inputTokens": 3, "outputTokens": 2, "totalTokens": 5});
        out.extend_from_slice(&event(
            "metadata",
            json!({"usage": usage, "metrics": {"latencyMs": 1}}),
        ));
        Bytes::from(out)
    }
}

/// Bedrock's errors' namespace.
const NAMESPACE: &str = "com.amazon.bedrock";

/// The models that fail on command.
#[rustfmt::skip]
const FAILURES: [Failure; 4] = [
    ("fail-throttle", 429, "ThrottlingException", "Too many requests, please wait before trying again."),
    ("fail-validation", 400, "ValidationException", VALIDATION_MESSAGE),
    ("fail-denied", 403, "AccessDeniedException", "You don't have access to the model with the specified model ID."),
    ("fail-500", 500, "InternalServerException", "The server encountered an internal error."),
];

/// A restJson1 error as Bedrock sends it: `{"message": …}`.
fn error(status: u16, kind: &str, message: &str) -> Response {
    aws_wire::error(status, kind, NAMESPACE, json!({"message": message}))
}

impl AwsRuntime for BedrockState {
    const OPERATIONS: &'static [&'static str] = &["converse", "converse-stream", "invoke"];

    /// Bedrock's checks, in its order: an unparsable body before the signature.
    async fn admit(call: &AwsCall, headers: &HeaderMap) -> Result<(), Response> {
        if !call.body.is_object() {
            let message = "Unable to parse the request body.";
            return Err(error(400, "SerializationException", message));
        }
        if let Some(refusal) = aws_wire::common_refusal(call, headers, &FAILURES, NAMESPACE) {
            return Err(refusal);
        }
        if call.resource == "hang" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let messages = call.body["messages"].as_array();
        if call.operation != "invoke" && messages.is_none_or(Vec::is_empty) {
            let message = "The messages field is required.";
            return Err(error(400, "ValidationException", message));
        }
        Ok(())
    }

    fn respond(&self, call: &AwsCall) -> Response {
        let (model_id, request) = (call.resource.as_str(), &call.body);
        match call.operation.as_str() {
            "converse" => converse(request),
            "converse-stream" => converse_stream(self, model_id, request),
            _ => invoke(model_id, request),
        }
    }
}

/// All `text` values in a list of blocks.
fn texts(blocks: &Value) -> impl Iterator<Item = &str> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["text"].as_str())
}

fn has_cache_point(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key("cachePoint") || map.values().any(has_cache_point),
        Value::Array(items) => items.iter().any(has_cache_point),
        _ => false,
    }
}

/// What the fake answers with.
enum Answer {
    Text(String, &'static str),
    /// A call of the named tool with [`TOOL_INPUT`].
    Tool(String),
}

fn answer(request: &Value) -> Answer {
    if request["guardrailConfig"]["guardrailIdentifier"] == "gr-block" {
        return Answer::Text(GUARDRAIL_ANSWER.to_owned(), "guardrail_intervened");
    }
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .unwrap_or(&Value::Null);
    let content = &last["content"];
    let blocks = content.as_array().map_or(&[][..], Vec::as_slice);
    if let Some(result) = blocks.iter().find_map(|b| b.get("toolResult")) {
        let said: Vec<&str> = texts(&result["content"]).collect();
        return Answer::Text(format!("The tool said: {}", said.join(" ")), "end_turn");
    }
    let tool = request["toolConfig"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|t| t["toolSpec"]["name"].as_str());
    let user_text = last["role"] == "user" && blocks.iter().any(|b| b.get("text").is_some());
    match tool {
        Some(tool) if user_text => Answer::Tool(tool.to_owned()),
        _ => Answer::Text(ANSWER.to_owned(), "end_turn"),
    }
}

fn usage(request: &Value, answer: &Answer) -> Value {
    let mut input = 3 + texts(&request["system"]).map(words).sum::<usize>();
    for message in request["messages"].as_array().into_iter().flatten() {
        input += texts(&message["content"]).map(words).sum::<usize>();
    }
    let output = match answer {
        Answer::Text(text, _) => words(text),
        Answer::Tool(_) => words(TOOL_INPUT),
    };
    let mut usage =
        json!({"inputTokens": input, "outputTokens": output, "totalTokens": input + output});
    if has_cache_point(request) {
        usage["cacheReadInputTokens"] = json!(5);
        usage["cacheWriteInputTokens"] = json!(1);
        usage["totalTokens"] = json!(input + output + 6);
    }
    usage
}

fn converse(request: &Value) -> Response {
    let answer = answer(request);
    let usage = usage(request, &answer);
    let (content, stop) = match &answer {
        Answer::Text(text, stop) => (json!([{"text": text}]), *stop),
        Answer::Tool(name) => {
            let input: Value = serde_json::from_str(TOOL_INPUT).unwrap_or(Value::Null);
            let call =
                json!({"toolUse": {"toolUseId": "tooluse_fake1", "name": name, "input": input}});
            (json!([{"text": "Let me check."}, call]), "tool_use")
        }
    };
    let mut body = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
        "metrics": {"latencyMs": 42},
    });
    if request["guardrailConfig"]["trace"] == "enabled" {
        body["trace"] = json!({"guardrail": {"modelOutput": []}});
    }
    Json(body).into_response()
}

/// One event-stream message as Bedrock frames it.
fn event(kind: &'static str, payload: Value) -> Bytes {
    let mut payload = payload;
    // Bedrock pads events with a random-length `p` field against length side channels.
    payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ");
    aws_wire::event(kind, "application/json", payload.to_string().into_bytes())
}

/// An in-stream exception event.
fn exception(kind: &'static str, message: &str) -> Bytes {
    aws_wire::exception(kind, &json!({"message": message}))
}

fn converse_stream(state: &BedrockState, model_id: &str, request: &Value) -> Response {
    if model_id == "raw-stream" {
        let raw = lock(&state.raw_stream).clone();
        let third = raw.len() / 3;
        let pieces = [
            raw.slice(..third),
            raw.slice(third..2 * third),
            raw.slice(2 * third..),
        ];
        let body = futures::stream::iter(pieces.map(Ok::<_, std::io::Error>));
        return (
            [(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")],
            Body::from_stream(body),
        )
            .into_response();
    }
    let answer = answer(request);
    let usage = usage(request, &answer);
    let mut events = vec![event("messageStart", json!({"role": "assistant"}))];
    let stop = match &answer {
        Answer::Text(text, stop) => {
            for word in text.split_inclusive(' ') {
                let delta = json!({"contentBlockIndex": 0, "delta": {"text": word}});
                events.push(event("contentBlockDelta", delta));
            }
            events.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
            *stop
        }
        Answer::Tool(name) => {
            let text = json!({"contentBlockIndex": 0, "delta": {"text": "Let me check."}});
            events.push(event("contentBlockDelta", text));
            events.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
            let start = json!({"contentBlockIndex": 1,
                "start": {"toolUse": {"toolUseId": "tooluse_fake1", "name": name}}});
            events.push(event("contentBlockStart", start));
            let (head, tail) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
            for part in [head, tail] {
                let delta = json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": part}}});
                events.push(event("contentBlockDelta", delta));
            }
            events.push(event("contentBlockStop", json!({"contentBlockIndex": 1})));
            "tool_use"
        }
    };
    if model_id == "fail-midstream" {
        events.truncate(3);
        events.push(exception(
            "modelStreamErrorException",
            "The model stopped while streaming.",
        ));
    } else {
        events.push(event("messageStop", json!({"stopReason": stop})));
        let metadata = json!({"usage": usage, "metrics": {"latencyMs": 42}});
        events.push(event("metadata", metadata));
    }
    // A short pause between events, so that the client sees them arrive one by one;
    // `slow-stream` pauses longer, `stall-stream` stops answering after two events.
    let pause = Duration::from_millis(if model_id == "slow-stream" { 250 } else { 2 });
    let stall = model_id == "stall-stream";
    let headers = [("x-amzn-requestid", "fake-request-id")];
    aws_wire::event_stream(events, pause, stall, &headers)
}

fn invoke(model_id: &str, request: &Value) -> Response {
    let (answer, tokens) = if model_id.starts_with("amazon.titan-embed") {
        let Some(text) = request["inputText"].as_str() else {
            return error(400, "ValidationException", "inputText is required.");
        };
        let dimensions = request["dimensions"]
            .as_u64()
            .map_or(EMBEDDING_DIMENSIONS, |d| d as usize);
        let tokens = words(text);
        let answer = json!({"embedding": fake_embedding(text, dimensions),
            "inputTextTokenCount": tokens});
        (answer, tokens)
    } else if model_id.starts_with("cohere.embed") {
        let Some(texts) = request["texts"].as_array().filter(|t| !t.is_empty()) else {
            return error(400, "ValidationException", "texts is required.");
        };
        let texts: Vec<&str> = texts.iter().filter_map(Value::as_str).collect();
        let embeddings: Vec<Vec<f64>> = texts
            .iter()
            .map(|t| fake_embedding(t, EMBEDDING_DIMENSIONS))
            .collect();
        let tokens = texts.iter().map(|t| words(t)).sum();
        let answer = json!({"embeddings": embeddings, "id": "fake-embed-id",
            "response_type": "embeddings_floats", "texts": texts});
        (answer, tokens)
    } else {
        return error(
            400,
            "ValidationException",
            "The provided model doesn't support InvokeModel in the fake.",
        );
    };
    let headers = [(
        header::HeaderName::from_static("x-amzn-bedrock-input-token-count"),
        tokens.to_string(),
    )];
    (headers, Json(answer)).into_response()
}

/// `ApplyGuardrail`, restJson1: `{"source", "content": [{"text": {"text": …}}]}` in, the
/// action, outputs and assessments out.
async fn apply_guardrail(
    State(shared): State<Arc<Shared>>,
    Path((guardrail_id, _version)): Path<(String, String)>,
    Json(request): Json<Value>,
) -> Response {
    shared.guardrail_calls.fetch_add(1, Ordering::SeqCst);
    let texts: Vec<String> = request["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    *lock(&shared.guardrail_texts) = texts.clone();
    let usage = json!({"topicPolicyUnits": 1, "contentPolicyUnits": 1, "wordPolicyUnits": 0,
        "sensitiveInformationPolicyUnits": 1, "sensitiveInformationPolicyFreeUnits": 0,
        "contextualGroundingPolicyUnits": 0});
    let none = || Json(json!({"usage": usage, "action": "NONE", "outputs": [], "assessments": []}));
    match guardrail_id.as_str() {
        "gr-block" if texts.iter().any(|t| t.to_lowercase().contains("forbidden")) => Json(json!({
            "usage": usage,
            "action": "GUARDRAIL_INTERVENED",
            "outputs": [{"text": GUARDRAIL_ANSWER}],
            "assessments": [{"topicPolicy": {"topics": [
                {"name": "Forbidden", "type": "DENY", "action": "BLOCKED", "detected": true}
            ]}}],
        }))
        .into_response(),
        "gr-anonymize" => {
            let mut found = Vec::new();
            let outputs: Vec<Value> = texts
                .iter()
                .map(|t| {
                    let words: Vec<String> = t
                        .split(' ')
                        .map(|w| {
                            if w.contains('@') && w.contains('.') {
                                found.push(json!({"match": w, "type": "EMAIL",
                                    "action": "ANONYMIZED", "detected": true}));
                                "{EMAIL}".to_owned()
                            } else {
                                w.to_owned()
                            }
                        })
                        .collect();
                    json!({"text": words.join(" ")})
                })
                .collect();
            if found.is_empty() {
                return none().into_response();
            }
            Json(json!({
                "usage": usage,
                "action": "GUARDRAIL_INTERVENED",
                "outputs": outputs,
                "assessments": [{"sensitiveInformationPolicy": {"piiEntities": found}}],
            }))
            .into_response()
        }
        _ => none().into_response(),
    }
}

/// The messages of an AWS event stream as a client reads them: `(event or exception type,
/// JSON payload)`, for tests of what the edge streams.
pub fn read_event_stream(mut bytes: &[u8]) -> anyhow::Result<Vec<(String, Value)>> {
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let message = aws_smithy_eventstream::frame::read_message_from(&mut bytes)?;
        let kind = message
            .headers()
            .iter()
            .find(|h| [":event-type", ":exception-type"].contains(&h.name().as_str()))
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned())
            .ok_or_else(|| anyhow::anyhow!("an event without a type"))?;
        events.push((kind, serde_json::from_slice(message.payload())?));
    }
    Ok(events)
}
