//! Amazon SageMaker real-time endpoints through InvokeEndpoint and
//! InvokeEndpointWithResponseStream of the official AWS SDK. The endpoint name is the
//! deployment's `upstream_model`; region, credentials and endpoint override work as for
//! Bedrock (see [`super::aws`]).
//!
//! The deployment setting `format` says what the container speaks:
//! - `messages` (the default): a Messages API container (LMI, TGI ≥ 1.4 `/v1/chat/completions`
//!   compatible) that takes the OpenAI chat body and answers OpenAI JSON, or OpenAI `data:`
//!   events inside the stream's PayloadPart bytes. The body passes through; the PayloadPart
//!   bytes are re-framed into whole server-sent events. Usage is whatever the container reports
//!   (none is invented).
//! - `tgi`: Hugging Face TGI's native `{"inputs", "parameters"}` with the prompt built from the
//!   messages by a simple role template; its `generated_text` answer and `token` stream events
//!   are translated to OpenAI's format, usage taken from `details` when present.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sagemakerruntime::Client;
use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::operation::invoke_endpoint_with_response_stream::InvokeEndpointWithResponseStreamError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use aws_sdk_sagemakerruntime::primitives::event_stream::EventReceiver;
use aws_sdk_sagemakerruntime::types::ResponseStream;
use aws_sdk_sagemakerruntime::types::error::{ModelError, ResponseStreamError};
use aws_smithy_types::event_stream::RawMessage;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::aws::{self, AwsProvider, EventSource};
use super::{Provider, UpstreamCall, UpstreamError, UpstreamReply};
use crate::clock::unix_seconds;
use crate::providers::completion::{self, completion_id};
use crate::providers::messages;

const JSON: &str = "application/json";

/// What the endpoint's container speaks (the deployment setting `format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Messages,
    Tgi,
}

impl Format {
    fn of(call: &UpstreamCall<'_>) -> Result<Format, UpstreamError> {
        match call.deployment.settings.get("format").map(|f| f.trim()) {
            None | Some("") => Ok(Format::Messages),
            Some(f) if f.eq_ignore_ascii_case("messages") => Ok(Format::Messages),
            Some(f) if f.eq_ignore_ascii_case("tgi") => Ok(Format::Tgi),
            Some(other) => Err(UpstreamError::Failed(format!(
                "deployment {}: unknown SageMaker format {other:?} (expected messages or tgi)",
                call.deployment.id
            ))),
        }
    }
}

/// Calls SageMaker endpoints with one SDK client per (region, endpoint, credential).
pub type SagemakerProvider = AwsProvider<Client>;

impl SagemakerProvider {
    fn timeouts(&self, limit: Duration) -> aws_sdk_sagemakerruntime::config::Builder {
        aws_sdk_sagemakerruntime::config::Builder::default()
            .timeout_config(self.clients.call_timeouts(limit))
    }
}

#[async_trait]
impl Provider for SagemakerProvider {
    async fn chat(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        let what = format!("deployment {}", call.deployment.id);
        let format = Format::of(&call)?;
        let model = call.deployment.upstream_model.clone();
        let (body, include_usage) = match format {
            Format::Messages => (call.body.clone(), false),
            Format::Tgi => {
                let request =
                    tgi_request(&call.body, call.stream).map_err(UpstreamError::Unsupported)?;
                (request.body, request.include_usage)
            }
        };
        let client = self.clients.client(&call, Client::new).await;
        if call.stream {
            let first_byte = call.timeouts.first_byte;
            let output = client
                .invoke_endpoint_with_response_stream()
                .endpoint_name(&model)
                .content_type(JSON)
                .body(Blob::new(body))
                .customize()
                .config_override(self.timeouts(first_byte))
                .send()
                .await
                .map_err(|e| sdk_error(e, &what, first_byte, stream_error))?;
            let decoder = match format {
                Format::Messages => Decoder::Messages(SseReframer::default()),
                Format::Tgi => Decoder::Tgi(TgiStream::new(&model, include_usage)),
            };
            Ok(relay(output.body, decoder, first_byte, what))
        } else {
            let limit = call.timeouts.total;
            let output = client
                .invoke_endpoint()
                .endpoint_name(&model)
                .content_type(JSON)
                .accept(JSON)
                .body(Blob::new(body))
                .customize()
                .config_override(self.timeouts(limit))
                .send()
                .await
                .map_err(|e| sdk_error(e, &what, limit, plain_error))?;
            let answer = output.body.map(Blob::into_inner).unwrap_or_default();
            match format {
                Format::Messages => Ok(UpstreamReply::Complete(Bytes::from(answer))),
                Format::Tgi => {
                    let stops = stop_sequences(&call.body);
                    let body = tgi_completion(&answer, &model, &stops).ok_or_else(|| {
                        UpstreamError::Failed(format!(
                            "{what} failed: the endpoint's answer is not TGI's format"
                        ))
                    })?;
                    Ok(UpstreamReply::Complete(Bytes::from(body.to_string())))
                }
            }
        }
    }

