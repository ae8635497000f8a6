//! What a surface reads of the pipeline's answers: an OpenAI chat completion, or the chunks of
//! an OpenAI chat stream, reduced to text, tool calls, a finish reason and usage. Each surface
//! renders these in its own wire format.

use serde_json::Value;

/// Token counts as the pipeline's answers carry them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens neither read from nor written to the provider's prompt cache.
    pub uncached_input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
}

impl Usage {
    /// Reads OpenAI's `usage`, where prompt tokens include cached and cache-written ones.
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        let count = |v: &Value| v.as_u64().unwrap_or(0);
        let prompt = usage.get("prompt_tokens").map(count)?;
        let details = &usage["prompt_tokens_details"];
        let cache_read = count(&details["cached_tokens"]);
        let cache_write = count(&details["cache_write_tokens"]);
        Some(Usage {
            uncached_input: prompt.saturating_sub(cache_read + cache_write),
            cache_read,
            cache_write,
            output: count(&usage["completion_tokens"]),
        })
    }

    /// All input tokens, cached ones included.
    pub fn input(&self) -> u64 {
        self.uncached_input + self.cache_read + self.cache_write
    }
}

/// Why the model stopped, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl Finish {
    fn from_openai(reason: &str) -> Finish {
        match reason {
            "length" => Finish::Length,
            "tool_calls" | "function_call" => Finish::ToolCalls,
            "content_filter" => Finish::ContentFilter,
            _ => Finish::Stop,
        }
    }
}

/// A tool call of a complete answer; `arguments` is the JSON text the model wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as a JSON value (an object when the model wrote something unreadable, so
    /// that surfaces which carry them as objects always can).
    pub fn input(&self) -> Value {
        parse_arguments(&self.arguments)
    }
}

/// Tool-call arguments as JSON; empty or unreadable text becomes `{}`.
pub fn parse_arguments(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()))
}

/// A complete answer (its first choice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: String,
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: Finish,
    pub usage: Usage,
}

