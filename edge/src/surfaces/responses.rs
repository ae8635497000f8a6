//! OpenAI Responses ⇄ OpenAI chat: `POST /v1/responses` becomes a chat request for the
//! pipeline, and the pipeline's answer, whichever provider served it, becomes a `response`
//! object or its stream of typed events.
//!
//! Stateless: the edge stores no response, so `previous_response_id` is refused with a message
//! saying to send the whole conversation in `input`; `store` is accepted and nothing is kept.

use serde_json::{Map, Value, json};

use super::EventWriter;
use super::chat;
use super::reply::{Delta, Finish, Reply, ToolCall, Usage};
use crate::clock::unix_seconds;

/// Fields with no counterpart that are safe to leave out.
const IGNORED: &[&str] = &[
    "store",
    "metadata",
    "truncation",
    "include",
    "service_tier",
    "background",
    "prompt_cache_key",
    "safety_identifier",
];

/// The chat request for a Responses request body.
pub fn chat_request(body: &[u8]) -> Result<Value, String> {
    let request = chat::request_fields(body)?;
    let model = chat::model(&request)?;
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                translate_item(item, i, &mut messages)?;
            }
        }
        _ => return Err("`input` must be a string or a non-empty list of items".into()),
    }
    let mut chat = json!({"model": model, "messages": messages});
    for (name, value) in &request {
        match name.as_str() {
            "model" | "input" | "instructions" | "tools" | "tool_choice" => {}
            "stream" => {
                if value == true {
                    chat["stream"] = json!(true);
                    chat["stream_options"] = json!({"include_usage": true});
                }
            }
            "max_output_tokens" => chat["max_completion_tokens"] = value.clone(),
            "temperature" | "top_p" | "parallel_tool_calls" | "user" => {
                chat[name.as_str()] = value.clone();
            }
            "previous_response_id" if !value.is_null() => {
                return Err(
                    "`previous_response_id` is not supported: this gateway stores no \
                     responses; send the whole conversation in `input`"
                        .into(),
                );
            }
            "previous_response_id" => {}
            "reasoning" => {
                if let Some(effort) = value.get("effort").filter(|e| !e.is_null()) {
                    chat["reasoning_effort"] = effort.clone();
                }
            }
            "text" => text_format(value, &mut chat)?,
            name if IGNORED.contains(&name) => {}
            name => return Err(chat::unsupported_field(name, "Responses")),
        }
    }
    tools(&request, &mut chat)?;
    Ok(chat)
}

/// `text.format`: plain text, or JSON output (`json_object` / `json_schema`).
fn text_format(text: &Value, chat: &mut Value) -> Result<(), String> {
    let format = &text["format"];
    match format["type"].as_str() {
        None | Some("text") => {}
        Some("json_object") => chat["response_format"] = json!({"type": "json_object"}),
        Some("json_schema") => {
            let mut schema = json!({"name": format["name"], "schema": format["schema"]});
            if let Some(strict) = format.get("strict") {
                schema["strict"] = strict.clone();
            }
            chat["response_format"] = json!({"type": "json_schema", "json_schema": schema});
        }
        Some(other) => return Err(format!("text.format.type {other:?} is not supported")),
    }
    Ok(())
}

/// One input item. Consecutive function calls become one assistant message's tool calls.
fn translate_item(item: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), String> {
    let at = format!("input[{i}]");
    match item["type"].as_str() {
        Some("function_call") => {
            let arguments = item["arguments"].as_str().unwrap_or("{}");
            let call = json!({"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": arguments}});
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                    if let Some(calls) = last["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => out.push(chat::assistant(String::new(), vec![call])),
            }
        }
        Some("function_call_output") => {
            let id = item["call_id"]
                .as_str()
                .ok_or_else(|| format!("{at}.call_id is required"))?;
            let output = match &item["output"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.push(chat::tool_result(id, output, false));
        }
        // Earlier reasoning is the model's own; it is not sent back.
        Some("reasoning") => {}
        None | Some("message") => out.push(message(item, &at)?),
        Some(other) => {
            return Err(format!(
                "{at}: items of type {other:?} are not supported; send messages, function_call \
                 and function_call_output items"
            ));
        }
    }
    Ok(())
}

