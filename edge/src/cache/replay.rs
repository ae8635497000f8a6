//! A cached chat answer told again as a stream: what OpenAI would have sent for it — per choice
//! a role chunk, its content, its tool calls and its finish reason; the usage chunk when the
//! client asked for it (every other chunk then carries `"usage": null`); then `[DONE]`.

use bytes::Bytes;
use serde_json::{Value, json};

/// The SSE body replaying `answer` (an OpenAI chat completion); `None` if it is not one.
pub fn replay(answer: &[u8], include_usage: bool) -> Option<Bytes> {
    let answer: Value = serde_json::from_slice(answer).ok()?;
    let choices = answer.get("choices")?.as_array()?;
    let head = |choices: Value| {
        let mut chunk = json!({
            "id": answer.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion.chunk",
            "created": answer.get("created").cloned().unwrap_or(Value::Null),
            "model": answer.get("model").cloned().unwrap_or(Value::Null),
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut chunks = Vec::new();
    for (position, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(position));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        let delta = |delta: Value, finish: Value| {
            head(json!([{"index": index, "delta": delta, "finish_reason": finish}]))
        };
        let role = message.get("role").cloned().unwrap_or(json!("assistant"));
        chunks.push(delta(json!({"role": role, "content": ""}), Value::Null));
        if let Some(content) = message.get("content").filter(|c| !c.is_null()) {
            chunks.push(delta(json!({"content": content}), Value::Null));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    call["index"] = json!(i);
                    call
                })
                .collect();
            chunks.push(delta(json!({"tool_calls": calls}), Value::Null));
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        chunks.push(delta(json!({}), finish));
    }
    if include_usage {
        let mut last = head(json!([]));
        last["usage"] = answer.get("usage").cloned().unwrap_or(Value::Null);
        chunks.push(last);
    }
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(b"data: ");
        out.extend(serde_json::to_vec(&chunk).ok()?);
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] = br#"{"id":"c-1","object":"chat.completion","created":7,"model":"m",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},
        "finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

    fn events(body: &Bytes) -> Vec<String> {
        String::from_utf8_lossy(body)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_start_matches("data: ").to_owned())
            .collect()
    }

    #[test]
    fn a_cached_answer_replays_as_chunks_then_done() {
        let replayed = events(&replay(ANSWER, false).unwrap());
        assert_eq!(replayed.len(), 4);
        let content: Value = serde_json::from_str(&replayed[1]).unwrap();
        assert_eq!(content["choices"][0]["delta"]["content"], "Hello");
        assert_eq!(content["object"], "chat.completion.chunk");
        assert!(content.get("usage").is_none());
        let finish: Value = serde_json::from_str(&replayed[2]).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(replayed[3], "[DONE]");
    }

    #[test]
    fn usage_comes_last_when_asked_for() {
        let replayed = events(&replay(ANSWER, true).unwrap());
        let usage: Value = serde_json::from_str(&replayed[replayed.len() - 2]).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 4);
        assert_eq!(usage["choices"], json!([]));
        let first: Value = serde_json::from_str(&replayed[0]).unwrap();
        assert_eq!(first["usage"], Value::Null);
    }
}
