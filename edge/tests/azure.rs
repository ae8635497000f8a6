//! The `azure_openai` provider end to end: clients speak OpenAI's API to the edge, the edge
//! calls a fake Azure OpenAI (`FakeOpenAi`'s Azure paths) at the deployment's path with the
//! `api-version` query and the `api-key` (or Entra ID bearer) header. The translation itself is
//! pinned by the conformance suite's golden fixtures (`tests/conformance/golden/azure_openai/`).

mod common;

use anyhow::Result;
use common::*;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::{Deployment, Price, PutCredentialRequest};
use tollgate_test_support::openai_upstream::FakeOpenAi;

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

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_reaches_the_deployment_path_with_the_api_key() -> Result<()> {
    let s = setup().await?;
    s.json("/v1/chat/completions", &hello("gpt-azure")).await?;
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
