//! Embeddings through InvokeModel: Amazon Titan text embeddings (one call per input, body
//! `{"inputText": …}`) and Cohere embeddings (one call for all inputs, body `{"texts": […]}`),
//! chosen by the upstream model id, answered as OpenAI's embeddings list.

use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_bedrockruntime::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_bedrockruntime::error::BoxError;
use serde_json::{Value, json};

use crate::providers::embedding_request;

/// The header in which Bedrock reports an InvokeModel call's input tokens.
const INPUT_TOKENS_HEADER: &str = "x-amzn-bedrock-input-token-count";

/// Which embedding model family a deployment's model belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `amazon.titan-embed-*`; `v2` takes `dimensions` and `normalize`.
    Titan { v2: bool },
    /// `cohere.embed-*`.
    Cohere,
}

impl Family {
    pub fn of(model: &str) -> Option<Family> {
        if model.starts_with("amazon.titan-embed") {
            Some(Family::Titan {
                v2: !model.starts_with("amazon.titan-embed-text-v1")
                    && !model.starts_with("amazon.titan-embed-g1"),
            })
        } else if model.starts_with("cohere.embed") {
            Some(Family::Cohere)
        } else {
            None
        }
    }
}

/// An OpenAI embeddings request, as far as Bedrock needs it.
#[derive(Debug)]
pub struct Request {
    pub inputs: Vec<String>,
    pub dimensions: Option<u64>,
    pub base64: bool,
}

/// Reads an OpenAI embeddings request.
pub fn parse(openai: &[u8]) -> Result<Request, String> {
    let (request, dimensions) = embedding_request::parse(openai)?;
    let base64 = match request.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => return Err("`encoding_format` must be \"float\" or \"base64\"".into()),
    };
    let only_text = "`input` must be a string or a non-empty array of strings for Bedrock deployments (token arrays are not supported)";
    let inputs = match request.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or(only_text))
            .collect::<Result<_, _>>()?,
        _ => return Err(only_text.into()),
    };
    Ok(Request {
        inputs,
        dimensions,
        base64,
    })
}

/// The InvokeModel body of one Titan input.
pub fn titan_body(text: &str, dimensions: Option<u64>, v2: bool) -> Result<Value, String> {
    let mut body = json!({"inputText": text});
    match dimensions {
        Some(d) if v2 => {
            body["dimensions"] = d.into();
            body["normalize"] = true.into();
        }
        Some(_) => {
            return Err("`dimensions` is supported only by Titan v2 embedding models".into());
        }
        None => {}
    }
    Ok(body)
}

/// The InvokeModel body of a Cohere call for all inputs.
pub fn cohere_body(
    inputs: &[String],
    dimensions: Option<u64>,
    input_type: Option<&str>,
) -> Result<Value, String> {
    if dimensions.is_some() {
        return Err("`dimensions` is not supported by Cohere embedding models on Bedrock".into());
    }
    let input_type = input_type
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("search_document");
    Ok(json!({"texts": inputs, "input_type": input_type}))
}

/// The vector and input token count of a Titan answer.
pub fn titan_answer(answer: &Value) -> Option<(Vec<f64>, u64)> {
    let vector = floats(&answer["embedding"])?;
    Some((vector, answer["inputTextTokenCount"].as_u64().unwrap_or(0)))
}

/// The vectors of a Cohere answer (`embeddings` a list of float lists, or `{"float": […]}`).
pub fn cohere_answer(answer: &Value) -> Option<Vec<Vec<f64>>> {
    let list = match &answer["embeddings"] {
        Value::Object(by_type) => by_type.get("float")?,
        other => other,
    };
    list.as_array()?.iter().map(floats).collect()
}

fn floats(value: &Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(Value::as_f64).collect()
}

/// OpenAI's embeddings list; `base64` encodes each vector as little-endian f32s.
pub fn list(vectors: &[Vec<f64>], model: &str, base64: bool, tokens: u64) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector
                    .iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect();
                Value::String(aws_smithy_types::base64::encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// Captures the input token count header of an InvokeModel response (the SDK's output does
/// not carry it).
#[derive(Clone, Debug, Default)]
pub struct TokenCount(Arc<Mutex<Option<u64>>>);

impl TokenCount {
    pub fn get(&self) -> Option<u64> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Intercept for TokenCount {
    fn name(&self) -> &'static str {
        "TollgateInputTokenCount"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let count = context
            .response()
            .headers()
            .get(INPUT_TOKENS_HEADER)
            .and_then(|v| v.trim().parse().ok());
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_the_model_id() {
        assert_eq!(
            Family::of("amazon.titan-embed-text-v2:0"),
            Some(Family::Titan { v2: true })
        );
        assert_eq!(
            Family::of("amazon.titan-embed-text-v1"),
            Some(Family::Titan { v2: false })
        );
        assert_eq!(Family::of("cohere.embed-english-v3"), Some(Family::Cohere));
        assert_eq!(Family::of("anthropic.claude-test"), None);
    }

    #[test]
    fn requests_translate() {
        let r = parse(br#"{"input": ["a", "b"], "dimensions": 256, "encoding_format": "base64"}"#)
            .unwrap();
        assert_eq!(r.inputs, ["a", "b"]);
        assert!(r.base64);
        assert_eq!(
            titan_body("a", r.dimensions, true).unwrap(),
            json!({"inputText": "a", "dimensions": 256, "normalize": true})
        );
        assert!(titan_body("a", r.dimensions, false).is_err());
        assert_eq!(
            cohere_body(&r.inputs, None, Some("search_query")).unwrap(),
            json!({"texts": ["a", "b"], "input_type": "search_query"})
        );
        assert!(parse(br#"{"input": [1, 2]}"#).is_err());
        assert!(parse(br#"{"input": []}"#).is_err());
    }

    #[test]
    fn lists_encode_base64_little_endian() {
        let list = list(&[vec![1.0, 0.5]], "m", true, 3);
        // 1.0f32 = 00 00 80 3f, 0.5f32 = 00 00 00 3f.
        assert_eq!(list["data"][0]["embedding"], "AACAPwAAAD8=");
        assert_eq!(list["usage"]["prompt_tokens"], 3);
    }
}
