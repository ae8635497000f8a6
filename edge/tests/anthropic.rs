//! The `anthropic` provider end to end: clients speak OpenAI's API to the edge, the edge speaks
//! the Messages API to a fake Anthropic (`FakeAnthropic`), and the answers come back in
//! OpenAI's format — complete, streamed, with tool calls, images, prompt caching and errors.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::{Deployment, Price, PutCredentialRequest};
use tollgate_test_support::anthropic_upstream::{
    ANSWER, CACHE_CREATION_TOKENS, CACHE_READ_TOKENS, FakeAnthropic, TOOL_INPUT, TOOL_PREAMBLE,
    TOOL_USE_ID,
};

const API_KEY: &str = "sk-ant-test";
const INPUT_PRICE: f64 = 3.0;
const OUTPUT_PRICE: f64 = 15.0;
const CACHED_PRICE: f64 = 0.3;
const CACHE_WRITE_PRICE: f64 = 3.75;

struct Setup {
    _cp: TestControlPlane,
    edge: TestEdge,
    fake: FakeAnthropic,
    secret: String,
    http: reqwest::Client,
}

async fn setup() -> Result<Setup> {
    setup_with(Duration::from_secs(5), Duration::from_secs(10)).await
}

/// A control plane and an edge whose models are Anthropic deployments on one fake, with the
/// edge's upstream timeouts (first byte / between chunks, and total).
async fn setup_with(first_byte: Duration, total: Duration) -> Result<Setup> {
    let fake = FakeAnthropic::start().await?;
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    let credential = admin
        .put_credential(PutCredentialRequest {
            name: "fake-anthropic".into(),
            provider: "anthropic".into(),
            secret_fields: [("api_key".to_owned(), API_KEY.to_owned())].into(),
        })
        .await?
        .into_inner();
    let models = [
        ("claude", "claude-test"),
        ("fail-429", "fail-429"),
        ("fail-529", "fail-529"),
        ("fail-400", "fail-400"),
        ("fail-401", "fail-401"),
        ("fail-500", "fail-500"),
        ("hang", "hang"),
        ("slow-stream", "slow-stream"),
        ("cut-stream", "cut-stream"),
        ("error-stream", "error-stream"),
    ];
    for (model, upstream) in models {
        admin
            .upsert_deployment(Deployment {
                model_name: model.into(),
                provider: "anthropic".into(),
                upstream_model: upstream.into(),
                api_base: fake.base_url(),
                credential_id: credential.id.clone(),
                ..Default::default()
            })
            .await?;
    }
    admin
        .set_price(Price {
            model: "claude".into(),
            input_per_mtok: INPUT_PRICE,
            output_per_mtok: OUTPUT_PRICE,
            cached_input_per_mtok: CACHED_PRICE,
            cache_write_per_mtok: CACHE_WRITE_PRICE,
        })
        .await?;
    let (_, secret) = create_key(&mut admin, &[]).await?;
    let sequence = last_sequence(&mut admin).await?;
    let mut config = EdgeConfig::local(&nats);
    config.bus_prefix = prefix;
    config.edge_id = tollgate_test_support::unique_name("edge");
    config.credential_key = Some(SealingKey::from_bytes(SEALING_KEY));
    config.first_byte_timeout = first_byte;
    config.upstream_timeout = total;
    let edge = TestEdge::start_with(config, bus, Some(cp.url())).await?;
    edge.wait_for_sequence(sequence).await?;
    Ok(Setup {
        _cp: cp,
        edge,
        fake,
        secret,
        http: reqwest::Client::new(),
    })
}

impl Setup {
    async fn post(&self, body: &Value) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(self.edge.url("/v1/chat/completions"))
            .bearer_auth(&self.secret)
            .json(body)
            .send()
            .await?)
    }

    async fn json(&self, body: &Value) -> Result<Value> {
        let response = self.post(body).await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status == 200, "HTTP {status}: {body}");
        Ok(body)
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The chunks of an OpenAI event stream, and whether it ended with `data: [DONE]`.
fn parse_stream(text: &str) -> Result<(Vec<Value>, bool)> {
    let mut chunks = Vec::new();
    let mut done = false;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .with_context(|| format!("not an OpenAI event: {event:?}"))?;
        anyhow::ensure!(!done, "an event after [DONE]: {event:?}");
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str(data)?);
        }
    }
    Ok((chunks, done))
}

