//! Gemini responses, translated to OpenAI's format: a `GenerateContentResponse` to a
//! `chat.completion`, the SSE stream of them to `chat.completion.chunk` events, and embeddings
//! to an OpenAI embeddings list.

use serde_json::{Value, json};

use super::request::THOUGHT_SIGNATURE_MARK;
use crate::providers::completion::{self, ChunkWriter};
use crate::providers::http::{EventTranslator, StreamFailure};
use crate::providers::upstream_message;

/// OpenAI's `finish_reason` for a Gemini `finishReason` (tool calls aside).
fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
            | "LANGUAGE",
        ) => "content_filter",
        // STOP, FINISH_REASON_UNSPECIFIED, OTHER, MALFORMED_FUNCTION_CALL, …
        _ => "stop",
    }
}

/// OpenAI's `usage` for Gemini's `usageMetadata`: the prompt count includes the cached
/// tokens; thinking tokens are billed as output.
pub fn usage(metadata: &Value) -> Value {
    let count = |name: &str| metadata[name].as_u64().unwrap_or(0);
    let prompt = count("promptTokenCount") + count("toolUsePromptTokenCount");
    let thoughts = count("thoughtsTokenCount");
    let completion = count("candidatesTokenCount") + thoughts;
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": count("cachedContentTokenCount")},
    });
    if thoughts > 0 {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": thoughts});
    }
    usage
}

/// The text and function calls of a candidate's parts; thought summaries are left out.
/// Calls are numbered from `first_call` for their ids when Gemini gives none.
fn read_parts(parts: &[Value], first_call: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in parts {
        if part["thought"] == true {
            continue;
        }
        if let Some(t) = part["text"].as_str() {
            text.push_str(t);
        } else if let Some(call) = part.get("functionCall") {
            let mut id = match call["id"].as_str() {
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => format!("call_{}", first_call + calls.len()),
            };
            if let Some(signature) = part["thoughtSignature"].as_str().filter(|s| !s.is_empty()) {
                id.push_str(THOUGHT_SIGNATURE_MARK);
                id.push_str(signature);
            }
            let args = match &call["args"] {
                Value::Null => "{}".to_owned(),
                args => args.to_string(),
            };
            calls.push(json!({"id": id, "type": "function",
                "function": {"name": call["name"], "arguments": args}}));
        }
    }
    (text, calls)
}

