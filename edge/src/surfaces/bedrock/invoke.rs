//! Bedrock `InvokeModel` bodies: Anthropic Messages (`anthropic_version: bedrock-2023-05-31`),
//! Titan embeddings (`inputText`) and Cohere embeddings (`texts`), and their answers — a
//! streamed Messages answer becomes Bedrock `chunk` events, each holding one Anthropic event.

use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::eventstream;
use crate::surfaces::reply::Usage;
use crate::surfaces::{Present, Translated, anthropic, chat};

/// The pipeline request for an `InvokeModel` body sent to `model`.
pub fn translate(body: &[u8], model: &str, stream: bool) -> Result<Translated, String> {
    let request = chat::request_fields(body)?;
    if request.contains_key("messages") {
        let chat = anthropic::chat_request(body, Some(model), stream)?;
        return Ok(Translated::chat(chat, Present::InvokeMessages));
    }
    let (input, present) = if let Some(text) = request.get("inputText") {
        let text = text
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or("`inputText` must be a non-empty string")?;
        (json!(text), Present::TitanEmbedding)
    } else if let Some(texts) = request.get("texts") {
        let texts = texts
            .as_array()
            .filter(|t| !t.is_empty() && t.iter().all(Value::is_string))
            .ok_or("`texts` must be a non-empty list of strings")?;
        (
            Value::Array(texts.clone()),
            Present::CohereEmbeddings {
                texts: texts.clone(),
            },
        )
    } else {
        return Err("the body is none this gateway translates: send an Anthropic Messages body \
             (anthropic_version bedrock-2023-05-31), Titan's {\"inputText\"} or Cohere's {\"texts\"}"
            .into());
    };
    if stream {
        return Err("embeddings are not streamed: call InvokeModel".into());
    }
    let mut embeddings = json!({"model": model, "input": input});
    if let Some(dimensions) = request.get("dimensions") {
        embeddings["dimensions"] = dimensions.clone();
    }
    Ok(Translated {
        body: Bytes::from(embeddings.to_string()),
        embeddings: true,
        present,
    })
}

/// The Titan or Cohere answer for an OpenAI embeddings list.
pub fn embeddings_answer(present: &Present, answer: &[u8]) -> Option<Value> {
    let answer: Value = serde_json::from_slice(answer).ok()?;
    let vectors: Vec<Value> = answer["data"]
        .as_array()?
        .iter()
        .map(|item| item["embedding"].clone())
        .collect();
    match present {
        Present::TitanEmbedding => Some(json!({
            "embedding": vectors.first()?,
            "inputTextTokenCount": answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        })),
        Present::CohereEmbeddings { texts } => Some(json!({
            "id": uuid::Uuid::now_v7().to_string(),
            "embeddings": vectors,
            "texts": texts,
            "response_type": "embeddings_floats",
        })),
        _ => None,
    }
}

/// Frames Anthropic stream events as Bedrock `chunk` events (`{"bytes": base64 of the event}`);
/// the last one carries Bedrock's invocation metrics, as Bedrock adds them.
pub fn chunks(events: &[(&'static str, Value)], usage: Usage, started: Instant, out: &mut Vec<u8>) {
    for (kind, event) in events {
        if *kind == "error" {
            let message = event["error"]["message"]
                .as_str()
                .unwrap_or("the stream failed");
            out.extend_from_slice(&eventstream::exception(
                "modelStreamErrorException",
                message,
            ));
            continue;
        }
        let mut event = event.clone();
        if *kind == "message_stop" {
            let latency = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
            event["amazon-bedrock-invocationMetrics"] = json!({
                "inputTokenCount": usage.input(),
                "outputTokenCount": usage.output,
                "invocationLatency": latency,
                "firstByteLatency": latency,
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        out.extend_from_slice(&eventstream::event("chunk", &json!({ "bytes": bytes })));
    }
}
