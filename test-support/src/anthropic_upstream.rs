//! A fake Anthropic upstream: a real HTTP server on `127.0.0.1:0` that answers
//! `POST /v1/messages` in the Messages API's own wire format — complete messages and the SSE
//! event sequence (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`) — deterministically, so that the
//! edge's Anthropic provider can be tested end to end.
//!
//! Like the real API it refuses, with a 400 `invalid_request_error`: a missing
//! `anthropic-version` header, `max_tokens` or `messages`; roles other than user and assistant;
//! turns that do not alternate or do not start with the user; empty text blocks; malformed
//! image sources; and `tool_result` blocks without a matching `tool_use` in the previous
//! assistant turn. A missing `x-api-key` gets a 401.
//!
//! Answers: when `tools` are offered (and `tool_choice` is not `none`) and the last user turn
//! holds no `tool_result`, a short text and a `tool_use` of the first tool (or the one
//! `tool_choice` names) with input [`TOOL_INPUT`]; when it holds a `tool_result`, the text
//! `The tool said: <its content>`; otherwise [`ANSWER`], followed by a description of the images
//! of the last user turn (`I see 2 images: base64 image/png, url https://…`). `stop_sequences`
//! and `max_tokens` (in words) cut the answer as they would a real one.
//!
//! Behaviour is chosen by the request's `model`: `fail-429` (with `retry-after: 7`),
//! `fail-529` (overloaded), `fail-400`, `fail-401`, `fail-500` answer with that status and an
//! Anthropic error body; `hang` sleeps 30 s before answering; `slow-stream` waits 200 ms before
//! each event; `cut-stream` sends two events and then drops the connection; `error-stream` sends
//! `message_start` and then an `overloaded_error` event.
//!
//! Token counts: `input_tokens` is the number of whitespace-separated words of all text (system
//! included) plus 3, `output_tokens` the number of words of the answer. When any block or tool
//! carries `cache_control`, [`CACHE_READ_TOKENS`] and [`CACHE_CREATION_TOKENS`] are reported
//! as read from and written to the prompt cache.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::fake_server::{Fake, Logged, event_stream, recorded_headers, seeing, words};
pub use crate::openai_upstream::RecordedRequest;

/// The text of every plain answer.
pub const ANSWER: &str = "Hello from the fake Anthropic.";
/// The text said before every tool call.
pub const TOOL_PREAMBLE: &str = "Let me look that up.";
/// The input of every tool call the fake makes, as JSON text.
pub const TOOL_INPUT: &str = r#"{"location":"Paris"}"#;
/// The id of every tool call the fake makes.
pub const TOOL_USE_ID: &str = "toolu_01FakeAnthropic";
/// Tokens reported as read from the prompt cache when a request uses `cache_control`.
pub const CACHE_READ_TOKENS: u64 = 50;
/// Tokens reported as written to the prompt cache when a request uses `cache_control`.
pub const CACHE_CREATION_TOKENS: u64 = 10;

type Shared = Logged<RecordedRequest, AnthropicState>;

/// What the fake Anthropic keeps beside its request log: nothing.
#[derive(Default)]
pub struct AnthropicState;

/// A running fake Anthropic API; it stops accepting connections when dropped.
pub type FakeAnthropic = Fake<Shared>;

impl FakeAnthropic {
    /// Starts serving on a random port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeAnthropic> {
        Fake::serve(Router::new().route("/v1/messages", post(messages))).await
    }

    /// The API base to configure, e.g. `http://127.0.0.1:PORT` (requests go to `/v1/messages`).
    pub fn base_url(&self) -> String {
        self.url()
    }
}

/// The models that fail on command: (model, status, error type, message).
#[rustfmt::skip]
const FAILURES: [(&str, u16, &str, &str); 5] = [
    ("fail-429", 429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    ("fail-529", 529, "overloaded_error", "Overloaded"),
    ("fail-400", 400, "invalid_request_error", "messages.0.content: bad things in request"),
    ("fail-401", 401, "authentication_error", "invalid x-api-key"),
    ("fail-500", 500, "api_error", "Internal server error"),
];

/// An Anthropic-shaped error response.
fn error(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {"type": kind, "message": message},
        "request_id": format!("req_{}", uuid::Uuid::new_v4().simple())});
    (status, Json(body)).into_response()
}

fn invalid(message: impl AsRef<str>) -> Response {
    error(400, "invalid_request_error", message.as_ref())
}

/// The blocks of a `content` (a string is one text block).
fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks.clone(),
        _ => Vec::new(),
    }
}

