//! An OpenAI chat request's common fields and its messages, read and checked once for the
//! providers that translate them into their own wire format (Anthropic, Gemini). What each
//! provider builds from them stays with the provider.
//!
//! Every problem is a message naming the offending field, answered to the client as a 400.

use serde_json::{Map, Value, json};

/// The request body as a JSON object.
pub fn chat_request(openai: &[u8]) -> Result<Map<String, Value>, String> {
    serde_json::from_slice(openai).map_err(|e| format!("invalid chat completion request: {e}"))
}

/// A request field, unless absent or `null`.
pub fn field<'a>(request: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    request.get(name).filter(|v| !v.is_null())
}

/// Refuses `n` above 1: the provider answers with one choice.
pub fn single_choice(request: &Map<String, Value>, provider: &str) -> Result<(), String> {
    match field(request, "n").and_then(Value::as_u64) {
        Some(n) if n > 1 => Err(format!(
            "`n` greater than 1 is not supported by {provider} deployments"
        )),
        _ => Ok(()),
    }
}

/// Refuses a `response_format` asking for JSON: `provider` has no JSON mode the translation can
/// use, and dropping the field would answer prose to a client that asked for JSON.
pub fn text_response_only(request: &Map<String, Value>, provider: &str) -> Result<(), String> {
    let Some(format) = field(request, "response_format") else {
        return Ok(());
    };
    match format["type"].as_str() {
        Some("text") => Ok(()),
        Some(kind @ ("json_object" | "json_schema")) => Err(format!(
            "`response_format` {kind} is not supported by {provider} deployments, which have no \
             JSON mode: ask for JSON in the prompt, or describe it as a tool"
        )),
        _ => Err("`response_format.type` must be text, json_object or json_schema".into()),
    }
}

/// The request's `messages`.
pub fn messages(request: &Map<String, Value>) -> Result<&[Value], String> {
    field(request, "messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| "`messages` must be an array".into())
}

/// `max_completion_tokens`, else the older `max_tokens`, if the request set either.
pub fn max_tokens(request: &Map<String, Value>) -> Result<Option<u64>, String> {
    field(request, "max_completion_tokens")
        .or_else(|| field(request, "max_tokens"))
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| "`max_tokens` must be a positive integer".into())
        })
        .transpose()
}

/// A sampling field that must be a number (`temperature`, `top_p`, …), if set.
pub fn number<'a>(
    request: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Value>, String> {
    match field(request, name) {
        Some(value) if !value.is_number() => Err(format!("`{name}` must be a number")),
        value => Ok(value),
    }
}

/// `stop` as an array of strings, unless there are none.
pub fn stop_sequences(request: &Map<String, Value>) -> Result<Option<Value>, String> {
    match field(request, "stop") {
        None => Ok(None),
        Some(Value::String(stop)) => Ok(Some(json!([stop]))),
        Some(Value::Array(stops)) if stops.is_empty() => Ok(None),
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            Ok(Some(Value::Array(stops.clone())))
        }
        Some(_) => Err("`stop` must be a string or an array of strings".into()),
    }
}

/// Whether the client (or the edge on its behalf) asked for the usage chunk of a stream.
pub fn include_usage(request: &Map<String, Value>) -> bool {
    request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Who speaks a message.
pub enum Role<'a> {
    /// `system` or `developer` (the name, for messages about it).
    System(&'a str),
    User,
    Assistant,
    Tool,
}

/// The role of `messages[i]` (`at`); `provider` names the deployments in the refusal of any
/// other.
pub fn role<'a>(message: &'a Value, at: &str, provider: &str) -> Result<Role<'a>, String> {
    match message["role"].as_str().unwrap_or_default() {
        role @ ("system" | "developer") => Ok(Role::System(role)),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => Err(format!(
            "{at}: role {other:?} is not supported by {provider} deployments (use tools)"
        )),
    }
}

/// Adds a message's blocks to the conversation: none are dropped, and a message of the same
/// role as the turn before joins it, since the providers want the roles to alternate.
pub fn push_turn<R: PartialEq, B>(turns: &mut Vec<(R, Vec<B>)>, role: R, blocks: Vec<B>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, previous)) if *last == role => previous.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// One content part, read.
pub enum Part<'a> {
    /// A text or a refusal, never empty.
    Text(&'a str),
    /// An `image_url` part's URL.
    Image(&'a str),
    /// A `file` part's `file` object.
    File(&'a Value),
}

/// The blocks of a message `content` (`at` names the message): a string, or an array of
/// content parts, each read and given to `shape` with its whole entry (for provider extensions
/// such as `cache_control`) and where it stands. Empty texts are left out.
pub fn content<'a>(
    content: &'a Value,
    at: &str,
    provider: &str,
    mut shape: impl FnMut(Part<'a>, &'a Value, &str) -> Result<Value, String>,
) -> Result<Vec<Value>, String> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(text) if text.is_empty() => Ok(Vec::new()),
        Value::String(text) => Ok(vec![shape(Part::Text(text), content, at)?]),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, entry) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                if let Some(part) = part(entry, &at, provider)? {
                    blocks.push(shape(part, entry, &at)?);
                }
            }
            Ok(blocks)
        }
        _ => Err(format!(
            "{at}.content must be a string or an array of content parts"
        )),
    }
}