fn message(item: &Value, at: &str) -> Result<Value, String> {
    let role = item["role"].as_str().unwrap_or_default();
    if !["user", "system", "developer", "assistant"].contains(&role) {
        return Err(format!(
            "{at}.role must be user, system, developer or assistant"
        ));
    }
    let content = match &item["content"] {
        Value::String(text) => json!(text),
        Value::Array(parts) if role == "assistant" => json!(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>()
        ),
        Value::Array(parts) => {
            let parts = parts
                .iter()
                .enumerate()
                .map(|(j, part)| content_part(part, &format!("{at}.content[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array(parts)
        }
        _ => return Err(format!("{at}.content must be a string or a list of parts")),
    };
    Ok(json!({"role": role, "content": content}))
}

fn content_part(part: &Value, at: &str) -> Result<Value, String> {
    match part["type"].as_str() {
        Some("input_text" | "output_text") => Ok(json!({"type": "text", "text": part["text"]})),
        Some("input_image") => {
            let url = part["image_url"].as_str().ok_or_else(|| {
                format!("{at}.image_url is required (file ids are not supported)")
            })?;
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail") {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        _ => Err(format!("{at}: parts are input_text or input_image")),
    }
}

fn tools(request: &Map<String, Value>, chat: &mut Value) -> Result<(), String> {
    let mut tools = Vec::new();
    for (i, tool) in chat::declared_tools(request) {
        if tool["type"] != "function" {
            return Err(format!(
                "tools[{i}]: only function tools are supported (OpenAI's hosted tools are not)"
            ));
        }
        let name = tool["name"]
            .as_str()
            .ok_or_else(|| format!("tools[{i}].name is required"))?;
        let mut declared =
            chat::function_tool(name, tool.get("description"), tool.get("parameters"));
        if let Some(strict) = tool.get("strict").filter(|s| !s.is_null()) {
            declared["function"]["strict"] = strict.clone();
        }
        tools.push(declared);
    }
    if !tools.is_empty() {
        chat["tools"] = Value::Array(tools);
    }
    if let Some(choice) = request.get("tool_choice") {
        chat["tool_choice"] = match choice {
            Value::String(kind) => chat::tool_choice(kind, None),
            choice if choice["type"] == "function" => chat::tool_choice("tool", choice.get("name")),
            _ => None,
        }
        .ok_or("tool_choice must be auto, required, none or a function")?;
    }
    Ok(())
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input(),
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input() + usage.output,
    })
}

fn text_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.name,
        "arguments": call.arguments, "status": status})
}

