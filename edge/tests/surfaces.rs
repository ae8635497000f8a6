//! What holds whichever surface a request comes through: a key's rate limit spent through one
//! surface refuses the others, each in its own error shape; and a stream the provider cuts
//! ends with the surface's own error event.

use tollgate_test_support::edge as common;

use anyhow::{Result, ensure};
use common::*;
use serde_json::{Value, json};
use tollgate_proto::admin::RateLimit;
use tollgate_test_support::bedrock_upstream::read_event_stream;
use tollgate_test_support::openai_upstream::FakeOpenAi;

/// (path, body) of one request for `model` on each surface: OpenAI chat, Bedrock Converse,
/// Anthropic Messages, OpenAI Responses.
fn requests(model: &str) -> [(String, Value); 4] {
    [
        (
            "/v1/chat/completions".into(),
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            format!("/model/{model}/converse"),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
        ),
        (
            "/v1/messages".into(),
            json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/responses".into(),
            json!({"model": model, "input": "hi"}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spent_through_one_surface_refuses_every_surface_in_its_own_shape()
-> Result<()> {
    let mut cluster = TestCluster::start().await?;
    mock_deployment(&mut cluster.admin, "mock", &[]).await?;
    let (key_id, secret) = create_key(&mut cluster.admin, &[]).await?;
    let limit = RateLimit {
        rpm: 4,
        ..key_limit(&key_id)
    };
    cluster.admin.set_rate_limit(limit).await?;
    let edge = cluster.edge().await?;
    let (edge, secret) = (&edge, secret.as_str());

    // Every surface is served while the limit lasts; then the Bedrock surface spends the rest.
    for (path, body) in requests("mock") {
        // A limit this small is leased to the edge one request at a time, in the background:
        // the gap lets each lease arrive before the next request, on a busy machine too.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let response = edge.post(&path, secret, &body).await?;
        ensure!(
            response.status() == 200,
            "{path}: HTTP {}",
            response.status()
        );
    }
    let (converse, body) = &requests("mock")[1];
    let mut refused = None;
    for _ in 0..20 {
        let response = edge.post(converse, secret, body).await?;
        if response.status() != 200 {
            refused = Some(response);
            break;
        }
    }
    let Some(refused) = refused else {
        anyhow::bail!("20 requests over a limit of 4 per minute were all served");
    };
    ensure!(refused.status() == 429, "HTTP {}", refused.status());

    let shapes = requests("mock").map(|(path, body)| async move {
        let response = edge.post(&path, secret, &body).await?;
        let status = response.status().as_u16();
        let error_type = header(&response, "x-amzn-errortype").map(str::to_owned);
        let body: Value = response.json().await?;
        anyhow::Ok((path, status, error_type, body))
    });
    let [chat, bedrock, messages, responses] = futures::future::try_join_all(shapes)
        .await?
        .try_into()
        .map_err(|_| anyhow::anyhow!("four answers"))?;
    for (path, status, _, body) in [&chat, &bedrock, &messages, &responses] {
        ensure!(*status == 429, "{path}: HTTP {status} {body}");
    }
    ensure!(
        chat.3["error"]["code"] == "rate_limit_exceeded",
        "{}",
        chat.3
    );
    ensure!(
        responses.3["error"]["code"] == "rate_limit_exceeded",
        "{}",
        responses.3
    );
    ensure!(
        bedrock.2.as_deref() == Some("ThrottlingException"),
        "{bedrock:?}"
    );
    ensure!(bedrock.3["message"].is_string(), "{}", bedrock.3);
    ensure!(messages.3["type"] == "error", "{}", messages.3);
    ensure!(
        messages.3["error"]["type"] == "rate_limit_error",
        "{}",
        messages.3
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_the_provider_ends_with_each_surfaces_error_event() -> Result<()> {
    let fake = FakeOpenAi::start().await?;
    let mut staging = Staging::start().await?;
    let template = staging
        .provider(
            "openai_compatible",
            fake.base_url(),
            &[("api_key", "sk-upstream")],
        )
        .await?;
    // The fake sends two events of this model's stream and drops the connection.
    staging.deploy(&template, &[("cut", "cut-stream")]).await?;
    let s = staging.serve(fake, |_| {}).await?;

    let converse = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]});
    let bytes = s
        .post_to("/model/cut/converse-stream", &converse)
        .await?
        .bytes()
        .await?;
    let events = read_event_stream(&bytes)?;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    ensure!(kinds.first() == Some(&"messageStart"), "{kinds:?}");
    ensure!(
        kinds.last() == Some(&"modelStreamErrorException"),
        "{kinds:?}"
    );
    ensure!(
        kinds.iter().filter(|k| k.ends_with("Exception")).count() == 1,
        "{kinds:?}"
    );

    for (path, body) in [
        (
            "/v1/messages",
            json!({"model": "cut", "max_tokens": 10, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "cut", "input": "hi", "stream": true}),
        ),
    ] {
        let text = s.post_to(path, &body).await?.text().await?;
        let last = text
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .last()
            .unwrap_or_default();
        ensure!(last.starts_with("event: error\n"), "{path}: {text}");
        ensure!(text.matches("event: error").count() == 1, "{path}: {text}");
    }
    Ok(())
}
