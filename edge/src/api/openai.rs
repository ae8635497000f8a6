//! OpenAI wire format: the few request fields the edge reads (the rest is forwarded untouched),
//! usage in responses, and server-sent-event framing.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::codec::sse::event_data;
use crate::error::EdgeError;
use crate::pricing::Tokens;

/// What the edge reads of a chat completion request.
#[derive(Deserialize)]
pub struct ChatRequest<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    /// Only whether tools are declared matters (for traffic rules).
    pub tools: Option<IgnoredAny>,
}

/// What the edge reads of a message: only its role (content passes through unread).
#[derive(Deserialize)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
}

/// What the edge reads of `stream_options`: whether the client asked for usage.
#[derive(Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// What the edge reads of an embeddings request.
#[derive(Deserialize)]
pub struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    pub input: serde_json::Value,
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Parses and checks a chat request, with messages a client can act on.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest<'_>, EdgeError> {
    let request: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| EdgeError::InvalidRequest(format!("invalid chat completion request: {e}")))?;
    super::names::check("model", &request.model)?;
    if request.messages.is_empty() {
        return Err(EdgeError::InvalidRequest(
            "`messages` must hold at least one message".into(),
        ));
    }
    if let Some((i, m)) = request
        .messages
        .iter()
        .enumerate()
        .find(|(_, m)| !ROLES.contains(&m.role.as_ref()))
    {
        return Err(EdgeError::InvalidRequest(format!(
            "messages[{i}].role {:?} is not one of {}",
            m.role,
            ROLES.join(", ")
        )));
    }
    Ok(request)
}

/// Parses and checks an embeddings request.
pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest<'_>, EdgeError> {
    let request: EmbeddingsRequest = serde_json::from_slice(body)
        .map_err(|e| EdgeError::InvalidRequest(format!("invalid embeddings request: {e}")))?;
    let valid_input = match &request.input {
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(items) => !items.is_empty(),
        _ => false,
    };
    super::names::check("model", &request.model)?;
    if !valid_input {
        return Err(EdgeError::InvalidRequest(
            "a non-empty `input` (string, array of strings or of token arrays) is required".into(),
        ));
    }
    Ok(request)
}

/// Where a request's model name stands in its body, quotes included, when `model` is the text
/// the parser borrowed from there (a name written with escapes is decoded into a copy, which
/// lies elsewhere and has no such place): what lets [`upstream_body`] rename the model without
/// parsing the body again.
pub fn model_span(body: &[u8], model: &str) -> Option<Range<usize>> {
    let start = (model.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(model.len())?;
    let quoted = start.checked_sub(1)?..end + 1;
    (body.get(quoted.start) == Some(&b'"') && body.get(end) == Some(&b'"')).then_some(quoted)
}

/// The body to send upstream: the client's bytes untouched unless the model name differs or
/// usage must be requested from a stream, in which case only those fields change.
/// `model_at` is where the client's model name stands in `body` ([`model_span`]), if known.
pub fn upstream_body(
    body: &Bytes,
    model_at: Option<Range<usize>>,
    client_model: &str,
    upstream_model: &str,
    request_stream_usage: bool,
) -> Result<Bytes, EdgeError> {
    let renamed = client_model != upstream_model;
    if !renamed && !request_stream_usage {
        return Ok(body.clone());
    }
    // The quoted name must still stand there: a body rewritten since it was parsed goes the
    // long way.
    let still_there = |at: &Range<usize>| {
        body.get(at.clone())
            .and_then(|quoted| quoted.strip_prefix(b"\"")?.strip_suffix(b"\""))
            == Some(client_model.as_bytes())
    };
    // `Some(None)`: nothing to rename; `None`: the name's place is unknown.
    let rename_at = if renamed {
        model_at.filter(still_there).map(Some)
    } else {
        Some(None)
    };
    if let Some(spliced) =
        rename_at.and_then(|at| spliced(body, at, upstream_model, request_stream_usage))
    {
        return Ok(spliced);
    }
    let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| EdgeError::InvalidRequest(format!("invalid request body: {e}")))?;
    value.insert("model".into(), upstream_model.into());
    if request_stream_usage {
        let options = value
            .entry("stream_options")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), true.into());
        }
    }
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| EdgeError::InvalidRequest(e.to_string()))
}