    async fn embeddings(&self, call: UpstreamCall<'_>) -> Result<UpstreamReply, UpstreamError> {
        Err(UpstreamError::Unsupported(format!(
            "deployment {} is a SageMaker chat deployment: embeddings are not supported on it yet",
            call.deployment.id
        )))
    }
}

fn plain_error(e: &InvokeEndpointError, what: &str) -> Option<UpstreamError> {
    match e {
        InvokeEndpointError::ModelError(m) => Some(model_error(m, what)),
        _ => None,
    }
}

fn stream_error(e: &InvokeEndpointWithResponseStreamError, what: &str) -> Option<UpstreamError> {
    match e {
        InvokeEndpointWithResponseStreamError::ModelError(m) => Some(model_error(m, what)),
        _ => None,
    }
}

/// An exception event in the middle of a stream.
fn in_stream_error(e: &ResponseStreamError, what: &str) -> Option<UpstreamError> {
    match e {
        ResponseStreamError::ModelStreamError(m) => {
            let detail = m.message().map(container_message).unwrap_or_default();
            Some(UpstreamError::Failed(format!(
                "{what}: the model stream failed: {detail}"
            )))
        }
        ResponseStreamError::InternalStreamFailure(_) => Some(UpstreamError::Failed(format!(
            "{what} failed: SageMaker's stream broke off (InternalStreamFailure)"
        ))),
        _ => None,
    }
}

fn model_error(m: &ModelError, what: &str) -> UpstreamError {
    container_error(
        m.original_status_code(),
        m.original_message().or(m.message()),
        what,
    )
}

/// Maps an SDK failure; messages name the deployment, never the endpoint or the credential.
/// `special` maps the operation's modelled errors that need more than their code.
fn sdk_error<E, R>(
    error: SdkError<E, R>,
    what: &str,
    limit: Duration,
    special: impl Fn(&E, &str) -> Option<UpstreamError>,
) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + 'static,
{
    aws::sdk_error(error, what, limit, "SageMaker", |err, retry_after| {
        special(err, what)
            .unwrap_or_else(|| service_error(err.code(), err.message(), retry_after, what))
    })
}

