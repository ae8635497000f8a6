//! Bedrock `Converse` / `ConverseStream` ⇄ OpenAI chat: the request a boto3 client sends becomes
//! a chat request for the pipeline, and the pipeline's answer (from whichever provider served it)
//! becomes Converse's output or event stream.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::eventstream;
use crate::surfaces::EventWriter;
use crate::surfaces::chat::{self, AssistantBlock};
use crate::surfaces::reply::{Delta, Finish, Reply, Usage};

/// The chat request for a Converse request body, for `model`.
pub fn chat_request(body: &[u8], model: &str, stream: bool) -> Result<Value, String> {
    let request = chat::request_fields(body)?;
    let mut messages = Vec::new();
    if let Some(system) = request.get("system") {
        let blocks = system
            .as_array()
            .ok_or("`system` must be a list of blocks")?;
        let parts = system_parts(blocks)?;
        if !parts.is_empty() {
            messages.push(json!({"role": "system", "content": parts}));
        }
    }
    chat::conversation(&request, &mut messages, translate_message)?;
    let mut chat = json!({"model": model, "messages": messages});
    if stream {
        chat["stream"] = json!(true);
        chat["stream_options"] = json!({"include_usage": true});
    }
    if let Some(config) = request.get("inferenceConfig") {
        inference(config, &mut chat)?;
    }
    if let Some(config) = request.get("toolConfig") {
        tools(config, &mut chat)?;
    }
    // Bedrock's own options are kept under their Converse names: a Bedrock deployment applies
    // them; another provider refuses what it does not know, rather than it being dropped.
    for field in ["guardrailConfig", "additionalModelRequestFields"] {
        if let Some(value) = request.get(field) {
            chat[field] = value.clone();
        }
    }
    Ok(chat)
}

fn system_parts(blocks: &[Value]) -> Result<Vec<Value>, String> {
    let mut parts: Vec<Value> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            parts.push(json!({"type": "text", "text": text}));
        } else if block.get("cachePoint").is_some() {
            mark_cache_point(&mut parts);
        } else {
            return Err(format!(
                "system[{i}]: only text and cachePoint blocks are supported"
            ));
        }
    }
    Ok(parts)
}

/// A `cachePoint` block caches everything before it: the previous part carries the mark.
fn mark_cache_point(parts: &mut [Value]) {
    if let Some(last) = parts.last_mut() {
        last["cache_control"] = json!({"type": "ephemeral"});
    }
}

/// One Converse message: user text and images become a user message, tool results become tool
/// messages, assistant text and tool uses become one assistant message.
fn translate_message(message: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), String> {
    let role = message["role"].as_str().unwrap_or_default();
    let blocks = message["content"]
        .as_array()
        .ok_or_else(|| format!("messages[{i}].content must be a list of blocks"))?;
    match role {
        "user" => {
            let mut parts = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                let at = format!("messages[{i}].content[{j}]");
                if let Some(result) = block.get("toolResult") {
                    out.push(tool_result(result, &at)?);
                } else if block.get("cachePoint").is_some() {
                    mark_cache_point(&mut parts);
                } else {
                    parts.push(user_part(block, &at)?);
                }
            }
            out.extend(chat::user(parts));
        }
        "assistant" => out.push(chat::assistant_of(
            blocks,
            i,
            "text and toolUse blocks",
            |block| {
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    Some(AssistantBlock::Text(text))
                } else if let Some(call) = block.get("toolUse") {
                    let input = call.get("input");
                    Some(AssistantBlock::ToolCall(
                        &call["toolUseId"],
                        &call["name"],
                        input,
                    ))
                } else if block.get("reasoningContent").is_some()
                    || block.get("cachePoint").is_some()
                {
                    // Earlier reasoning is the model's own; it is not sent back.
                    Some(AssistantBlock::Skipped)
                } else {
                    None
                }
            },
        )?),
        _ => return Err(chat::unknown_role(i, role)),
    }
    Ok(())
}

fn user_part(block: &Value, at: &str) -> Result<Value, String> {
    if let Some(text) = block.get("text").and_then(Value::as_str) {
        return Ok(json!({"type": "text", "text": text}));
    }
    if let Some(image) = block.get("image") {
        let format = image["format"].as_str().unwrap_or_default();
        if !["png", "jpeg", "gif", "webp"].contains(&format) {
            return Err(format!("{at}.image.format must be png, jpeg, gif or webp"));
        }
        let data = image["source"]["bytes"]
            .as_str()
            .filter(|b| base64::engine::general_purpose::STANDARD.decode(b).is_ok())
            .ok_or_else(|| format!("{at}.image.source.bytes must be base64 image bytes"))?;
        return Ok(json!({
            "type": "image_url",
            "image_url": {"url": format!("data:image/{format};base64,{data}")},
        }));
    }
    Err(format!(
        "{at}: only text, image, toolResult and cachePoint blocks are supported in user messages"
    ))
}

