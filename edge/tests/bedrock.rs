//! What only the `bedrock` provider does, through the edge over HTTP: the official AWS SDK
//! client (Converse and ConverseStream, SigV4-signed with the deployment's static credential)
//! against a fake Bedrock runtime that speaks Bedrock's JSON and binary event-stream wire
//! formats — signing, guardrails, cache points, Titan and Cohere embeddings, exceptions and
//! timeouts inside a stream; arbitrary and mutated event-stream bytes end a stream with an
//! error, never a panic or a hang. The translation itself (requests, answers, streams, tools,
//! images) is pinned by the conformance suite's golden fixtures
//! (`tests/conformance/golden/bedrock/`) and its shared cases.

use tollgate_test_support::edge as common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_proto::admin::Deployment;
use tollgate_test_support::bedrock_upstream::{
    ANSWER, EMBEDDING_DIMENSIONS, FakeBedrock, GUARDRAIL_ANSWER, fake_embedding,
};

const ACCESS_KEY_ID: &str = "AKIDTEST";
const SECRET_ACCESS_KEY: &str = "secret-test";

type Setup = Gateway<FakeBedrock>;

async fn setup() -> Result<Setup> {
    setup_with(|_| {}).await
}

/// A control plane and an edge whose Bedrock models all live on one fake Bedrock, the edge's
/// configuration changed by `configure`.
async fn setup_with(configure: impl FnOnce(&mut EdgeConfig)) -> Result<Setup> {
    let fake = FakeBedrock::start().await?;
    let mut staging = Staging::start().await?;
    let keys = [
        ("aws_access_key_id", ACCESS_KEY_ID),
        ("aws_secret_access_key", SECRET_ACCESS_KEY),
    ];
    let template = Deployment {
        region: "us-east-1".into(),
        ..staging
            .provider("bedrock", fake.endpoint_url(), &keys)
            .await?
    };
    let models = [
        ("claude-test", "anthropic.claude-test"),
        ("titan-embed", "amazon.titan-embed-text-v2:0"),
        ("titan-embed-v1", "amazon.titan-embed-text-v1"),
        ("cohere-embed", "cohere.embed-english-v3"),
    ];
    staging.deploy(&template, &models).await?;
    let streams = ["fail-denied", "fail-midstream", "hang", "slow-stream"];
    staging.deploy_as_named(&template, &streams).await?;
    staging
        .deploy_as_named(&template, &["stall-stream", "raw-stream"])
        .await?;
    let query = with_setting(&template, "input_type", "search_query");
    let models = [("cohere-embed-query", "cohere.embed-multilingual-v3")];
    staging.deploy(&query, &models).await?;
    staging.price("claude-test", [3.0, 15.0, 0.0, 0.0]).await?;
    staging.price("titan-embed", [2.0, 0.0, 0.0, 0.0]).await?;
    staging.price("cohere-embed", [1.0, 0.0, 0.0, 0.0]).await?;
    staging.serve(fake, configure).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_is_signed_with_the_deployments_credential_for_its_region() -> Result<()> {
    let s = setup().await?;
    s.json(&chat_request("claude-test", "hello there")).await?;
    let request = s
        .fake
        .last_request()
        .context("no request reached Bedrock")?;
    assert_eq!(request.operation, "converse");
    assert_eq!(request.resource, "anthropic.claude-test");
    request.check_signed_by(ACCESS_KEY_ID, ("us-east-1", "bedrock"), SECRET_ACCESS_KEY)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_and_cache_points_reach_bedrock() -> Result<()> {
    let s = setup().await?;
    // Guardrails pass through, plain and streamed.
    let mut guarded = chat_request("claude-test", "hello");
    guarded["guardrailConfig"] =
        json!({"guardrailIdentifier": "gr-1", "guardrailVersion": "3", "trace": "enabled"});
    s.json(&guarded).await?;
    assert_eq!(
        s.fake.last_body()["guardrailConfig"],
        json!({"guardrailIdentifier": "gr-1", "guardrailVersion": "3", "trace": "enabled"})
    );
    guarded["stream"] = json!(true);
    guarded["guardrailConfig"]["streamProcessingMode"] = json!("async");
    let (_, done) = s.stream(&guarded).await?;
    assert!(done);
    assert_eq!(
        s.fake.last_body()["guardrailConfig"]["streamProcessingMode"],
        "async"
    );
    // An intervening guardrail is OpenAI's content filter.
    let mut blocked = chat_request("claude-test", "something bad");
    blocked["guardrailConfig"] =
        json!({"guardrailIdentifier": "gr-block", "guardrailVersion": "1"});
    let answer = s.json(&blocked).await?;
    assert_eq!(answer["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(answer["choices"][0]["message"]["content"], GUARDRAIL_ANSWER);

    // Anthropic-style cache_control becomes a cache point; cached tokens are reported.
    let cached = json!({"model": "claude-test", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "A long shared preamble.",
            "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "hello"}]});
    let answer = s.json(&cached).await?;
    assert_eq!(
        s.fake.last_body()["system"],
        json!([{"text": "A long shared preamble."}, {"cachePoint": {"type": "default"}}])
    );
    // 4 + 1 words + 3, plus 5 read from and 1 written to the cache.
    assert_eq!(answer["usage"]["prompt_tokens"], 8 + 6);
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_named_without_revealing_them() -> Result<()> {
    let s = setup().await?;
    for stream in [false, true] {
        let mut body = chat_request("fail-denied", "hello");
        body["stream"] = json!(stream);
        let response = s.post(&body).await?;
        assert_eq!(response.status(), 502, "stream {stream}");
        let text = response.text().await?;
        let deployment = &s.deployments["fail-denied"];
        assert!(text.contains(&format!("deployment {deployment}")), "{text}");
        assert!(text.contains("refused the credentials"), "{text}");
        assert!(
            !text.contains(SECRET_ACCESS_KEY) && !text.contains(ACCESS_KEY_ID),
            "{text}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_mid_stream_is_reported_in_band_after_what_was_sent() -> Result<()> {
    let s = setup().await?;
    let text = s
        .stream_text(&streamed_request("fail-midstream", "hello there"))
        .await?;
    assert!(text.contains("\"role\":\"assistant\""), "{text}");
    assert!(text.contains("\"error\""), "{text}");
    assert!(text.contains("upstream_error"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_bedrock_times_out() -> Result<()> {
    let s = setup_with(timeouts(
        Duration::from_millis(800),
        Duration::from_millis(800),
    ))
    .await?;
    for stream in [false, true] {
        let mut body = chat_request("hang", "hello");
        body["stream"] = json!(stream);
        let started = std::time::Instant::now();
        let response = s.post(&body).await?;
        assert_eq!(response.status(), 504, "stream {stream}");
        let error: Value = response.json().await?;
        assert_eq!(error["error"]["code"], "upstream_timeout");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
    // A stream longer than the timeouts is not cut while its events keep coming…
    let started = std::time::Instant::now();
    let (chunks, done) = s.stream(&streamed_request("slow-stream", "hello")).await?;
    assert!(done && started.elapsed() > Duration::from_millis(1600));
    assert_eq!(streamed_text(&chunks), ANSWER);
    // …but one that stops is ended with an in-band timeout.
    let deadline = started + Duration::from_secs(8);
    s.stream_times_out(&streamed_request("stall-stream", "hello"), deadline)
        .await?;
    // Calls after a timeout still work on the same cached client.
    let answer = s.json(&chat_request("claude-test", "hello")).await?;
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    Ok(())
}

/// The cost header of an answer.
fn cost_of(response: &reqwest::Response) -> Result<f64> {
    Ok(response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?)
}

/// Little-endian f32s from base64, as OpenAI's `encoding_format: base64` carries them.
fn decode_f32s(encoded: &Value) -> Result<Vec<f64>> {
    let bytes = aws_smithy_types::base64::decode(encoded.as_str().context("not a string")?)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect())
}

/// Embeds `inputs` with `model`: checks that the answer has each input's fake embedding, in
/// order, and `tokens` tokens charged at `usd_per_mtok`; returns the answer.
async fn embedded(
    s: &Setup,
    model: &str,
    inputs: &[&str],
    tokens: u64,
    usd_per_mtok: f64,
) -> Result<Value> {
    let response = s
        .embeddings(&json!({"model": model, "input": inputs}))
        .await?;
    assert_eq!(response.status(), 200);
    let cost = cost_of(&response)?;
    let body: Value = response.json().await?;
    let data = body["data"].as_array().context("no data")?;
    assert_eq!(data.len(), inputs.len(), "{body}");
    for (i, text) in inputs.iter().enumerate() {
        assert_eq!(data[i]["object"], "embedding");
        assert_eq!(data[i]["index"], i);
        assert_eq!(
            data[i]["embedding"],
            json!(fake_embedding(text, EMBEDDING_DIMENSIONS))
        );
    }
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);
    let expected = tokens as f64 * usd_per_mtok / 1e6;
    assert!((cost - expected).abs() < 1e-9, "cost {cost} vs {expected}");
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titan_embeddings_are_one_invoke_per_input_floats_or_base64_and_priced() -> Result<()> {
    let s = setup().await?;
    let inputs = ["the quick brown fox", "jumps"];
    // Token counts are words: 4 + 1.
    let body = embedded(&s, "titan-embed", &inputs, 5, 2.0).await?;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "amazon.titan-embed-text-v2:0");
    assert_eq!(s.fake.requests(), 2, "one InvokeModel per input");
    let request = s.fake.last_request().context("no request")?;
    assert_eq!(request.operation, "invoke");
    assert_eq!(request.resource, "amazon.titan-embed-text-v2:0");
    assert!(request.body["inputText"].is_string());
    let authorization = request.header("authorization").unwrap_or_default();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"),
        "{authorization}"
    );

    // base64 with dimensions: v2 takes `dimensions` and `normalize`.
    let response = s
        .embeddings(&json!({"model": "titan-embed", "input": "hello world",
            "encoding_format": "base64", "dimensions": 4}))
        .await?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(
        decode_f32s(&body["data"][0]["embedding"])?,
        fake_embedding("hello world", 4)
    );
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    let request = s.fake.last_request().context("no request")?;
    assert_eq!(
        request.body,
        json!({"inputText": "hello world", "dimensions": 4, "normalize": true})
    );

    // v1 takes no dimensions: refused before Bedrock is called.
    let before = s.fake.requests();
    let response = s
        .embeddings(&json!({"model": "titan-embed-v1", "input": "x", "dimensions": 4}))
        .await?;
    assert_eq!(response.status(), 400);
    assert_eq!(s.fake.requests(), before);
    let response = s
        .embeddings(&json!({"model": "titan-embed-v1", "input": "x y"}))
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        s.fake.last_request().context("no request")?.body,
        json!({"inputText": "x y"})
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohere_embeddings_are_one_invoke_for_all_inputs_with_header_usage() -> Result<()> {
    let s = setup().await?;
    let inputs = ["alpha beta", "gamma", "delta epsilon zeta"];
    // From the x-amzn-bedrock-input-token-count header: 2 + 1 + 3 words.
    let body = embedded(&s, "cohere-embed", &inputs, 6, 1.0).await?;
    assert_eq!(body["model"], "cohere.embed-english-v3");
    assert_eq!(s.fake.requests(), 1, "one InvokeModel for all inputs");
    let request = s.fake.last_request().context("no request")?;
    assert_eq!(request.operation, "invoke");
    assert_eq!(
        request.body,
        json!({"texts": inputs, "input_type": "search_document"})
    );

    // base64, and the deployment's input_type.
    let response = s
        .embeddings(&json!({"model": "cohere-embed-query", "input": ["one two"],
            "encoding_format": "base64"}))
        .await?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(
        decode_f32s(&body["data"][0]["embedding"])?,
        fake_embedding("one two", EMBEDDING_DIMENSIONS)
    );
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    let request = s.fake.last_request().context("no request")?;
    assert_eq!(request.body["input_type"], "search_query");

    // A chat model has no embeddings: refused without calling Bedrock.
    let before = s.fake.requests();
    let response = s
        .embeddings(&json!({"model": "claude-test", "input": "x"}))
        .await?;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await?;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("embeddings are supported for Titan and Cohere models"),
        "{body}"
    );
    assert_eq!(s.fake.requests(), before);
    Ok(())
}

/// An event stream to answer with: arbitrary bytes, or a valid stream with bytes overwritten,
/// cut short, or with bytes inserted.
fn hostile_event_stream() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    use proptest::sample::Index;
    let valid = || FakeBedrock::valid_stream().to_vec();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec((any::<Index>(), any::<u8>()), 1..6).prop_map(move |edits| {
            let mut bytes = valid();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes
        }),
        any::<Index>().prop_map(move |at| {
            let mut bytes = valid();
            bytes.truncate(at.index(bytes.len()));
            bytes
        }),
        (
            any::<Index>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(move |(at, junk)| {
                let mut bytes = valid();
                let i = at.index(bytes.len());
                bytes.splice(i..i, junk);
                bytes
            }),
    ]
}

/// How the edge answered one hostile stream: a complete HTTP answer, and when it is a stream,
/// well-formed events ending in `[DONE]` or an in-band error.
async fn answers_cleanly(s: &Setup, bytes: Vec<u8>) -> Result<()> {
    s.fake.set_raw_stream(bytes.into());
    let ask = json!({"model": "raw-stream", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = tokio::time::timeout(Duration::from_secs(10), s.post(&ask))
        .await
        .context("no answer within 10 s")??;
    let status = response.status();
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .context("the body never ended")?
        .context("the body was cut off (did the edge panic?)")?;
    if status != 200 {
        let body: Value = serde_json::from_str(&text)?;
        anyhow::ensure!(status.is_server_error(), "HTTP {status}: {text}");
        anyhow::ensure!(body["error"]["code"].is_string(), "{text}");
        return Ok(());
    }
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    for event in &events {
        let data = event
            .strip_prefix("data: ")
            .with_context(|| format!("not an SSE data event: {event:?}"))?;
        anyhow::ensure!(
            data == "[DONE]" || serde_json::from_str::<Value>(data).is_ok(),
            "{data}"
        );
    }
    let last = events.last().copied().unwrap_or_default();
    anyhow::ensure!(
        last == "data: [DONE]" || last.contains("\"error\""),
        "the stream ended with neither [DONE] nor an error: {text}"
    );
    Ok(())
}

#[test]
fn hostile_event_stream_bytes_end_the_stream_cleanly() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let s = runtime.block_on(setup_with(|config| {
        // Every case reaches the decoder: no retry, no circuit opening on the failures.
        config.max_retries = 0;
        config.circuit.allowed_fails = u32::MAX;
        config.circuit.min_requests = u32::MAX;
    }))?;
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 128,
        failure_persistence: None,
        ..Default::default()
    });
    let outcome = runner.run(&hostile_event_stream(), |bytes| {
        runtime
            .block_on(answers_cleanly(&s, bytes))
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:#}")))
    });
    if let Err(failure) = outcome {
        anyhow::bail!("{failure}");
    }
    // The edge still serves a well-formed stream afterwards.
    s.fake.set_raw_stream(FakeBedrock::valid_stream());
    let (chunks, done) = runtime.block_on(s.stream(&json!({"model": "raw-stream",
        "stream": true, "messages": [{"role": "user", "content": "hi"}]})))?;
    assert!(done);
    assert_eq!(streamed_text(&chunks), "Hello there.");
    // The roles stop inside the runtime they run on.
    runtime.block_on(async move { drop(s) });
    Ok(())
}
