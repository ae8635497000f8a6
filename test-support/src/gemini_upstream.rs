//! A fake Gemini API: a real HTTP server on `127.0.0.1:0` that answers
//! `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:embedContent` and `:batchEmbedContents` in the Gemini API's own wire format,
//! deterministically, so that the edge's Gemini provider can be tested end to end.
//!
//! Like the real API it refuses, with a 400 `INVALID_ARGUMENT`: empty `contents`; roles other
//! than `user` and `model`; parts that are empty or of no known kind; `functionResponse` parts
//! not answering a `functionCall` of the previous model turn by name; `toolConfig` without
//! tools; and batch requests whose `model` is not the path's. A missing `x-goog-api-key` gets a
//! 403 `PERMISSION_DENIED`; a streaming call without `alt=sse` a 400 (the fake speaks only SSE).
//!
//! Answers: when `tools` are declared (and `functionCallingConfig.mode` is not `NONE`) and the
//! last user turn holds no `functionResponse`, a `functionCall` of the first function (or the
//! first of `allowedFunctionNames`) with args [`TOOL_ARGS`]; when it holds one, the text
//! `The tool said: <its response.content>`; with `responseMimeType: application/json`,
//! [`JSON_ANSWER`]; otherwise [`ANSWER`], followed by a description of the inline images and
//! files of the last user turn (`I see 2 images: image/png, image/jpeg`). `stopSequences` and
//! `maxOutputTokens` (in words) cut the answer as they would a real one.
//!
//! Behaviour is chosen by the model in the path: `fail-429` (`RESOURCE_EXHAUSTED`, with a
//! `RetryInfo` of 7 s), `fail-400` (`INVALID_ARGUMENT`), `fail-403` (`PERMISSION_DENIED`),
//! `fail-500` (`INTERNAL`) answer with that status and a Google error body; `hang` sleeps 30 s
//! before answering; `slow-stream` waits 200 ms before each event; `cut-stream` sends two events
//! and then drops the connection; a model whose name contains `cached` reports
//! [`CACHED_TOKENS`] of the prompt as read from the context cache; a model whose name contains
//! `thinking` signs its function calls with [`THOUGHT_SIGNATURE`] and, like Gemini 3, refuses
//! a history whose function calls lack their signature.
//!
//! Token counts: `promptTokenCount` is the number of whitespace-separated words of all text
//! (system instruction included) plus 3 (plus [`CACHED_TOKENS`] for `cached` models),
//! `candidatesTokenCount` the number of words of the answer (of the args' JSON for a call).
//! Embeddings are 8 numbers: the vector of text `i` of a request is `[i, i + 1/8, …, i + 7/8]`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::fake_server::{Fake, Logged, event_stream, lock, recorded_headers, seeing, words};

pub use crate::openai_upstream::RecordedRequest;

/// The text of every plain answer.
pub const ANSWER: &str = "Hello from the fake Gemini.";
/// The answer when JSON is asked for.
pub const JSON_ANSWER: &str = r#"{"answer": "hello from the fake Gemini"}"#;
/// The args of every function call the fake makes, as JSON text.
pub const TOOL_ARGS: &str = r#"{"location":"Paris"}"#;
/// The `thoughtSignature` of the function calls of `thinking` models.
pub const THOUGHT_SIGNATURE: &str = "RmFrZVRob3VnaHRTaWduYXR1cmU=";
/// Prompt tokens reported as read from the cache by `cached` models.
pub const CACHED_TOKENS: u64 = 40;

type Shared = Logged<RecordedRequest, GeminiState>;

/// What the fake Gemini keeps beside its request log.
#[derive(Default)]
pub struct GeminiState {
    last_uri: Mutex<Option<String>>,
}

/// A running fake Gemini API; it stops accepting connections when dropped.
pub type FakeGemini = Fake<Shared>;

