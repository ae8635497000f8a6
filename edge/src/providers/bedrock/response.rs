//! Bedrock Converse output → OpenAI chat completion, and ConverseStream events → OpenAI
//! `chat.completion.chunk` server-sent events.

use std::collections::HashMap;

use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConverseOutput as Output,
    ConverseStreamOutput, ReasoningContentBlock, ReasoningContentBlockDelta, StopReason,
    TokenUsage,
};
use serde_json::{Value, json};

use super::request::json as document_json;
use crate::clock::unix_seconds;
use crate::codec::usage::usage_json;
use crate::providers::completion::{self, ChunkWriter, completion_id};

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
    chunks: ChunkWriter,
    finished: bool,
    /// OpenAI's tool-call index of each Bedrock content block that is a tool use.
    tool_index: HashMap<i32, usize>,
}

impl StreamTranslator {
    pub fn new(model: &str, include_usage: bool) -> Self {
        let mut chunks = ChunkWriter::new(unix_seconds(), model, include_usage);
        chunks.id = completion_id();
        StreamTranslator {
            chunks,
            finished: false,
            tool_index: HashMap::new(),
        }
    }

    /// Appends the chunks for one event to `out`.
    pub fn event(&mut self, event: &ConverseStreamOutput, out: &mut Vec<u8>) {
        match event {
            ConverseStreamOutput::MessageStart(_) => self.chunks.start(out),
            ConverseStreamOutput::ContentBlockStart(start) => {
                if let Some(ContentBlockStart::ToolUse(tool)) = start.start() {
                    let index = self.tool_index.len();
                    self.tool_index.insert(start.content_block_index(), index);
                    let call = json!({"index": index, "id": tool.tool_use_id(), "type": "function",
                        "function": {"name": tool.name(), "arguments": ""}});
                    self.chunks.delta(out, json!({"tool_calls": [call]}), None);
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
                    self.chunks.delta(out, chunk, None);
                }
            }
            ConverseStreamOutput::MessageStop(stop) => {
                self.finished = true;
                let reason = finish_reason(stop.stop_reason());
                self.chunks.delta(out, json!({}), Some(reason));
            }
            ConverseStreamOutput::Metadata(metadata) => {
                if let Some(u) = metadata.usage() {
                    self.chunks.usage(out, || usage(u));
                }
            }
            _ => {}
        }
    }

    /// Appends what follows the last event: a finish if Bedrock sent none, and `[DONE]`.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if !self.finished {
            self.finished = true;
            self.chunks.delta(out, json!({}), Some("stop"));
        }
        ChunkWriter::done(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::completion::chunks_of;
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
        let mut out = Vec::new();
        for event in &events {
            t.event(event, &mut out);
        }
        let mut end = Vec::new();
        t.end(&mut end);
        assert_eq!(end, b"data: [DONE]\n\n", "the finish was already sent");
        let chunks = chunks_of(&out);
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