fn tool_result(result: &Value, at: &str) -> Result<Value, String> {
    let id = result["toolUseId"]
        .as_str()
        .ok_or_else(|| format!("{at}.toolResult.toolUseId is required"))?;
    let mut text = String::new();
    for block in result["content"].as_array().into_iter().flatten() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(json) = block.get("json") {
            text.push_str(&json.to_string());
        } else {
            return Err(format!(
                "{at}.toolResult: only text and json results are supported"
            ));
        }
    }
    let failed = result["status"].as_str() == Some("error");
    Ok(chat::tool_result(id, text, failed))
}

fn inference(config: &Value, chat: &mut Value) -> Result<(), String> {
    let fields = [
        ("maxTokens", "max_tokens"),
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("stopSequences", "stop"),
    ];
    let config = config
        .as_object()
        .ok_or("`inferenceConfig` must be an object")?;
    for (name, value) in config {
        let (_, openai) = fields
            .iter()
            .find(|(converse, _)| converse == name)
            .ok_or_else(|| format!("inferenceConfig.{name} is not a Converse inference field"))?;
        chat[*openai] = value.clone();
    }
    Ok(())
}

fn tools(config: &Value, chat: &mut Value) -> Result<(), String> {
    let mut tools = Vec::new();
    for (i, tool) in config["tools"].as_array().into_iter().flatten().enumerate() {
        if tool.get("cachePoint").is_some() {
            continue;
        }
        let spec = tool
            .get("toolSpec")
            .ok_or_else(|| format!("toolConfig.tools[{i}] must be a toolSpec"))?;
        let name = spec["name"]
            .as_str()
            .ok_or_else(|| format!("toolConfig.tools[{i}].toolSpec.name is required"))?;
        let schema = spec["inputSchema"].get("json");
        tools.push(chat::function_tool(name, spec.get("description"), schema));
    }
    if !tools.is_empty() {
        chat["tools"] = Value::Array(tools);
    }
    if let Some(choice) = config.get("toolChoice") {
        let kind = if choice.get("auto").is_some() {
            "auto"
        } else if choice.get("any").is_some() {
            "required"
        } else {
            "tool"
        };
        chat["tool_choice"] = chat::tool_choice(kind, choice["tool"].get("name"))
            .ok_or("toolConfig.toolChoice must be auto, any or tool")?;
    }
    Ok(())
}

/// Converse's `stopReason` for a finish.
fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "content_filtered",
    }
}

fn usage(usage: &Usage) -> Value {
    let mut out = json!({
        "inputTokens": usage.uncached_input,
        "outputTokens": usage.output,
        "totalTokens": usage.input() + usage.output,
    });
    if usage.cache_read > 0 {
        out["cacheReadInputTokens"] = usage.cache_read.into();
    }
    if usage.cache_write > 0 {
        out["cacheWriteInputTokens"] = usage.cache_write.into();
    }
    out
}

/// Converse's output for a complete answer.
pub fn answer(reply: &Reply, latency_ms: u64) -> Value {
    let content = reply.output(
        |text| json!({"text": text}),
        |call| json!({"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.input()}}),
    );
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(reply.finish),
        "usage": usage(&reply.usage),
        "metrics": {"latencyMs": latency_ms},
    })
}

/// What the block being streamed is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    /// A tool call, by OpenAI's call index.
    Tool(u64),
}

/// Turns the deltas of a chat stream into ConverseStream events.
pub struct StreamWriter {
    started: std::time::Instant,
    /// The block being streamed and its `contentBlockIndex`.
    open: Option<(Open, u64)>,
    next_index: u64,
    finished: bool,
    sent_metadata: bool,
    /// An exception was sent: nothing follows it.
    failed: bool,
}

impl StreamWriter {
    pub fn new(started: std::time::Instant) -> StreamWriter {
        StreamWriter {
            started,
            open: None,
            next_index: 0,
            finished: false,
            sent_metadata: false,
            failed: false,
        }
    }

    fn metadata(&self, counts: &Usage) -> Bytes {
        let latency = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        eventstream::event(
            "metadata",
            &json!({"usage": usage(counts), "metrics": {"latencyMs": latency}}),
        )
    }