impl FakeGemini {
    /// Starts serving on a random port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<FakeGemini> {
        Fake::serve(Router::new().route("/v1beta/models/{method}", post(models))).await
    }

    /// The API base to configure, e.g. `http://127.0.0.1:PORT` (requests go to `/v1beta/…`).
    pub fn base_url(&self) -> String {
        self.url()
    }

    /// The path and query of the last request received.
    pub fn last_uri(&self) -> Option<String> {
        lock(&self.shared().last_uri).clone()
    }
}

/// The models that fail on command: (model, status, Google status, message).
#[rustfmt::skip]
const FAILURES: [(&str, u16, &str, &str); 4] = [
    ("fail-429", 429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    ("fail-400", 400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: bad things in request"),
    ("fail-403", 403, "PERMISSION_DENIED", "Permission denied: Consumer has been suspended."),
    ("fail-500", 500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
];

/// A Google-shaped error response.
fn error(status: u16, google_status: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut error = json!({"code": status, "message": message, "status": google_status});
    if status == 429 {
        error["details"] = json!([
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
        ]);
    }
    (code, Json(json!({"error": error}))).into_response()
}

fn invalid(message: impl AsRef<str>) -> Response {
    error(400, "INVALID_ARGUMENT", message.as_ref())
}

async fn models(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    *lock(&shared.last_uri) = uri.path_and_query().map(|p| p.as_str().to_owned());
    shared
        .log
        .record((recorded_headers(&headers), request.clone()));

    let Some((model, action)) = method.split_once(':') else {
        return error(404, "NOT_FOUND", "Method not found.");
    };
    if !headers.contains_key("x-goog-api-key") {
        return error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        );
    }
    if !request.is_object() {
        return invalid("Invalid JSON payload received.");
    }
    if let Some(&(_, status, google, message)) = FAILURES.iter().find(|f| f.0 == model) {
        return error(status, google, message);
    }
    if model == "hang" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    match action {
        "generateContent" => generate(&request, model, false),
        "streamGenerateContent" => {
            if !uri.query().unwrap_or_default().contains("alt=sse") {
                return invalid("this fake streams only with alt=sse");
            }
            generate(&request, model, true)
        }
        "embedContent" => embed(&request, model, false),
        "batchEmbedContents" => embed(&request, model, true),
        _ => error(404, "NOT_FOUND", "Method not found."),
    }
}

/// Checks a `GenerateContentRequest` as the API would; the error says what is wrong.
fn validate(request: &Value, model: &str) -> Result<(), String> {
    let Some(contents) = request["contents"].as_array().filter(|c| !c.is_empty()) else {
        return Err("* GenerateContentRequest.contents: contents is not specified".into());
    };
    let mut previous_calls: Vec<&str> = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let role = content["role"].as_str().unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(format!(
                "* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model."
            ));
        }
        let Some(parts) = content["parts"].as_array().filter(|p| !p.is_empty()) else {
            return Err(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            ));
        };
        let mut calls = Vec::new();
        for (j, part) in parts.iter().enumerate() {
            let at = format!("* GenerateContentRequest.contents[{i}].parts[{j}]");
            if let Some(text) = part.get("text") {
                if !text.is_string() {
                    return Err(format!("{at}.text: must be a string"));
                }
            } else if let Some(data) = part.get("inlineData") {
                if !data["mimeType"].is_string() || !data["data"].is_string() {
                    return Err(format!("{at}.inline_data: mimeType and data are required"));
                }
            } else if let Some(file) = part.get("fileData") {
                if !file["fileUri"].is_string() {
                    return Err(format!("{at}.file_data: fileUri is required"));
                }
            } else if let Some(call) = part.get("functionCall") {
                if role != "model" || !call["name"].is_string() {
                    return Err(format!("{at}.function_call: invalid function call"));
                }
                if model.contains("thinking") && part["thoughtSignature"] != THOUGHT_SIGNATURE {
                    return Err(format!(
                        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly. Position {at}."
                    ));
                }
                calls.push(call["name"].as_str().unwrap_or_default());
            } else if let Some(response) = part.get("functionResponse") {
                let name = response["name"].as_str().unwrap_or_default();
                if role != "user" || !previous_calls.contains(&name) {
                    return Err(format!(
                        "{at}.function_response: a function response must answer a function call of the previous model turn: {name}"
                    ));
                }
            } else {
                return Err(format!(
                    "{at}.data: required oneof field 'data' must have one initialized field"
                ));
            }
        }
        previous_calls = calls;
    }
    if let Some(system) = request.get("systemInstruction")
        && system["parts"]
            .as_array()
            .is_none_or(|p| p.iter().any(|p| !p["text"].is_string()))
    {
        return Err("* GenerateContentRequest.system_instruction: text parts only".into());
    }
    if request.get("toolConfig").is_some() && request.get("tools").is_none() {
        return Err("* GenerateContentRequest.tool_config: requires tools".into());
    }
    for tools in request["tools"].as_array().into_iter().flatten() {
        for (k, declaration) in tools["functionDeclarations"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if !declaration["name"].is_string() {
                return Err(format!(
                    "* GenerateContentRequest.tools[0].function_declarations[{k}].name: Name cannot be empty."
                ));
            }
        }
    }
    Ok(())
}

