//! AWS Signature Version 4, verified: boto3 clients sign with access key id = a virtual key's
//! id and secret access key = its secret, so no secret crosses the wire. The edge recomputes
//! the signature from the key's sealed secret and the request as received (method, path,
//! query, signed headers and the SHA-256 of the body), refuses a date more than
//! [`MAX_SKEW`] from its clock, and refuses a signature it has already accepted (a replay)
//! within that window.

use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The furthest a request's `x-amz-date` may be from the edge's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// Signatures remembered against replays; beyond this the oldest are forgotten first.
const REMEMBERED_SIGNATURES: u64 = 200_000;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    date: String,
    region: String,
    service: String,
    /// Lower-case header names, in the order given (sorted, as signers send them).
    signed_headers: Vec<String>,
    signature: [u8; 32],
}

/// Whether `headers` carry a SigV4 signature (parsed or not).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ALGORITHM))
}

/// Parses `AWS4-HMAC-SHA256 Credential=…/…/…/…/aws4_request, SignedHeaders=…, Signature=…`.
pub fn parse(headers: &HeaderMap) -> Result<Authorization, String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(ALGORITHM))
        .ok_or("not a SigV4 Authorization header")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in value.split(',') {
        let (name, field) = part
            .trim()
            .split_once('=')
            .ok_or("malformed SigV4 Authorization header")?;
        match name {
            "Credential" => credential = Some(field),
            "SignedHeaders" => signed = Some(field),
            "Signature" => signature = Some(field),
            _ => return Err(format!("unknown SigV4 Authorization field {name:?}")),
        }
    }
    let credential = credential.ok_or("the SigV4 Authorization header has no Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err("the SigV4 credential scope is malformed".into());
    };
    let signed_headers: Vec<String> = signed
        .ok_or("the SigV4 Authorization header has no SignedHeaders")?
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    let signature = signature
        .and_then(|s| hex::decode(s).ok())
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or("the SigV4 signature is not 64 hex digits")?;
    Ok(Authorization {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature,
    })
}

/// A request as it arrived, for recomputing its signature.
pub struct Signed<'a> {
    pub method: &'a str,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Checks `auth`'s signature of `request` with `secret`, at `now`. The message says what is
/// wrong without revealing anything a forger could use.
pub fn verify(
    auth: &Authorization,
    request: &Signed<'_>,
    secret: &[u8],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let amz_date = header(request.headers, "x-amz-date").ok_or("x-amz-date is required")?;
    if !auth.signed_headers.iter().any(|h| h == "x-amz-date")
        || !auth.signed_headers.iter().any(|h| h == "host")
    {
        return Err("host and x-amz-date must be signed".into());
    }
    let signed_at = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| "x-amz-date must be YYYYMMDDTHHMMSSZ")?
        .and_utc();
    let skew = (now - signed_at).abs().to_std().unwrap_or(Duration::MAX);
    if skew > MAX_SKEW {
        return Err(format!(
            "Signature expired: {amz_date} is more than {} minutes from the gateway's time",
            MAX_SKEW.as_secs() / 60
        ));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err("the credential scope's date is not the date of x-amz-date".into());
    }
    let payload = hex::encode(Sha256::digest(request.body));
    if let Some(claimed) = header(request.headers, "x-amz-content-sha256")
        && claimed != payload
    {
        return Err("x-amz-content-sha256 is not the SHA-256 of the body".into());
    }
    let canonical = canonical_request(auth, request, &payload)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = [b"AWS4".as_slice(), secret].concat();
    for part in [&auth.date, &auth.region, &auth.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hmac(&key, string_to_sign.as_bytes());
    if bool::from(expected.ct_eq(&auth.signature)) {
        Ok(())
    } else {
        Err(
            "The request signature we calculated does not match the signature you provided: \
             check the secret access key (the virtual key's secret) and the signing method"
                .into(),
        )
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// SigV4's canonical request (for services other than S3: the path is encoded once more).
fn canonical_request(
    auth: &Authorization,
    request: &Signed<'_>,
    payload: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(512);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&encode(request.uri.path(), true));
    out.push('\n');
    out.push_str(&canonical_query(request.uri.query().unwrap_or("")));
    out.push('\n');
    for name in &auth.signed_headers {
        let values: Vec<String> = if name == "host" && !request.headers.contains_key("host") {
            // HTTP/2 carries the host as the URI's authority.
            request
                .uri
                .authority()
                .map(|a| a.to_string())
                .into_iter()
                .collect()
        } else {
            request
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| {
                    v.to_str()
                        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                        .map_err(|_| format!("signed header {name} is not text"))
                })
                .collect::<Result<_, _>>()?
        };
        if values.is_empty() {
            return Err(format!("signed header {name} is missing"));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&auth.signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload);
    Ok(out)
}

/// Query parameters sorted by name then value, each as sent.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// URI-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Signatures accepted in the last [`MAX_SKEW`] × 2 on this edge: a second use is a replay.
pub struct Replays(moka::sync::Cache<[u8; 32], ()>);

impl Default for Replays {
    fn default() -> Self {
        Replays(
            moka::sync::Cache::builder()
                .max_capacity(REMEMBERED_SIGNATURES)
                .time_to_live(MAX_SKEW * 2)
                .build(),
        )
    }
}

impl Replays {
    /// Remembers `auth`'s signature; false when it was already seen.
    pub fn first_use(&self, auth: &Authorization) -> bool {
        let entry = self.0.entry(auth.signature).or_insert(());
        entry.is_fresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The example of AWS's SigV4 documentation ("GET /?Param2=value2&Param1=value1" to
    /// `example.amazonaws.com`, service `service`, secret `wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY`).
    #[test]
    fn the_documented_example_verifies_and_a_changed_byte_does_not() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
        );
        let auth = parse(&headers).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(auth.access_key_id, "AKIDEXAMPLE");
        let uri: Uri = "/?Param2=value2&Param1=value1".parse().unwrap_or_default();
        let request = Signed {
            method: "GET",
            uri: &uri,
            headers: &headers,
            body: b"",
        };
        let secret = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let now = DateTime::parse_from_rfc3339("2015-08-30T12:38:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(verify(&auth, &request, secret, now), Ok(()));
        let tampered = Signed {
            body: b"x",
            ..request
        };
        assert!(verify(&auth, &tampered, secret, now).is_err());
        let late = now + chrono::Duration::minutes(6);
        let request = Signed {
            body: b"",
            ..tampered
        };
        assert!(verify(&auth, &request, secret, late).is_err_and(|e| e.contains("expired")));
        assert!(verify(&auth, &request, b"another secret", now).is_err());
    }

    #[test]
    fn a_signature_is_accepted_once() {
        let replays = Replays::default();
        let auth = Authorization {
            access_key_id: "k".into(),
            date: "20261202".into(),
            region: "us-east-1".into(),
            service: "bedrock".into(),
            signed_headers: vec!["host".into()],
            signature: [7; 32],
        };
        assert!(replays.first_use(&auth));
        assert!(!replays.first_use(&auth));
    }

    #[test]
    fn the_path_is_encoded_again_as_botocore_signs_it() {
        assert_eq!(
            encode("/model/anthropic.claude-3%3A0/converse", true),
            "/model/anthropic.claude-3%253A0/converse"
        );
    }
}
