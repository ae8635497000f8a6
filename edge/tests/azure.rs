//! The `azure_openai` provider end to end: clients speak OpenAI's API to the edge, the edge
//! calls a fake Azure OpenAI (`FakeOpenAi`'s Azure paths) at the deployment's path with the
//! `api-version` query and the `api-key` (or Entra ID bearer) header. The translation itself is
//! pinned by the conformance suite's golden fixtures (`tests/conformance/golden/azure_openai/`).

use tollgate_test_support::edge as common;

use anyhow::Result;
use common::*;
use serde_json::{Value, json};
use tollgate_proto::admin::Deployment;
use tollgate_test_support::openai_upstream::FakeOpenAi;

const API_KEY: &str = "azure-test-key";
const BEARER_TOKEN: &str = "entra-test-token";

type Setup = Gateway<FakeOpenAi>;

async fn setup() -> Result<Setup> {
    let fake = FakeOpenAi::start().await?;
    let root = fake.base_url().trim_end_matches("/v1").to_owned();
    let mut staging = Staging::start().await?;
    let api_key = [("api_key", API_KEY)];
    let template = staging
        .provider("azure_openai", format!("{root}/"), &api_key)
        .await?;
    let entra = staging
        .credential("azure_openai", &[("bearer_token", BEARER_TOKEN)])
        .await?;
    let models = [
        ("gpt-azure", "gpt4o-prod"),
        ("embed", "text-embedding-prod"),
    ];
    staging.deploy(&template, &models).await?;
    let preview = with_setting(&template, "api_version", "2025-01-01-preview");
    staging
        .deploy(&preview, &[("gpt-azure-preview", "gpt4o-prod")])
        .await?;
    let entra = Deployment {
        credential_id: entra,
        ..template
    };
    staging
        .deploy(&entra, &[("gpt-entra", "gpt4o-prod")])
        .await?;
    staging.serve(fake, |_| {}).await
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_reaches_the_deployment_path_with_the_api_key() -> Result<()> {
    let s = setup().await?;
    s.json(&hello("gpt-azure")).await?;
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(s.fake.last_header("api-key").as_deref(), Some(API_KEY));
    assert_eq!(s.fake.last_header("authorization"), None);

    // The deployment's api_version setting is sent instead of the default.
    s.json(&hello("gpt-azure-preview")).await?;
    assert_eq!(
        s.fake.last_uri().as_deref(),
        Some("/openai/deployments/gpt4o-prod/chat/completions?api-version=2025-01-01-preview")
    );

    // An Entra ID credential is sent as a bearer token, without api-key.
    s.json(&hello("gpt-entra")).await?;
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
        .json_to(
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