/// [`upstream_body`]'s changes made by copying the client's bytes around them, rather than
/// parsing the body into a tree and writing it out again (which costs the body twice over):
/// the quoted model name at `model_at`, if given, becomes `upstream_model`, and usage is asked
/// for by a `stream_options` put first. `None` when the body already has `stream_options` to
/// merge with, and the long way must be taken.
fn spliced(
    body: &Bytes,
    model_at: Option<Range<usize>>,
    upstream_model: &str,
    request_stream_usage: bool,
) -> Option<Bytes> {
    if request_stream_usage && memchr::memmem::find(body, b"\"stream_options\"").is_some() {
        return None;
    }
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{'
        || model_at
            .as_ref()
            .is_some_and(|at| at.start <= open || at.end > body.len())
    {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + upstream_model.len() + 48);
    out.extend_from_slice(&body[..=open]);
    if request_stream_usage {
        // Never an empty object: it named a model and held messages.
        out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
    }
    match model_at {
        Some(quoted) => {
            out.extend_from_slice(&body[open + 1..quoted.start]);
            out.extend_from_slice(serde_json::to_string(upstream_model).ok()?.as_bytes());
            out.extend_from_slice(&body[quoted.end..]);
        }
        None => out.extend_from_slice(&body[open + 1..]),
    }
    Some(Bytes::from(out))
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
    /// Tollgate's addition for providers that charge cache writes apart (Anthropic, Bedrock).
    #[serde(default)]
    cache_write_tokens: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Usage>,
    choices: Option<Vec<IgnoredAny>>,
}

impl From<Usage> for Tokens {
    fn from(u: Usage) -> Tokens {
        Tokens {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached_input: u
                .prompt_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens),
            cache_write: u.prompt_tokens_details.map_or(0, |d| d.cache_write_tokens),
        }
    }
}

/// The usage of a complete (non-streamed) response.
pub fn response_usage(body: &[u8]) -> Option<Tokens> {
    serde_json::from_slice::<WithUsage>(body)
        .ok()?
        .usage
        .map(Tokens::from)
}

/// One server-sent event of a chat stream, as the edge sees it.
pub enum StreamEvent {
    /// `data: [DONE]`.
    Done,
    /// A chunk; `usage_only` when it carries usage and no choices (the chunk
    /// `stream_options.include_usage` adds at the end); `has_usage_field` when it has a
    /// `usage` member at all (OpenAI adds `"usage": null` to every chunk once usage is asked).
    Chunk {
        usage: Option<Tokens>,
        usage_only: bool,
        has_usage_field: bool,
    },
    /// Comments, keep-alives and anything else.
    Other,
}

/// Classifies one complete event.
pub fn classify(event: &[u8]) -> StreamEvent {
    let Some(data) = event_data(event) else {
        return StreamEvent::Other;
    };
    if data.trim_ascii() == b"[DONE]" {
        return StreamEvent::Done;
    }
    // Only chunks that mention usage are parsed: the content chunks pass unread.
    if !contains(&data, b"\"usage\"") {
        return StreamEvent::Chunk {
            usage: None,
            usage_only: false,
            has_usage_field: false,
        };
    }
    match serde_json::from_slice::<WithUsage>(&data) {
        Ok(chunk) => StreamEvent::Chunk {
            usage_only: chunk.usage.is_some() && chunk.choices.is_none_or(|c| c.is_empty()),
            usage: chunk.usage.map(Tokens::from),
            has_usage_field: true,
        },
        Err(_) => StreamEvent::Other,
    }
}

