//! An OpenAI request, translated to a Gemini `generateContent` request (chat) or an
//! `embedContent` / `batchEmbedContents` request (embeddings).
//!
//! Every problem is reported as a message naming the offending field, answered to the client
//! as a 400: it is the request that Gemini cannot express, not the upstream that failed.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::providers::embedding_request;
use crate::providers::messages::{self, Part, Role};
use crate::providers::tools::{self, FunctionTool, ToolChoice};

/// Joins a tool call's id and the `thoughtSignature` Gemini gave its `functionCall`: OpenAI
/// clients send the id back untouched, and thinking models want the signature back.
pub const THOUGHT_SIGNATURE_MARK: &str = "__thought__";

/// A translated chat request.
pub struct Translated {
    /// The `GenerateContentRequest` body.
    pub body: Value,
    /// The client (or the edge on its behalf) asked for the usage chunk of a stream.
    pub include_usage: bool,
}

/// Translates an OpenAI chat-completions request body.
pub fn translate(openai: &[u8]) -> Result<Translated, String> {
    let request = messages::chat_request(openai)?;

    messages::single_choice(&request, "Gemini")?;
    let (system, contents) = translate_messages(messages::messages(&request)?)?;

    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    translate_tools(&request, &mut body)?;

    let mut config = Map::new();
    if let Some(max) = messages::max_tokens(&request)? {
        config.insert("maxOutputTokens".into(), max.into());
    }
    for (name, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(value) = messages::number(&request, name)? {
            config.insert(gemini.into(), value.clone());
        }
    }
    if let Some(stops) = messages::stop_sequences(&request)? {
        config.insert("stopSequences".into(), stops);
    }
    if let Some(format) = messages::field(&request, "response_format") {
        match format["type"].as_str() {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), "application/json".into());
                let schema = &format["json_schema"]["schema"];
                if !schema.is_null() {
                    config.insert("responseSchema".into(), response_schema(schema));
                }
            }
            _ => {
                return Err(
                    "`response_format.type` must be text, json_object or json_schema".into(),
                );
            }
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Translated {
        body: Value::Object(body),
        include_usage: messages::include_usage(&request),
    })
}

/// A JSON schema as Gemini's `responseSchema` (an OpenAPI subset): the keywords it refuses
/// are dropped.
fn response_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "additionalProperties" | "$schema"))
                .map(|(k, v)| {
                    // Property names are data, not keywords: keep them all.
                    let v = if k == "properties" {
                        match v {
                            Value::Object(p) => Value::Object(
                                p.iter()
                                    .map(|(name, s)| (name.clone(), response_schema(s)))
                                    .collect(),
                            ),
                            other => other.clone(),
                        }
                    } else {
                        response_schema(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(response_schema).collect()),
        other => other.clone(),
    }
}

/// The `systemInstruction` parts and the `contents`, neighbours of the same role merged.
fn translate_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool call id → function name, to name the function a tool result answers.
    let mut calls: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let (role, parts) = match messages::role(message, &at, "Gemini")? {
            Role::System(role) => {
                let parts = content_parts(&message["content"], &at)?;
                if parts.iter().any(|p| p.get("text").is_none()) {
                    return Err(format!(
                        "{at}: a {role} message may hold only text for Gemini"
                    ));
                }
                system.extend(parts);
                continue;
            }
            Role::User => ("user", content_parts(&message["content"], &at)?),
            Role::Assistant => ("model", assistant_parts(message, &at, &mut calls)?),
            Role::Tool => ("user", vec![function_response(message, &at, &calls)?]),
        };
        messages::push_turn(&mut turns, role, parts);
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, contents))
}

/// The parts of a message `content`: a string, or an array of content parts.
fn content_parts(content: &Value, at: &str) -> Result<Vec<Value>, String> {
    messages::content(content, at, "Gemini", |part, _, at| match part {
        Part::Text(text) => Ok(json!({"text": text})),
        Part::Image(url) => media_part(url, at),
        Part::File(file) => {
            let data = file["file_data"].as_str().ok_or_else(|| {
                format!("{at}: only files given inline as file_data (a base64 data URL) are supported by Gemini deployments")
            })?;
            media_part(data, at)
        }
    })
}

