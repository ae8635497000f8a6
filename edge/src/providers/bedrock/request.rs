//! OpenAI chat-completions request → Bedrock Converse input.
//!
//! Every failure here is the client's: it becomes a 400 with a message saying what Bedrock
//! cannot take.

use std::collections::HashMap;

use aws_sdk_bedrockruntime::types::{
    AnyToolChoice, AutoToolChoice, CachePointBlock, CachePointType, ContentBlock, ConversationRole,
    GuardrailConfiguration, GuardrailStreamConfiguration, GuardrailStreamProcessingMode,
    GuardrailTrace, ImageBlock, ImageFormat, ImageSource, InferenceConfiguration, Message,
    SpecificToolChoice, SystemContentBlock, Tool, ToolChoice, ToolConfiguration, ToolInputSchema,
    ToolResultBlock, ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Blob, Document, Number};
use serde_json::{Map, Value};

use crate::providers::{messages, tools};

/// A Converse request, ready for either `Converse` or `ConverseStream`.
#[derive(Debug)]
pub struct ConverseRequest {
    pub model_id: String,
    pub messages: Vec<Message>,
    pub system: Vec<SystemContentBlock>,
    pub inference: Option<InferenceConfiguration>,
    pub tools: Option<ToolConfiguration>,
    pub guardrail: Option<Guardrail>,
    pub additional_fields: Option<Document>,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

/// Bedrock Guardrails, from the request's `guardrailConfig`.
#[derive(Debug)]
pub struct Guardrail {
    pub identifier: String,
    pub version: String,
    pub trace: Option<GuardrailTrace>,
    pub stream_processing_mode: Option<GuardrailStreamProcessingMode>,
}

impl Guardrail {
    pub fn for_converse(&self) -> GuardrailConfiguration {
        GuardrailConfiguration::builder()
            .guardrail_identifier(&self.identifier)
            .guardrail_version(&self.version)
            .set_trace(self.trace.clone())
            .build()
    }

    pub fn for_stream(&self) -> GuardrailStreamConfiguration {
        GuardrailStreamConfiguration::builder()
            .guardrail_identifier(&self.identifier)
            .guardrail_version(&self.version)
            .set_trace(self.trace.clone())
            .set_stream_processing_mode(self.stream_processing_mode.clone())
            .build()
    }
}

/// Why a request cannot be sent to Bedrock (the client's mistake).
pub type Invalid = String;

/// Translates an OpenAI chat-completions body.
pub fn converse_request(body: &[u8], default_model: &str) -> Result<ConverseRequest, Invalid> {
    let request: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    let model_id = request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(default_model)
        .to_owned();
    if request.get("n").and_then(Value::as_u64).unwrap_or(1) > 1 {
        return Err("Bedrock models answer with one choice: `n` must be 1".into());
    }
    messages::text_response_only(&request, "Bedrock")?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;
    let (system, messages) = conversation(messages)?;
    let has_tool_blocks = messages.iter().any(|m| {
        m.content()
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolUse(_) | ContentBlock::ToolResult(_)))
    });
    Ok(ConverseRequest {
        model_id,
        messages,
        system,
        inference: inference(&request)?,
        tools: tool_configuration(&request, has_tool_blocks)?,
        guardrail: guardrail(request.get("guardrailConfig"))?,
        additional_fields: request
            .get("additionalModelRequestFields")
            .filter(|v| v.is_object())
            .map(document),
        include_usage: messages::include_usage(&request),
    })
}

