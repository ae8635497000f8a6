//! The request path against the `mock` provider: auth, access, validation, headers, streaming,
//! `/v1/models`, the routes without `/v1`, health.

use tollgate_test_support::edge as common;

use anyhow::Result;
use common::*;
use serde_json::{Value, json};

struct Setup {
    cluster: TestCluster,
    edge: TestEdge,
    secret: String,
    http: reqwest::Client,
}

async fn setup() -> Result<Setup> {
    let mut cluster = TestCluster::start().await?;
    let admin = &mut cluster.admin;
    mock_deployment(admin, "mock-small", &[("output_tokens", "5")]).await?;
    mock_deployment(admin, "mock-other", &[]).await?;
    set_price(admin, "mock-small", [1.0, 2.0, 0.0, 0.0]).await?;
    let (_, secret) = create_key(admin, &["mock-small"]).await?;
    let edge = cluster.edge().await?;
    Ok(Setup {
        cluster,
        edge,
        secret,
        http: reqwest::Client::new(),
    })
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream})
}

impl Setup {
    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Result<reqwest::Response> {
        let mut request = self.http.post(self.edge.url(path)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        Ok(request.send().await?)
    }

    /// A chat completion request with the setup's key.
    async fn chat(&self, body: &Value) -> Result<reqwest::Response> {
        self.edge.chat(&self.secret, body).await
    }
}

async fn error_code(response: reqwest::Response) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    Ok((
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_is_answered_priced_and_labelled() -> Result<()> {
    let s = setup().await?;
    let response = s.chat(&chat_body("mock-small", false)).await?;
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
    let usage = &body["usage"];
    let expected = (usage["prompt_tokens"].as_f64().unwrap_or(0.0) * 1.0 + 5.0 * 2.0) / 1e6;
    assert!((cost - expected).abs() < 1e-6, "cost {cost} vs {expected}");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    Ok(())
}

/// With tracing off, the usage event still names the client's trace (from `traceparent`), so
/// that the ledger and the client's own traces can be joined; without one it names none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_event_carries_the_clients_trace_id() -> Result<()> {
    use futures::StreamExt;
    use prost::Message;
    let s = setup().await?;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let traced = s
        .http
        .post(s.edge.url("/v1/chat/completions"))
        .bearer_auth(&s.secret)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .json(&chat_body("mock-small", false))
        .send()
        .await?;
    let untraced = s.chat(&chat_body("mock-small", false)).await?;
    let id = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().map(str::to_owned);
    let mut expected =
        std::collections::HashMap::from([(id(&traced)?, trace), (id(&untraced)?, "")]);
    let mut events = s
        .cluster
        .bus
        .subscribe(tollgate_runtime::bus::USAGE, 0)
        .await?;
    while !expected.is_empty() {
        let message = tokio::time::timeout(std::time::Duration::from_secs(20), events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the usage subscription ended"))??;
        let event = tollgate_proto::usage::UsageEvent::decode(message.payload)?;
        if let Some(trace_id) = expected.remove(&event.request_id) {
            assert_eq!(event.trace_id, trace_id, "{}", event.request_id);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_relayed_without_the_usage_chunk_unless_asked() -> Result<()> {
    let s = setup().await?;
    let plain = s
        .edge
        .post(
            "/chat/completions",
            &s.secret,
            &chat_body("mock-small", true),
        )
        .await?;
    assert_eq!(plain.headers()["content-type"], "text/event-stream");
    let text = plain.text().await?;
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(!text.contains("\"usage\""), "usage was not asked for");
    let mut with_usage = chat_body("mock-small", true);
    with_usage["stream_options"] = json!({"include_usage": true});
    let text = s.chat(&with_usage).await?.text().await?;
    assert!(text.contains("\"completion_tokens\":5"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_models_and_bodies_get_openai_shaped_errors() -> Result<()> {
    let s = setup().await?;
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (None, chat_body("mock-small", false), 401, "invalid_api_key"),
        (
            Some("tg-not-a-key"),
            chat_body("mock-small", false),
            401,
            "invalid_api_key",
        ),
        (
            Some(&s.secret),
            chat_body("mock-other", false),
            403,
            "model_not_allowed",
        ),
        (
            Some(&s.secret),
            json!({"model": "mock-small"}),
            400,
            "invalid_request_error",
        ),
        (
            Some(&s.secret),
            json!({"model": "mock-small", "messages": "hi"}),
            400,
            "invalid_request_error",
        ),
        (
            Some(&s.secret),
            json!({"model": "mock-small", "messages": [{"role": "robot", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            Some(&s.secret),
            json!({"model": "mock-small", "messages": [{"role": "user"}], "stream": "yes"}),
            400,
            "invalid_request_error",
        ),
    ];
    for (key, body, status, code) in cases {
        let got = error_code(s.post("/v1/chat/completions", key, &body).await?).await?;
        assert_eq!(got, (status, code.to_owned()), "for {body}");
    }
    let response = s
        .http
        .post(s.edge.url("/v1/chat/completions"))
        .bearer_auth(&s.secret)
        .body("{not json")
        .send()
        .await?;
    assert_eq!(
        error_code(response).await?,
        (400, "invalid_request_error".to_owned())
    );
    // Bodies over the size limit: edge/tests/listener.rs (raw TCP, so the refusal cannot race
    // the client's write).
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_not_found_and_models_lists_only_allowed_ones() -> Result<()> {
    let mut s = setup().await?;
    let (_, all_models) = create_key(&mut s.cluster.admin, &[]).await?;
    s.cluster.sync(&s.edge).await?;
    let response = s
        .edge
        .chat(&all_models, &chat_body("no-such-model", false))
        .await?;
    assert_eq!(
        error_code(response).await?,
        (404, "model_not_found".to_owned())
    );
    // A key limited to other models hears the same: the model does not exist (as OpenAI says).
    let response = s.chat(&chat_body("no-such-model", false)).await?;
    assert_eq!(
        error_code(response).await?,
        (404, "model_not_found".to_owned())
    );
    let listed: Value = s
        .http
        .get(s.edge.url("/v1/models"))
        .header("x-api-key", &s.secret)
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["mock-small"]);
    Ok(())
}

/// OpenAI clients differ in whether their base URL ends in `/v1`: every OpenAI route answers
/// both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openai_route_is_served_with_and_without_v1() -> Result<()> {
    let s = setup().await?;
    let posts = [
        ("/chat/completions", chat_body("mock-small", false)),
        (
            "/embeddings",
            json!({"model": "mock-small", "input": "hello"}),
        ),
        (
            "/responses",
            json!({"model": "mock-small", "input": "hello"}),
        ),
    ];
    for prefix in ["/v1", ""] {
        for (path, body) in &posts {
            let response = s
                .post(&format!("{prefix}{path}"), Some(&s.secret), body)
                .await?;
            let status = response.status();
            assert_eq!(status, 200, "{prefix}{path}: {}", response.text().await?);
        }
        let models = s
            .http
            .get(s.edge.url(&format!("{prefix}/models")))
            .bearer_auth(&s.secret)
            .send()
            .await?;
        assert_eq!(models.status(), 200, "{prefix}/models");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_policy_is_not_ready_and_serves_nothing() -> Result<()> {
    let (nats, prefix, bus) = jetstream().await?;
    // No control plane and an empty policy stream: nothing to load.
    let edge = TestEdge::start(&nats, &prefix, bus, None).await?;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(edge.url("/health/ready")).send().await?.status(),
        503
    );
    assert_eq!(
        http.get(edge.url("/health/live")).send().await?.status(),
        200
    );
    let response = http
        .post(edge.url("/v1/chat/completions"))
        .bearer_auth("tg-x")
        .json(&chat_body("m", false))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    Ok(())
}