impl Reply {
    /// Reads an OpenAI chat completion; `None` if it is not one.
    pub fn from_openai(answer: &[u8]) -> Option<Reply> {
        let answer: Value = serde_json::from_slice(answer).ok()?;
        let choice = answer.get("choices")?.as_array()?.first()?;
        let message = choice.get("message")?;
        let text = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => String::new(),
        };
        let tool_calls = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .map(|call| ToolCall {
                        id: str_of(&call["id"]),
                        name: str_of(&call["function"]["name"]),
                        arguments: str_of(&call["function"]["arguments"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Reply {
            id: str_of(&answer["id"]),
            model: str_of(&answer["model"]),
            text,
            tool_calls,
            finish: Finish::from_openai(choice["finish_reason"].as_str().unwrap_or("stop")),
            usage: Usage::from_openai(&answer["usage"]).unwrap_or_default(),
        })
    }
}

impl Reply {
    /// The answer's output in a surface's shape: its text unless empty, then each tool call.
    pub fn output(
        &self,
        text: impl FnOnce(&str) -> Value,
        call: impl FnMut(&ToolCall) -> Value,
    ) -> Vec<Value> {
        let mut output = Vec::with_capacity(self.tool_calls.len() + 1);
        if !self.text.is_empty() {
            output.push(text(&self.text));
        }
        output.extend(self.tool_calls.iter().map(call));
        output
    }
}

fn str_of(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// One thing a chat stream said, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// The answer's id and model, from its first chunk.
    Start {
        id: String,
        model: String,
    },
    Text(String),
    /// A tool call begins (OpenAI's `index` numbers the calls of the answer).
    ToolStart {
        index: u64,
        id: String,
        name: String,
    },
    /// More of a tool call's arguments.
    ToolArguments {
        index: u64,
        fragment: String,
    },
    Finish(Finish),
    Usage(Usage),
    /// The stream failed after it began; `code` is the contract's error code.
    Error {
        message: String,
        code: String,
    },
}

/// Reads a chat stream's event data into [`Delta`]s, one chunk at a time.
#[derive(Default)]
pub struct StreamReader {
    started: bool,
}

impl StreamReader {
    /// The deltas of one event's data (`[DONE]` and unreadable data give none).
    pub fn read(&mut self, data: &[u8]) -> Vec<Delta> {
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(error) = chunk.get("error") {
            out.push(Delta::Error {
                message: str_of(&error["message"]),
                code: error["code"]
                    .as_str()
                    .unwrap_or("upstream_error")
                    .to_owned(),
            });
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(Delta::Start {
                id: str_of(&chunk["id"]),
                model: str_of(&chunk["model"]),
            });
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        if let Some(choice) = choice {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                out.push(Delta::Text(text.to_owned()));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap_or(0);
                if let Some(id) = call["id"].as_str() {
                    out.push(Delta::ToolStart {
                        index,
                        id: id.to_owned(),
                        name: str_of(&call["function"]["name"]),
                    });
                }
                if let Some(fragment) = call["function"]["arguments"]
                    .as_str()
                    .filter(|f| !f.is_empty())
                {
                    out.push(Delta::ToolArguments {
                        index,
                        fragment: fragment.to_owned(),
                    });
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                out.push(Delta::Finish(Finish::from_openai(reason)));
            }
        }
        if let Some(usage) = chunk.get("usage").and_then(Usage::from_openai) {
            out.push(Delta::Usage(usage));
        }
        out
    }
}

/// A stream's deltas for the surfaces' tests: a start, the text "Hi", then one tool call
/// (`tool_id`, function `f`) whose arguments come in `arguments` pieces, and a tool-call finish.
#[cfg(test)]
pub(crate) fn text_then_tool_call(tool_id: &str, arguments: &[&str]) -> Vec<Delta> {
    let mut deltas = vec![
        Delta::Start {
            id: "c".into(),
            model: "x".into(),
        },
        Delta::Text("Hi".into()),
        Delta::ToolStart {
            index: 0,
            id: tool_id.into(),
            name: "f".into(),
        },
    ];
    deltas.extend(arguments.iter().map(|fragment| Delta::ToolArguments {
        index: 0,
        fragment: (*fragment).into(),
    }));
    deltas.push(Delta::Finish(Finish::ToolCalls));
    deltas
}

/// A usage delta of `uncached_input` and `output` tokens, for the surfaces' tests.
#[cfg(test)]
pub(crate) fn usage_delta(uncached_input: u64, output: u64) -> Delta {
    Delta::Usage(Usage {
        uncached_input,
        output,
        ..Usage::default()
    })
}

/// Asserts that a surface refused to translate a request, with a message naming `expected`.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_refused(translated: Result<Value, String>, expected: &str) {
    let error = translated.err();
    assert!(
        error.as_deref().is_some_and(|e| e.contains(expected)),
        "{error:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_complete_answer_with_a_tool_call_and_cached_tokens_is_read() {
        let answer = json!({
            "id": "c1", "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look.",
                "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 2}}
        });
        let reply = Reply::from_openai(answer.to_string().as_bytes());
        let reply = reply.unwrap_or_else(|| panic!("not read"));
        assert_eq!(reply.text, "Let me look.");
        assert_eq!(reply.finish, Finish::ToolCalls);
        assert_eq!(reply.tool_calls[0].input(), json!({"city": "Paris"}));
        assert_eq!(
            reply.usage,
            Usage {
                uncached_input: 10,
                cache_read: 8,
                cache_write: 2,
                output: 5
            }
        );
    }

    #[test]
    fn stream_chunks_become_deltas_in_order() {
        let mut reader = StreamReader::default();
        let first = json!({"id": "c", "model": "m", "choices": [{"index": 0,
            "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]});
        assert_eq!(
            reader.read(first.to_string().as_bytes()),
            vec![
                Delta::Start {
                    id: "c".into(),
                    model: "m".into()
                },
                Delta::Text("Hi".into())
            ]
        );
        let call = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
            "id": "t", "function": {"name": "f", "arguments": "{\"a\""}}]}}]});
        assert_eq!(
            reader.read(call.to_string().as_bytes()),
            vec![
                Delta::ToolStart {
                    index: 0,
                    id: "t".into(),
                    name: "f".into()
                },
                Delta::ToolArguments {
                    index: 0,
                    fragment: "{\"a\"".into()
                }
            ]
        );
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        assert_eq!(
            reader.read(usage.to_string().as_bytes()),
            vec![usage_delta(3, 1)]
        );
        assert!(reader.read(b"[DONE]").is_empty());
        let error = json!({"error": {"message": "cut", "code": "upstream_error"}});
        assert_eq!(
            reader.read(error.to_string().as_bytes()),
            vec![Delta::Error {
                message: "cut".into(),
                code: "upstream_error".into()
            }]
        );
    }
}
