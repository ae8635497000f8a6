//! Anthropic Messages responses, translated to OpenAI's format: a complete `message` to a
//! `chat.completion`, and the Messages event stream to `chat.completion.chunk` events.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::codec::usage::usage_json;
use crate::providers::completion::{self, ChunkWriter};
use crate::providers::http::{EventTranslator, StreamFailure};
use crate::providers::upstream_message;

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// Token counts as Anthropic reports them.
#[derive(Clone, Copy, Default)]
struct Usage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl Usage {
    /// Reads the counts `usage` carries, keeping the others.
    fn update(&mut self, usage: &Value) {
        let read = |name: &str, into: &mut u64| {
            if let Some(n) = usage[name].as_u64() {
                *into = n;
            }
        };
        read("input_tokens", &mut self.input);
        read("output_tokens", &mut self.output);
        read("cache_read_input_tokens", &mut self.cache_read);
        read("cache_creation_input_tokens", &mut self.cache_creation);
    }

    /// OpenAI's `usage`: prompt tokens include those read from and written to the cache.
    fn openai(&self) -> Value {
        usage_json(
            self.input,
            self.cache_read,
            self.cache_creation,
            self.output,
        )
    }
}

/// A complete Anthropic `message` as an OpenAI `chat.completion`.
pub fn completion(message: &Value, created: u64) -> Option<Value> {
    if message["type"] != "message" {
        return None;
    }
    let blocks = message["content"].as_array()?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()},
            })),
            // thinking, redacted_thinking, server tool blocks: not part of OpenAI's answer.
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": text, "refusal": null});
    if !tool_calls.is_empty() {
        if text.is_empty() {
            reply["content"] = Value::Null;
        }
        reply["tool_calls"] = Value::Array(tool_calls);
    }
    let mut usage = Usage::default();
    usage.update(&message["usage"]);
    let mut completion = completion::completion(
        &message["id"],
        created,
        &message["model"],
        reply,
        finish_reason(message["stop_reason"].as_str()),
    );
    completion["usage"] = usage.openai();
    Some(completion)
}

/// Turns Anthropic stream events into OpenAI chunks, one event at a time.
pub struct StreamTranslator {
    chunks: ChunkWriter,
    usage: Usage,
    /// Anthropic content block index → OpenAI tool call index.
    tools: HashMap<u64, usize>,
    finish_sent: bool,
    stopped: bool,
}

impl StreamTranslator {
    pub fn new(include_usage: bool, created: u64, model: &str) -> Self {
        StreamTranslator {
            chunks: ChunkWriter::new(created, model, include_usage),
            usage: Usage::default(),
            tools: HashMap::new(),
            finish_sent: false,
            stopped: false,
        }
    }

    /// Translates the `data` of one event, appending OpenAI events to `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        let event: Value = serde_json::from_slice(data).map_err(|_| StreamFailure::Unreadable)?;
        match event["type"].as_str() {
            Some("message_start") => {
                let message = &event["message"];
                if let Some(id) = message["id"].as_str() {
                    self.chunks.id = id.to_owned();
                }
                if let Some(model) = message["model"].as_str() {
                    self.chunks.model = model.to_owned();
                }
                self.usage.update(&message["usage"]);
                self.chunks.start(out);
            }
            Some("content_block_start") => {
                self.chunks.start(out);
                self.block_start(&event["content_block"], event["index"].as_u64(), out);
            }
            Some("content_block_delta") => {
                self.chunks.start(out);
                self.block_delta(&event["delta"], event["index"].as_u64(), out);
            }
            Some("message_delta") => {
                self.chunks.start(out);
                self.usage.update(&event["usage"]);
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.finish(out, Some(reason));
                }
            }
            Some("message_stop") => {
                self.chunks.start(out);
                self.finish(out, None);
                self.chunks.usage(out, || self.usage.openai());
                ChunkWriter::done(out);
                self.stopped = true;
            }
            Some("error") => {
                let error = &event["error"];
                let kind = error["type"].as_str().unwrap_or("error");
                if kind == "overloaded_error" || kind == "rate_limit_error" {
                    return Err(StreamFailure::RateLimited);
                }
                let message = upstream_message(error["message"].as_str().unwrap_or_default());
                return Err(StreamFailure::Error(kind.to_owned(), message));
            }
            // ping, content_block_stop, and whatever Anthropic adds later
            _ => {}
        }
        Ok(())
    }

    /// A content block starts (`block_index` is Anthropic's): text, or a tool call's id and name.
    fn block_start(&mut self, block: &Value, block_index: Option<u64>, out: &mut Vec<u8>) {
        match block["type"].as_str() {
            Some("text") => self.text(&block["text"], out),
            Some("tool_use") => {
                let index = self.tools.len();
                if let Some(block_index) = block_index {
                    self.tools.insert(block_index, index);
                }
                let call = json!({"index": index, "id": block["id"], "type": "function",
                    "function": {"name": block["name"], "arguments": ""}});
                self.chunks.delta(out, json!({"tool_calls": [call]}), None);
            }
            _ => {}
        }
    }

    /// More of the content block `block_index`: its text, or a piece of a tool call's arguments.
    fn block_delta(&mut self, delta: &Value, block_index: Option<u64>, out: &mut Vec<u8>) {
        match delta["type"].as_str() {
            Some("text_delta") => self.text(&delta["text"], out),
            Some("input_json_delta") => {
                let tool = block_index.and_then(|i| self.tools.get(&i).copied());
                let part = delta["partial_json"].as_str().unwrap_or_default();
                if let Some(index) = tool
                    && !part.is_empty()
                {
                    let call = json!({"index": index, "function": {"arguments": part}});
                    self.chunks.delta(out, json!({"tool_calls": [call]}), None);
                }
            }
            // thinking_delta, signature_delta, citations_delta
            _ => {}
        }
    }

    /// A chunk with a piece of the answer's text, unless it is empty.
    fn text(&mut self, text: &Value, out: &mut Vec<u8>) {
        if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
            self.chunks.delta(out, json!({"content": text}), None);
        }
    }

    /// The chunk with the finish reason, once.
    fn finish(&mut self, out: &mut Vec<u8>, stop_reason: Option<&str>) {
        if !self.finish_sent {
            self.finish_sent = true;
            let reason = finish_reason(stop_reason);
            self.chunks.delta(out, json!({}), Some(reason));
        }
    }
}

