//! An OpenAI chat-completions request, translated to an Anthropic Messages request.
//!
//! Every problem is reported as a message naming the offending field, answered to the client
//! as a 400: it is the request that Anthropic cannot express, not the upstream that failed.

use serde_json::{Map, Value, json};

use crate::providers::messages::{self, Part, Role};
use crate::providers::tools::{self, FunctionTool, ToolChoice};

/// Anthropic requires `max_tokens`; this is sent when the client set no maximum.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A translated request.
pub struct Translated {
    /// The Anthropic Messages request body.
    pub body: Value,
    /// The client (or the edge on its behalf) asked for the usage chunk of a stream.
    pub include_usage: bool,
}

/// Translates an OpenAI chat-completions request body; `stream` is whether to ask for SSE.
pub fn translate(openai: &[u8], stream: bool) -> Result<Translated, String> {
    let request = messages::chat_request(openai)?;
    let field = |name: &str| messages::field(&request, name);

    messages::single_choice(&request, "Anthropic")?;
    messages::text_response_only(&request, "Anthropic")?;
    let (system, messages) = translate_messages(messages::messages(&request)?)?;

    let mut body = Map::new();
    body.insert(
        "model".into(),
        field("model").cloned().unwrap_or(Value::Null),
    );
    let max_tokens = messages::max_tokens(&request)?.unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), max_tokens.into());
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let has_tool_blocks = messages.iter().any(|m| {
        m["content"].as_array().is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b["type"] == "tool_use" || b["type"] == "tool_result")
        })
    });
    body.insert("messages".into(), Value::Array(messages));
    for name in ["temperature", "top_p", "top_k"] {
        if let Some(value) = messages::number(&request, name)? {
            body.insert(name.into(), value.clone());
        }
    }
    if let Some(stops) = messages::stop_sequences(&request)? {
        body.insert("stop_sequences".into(), stops);
    }
    if let Some(user) = field("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    translate_tools(&request, has_tool_blocks, &mut body)?;
    if stream {
        body.insert("stream".into(), true.into());
    }
    Ok(Translated {
        body: Value::Object(body),
        include_usage: messages::include_usage(&request),
    })
}

/// The top-level `system` blocks and the Anthropic `messages`, alternating user and assistant.
fn translate_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let (role, mut blocks) = match messages::role(message, &at, "Anthropic")? {
            Role::System(role) => {
                let mut blocks = content_blocks(&message["content"], &at)?;
                if let Some(bad) = blocks.iter().find(|b| b["type"] != "text") {
                    return Err(format!(
                        "{at}: a {role} message may hold only text for Anthropic, not {}",
                        bad["type"]
                    ));
                }
                message_cache_control(message, &mut blocks);
                system.extend(blocks);
                continue;
            }
            Role::User => ("user", content_blocks(&message["content"], &at)?),
            Role::Assistant => ("assistant", assistant_blocks(message, &at)?),
            Role::Tool => ("user", vec![tool_result(message, &at)?]),
        };
        message_cache_control(message, &mut blocks);
        messages::push_turn(&mut turns, role, blocks);
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // Tool results must open their user turn.
            blocks.sort_by_key(|b| b["type"] != "tool_result");
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, messages))
}

/// A `cache_control` set on a whole message applies to its last block.
fn message_cache_control(message: &Value, blocks: &mut [Value]) {
    if let Some(cache) = message.get("cache_control").filter(|c| !c.is_null())
        && let Some(last) = blocks.last_mut()
    {
        last["cache_control"] = cache.clone();
    }
}

/// A `cache_control` set on a content part or a tool call applies to its block.
fn entry_cache_control(entry: &Value, block: &mut Value) {
    if let Some(cache) = entry.get("cache_control").filter(|c| !c.is_null()) {
        block["cache_control"] = cache.clone();
    }
}

/// The blocks of a message `content`: a string, or an array of content parts.
fn content_blocks(content: &Value, at: &str) -> Result<Vec<Value>, String> {
    messages::content(content, at, "Anthropic", |part, entry, at| {
        let mut block = match part {
            Part::Text(text) => json!({"type": "text", "text": text}),
            Part::Image(url) => image_block(url, at)?,
            Part::File(file) => document_block(file, at)?,
        };
        entry_cache_control(entry, &mut block);
        Ok(block)
    })
}