/// The event without its chunk's `usage` member, for a client that did not ask for usage.
pub fn without_usage(event: &[u8]) -> Option<Bytes> {
    let data = event_data(event)?;
    if let Some(spliced) = without_null_usage(&data) {
        return Some(spliced);
    }
    let mut chunk: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&data).ok()?;
    chunk.remove("usage")?;
    let json = serde_json::to_string(&chunk).ok()?;
    Some(Bytes::from(format!("data: {json}\n\n")))
}

/// The common case of [`without_usage`] without parsing: OpenAI-compatible servers put
/// `"usage":null` on every chunk of a stream that asked for usage, and cutting those bytes out
/// of the top-level object costs a scan instead of a parse and a re-serialisation per chunk.
fn without_null_usage(data: &[u8]) -> Option<Bytes> {
    const MEMBER: &[u8] = b"\"usage\":null";
    let start = top_level_key(data, MEMBER)?;
    let end = start + MEMBER.len();
    // Take the member out with one of its commas: the one before it, else the one after.
    let (cut_from, cut_to) = if data[..start].trim_ascii_end().ends_with(b",") {
        (data[..start].trim_ascii_end().len() - 1, end)
    } else if data[end..].trim_ascii_start().starts_with(b",") {
        let after = data.len() - data[end..].trim_ascii_start().len();
        (start, after + 1)
    } else {
        return None;
    };
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&data[..cut_from]);
    out.extend_from_slice(&data[cut_to..]);
    out.extend_from_slice(b"\n\n");
    Some(Bytes::from(out))
}