fn response_id(response: &Value) -> String {
    match response["responseId"].as_str() {
        Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// A complete `GenerateContentResponse` as an OpenAI `chat.completion`.
pub fn completion(response: &Value, model: &str, created: u64) -> Option<Value> {
    if !response.is_object() {
        return None;
    }
    let candidate = &response["candidates"][0];
    let parts = candidate["content"]["parts"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let (text, calls) = read_parts(parts, 0);
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    let finish = if candidate.is_null() {
        // The prompt itself was blocked (`promptFeedback.blockReason`).
        "content_filter"
    } else if calls.is_empty() {
        finish_reason(candidate["finishReason"].as_str())
    } else {
        "tool_calls"
    };
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    let mut completion = completion::completion(
        response_id(response),
        created,
        response["modelVersion"].as_str().unwrap_or(model),
        message,
        finish,
    );
    completion["usage"] = usage(&response["usageMetadata"]);
    Some(completion)
}

/// Turns Gemini stream events (each a `GenerateContentResponse`) into OpenAI chunks.
pub struct StreamTranslator {
    chunks: ChunkWriter,
    usage: Value,
    /// Tool calls sent so far.
    calls: usize,
    finish: Option<String>,
}

/// The completion id of a stream that ended before Gemini named its response.
const UNNAMED_ID: &str = "chatcmpl-gemini";

impl StreamTranslator {
    pub fn new(include_usage: bool, created: u64, model: &str) -> Self {
        StreamTranslator {
            chunks: ChunkWriter::new(created, model, include_usage),
            usage: Value::Null,
            calls: 0,
            finish: None,
        }
    }

    /// A candidate finished: the stream is complete once the upstream ends.
    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Translates the `data` of one event, appending OpenAI events to `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        let response: Value =
            serde_json::from_slice(data).map_err(|_| StreamFailure::Unreadable)?;
        if let Some(error) = response.get("error") {
            let status = error["status"].as_str().unwrap_or("error");
            if status == "RESOURCE_EXHAUSTED" || error["code"] == 429 {
                return Err(StreamFailure::RateLimited);
            }
            let message = upstream_message(error["message"].as_str().unwrap_or_default());
            return Err(StreamFailure::Error(status.to_owned(), message));
        }
        if self.chunks.id.is_empty() {
            self.chunks.id = response_id(&response);
        }
        if let Some(model) = response["modelVersion"].as_str() {
            self.chunks.model = model.to_owned();
        }
        if response["usageMetadata"].is_object() {
            self.usage = response["usageMetadata"].clone();
        }
        self.chunks.start(out);
        let candidate = &response["candidates"][0];
        let parts = candidate["content"]["parts"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let (text, calls) = read_parts(parts, self.calls);
        if !text.is_empty() {
            self.chunks.delta(out, json!({"content": text}), None);
        }
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(i, mut call)| {
                    call["index"] = (self.calls + i).into();
                    call
                })
                .collect();
            self.calls += calls.len();
            self.chunks.delta(out, json!({"tool_calls": calls}), None);
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            self.finish = Some(reason.to_owned());
        } else if candidate.is_null() && response["promptFeedback"]["blockReason"].is_string() {
            self.finish = Some("SAFETY".to_owned());
        }
        Ok(())
    }

    /// The last chunks once the upstream ended: the finish, the usage if asked, `[DONE]`.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.chunks.id.is_empty() {
            self.chunks.id = UNNAMED_ID.to_owned();
        }
        let finish = if self.calls > 0 {
            "tool_calls"
        } else {
            finish_reason(self.finish.as_deref())
        };
        self.chunks.delta(out, json!({}), Some(finish));
        self.chunks.usage(out, || usage(&self.usage));
        ChunkWriter::done(out);
    }
}

/// Gemini embeddings (`embedding` of `embedContent`, or `embeddings` of `batchEmbedContents`)
/// as an OpenAI embeddings list; `base64` encodes each vector as little-endian f32s.
pub fn embeddings(response: &Value, model: &str, base64: bool) -> Option<Value> {
    let vectors: Vec<&Value> = match response.get("embeddings") {
        Some(Value::Array(list)) => list.iter().map(|e| &e["values"]).collect(),
        _ => vec![&response["embedding"]["values"]],
    };
    let mut data = Vec::with_capacity(vectors.len());
    for (index, values) in vectors.into_iter().enumerate() {
        let values = values.as_array()?;
        let embedding = if base64 {
            let mut bytes = Vec::with_capacity(values.len() * 4);
            for v in values {
                bytes.extend_from_slice(&(v.as_f64()? as f32).to_le_bytes());
            }
            Value::String(encode_base64(&bytes))
        } else {
            Value::Array(values.clone())
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    // Gemini's embedding responses carry no token counts.
    Some(json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0}}))
}

/// Standard base64, with padding.
fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl EventTranslator for StreamTranslator {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        StreamTranslator::event(self, data, out)
    }

    /// Gemini's stream has no end event: it ends with the connection.
    fn stopped(&self) -> bool {
        false
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        if !self.finished() {
            return Err("a finish reason");
        }
        StreamTranslator::end(self, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::completion::chunks_of;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(encode_base64(b""), "");
        assert_eq!(encode_base64(b"f"), "Zg==");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(encode_base64(b"foo"), "Zm9v");
        assert_eq!(encode_base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn a_response_with_function_calls_becomes_tool_calls() {
        let response = json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking", "thought": true},
                {"text": "Let me see."},
                {"functionCall": {"name": "f", "args": {"a": 1}}},
                {"functionCall": {"name": "g", "args": {}}, "thoughtSignature": "c2ln"}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4,
                "cachedContentTokenCount": 6, "thoughtsTokenCount": 2},
            "modelVersion": "gemini-x", "responseId": "r1"});
        let Some(completion) = completion(&response, "m", 9) else {
            panic!("not translated");
        };
        assert_eq!(completion["id"], "chatcmpl-r1");
        assert_eq!(completion["model"], "gemini-x");
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me see.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([
                {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_1__thought__c2ln", "type": "function", "function": {"name": "g", "arguments": "{}"}}])
        );
        assert_eq!(
            completion["usage"],
            json!({"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16,
                "prompt_tokens_details": {"cached_tokens": 6},
                "completion_tokens_details": {"reasoning_tokens": 2}})
        );
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        assert_eq!(
            super::completion(&blocked, "m", 9).map(|c| c["choices"][0]["finish_reason"].clone()),
            Some(json!("content_filter"))
        );
    }

    #[test]
    fn a_stream_becomes_chunks_ending_with_finish_usage_and_done() {
        let mut framer = crate::codec::sse::DataFramer::default();
        let mut translator = StreamTranslator::new(true, 7, "m");
        let mut out = Vec::new();
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3},\"modelVersion\":\"g\",\"responseId\":\"r\"}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}],\"role\":\"model\"},\"finishReason\":\"MAX_TOKENS\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2},\"modelVersion\":\"g\",\"responseId\":\"r\"}\r\n\r\n",
        );
        for byte in stream.as_bytes() {
            for data in framer.push(&[*byte]).unwrap_or_default() {
                assert!(translator.event(&data, &mut out).is_ok());
            }
        }
        assert!(translator.finished());
        translator.end(&mut out);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let chunks = chunks_of(&out);
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "lo");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks[4]["usage"]["completion_tokens"], 2);
        assert!(
            chunks
                .iter()
                .all(|c| c["id"] == "chatcmpl-r" && c["model"] == "g")
        );
    }
}
