//! Field checks shared by the commands, each failing with a message a person can act on.

use crate::error::CommandError;

const MAX_NAME: usize = 256;
const MAX_ID: usize = 128;

/// A required display name: trimmed, non-empty, at most 256 characters.
pub(crate) fn name(field: &str, value: &str) -> Result<String, CommandError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CommandError::invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > MAX_NAME {
        return Err(CommandError::invalid(format!(
            "{field} is longer than {MAX_NAME} characters"
        )));
    }
    Ok(value.to_owned())
}

/// An identifier: 1–128 characters of `A-Z a-z 0-9 _ - . : /`.
pub(crate) fn id(field: &str, value: &str) -> Result<(), CommandError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.:/".contains(c);
    if value.is_empty() || value.len() > MAX_ID || !value.chars().all(ok_char) {
        return Err(CommandError::invalid(format!(
            "{field} {value:?} is not a valid id: use 1-{MAX_ID} characters of letters, digits and _-.:/"
        )));
    }
    Ok(())
}

/// A model name as clients send it: non-empty, no surrounding whitespace.
pub(crate) fn model_name(field: &str, value: &str) -> Result<(), CommandError> {
    if value.trim().is_empty()
        || value.trim() != value
        || value.len() > MAX_NAME
        || value.chars().any(char::is_control)
    {
        return Err(CommandError::invalid(format!(
            "{field} {value:?} is not a valid model name: it must be non-empty, at most {MAX_NAME} bytes, without surrounding spaces or control characters"
        )));
    }
    Ok(())
}

/// A list of model names, each valid, without duplicates (order kept).
pub(crate) fn model_list(field: &str, values: &[String]) -> Result<Vec<String>, CommandError> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        model_name(field, value)?;
        if !out.contains(value) {
            out.push(value.clone());
        }
    }
    Ok(out)
}

/// A non-negative, finite amount of money or price.
pub(crate) fn non_negative(field: &str, value: f64) -> Result<(), CommandError> {
    if !value.is_finite() || value < 0.0 {
        return Err(CommandError::invalid(format!(
            "{field} must be a finite number >= 0, got {value}"
        )));
    }
    Ok(())
}

/// An email address: one `@` with something on each side, no spaces.
pub(crate) fn email(value: &str) -> Result<String, CommandError> {
    let value = value.trim();
    let valid = match value.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.') && !domain.contains('@'),
        None => false,
    };
    if !valid || value.contains(char::is_whitespace) || value.len() > MAX_NAME {
        return Err(CommandError::invalid(format!(
            "email {value:?} is not a valid address (expected name@example.com)"
        )));
    }
    Ok(value.to_owned())
}

/// An upstream base URL: http(s), without embedded credentials.
pub(crate) fn api_base(value: &str) -> Result<(), CommandError> {
    if value.is_empty() {
        return Ok(());
    }
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| {
            CommandError::invalid("api_base must start with http:// or https://".to_owned())
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(CommandError::invalid("api_base has no host".to_owned()));
    }
    if authority.contains('@') {
        // Never let a secret into the log in clear: credentials belong in PutCredential.
        return Err(CommandError::invalid(
            "api_base must not contain user:password@; store secrets with PutCredential".to_owned(),
        ));
    }
    if let Some(why) = crate::egress::forbidden_host(url_host(authority)) {
        return Err(CommandError::invalid(format!(
            "api_base: {why}; Tollgate never calls it"
        )));
    }
    Ok(())
}

/// The host of a URL's `host[:port]` authority (`[v6]` keeps its brackets).
pub(crate) fn url_host(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(host, _)| &authority[..host.len() + 1]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// Whether `host` is an AWS service endpoint (so AWS credentials of the environment may go
/// there).
pub(crate) fn is_aws_endpoint(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    [".amazonaws.com", ".amazonaws.com.cn", ".api.aws"]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// An IANA time zone name such as `UTC` or `Europe/Paris`.
pub(crate) fn timezone(value: &str) -> Result<String, CommandError> {
    let value = if value.is_empty() { "UTC" } else { value };
    value.parse::<chrono_tz::Tz>().map_err(|_| {
        CommandError::invalid(format!(
            "timezone {value:?} is not an IANA time zone name (for example UTC or Europe/Paris)"
        ))
    })?;
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_with_credentials_is_refused() {
        assert!(api_base("https://user:secret@example.com/v1").is_err());
        assert!(api_base("ftp://example.com").is_err());
    }

    #[test]
    fn api_base_never_names_a_metadata_service() {
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.169.254:80",
            "http://[fe80::1]/v1",
            "http://[fd00:ec2::254]:8080",
            "http://metadata.google.internal/computeMetadata/v1",
        ] {
            assert!(api_base(bad).is_err(), "{bad}");
        }
        for good in [
            "http://127.0.0.1:8000/v1",
            "http://[::1]:8000",
            "https://api.openai.com/v1",
            "http://10.0.0.7:11434",
        ] {
            assert!(api_base(good).is_ok(), "{good}");
        }
        assert_eq!(url_host("[::1]:8000"), "[::1]");
        assert_eq!(url_host("example.com:443"), "example.com");
        assert!(is_aws_endpoint("bedrock-runtime.us-east-1.amazonaws.com"));
        assert!(!is_aws_endpoint("amazonaws.com.evil.example"));
        assert!(api_base("https://example.com/v1?x=a@b").is_ok());
        assert!(api_base("http://127.0.0.1:8000").is_ok());
    }

    #[test]
    fn emails_need_a_domain() {
        assert!(email("a@example.com").is_ok());
        assert!(email("a@b").is_err());
        assert!(email("nobody").is_err());
        assert!(email("a b@example.com").is_err());
    }

    #[test]
    fn timezones_are_iana_names() {
        assert_eq!(timezone("").ok().as_deref(), Some("UTC"));
        assert!(timezone("Europe/Paris").is_ok());
        assert!(timezone("Mars/Olympus").is_err());
    }
}
