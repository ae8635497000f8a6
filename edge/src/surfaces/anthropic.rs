//! Anthropic Messages ⇄ OpenAI chat: `POST /v1/messages` (and the Anthropic bodies of Bedrock's
//! `InvokeModel`) become chat requests for the pipeline, and the pipeline's answer, whichever
//! provider served it, becomes a Messages `message` or its stream of events.

use serde_json::{Map, Value, json};

use super::EventWriter;
use super::chat::{self, AssistantBlock};
use super::reply::{Delta, Finish, Reply, Usage};

/// Fields of a Messages request that have no counterpart and are safe to leave out.
const IGNORED: &[&str] = &[
    "anthropic_version",
    "anthropic_beta",
    "service_tier",
    "container",
];

/// The chat request for a Messages request body. `model` is the model to call when the body
/// names none (Bedrock's `InvokeModel` names it in the path); the answer streams when `stream`
/// or the body's own `stream` says so.
pub fn chat_request(body: &[u8], model: Option<&str>, stream: bool) -> Result<Value, String> {
    let request = chat::request_fields(body)?;
    let model = match model {
        Some(model) => model,
        None => chat::model(&request)?,
    };
    let mut messages = Vec::new();
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(Value::Array(blocks)) => {
            let parts = blocks
                .iter()
                .enumerate()
                .map(|(i, block)| text_part(block, &format!("system[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            messages.push(json!({"role": "system", "content": parts}));
        }
        Some(_) => return Err("`system` must be a string or a list of text blocks".into()),
    }
    chat::conversation(&request, &mut messages, translate_message)?;
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
        .ok_or("`max_tokens` is required: a positive integer")?;
    let mut chat = json!({"model": model, "messages": messages, "max_tokens": max_tokens});
    if stream || request.get("stream") == Some(&Value::Bool(true)) {
        chat["stream"] = json!(true);
        chat["stream_options"] = json!({"include_usage": true});
    }
    for (name, value) in &request {
        match name.as_str() {
            "model" | "messages" | "system" | "max_tokens" | "stream" | "tools" | "tool_choice" => {
            }
            "temperature" | "top_p" | "top_k" => {
                chat[name.as_str()] = value.clone();
            }
            "stop_sequences" => chat["stop"] = value.clone(),
            "metadata" => {
                if let Some(user) = value["user_id"].as_str() {
                    chat["user"] = json!(user);
                }
            }
            name if IGNORED.contains(&name) => {}
            name => return Err(chat::unsupported_field(name, "Messages")),
        }
    }
    tools(&request, &mut chat)?;
    Ok(chat)
}

fn text_part(block: &Value, at: &str) -> Result<Value, String> {
    let text = block
        .get("text")
        .and_then(Value::as_str)
        .filter(|_| block["type"] == "text")
        .ok_or_else(|| format!("{at} must be a text block"))?;
    let mut part = json!({"type": "text", "text": text});
    if let Some(cache) = block.get("cache_control") {
        part["cache_control"] = cache.clone();
    }
    Ok(part)
}

fn translate_message(message: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), String> {
    let role = message["role"].as_str().unwrap_or_default();
    let blocks: Vec<Value> = match &message["content"] {
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks.clone(),
        _ => {
            return Err(format!(
                "messages[{i}].content must be a string or a list of blocks"
            ));
        }
    };
    match role {
        "user" => {
            let mut parts = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                let at = format!("messages[{i}].content[{j}]");
                match block["type"].as_str() {
                    Some("tool_result") => out.push(tool_result(block, &at)?),
                    Some("text") => parts.push(text_part(block, &at)?),
                    Some("image") => parts.push(image(block, &at)?),
                    _ => {
                        return Err(format!(
                            "{at}: user messages take text, image and tool_result blocks"
                        ));
                    }
                }
            }
            out.extend(chat::user(parts));
        }
        "assistant" => out.push(chat::assistant_of(
            &blocks,
            i,
            "text and tool_use blocks",
            |block| match block["type"].as_str() {
                Some("text") => Some(AssistantBlock::Text(
                    block["text"].as_str().unwrap_or_default(),
                )),
                Some("tool_use") => Some(AssistantBlock::ToolCall(
                    &block["id"],
                    &block["name"],
                    block.get("input"),
                )),
                // Earlier reasoning is the model's own; it is not sent back.
                Some("thinking" | "redacted_thinking") => Some(AssistantBlock::Skipped),
                _ => None,
            },
        )?),
        _ => return Err(chat::unknown_role(i, role)),
    }
    Ok(())
}

fn image(block: &Value, at: &str) -> Result<Value, String> {
    let source = &block["source"];
    let url = match source["type"].as_str() {
        Some("base64") => {
            let media = source["media_type"].as_str().unwrap_or_default();
            let data = source["data"].as_str().unwrap_or_default();
            if !media.starts_with("image/") || data.is_empty() {
                return Err(format!("{at}.source needs an image media_type and data"));
            }
            format!("data:{media};base64,{data}")
        }
        Some("url") => source["url"]
            .as_str()
            .ok_or_else(|| format!("{at}.source.url is required"))?
            .to_owned(),
        _ => return Err(format!("{at}.source.type must be base64 or url")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_result(block: &Value, at: &str) -> Result<Value, String> {
    let id = block["tool_use_id"]
        .as_str()
        .ok_or_else(|| format!("{at}.tool_use_id is required"))?;
    let text = match &block["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.content: only text results are supported"))
            })
            .collect::<Result<String, _>>()?,
        Value::Null => String::new(),
        _ => {
            return Err(format!(
                "{at}.content must be a string or a list of text blocks"
            ));
        }
    };
    Ok(chat::tool_result(id, text, block["is_error"] == true))
}