/// An image or file: inline data for a data URL, a file reference for an http(s) URL whose
/// media type its extension tells.
fn media_part(url: &str, at: &str) -> Result<Value, String> {
    if url.starts_with("data:") {
        let (mime_type, data) = messages::data_url(url)
            .ok_or_else(|| format!("{at}: a data URL must be data:<type>;base64,<data>"))?;
        return Ok(json!({"inlineData": {"mimeType": mime_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .to_ascii_lowercase();
        let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
        let mime_type = match extension {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "webp" => "image/webp",
            "gif" => "image/gif",
            "heic" => "image/heic",
            "heif" => "image/heif",
            "pdf" => "application/pdf",
            _ => {
                return Err(format!(
                    "{at}: the media type of {url:?} is unknown; send the image as a base64 data URL"
                ));
            }
        };
        return Ok(json!({"fileData": {"mimeType": mime_type, "fileUri": url}}));
    }
    Err(format!(
        "{at}: an image must be an http(s) URL or a base64 data URL"
    ))
}

/// An assistant message: its text, then its tool calls as `functionCall` parts.
fn assistant_parts(
    message: &Value,
    at: &str,
    calls: &mut HashMap<String, String>,
) -> Result<Vec<Value>, String> {
    let mut parts = content_parts(&message["content"], at)?;
    if parts.iter().any(|p| p.get("text").is_none()) {
        return Err(format!(
            "{at}: an assistant message may hold only text and tool calls"
        ));
    }
    for call in messages::tool_calls(message, at, "Gemini", false)? {
        if let Some(id) = call.id {
            calls.insert(id.to_owned(), call.name.to_owned());
        }
        let mut part = json!({"functionCall": {"name": call.name, "args": call.arguments}});
        if let Some((_, signature)) = call
            .id
            .and_then(|id| id.split_once(THOUGHT_SIGNATURE_MARK))
            .filter(|(_, signature)| !signature.is_empty())
        {
            part["thoughtSignature"] = signature.into();
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A `tool` message as a `functionResponse` part, named after the call it answers.
fn function_response(
    message: &Value,
    at: &str,
    calls: &HashMap<String, String>,
) -> Result<Value, String> {
    let id = messages::tool_call_id(message, at)?;
    let name = calls.get(id).ok_or_else(|| {
        format!("{at}.tool_call_id {id:?} answers no tool call of an earlier assistant message")
    })?;
    let content: String = match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        content => {
            let parts = content_parts(content, at)?;
            if parts.iter().any(|p| p.get("text").is_none()) {
                return Err(format!(
                    "{at}: a tool result may hold only text for Gemini deployments"
                ));
            }
            parts.iter().filter_map(|p| p["text"].as_str()).collect()
        }
    };
    Ok(json!({"functionResponse": {"name": name, "response": {"content": content}}}))
}

/// A function tool as Gemini declares one.
fn function_declaration(tool: &FunctionTool<'_>) -> Value {
    let mut declaration = json!({"name": tool.name});
    if let Some(description) = tool.description {
        declaration["description"] = description.into();
    }
    if let Some(parameters) = tool.parameters {
        declaration["parameters"] = parameters.clone();
    }
    declaration
}

/// `tools` and `tool_choice`.
fn translate_tools(
    request: &Map<String, Value>,
    body: &mut Map<String, Value>,
) -> Result<(), String> {
    let tools = tools::function_tools(request, "Gemini")?;
    let declarations: Vec<Value> = tools.iter().map(function_declaration).collect();
    let config = tools::tool_choice(request)?.map(|choice| match choice {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    });
    if declarations.is_empty() {
        return Ok(());
    }
    body.insert(
        "tools".into(),
        json!([{"functionDeclarations": declarations}]),
    );
    if let Some(config) = config {
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(())
}

/// A translated embeddings request.
pub enum Embeddings {
    /// One text: an `embedContent` body.
    One(Value),
    /// Several texts: a `batchEmbedContents` body.
    Batch(Value),
}

/// Translates an OpenAI embeddings request for `model` (the Gemini model id).
pub fn embeddings(openai: &[u8], model: &str) -> Result<Embeddings, String> {
    let (request, dimensions) = embedding_request::parse(openai)?;
    let content = |text: &str| {
        let mut request = json!({"content": {"parts": [{"text": text}]}});
        if let Some(dimensions) = dimensions {
            request["outputDimensionality"] = dimensions.into();
        }
        request
    };
    let only_text = "`input` must be a string or an array of strings for Gemini deployments (token arrays are not supported)";
    match request.get("input") {
        Some(Value::String(text)) => Ok(Embeddings::One(content(text))),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut requests = Vec::with_capacity(items.len());
            for item in items {
                let text = item.as_str().ok_or(only_text)?;
                let mut request = content(text);
                request["model"] = format!("models/{model}").into();
                requests.push(request);
            }
            Ok(Embeddings::Batch(json!({"requests": requests})))
        }
        _ => Err(only_text.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::messages::tool_round_trip;

    fn translated(request: Value) -> Value {
        match translate(request.to_string().as_bytes()) {
            Ok(t) => t.body,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn messages_become_contents_and_a_system_instruction() {
        let body = translated(json!({
            "model": "gemini", "max_tokens": 10, "stop": "END", "temperature": 0.2, "top_p": 0.9,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema":
                {"type": "object", "additionalProperties": false,
                 "properties": {"additionalProperties": {"type": "string"}}}}},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
                {"role": "assistant", "content": "three"},
            ],
        }));
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "one"}, {"text": "two"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
                {"role": "model", "parts": [{"text": "three"}]},
            ])
        );
        assert_eq!(
            body["generationConfig"],
            json!({"maxOutputTokens": 10, "temperature": 0.2, "topP": 0.9,
                "stopSequences": ["END"], "responseMimeType": "application/json",
                "responseSchema": {"type": "object",
                    "properties": {"additionalProperties": {"type": "string"}}}})
        );
    }

    #[test]
    fn tool_calls_and_results_become_function_parts() {
        let mut request = tool_round_trip();
        request["messages"][3]["content"] = json!([{"type": "text", "text": "noon"}]);
        request["tool_choice"] = json!({"type": "function", "function": {"name": "weather"}});
        let body = translated(request);
        assert_eq!(
            body["contents"][1],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "time", "args": {}}}]})
        );
        assert_eq!(
            body["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"content": "sunny"}}},
                {"functionResponse": {"name": "time", "response": {"content": "noon"}}}]})
        );
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [{"name": "weather", "description": "d",
                "parameters": {"type": "object"}}]}])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
        );
    }

    #[test]
    fn a_thought_signature_in_a_tool_call_id_goes_back_to_gemini() {
        let body = translated(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "call_0__thought__c2ln", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0__thought__c2ln", "content": "ok"}]}));
        assert_eq!(
            body["contents"][1]["parts"][0],
            json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"})
        );
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"]["name"],
            "f"
        );
    }

    #[test]
    fn what_gemini_cannot_express_is_refused() {
        let refused = |request: Value| translate(request.to_string().as_bytes()).is_err();
        let user = json!([{"role": "user", "content": "x"}]);
        assert!(refused(json!({"model": "m", "messages": user, "n": 2})));
        assert!(refused(json!({"model": "m", "messages": [
            {"role": "tool", "tool_call_id": "nobody", "content": "x"}]})));
        assert!(refused(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]})
        ));
        assert!(refused(json!({"model": "m", "messages": user, "stop": 3})));
        assert!(embeddings(br#"{"model":"m","input":[[1,2]]}"#, "m").is_err());
        assert!(embeddings(br#"{"model":"m","input":"a","dimensions":0}"#, "m").is_err());
    }
}