/// System blocks and the alternating user/assistant messages.
fn conversation(messages: &[Value]) -> Result<(Vec<SystemContentBlock>, Vec<Message>), Invalid> {
    let mut system = Vec::new();
    let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(system_blocks(content, i)?);
                continue;
            }
            "user" => (ConversationRole::User, content_blocks(content, i, true)?),
            "assistant" => {
                let mut blocks = content_blocks(content, i, false)?;
                if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                    for call in calls {
                        blocks.push(tool_use(call, i)?);
                    }
                }
                (ConversationRole::Assistant, blocks)
            }
            "tool" => (ConversationRole::User, vec![tool_result(message, i)?]),
            other => {
                return Err(format!(
                    "messages[{i}]: role {other:?} is not supported by Bedrock; use `tools` and `tool` messages"
                ));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        // Bedrock wants user and assistant turns to alternate: consecutive messages of one
        // role (several tool results, say) become one turn.
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| {
            Message::builder()
                .role(role)
                .set_content(Some(content))
                .build()
                .map_err(|e| format!("invalid message: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok((system, messages))
}

/// The parts of a message's `content`: a string, or an array of parts.
fn parts(content: &Value, i: usize) -> Result<Vec<&Value>, Invalid> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(_) => Ok(vec![content]),
        Value::Array(parts) => Ok(parts.iter().collect()),
        _ => Err(format!(
            "messages[{i}].content must be a string or an array of parts"
        )),
    }
}

/// Whether a content part asks for a prompt-cache point after it (Anthropic style).
fn cache_point(part: &Value) -> Option<CachePointBlock> {
    part.get("cache_control")?;
    CachePointBlock::builder()
        .r#type(CachePointType::Default)
        .build()
        .ok()
}

fn system_blocks(content: &Value, i: usize) -> Result<Vec<SystemContentBlock>, Invalid> {
    let mut blocks = Vec::new();
    for part in parts(content, i)? {
        let text = match part {
            Value::String(text) => text,
            part if part.get("type").and_then(Value::as_str) == Some("text") => part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("messages[{i}]: a text part needs `text`"))?,
            _ => return Err(format!("messages[{i}]: system messages take only text")),
        };
        if !text.is_empty() {
            blocks.push(SystemContentBlock::Text(text.to_owned()));
        }
        if let Some(point) = cache_point(part) {
            blocks.push(SystemContentBlock::CachePoint(point));
        }
    }
    Ok(blocks)
}

fn content_blocks(content: &Value, i: usize, user: bool) -> Result<Vec<ContentBlock>, Invalid> {
    let mut blocks = Vec::new();
    for part in parts(content, i)? {
        let kind = match part {
            Value::String(_) => "string",
            part => part.get("type").and_then(Value::as_str).unwrap_or(""),
        };
        match (kind, part) {
            ("string", Value::String(text)) => {
                if !text.is_empty() {
                    blocks.push(ContentBlock::Text(text.clone()));
                }
            }
            ("text", _) => {
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{i}]: a text part needs `text`"))?;
                // Bedrock refuses blank text blocks.
                if !text.is_empty() {
                    blocks.push(ContentBlock::Text(text.to_owned()));
                }
            }
            ("refusal", _) => {
                if let Some(text) = part.get("refusal").and_then(Value::as_str) {
                    blocks.push(ContentBlock::Text(text.to_owned()));
                }
            }
            ("image_url", _) if user => blocks.push(ContentBlock::Image(image(part, i)?)),
            (other, _) => {
                return Err(format!(
                    "messages[{i}]: content parts of type {other:?} are not supported by Bedrock here"
                ));
            }
        }
        if let Some(point) = cache_point(part) {
            blocks.push(ContentBlock::CachePoint(point));
        }
    }
    Ok(blocks)
}

/// An `image_url` part holding a `data:` URL.
fn image(part: &Value, i: usize) -> Result<ImageBlock, Invalid> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("messages[{i}]: an image_url part needs `image_url.url`"))?;
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(format!(
            "messages[{i}]: Bedrock takes images inline only: send a data: URL (data:image/png;base64,…)"
        ));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| format!("messages[{i}]: malformed data: URL"))?;
    let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
        format!("messages[{i}]: the image's data: URL must be base64 (data:image/png;base64,…)")
    })?;
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => ImageFormat::Png,
        "image/jpeg" | "image/jpg" => ImageFormat::Jpeg,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::Webp,
        other => {
            return Err(format!(
                "messages[{i}]: image type {other:?} is not supported by Bedrock (png, jpeg, gif, webp)"
            ));
        }
    };
    let bytes = aws_smithy_types::base64::decode(data)
        .map_err(|_| format!("messages[{i}]: the image's base64 data is malformed"))?;
    ImageBlock::builder()
        .format(format)
        .source(ImageSource::Bytes(Blob::new(bytes)))
        .build()
        .map_err(|e| format!("messages[{i}]: {e}"))
}

