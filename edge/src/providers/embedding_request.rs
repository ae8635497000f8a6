//! What the translating providers (Bedrock, Gemini) read alike from an OpenAI embeddings
//! request: the body as a JSON object and its `dimensions`.

use serde_json::{Map, Value};

/// The request `openai` as a JSON object, and its `dimensions` when given (a positive integer:
/// no provider can make an embedding of no dimensions, so 0 is the client's mistake).
pub(super) fn parse(openai: &[u8]) -> Result<(Map<String, Value>, Option<u64>), String> {
    let request: Map<String, Value> =
        serde_json::from_slice(openai).map_err(|e| format!("invalid embeddings request: {e}"))?;
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) => Some(
            d.as_u64()
                .filter(|d| *d > 0)
                .ok_or("`dimensions` must be a positive integer")?,
        ),
    };
    Ok((request, dimensions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_a_positive_integer_when_given() {
        let dimensions = |body: &str| parse(body.as_bytes()).map(|(_, d)| d);
        assert_eq!(dimensions(r#"{"input": "a"}"#), Ok(None));
        assert_eq!(
            dimensions(r#"{"input": "a", "dimensions": null}"#),
            Ok(None)
        );
        assert_eq!(
            dimensions(r#"{"input": "a", "dimensions": 256}"#),
            Ok(Some(256))
        );
        for wrong in ["0", "-3", "2.5", "\"256\""] {
            let body = format!(r#"{{"input": "a", "dimensions": {wrong}}}"#);
            assert_eq!(
                dimensions(&body),
                Err("`dimensions` must be a positive integer".to_owned()),
                "{wrong}"
            );
        }
        assert!(dimensions("[1]").is_err());
    }
}
