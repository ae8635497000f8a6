//! Bedrock Converse output → OpenAI chat completion, and ConverseStream events → OpenAI
//! `chat.completion.chunk` server-sent events.

use std::collections::HashMap;

use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConverseOutput as Output,
    ConverseStreamOutput, ReasoningContentBlock, ReasoningContentBlockDelta, StopReason,
    TokenUsage,
};
use bytes::Bytes;
use serde_json::{Value, json};

use super::request::json as document_json;
use crate::clock::unix_seconds;
use crate::codec::usage::usage_json;
use crate::providers::completion::{self, completion_id};

/// OpenAI's `finish_reason` for a Bedrock stop reason.
pub fn finish_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::GuardrailIntervened | StopReason::ContentFiltered => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `usage` for Bedrock's token counts: cached and cache-written input tokens are
/// prompt tokens too.
pub fn usage(usage: &TokenUsage) -> Value {
    let count = |n: i32| u64::try_from(n).unwrap_or(0);
    let cache_read = count(usage.cache_read_input_tokens().unwrap_or(0));
    let cache_write = count(usage.cache_write_input_tokens().unwrap_or(0));
    usage_json(
        count(usage.input_tokens()),
        cache_read,
        cache_write,
        count(usage.output_tokens()),
    )
}

/// The OpenAI `chat.completion` for a Converse answer.
pub fn completion(output: &ConverseOutput, model: &str) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    if let Some(Output::Message(message)) = output.output() {
        for block in message.content() {
            match block {
                ContentBlock::Text(t) => text.push_str(t),
                ContentBlock::ToolUse(call) => tool_calls.push(json!({
                    "id": call.tool_use_id(),
                    "type": "function",
                    "function": {
                        "name": call.name(),
                        "arguments": document_json(call.input()).to_string(),
                    },
                })),
                ContentBlock::ReasoningContent(ReasoningContentBlock::ReasoningText(r)) => {
                    reasoning.push_str(r.text());
                }
                _ => {}
            }
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    let mut body = completion::completion(
        completion_id(),
        unix_seconds(),
        model,
        message,
        finish_reason(output.stop_reason()),
    );
    if let Some(u) = output.usage() {
        body["usage"] = usage(u);
    }
    body
}

/// Turns ConverseStream events into OpenAI chunks as they arrive.
pub struct StreamTranslator {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    role_sent: bool,
    finished: bool,
    /// OpenAI's tool-call index of each Bedrock content block that is a tool use.
    tool_index: HashMap<i32, usize>,
}

impl StreamTranslator {
    pub fn new(model: &str, include_usage: bool) -> Self {
        StreamTranslator {
            id: completion_id(),
            created: unix_seconds(),
            model: model.to_owned(),
            include_usage,
            role_sent: false,
            finished: false,
            tool_index: HashMap::new(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        completion::chunk(&self.id, self.created, &self.model, delta, finish)
    }

    /// The opening chunk, once, before anything else.
    fn role(&mut self, out: &mut Vec<Value>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    /// The chunks for one event.
    pub fn event(&mut self, event: &ConverseStreamOutput) -> Vec<Value> {
        let mut out = Vec::new();
        match event {
            ConverseStreamOutput::MessageStart(_) => self.role(&mut out),
            ConverseStreamOutput::ContentBlockStart(start) => {
                if let Some(ContentBlockStart::ToolUse(tool)) = start.start() {
                    self.role(&mut out);
                    let index = self.tool_index.len();
                    self.tool_index.insert(start.content_block_index(), index);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "id": tool.tool_use_id(), "type": "function",
                            "function": {"name": tool.name(), "arguments": ""}}]}),
                        None,
                    ));
                }
            }
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                let chunk = match delta.delta() {
                    Some(ContentBlockDelta::Text(text)) => Some(json!({"content": text})),
                    Some(ContentBlockDelta::ToolUse(tool)) => {
                        let index = self
                            .tool_index
                            .get(&delta.content_block_index())
                            .copied()
                            .unwrap_or(0);
                        Some(json!({"tool_calls": [{"index": index,
                            "function": {"arguments": tool.input()}}]}))
                    }
                    Some(ContentBlockDelta::ReasoningContent(
                        ReasoningContentBlockDelta::Text(text),
                    )) => Some(json!({"reasoning_content": text})),
                    _ => None,
                };
                if let Some(chunk) = chunk {
                    self.role(&mut out);
                    out.push(self.chunk(chunk, None));
                }
            }
            ConverseStreamOutput::MessageStop(stop) => {
                self.role(&mut out);
                self.finished = true;
                out.push(self.chunk(json!({}), Some(finish_reason(stop.stop_reason()))));
            }
            ConverseStreamOutput::Metadata(metadata) => {
                if let (true, Some(u)) = (self.include_usage, metadata.usage()) {
                    out.push(completion::usage_chunk(
                        &self.id,
                        self.created,
                        &self.model,
                        usage(u),
                    ));
                }
            }
            _ => {}
        }
        out
    }

    /// What follows the last event: a finish if Bedrock sent none, and `[DONE]`.
    pub fn end(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        if !self.finished {
            self.role(&mut out);
            self.finished = true;
            out.push(self.chunk(json!({}), Some("stop")));
        }
        out
    }
}