fn tools(request: &Map<String, Value>, chat: &mut Value) -> Result<(), String> {
    let mut tools = Vec::new();
    for (i, tool) in chat::declared_tools(request) {
        let name = tool["name"]
            .as_str()
            .ok_or_else(|| format!("tools[{i}].name is required"))?;
        if tool.get("type").is_some_and(|t| t != "custom") {
            return Err(format!(
                "tools[{i}]: Anthropic's server tools are not supported; declare a custom tool"
            ));
        }
        tools.push(chat::function_tool(
            name,
            tool.get("description"),
            tool.get("input_schema"),
        ));
    }
    if !tools.is_empty() {
        chat["tools"] = Value::Array(tools);
    }
    if let Some(choice) = request.get("tool_choice") {
        let kind = match choice["type"].as_str() {
            Some("any") => "required",
            Some(kind) => kind,
            None => "",
        };
        chat["tool_choice"] = chat::tool_choice(kind, choice.get("name"))
            .ok_or("tool_choice.type must be auto, any, tool or none")?;
        if choice["disable_parallel_tool_use"] == true {
            chat["parallel_tool_calls"] = json!(false);
        }
    }
    Ok(())
}

/// The chat request a `count_tokens` body stands for (it has no `max_tokens`).
pub fn count_tokens_request(body: &[u8]) -> Result<Value, String> {
    let mut request = chat::request_fields(body)?;
    request.entry("max_tokens").or_insert(json!(1));
    let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    chat_request(&body, None, false)
}

/// Input tokens of a Messages request as `count_tokens` reports them, estimated without the
/// model's tokenizer: one per four bytes of its text, tool schemas included.
pub fn estimate_input_tokens(chat: &Value) -> u64 {
    fn text_bytes(value: &Value) -> u64 {
        match value {
            Value::String(s) if s.starts_with("data:") => 0,
            Value::String(s) => s.len() as u64,
            Value::Array(items) => items.iter().map(text_bytes).sum(),
            Value::Object(map) => map.values().map(text_bytes).sum(),
            _ => 0,
        }
    }
    let bytes = text_bytes(&chat["messages"]) + text_bytes(&chat["tools"]);
    bytes.div_ceil(4).max(1)
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::ContentFilter => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
    }
}

fn usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.uncached_input,
        "output_tokens": usage.output,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation_input_tokens": usage.cache_write,
    })
}

/// A message id in Anthropic's form, derived from the answer's own id when it has one.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{}", uuid::Uuid::now_v7().simple())
    }
}

/// The Messages `message` for a complete answer.
pub fn answer(reply: &Reply, model: &str) -> Value {
    let content = reply.output(
        |text| json!({"type": "text", "text": text}),
        |call| json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input()}),
    );
    json!({
        "id": message_id(&reply.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reply.finish),
        "stop_sequence": null,
        "usage": usage(&reply.usage),
    })
}

/// The Anthropic error `type` and HTTP status for a contract error code.
pub fn error_type(code: &str) -> &'static str {
    match code {
        "invalid_api_key" => "authentication_error",
        "model_not_allowed" | "routing_denied" => "permission_error",
        "model_not_found" | "not_found" => "not_found_error",
        "request_too_large" => "request_too_large",
        "rate_limit_exceeded" | "budget_exceeded" => "rate_limit_error",
        "upstream_error" | "upstream_timeout" | "policy_not_loaded" => "api_error",
        _ => "invalid_request_error",
    }
}

/// Turns the deltas of a chat stream into Messages stream events (`(event type, data)`).
pub struct StreamWriter {
    model: String,
    /// The block being streamed: its index, and the OpenAI call index for a tool block.
    open: Option<(u64, Option<u64>)>,
    next_index: u64,
    started: bool,
    /// The stop reason, held until the usage that `message_delta` carries with it.
    stopping: Option<Finish>,
    usage: Usage,
    ended: bool,
}

impl StreamWriter {
    pub fn new(model: &str) -> StreamWriter {
        StreamWriter {
            model: model.to_owned(),
            open: None,
            next_index: 0,
            started: false,
            stopping: None,
            usage: Usage::default(),
            ended: false,
        }
    }