/// An assistant's `tool_calls` entry.
fn tool_use(call: &Value, i: usize) -> Result<ContentBlock, Invalid> {
    let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
    let function = call.get("function").unwrap_or(&Value::Null);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("messages[{i}]: a tool call needs `function.name`"))?;
    let input = match function.get("arguments") {
        Some(Value::String(arguments)) if arguments.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(arguments)) => serde_json::from_str(arguments).map_err(|_| {
            format!("messages[{i}]: the arguments of tool call {id:?} are not valid JSON")
        })?,
        Some(object @ Value::Object(_)) => object.clone(),
        _ => Value::Object(Map::new()),
    };
    ToolUseBlock::builder()
        .tool_use_id(id)
        .name(name)
        .input(document(&input))
        .build()
        .map(ContentBlock::ToolUse)
        .map_err(|e| format!("messages[{i}]: {e}"))
}

/// A `tool` message: the result of a tool call, sent by the user.
fn tool_result(message: &Value, i: usize) -> Result<ContentBlock, Invalid> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("messages[{i}]: a tool message needs `tool_call_id`"))?;
    let mut content = Vec::new();
    for part in parts(message.get("content").unwrap_or(&Value::Null), i)? {
        let text = match part {
            Value::String(text) => text.as_str(),
            part => part.get("text").and_then(Value::as_str).unwrap_or_default(),
        };
        content.push(ToolResultContentBlock::Text(text.to_owned()));
    }
    if content.is_empty() {
        content.push(ToolResultContentBlock::Text(String::new()));
    }
    ToolResultBlock::builder()
        .tool_use_id(id)
        .set_content(Some(content))
        .build()
        .map(ContentBlock::ToolResult)
        .map_err(|e| format!("messages[{i}]: {e}"))
}

fn inference(request: &Map<String, Value>) -> Result<Option<InferenceConfiguration>, Invalid> {
    let max_tokens = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    let float = |name: &str| request.get(name).and_then(Value::as_f64).map(|f| f as f32);
    let stop = match request.get("stop") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("`stop` must be a string or an array of strings")?,
        ),
        Some(_) => return Err("`stop` must be a string or an array of strings".into()),
    };
    let (temperature, top_p) = (float("temperature"), float("top_p"));
    if max_tokens.is_none() && temperature.is_none() && top_p.is_none() && stop.is_none() {
        return Ok(None);
    }
    Ok(Some(
        InferenceConfiguration::builder()
            .set_max_tokens(max_tokens)
            .set_temperature(temperature)
            .set_top_p(top_p)
            .set_stop_sequences(stop)
            .build(),
    ))
}

fn tool_configuration(
    request: &Map<String, Value>,
    has_tool_blocks: bool,
) -> Result<Option<ToolConfiguration>, Invalid> {
    let tools = tools::function_tools(request, "Bedrock")?;
    if tools.is_empty() {
        return Ok(None);
    }
    let choice = match tools::tool_choice(request)? {
        None => None,
        Some(tools::ToolChoice::Auto) => Some(ToolChoice::Auto(AutoToolChoice::builder().build())),
        Some(tools::ToolChoice::Required) => {
            Some(ToolChoice::Any(AnyToolChoice::builder().build()))
        }
        // Converse cannot forbid tools; without tool blocks in the conversation the tools are
        // left out instead (Bedrock needs them declared when the history uses them).
        Some(tools::ToolChoice::None) if !has_tool_blocks => return Ok(None),
        Some(tools::ToolChoice::None) => None,
        Some(tools::ToolChoice::Function(name)) => {
            let specific = SpecificToolChoice::builder()
                .name(name)
                .build()
                .map_err(|e| e.to_string())?;
            Some(ToolChoice::Tool(specific))
        }
    };
    let mut specs = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let schema = tool
            .parameters
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
        let spec = ToolSpecification::builder()
            .name(tool.name)
            .set_description(tool.description.map(str::to_owned))
            .input_schema(ToolInputSchema::Json(document(&schema)))
            .build()
            .map_err(|e| format!("tools[{i}]: {e}"))?;
        specs.push(Tool::ToolSpec(spec));
        if let Some(point) = cache_point(tool.entry) {
            specs.push(Tool::CachePoint(point));
        }
    }
    ToolConfiguration::builder()
        .set_tools(Some(specs))
        .set_tool_choice(choice)
        .build()
        .map(Some)
        .map_err(|e| e.to_string())
}

