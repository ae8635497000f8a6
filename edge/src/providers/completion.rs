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

/// Appends `chunk` as one server-sent event.
pub fn push_event(out: &mut Vec<u8>, chunk: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(chunk.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}