impl EventTranslator for StreamTranslator {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        StreamTranslator::event(self, data, out)
    }

    /// `message_stop` was seen: the stream is complete.
    fn stopped(&self) -> bool {
        self.stopped
    }

    /// Anthropic ends every stream with `message_stop`, whose chunks are already sent.
    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), &'static str> {
        if self.stopped {
            Ok(())
        } else {
            Err("message_stop")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::completion::chunks_of;

    fn events(stream: &str) -> (Vec<Value>, bool) {
        let mut framer = crate::codec::sse::DataFramer::default();
        let mut translator = StreamTranslator::new(true, 7, "claude");
        let mut out = Vec::new();
        // Byte by byte: events split anywhere are reassembled.
        for byte in stream.as_bytes() {
            for data in framer.push(&[*byte]).unwrap_or_default() {
                assert!(translator.event(&data, &mut out).is_ok());
            }
        }
        (chunks_of(&out), out.ends_with(b"data: [DONE]\n\n"))
    }

    #[test]
    fn a_tool_use_stream_becomes_tool_call_deltas() {
        let stream = concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\r\n\r\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check.\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (chunks, done) = events(stream);
        assert!(done);
        let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(*deltas[0], json!({"role": "assistant", "content": ""}));
        assert_eq!(deltas[1]["content"], "Let me check.");
        assert_eq!(
            deltas[2]["tool_calls"][0],
            json!({"index": 0, "id": "toolu_1", "type": "function",
                "function": {"name": "weather", "arguments": ""}})
        );
        let arguments: String = deltas[3..5]
            .iter()
            .map(|d| {
                d["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap_or("?")
            })
            .collect();
        assert_eq!(arguments, r#"{"city":"Paris"}"#);
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["choices"], json!([]));
        assert_eq!(
            chunks[6]["usage"],
            json!({"prompt_tokens": 14, "completion_tokens": 30, "total_tokens": 44,
                "prompt_tokens_details": {"cached_tokens": 4}})
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["id"] == "msg_1" && c["model"] == "claude-x")
        );
    }

    #[test]
    fn a_complete_message_becomes_a_chat_completion() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-x", "stop_reason": "max_tokens", "stop_sequence": null,
            "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            "usage": {"input_tokens": 5, "output_tokens": 2,
                "cache_creation_input_tokens": 3, "cache_read_input_tokens": 1}});
        let Some(completion) = completion(&message, 9) else {
            panic!("not translated");
        };
        let choice = &completion["choices"][0];
        assert_eq!(choice["message"]["content"], "Hi there");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"],
            json!({"name": "f", "arguments": "{\"a\":1}"})
        );
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(completion["usage"]["prompt_tokens"], 9);
        assert_eq!(
            completion["usage"]["prompt_tokens_details"]["cached_tokens"],
            1
        );
        assert_eq!(
            completion["usage"]["prompt_tokens_details"]["cache_write_tokens"],
            3
        );
    }
}
