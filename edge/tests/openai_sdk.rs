//! The official OpenAI Python SDK against the edge, with an `openai_compatible` deployment on a
//! fake OpenAI upstream: `edge/tests/python/test_openai_sdk.py` exercises chat, streaming, tool
//! calls, embeddings, `/v1/models` and error mapping exactly as an application would.
//!
//! Needs a Python with the `openai` package, as `scripts/test` provides (`TOLLGATE_PYTHON` names the
//! interpreter, default `python3`). Without the package the test fails and says how to get it.

use tollgate_test_support::edge as common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_test_support::openai_upstream::FakeOpenAi;

const UPSTREAM_SECRET: &str = "sk-upstream-123";

type Setup = Gateway<FakeOpenAi>;

/// A control plane and an edge whose models all live on one fake upstream.
async fn setup() -> Result<Setup> {
    setup_with(|_| {}).await
}

/// [`setup`] with the edge's configuration changed by `configure`.
async fn setup_with(configure: impl FnOnce(&mut EdgeConfig)) -> Result<Setup> {
    let fake = FakeOpenAi::start().await?;
    let mut staging = Staging::start().await?;
    let api_key = [("api_key", UPSTREAM_SECRET)];
    let template = staging
        .provider("openai_compatible", fake.base_url(), &api_key)
        .await?;
    let models = [
        ("gpt-test", "gpt-upstream-x"),
        ("embed-test", "text-embedding-fake"),
    ];
    staging.deploy(&template, &models).await?;
    let failing = ["fail-500", "fail-429", "fail-400", "fail-401"];
    staging.deploy_as_named(&template, &failing).await?;
    let streams = ["cut-stream", "slow-stream", "hang"];
    staging.deploy_as_named(&template, &streams).await?;
    staging.serve(fake, configure).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_against_the_edge() -> Result<()> {
    let python = tollgate_test_support::python_with("openai").await?;

    let s = setup().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_openai_sdk.py");
    let env = [
        ("TOLLGATE_BASE_URL", s.edge.url("/v1")),
        ("TOLLGATE_KEY", s.secret.clone()),
        ("TOLLGATE_UPSTREAM_SECRET", UPSTREAM_SECRET.to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stdout = tollgate_test_support::run_python(&python, &[script.as_os_str()], &env).await?;
    println!("{stdout}");

    // Every call the SDK made reached the upstream with the deployment's own credential.
    assert!(
        s.fake.requests() >= 10,
        "only {} upstream calls",
        s.fake.requests()
    );
    assert_eq!(
        s.fake.last_header("authorization").as_deref(),
        Some("Bearer sk-upstream-123")
    );
    Ok(())
}

/// The SDK's Responses API (`client.responses.create`), served through the chat pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_responses_api_works_against_the_edge() -> Result<()> {
    let python = tollgate_test_support::python_with("openai").await?;
    let s = setup().await?;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_openai_responses.py");
    let models = format!(
        "gpt-test={}",
        tollgate_test_support::openai_upstream::ANSWER
    );
    let env = [
        ("TOLLGATE_BASE_URL", s.edge.url("/v1")),
        ("TOLLGATE_KEY", s.secret.clone()),
        ("TOLLGATE_MODELS", models),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stdout = tollgate_test_support::run_python(&python, &[script.as_os_str()], &env).await?;
    println!("{stdout}");
    // Plain, streamed, the round trip's two calls and the streamed call; the refused
    // previous_response_id went nowhere.
    assert_eq!(s.fake.requests(), 5);
    Ok(())
}

/// A LangGraph ReAct agent on `ChatOpenAI` runs its tool loop through the edge: the model asks
/// for the tool, the agent runs it, the model answers from its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_langgraph_react_agent_runs_its_tool_loop_through_the_edge() -> Result<()> {
    let python = tollgate_test_support::python_with("langgraph").await?;
    let s = setup().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_langgraph_agent.py");
    let base_url = s.edge.url("/v1");
    let env = [
        ("TOLLGATE_BASE_URL", base_url.as_str()),
        ("TOLLGATE_KEY", s.secret.as_str()),
    ];
    tollgate_test_support::run_python(&python, &[script.as_os_str()], &env).await?;
    // Two model turns: the tool call, then the answer.
    assert_eq!(s.fake.requests(), 2);
    Ok(())
}

/// The upstream sees the deployment's credential and model, never the client's; and no
/// answer, successful or not, streamed or not, reveals the upstream's API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_its_own_key_and_model_and_clients_never_see_the_key() -> Result<()> {
    let s = setup().await?;
    let http = reqwest::Client::new();
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "hello there"}]})
    };

    let response = http
        .post(s.edge.url("/v1/chat/completions"))
        .bearer_auth(&s.secret)
        .json(&chat("gpt-test", false))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let (headers, body) = s
        .fake
        .last_request()
        .context("the upstream got no request")?;
    let authorization: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(authorization, vec!["Bearer sk-upstream-123"]);
    assert_eq!(body["model"], "gpt-upstream-x");
    assert_eq!(body["messages"], chat("gpt-test", false)["messages"]);
    assert!(
        !headers.iter().any(|(_, v)| v.contains(&s.secret)),
        "the client's virtual key was forwarded upstream: {headers:?}"
    );

    let mut cases: Vec<(&str, Value)> = [
        "gpt-test",
        "fail-500",
        "fail-429",
        "fail-400",
        "fail-401",
        "no-such-model",
    ]
    .iter()
    .flat_map(|m| {
        [
            ("/v1/chat/completions", chat(m, false)),
            ("/v1/chat/completions", chat(m, true)),
        ]
    })
    .collect();
    cases.push(("/v1/chat/completions", chat("cut-stream", true)));
    cases.push((
        "/v1/embeddings",
        json!({"model": "embed-test", "input": ["a", "b"]}),
    ));
    cases.push(("/v1/embeddings", json!({"model": "fail-401", "input": "a"})));
    for (path, request) in cases {
        let response = http
            .post(s.edge.url(path))
            .bearer_auth(&s.secret)
            .json(&request)
            .send()
            .await?;
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        // A cut stream may end in a transport error; what arrived before it still counts.
        let body = response.text().await.unwrap_or_default();
        for text in [&headers, &body] {
            assert!(
                !text.contains(UPSTREAM_SECRET),
                "{path} {request} ({status}) revealed the upstream key: {text}"
            );
        }
    }
    Ok(())
}

