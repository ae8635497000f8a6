//! The `sagemaker` provider through the edge over HTTP: the official AWS SDK client
//! (InvokeEndpoint and InvokeEndpointWithResponseStream, SigV4-signed with the deployment's
//! static credential) against a fake SageMaker runtime, for both container formats: `messages`
//! (an OpenAI-compatible Messages API container) and `tgi` (TGI's native format).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::{Deployment, Price, PutCredentialRequest};
use tollgate_test_support::sagemaker_upstream::{
    ANSWER, FakeSagemaker, MODEL_ERROR_MESSAGE, STREAM_ERROR_MESSAGE, VALIDATION_MESSAGE,
};

const ACCESS_KEY_ID: &str = "AKIDSAGEMAKER";
const SECRET_ACCESS_KEY: &str = "secret-sagemaker-test";

struct Setup {
    _cp: TestControlPlane,
    edge: TestEdge,
    fake: FakeSagemaker,
    secret: String,
    /// Deployment id of each model name.
    deployments: HashMap<String, String>,
    http: reqwest::Client,
}

async fn setup() -> Result<Setup> {
    setup_with(Duration::from_secs(5), Duration::from_secs(10)).await
}

/// A control plane and an edge whose SageMaker models all live on one fake SageMaker, with the
/// edge's upstream timeouts (first byte / between events, and total).
async fn setup_with(first_byte: Duration, total: Duration) -> Result<Setup> {
    let fake = FakeSagemaker::start().await?;
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    let credential = admin
        .put_credential(PutCredentialRequest {
            name: "fake-sagemaker".into(),
            provider: "sagemaker".into(),
            secret_fields: [
                ("aws_access_key_id".to_owned(), ACCESS_KEY_ID.to_owned()),
                (
                    "aws_secret_access_key".to_owned(),
                    SECRET_ACCESS_KEY.to_owned(),
                ),
            ]
            .into(),
        })
        .await?
        .into_inner();
    // (model name, endpoint name, format setting)
    let models = [
        ("llama", "lmi-llama", None),
        ("llama-no-usage", "lmi-no-usage", Some("messages")),
        ("mistral-tgi", "tgi-mistral", Some("tgi")),
        ("fail-throttle", "fail-throttle", None),
        ("fail-validation", "fail-validation", None),
        ("fail-model", "fail-model", None),
        ("fail-model-500", "fail-model-500", None),
        ("fail-denied", "fail-denied", None),
        ("fail-unavailable", "fail-unavailable", None),
        ("fail-internal", "fail-internal", None),
        ("fail-midstream", "fail-midstream", None),
        ("hang", "hang", None),
        ("stall-stream", "stall-stream", None),
    ];
    let mut deployments = HashMap::new();
    for (model, endpoint, format) in models {
        let deployment = admin
            .upsert_deployment(Deployment {
                model_name: model.into(),
                provider: "sagemaker".into(),
                upstream_model: endpoint.into(),
                region: "eu-west-1".into(),
                api_base: fake.endpoint_url(),
                credential_id: credential.id.clone(),
                settings: format
                    .map(|f| [("format".to_owned(), f.to_owned())].into())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .await?
            .into_inner();
        deployments.insert(model.to_owned(), deployment.id);
    }
    for model in ["llama", "mistral-tgi"] {
        admin
            .set_price(Price {
                model: model.into(),
                input_per_mtok: 1.0,
                output_per_mtok: 2.0,
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
        deployments,
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

    async fn chat(&self, body: &Value) -> Result<Value> {
        let response = self.post(body).await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status == 200, "HTTP {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// The JSON chunks of a streamed answer, and whether it ended with `[DONE]`.
    async fn stream(&self, body: &Value) -> Result<(Vec<Value>, bool)> {
        let response = self.post(body).await?;
        anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await?;
        let mut chunks = Vec::new();
        let mut done = false;
        for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
            let data = event
                .strip_prefix("data: ")
                .with_context(|| format!("not an SSE data event: {event:?}"))?;
            assert!(!done, "an event after [DONE]: {data}");
            if data == "[DONE]" {
                done = true;
            } else {
                chunks.push(serde_json::from_str(data)?);
            }
        }
        Ok((chunks, done))
    }

    fn last_body(&self) -> Value {
        self.fake.last_request().map(|r| r.body).unwrap_or_default()
    }
}

fn user(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn streamed(model: &str, text: &str) -> Value {
    let mut body = user(model, text);
    body["stream"] = json!(true);
    body
}

/// The text of a stream's content deltas.
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_endpoint_is_invoked_signed_and_priced() -> Result<()> {
    let s = setup().await?;
    let body = json!({"model": "llama", "max_tokens": 100, "temperature": 0.3,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "hello there"}]});
    let response = s.post(&body).await?;
    assert_eq!(response.status(), 200);
    let cost: f64 = response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?;
    let answer: Value = response.json().await?;
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    // "Be brief." + "hello there" = 4 words + 3; the answer is 5 words.
    assert_eq!(answer["usage"]["prompt_tokens"], 7);
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    let expected = (7.0 * 1.0 + 5.0 * 2.0) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "cost {cost} vs {expected}");

    let request = s
        .fake
        .last_request()
        .context("no request reached SageMaker")?;
    assert_eq!(request.operation, "invocations");
    assert_eq!(request.endpoint, "lmi-llama");
    // The OpenAI body passes through, its model the endpoint's name.
    assert_eq!(request.body["messages"], body["messages"]);
    assert_eq!(request.body["max_tokens"], 100);
    assert_eq!(request.body["model"], "lmi-llama");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("accept"), Some("application/json"));
    // SigV4 with the deployment's credential, for SageMaker in the deployment's region.
    let authorization = request.header("authorization").unwrap_or_default();
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")),
        "{authorization}"
    );
    assert!(
        authorization.contains("/eu-west-1/sagemaker/aws4_request"),
        "{authorization}"
    );
    assert!(authorization.contains("Signature="), "{authorization}");
    assert!(!authorization.contains(SECRET_ACCESS_KEY));
    assert!(request.header("x-amz-date").is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_stream_is_reframed_with_usage_only_when_asked() -> Result<()> {
    let s = setup().await?;
    let mut body = streamed("llama", "hello there");
    body["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = s.stream(&body).await?;
    assert!(done, "the stream must end with [DONE]");
    let request = s.fake.last_request().context("no request")?;
    assert_eq!(request.operation, "invocations-response-stream");
    assert_eq!(request.body["stream"], true);
    assert_eq!(request.body["stream_options"]["include_usage"], true);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chunks), ANSWER);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 5);
    assert_eq!(usage["usage"]["completion_tokens"], 5);

    // Without include_usage the edge still asks for it (to account the stream) but passes none on.
    let response = s.post(&streamed("llama", "hello there")).await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    assert_eq!(s.last_body()["stream_options"]["include_usage"], true);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"usage\""),
        "usage was not asked for: {text}"
    );
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");

    // A container that sends no usage: none is made up, the answer still arrives whole.
    let mut body = streamed("llama-no-usage", "hello there");
    body["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = s.stream(&body).await?;
    assert!(done);
    assert_eq!(streamed_text(&chunks), ANSWER);
    assert!(
        chunks.iter().all(|c| c["usage"].is_null()),
        "no usage chunk: {chunks:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tgi_endpoint_gets_a_prompt_and_answers_in_openai_format() -> Result<()> {
    let s = setup().await?;
    let body = json!({"model": "mistral-tgi", "max_tokens": 64, "temperature": 0.5,
        "top_p": 0.9, "stop": ["END"],
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "hello there"}]});
    let response = s.post(&body).await?;
    assert_eq!(response.status(), 200);
    let cost: f64 = response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?;
    let answer: Value = response.json().await?;
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "tgi-mistral");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let sent = s.last_body();
    let prompt = "System: Be brief.\n\nUser: hello there\n\nAssistant:";
    assert_eq!(sent["inputs"], prompt);
    let parameters = &sent["parameters"];
    assert_eq!(parameters["max_new_tokens"], 64);
    assert_eq!(parameters["stop"], json!(["END"]));
    assert!((parameters["temperature"].as_f64().unwrap_or_default() - 0.5).abs() < 1e-9);
    assert!((parameters["top_p"].as_f64().unwrap_or_default() - 0.9).abs() < 1e-9);
    assert_eq!(parameters["details"], true);
    assert!(sent.get("messages").is_none());
    // Prompt tokens from TGI's prefill (the prompt's 7 words + 3), output from its details.
    assert_eq!(answer["usage"]["prompt_tokens"], 10);
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    let expected = (10.0 * 1.0 + 5.0 * 2.0) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "cost {cost} vs {expected}");

    // Streamed: TGI's token events become OpenAI chunks; the special end token is not text.
    let mut body = streamed("mistral-tgi", "hello there");
    body["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = s.stream(&body).await?;
    assert!(done);
    let sent = s.fake.last_request().context("no request")?;
    assert_eq!(sent.operation, "invocations-response-stream");
    assert_eq!(sent.body["stream"], true);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["model"], "tgi-mistral");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chunks), ANSWER);
    assert!(chunks.len() > 4, "the answer arrives in several deltas");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    // "User: hello there\n\nAssistant:" is 4 words + 3; 5 words and the end token.
    assert_eq!(usage["usage"]["prompt_tokens"], 7);
    assert_eq!(usage["usage"]["completion_tokens"], 6);

    // Without include_usage, no usage reaches the client.
    let response = s.post(&streamed("mistral-tgi", "hello")).await?;
    let text = response.text().await?;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\""), "{text}");

    // Content TGI cannot take is refused before anything is sent.
    let requests = s.fake.requests();
    let image = json!({"model": "mistral-tgi", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let response = s.post(&image).await?;
    assert_eq!(response.status(), 400);
    assert_eq!(s.fake.requests(), requests, "nothing was sent upstream");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagemaker_errors_map_to_the_contract_codes() -> Result<()> {
    let s = setup().await?;
    for stream in [false, true] {
        let ask = |model: &str| {
            let mut body = user(model, "hello");
            body["stream"] = json!(stream);
            body
        };
        let response = s.post(&ask("fail-throttle")).await?;
        assert_eq!(response.status(), 429, "stream {stream}");
        let error: Value = response.json().await?;
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");

        let response = s.post(&ask("fail-validation")).await?;
        assert_eq!(response.status(), 400, "stream {stream}");
        let error: Value = response.json().await?;
        assert_eq!(error["error"]["message"], VALIDATION_MESSAGE);

        // The container's own message, not SageMaker's wrapper naming the account and logs.
        let response = s.post(&ask("fail-model")).await?;
        assert_eq!(response.status(), 400, "stream {stream}");
        let error: Value = response.json().await?;
        assert_eq!(error["error"]["message"], MODEL_ERROR_MESSAGE);
        assert_eq!(error["error"]["code"], "upstream_rejected");

        let response = s.post(&ask("fail-model-500")).await?;
        assert_eq!(response.status(), 502, "stream {stream}");
        let text = response.text().await?;
        assert!(text.contains("CUDA out of memory"), "{text}");
        assert!(!text.contains("000000000000"), "{text}");

        let response = s.post(&ask("fail-denied")).await?;
        assert_eq!(response.status(), 502, "stream {stream}");
        let text = response.text().await?;
        let deployment = &s.deployments["fail-denied"];
        assert!(text.contains(&format!("deployment {deployment}")), "{text}");
        assert!(text.contains("refused the credentials"), "{text}");
        assert!(
            !text.contains(SECRET_ACCESS_KEY) && !text.contains(ACCESS_KEY_ID),
            "{text}"
        );
        assert!(!text.contains("127.0.0.1"), "no upstream URL: {text}");

        for model in ["fail-unavailable", "fail-internal"] {
            let response = s.post(&ask(model)).await?;
            assert_eq!(response.status(), 502, "{model} stream {stream}");
            let error: Value = response.json().await?;
            assert_eq!(error["error"]["code"], "upstream_error");
        }
    }

    // An exception in the middle of a stream is reported in-band, after what was sent.
    let response = s.post(&streamed("fail-midstream", "hello there")).await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    assert!(text.contains("\"role\":\"assistant\""), "{text}");
    assert!(text.contains("upstream_error"), "{text}");
    assert!(text.contains(STREAM_ERROR_MESSAGE), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_times_out() -> Result<()> {
    let s = setup_with(Duration::from_millis(800), Duration::from_millis(800)).await?;
    for stream in [false, true] {
        let mut body = user("hang", "hello");
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
    // A stream that stops is ended with an in-band timeout.
    let started = std::time::Instant::now();
    let response = s.post(&streamed("stall-stream", "hello")).await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    assert!(text.contains("upstream_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Calls after a timeout still work on the same cached client.
    let answer = s.chat(&user("llama", "hello")).await?;
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    Ok(())
}
