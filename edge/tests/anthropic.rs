//! What only the `anthropic` provider does, end to end through a fake Anthropic
//! (`FakeAnthropic`): its headers, prompt caching and its price, `overloaded_error`, failures
//! inside a stream and chunks relayed as events arrive. The translation itself (requests,
//! answers, streams, tools, images) is pinned by the conformance suite's golden fixtures
//! (`tests/conformance/golden/anthropic/`) and its shared cases.

use tollgate_test_support::edge as common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_test_support::anthropic_upstream::{
    ANSWER, CACHE_CREATION_TOKENS, CACHE_READ_TOKENS, FakeAnthropic,
};
use tollgate_test_support::fake_server::words;

const API_KEY: &str = "sk-ant-test";
const INPUT_PRICE: f64 = 3.0;
const OUTPUT_PRICE: f64 = 15.0;
const CACHED_PRICE: f64 = 0.3;
const CACHE_WRITE_PRICE: f64 = 3.75;

type Setup = Gateway<FakeAnthropic>;

/// A control plane and an edge whose models are Anthropic deployments on one fake.
async fn setup() -> Result<Setup> {
    let fake = FakeAnthropic::start().await?;
    let mut staging = Staging::start().await?;
    let api_key = [("api_key", API_KEY)];
    let template = staging
        .provider("anthropic", fake.base_url(), &api_key)
        .await?;
    staging
        .deploy(&template, &[("claude", "claude-test")])
        .await?;
    let failing = ["fail-529", "slow-stream", "cut-stream", "error-stream"];
    staging.deploy_as_named(&template, &failing).await?;
    let prices = [INPUT_PRICE, OUTPUT_PRICE, CACHED_PRICE, CACHE_WRITE_PRICE];
    staging.price("claude", prices).await?;
    staging.serve(fake, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_are_sent_as_anthropic_events_arrive() -> Result<()> {
    let s = setup().await?;
    // The fake waits 200 ms before each of its events.
    s.relays_events_as_they_come("slow-stream", Duration::from_millis(1000))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_is_passed_through_and_cache_reads_and_writes_are_priced() -> Result<()> {
    let s = setup().await?;
    let system = "You are a patient assistant with a very long prompt.";
    let (cost, body) = s
        .priced_json(&json!({"model": "claude", "messages": [
            {"role": "system", "content": [{"type": "text", "text": system,
                "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "hi"},
        ]}))
        .await?;
    assert_eq!(
        s.fake.last_body()["system"],
        json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}])
    );
    let input = (3 + words(system) + words("hi")) as u64;
    let prompt = input + CACHE_READ_TOKENS + CACHE_CREATION_TOKENS;
    assert_eq!(body["usage"]["prompt_tokens"], prompt);
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        CACHE_READ_TOKENS
    );
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cache_write_tokens"],
        CACHE_CREATION_TOKENS
    );
    let expected = ((prompt - CACHE_READ_TOKENS - CACHE_CREATION_TOKENS) as f64 * INPUT_PRICE
        + CACHE_READ_TOKENS as f64 * CACHED_PRICE
        + CACHE_CREATION_TOKENS as f64 * CACHE_WRITE_PRICE
        + words(ANSWER) as f64 * OUTPUT_PRICE)
        / 1e6;
    assert!((cost - expected).abs() < 1e-6, "cost {cost} vs {expected}");
    Ok(())
}

async fn error_of(response: reqwest::Response) -> Result<(u16, Option<String>, Value)> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, retry_after, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_gets_its_key_and_version_headers_and_no_bearer() -> Result<()> {
    let s = setup().await?;
    s.json(&json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    assert_eq!(s.fake.last_header("x-api-key").as_deref(), Some(API_KEY));
    assert_eq!(
        s.fake.last_header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(
        s.fake.last_header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(s.fake.last_header("authorization"), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_anthropic_is_rate_limiting() -> Result<()> {
    let s = setup().await?;
    let (status, _, body) = error_of(
        s.post(&json!({"model": "fail-529", "messages": [{"role": "user", "content": "hi"}]}))
            .await?,
    )
    .await?;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_mid_stream_are_reported_in_band() -> Result<()> {
    let s = setup().await?;
    let stream = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for (model, code) in [
        ("error-stream", "rate_limit_exceeded"),
        ("cut-stream", "upstream_error"),
    ] {
        let response = s.post(&stream(model)).await?;
        assert_eq!(response.status(), 200);
        let text = response.text().await?;
        assert!(!text.contains("[DONE]"), "{model}: {text}");
        let (chunks, _) = parse_stream(&text)?;
        let last = chunks.last().context("no events")?;
        assert_eq!(last["error"]["code"], code, "{model}: {text}");
        assert!(!text.contains(API_KEY) && !text.contains("127.0.0.1"));
    }
    Ok(())
}