/// A slow upstream stream reaches the client event by event, not buffered; an upstream that
/// never answers is cut off at the edge's timeout with a 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_streams_are_relayed_as_they_come_and_hung_upstreams_time_out() -> Result<()> {
    let s = setup_with(timeouts(Duration::from_secs(1), Duration::from_secs(2))).await?;
    let http = reqwest::Client::new();
    let request = |model: &str, stream: bool| {
        http.post(s.edge.url("/v1/chat/completions"))
            .bearer_auth(&s.secret)
            .json(&json!({"model": model, "stream": stream,
                "messages": [{"role": "user", "content": "hello"}]}))
            .send()
    };

    // The fake waits 200 ms before each of its 8 events.
    let started = tokio::time::Instant::now();
    let mut body = request("slow-stream", true).await?.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        arrivals.push(started.elapsed());
        text.extend_from_slice(&chunk?);
    }
    let text = String::from_utf8(text)?;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    assert!(
        last - first >= Duration::from_millis(1000),
        "events were buffered, not relayed as they came: {arrivals:?}"
    );

    for stream in [false, true] {
        let started = tokio::time::Instant::now();
        let response = request("hang", stream).await?;
        assert_eq!(response.status(), 504, "stream: {stream}");
        let body: Value = response.json().await?;
        assert_eq!(
            body["error"]["code"], "upstream_timeout",
            "stream: {stream}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stream: {stream}"
        );
    }
    Ok(())
}

/// A client that did not ask for usage gets OpenAI's chunks without any `usage` field, even
/// though the edge asks the upstream for usage to account the stream (OpenAI then adds
/// `"usage": null` to every chunk, which the edge must not pass on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_include_usage_has_no_usage_field() -> Result<()> {
    let s = setup().await?;
    let text = reqwest::Client::new()
        .post(s.edge.url("/v1/chat/completions"))
        .bearer_auth(&s.secret)
        .json(&json!({"model": "gpt-test", "stream": true,
            "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await?
        .text()
        .await?;
    let upstream = s.fake.last_request().map(|(_, body)| body);
    assert_eq!(
        upstream
            .as_ref()
            .map(|b| &b["stream_options"]["include_usage"]),
        Some(&json!(true)),
        "the edge should ask the upstream for usage"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"usage\""),
        "usage was not asked for, yet chunks carry a usage field:\n{text}"
    );
    Ok(())
}
