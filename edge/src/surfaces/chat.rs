//! The parts of an OpenAI chat request that every translated surface builds the same way.

use serde_json::{Map, Value, json};

/// A surface's request body, which must be a JSON object.
pub fn request_fields(body: &[u8]) -> Result<Map<String, Value>, String> {
    serde_json::from_slice(body).map_err(|e| format!("the request body is not JSON: {e}"))
}

/// The model the request names, which it must.
pub fn model(request: &Map<String, Value>) -> Result<&str, String> {
    request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| "`model` is required".into())
}

/// The refusal of a request field that the surface's API has and chat cannot express.
pub fn unsupported_field(name: &str, api: &str) -> String {
    format!("`{name}` is not supported through this gateway's {api} API")
}

/// The request's `tools` with their indexes (none when it has no list).
pub fn declared_tools(request: &Map<String, Value>) -> impl Iterator<Item = (usize, &Value)> {
    request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// A user message with its parts, unless it has none (the message held only tool results).
pub fn user(parts: Vec<Value>) -> Option<Value> {
    (!parts.is_empty()).then(|| json!({"role": "user", "content": parts}))
}

/// The refusal of `messages[i]`, whose role is neither user nor assistant.
pub fn unknown_role(i: usize, role: &str) -> String {
    format!("messages[{i}].role must be \"user\" or \"assistant\", got {role:?}")
}

/// An assistant message with its text and tool calls.
pub fn assistant(text: String, calls: Vec<Value>) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

/// Appends the request's `messages` (a non-empty list), each translated by `translate` (given
/// the message and its index).
pub fn conversation(
    request: &Map<String, Value>,
    out: &mut Vec<Value>,
    translate: impl Fn(&Value, usize, &mut Vec<Value>) -> Result<(), String>,
) -> Result<(), String> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("`messages` must be a non-empty list")?;
    for (i, message) in messages.iter().enumerate() {
        translate(message, i, out)?;
    }
    Ok(())
}

/// What a block of an assistant message holds, as a surface reads it.
pub enum AssistantBlock<'a> {
    Text(&'a str),
    /// A tool call the model made: its id, name and input (the arguments as JSON).
    ToolCall(&'a Value, &'a Value, Option<&'a Value>),
    /// Something the model made that is not sent back (its reasoning, a cache mark).
    Skipped,
}

/// The assistant message `messages[i]` made of `blocks`, each read by `read`; a block it
/// cannot read (`None`) is refused, saying the surface's assistant messages take `takes`.
pub fn assistant_of<'a>(
    blocks: &'a [Value],
    i: usize,
    takes: &str,
    read: impl Fn(&'a Value) -> Option<AssistantBlock<'a>>,
) -> Result<Value, String> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match read(block) {
            Some(AssistantBlock::Text(t)) => text.push_str(t),
            Some(AssistantBlock::ToolCall(id, name, input)) => {
                calls.push(tool_call(id, name, input))
            }
            Some(AssistantBlock::Skipped) => {}
            None => {
                return Err(format!(
                    "messages[{i}].content[{j}]: assistant messages take {takes}"
                ));
            }
        }
    }
    Ok(assistant(text, calls))
}

/// A tool call the model made earlier; `input` is its arguments as JSON.
pub fn tool_call(id: &Value, name: &Value, input: Option<&Value>) -> Value {
    let arguments = input.cloned().unwrap_or_else(|| json!({})).to_string();
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// The result of tool call `id`; a failed call's text says so, as chat has no error flag.
pub fn tool_result(id: &str, mut text: String, failed: bool) -> Value {
    if failed && !text.starts_with("Error") {
        text = format!("Error: {text}");
    }
    json!({"role": "tool", "tool_call_id": id, "content": text})
}

/// A function tool declaration.
pub fn function_tool(name: &str, description: Option<&Value>, parameters: Option<&Value>) -> Value {
    let parameters = parameters
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    let mut function = json!({"name": name, "parameters": parameters});
    if let Some(description) = description {
        function["description"] = description.clone();
    }
    json!({"type": "function", "function": function})
}

/// A tool choice: `auto`, `required` (any tool), `none`, or the tool named `name`.
pub fn tool_choice(kind: &str, name: Option<&Value>) -> Option<Value> {
    match (kind, name) {
        ("auto" | "required" | "none", _) => Some(json!(kind)),
        ("tool", Some(name)) => Some(json!({"type": "function", "function": {"name": name}})),
        _ => None,
    }
}