fn guardrail(config: Option<&Value>) -> Result<Option<Guardrail>, Invalid> {
    let Some(config) = config.filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let field = |name: &str| config.get(name).and_then(Value::as_str);
    let identifier =
        field("guardrailIdentifier").ok_or("`guardrailConfig.guardrailIdentifier` is required")?;
    let version = field("guardrailVersion").unwrap_or("DRAFT");
    Ok(Some(Guardrail {
        identifier: identifier.to_owned(),
        version: version.to_owned(),
        trace: field("trace").map(GuardrailTrace::from),
        stream_processing_mode: field("streamProcessingMode")
            .map(GuardrailStreamProcessingMode::from),
    }))
}

/// JSON → Smithy document.
pub fn document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(document).collect()),
        Value::Object(map) => Document::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), document(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// Smithy document → JSON.
pub fn json(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(json).collect()),
        Document::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), json(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json as j;

    fn translate(body: Value) -> Result<ConverseRequest, Invalid> {
        converse_request(body.to_string().as_bytes(), "default-model")
    }

    #[test]
    fn roles_merge_and_alternate() {
        let request = translate(j!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "really", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "t2", "type": "function", "function": {"name": "get", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "t2", "content": "rain"},
            {"role": "user", "content": [{"type": "text", "text": "and?"}]},
        ]}))
        .unwrap();
        assert_eq!(request.model_id, "m");
        assert_eq!(request.system.len(), 3, "{:?}", request.system);
        assert!(matches!(
            request.system[2],
            SystemContentBlock::CachePoint(_)
        ));
        let roles: Vec<_> = request.messages.iter().map(|m| m.role().clone()).collect();
        assert_eq!(
            roles,
            [
                ConversationRole::User,
                ConversationRole::Assistant,
                ConversationRole::User
            ]
        );
        assert_eq!(request.messages[1].content().len(), 2);
        let ContentBlock::ToolUse(call) = &request.messages[1].content()[0] else {
            panic!("not a tool use");
        };
        assert_eq!(json(call.input()), j!({"city": "Paris"}));
        assert_eq!(request.messages[2].content().len(), 3);
        assert!(request.inference.is_none());
    }

    #[test]
    fn images_tools_and_settings() {
        let png = aws_smithy_types::base64::encode(b"\x89PNG fake");
        let request = translate(j!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -1}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "max_tokens": 100, "temperature": 0.5, "stop": "END",
            "guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "2", "trace": "enabled"}}))
        .unwrap();
        assert_eq!(request.model_id, "default-model");
        let ContentBlock::Image(image) = &request.messages[0].content()[1] else {
            panic!("not an image");
        };
        assert_eq!(image.format(), &ImageFormat::Png);
        let tools = request.tools.unwrap();
        assert!(matches!(tools.tool_choice(), Some(ToolChoice::Tool(t)) if t.name() == "f"));
        let Tool::ToolSpec(spec) = &tools.tools()[0] else {
            panic!("not a spec");
        };
        let Some(ToolInputSchema::Json(schema)) = spec.input_schema() else {
            panic!("no schema");
        };
        assert_eq!(json(schema)["properties"]["x"]["minimum"], -1);
        let inference = request.inference.unwrap();
        assert_eq!(inference.max_tokens(), Some(100));
        assert_eq!(inference.stop_sequences(), ["END"]);
        let guardrail = request.guardrail.unwrap().for_converse();
        assert_eq!(guardrail.guardrail_identifier(), "gr-1");
        assert_eq!(guardrail.trace(), &GuardrailTrace::Enabled);
    }

    #[test]
    fn what_bedrock_cannot_take_is_refused() {
        for body in [
            j!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
            j!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}),
            j!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            j!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            j!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{not json"}}]}]}),
        ] {
            assert!(translate(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn tool_choice_none_drops_unused_tools() {
        let request = translate(j!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}))
        .unwrap();
        assert!(request.tools.is_none());
    }
}