/// One content part (`None` for an empty text, which the providers refuse).
fn part<'a>(part: &'a Value, at: &str, provider: &str) -> Result<Option<Part<'a>>, String> {
    match part["type"].as_str() {
        Some("text") => match part["text"].as_str() {
            Some("") => Ok(None),
            Some(text) => Ok(Some(Part::Text(text))),
            None => Err(format!("{at}.text must be a string")),
        },
        Some("refusal") => Ok(part["refusal"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(Part::Text)),
        Some("image_url") => {
            // `image_url` is `{"url": …, "detail": …}`, or a bare string in some clients.
            let url = part["image_url"]["url"]
                .as_str()
                .or_else(|| part["image_url"].as_str())
                .ok_or_else(|| format!("{at}.image_url.url must be a string"))?;
            Ok(Some(Part::Image(url)))
        }
        Some("file") => Ok(Some(Part::File(&part["file"]))),
        Some(other) => Err(format!(
            "{at}: content parts of type {other:?} are not supported by {provider} deployments"
        )),
        None => Err(format!("{at}.type must be a string")),
    }
}

/// A `data:` URL's media type and base64 payload.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mut meta = meta.split(';');
    let media_type = meta.next().filter(|m| !m.is_empty())?;
    meta.any(|p| p.eq_ignore_ascii_case("base64"))
        .then_some((media_type, data))
}

/// One of an assistant message's `tool_calls`.
pub struct ToolCall<'a> {
    pub id: Option<&'a str>,
    pub name: &'a str,
    /// The arguments, a JSON object (`{}` when the client sent none).
    pub arguments: Value,
    /// The whole `tool_calls[j]` entry, for provider extensions such as `cache_control`.
    pub entry: &'a Value,
}

/// An assistant message's tool calls, in order (`at` names the message). `require_id` refuses
/// a call without an id, which some providers must echo back with its result.
pub fn tool_calls<'a>(
    message: &'a Value,
    at: &str,
    provider: &str,
    require_id: bool,
) -> Result<Vec<ToolCall<'a>>, String> {
    let calls = match &message["tool_calls"] {
        Value::Null => return Ok(Vec::new()),
        Value::Array(calls) => calls,
        _ => return Err(format!("{at}.tool_calls must be an array")),
    };
    let mut read = Vec::with_capacity(calls.len());
    for (j, entry) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        let id = entry["id"].as_str();
        if require_id && id.is_none() {
            return Err(format!("{at}.id must be a string"));
        }
        let name = entry["function"]["name"]
            .as_str()
            .ok_or_else(|| format!("{at}.function.name must be a string"))?;
        let arguments = entry["function"]["arguments"].as_str().unwrap_or_default();
        let arguments = if arguments.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(arguments) {
                Ok(arguments @ Value::Object(_)) => arguments,
                _ => {
                    return Err(format!(
                        "{at}.function.arguments must be a JSON object for {provider} deployments"
                    ));
                }
            }
        };
        read.push(ToolCall {
            id,
            name,
            arguments,
            entry,
        });
    }
    Ok(read)
}

/// The id of the call a `tool` message answers.
pub fn tool_call_id<'a>(message: &'a Value, at: &str) -> Result<&'a str, String> {
    message["tool_call_id"]
        .as_str()
        .ok_or_else(|| format!("{at}.tool_call_id must be a string"))
}

/// A chat request with a round of two tool calls (the second without arguments) and their
/// results, offering the `weather` tool: for the translations' tests.
#[cfg(test)]
pub(crate) fn tool_round_trip() -> Value {
    json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather",
            "description": "d", "parameters": {"type": "object"}}}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(content: &Value) -> Result<Vec<Value>, String> {
        super::content(content, "messages[0]", "X", |part, _, _| match part {
            Part::Text(text) => Ok(text.into()),
            Part::Image(url) => Ok(json!({"image": url})),
            Part::File(_) => Err("file".into()),
        })
    }

    #[test]
    fn json_is_refused_where_there_is_no_json_mode() {
        let with = |format: Value| {
            let request = json!({"messages": [], "response_format": format});
            let request = request.as_object().cloned().unwrap_or_default();
            text_response_only(&request, "X").map_err(|e| e.contains("X deployments"))
        };
        assert_eq!(with(json!({"type": "text"})), Ok(()));
        assert_eq!(with(Value::Null), Ok(()));
        assert_eq!(with(json!({"type": "json_object"})), Err(true));
        assert_eq!(
            with(json!({"type": "json_schema", "json_schema": {}})),
            Err(true)
        );
        assert_eq!(with(json!({"type": "yaml"})), Err(false));
    }

    #[test]
    fn content_parts_are_read_and_empty_texts_left_out() {
        let content = json!([{"type": "text", "text": ""}, {"type": "refusal", "refusal": "no"},
            {"type": "image_url", "image_url": "https://x/y.png"}]);
        assert_eq!(
            texts(&content).ok(),
            Some(vec![json!("no"), json!({"image": "https://x/y.png"})])
        );
        assert_eq!(
            texts(&json!([{"type": "input_audio"}])).err().as_deref(),
            Some(
                "messages[0].content[0]: content parts of type \"input_audio\" are not supported by X deployments"
            )
        );
    }

    #[test]
    fn tool_calls_are_read_with_object_arguments() {
        let message = json!({"tool_calls": [
            {"id": "a", "function": {"name": "f", "arguments": "{\"x\":1}"}},
            {"function": {"name": "g", "arguments": " "}}]});
        let calls = tool_calls(&message, "m", "X", false).unwrap_or_default();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id, calls[0].name), (Some("a"), "f"));
        assert_eq!(calls[1].arguments, json!({}));
        assert_eq!(
            tool_calls(&message, "m", "X", true).err().as_deref(),
            Some("m.tool_calls[1].id must be a string")
        );
    }
}