/// The container's own error message: `error.message`, `message` or `error` of a JSON body,
/// else the text itself; at most 1000 characters, and never SageMaker's pointer to the logs
/// (which names the account).
fn container_message(message: &str) -> String {
    let message = message
        .split_once(". See https://")
        .map_or(message, |(head, _)| head);
    let parsed = serde_json::from_str::<Value>(message).ok().and_then(|v| {
        [
            v.pointer("/error/message"),
            v.get("message"),
            v.get("error"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str().map(str::to_owned))
    });
    super::upstream_message(parsed.as_deref().unwrap_or(message))
}

/// A ModelError: the container answered an error status to the invocation.
fn container_error(status: Option<i32>, message: Option<&str>, what: &str) -> UpstreamError {
    let message = message.map(container_message).filter(|m| !m.is_empty());
    match status {
        Some(429) => UpstreamError::RateLimited { retry_after: None },
        Some(status @ 500..) => UpstreamError::Failed(match message {
            Some(m) => format!("{what}: the model container failed (HTTP {status}): {m}"),
            None => format!("{what}: the model container failed (HTTP {status})"),
        }),
        _ => UpstreamError::Rejected {
            status: 400,
            message: message.unwrap_or_else(|| format!("{what}: the model rejected the request")),
        },
    }
}

/// Maps a SageMaker error by its code (the same for both operations and in-stream errors).
fn service_error(
    code: Option<&str>,
    message: Option<&str>,
    retry_after: Option<String>,
    what: &str,
) -> UpstreamError {
    let code = code.unwrap_or("");
    let matches = |name: &str| code.eq_ignore_ascii_case(name);
    if matches("ValidationError") {
        aws::rejected("SageMaker", message, what)
    } else if matches("ModelError") {
        container_error(None, message, what)
    } else if matches("ModelStreamError") {
        let detail = message.map(container_message).unwrap_or_default();
        UpstreamError::Failed(format!("{what}: the model stream failed: {detail}"))
    } else if matches("ModelNotReadyException") {
        UpstreamError::Failed(format!("{what}: the SageMaker model is not ready yet"))
    } else {
        aws::service_error("SageMaker", code, message, retry_after, what)
    }
}

// ---- streaming ----

/// Turns the PayloadPart bytes of a stream into OpenAI server-sent events.
enum Decoder {
    Messages(SseReframer),
    Tgi(TgiStream),
}

impl Decoder {
    fn push(&mut self, bytes: &[u8]) -> Result<String, String> {
        match self {
            Decoder::Messages(d) => Ok(d.push(bytes)),
            Decoder::Tgi(d) => d.push(bytes),
        }
    }

    fn end(&mut self) -> Result<String, String> {
        match self {
            Decoder::Messages(d) => Ok(d.end()),
            Decoder::Tgi(d) => d.end(),
        }
    }
}

/// Splits bytes into lines, whatever way the PayloadParts cut them.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        lines
    }

    fn rest(&mut self) -> Option<String> {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf))
            .trim_end()
            .to_owned();
        (!rest.is_empty()).then_some(rest)
    }
}

/// The payload of a `data:` line, or of a bare JSON line (JSON Lines containers).
fn line_data(line: &str) -> Option<&str> {
    let data = match line.strip_prefix("data:") {
        Some(data) => data.trim(),
        None if line.trim_start().starts_with('{') => line.trim(),
        None => return None,
    };
    (!data.is_empty()).then_some(data)
}

/// Re-frames a Messages API container's OpenAI events into whole `data: …\n\n` events, and ends
/// the stream with `[DONE]` when the container did not.
#[derive(Default)]
struct SseReframer {
    lines: Lines,
    done: bool,
}

impl SseReframer {
    fn event(&mut self, data: &str, out: &mut String) {
        if self.done {
            return;
        }
        if data == "[DONE]" {
            self.done = true;
        }
        out.push_str("data: ");
        out.push_str(data);
        out.push_str("\n\n");
    }

    fn push(&mut self, bytes: &[u8]) -> String {
        let mut out = String::new();
        for line in self.lines.push(bytes) {
            if let Some(data) = line_data(&line) {
                self.event(data, &mut out);
            }
        }
        out
    }

    fn end(&mut self) -> String {
        let mut out = String::new();
        if let Some(line) = self.lines.rest()
            && let Some(data) = line_data(&line)
        {
            self.event(data, &mut out);
        }
        if !self.done {
            self.event("[DONE]", &mut out);
        }
        out
    }
}

/// OpenAI's `finish_reason` for TGI's.
fn finish_reason(details: &Value) -> &'static str {
    match details["finish_reason"].as_str() {
        Some("length") => "length",
        _ => "stop",
    }
}