fn image_block(url: &str, at: &str) -> Result<Value, String> {
    if url.starts_with("data:") {
        let (media_type, data) = messages::data_url(url)
            .ok_or_else(|| format!("{at}: an image data URL must be data:<type>;base64,<data>"))?;
        Ok(json!({"type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data}}))
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
    } else {
        Err(format!(
            "{at}: an image must be an http(s) URL or a base64 data URL"
        ))
    }
}

/// An OpenAI `file` part carrying a PDF inline becomes an Anthropic `document`.
fn document_block(file: &Value, at: &str) -> Result<Value, String> {
    let data = file["file_data"]
        .as_str()
        .and_then(messages::data_url)
        .filter(|(media_type, _)| *media_type == "application/pdf")
        .ok_or_else(|| {
            format!("{at}: only PDF files given inline as file_data (a base64 data URL) are supported by Anthropic deployments")
        })?;
    Ok(json!({"type": "document",
        "source": {"type": "base64", "media_type": data.0, "data": data.1}}))
}

/// An assistant message: its text, then its tool calls as `tool_use` blocks.
fn assistant_blocks(message: &Value, at: &str) -> Result<Vec<Value>, String> {
    let mut blocks = content_blocks(&message["content"], at)?;
    if let Some(bad) = blocks.iter().find(|b| b["type"] != "text") {
        return Err(format!(
            "{at}: an assistant message may hold only text and tool calls, not {}",
            bad["type"]
        ));
    }
    // Anthropic pairs each result with its call by the id.
    for call in messages::tool_calls(message, at, "Anthropic", true)? {
        let mut block = json!({"type": "tool_use", "id": call.id, "name": call.name,
            "input": call.arguments});
        entry_cache_control(call.entry, &mut block);
        blocks.push(block);
    }
    Ok(blocks)
}

/// A `tool` message as a `tool_result` block.
fn tool_result(message: &Value, at: &str) -> Result<Value, String> {
    let id = messages::tool_call_id(message, at)?;
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match &message["content"] {
        Value::String(text) if text.is_empty() => {}
        Value::String(text) => block["content"] = text.as_str().into(),
        content => {
            let parts = content_blocks(content, at)?;
            if let Some(bad) = parts
                .iter()
                .find(|b| b["type"] != "text" && b["type"] != "image")
            {
                return Err(format!(
                    "{at}: a tool result may hold only text and images, not {}",
                    bad["type"]
                ));
            }
            if !parts.is_empty() {
                block["content"] = Value::Array(parts);
            }
        }
    }
    Ok(block)
}

/// A function tool as Anthropic declares one, with the `cache_control` mark of its entry or of
/// its function.
fn tool_definition(tool: &FunctionTool<'_>) -> Value {
    let schema = tool
        .parameters
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let mut out = json!({"name": tool.name, "input_schema": schema});
    if let Some(description) = tool.description {
        out["description"] = description.into();
    }
    let cache = [
        tool.entry.get("cache_control"),
        tool.entry["function"].get("cache_control"),
    ]
    .into_iter()
    .flatten()
    .find(|c| !c.is_null());
    if let Some(cache) = cache {
        out["cache_control"] = cache.clone();
    }
    out
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
fn translate_tools(
    request: &Map<String, Value>,
    has_tool_blocks: bool,
    body: &mut Map<String, Value>,
) -> Result<(), String> {
    let tools = tools::function_tools(request, "Anthropic")?;
    let translated: Vec<Value> = tools.iter().map(tool_definition).collect();
    let mut choice = match tools::tool_choice(request)? {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::None) if has_tool_blocks => Some(json!({"type": "none"})),
        // Without tools on offer the model cannot call one.
        Some(ToolChoice::None) => return Ok(()),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if translated.is_empty() {
        return Ok(());
    }
    if tools::parallel_calls_off(request) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
    }
    body.insert("tools".into(), Value::Array(translated));
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::messages::tool_round_trip;

    fn translated(request: Value) -> Value {
        match translate(request.to_string().as_bytes(), false) {
            Ok(t) => t.body,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn system_messages_are_lifted_and_neighbours_merged() {
        let body = translated(json!({
            "model": "claude", "max_tokens": 10, "stop": "END", "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind.",
                    "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
            ],
        }));
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [
                {"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}])
        );
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["max_tokens"], 10);
        assert_eq!(body["temperature"], 0.2);
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn tool_calls_and_results_become_blocks() {
        let mut request = tool_round_trip();
        request["tool_choice"] = json!("required");
        request["parallel_tool_calls"] = json!(false);
        let body = translated(request);
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "time", "input": {}}])
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"}]})
        );
        assert_eq!(
            body["tools"],
            json!([{"name": "weather", "description": "d", "input_schema": {"type": "object"}}])
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn tool_choice_maps_and_none_drops_the_tools() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let with = |choice: Value| {
            translated(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": tools, "tool_choice": choice}),
            )
        };
        assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
            json!({"type": "tool", "name": "f"})
        );
        let none = with(json!("none"));
        assert!(none.get("tools").is_none() && none.get("tool_choice").is_none());
        assert_eq!(
            with(json!("auto"))["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn images_become_base64_or_url_sources() {
        let body = translated(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": ""},
            ]}]}),
        );
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                 "cache_control": {"type": "ephemeral"}}])
        );
    }

    #[test]
    fn what_anthropic_cannot_express_is_refused() {
        let refused = |request: Value| translate(request.to_string().as_bytes(), false).is_err();
        let user = json!([{"role": "user", "content": "x"}]);
        assert!(refused(json!({"model": "m", "messages": user, "n": 2})));
        assert!(refused(
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})
        ));
        assert!(refused(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]})
        ));
        assert!(refused(json!({"model": "m", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}]})));
        assert!(refused(
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})
        ));
        assert!(refused(json!({"model": "m", "messages": user, "stop": 3})));
    }
}