/// What the fake answers with.
enum Answer {
    Text(String),
    /// A call of the named function with [`TOOL_ARGS`].
    Call(String),
}

fn answer(request: &Value) -> Answer {
    let last: Vec<Value> = request["contents"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["parts"].as_array())
        .cloned()
        .unwrap_or_default();
    if let Some(response) = last.iter().find_map(|p| p.get("functionResponse")) {
        let content = match &response["response"]["content"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        return Answer::Text(format!("The tool said: {content}"));
    }
    let config = &request["toolConfig"]["functionCallingConfig"];
    let first_function = request["tools"][0]["functionDeclarations"][0]["name"].as_str();
    if let Some(first) = first_function
        && config["mode"] != "NONE"
    {
        let name = config["allowedFunctionNames"][0].as_str().unwrap_or(first);
        return Answer::Call(name.to_owned());
    }
    if request["generationConfig"]["responseMimeType"] == "application/json" {
        return Answer::Text(JSON_ANSWER.to_owned());
    }
    let media: Vec<&str> = last
        .iter()
        .filter_map(|p| {
            p["inlineData"]["mimeType"]
                .as_str()
                .or_else(|| p["fileData"]["mimeType"].as_str())
        })
        .collect();
    Answer::Text(seeing(ANSWER, &media))
}

/// Prompt tokens: the words of all text, plus 3.
fn prompt_tokens(request: &Value) -> usize {
    let text = |p: &Value| p["text"].as_str().map_or(0, words);
    let system: usize = request["systemInstruction"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .sum();
    let contents: usize = request["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["parts"].as_array())
        .flatten()
        .map(
            |p| match p["functionResponse"]["response"]["content"].as_str() {
                Some(result) => words(result),
                None => text(p),
            },
        )
        .sum();
    3 + system + contents
}

/// The text cut as `stopSequences` and `maxOutputTokens` (in words) demand, and the finish
/// reason.
fn cut(text: &str, config: &Value) -> (String, &'static str) {
    let stops = config["stopSequences"].as_array().into_iter().flatten();
    let first_stop = stops
        .filter_map(Value::as_str)
        .filter_map(|s| text.find(s))
        .min();
    let mut text = match first_stop {
        Some(at) => text[..at].to_owned(),
        None => text.to_owned(),
    };
    let max = config["maxOutputTokens"].as_u64().unwrap_or(u64::MAX) as usize;
    if words(&text) > max {
        text = text.split_inclusive(' ').take(max).collect();
        return (text, "MAX_TOKENS");
    }
    (text, "STOP")
}

fn generate(request: &Value, model: &str, stream: bool) -> Response {
    if let Err(message) = validate(request, model) {
        return invalid(message);
    }
    let cached = if model.contains("cached") {
        CACHED_TOKENS as usize
    } else {
        0
    };
    let prompt = prompt_tokens(request) + cached;
    let (parts, finish) = match answer(request) {
        Answer::Text(text) => {
            let (text, finish) = cut(&text, &request["generationConfig"]);
            (vec![json!({"text": text})], finish)
        }
        Answer::Call(name) => {
            let args: Value = serde_json::from_str(TOOL_ARGS).unwrap_or_default();
            let mut part = json!({"functionCall": {"name": name, "args": args}});
            if model.contains("thinking") {
                part["thoughtSignature"] = THOUGHT_SIGNATURE.into();
            }
            (vec![part], "STOP")
        }
    };
    let output: usize = parts
        .iter()
        .map(|p| p["text"].as_str().map_or(words(TOOL_ARGS), words))
        .sum();
    let mut usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    });
    if cached > 0 {
        usage["cachedContentTokenCount"] = json!(cached);
    }
    let response_id = uuid::Uuid::new_v4().simple().to_string();
    let response = |parts: Vec<Value>, finish: Option<&str>, usage: &Value| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(finish) = finish {
            candidate["finishReason"] = json!(finish);
        }
        json!({"candidates": [candidate], "usageMetadata": usage,
            "modelVersion": model, "responseId": response_id})
    };
    if !stream {
        return Json(response(parts, Some(finish), &usage)).into_response();
    }

    // A stream: text word by word, a function call whole; usage on every event, complete on
    // the last, which carries the finish reason.
    let pieces: Vec<Value> = parts
        .iter()
        .flat_map(|p| match p["text"].as_str() {
            Some(text) => text
                .split_inclusive(' ')
                .map(|w| json!({"text": w}))
                .collect::<Vec<_>>(),
            None => vec![p.clone()],
        })
        .collect();
    let partial = json!({"promptTokenCount": prompt, "totalTokenCount": prompt});
    let last = pieces.len().saturating_sub(1);
    let events: Vec<Bytes> = pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let event = if i == last {
                response(vec![piece], Some(finish), &usage)
            } else {
                response(vec![piece], None, &partial)
            };
            Bytes::from(format!("data: {event}\r\n\r\n"))
        })
        .collect();
    event_stream(events, model, "text/event-stream")
}