/// OpenAI's `usage` from TGI's `details`: generated tokens, and prompt tokens from `prefill`
/// (plain answers) or `input_length` (newer TGI); none without `generated_tokens`.
fn tgi_usage(details: &Value) -> Option<Value> {
    let completion = details["generated_tokens"].as_u64()?;
    let prompt = details["prefill"]
        .as_array()
        .map(|p| p.len() as u64)
        .filter(|n| *n > 0)
        .or_else(|| details["input_length"].as_u64())
        .unwrap_or(0);
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }))
}

/// Turns TGI's `data:{"token":…}` stream into OpenAI chunks.
struct TgiStream {
    lines: Lines,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    role_sent: bool,
    finished: bool,
}

impl TgiStream {
    fn new(model: &str, include_usage: bool) -> Self {
        TgiStream {
            lines: Lines::default(),
            id: completion_id(),
            created: unix_seconds(),
            model: model.to_owned(),
            include_usage,
            role_sent: false,
            finished: false,
        }
    }

    fn delta(&mut self, delta: Value, finish: Option<&str>, out: &mut String) {
        let mut delta = delta;
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = json!("assistant");
        }
        let chunk = completion::chunk(&self.id, self.created, &self.model, delta, finish);
        out.push_str(&format!("data: {chunk}\n\n"));
    }

    fn line(&mut self, line: &str, out: &mut String) -> Result<(), String> {
        let Some(data) = line_data(line) else {
            return Ok(());
        };
        if self.finished || data == "[DONE]" {
            return Ok(());
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|_| "the endpoint's stream is not TGI's format".to_owned())?;
        if let Some(error) = event.get("error") {
            let message = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(format!(
                "the model failed while streaming: {}",
                super::upstream_message(&message)
            ));
        }
        let token = &event["token"];
        if token["special"] != json!(true)
            && let Some(text) = token["text"].as_str()
            && !text.is_empty()
        {
            self.delta(json!({"content": text}), None, out);
        }
        if !event["generated_text"].is_null() {
            self.finish(&event["details"], out);
        }
        Ok(())
    }

    fn finish(&mut self, details: &Value, out: &mut String) {
        self.finished = true;
        self.delta(json!({}), Some(finish_reason(details)), out);
        if self.include_usage
            && let Some(usage) = tgi_usage(details)
        {
            let chunk = completion::usage_chunk(&self.id, self.created, &self.model, usage);
            out.push_str(&format!("data: {chunk}\n\n"));
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Result<String, String> {
        let mut out = String::new();
        for line in self.lines.push(bytes) {
            self.line(&line, &mut out)?;
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<String, String> {
        let mut out = String::new();
        if let Some(line) = self.lines.rest() {
            self.line(&line, &mut out)?;
        }
        if !self.finished {
            self.finish(&Value::Null, &mut out);
        }
        out.push_str("data: [DONE]\n\n");
        Ok(out)
    }
}

impl EventSource for EventReceiver<ResponseStream, ResponseStreamError> {
    type Event = ResponseStream;
    type Error = ResponseStreamError;

    async fn next_event(
        &mut self,
    ) -> Result<Option<ResponseStream>, SdkError<ResponseStreamError, RawMessage>> {
        self.recv().await
    }
}

/// The endpoint's stream relayed as OpenAI events: each PayloadPart's bytes through `decoder`.
fn relay(
    events: EventReceiver<ResponseStream, ResponseStreamError>,
    mut decoder: Decoder,
    first_byte: Duration,
    what: String,
) -> UpstreamReply {
    let decode = move |event: Option<ResponseStream>| {
        let made = match event {
            Some(ResponseStream::PayloadPart(part)) => {
                decoder.push(&part.bytes.map(Blob::into_inner).unwrap_or_default())?
            }
            Some(_) => String::new(),
            None => decoder.end()?,
        };
        Ok(made.into_bytes())
    };
    let stream_error = |e, what: &str, limit| sdk_error(e, what, limit, in_stream_error);
    UpstreamReply::Stream(aws::relay_events(
        events,
        decode,
        first_byte,
        what,
        stream_error,
    ))
}

// ---- TGI requests and answers ----

struct TgiRequest {
    body: Bytes,
    include_usage: bool,
}

/// The text of a message's `content`: a string, or the text parts of a list.
fn content_text(content: &Value, index: usize) -> Result<String, String> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text") | None, Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(format!(
                            "messages[{index}]: content of type {} cannot be sent to a TGI \
                             SageMaker endpoint (text only)",
                            kind.unwrap_or("unknown")
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(format!(
            "messages[{index}].content must be a string or a list"
        )),
    }
}

/// The prompt for TGI: one `Role: text` paragraph per message, then `Assistant:`.
fn tgi_prompt(messages: &[Value]) -> Result<String, String> {
    let mut prompt = String::new();
    for (i, message) in messages.iter().enumerate() {
        let label = match message["role"].as_str().unwrap_or("user") {
            "system" | "developer" => "System",
            "assistant" => "Assistant",
            "tool" | "function" => "Tool",
            _ => "User",
        };
        let text = content_text(&message["content"], i)?;
        prompt.push_str(label);
        prompt.push_str(": ");
        prompt.push_str(text.trim());
        prompt.push_str("\n\n");
    }
    prompt.push_str("Assistant:");
    Ok(prompt)
}

/// OpenAI's `stop` (a string or a list) as a list.
fn stop_sequences(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    match &value["stop"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// An OpenAI chat request as TGI's `{"inputs", "parameters"}`.
fn tgi_request(body: &[u8], stream: bool) -> Result<TgiRequest, String> {
    let request: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be a list")?;
    if request.get("tools").is_some_and(|t| !t.is_null()) {
        return Err("tools are not supported by TGI-format SageMaker endpoints".into());
    }
    messages::single_choice(&request, "TGI-format SageMaker")?;
    messages::text_response_only(&request, "TGI-format SageMaker")?;
    let mut parameters = Map::new();
    if let Some(max) = request
        .get("max_completion_tokens")
        .or(request.get("max_tokens"))
        .and_then(Value::as_u64)
    {
        parameters.insert("max_new_tokens".into(), max.into());
    }
    // TGI wants a temperature above 0 (0 means greedy: leave it out) and top_p below 1.
    if let Some(t) = request.get("temperature").and_then(Value::as_f64)
        && t > 0.0
    {
        parameters.insert("temperature".into(), t.into());
    }
    if let Some(p) = request.get("top_p").and_then(Value::as_f64)
        && p > 0.0
        && p < 1.0
    {
        parameters.insert("top_p".into(), p.into());
    }
    if let Some(seed) = request.get("seed").and_then(Value::as_u64) {
        parameters.insert("seed".into(), seed.into());
    }
    let stops = stop_sequences(body);
    if !stops.is_empty() {
        parameters.insert("stop".into(), json!(stops));
    }
    parameters.insert("details".into(), true.into());
    parameters.insert("return_full_text".into(), false.into());
    if !stream {
        // The prompt's tokens, so that its length is known for usage (not allowed in streams).
        parameters.insert("decoder_input_details".into(), true.into());
    }
    let mut tgi = json!({"inputs": tgi_prompt(messages)?, "parameters": parameters});
    if stream {
        tgi["stream"] = true.into();
    }
    Ok(TgiRequest {
        body: Bytes::from(tgi.to_string()),
        include_usage: messages::include_usage(&request),
    })
}

/// The OpenAI `chat.completion` for TGI's `[{"generated_text": …, "details": …}]`.
fn tgi_completion(answer: &[u8], model: &str, stops: &[String]) -> Option<Value> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let first = match &value {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let mut text = first["generated_text"].as_str()?;
    let details = &first["details"];
    // TGI keeps the stop sequence that ended the text; OpenAI does not.
    if details["finish_reason"] == "stop_sequence"
        && let Some(stripped) = stops.iter().find_map(|s| text.strip_suffix(s.as_str()))
    {
        text = stripped;
    }
    let mut body = completion::completion(
        completion_id(),
        unix_seconds(),
        model,
        json!({"role": "assistant", "content": text}),
        finish_reason(details),
    );
    if let Some(usage) = tgi_usage(details) {
        body["usage"] = usage;
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_parts_are_reframed_into_whole_events() {
        let mut reframer = SseReframer::default();
        assert_eq!(reframer.push(b"data: {\"a\""), "");
        assert_eq!(
            reframer.push(b":1}\n\ndata:{\"b\":2}\n\n{\"c\":3}\n"),
            "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: {\"c\":3}\n\n"
        );
        assert_eq!(reframer.end(), "data: [DONE]\n\n");
        let mut reframer = SseReframer::default();
        assert_eq!(reframer.push(b"data: [DONE]\n\n"), "data: [DONE]\n\n");
        assert_eq!(reframer.end(), "");
    }

    #[test]
    fn tgi_streams_become_openai_chunks() {
        let mut stream = TgiStream::new("ep", true);
        let out = stream
            .push(b"data:{\"token\":{\"id\":1,\"text\":\"Hi\",\"special\":false},\"generated_text\":null,\"details\":null}\n\ndata:{\"token\":{\"id\":2,\"text\":\"</s>\",\"special\":true},")
            .unwrap_or_default();
        assert!(out.contains("\"content\":\"Hi\"") && out.contains("\"role\":\"assistant\""));
        let out = stream
            .push(b"\"generated_text\":\"Hi\",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":2,\"input_length\":7}}\n\n")
            .unwrap_or_default();
        assert!(!out.contains("</s>"));
        assert!(out.contains("\"finish_reason\":\"stop\""));
        assert!(out.contains("\"prompt_tokens\":7"));
        assert_eq!(stream.end().unwrap_or_default(), "data: [DONE]\n\n");
        let mut failing = TgiStream::new("ep", false);
        assert!(
            failing
                .push(b"data:{\"error\":\"CUDA out of memory\"}\n\n")
                .is_err()
        );
    }

    #[test]
    fn tgi_requests_and_answers_translate() {
        let body = br#"{"model":"ep","max_tokens":20,"temperature":0,"top_p":1,"stop":"END",
            "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let request = tgi_request(body, false)
            .ok()
            .map(|r| r.body)
            .unwrap_or_default();
        let value: Value = serde_json::from_slice(&request).unwrap_or_default();
        assert_eq!(
            value["inputs"],
            "System: Be brief.\n\nUser: hi\n\nAssistant:"
        );
        assert_eq!(value["parameters"]["max_new_tokens"], 20);
        assert_eq!(value["parameters"]["stop"], json!(["END"]));
        assert!(value["parameters"].get("temperature").is_none());
        assert!(value["parameters"].get("top_p").is_none());
        let answer = br#"[{"generated_text":" Hello END","details":{"finish_reason":"stop_sequence","generated_tokens":3,"prefill":[{},{},{}]}}]"#;
        let completion = tgi_completion(answer, "ep", &["END".into()]).unwrap_or_default();
        assert_eq!(completion["choices"][0]["message"]["content"], " Hello ");
        assert_eq!(completion["usage"]["total_tokens"], 6);
    }

    #[test]
    fn errors_map_to_upstream_errors() {
        let what = "deployment d";
        assert!(matches!(
            service_error(Some("ThrottlingException"), None, None, what),
            UpstreamError::RateLimited { .. }
        ));
        assert!(matches!(
            service_error(Some("ValidationError"), Some("bad"), None, what),
            UpstreamError::Rejected { status: 400, message } if message == "bad"
        ));
        assert!(matches!(
            service_error(Some("AccessDeniedException"), None, None, what),
            UpstreamError::Failed(m) if m.contains(what)
        ));
        assert!(matches!(
            container_error(Some(400), Some(r#"{"error":"too long","code":400}"#), what),
            UpstreamError::Rejected { status: 400, message } if message == "too long"
        ));
        assert!(matches!(
            container_error(None, Some("Received client error (400) from primary with message \"x\". See https://us-east-1.console.aws.amazon.com/ in account 1 for more information."), what),
            UpstreamError::Rejected { message, .. } if !message.contains("account")
        ));
    }
}
