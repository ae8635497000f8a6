//! What only the `gemini` provider does, end to end through a fake Gemini API (`FakeGemini`):
//! its key header and method paths, thought signatures, cached tokens and their price, the
//! embedding APIs, a stream cut short, chunks relayed as events arrive. The translation itself
//! (requests, answers, streams, tools, images, JSON mode) is pinned by the conformance suite's
//! golden fixtures (`tests/conformance/golden/gemini/`) and its shared cases.

use tollgate_test_support::edge as common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_test_support::fake_server::words;
use tollgate_test_support::gemini_upstream::{
    ANSWER, CACHED_TOKENS, FakeGemini, THOUGHT_SIGNATURE,
};

const API_KEY: &str = "gemini-test-key";
const INPUT_PRICE: f64 = 3.0;
const OUTPUT_PRICE: f64 = 25.0;
const CACHED_PRICE: f64 = 0.75;

type Setup = Gateway<FakeGemini>;

/// A control plane and an edge whose models are Gemini deployments on one fake.
async fn setup() -> Result<Setup> {
    let fake = FakeGemini::start().await?;
    let mut staging = Staging::start().await?;
    let api_key = [("api_key", API_KEY)];
    let template = staging
        .provider("gemini", fake.base_url(), &api_key)
        .await?;
    let models = [
        ("gemini", "gemini-test"),
        ("gemini-cached", "models/gemini-cached"),
        ("embed", "text-embedding-004"),
    ];
    staging.deploy(&template, &models).await?;
    let named = ["gemini-thinking", "slow-stream", "cut-stream"];
    staging.deploy_as_named(&template, &named).await?;
    for model in ["gemini", "gemini-cached"] {
        let prices = [INPUT_PRICE, OUTPUT_PRICE, CACHED_PRICE, 0.0];
        staging.price(model, prices).await?;
    }
    staging.serve(fake, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_gets_its_key_header_at_the_model_method() -> Result<()> {
    let s = setup().await?;
    let hi = json!([{"role": "user", "content": "hi"}]);
    s.json(&json!({"model": "gemini", "messages": hi})).await?;
    assert_eq!(
        s.fake.last_header("x-goog-api-key").as_deref(),
        Some(API_KEY)
    );
    assert_eq!(s.fake.last_header("authorization"), None);
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/gemini-test:generateContent")
    );
    let streamed = s
        .post(&json!({"model": "gemini", "messages": hi, "stream": true}))
        .await?;
    assert_eq!(streamed.status(), 200);
    streamed.text().await?;
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/gemini-test:streamGenerateContent?alt=sse")
    );
    assert_eq!(
        s.fake.last_header("x-goog-api-key").as_deref(),
        Some(API_KEY)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_are_sent_as_gemini_events_arrive() -> Result<()> {
    let s = setup().await?;
    // The fake waits 200 ms before each of its events.
    s.relays_events_as_they_come("slow-stream", Duration::from_millis(600))
        .await
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
            "required": ["location"]}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thought_signatures_travel_in_the_tool_call_id() -> Result<()> {
    let s = setup().await?;
    let mut messages = vec![json!({"role": "user", "content": "What is the weather in Paris?"})];
    let body = s
        .json(&json!({"model": "gemini-thinking", "messages": messages,
            "tools": weather_tool()}))
        .await?;
    let message = &body["choices"][0]["message"];
    let id = message["tool_calls"][0]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    assert_eq!(id, format!("call_0__thought__{THOUGHT_SIGNATURE}"));
    // The fake, like Gemini 3, refuses a function call sent back without its signature.
    messages.push(message.clone());
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "sunny"}));
    let body = s
        .json(&json!({"model": "gemini-thinking", "messages": messages,
            "tools": weather_tool()}))
        .await?;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The tool said: sunny"
    );
    assert_eq!(
        s.fake.last_body()["contents"][1]["parts"][0]["thoughtSignature"],
        THOUGHT_SIGNATURE
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_are_reported_and_priced() -> Result<()> {
    let s = setup().await?;
    let (cost, body) = s
        .priced_json(&json!({"model": "gemini-cached",
            "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    // `models/` in the deployment's upstream model is not doubled in the path.
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/gemini-cached:generateContent")
    );
    let prompt = (3 + words("hi")) as u64 + CACHED_TOKENS;
    assert_eq!(body["usage"]["prompt_tokens"], prompt);
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        CACHED_TOKENS
    );
    let expected = ((prompt - CACHED_TOKENS) as f64 * INPUT_PRICE
        + CACHED_TOKENS as f64 * CACHED_PRICE
        + words(ANSWER) as f64 * OUTPUT_PRICE)
        / 1e6;
    assert!((cost - expected).abs() < 1e-6, "cost {cost} vs {expected}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_use_embed_content_and_batch_embed_contents() -> Result<()> {
    let s = setup().await?;
    let response = s
        .embeddings(&json!({"model": "embed", "input": "one two", "dimensions": 4}))
        .await?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/text-embedding-004:embedContent")
    );
    assert_eq!(
        s.fake.last_body(),
        json!({"content": {"parts": [{"text": "one two"}]}, "outputDimensionality": 4})
    );
    assert_eq!(
        s.fake.last_header("x-goog-api-key").as_deref(),
        Some(API_KEY)
    );
    assert_eq!(body["object"], "list");
    assert_eq!(
        body["data"],
        json!([{"object": "embedding", "index": 0,
            "embedding": [0.0, 0.125, 0.25, 0.375]}])
    );

    let response = s
        .embeddings(&json!({"model": "embed", "input": ["one", "two"]}))
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/text-embedding-004:batchEmbedContents")
    );
    assert_eq!(
        s.fake.last_body()["requests"][1],
        json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "two"}]}})
    );
    let data = body["data"].as_array().context("data")?;
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[1]["embedding"][0], 1.0);

    // base64, as the OpenAI SDKs ask by default: little-endian f32s.
    let body: Value = s
        .embeddings(&json!({"model": "embed", "input": "x", "encoding_format": "base64"}))
        .await?
        .json()
        .await?;
    // [0, 0.125, …, 0.875] as little-endian f32s, base64.
    assert_eq!(
        body["data"][0]["embedding"],
        "AAAAAAAAAD4AAIA+AADAPgAAAD8AACA/AABAPwAAYD8="
    );

    // Token arrays cannot be sent to Gemini.
    let before = s.fake.requests();
    let response = s
        .embeddings(&json!({"model": "embed", "input": [[1, 2, 3]]}))
        .await?;
    assert_eq!(response.status(), 400);
    assert_eq!(s.fake.requests(), before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_is_reported_in_band() -> Result<()> {
    let s = setup().await?;
    let response = s
        .post(&json!({"model": "cut-stream", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    assert!(!text.contains("[DONE]"), "{text}");
    let (chunks, _) = parse_stream(&text)?;
    let last = chunks.last().context("no events")?;
    assert_eq!(last["error"]["code"], "upstream_error", "{text}");
    assert!(!text.contains(API_KEY) && !text.contains("127.0.0.1"));
    Ok(())
}