    /// The index of the block `kind`, opening it (and closing another) when it is not open.
    fn block(&mut self, kind: Open, start: Option<Value>, out: &mut Vec<Bytes>) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        if let Some(start) = start {
            out.push(eventstream::event(
                "contentBlockStart",
                &json!({"contentBlockIndex": index, "start": start}),
            ));
        }
        index
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((_, index)) = self.open.take() {
            out.push(eventstream::event(
                "contentBlockStop",
                &json!({"contentBlockIndex": index}),
            ));
        }
    }
}

impl EventWriter for StreamWriter {
    type Event = Bytes;

    /// The events for one delta.
    fn write(&mut self, delta: Delta, out: &mut Vec<Self::Event>) {
        match delta {
            Delta::Start { .. } => {
                out.push(eventstream::event(
                    "messageStart",
                    &json!({"role": "assistant"}),
                ));
            }
            Delta::Text(text) => {
                let index = self.block(Open::Text, None, out);
                out.push(eventstream::event(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": index, "delta": {"text": text}}),
                ));
            }
            Delta::ToolStart { index, id, name } => {
                let start = json!({"toolUse": {"toolUseId": id, "name": name}});
                self.close(out);
                self.block(Open::Tool(index), Some(start), out);
            }
            Delta::ToolArguments { index, fragment } => {
                let block = self.block(Open::Tool(index), None, out);
                out.push(eventstream::event(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": block, "delta": {"toolUse": {"input": fragment}}}),
                ));
            }
            Delta::Finish(finish) => {
                self.close(out);
                self.finished = true;
                out.push(eventstream::event(
                    "messageStop",
                    &json!({"stopReason": stop_reason(finish)}),
                ));
            }
            Delta::Usage(counts) => {
                self.sent_metadata = true;
                out.push(self.metadata(&counts));
            }
            Delta::Error { message, code } => {
                let kind = match code.as_str() {
                    "rate_limit_exceeded" => "throttlingException",
                    "upstream_timeout" => "modelTimeoutException",
                    _ => "modelStreamErrorException",
                };
                self.failed = true;
                out.push(eventstream::exception(kind, &message));
            }
        }
    }

    /// What ends the stream: a stream cut before its end says so, as Bedrock would.
    fn finish(&mut self, out: &mut Vec<Self::Event>) {
        if self.failed {
            return;
        }
        if !self.finished {
            out.push(eventstream::exception(
                "modelStreamErrorException",
                "the model's stream ended before it finished",
            ));
        } else if !self.sent_metadata {
            out.push(self.metadata(&Usage::default()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converse_request_with_tools_and_a_tool_result_becomes_a_chat_request() {
        let body = json!({
            "system": [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}],
            "messages": [
                {"role": "user", "content": [{"text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"sky": "clear"}}]}}]},
            ],
            "inferenceConfig": {"maxTokens": 50, "stopSequences": ["END"]},
            "toolConfig": {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"any": {}}},
        });
        let chat =
            chat_request(body.to_string().as_bytes(), "m", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            chat["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert_eq!(
            chat["messages"][2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "t1", "content": r#"{"sky":"clear"}"#})
        );
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_failed_stream_ends_with_one_exception_and_a_cut_one_says_so() {
        let started = std::time::Instant::now();
        let mut failed = StreamWriter::new(started);
        let mut out = Vec::new();
        failed.write(Delta::Text("Hi".into()), &mut out);
        failed.write(
            Delta::Error {
                message: "boom".into(),
                code: "upstream_error".into(),
            },
            &mut out,
        );
        let before = out.len();
        failed.finish(&mut out);
        assert_eq!(out.len(), before, "something followed the exception");

        let mut cut = StreamWriter::new(started);
        let mut out = Vec::new();
        cut.write(Delta::Text("Hi".into()), &mut out);
        cut.finish(&mut out);
        let last = out.last().map(|b| String::from_utf8_lossy(b).into_owned());
        assert!(last.is_some_and(|l| l.contains("modelStreamErrorException")));
    }

    #[test]
    fn unknown_blocks_and_fields_are_refused_with_where_they_are() {
        let cases = [
            (json!({"messages": []}), "non-empty"),
            (
                json!({"messages": [{"role": "user", "content": [{"video": {}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "system", "content": []}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "x"}]}], "inferenceConfig": {"topK": 3}}),
                "inferenceConfig.topK",
            ),
        ];
        for (body, expected) in cases {
            let error = chat_request(body.to_string().as_bytes(), "m", false).err();
            assert!(
                error.as_deref().is_some_and(|e| e.contains(expected)),
                "{body}: {error:?}"
            );
        }
    }
}
