//! The tools an OpenAI chat request offers and its `tool_choice`, read and checked once for
//! every provider that translates them into its own wire format (Anthropic, Bedrock, Gemini).

use serde_json::{Map, Value};

/// A function tool the request offers.
pub struct FunctionTool<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    /// The JSON schema of its arguments, when the request gave one.
    pub parameters: Option<&'a Value>,
    /// The whole `tools[i]` entry, for provider extensions such as `cache_control`.
    pub entry: &'a Value,
}

/// What the request's `tool_choice` asks of the model.
#[derive(Debug, PartialEq)]
pub enum ToolChoice<'a> {
    Auto,
    /// Call some tool (`required`).
    Required,
    None,
    /// Call this function.
    Function(&'a str),
}

/// The request's function tools, in order. `provider` names the deployments in the refusal of
/// any other kind of tool.
pub fn function_tools<'a>(
    request: &'a Map<String, Value>,
    provider: &str,
) -> Result<Vec<FunctionTool<'a>>, String> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err("`tools` must be an array".into()),
    };
    let mut offered = Vec::with_capacity(tools.len());
    for (i, entry) in tools.iter().enumerate() {
        if entry["type"] != "function" {
            return Err(format!(
                "tools[{i}]: only function tools are supported by {provider} deployments"
            ));
        }
        let function = &entry["function"];
        let name = function["name"]
            .as_str()
            .ok_or_else(|| format!("tools[{i}].function.name must be a string"))?;
        offered.push(FunctionTool {
            name,
            description: function["description"].as_str(),
            parameters: Some(&function["parameters"]).filter(|p| !p.is_null()),
            entry,
        });
    }
    Ok(offered)
}

/// The request's `tool_choice`, if it made one.
pub fn tool_choice(request: &Map<String, Value>) -> Result<Option<ToolChoice<'_>>, String> {
    Ok(match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(choice)) => Some(match choice.as_str() {
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            "none" => ToolChoice::None,
            other => return Err(format!("`tool_choice` {other:?} is not supported")),
        }),
        Some(choice) => match choice["function"]["name"].as_str() {
            Some(name) => Some(ToolChoice::Function(name)),
            None => {
                return Err("`tool_choice` must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": …}}".into());
            }
        },
    })
}

/// Whether the request turned parallel tool calls off.
pub fn parallel_calls_off(request: &Map<String, Value>) -> bool {
    request.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn function_tools_are_read_with_their_schema() {
        let r = request(json!({"tools": [
            {"type": "function", "function": {"name": "f", "description": "d",
                "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "g"}},
        ]}));
        let tools = function_tools(&r, "X").unwrap_or_default();
        assert_eq!(tools.len(), 2);
        assert_eq!((tools[0].name, tools[0].description), ("f", Some("d")));
        assert_eq!(tools[0].parameters, Some(&json!({"type": "object"})));
        assert!(tools[1].parameters.is_none());
    }

    #[test]
    fn other_tools_and_choices_are_refused_by_name() {
        let hosted = request(json!({"tools": [{"type": "web_search"}]}));
        assert_eq!(
            function_tools(&hosted, "Gemini").err().as_deref(),
            Some("tools[0]: only function tools are supported by Gemini deployments")
        );
        let nameless = request(json!({"tools": [{"type": "function", "function": {}}]}));
        assert!(function_tools(&nameless, "X").is_err());
        let odd = request(json!({"tool_choice": "sometimes"}));
        assert_eq!(
            tool_choice(&odd).err().as_deref(),
            Some("`tool_choice` \"sometimes\" is not supported")
        );
        let named =
            request(json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}));
        assert_eq!(
            tool_choice(&named).ok(),
            Some(Some(ToolChoice::Function("f")))
        );
    }
}