/// The concatenated `content` deltas of a stream.
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_is_translated_priced_and_labelled() -> Result<()> {
    let s = setup().await?;
    let response = s
        .post(&json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there"},
                {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
            ],
            "temperature": 0.5, "stop": ["never"], "user": "alice",
        }))
        .await?;
    assert_eq!(response.status(), 200);
    for header in [
        "x-request-id",
        "x-tollgate-deployment",
        "x-tollgate-cost-usd",
        "x-tollgate-overhead-ms",
    ] {
        assert!(response.headers().contains_key(header), "missing {header}");
    }
    let cost: f64 = response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?;
    let body: Value = response.json().await?;
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], ANSWER);
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none());
    let prompt = 3 + words("Be brief. Hello there How are you?");
    let completion = words(ANSWER);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": 0}})
    );
    let expected = (prompt as f64 * INPUT_PRICE + completion as f64 * OUTPUT_PRICE) / 1e6;
    assert!((cost - expected).abs() < 1e-6, "cost {cost} vs {expected}");

    // What reached Anthropic: its headers, and the request in its shape.
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
    assert_eq!(
        s.fake.last_body(),
        json!({
            "model": "claude-test",
            "max_tokens": 4096,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Hello there"},
                {"type": "text", "text": "How are you?"}]}],
            "temperature": 0.5,
            "stop_sequences": ["never"],
            "metadata": {"user_id": "alice"},
        })
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_and_stop_sequences_end_the_answer() -> Result<()> {
    let s = setup().await?;
    let user = json!([{"role": "user", "content": "hi"}]);
    let body = s
        .json(&json!({"model": "claude", "messages": user, "max_completion_tokens": 2}))
        .await?;
    assert_eq!(s.fake.last_body()["max_tokens"], 2);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from ");
    assert_eq!(body["usage"]["completion_tokens"], 2);

    let body = s
        .json(&json!({"model": "claude", "messages": user, "max_tokens": 100, "stop": "fake"}))
        .await?;
    assert_eq!(s.fake.last_body()["max_tokens"], 100);
    assert_eq!(s.fake.last_body()["stop_sequences"], json!(["fake"]));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the ");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_translated_to_openai_chunks_with_usage_when_asked() -> Result<()> {
    let s = setup().await?;
    let request = json!({"model": "claude", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hello there"}]});
    let response = s.post(&request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("x-tollgate-deployment"));
    let text = response.text().await?;
    assert_eq!(s.fake.last_body()["stream"], true);
    let (chunks, done) = parse_stream(&text)?;
    assert!(done, "no [DONE]: {text}");
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(&chunk["id"], id);
        assert_eq!(chunk["model"], "claude-test");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(streamed_text(&chunks), ANSWER);
    let text_deltas = chunks[1..]
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .count();
    assert_eq!(text_deltas as u64, words(ANSWER), "one delta per word");
    let (finish, usage) = (&chunks[chunks.len() - 2], &chunks[chunks.len() - 1]);
    assert_eq!(
        finish["choices"],
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(usage["choices"], json!([]));
    let prompt = 3 + words("Hello there");
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": words(ANSWER),
            "total_tokens": prompt + words(ANSWER), "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert_eq!(
        chunks
            .iter()
            .filter(|c| !c["choices"][0]["finish_reason"].is_null())
            .count(),
        1
    );

    // Without include_usage, no usage anywhere (the edge still asked for it upstream).
    let mut plain = request.clone();
    plain
        .as_object_mut()
        .context("object")?
        .remove("stream_options");
    let text = s.post(&plain).await?.text().await?;
    assert!(
        !text.contains("\"usage\""),
        "usage was not asked for: {text}"
    );
    let (chunks, done) = parse_stream(&text)?;
    assert!(done);
    assert_eq!(streamed_text(&chunks), ANSWER);
    assert_eq!(
        chunks
            .last()
            .map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(json!("stop"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_are_sent_as_anthropic_events_arrive() -> Result<()> {
    let s = setup().await?;
    // The fake waits 200 ms before each of its events.
    let request = json!({"model": "slow-stream", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let response = s.post(&request).await?;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut first_content = None;
    let mut text = String::new();
    while let Some(bytes) = body.next().await {
        text.push_str(std::str::from_utf8(&bytes?)?);
        if first_content.is_none() && text.contains("\"content\":\"Hello \"") {
            first_content = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    let first = first_content.context("no first word")?;
    assert!(
        total - first > Duration::from_millis(1000),
        "the first word came at {first:?}, the end at {total:?}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    Ok(())
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
            "required": ["location"]}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_make_the_round_trip() -> Result<()> {
    let s = setup().await?;
    let mut messages = vec![json!({"role": "user", "content": "What is the weather in Paris?"})];
    let body = s
        .json(
            &json!({"model": "claude", "messages": messages, "tools": weather_tool(),
            "tool_choice": "auto"}),
        )
        .await?;
    let sent = s.fake.last_body();
    assert_eq!(
        sent["tools"],
        json!([{"name": "get_weather", "description": "The weather in a city",
            "input_schema": weather_tool()[0]["function"]["parameters"]}])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], TOOL_PREAMBLE);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], TOOL_USE_ID);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .context("arguments")?,
    )?;
    assert_eq!(arguments, serde_json::from_str::<Value>(TOOL_INPUT)?);

    // The tool's result goes back; the fake checks it answers the tool_use of the last turn.
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": TOOL_USE_ID,
        "content": "22 degrees and sunny"}));
    let body = s
        .json(&json!({"model": "claude", "messages": messages, "tools": weather_tool()}))
        .await?;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The tool said: 22 degrees and sunny"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = s.fake.last_body();
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": TOOL_PREAMBLE},
            {"type": "tool_use", "id": TOOL_USE_ID, "name": "get_weather",
                "input": {"location": "Paris"}}]})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": TOOL_USE_ID,
            "content": "22 degrees and sunny"}]})
    );

    // A forced tool, streamed: the call's id and name first, then its argument fragments.
    let text = s
        .post(
            &json!({"model": "claude", "stream": true, "messages": messages[..1],
            "tools": weather_tool(),
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        )
        .await?
        .text()
        .await?;
    assert_eq!(
        s.fake.last_body()["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    let (chunks, done) = parse_stream(&text)?;
    assert!(done);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(
        *calls[0],
        json!({"index": 0, "id": TOOL_USE_ID, "type": "function",
            "function": {"name": "get_weather", "arguments": ""}})
    );
    assert!(calls.len() > 2, "arguments in fragments: {calls:?}");
    assert!(
        calls[1..]
            .iter()
            .all(|c| c.get("id").is_none() && c["index"] == 0)
    );
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, TOOL_INPUT);
    assert_eq!(streamed_text(&chunks), TOOL_PREAMBLE);
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("tool_calls")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_reach_anthropic_as_image_blocks() -> Result<()> {
    let s = setup().await?;
    let body = s
        .json(
            &json!({"model": "claude", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url",
                 "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            ]}]}),
        )
        .await?;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{ANSWER} I see 2 images: base64 image/png, url https://example.com/cat.jpg")
    );
    assert_eq!(
        s.fake.last_body()["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_is_passed_through_and_cache_reads_and_writes_are_priced() -> Result<()> {
    let s = setup().await?;
    let system = "You are a patient assistant with a very long prompt.";
    let response = s
        .post(&json!({"model": "claude", "messages": [
            {"role": "system", "content": [{"type": "text", "text": system,
                "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "hi"},
        ]}))
        .await?;
    assert_eq!(response.status(), 200);
    let cost: f64 = response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?;
    let body: Value = response.json().await?;
    assert_eq!(
        s.fake.last_body()["system"],
        json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}])
    );
    let input = 3 + words(system) + words("hi");
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
async fn anthropic_errors_are_mapped_without_leaking_the_key() -> Result<()> {
    let s = setup().await?;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    let (status, retry_after, body) = error_of(s.post(&chat("fail-429")).await?).await?;
    assert_eq!((status, retry_after.as_deref()), (429, Some("7")));
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let (status, _, body) = error_of(s.post(&chat("fail-529")).await?).await?;
    assert_eq!(status, 429, "overloaded is rate limiting: {body}");

    let (status, _, body) = error_of(s.post(&chat("fail-400")).await?).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "upstream_rejected");
    assert_eq!(
        body["error"]["message"],
        "messages.0.content: bad things in request"
    );

    let (status, _, body) = error_of(s.post(&chat("fail-401")).await?).await?;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("deployment"), "{message}");
    let text = body.to_string();
    for secret in [API_KEY, "x-api-key", "127.0.0.1", &s.fake.base_url()] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }

    let (status, _, body) = error_of(s.post(&chat("fail-500")).await?).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("upstream_error"))
    );
    assert!(!body.to_string().contains("127.0.0.1"));

    // What the Messages API cannot express is refused before any call.
    let before = s.fake.requests();
    let mut two = chat("claude");
    two["n"] = json!(2);
    let (status, _, body) = error_of(s.post(&two).await?).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.fake.requests(), before);
    let embeddings = s
        .http
        .post(s.edge.url("/v1/embeddings"))
        .bearer_auth(&s.secret)
        .json(&json!({"model": "claude", "input": "hi"}))
        .send()
        .await?;
    assert_eq!(embeddings.status(), 400);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_anthropic_times_out() -> Result<()> {
    let s = setup_with(Duration::from_millis(800), Duration::from_millis(800)).await?;
    for stream in [false, true] {
        let started = Instant::now();
        let response = s
            .post(&json!({"model": "hang", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}))
            .await?;
        let (status, _, body) = error_of(response).await?;
        assert_eq!(status, 504, "{body}");
        assert_eq!(body["error"]["code"], "upstream_timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    Ok(())
}
