//! Golden translations: the same requests sent to every provider, and for each one the exact
//! body that reached the provider's fake and the exact answer the client got, pinned in
//! `tests/conformance/golden/<provider>/<case>.json`. The conformance cases check what every
//! provider must have in common; these pin each translation to the byte, so a change to a
//! request or response mapping shows up as a diff a reviewer can read.
//!
//! After a deliberate change, `TOLLGATE_BLESS=1 cargo test -p tollgate-edge --test
//! conformance golden` writes the files anew from what the code does now; review the diff.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{PNG_DATA_URL, Provider, Role, harness, model, parse_stream, weather_tool};

/// The pinned requests, by case name (the `model` is each provider's chat model).
fn requests() -> Vec<(&'static str, Value)> {
    let weather = weather_tool();
    vec![
        (
            "chat",
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there"},
                {"role": "user", "content": [{"type": "text", "text": "How are you?"}]}],
                "temperature": 0.5, "top_p": 0.9, "max_tokens": 100, "stop": ["never"],
                "user": "alice"}),
        ),
        (
            "max_tokens_reached",
            json!({"messages": [{"role": "user", "content": "hi"}],
                "max_completion_tokens": 2}),
        ),
        (
            "stream",
            json!({"messages": [{"role": "user", "content": "Hello there"}], "stream": true,
                "stream_options": {"include_usage": true}}),
        ),
        (
            "stream_without_usage",
            json!({"messages": [{"role": "user", "content": "Hello there"}], "stream": true}),
        ),
        (
            "tool_call",
            json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": weather, "tool_choice": "auto"}),
        ),
        (
            "tool_result",
            json!({"messages": [
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                    "type": "function", "function": {"name": "get_weather",
                    "arguments": "{\"location\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees and sunny"}],
                "tools": weather}),
        ),
        (
            "stop_string",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
                "stop": "fake"}),
        ),
        (
            "json_mode",
            json!({"messages": [{"role": "user", "content": "Answer in JSON"}],
                "response_format": {"type": "json_object"}}),
        ),
        (
            "json_schema",
            json!({"messages": [{"role": "user", "content": "Answer in JSON"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "a",
                    "strict": true, "schema": {"type": "object",
                        "properties": {"answer": {"type": "string"}},
                        "required": ["answer"], "additionalProperties": false}}}}),
        ),
        (
            "two_choices",
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
        ),
        (
            "tool_call_forced_stream",
            json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": weather, "stream": true,
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        ),
        (
            "image",
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": PNG_DATA_URL}}]}]}),
        ),
        (
            "image_url",
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url",
                 "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}]}]}),
        ),
    ]
}

fn fixture(provider: &str, case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/golden")
        .join(provider)
        .join(format!("{case}.json"))
}

/// What varies from run to run in an answer: ids the edge or the fake make up, and times.
fn normalized(mut answer: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match key.as_str() {
                        "id" | "created" | "system_fingerprint" if !value.is_null() => {
                            *value = json!(format!("<{key}>"));
                        }
                        _ => walk(value),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut answer);
    answer
}

/// Every pinned request through the edge to `p`'s fake, compared with its fixture.
pub async fn golden_translations(p: &Provider) -> Result<()> {
    let h = harness(&[p]).await?;
    let upstream = &h.fake[p.name];
    let bless = std::env::var_os("TOLLGATE_BLESS").is_some();
    let mut differing = Vec::new();
    for (case, mut request) in requests() {
        request["model"] = json!(model(p, Role::Chat));
        let before = upstream.fake.requests();
        let response = h.post(&request).await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let answer = if status == 200 && request["stream"] == true {
            json!(parse_stream(&text)?)
        } else {
            serde_json::from_str(&text).with_context(|| format!("{case}: not JSON: {text}"))?
        };
        let reached = if upstream.fake.requests() > before {
            upstream.fake.last_body()
        } else {
            Value::Null
        };
        let got = json!({"request": request, "upstream_request": reached,
            "status": status, "response": normalized(answer)});
        let path = fixture(p.name, case);
        if bless {
            std::fs::create_dir_all(path.parent().context("fixture directory")?)?;
            std::fs::write(&path, serde_json::to_string_pretty(&got)? + "\n")?;
            continue;
        }
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("{}: run with TOLLGATE_BLESS=1", path.display()))?,
        )?;
        if got != expected {
            differing.push(format!(
                "{}:\n{}",
                path.display(),
                serde_json::to_string_pretty(&got)?
            ));
        }
    }
    if !differing.is_empty() {
        bail!(
            "the translation differs from its fixture (TOLLGATE_BLESS=1 to accept):\n{}",
            differing.join("\n\n")
        );
    }
    Ok(())
}
