//! A fake OpenAI-compatible upstream: a real HTTP server on `127.0.0.1:0` that answers
//! `POST /v1/chat/completions` and `POST /v1/embeddings` in OpenAI's own wire format
//! (streaming included), deterministically, so that the edge can be tested end to end.
//!
//! Behaviour is chosen by the request's `model`:
//! `fail-500`, `fail-429` (with `retry-after: 7`), `fail-400`, `fail-401` answer with that
//! status and an OpenAI error body; `hang` sleeps 30 s before answering; `slow-stream` waits
//! 200 ms before each event; `cut-stream` sends two events and then drops the connection.
//! `fail-context` and `fail-content` answer 400 the way OpenAI refuses an input longer than
//! the context window and content against its policy. `echo` answers with the text of the last
//! user message (streamed word by word like any answer). Any other model is answered normally.
//! Embeddings are fixed vectors per input position, except for model `bag-of-words`, whose
//! vectors count words (see [`bag_of_words`]).
//!
//! [`FakeOpenAi::fail`] and [`FakeOpenAi::fail_times`] make every request (or the next few) fail
//! or hang whatever the model, so a test can break and heal an upstream while traffic flows.
//!
//! It also serves Azure OpenAI's paths, `POST /openai/deployments/{deployment}/chat/completions`
//! and `/embeddings`: the deployment in the path is the model (as on Azure, whatever the body
//! says), a missing `api-version` query gets a 404 and a request with neither `api-key` nor
//! `authorization` a 401; [`FakeOpenAi::last_uri`] tells the path and query received.
//!
//! Token counts: `prompt_tokens` is the number of whitespace-separated words in all string
//! message contents plus 3; `completion_tokens` the number of words in the answer (per choice).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};

use crate::fake_server::{Fake, JsonRequest, Logged, event_stream, lock, recorded_headers, words};

/// The text of every plain answer.
pub const ANSWER: &str = "Hello from the fake upstream.";
/// The arguments of every tool call the fake makes.
pub const TOOL_ARGUMENTS: &str = r#"{"location":"Paris"}"#;

/// One request as received: its headers (lower-case names, in order) and its JSON body
/// (`null` when the body was not JSON).
pub type RecordedRequest = JsonRequest;

/// A failure imposed on requests whatever their model.
#[derive(Clone, Debug)]
pub enum Failure {
    /// Answer with this status and an OpenAI error body, with `retry-after` when given.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Wait this long before answering normally.
    Delay(Duration),
}

impl Failure {
    /// Answer with `status`, and `retry-after` when given.
    pub fn status(status: u16, retry_after: Option<&str>) -> Failure {
        let retry_after = retry_after.map(str::to_owned);
        Failure::Status {
            status,
            retry_after,
        }
    }
}

#[derive(Clone, Debug)]
struct Script {
    failure: Failure,
    /// How many more requests fail; `None` = until changed.
    remaining: Option<usize>,
}

type Shared = Logged<RecordedRequest, OpenAiState>;

/// What the fake OpenAI keeps beside its request log: the failures it is told to answer with.
#[derive(Default)]
pub struct OpenAiState {
    last_uri: Mutex<Option<String>>,
    script: Mutex<Option<Script>>,
    arrivals: Mutex<Vec<Instant>>,
}

