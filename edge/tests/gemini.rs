//! The `gemini` provider end to end: clients speak OpenAI's API to the edge, the edge speaks
//! the Gemini API to a fake (`FakeGemini`), and the answers come back in OpenAI's format —
//! complete, streamed, with tool calls, images, embeddings, cached tokens and errors.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::{Deployment, Price, PutCredentialRequest};
use tollgate_test_support::gemini_upstream::{
    ANSWER, CACHED_TOKENS, FakeGemini, JSON_ANSWER, THOUGHT_SIGNATURE, TOOL_ARGS,
};

const API_KEY: &str = "gemini-test-key";
const INPUT_PRICE: f64 = 3.0;
const OUTPUT_PRICE: f64 = 25.0;
const CACHED_PRICE: f64 = 0.75;

struct Setup {
    _cp: TestControlPlane,
    edge: TestEdge,
    fake: FakeGemini,
    secret: String,
    http: reqwest::Client,
}

async fn setup() -> Result<Setup> {
    setup_with(Duration::from_secs(5), Duration::from_secs(10)).await
}

/// A control plane and an edge whose models are Gemini deployments on one fake, with the
/// edge's upstream timeouts (first byte / between chunks, and total).
async fn setup_with(first_byte: Duration, total: Duration) -> Result<Setup> {
    let fake = FakeGemini::start().await?;
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    let credential = admin
        .put_credential(PutCredentialRequest {
            name: "fake-gemini".into(),
            provider: "gemini".into(),
            secret_fields: [("api_key".to_owned(), API_KEY.to_owned())].into(),
        })
        .await?
        .into_inner();
    let models = [
        ("gemini", "gemini-test"),
        ("gemini-cached", "models/gemini-cached"),
        ("gemini-thinking", "gemini-thinking"),
        ("embed", "text-embedding-004"),
        ("fail-429", "fail-429"),
        ("fail-400", "fail-400"),
        ("fail-403", "fail-403"),
        ("fail-500", "fail-500"),
        ("hang", "hang"),
        ("slow-stream", "slow-stream"),
        ("cut-stream", "cut-stream"),
    ];
    for (model, upstream) in models {
        admin
            .upsert_deployment(Deployment {
                model_name: model.into(),
                provider: "gemini".into(),
                upstream_model: upstream.into(),
                api_base: fake.base_url(),
                credential_id: credential.id.clone(),
                ..Default::default()
            })
            .await?;
    }
    for model in ["gemini", "gemini-cached"] {
        admin
            .set_price(Price {
                model: model.into(),
                input_per_mtok: INPUT_PRICE,
                output_per_mtok: OUTPUT_PRICE,
                cached_input_per_mtok: CACHED_PRICE,
                ..Default::default()
            })
            .await?;
    }
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
    async fn post_to(&self, path: &str, body: &Value) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(self.edge.url(path))
            .bearer_auth(&self.secret)
            .json(body)
            .send()
            .await?)
    }

    async fn post(&self, body: &Value) -> Result<reqwest::Response> {
        self.post_to("/v1/chat/completions", body).await
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
            "model": "gemini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there"},
                {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
            ],
            "temperature": 0.5, "top_p": 0.9, "max_tokens": 100, "stop": ["never"],
        }))
        .await?;
    assert_eq!(response.status(), 200);
    for header in [
        "x-request-id",
        "x-tollgate-deployment",
        "x-tollgate-overhead-ms",
    ] {
        assert!(response.headers().contains_key(header), "missing {header}");
    }
    let cost: f64 = response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?;
    let body: Value = response.json().await?;
    assert_eq!(body["object"], "chat.completion");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(body["model"], "gemini-test");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], ANSWER);
    assert_eq!(choice["finish_reason"], "stop");
    let prompt = 3 + words("Be brief. Hello there How are you?");
    let completion = words(ANSWER);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": 0}})
    );
    let expected = (prompt as f64 * INPUT_PRICE + completion as f64 * OUTPUT_PRICE) / 1e6;
    assert!((cost - expected).abs() < 1e-6, "cost {cost} vs {expected}");

    // What reached Gemini: the key header, the model's method, the request in its shape.
    assert_eq!(
        s.fake.last_header("x-goog-api-key").as_deref(),
        Some(API_KEY)
    );
    assert_eq!(s.fake.last_header("authorization"), None);
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/gemini-test:generateContent")
    );
    assert_eq!(
        s.fake.last_body(),
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [
                {"text": "Hello there"}, {"text": "How are you?"}]}],
            "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9,
                "stopSequences": ["never"]},
        })
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_stop_and_json_mode_shape_the_answer() -> Result<()> {
    let s = setup().await?;
    let user = json!([{"role": "user", "content": "hi"}]);
    let body = s
        .json(&json!({"model": "gemini", "messages": user, "max_completion_tokens": 2}))
        .await?;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from ");
    assert_eq!(body["usage"]["completion_tokens"], 2);

    let body = s
        .json(&json!({"model": "gemini", "messages": user, "stop": "fake"}))
        .await?;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the ");

    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}},
        "required": ["answer"], "additionalProperties": false});
    let body = s
        .json(&json!({"model": "gemini", "messages": user, "response_format":
            {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": schema}}}))
        .await?;
    assert_eq!(body["choices"][0]["message"]["content"], JSON_ANSWER);
    let config = &s.fake.last_body()["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(
        config["responseSchema"],
        json!({"type": "object", "properties": {"answer": {"type": "string"}},
            "required": ["answer"]})
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_translated_to_openai_chunks_with_usage_when_asked() -> Result<()> {
    let s = setup().await?;
    let request = json!({"model": "gemini", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hello there"}]});
    let response = s.post(&request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await?;
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/gemini-test:streamGenerateContent?alt=sse")
    );
    assert_eq!(
        s.fake.last_header("x-goog-api-key").as_deref(),
        Some(API_KEY)
    );
    let (chunks, done) = parse_stream(&text)?;
    assert!(done, "no [DONE]: {text}");
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(&chunk["id"], id);
        assert_eq!(chunk["model"], "gemini-test");
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

    // Without include_usage, no usage anywhere.
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
async fn stream_chunks_are_sent_as_gemini_events_arrive() -> Result<()> {
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
        total - first > Duration::from_millis(600),
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
            &json!({"model": "gemini", "messages": messages, "tools": weather_tool(),
            "tool_choice": "auto"}),
        )
        .await?;
    let sent = s.fake.last_body();
    assert_eq!(
        sent["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather",
            "description": "The weather in a city",
            "parameters": weather_tool()[0]["function"]["parameters"]}]}])
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "AUTO"}})
    );
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_0");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .context("arguments")?,
    )?;
    assert_eq!(arguments, serde_json::from_str::<Value>(TOOL_ARGS)?);

    // The tool's result goes back, named after the call it answers; the fake checks it
    // answers a functionCall of the previous model turn.
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": "call_0",
        "content": "22 degrees and sunny"}));
    let body = s
        .json(&json!({"model": "gemini", "messages": messages, "tools": weather_tool()}))
        .await?;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The tool said: 22 degrees and sunny"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = s.fake.last_body();
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
            "response": {"content": "22 degrees and sunny"}}}]})
    );

    // A forced tool, streamed: the whole call in one delta, then the finish.
    let text = s
        .post(
            &json!({"model": "gemini", "stream": true, "messages": messages[..1],
            "tools": weather_tool(),
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        )
        .await?
        .text()
        .await?;
    assert_eq!(
        s.fake.last_body()["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY",
            "allowedFunctionNames": ["get_weather"]}})
    );
    let (chunks, done) = parse_stream(&text)?;
    assert!(done);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(
        calls,
        vec![&json!({"index": 0, "id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": TOOL_ARGS}})]
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("tool_calls")]);
    Ok(())
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
async fn images_reach_gemini_as_inline_data() -> Result<()> {
    let s = setup().await?;
    let body = s
        .json(
            &json!({"model": "gemini", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url",
                 "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            ]}]}),
        )
        .await?;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{ANSWER} I see 2 images: image/png, image/jpeg")
    );
    assert_eq!(
        s.fake.last_body()["contents"][0]["parts"],
        json!([
            {"text": "What is in these?"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
        ])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_are_reported_and_priced() -> Result<()> {
    let s = setup().await?;
    let response = s
        .post(&json!({"model": "gemini-cached",
            "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    assert_eq!(response.status(), 200);
    let cost: f64 = response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?;
    let body: Value = response.json().await?;
    // `models/` in the deployment's upstream model is not doubled in the path.
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/v1beta/models/gemini-cached:generateContent")
    );
    let prompt = 3 + words("hi") + CACHED_TOKENS;
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
        .post_to(
            "/v1/embeddings",
            &json!({"model": "embed", "input": "one two", "dimensions": 4}),
        )
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
        .post_to(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["one", "two"]}),
        )
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
        .post_to(
            "/v1/embeddings",
            &json!({"model": "embed", "input": "x", "encoding_format": "base64"}),
        )
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
        .post_to(
            "/v1/embeddings",
            &json!({"model": "embed", "input": [[1, 2, 3]]}),
        )
        .await?;
    assert_eq!(response.status(), 400);
    assert_eq!(s.fake.requests(), before);
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
async fn gemini_errors_are_mapped_without_leaking_the_key() -> Result<()> {
    let s = setup().await?;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    let (status, retry_after, body) = error_of(s.post(&chat("fail-429")).await?).await?;
    assert_eq!((status, retry_after.as_deref()), (429, Some("7")), "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let (status, _, body) = error_of(s.post(&chat("fail-400")).await?).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "upstream_rejected");
    assert_eq!(
        body["error"]["message"],
        "* GenerateContentRequest.contents: bad things in request"
    );

    let (status, _, body) = error_of(s.post(&chat("fail-403")).await?).await?;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("deployment"), "{message}");
    let text = body.to_string();
    for secret in [API_KEY, "x-goog-api-key", "127.0.0.1", &s.fake.base_url()] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }

    let (status, _, body) = error_of(s.post(&chat("fail-500")).await?).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("upstream_error"))
    );
    assert!(!body.to_string().contains("127.0.0.1"));

    // What Gemini cannot express is refused before any call.
    let before = s.fake.requests();
    let mut two = chat("gemini");
    two["n"] = json!(2);
    let (status, _, body) = error_of(s.post(&two).await?).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.fake.requests(), before);

    // A stream cut short is reported in-band.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_gemini_times_out() -> Result<()> {
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