/// A `response` object; `usage` is null until it is known.
fn response(
    id: &str,
    created_at: u64,
    model: &str,
    output: Vec<Value>,
    finish: Option<Finish>,
    counts: Option<&Usage>,
) -> Value {
    let (status, incomplete) = match finish {
        None => ("in_progress", Value::Null),
        Some(Finish::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(Finish::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        Some(_) => ("completed", Value::Null),
    };
    json!({
        "id": id, "object": "response", "created_at": created_at, "status": status,
        "model": model, "output": output, "incomplete_details": incomplete, "error": null,
        "usage": counts.map(usage), "instructions": null, "metadata": {},
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "temperature": null, "top_p": null, "text": {"format": {"type": "text"}},
    })
}

/// The `response` for a complete answer.
pub fn answer(reply: &Reply, model: &str) -> Value {
    let output = reply.output(
        |text| text_item(&new_id("msg"), text, "completed"),
        |call| call_item(&new_id("fc"), call, "completed"),
    );
    response(
        &new_id("resp"),
        unix_seconds(),
        model,
        output,
        Some(reply.finish),
        Some(&reply.usage),
    )
}

/// The output item being streamed.
enum Open {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        index: u64,
        call: ToolCall,
    },
}

/// Turns the deltas of a chat stream into Responses stream events (`(event type, data)`).
pub struct StreamWriter {
    id: String,
    created_at: u64,
    model: String,
    sequence: u64,
    open: Option<Open>,
    /// Output items done so far, for the final `response`.
    output: Vec<Value>,
    /// The finish, held until the usage that `response.completed` carries with it.
    finishing: Option<Finish>,
    ended: bool,
}

impl StreamWriter {
    pub fn new(model: &str) -> StreamWriter {
        StreamWriter {
            id: new_id("resp"),
            created_at: unix_seconds(),
            model: model.to_owned(),
            sequence: 0,
            open: None,
            output: Vec::new(),
            finishing: None,
            ended: false,
        }
    }

    fn push(&mut self, kind: &'static str, mut event: Value, out: &mut Vec<(&'static str, Value)>) {
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.push((kind, event));
    }

    fn complete(&mut self, counts: Option<&Usage>, out: &mut Vec<(&'static str, Value)>) {
        let Some(finish) = self.finishing.take() else {
            return;
        };
        self.ended = true;
        let output = std::mem::take(&mut self.output);
        let done = response(
            &self.id,
            self.created_at,
            &self.model,
            output,
            Some(finish),
            counts,
        );
        let kind = if done["status"] == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.push(kind, json!({"response": done}), out);
    }

    /// `response.output_item.added` for the item that starts at output `index`.
    fn item_added(&mut self, index: usize, item: &Value, out: &mut Vec<(&'static str, Value)>) {
        let event = json!({"output_index": index, "item": item});
        self.push("response.output_item.added", event, out);
    }

    /// `response.output_item.done` for the item at output `index`, which joins the output.
    fn item_done(&mut self, index: usize, item: Value, out: &mut Vec<(&'static str, Value)>) {
        let event = json!({"output_index": index, "item": item});
        self.push("response.output_item.done", event, out);
        self.output.push(item);
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        let index = self.output.len();
        match self.open.take() {
            None => {}
            Some(Open::Text { id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.push(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.push(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": part}),
                    out,
                );
                self.item_done(index, text_item(&id, &text, "completed"), out);
            }
            Some(Open::Call { id, call, .. }) => {
                self.push(
                    "response.function_call_arguments.done",
                    json!({"item_id": id,
                    "output_index": index, "name": call.name, "arguments": call.arguments}),
                    out,
                );
                self.item_done(index, call_item(&id, &call, "completed"), out);
            }
        }
    }
}

impl EventWriter for StreamWriter {
    type Event = (&'static str, Value);

    /// The events for one delta.
    fn write(&mut self, delta: Delta, out: &mut Vec<Self::Event>) {
        match delta {
            Delta::Start { .. } => {
                let started = response(&self.id, self.created_at, &self.model, vec![], None, None);
                self.push("response.created", json!({"response": started}), out);
                self.push("response.in_progress", json!({"response": started}), out);
            }
            Delta::Text(text) => {
                if !matches!(self.open, Some(Open::Text { .. })) {
                    self.close(out);
                    let id = new_id("msg");
                    let mut item = text_item(&id, "", "in_progress");
                    item["content"] = json!([]);
                    let index = self.output.len();
                    self.item_added(index, &item, out);
                    self.push("response.content_part.added", json!({"item_id": id, "output_index": index,
                        "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}), out);
                    self.open = Some(Open::Text {
                        id,
                        text: String::new(),
                    });
                }
                let index = self.output.len();
                if let Some(Open::Text { id, text: all }) = &mut self.open {
                    all.push_str(&text);
                    let event = json!({"item_id": id, "output_index": index, "content_index": 0,
                        "delta": text, "logprobs": []});
                    self.push("response.output_text.delta", event, out);
                }
            }
            Delta::ToolStart { index, id, name } => {
                self.close(out);
                let call = ToolCall {
                    id,
                    name,
                    arguments: String::new(),
                };
                let item_id = new_id("fc");
                let item = call_item(&item_id, &call, "in_progress");
                self.item_added(self.output.len(), &item, out);
                self.open = Some(Open::Call {
                    id: item_id,
                    index,
                    call,
                });
            }
            Delta::ToolArguments { index, fragment } => {
                let at = self.output.len();
                if let Some(Open::Call {
                    id,
                    index: open,
                    call,
                }) = &mut self.open
                    && *open == index
                {
                    call.arguments.push_str(&fragment);
                    let event = json!({"item_id": id, "output_index": at, "delta": fragment});
                    self.push("response.function_call_arguments.delta", event, out);
                }
            }
            Delta::Finish(finish) => {
                self.close(out);
                self.finishing = Some(finish);
            }
            Delta::Usage(counts) => self.complete(Some(&counts), out),
            Delta::Error { message, code } => {
                self.ended = true;
                self.push(
                    "error",
                    json!({"code": code, "message": message, "param": null}),
                    out,
                );
            }
        }
    }

    /// What ends the stream: a stream cut before it finished ends with an error event.
    fn finish(&mut self, out: &mut Vec<Self::Event>) {
        if self.ended {
            return;
        }
        if self.finishing.is_some() {
            self.complete(None, out);
        } else {
            self.ended = true;
            let event = json!({"code": "upstream_error", "param": null,
                "message": "the model's stream ended before it finished"});
            self.push("error", event, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surfaces::reply::{assert_refused, text_then_tool_call, usage_delta};

    #[test]
    fn a_responses_request_with_a_function_call_round_trip_becomes_a_chat_request() {
        let body = json!({
            "model": "m", "instructions": "Be brief.", "max_output_tokens": 40, "store": false,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": "required",
        });
        let chat = chat_request(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            chat["messages"][1]["content"][0],
            json!({"type": "text", "text": "Weather?"})
        );
        assert_eq!(
            chat["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
        );
        assert_eq!(chat["max_completion_tokens"], 40);
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["tools"][0]["function"]["name"], "w");
    }

    #[test]
    fn previous_response_id_and_hosted_tools_are_refused_by_name() {
        for (extra, expected) in [
            (
                json!({"previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"tools": [{"type": "web_search"}]}), "function tools"),
        ] {
            let mut body = json!({"model": "m", "input": "hi"});
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            assert_refused(chat_request(body.to_string().as_bytes()), expected);
        }
    }

    #[test]
    fn a_stream_completes_with_every_item_and_the_usage() {
        let mut writer = StreamWriter::new("m");
        let mut out = Vec::new();
        for delta in text_then_tool_call("call_1", &["{}"])
            .into_iter()
            .chain([usage_delta(4, 2)])
        {
            writer.write(delta, &mut out);
        }
        writer.finish(&mut out);
        let (kind, last) = out.last().cloned().unwrap_or(("", Value::Null));
        assert_eq!(kind, "response.completed");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(last["response"]["output"][1]["call_id"], "call_1");
        assert_eq!(last["response"]["usage"]["total_tokens"], 6);
        let sequence: Vec<u64> = out
            .iter()
            .filter_map(|(_, e)| e["sequence_number"].as_u64())
            .collect();
        assert_eq!(sequence, (0..out.len() as u64).collect::<Vec<_>>());
    }
}