/// Checks a request as the Messages API would; the error says what is wrong.
fn validate(request: &Value) -> Result<(), String> {
    if !request["model"].is_string() {
        return Err("model: Field required".into());
    }
    if request["max_tokens"].as_u64().is_none_or(|n| n == 0) {
        return Err("max_tokens: Field required".into());
    }
    let Some(messages) = request["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Err("messages: Field required".into());
    };
    match &request["system"] {
        Value::Null | Value::String(_) => {}
        Value::Array(system) if system.iter().all(|b| b["type"] == "text") => {}
        _ => return Err("system: Input should be a string or text blocks".into()),
    }
    let mut previous: Option<&Value> = None;
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        if i == 0 && role != "user" {
            return Err("messages: first message must use the \"user\" role".into());
        }
        if previous.is_some_and(|p| p["role"] == role) {
            return Err("messages: roles must alternate between \"user\" and \"assistant\"".into());
        }
        if !message["content"].is_string() && !message["content"].is_array() {
            return Err(format!("messages.{i}.content: Field required"));
        }
        let tool_uses: Vec<&str> = previous
            .and_then(|p| p["content"].as_array())
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_use")
            .filter_map(|b| b["id"].as_str())
            .collect();
        for (j, block) in blocks(&message["content"]).iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match block["type"].as_str().unwrap_or_default() {
                "text" => {
                    if block["text"].as_str().is_none_or(str::is_empty) {
                        return Err(format!("{at}: text content blocks must be non-empty"));
                    }
                }
                "image" | "document" => {
                    let source = &block["source"];
                    let ok = match source["type"].as_str() {
                        Some("base64") => {
                            source["media_type"].is_string() && source["data"].is_string()
                        }
                        Some("url") => source["url"].is_string(),
                        _ => false,
                    };
                    if !ok {
                        return Err(format!("{at}.source: invalid source"));
                    }
                }
                "tool_use" if role == "assistant" => {
                    if !block["id"].is_string()
                        || !block["name"].is_string()
                        || !block["input"].is_object()
                    {
                        return Err(format!("{at}: invalid tool_use block"));
                    }
                }
                "tool_result" if role == "user" => {
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    if !tool_uses.contains(&id) {
                        return Err(format!(
                            "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                             Each `tool_result` block must have a corresponding `tool_use` block \
                             in the previous message."
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "{at}.type: unexpected block type {other:?} in a {role} message"
                    ));
                }
            }
        }
        previous = Some(message);
    }
    for (i, tool) in request["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !tool["name"].is_string() || !tool["input_schema"].is_object() {
            return Err(format!("tools.{i}: name and input_schema are required"));
        }
    }
    if !request["tool_choice"].is_null() && request["tools"].is_null() {
        return Err("tool_choice may only be specified while providing tools".into());
    }
    Ok(())
}

/// What the fake answers with.
enum Answer {
    Text(String),
    /// A short text and a call of the named tool with [`TOOL_INPUT`].
    Tool(String),
}

fn answer(request: &Value) -> Answer {
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| blocks(&m["content"]))
        .unwrap_or_default();
    if let Some(result) = last.iter().find(|b| b["type"] == "tool_result") {
        let content: String = match &result["content"] {
            Value::String(text) => text.clone(),
            content => blocks(content)
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect(),
        };
        return Answer::Text(format!("The tool said: {content}"));
    }
    let choice = &request["tool_choice"];
    if let Some(tools) = request["tools"].as_array().filter(|t| !t.is_empty())
        && choice["type"] != "none"
    {
        let name = match choice["name"].as_str() {
            Some(name) if choice["type"] == "tool" => name,
            _ => tools[0]["name"].as_str().unwrap_or_default(),
        };
        return Answer::Tool(name.to_owned());
    }
    let images: Vec<String> = last
        .iter()
        .filter(|b| b["type"] == "image")
        .map(|b| {
            let source = &b["source"];
            match source["type"].as_str() {
                Some("url") => format!("url {}", source["url"].as_str().unwrap_or_default()),
                _ => format!(
                    "base64 {}",
                    source["media_type"].as_str().unwrap_or_default()
                ),
            }
        })
        .collect();
    Answer::Text(seeing(ANSWER, &images))
}

/// Whether any block of the request (or tool) asks for prompt caching.
fn uses_cache(request: &Value) -> bool {
    let system = blocks(&request["system"]);
    let messages = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| blocks(&m["content"]));
    let tools = request["tools"].as_array().into_iter().flatten().cloned();
    system
        .into_iter()
        .chain(messages)
        .chain(tools)
        .any(|b| !b["cache_control"].is_null())
}

/// Input tokens: the words of all text, plus 3.
fn input_tokens(request: &Value) -> usize {
    let text = |b: &Value| b["text"].as_str().map_or(0, words);
    let system: usize = blocks(&request["system"]).iter().map(text).sum();
    let messages: usize = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| blocks(&m["content"]))
        .map(|b| match &b["content"] {
            Value::String(result) => words(result),
            Value::Array(parts) => parts.iter().map(text).sum(),
            _ => text(&b),
        })
        .sum();
    3 + system + messages
}