/// Where `member` (a key with its value, as bytes) starts in the top-level object of `json`,
/// outside every string and nested value.
fn top_level_key(json: &[u8], member: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' if depth == 1 && json[i..].starts_with(member) => return Some(i),
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The event with `"usage": null` added to its chunk (a one-line JSON object), without
/// re-parsing it: the member is spliced in before the closing brace.
pub fn with_null_usage(event: &[u8]) -> Option<Bytes> {
    let data = event_data(event)?;
    let body = data.trim_ascii_end();
    let open = body.strip_suffix(b"}")?;
    if !body.starts_with(b"{") || open.trim_ascii_end().ends_with(b"{") {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(open);
    out.extend_from_slice(b",\"usage\":null}\n\n");
    Some(Bytes::from(out))
}

/// Bytes of generated text in a chunk event: its `"content"` and tool-call `"arguments"`
/// strings (escapes counted as written). Scanned, not parsed: it is read for every chunk.
pub fn generated_text_bytes(event: &[u8]) -> usize {
    let mut total = 0;
    for key in [&b"\"content\":\""[..], &b"\"arguments\":\""[..]] {
        let mut rest = event;
        while let Some(at) = rest.windows(key.len()).position(|w| w == key) {
            rest = &rest[at + key.len()..];
            let mut escaped = false;
            let end = rest
                .iter()
                .position(|&b| {
                    let closes = b == b'"' && !escaped;
                    escaped = b == b'\\' && !escaped;
                    closes
                })
                .unwrap_or(rest.len());
            total += end;
            rest = &rest[end..];
        }
    }
    total
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_text_is_measured_in_content_and_tool_arguments() {
        let text = br#"data: {"choices":[{"delta":{"content":"Hello \"you\""}}]}"#;
        assert_eq!(generated_text_bytes(text), 13);
        let call = br#"data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]}"#;
        assert_eq!(generated_text_bytes(call), 9);
        assert_eq!(
            generated_text_bytes(br#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#),
            0
        );
    }

    #[test]
    fn the_usage_chunk_is_recognised() {
        let chunk = br#"data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":2}}}

"#;
        match classify(chunk) {
            StreamEvent::Chunk {
                usage: Some(t),
                usage_only: true,
                ..
            } => {
                assert_eq!((t.input, t.output, t.cached_input), (5, 7, 2));
            }
            _ => panic!("usage chunk not recognised"),
        }
        assert!(matches!(classify(b"data: [DONE]\n\n"), StreamEvent::Done));
        assert!(matches!(classify(b": keep-alive\n\n"), StreamEvent::Other));
        let null_usage =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n";
        assert!(matches!(
            classify(null_usage),
            StreamEvent::Chunk {
                usage: None,
                usage_only: false,
                has_usage_field: true
            }
        ));
        let stripped = without_usage(null_usage).unwrap_or_default();
        let restored = with_null_usage(&stripped).unwrap_or_default();
        assert_eq!(&restored[..], &null_usage[..]);
        assert_eq!(
            &stripped[..],
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"[..]
        );
    }

    #[test]
    fn null_usage_is_cut_out_without_parsing_and_only_at_the_top_level() {
        let cases: [(&[u8], &[u8]); 4] = [
            (
                br#"{"id":"x","choices":[],"usage":null}"#,
                br#"{"id":"x","choices":[]}"#,
            ),
            (
                br#"{"usage":null,"id":"x","choices":[]}"#,
                br#"{"id":"x","choices":[]}"#,
            ),
            (
                br#"{"id":"x", "usage":null , "choices":[]}"#,
                br#"{"id":"x" , "choices":[]}"#,
            ),
            (
                br#"{"choices":[{"delta":{"content":"\",\"usage\":null","usage":null}}],"usage":null}"#,
                br#"{"choices":[{"delta":{"content":"\",\"usage\":null","usage":null}}]}"#,
            ),
        ];
        for (data, expected) in cases {
            let event = [b"data: ", data, b"\n\n"].concat();
            let stripped = without_usage(&event).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&stripped),
                format!("data: {}\n\n", String::from_utf8_lossy(expected))
            );
            let parsed: serde_json::Value =
                serde_json::from_slice(&stripped[6..]).unwrap_or_default();
            assert!(parsed.is_object() && parsed.get("usage").is_none());
        }
        // Nothing to splice (usage with counts, or only nested): the parsing path decides.
        assert!(without_null_usage(br#"{"choices":[{"usage":null}]}"#).is_none());
        assert!(without_null_usage(br#"{"usage":{"prompt_tokens":1}}"#).is_none());
    }

    #[test]
    fn the_body_is_forwarded_untouched_when_nothing_changes() {
        let body =
            Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let same = upstream_body(&body, None, "m", "m", false).ok();
        assert_eq!(
            same.as_ref().map(|b| b.as_ptr()),
            Some(body.as_ptr()),
            "no copy"
        );
        let changed = upstream_body(&body, None, "m", "gpt-x", true)
            .ok()
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&changed).unwrap_or_default();
        assert_eq!(value["model"], "gpt-x");
        assert_eq!(value["stream_options"]["include_usage"], true);
    }

    /// The body [`upstream_body`] makes when the model is the client's text, and the one it
    /// makes the long way (a copy of the name is not a slice of the body), as JSON values.
    fn both_ways(
        body: &str,
        model: &str,
        stream_usage: bool,
    ) -> (serde_json::Value, serde_json::Value) {
        let body = Bytes::from(body.to_owned());
        let Ok(request) = parse_chat(&body) else {
            panic!("not a chat request: {body:?}");
        };
        let at = model_span(&body, &request.model);
        let spliced = upstream_body(&body, at, &request.model, model, stream_usage);
        let rewritten = upstream_body(&body, None, &request.model, model, stream_usage);
        let value = |b: Result<Bytes, EdgeError>| {
            b.ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        };
        (value(spliced), value(rewritten))
    }

    #[test]
    fn a_renamed_model_is_spliced_into_the_clients_bytes_and_means_the_same() {
        let cases = [
            (
                r#"{"model":"gpt-4o","messages":[{"role":"user","content":"say \"model\": \"gpt-4o\""}],"stream":true}"#,
                true,
            ),
            (
                r#"  { "messages":[{"role":"user","content":"hi"}], "model" : "gpt-4o" } "#,
                false,
            ),
            (
                r#"{"model":"gpt-4o","stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}"#,
                true,
            ),
            (
                r#"{"model":"gpt\u002d4o","messages":[{"role":"user","content":"hi"}]}"#,
                false,
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                true,
            ),
        ];
        for (body, stream_usage) in cases {
            let (spliced, rewritten) = both_ways(body, "upstream \"x\" ü", stream_usage);
            assert_eq!(spliced, rewritten, "{body}");
            assert_eq!(spliced["model"], "upstream \"x\" ü");
            assert_eq!(
                spliced["stream_options"]["include_usage"] == true,
                stream_usage,
                "{body}"
            );
        }
        // Spliced: the rest of the client's bytes are as they were, spacing included.
        let body = Bytes::from_static(
            br#"{ "model": "a",  "messages": [ {"role":"user","content":"hi"} ] }"#,
        );
        let splice = |stream_usage| {
            parse_chat(&body)
                .ok()
                .and_then(|r| {
                    let at = model_span(&body, &r.model);
                    upstream_body(&body, at, &r.model, "b", stream_usage).ok()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            &splice(false)[..],
            &br#"{ "model": "b",  "messages": [ {"role":"user","content":"hi"} ] }"#[..]
        );
        assert_eq!(
            &splice(true)[..],
            &br#"{"stream_options":{"include_usage":true}, "model": "b",  "messages": [ {"role":"user","content":"hi"} ] }"#[..]
        );
    }

    #[test]
    fn a_body_rewritten_since_it_was_parsed_is_not_spliced_where_the_model_was() {
        let parsed = Bytes::from_static(
            br#"{"model":"a","messages":[{"role":"user","content":"bob@x.io"}]}"#,
        );
        let at = parse_chat(&parsed)
            .ok()
            .and_then(|r| model_span(&parsed, &r.model));
        assert_eq!(at, Some(9..12));
        // A guardrail masked the content: the same place now holds other text.
        let masked = Bytes::from_static(
            br#"{"messages":[{"role":"user","content":"{EMAIL}"}],"model":"a"}"#,
        );
        let sent = upstream_body(&masked, at, "a", "b", false).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&sent).unwrap_or_default();
        assert_eq!(value["model"], "b");
        assert_eq!(value["messages"][0]["content"], "{EMAIL}");
    }

    proptest::proptest! {
        /// Whatever the names and the content, splicing means what rewriting means.
        #[test]
        fn splicing_agrees_with_rewriting(
            model in "[a-zA-Z0-9._:/-]{1,40}",
            upstream in proptest::prelude::any::<String>(),
            content in proptest::prelude::any::<String>(),
            stream_usage in proptest::prelude::any::<bool>(),
        ) {
            let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]});
            let (spliced, rewritten) = both_ways(&body.to_string(), &upstream, stream_usage);
            proptest::prop_assert_eq!(spliced, rewritten);
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes, and arbitrary JSON around the fields the edge reads: the parsers
        /// and the chunk readers answer or refuse, and never panic.
        #[test]
        fn request_parsers_and_chunk_readers_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            model in ".{0,300}",
            content in proptest::prelude::any::<String>(),
        ) {
            let _ = parse_chat(&bytes);
            let _ = parse_embeddings(&bytes);
            let chat = serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]});
            let chat = chat.to_string();
            if let Err(e) = parse_chat(chat.as_bytes()) {
                proptest::prop_assert_eq!(e.status().as_u16(), 400);
            }
            for event in [bytes.clone(), [b"data: ".as_slice(), &bytes, b"\n\n"].concat()] {
                let _ = classify(&event);
                let _ = without_usage(&event);
                let _ = with_null_usage(&event);
                let _ = generated_text_bytes(&event);
            }
        }
    }
}
