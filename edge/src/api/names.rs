//! Names a client sends (the model, …) are checked before anything records them: they end up in
//! usage events, metric labels and rollup keys, where a hostile one could poison accounting (a
//! NUL byte that the ledger's database refuses) or invent rows and label values of its choosing.

use crate::error::EdgeError;

/// The longest name a client may send, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Checks a client-sent name: 1 to [`MAX_NAME_BYTES`] bytes, no control characters.
pub fn check(field: &str, value: &str) -> Result<(), EdgeError> {
    let problem = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > MAX_NAME_BYTES {
        format!(
            "must be at most {MAX_NAME_BYTES} bytes, got {}",
            value.len()
        )
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    // The value itself is not echoed: it may be huge, or made to mislead a log reader.
    Err(EdgeError::InvalidRequest(format!("`{field}` {problem}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(check("model", "gpt-4o").is_ok());
        assert!(check("model", "anthropic.claude-3-5-sonnet-20241022-v2:0").is_ok());
        assert!(check("model", "modèle-été").is_ok());
        assert!(check("model", &"m".repeat(MAX_NAME_BYTES)).is_ok());
        for bad in ["", "a\u{0}b", "a\nb", "a\u{7f}b", "a\u{85}b"] {
            assert!(check("model", bad).is_err(), "{bad:?}");
        }
        let long = "m".repeat(MAX_NAME_BYTES + 1);
        let message = check("model", &long)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("at most 256 bytes") && !message.contains("mmmm"),
            "{message}"
        );
    }
}
