//! The text guardrails read in OpenAI's bodies, and putting masked text back. Bodies are only
//! parsed into a tree (and written again) when a guardrail applies to the request.

use bytes::Bytes;
use serde_json::Value;

use crate::error::EdgeError;

/// Where the text of a body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A chat request: each message's text content (string or text parts).
    ChatRequest,
    /// An embeddings request: its `input` strings.
    EmbeddingsRequest,
    /// A chat answer: each choice's message content.
    ChatAnswer,
}

/// A body with the text guardrails read.
pub struct Texts {
    tree: Value,
    shape: Shape,
    pub texts: Vec<String>,
}

impl Texts {
    /// Reads `body` as `shape`.
    pub fn read(body: &[u8], shape: Shape) -> Result<Texts, EdgeError> {
        let mut tree: Value = serde_json::from_slice(body)
            .map_err(|e| EdgeError::InvalidRequest(format!("the body is not valid JSON: {e}")))?;
        let texts = slots(&mut tree, shape)
            .into_iter()
            .map(|s| s.clone())
            .collect();
        Ok(Texts { tree, shape, texts })
    }

    /// The body with `masked` in place of its texts (same order and number).
    pub fn write(mut self, masked: Vec<String>) -> Bytes {
        for (slot, text) in slots(&mut self.tree, self.shape).into_iter().zip(masked) {
            *slot = text;
        }
        Bytes::from(serde_json::to_vec(&self.tree).unwrap_or_default())
    }
}

fn slots(tree: &mut Value, shape: Shape) -> Vec<&mut String> {
    let mut out = Vec::new();
    match shape {
        Shape::EmbeddingsRequest => match tree.get_mut("input") {
            Some(Value::String(s)) => out.push(s),
            Some(Value::Array(items)) => out.extend(items.iter_mut().filter_map(as_string)),
            _ => {}
        },
        Shape::ChatRequest => {
            let messages = tree.get_mut("messages").and_then(Value::as_array_mut);
            for message in messages.into_iter().flatten() {
                content_slots(message.get_mut("content"), &mut out);
            }
        }
        Shape::ChatAnswer => {
            let choices = tree.get_mut("choices").and_then(Value::as_array_mut);
            for choice in choices.into_iter().flatten() {
                let content = choice.get_mut("message").and_then(|m| m.get_mut("content"));
                content_slots(content, &mut out);
            }
        }
    }
    out
}

fn content_slots<'v>(content: Option<&'v mut Value>, out: &mut Vec<&'v mut String>) {
    match content {
        Some(Value::String(s)) => out.push(s),
        Some(Value::Array(parts)) => {
            for part in parts {
                if part.get("type").and_then(Value::as_str) == Some("text")
                    && let Some(Value::String(s)) = part.get_mut("text")
                {
                    out.push(s);
                }
            }
        }
        _ => {}
    }
}

fn as_string(value: &mut Value) -> Option<&mut String> {
    match value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The text a stream chunk adds to the answer (`choices[0].delta.content`), if any.
pub fn delta_text(data: &[u8]) -> Option<String> {
    let chunk: Value = serde_json::from_slice(data).ok()?;
    chunk
        .get("choices")?
        .get(0)?
        .get("delta")?
        .get("content")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The chunk `data` with its delta content replaced by `text`, as one SSE event.
pub fn with_delta_text(data: &[u8], text: &str) -> Option<Bytes> {
    let mut chunk: Value = serde_json::from_slice(data).ok()?;
    let content = chunk
        .get_mut("choices")?
        .get_mut(0)?
        .get_mut("delta")?
        .get_mut("content")?;
    *content = Value::String(text.to_owned());
    let mut event = b"data: ".to_vec();
    event.extend(serde_json::to_vec(&chunk).ok()?);
    event.extend_from_slice(b"\n\n");
    Some(Bytes::from(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_texts_are_read_and_written_back_in_place() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"mail a@b.co"},
            {"type":"image_url","image_url":{"url":"x"}}]}],"temperature":0.5}"#;
        let texts = Texts::read(body, Shape::ChatRequest).unwrap();
        assert_eq!(texts.texts, ["be brief", "mail a@b.co"]);
        let written = texts.write(vec!["be brief".into(), "mail [EMAIL]".into()]);
        let tree: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(tree["messages"][1]["content"][0]["text"], "mail [EMAIL]");
        assert_eq!(tree["messages"][1]["content"][1]["image_url"]["url"], "x");
        assert_eq!(tree["temperature"], 0.5);
    }

    #[test]
    fn embeddings_and_answers_have_their_texts() {
        let texts = Texts::read(
            br#"{"model":"e","input":["one","two"]}"#,
            Shape::EmbeddingsRequest,
        );
        assert_eq!(texts.unwrap().texts, ["one", "two"]);
        let answer = br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#;
        assert_eq!(
            Texts::read(answer, Shape::ChatAnswer).unwrap().texts,
            ["hi"]
        );
    }

    #[test]
    fn stream_deltas_are_read_and_replaced() {
        let data = br#"{"choices":[{"index":0,"delta":{"content":"a@b.co"}}]}"#;
        assert_eq!(delta_text(data).as_deref(), Some("a@b.co"));
        let event = with_delta_text(data, "[EMAIL]").unwrap();
        assert!(event.starts_with(b"data: {"));
        assert!(String::from_utf8_lossy(&event).contains(r#""content":"[EMAIL]""#));
        assert_eq!(delta_text(br#"{"choices":[{"delta":{}}]}"#), None);
    }
}
