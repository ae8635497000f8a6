//! The OpenAI `chat.completion` and `chat.completion.chunk` objects that the providers
//! translating another wire format answer with, built in one place so that all keep OpenAI's
//! shape alike.

use serde::Serialize;
use serde_json::{Value, json};

/// A fresh OpenAI-style completion id, for upstreams that give none.
pub fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::now_v7().simple())
}

/// A `chat.completion` with one choice holding `message` (its usage is the caller's to add).
pub fn completion(
    id: impl Serialize,
    created: u64,
    model: impl Serialize,
    message: Value,
    finish_reason: &str,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
    })
}

/// A `chat.completion.chunk` of one choice's `delta`.
pub fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

/// The closing `chat.completion.chunk` that carries only the usage.
pub fn usage_chunk(id: &str, created: u64, model: &str, usage: Value) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [], "usage": usage,
    })
}

/// One completion's `chat.completion.chunk` events as a stream translator writes them: its id,
/// creation time and model in every chunk, the assistant's role once before anything else, the
/// usage only when the client asked for it.
pub struct ChunkWriter {
    /// The completion's id (translators set it once the upstream names it).
    pub id: String,
    pub created: u64,
    /// The model the upstream says answered (translators update it as it says so).
    pub model: String,
    include_usage: bool,
    started: bool,
}

impl ChunkWriter {
    /// A stream of `model`'s completion, created at `created` (Unix seconds), carrying the
    /// usage when `include_usage`.
    pub fn new(created: u64, model: &str, include_usage: bool) -> Self {
        ChunkWriter {
            id: String::new(),
            created,
            model: model.to_owned(),
            include_usage,
            started: false,
        }
    }

    /// The opening chunk, with the role, once.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let opening = json!({"role": "assistant", "content": ""});
            push_event(
                out,
                &chunk(&self.id, self.created, &self.model, opening, None),
            );
        }
    }

    /// A chunk of `delta` (and the finish reason, when it is the last), after the opening one.
    pub fn delta(&mut self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        self.start(out);
        push_event(
            out,
            &chunk(&self.id, self.created, &self.model, delta, finish),
        );
    }

    /// The usage chunk, when the client asked for the usage.
    pub fn usage(&self, out: &mut Vec<u8>, usage: impl FnOnce() -> Value) {
        if self.include_usage {
            push_event(
                out,
                &usage_chunk(&self.id, self.created, &self.model, usage()),
            );
        }
    }

    /// The end of the stream: `[DONE]`.
    pub fn done(out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// Appends `chunk` as one server-sent event.
pub fn push_event(out: &mut Vec<u8>, chunk: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(chunk.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// The JSON chunks among server-sent events (`[DONE]` is not one), for the translators' tests.
#[cfg(test)]
pub(crate) fn chunks_of(events: &[u8]) -> Vec<Value> {
    std::str::from_utf8(events)
        .unwrap_or_default()
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}