/// Server-sent events for `chunks`, followed by `[DONE]` when `done`.
pub fn sse(chunks: &[Value], done: bool) -> Bytes {
    let mut out = String::new();
    for chunk in chunks {
        out.push_str("data: ");
        out.push_str(&chunk.to_string());
        out.push_str("\n\n");
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::types::{
        ContentBlockDeltaEvent, ContentBlockStartEvent, ConverseStreamMetadataEvent,
        MessageStartEvent, MessageStopEvent, ToolUseBlockDelta, ToolUseBlockStart,
    };

    #[test]
    fn usage_counts_cache_tokens_as_prompt_tokens() {
        let u = TokenUsage::builder()
            .input_tokens(10)
            .output_tokens(5)
            .total_tokens(15)
            .cache_read_input_tokens(100)
            .cache_write_input_tokens(20)
            .build()
            .unwrap();
        assert_eq!(
            usage(&u),
            json!({"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}})
        );
    }

    #[test]
    fn stream_events_become_openai_chunks() {
        let mut t = StreamTranslator::new("m", true);
        let events = [
            ConverseStreamOutput::MessageStart(
                MessageStartEvent::builder()
                    .role(aws_sdk_bedrockruntime::types::ConversationRole::Assistant)
                    .build()
                    .unwrap(),
            ),
            ConverseStreamOutput::ContentBlockDelta(
                ContentBlockDeltaEvent::builder()
                    .content_block_index(0)
                    .delta(ContentBlockDelta::Text("Hi".into()))
                    .build()
                    .unwrap(),
            ),
            ConverseStreamOutput::ContentBlockStart(
                ContentBlockStartEvent::builder()
                    .content_block_index(1)
                    .start(ContentBlockStart::ToolUse(
                        ToolUseBlockStart::builder()
                            .tool_use_id("t1")
                            .name("get")
                            .build()
                            .unwrap(),
                    ))
                    .build()
                    .unwrap(),
            ),
            ConverseStreamOutput::ContentBlockDelta(
                ContentBlockDeltaEvent::builder()
                    .content_block_index(1)
                    .delta(ContentBlockDelta::ToolUse(
                        ToolUseBlockDelta::builder()
                            .input("{\"a\"")
                            .build()
                            .unwrap(),
                    ))
                    .build()
                    .unwrap(),
            ),
            ConverseStreamOutput::MessageStop(
                MessageStopEvent::builder()
                    .stop_reason(StopReason::ToolUse)
                    .build()
                    .unwrap(),
            ),
            ConverseStreamOutput::Metadata(
                ConverseStreamMetadataEvent::builder()
                    .usage(
                        TokenUsage::builder()
                            .input_tokens(3)
                            .output_tokens(4)
                            .total_tokens(7)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            ),
        ];
        let chunks: Vec<Value> = events.iter().flat_map(|e| t.event(e)).collect();
        assert!(t.end().is_empty());
        assert_eq!(chunks.len(), 6);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "get"
        );
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\""
        );
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[5]["usage"]["completion_tokens"], 4);
        assert_eq!(chunks[5]["choices"], json!([]));
    }
}