/// The vector of text `i`.
fn vector(i: usize, dimensions: Option<u64>) -> Vec<f32> {
    let n = dimensions.unwrap_or(8).min(8) as usize;
    (0..n).map(|j| i as f32 + j as f32 / 8.0).collect()
}

fn embed(request: &Value, model: &str, batch: bool) -> Response {
    let text_of = |r: &Value| -> Option<String> {
        let parts = r["content"]["parts"].as_array().filter(|p| !p.is_empty())?;
        parts.iter().map(|p| p["text"].as_str()).collect()
    };
    if !batch {
        let Some(_) = text_of(request) else {
            return invalid("* EmbedContentRequest.content: contents is not specified");
        };
        let dimensions = request["outputDimensionality"].as_u64();
        return Json(json!({"embedding": {"values": vector(0, dimensions)}})).into_response();
    }
    let Some(requests) = request["requests"].as_array().filter(|r| !r.is_empty()) else {
        return invalid("* BatchEmbedContentsRequest.requests: requests is not specified");
    };
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r["model"] != format!("models/{model}") {
            return invalid(format!(
                "* BatchEmbedContentsRequest.model: Model in request[{i}] does not match the model in the URL: models/{model}"
            ));
        }
        if text_of(r).is_none() {
            return invalid(format!(
                "* BatchEmbedContentsRequest.requests[{i}].content: contents is not specified"
            ));
        }
        let dimensions = r["outputDimensionality"].as_u64();
        embeddings.push(json!({"values": vector(i, dimensions)}));
    }
    Json(json!({"embeddings": embeddings})).into_response()
}