impl OpenAiState {
    /// The failure the current request gets, if one is scripted.
    fn scripted(&self) -> Option<Failure> {
        let mut script = lock(&self.script);
        let current = script.as_mut()?;
        match &mut current.remaining {
            Some(0) => {
                *script = None;
                return None;
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(current.failure.clone())
    }
}

/// A running fake upstream; it stops accepting connections when dropped.
pub type FakeOpenAi = Fake<Shared>;

impl FakeOpenAi {
    /// Starts serving on a random port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeOpenAi> {
        let routes = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route(
                "/openai/deployments/{deployment}/{*operation}",
                post(on_azure),
            );
        Fake::serve(routes).await
    }

    /// The API base to configure, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The path and query of the last request received on an Azure path.
    pub fn last_uri(&self) -> Option<String> {
        lock(&self.shared().last_uri).clone()
    }

    /// Makes every request fail with `failure` until [`FakeOpenAi::heal`].
    pub fn fail(&self, failure: Failure) {
        self.script(failure, None);
    }

    /// Makes the next `times` requests fail with `failure`.
    pub fn fail_times(&self, times: usize, failure: Failure) {
        self.script(failure, Some(times));
    }

    fn script(&self, failure: Failure, remaining: Option<usize>) {
        *lock(&self.shared().script) = Some(Script { failure, remaining });
    }

    /// Answers normally again.
    pub fn heal(&self) {
        *lock(&self.shared().script) = None;
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        lock(&self.shared().arrivals).clone()
    }
}

/// The models that fail on command: (model, status, error message, type, code).
#[rustfmt::skip]
const FAILURES: [(&str, u16, &str, &str, Option<&str>); 6] = [
    ("fail-context", 400, "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. Please reduce the length of the messages.", "invalid_request_error", Some("context_length_exceeded")),
    ("fail-content", 400, "Your request was rejected as a result of our safety system.", "invalid_request_error", Some("content_policy_violation")),
    ("fail-500", 500, "The server had an error processing your request.", "server_error", None),
    ("fail-429", 429, "Rate limit reached for requests.", "requests", Some("rate_limit_exceeded")),
    ("fail-400", 400, "bad things in request", "invalid_request_error", None),
    ("fail-401", 401, "Incorrect API key.", "invalid_request_error", Some("invalid_api_key")),
];

/// Records a request and parses its body; answers the failure models (and bad bodies) itself.
async fn begin(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
    let value = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    shared
        .log
        .record((recorded_headers(headers), value.clone()));
    lock(&shared.arrivals).push(Instant::now());
    match shared.scripted() {
        Some(Failure::Status {
            status,
            retry_after,
        }) => {
            let message = format!("scripted failure (HTTP {status})");
            let mut response = error(status, &message, "server_error", None);
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Err(response);
        }
        Some(Failure::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    if !value.is_object() {
        let message = "We could not parse the JSON body of your request.";
        return Err(error(400, message, "invalid_request_error", None));
    }
    let model = value["model"].as_str().unwrap_or_default();
    if let Some(&(_, status, message, kind, code)) = FAILURES.iter().find(|f| f.0 == model) {
        let mut response = error(status, message, kind, code);
        if status == 429 {
            let seven = HeaderValue::from_static("7");
            response.headers_mut().insert(header::RETRY_AFTER, seven);
        }
        return Err(response);
    }
    if model == "hang" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    Ok(value)
}

/// An OpenAI-shaped error response.
fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the fake answers a chat request with.
enum Answer {
    Text(String),
    /// A call of the named tool with [`TOOL_ARGUMENTS`].
    Tool(String),
}

fn answer(request: &Value, messages: &[Value]) -> Answer {
    let last = messages.last().unwrap_or(&Value::Null);
    let tool = request["tools"][0]["function"]["name"].as_str();
    if request["model"] == "echo" {
        return Answer::Text(last["content"].as_str().unwrap_or_default().to_owned());
    }
    match (last["role"].as_str(), tool) {
        (Some("user"), Some(tool)) => Answer::Tool(tool.to_owned()),
        (Some("tool"), _) => {
            let result = last["content"].as_str().unwrap_or_default();
            Answer::Text(format!("The tool said: {result}"))
        }
        _ if request["response_format"]["type"] == "json_object" => {
            Answer::Text(r#"{"answer": "hello from the fake upstream"}"#.to_owned())
        }
        _ => Answer::Text(ANSWER.to_owned()),
    }
}

/// The tool call of a message.
pub(crate) fn tool_call(name: &str) -> Value {
    json!({"id": "call_1", "type": "function",
        "function": {"name": name, "arguments": TOOL_ARGUMENTS}})
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match begin(&shared, &headers, &body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let model = request["model"].as_str().unwrap_or_default();
    let messages = request["messages"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let n = request["n"].as_u64().unwrap_or(1).clamp(1, 16) as usize;
    let answer = answer(&request, messages);
    let prompt = 3 + messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .map(words)
        .sum::<usize>();
    let (completion, finish) = match &answer {
        Answer::Text(text) => (words(text) * n, "stop"),
        Answer::Tool(_) => (words(TOOL_ARGUMENTS) * n, "tool_calls"),
    };
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    });
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let object = |kind: &str, choices: Value| {
        json!({"id": id, "object": kind, "created": now(), "model": model,
            "system_fingerprint": "fp_fake", "choices": choices})
    };
    if request["stream"] != true {
        let message = match &answer {
            Answer::Text(text) => json!({"role": "assistant", "content": text, "refusal": null}),
            Answer::Tool(name) => json!({"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [tool_call(name)]}),
        };
        let choices: Vec<Value> = (0..n)
            .map(|i| {
                json!({"index": i, "message": message,
                    "logprobs": null, "finish_reason": finish})
            })
            .collect();
        let mut completion = object("chat.completion", json!(choices));
        completion["usage"] = usage;
        return Json(completion).into_response();
    }

    // A stream: the same deltas for every choice, then the finishes, then usage if asked.
    let deltas: Vec<Value> = match &answer {
        Answer::Text(text) => std::iter::once(json!({"role": "assistant", "content": ""}))
            .chain(text.split_inclusive(' ').map(|w| json!({"content": w})))
            .collect(),
        Answer::Tool(name) => tool_call_deltas(name),
    };
    let include_usage = request["stream_options"]["include_usage"] == true;
    let event = |choices: Value, usage: &Value| {
        let mut chunk = object("chat.completion.chunk", choices);
        if include_usage {
            // As OpenAI does: `"usage": null` on every chunk but the last.
            chunk["usage"] = usage.clone();
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let choice = |i: usize, delta: &Value, finish: Option<&str>| {
        json!([{"index": i, "delta": delta,
            "logprobs": null, "finish_reason": finish}])
    };
    let mut events = Vec::new();
    for delta in &deltas {
        events.extend((0..n).map(|i| event(choice(i, delta, None), &Value::Null)));
    }
    events.extend((0..n).map(|i| event(choice(i, &json!({}), Some(finish)), &Value::Null)));
    if include_usage {
        events.push(event(json!([]), &usage));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    event_stream(events, model, "text/event-stream")
}

/// The stream deltas of a tool call: id, type and name first, then the arguments in two pieces.
pub(crate) fn tool_call_deltas(name: &str) -> Vec<Value> {
    let (head, tail) = TOOL_ARGUMENTS.split_at(TOOL_ARGUMENTS.len() / 2);
    let mut call = tool_call(name);
    (call["index"], call["function"]["arguments"]) = (json!(0), json!(""));
    let first = json!({"role": "assistant", "content": null, "tool_calls": [call]});
    let parts = [head, tail]
        .map(|part| json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}));
    std::iter::once(first).chain(parts).collect()
}

/// Model `bag-of-words`'s embedding: 32 word-count buckets, so texts with the same words (in
/// any order, any case, any punctuation) have the same vector and texts with other words do not.
fn bag_of_words(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0; 32];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        vector[(hash % 32) as usize] += 1.0;
    }
    vector
}

/// An Azure request: checked as Azure would, then answered as OpenAI would, with the path's
/// deployment as the model.
async fn azure(
    shared: &Shared,
    deployment: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Bytes, Response> {
    let path_and_query = uri.path_and_query().map_or("", |p| p.as_str());
    *lock(&shared.last_uri) = Some(path_and_query.to_owned());
    let versioned = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|p| p.starts_with("api-version=") && p.len() > "api-version=".len());
    if !headers.contains_key("api-key") && !headers.contains_key(header::AUTHORIZATION) {
        let _ = begin(shared, headers, body).await;
        let message = "Access denied due to missing subscription key.";
        return Err(error(401, message, "invalid_request_error", Some("401")));
    }
    if !versioned {
        let _ = begin(shared, headers, body).await;
        return Err(error(
            404,
            "Resource not found",
            "invalid_request_error",
            Some("404"),
        ));
    }
    let mut value = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("model".into(), deployment.into());
    }
    Ok(Bytes::from(value.to_string()))
}

/// Azure's `chat/completions` and `embeddings` of a deployment.
async fn on_azure(
    State(shared): State<Arc<Shared>>,
    Path((deployment, operation)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !matches!(operation.as_str(), "chat/completions" | "embeddings") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body = match azure(&shared, &deployment, &uri, &headers, &body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match operation.as_str() {
        "embeddings" => embeddings(State(shared), headers, body).await,
        _ => chat(State(shared), headers, body).await,
    }
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match begin(&shared, &headers, &body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let input = &request["input"];
    let inputs: Vec<&Value> = match input {
        Value::Null => {
            let message = "'input' is a required property";
            return error(400, message, "invalid_request_error", None);
        }
        // One array of token ids is one input; any other array is a list of inputs.
        Value::Array(items) if !items.iter().all(Value::is_number) => items.iter().collect(),
        one => vec![one],
    };
    let tokens: usize = inputs
        .iter()
        .map(|input| match input {
            Value::String(text) => words(text),
            Value::Array(ids) => ids.len(),
            _ => 0,
        })
        .sum();
    let base64 = request["encoding_format"] == "base64";
    let bag = request["model"] == "bag-of-words";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let vector = if bag {
                bag_of_words(input.as_str().unwrap_or_default())
            } else {
                // Deterministic and exact in binary: vector i is [i, i + 1/8, …, i + 7/8].
                (0..8).map(|j| i as f32 + j as f32 / 8.0).collect()
            };
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Json(json!({
        "object": "list", "data": data, "model": request["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}