    /// The final usage, once the stream has ended.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn stop(&mut self, out: &mut Vec<(&'static str, Value)>) {
        let Some(finish) = self.stopping.take() else {
            return;
        };
        self.ended = true;
        out.push((
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(finish), "stop_sequence": null},
            "usage": usage(&self.usage)}),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
    }

    fn open_block(
        &mut self,
        call: Option<u64>,
        block: Value,
        out: &mut Vec<(&'static str, Value)>,
    ) -> u64 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, call));
        out.push((
            "content_block_start",
            json!({"type": "content_block_start",
            "index": index, "content_block": block}),
        ));
        index
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if let Some((index, _)) = self.open.take() {
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }
}

impl EventWriter for StreamWriter {
    type Event = (&'static str, Value);

    /// The events for one delta.
    fn write(&mut self, delta: Delta, out: &mut Vec<Self::Event>) {
        match delta {
            Delta::Start { id, .. } => {
                self.started = true;
                out.push(("message_start", json!({"type": "message_start", "message": {
                    "id": message_id(&id), "type": "message", "role": "assistant",
                    "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }})));
            }
            Delta::Text(text) => {
                let index = match self.open {
                    Some((index, None)) => index,
                    _ => self.open_block(None, json!({"type": "text", "text": ""}), out),
                };
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta",
                    "index": index, "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            Delta::ToolStart { index, id, name } => {
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                self.open_block(Some(index), block, out);
            }
            Delta::ToolArguments { index, fragment } => {
                let block = match self.open {
                    Some((block, Some(call))) if call == index => block,
                    // Arguments of a call whose start was not seen: a block without a name.
                    _ => self.open_block(
                        Some(index),
                        json!({"type": "tool_use", "id": "", "name": "", "input": {}}),
                        out,
                    ),
                };
                out.push(("content_block_delta", json!({"type": "content_block_delta",
                    "index": block, "delta": {"type": "input_json_delta", "partial_json": fragment}})));
            }
            Delta::Finish(finish) => {
                self.close(out);
                self.stopping = Some(finish);
            }
            Delta::Usage(counts) => {
                self.usage = counts;
                self.stop(out);
            }
            Delta::Error { message, code } => {
                self.ended = true;
                out.push((
                    "error",
                    json!({"type": "error",
                    "error": {"type": error_type(&code), "message": message}}),
                ));
            }
        }
    }

    /// What ends the stream: a stream cut before it finished ends with an error event.
    fn finish(&mut self, out: &mut Vec<Self::Event>) {
        if self.ended {
            return;
        }
        if self.stopping.is_some() {
            self.stop(out);
        } else {
            self.ended = true;
            out.push((
                "error",
                json!({"type": "error", "error": {"type": "api_error",
                "message": "the model's stream ended before it finished"}}),
            ));
        }
    }
}

/// Whether tool arguments as streamed parse (used by tests of the writer).
#[cfg(test)]
fn arguments_of(events: &[(&str, Value)]) -> Value {
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["delta"]["partial_json"].as_str())
        .collect();
    super::reply::parse_arguments(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surfaces::reply::{assert_refused, text_then_tool_call, usage_delta};

    #[test]
    fn a_messages_request_becomes_a_chat_request() {
        let body = json!({
            "model": "claude", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {"c": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny", "is_error": false}]},
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"},
        });
        let chat = chat_request(body.to_string().as_bytes(), None, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chat["model"], "claude");
        assert_eq!(
            chat["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert_eq!(
            chat["messages"][2]["tool_calls"][0]["function"]["arguments"],
            r#"{"c":1}"#
        );
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "sunny"})
        );
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["user"], "u1");
    }

    #[test]
    fn what_cannot_be_expressed_is_refused_by_name() {
        let base =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        let mut thinking = base.clone();
        thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        let mut no_max = base.clone();
        no_max.as_object_mut().map(|m| m.remove("max_tokens"));
        for (body, expected) in [(thinking, "`thinking`"), (no_max, "max_tokens")] {
            assert_refused(
                chat_request(body.to_string().as_bytes(), None, false),
                expected,
            );
        }
    }

    #[test]
    fn a_stream_holds_its_stop_reason_until_the_usage() {
        let mut writer = StreamWriter::new("m");
        let mut out = Vec::new();
        for delta in text_then_tool_call("t", &["{\"a\":", "1}"]) {
            writer.write(delta, &mut out);
        }
        assert!(!out.iter().any(|(kind, _)| *kind == "message_delta"));
        writer.write(usage_delta(4, 2), &mut out);
        writer.finish(&mut out);
        let kinds: Vec<&str> = out.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(arguments_of(&out), json!({"a": 1}));
        assert_eq!(out[8].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(out[8].1["usage"]["input_tokens"], 4);
    }
}
