//! The `azure_openai` provider end to end: clients speak OpenAI's API to the edge, the edge
//! calls a fake Azure OpenAI (`FakeOpenAi`'s Azure paths) at the deployment's path with the
//! `api-version` query and the `api-key` (or Entra ID bearer) header.

mod common;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::{Deployment, Price, PutCredentialRequest};
use tollgate_test_support::openai_upstream::{ANSWER, FakeOpenAi};

const API_KEY: &str = "azure-test-key";
const BEARER_TOKEN: &str = "entra-test-token";

struct Setup {
    _cp: TestControlPlane,
    edge: TestEdge,
    fake: FakeOpenAi,
    secret: String,
    http: reqwest::Client,
}

async fn setup() -> Result<Setup> {
    let fake = FakeOpenAi::start().await?;
    let root = fake.base_url().trim_end_matches("/v1").to_owned();
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    let credential = |name: &str, field: &str, value: &str| PutCredentialRequest {
        name: name.into(),
        provider: "azure_openai".into(),
        secret_fields: [(field.to_owned(), value.to_owned())].into(),
    };
    let key = admin
        .put_credential(credential("azure-key", "api_key", API_KEY))
        .await?
        .into_inner()
        .id;
    let entra = admin
        .put_credential(credential("azure-entra", "bearer_token", BEARER_TOKEN))
        .await?
        .into_inner()
        .id;
    // (model, Azure deployment, credential, api_version setting)
    let models = [
        ("gpt-azure", "gpt4o-prod", &key, None),
        (
            "gpt-azure-preview",
            "gpt4o-prod",
            &key,
            Some("2025-01-01-preview"),
        ),
        ("gpt-entra", "gpt4o-prod", &entra, None),
        ("embed", "text-embedding-prod", &key, None),
        ("fail-429", "fail-429", &key, None),
        ("fail-400", "fail-400", &key, None),
        ("fail-401", "fail-401", &key, None),
    ];
    for (model, upstream, credential, version) in models {
        admin
            .upsert_deployment(Deployment {
                model_name: model.into(),
                provider: "azure_openai".into(),
                upstream_model: upstream.into(),
                api_base: format!("{root}/"),
                credential_id: credential.clone(),
                settings: version
                    .map(|v| [("api_version".to_owned(), v.to_owned())].into())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .await?;
    }
    admin
        .set_price(Price {
            model: "gpt-azure".into(),
            input_per_mtok: 2.5,
            output_per_mtok: 10.0,
            ..Default::default()
        })
        .await?;
    let (_, secret) = create_key(&mut admin, &[]).await?;
    let sequence = last_sequence(&mut admin).await?;
    let mut config = EdgeConfig::local(&nats);
    config.bus_prefix = prefix;
    config.edge_id = tollgate_test_support::unique_name("edge");
    config.credential_key = Some(SealingKey::from_bytes(SEALING_KEY));
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
    async fn post(&self, path: &str, body: &Value) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(self.edge.url(path))
            .bearer_auth(&self.secret)
            .json(body)
            .send()
            .await?)
    }

    async fn json(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self.post(path, body).await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status == 200, "HTTP {status}: {body}");
        Ok(body)
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_reaches_the_deployment_path_with_the_api_key() -> Result<()> {
    let s = setup().await?;
    let response = s.post("/v1/chat/completions", &hello("gpt-azure")).await?;
    assert_eq!(response.status(), 200);
    let cost: f64 = response.headers()["x-tollgate-cost-usd"]
        .to_str()?
        .parse()?;
    let body: Value = response.json().await?;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    let prompt = 3 + words("Hello there");
    assert_eq!(body["usage"]["prompt_tokens"], prompt);
    let expected = (prompt as f64 * 2.5 + words(ANSWER) as f64 * 10.0) / 1e6;
    assert!((cost - expected).abs() < 1e-6, "cost {cost} vs {expected}");

    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(s.fake.last_header("api-key").as_deref(), Some(API_KEY));
    assert_eq!(s.fake.last_header("authorization"), None);

    // The deployment's api_version setting is sent instead of the default.
    s.json("/v1/chat/completions", &hello("gpt-azure-preview"))
        .await?;
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/openai/deployments/gpt4o-prod/chat/completions?api-version=2025-01-01-preview")
    );

    // An Entra ID credential is sent as a bearer token, without api-key.
    s.json("/v1/chat/completions", &hello("gpt-entra")).await?;
    assert_eq!(
        s.fake.last_header("authorization").as_deref(),
        Some(format!("Bearer {BEARER_TOKEN}").as_str())
    );
    assert_eq!(s.fake.last_header("api-key"), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_relayed_with_usage_when_asked() -> Result<()> {
    let s = setup().await?;
    let mut request = hello("gpt-azure");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = s.post("/v1/chat/completions", &request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await?;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, ANSWER);
    let usage = chunks.last().context("no chunks")?;
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], words(ANSWER));
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(s.fake.last_header("api-key").as_deref(), Some(API_KEY));

    // Without include_usage the edge still asks Azure for it, and keeps it to itself.
    request
        .as_object_mut()
        .context("object")?
        .remove("stream_options");
    let text = s
        .post("/v1/chat/completions", &request)
        .await?
        .text()
        .await?;
    assert!(!text.contains("\"usage\""), "{text}");
    let (_, sent) = s.fake.last_request().context("no request")?;
    assert_eq!(sent["stream_options"]["include_usage"], true);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_reach_the_deployment_path() -> Result<()> {
    let s = setup().await?;
    let body = s
        .json(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["one two", "three"]}),
        )
        .await?;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/openai/deployments/text-embedding-prod/embeddings?api-version=2024-10-21")
    );
    assert_eq!(s.fake.last_header("api-key").as_deref(), Some(API_KEY));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_errors_are_mapped_without_leaking_the_key() -> Result<()> {
    let s = setup().await?;
    let response = s.post("/v1/chat/completions", &hello("fail-429")).await?;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let response = s.post("/v1/chat/completions", &hello("fail-400")).await?;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "upstream_rejected");
    assert_eq!(body["error"]["message"], "bad things in request");

    let response = s.post("/v1/chat/completions", &hello("fail-401")).await?;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "upstream_error");
    let text = body.to_string();
    assert!(text.contains("deployment"), "{text}");
    for secret in [API_KEY, "api-key", "127.0.0.1", "api-version"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    Ok(())
}