/// The text cut as `stop_sequences` and `max_tokens` (in words) demand, with the stop reason
/// and sequence.
fn cut(text: &str, request: &Value) -> (String, &'static str, Value) {
    let stops = request["stop_sequences"].as_array().into_iter().flatten();
    let first_stop = stops
        .filter_map(Value::as_str)
        .filter_map(|s| text.find(s).map(|at| (at, s)))
        .min();
    let (mut text, mut reason, mut sequence) = match first_stop {
        Some((at, stop)) => (text[..at].to_owned(), "stop_sequence", json!(stop)),
        None => (text.to_owned(), "end_turn", Value::Null),
    };
    let max = request["max_tokens"].as_u64().unwrap_or(u64::MAX) as usize;
    if words(&text) > max {
        text = text.split_inclusive(' ').take(max).collect();
        (reason, sequence) = ("max_tokens", Value::Null);
    }
    (text, reason, sequence)
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    shared
        .log
        .record((recorded_headers(&headers), request.clone()));

    if !headers.contains_key("x-api-key") {
        return error(401, "authentication_error", "x-api-key header is required");
    }
    if !headers.contains_key("anthropic-version") {
        return invalid("anthropic-version: header is required");
    }
    if !request.is_object() {
        return invalid("There was an issue with your request body: invalid JSON");
    }
    let model = request["model"].as_str().unwrap_or_default();
    if let Some(&(_, status, kind, message)) = FAILURES.iter().find(|f| f.0 == model) {
        let mut response = error(status, kind, message);
        if status == 429 {
            let seven = HeaderValue::from_static("7");
            response.headers_mut().insert(header::RETRY_AFTER, seven);
        }
        return response;
    }
    if model == "hang" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if let Err(message) = validate(&request) {
        return invalid(message);
    }

    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let (cache_read, cache_creation) = if uses_cache(&request) {
        (CACHE_READ_TOKENS, CACHE_CREATION_TOKENS)
    } else {
        (0, 0)
    };
    let input = input_tokens(&request);
    // The content blocks of the answer, each as (block, its text or JSON input).
    let (content, stop_reason, stop_sequence) = match answer(&request) {
        Answer::Text(text) => {
            let (text, reason, sequence) = cut(&text, &request);
            (
                vec![json!({"type": "text", "text": text})],
                reason,
                sequence,
            )
        }
        Answer::Tool(name) => {
            let input: Value = serde_json::from_str(TOOL_INPUT).unwrap_or_default();
            let blocks = vec![
                json!({"type": "text", "text": TOOL_PREAMBLE}),
                json!({"type": "tool_use", "id": TOOL_USE_ID, "name": name, "input": input}),
            ];
            (blocks, "tool_use", Value::Null)
        }
    };
    let output: usize = content
        .iter()
        .map(|b| match b["type"].as_str() {
            Some("text") => b["text"].as_str().map_or(0, words),
            _ => words(TOOL_INPUT),
        })
        .sum();
    let usage = json!({
        "input_tokens": input,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "service_tier": "standard",
    });

    if request["stream"] != true {
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": usage,
        }))
        .into_response();
    }

    let event = |data: Value| {
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
    };
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut events = vec![event(json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": start_usage}}))];
    if model == "error-stream" {
        events.push(event(json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}})));
        return event_stream(events, model, "text/event-stream; charset=utf-8");
    }
    for (index, block) in content.iter().enumerate() {
        let delta = |delta: Value| {
            event(json!({"type": "content_block_delta", "index": index, "delta": delta}))
        };
        match block["type"].as_str() {
            Some("text") => {
                let start = json!({"type": "text", "text": ""});
                events.push(event(json!({"type": "content_block_start", "index": index,
                    "content_block": start})));
                if index == 0 {
                    events.push(event(json!({"type": "ping"})));
                }
                let text = block["text"].as_str().unwrap_or_default();
                events.extend(
                    text.split_inclusive(' ')
                        .map(|w| delta(json!({"type": "text_delta", "text": w}))),
                );
            }
            _ => {
                let start = json!({"type": "tool_use", "id": block["id"], "name": block["name"],
                    "input": {}});
                events.push(event(json!({"type": "content_block_start", "index": index,
                    "content_block": start})));
                let (head, tail) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
                events.extend(
                    ["", head, tail].map(|part| {
                        delta(json!({"type": "input_json_delta", "partial_json": part}))
                    }),
                );
            }
        }
        events.push(event(json!({"type": "content_block_stop", "index": index})));
    }
    events.push(event(json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": {"output_tokens": output}})));
    events.push(event(json!({"type": "message_stop"})));
    event_stream(events, model, "text/event-stream; charset=utf-8")
}
