//! Upstream calls reach only what they should: a provider's redirect is never followed (it
//! would carry the request and its API key to another host), and loopback or private
//! addresses are reachable only when `TOLLGATE_UPSTREAM_NETWORKS` allows them; an answer too
//! large to hold is refused before it is read.

use tollgate_test_support::edge as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_policy::egress::Networks;
use tollgate_proto::admin::Deployment;

/// A server on 127.0.0.1 answering every request with `answer`, counting the requests.
async fn server(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { answer() }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, hits))
}

/// An edge with an `openai_compatible` deployment of model `m` at `api_base`, and a key.
async fn edge_calling(api_base: &str, networks: Networks) -> Result<(TestEdge, String)> {
    let mut cluster = TestCluster::start().await?;
    cluster
        .admin
        .upsert_deployment(Deployment {
            id: "d".into(),
            model_name: "m".into(),
            provider: "openai_compatible".into(),
            api_base: api_base.to_owned(),
            ..Default::default()
        })
        .await?;
    let (_, secret) = create_key(&mut cluster.admin, &[]).await?;
    let edge = cluster
        .edge_with(|config| {
            config.upstream_networks = networks;
            config.max_retries = 0;
        })
        .await?;
    // The control plane may stop (it does, with `cluster`): the edge serves from the policy
    // it has.
    Ok((edge, secret))
}

async fn chat(edge: &TestEdge, secret: &str) -> Result<(u16, Value)> {
    let response = edge.chat(secret, &chat_request("m", "hi")).await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_redirect_is_never_followed() -> Result<()> {
    let (elsewhere, elsewhere_hits) = server(|| "captured".into_response()).await?;
    let target = format!("{elsewhere}/v1/chat/completions");
    let (redirecting, redirect_hits) = server(move || {
        (
            StatusCode::FOUND,
            [(header::LOCATION, target.clone())],
            "moved",
        )
            .into_response()
    })
    .await?;
    let (edge, secret) = edge_calling(&redirecting, Networks::default()).await?;
    let (status, body) = chat(&edge, &secret).await?;
    assert_ne!(status, 200, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert_eq!(redirect_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_upstreams_are_reachable_only_when_the_setting_allows() -> Result<()> {
    let (local, hits) = server(|| {
        axum::Json(
            json!({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
            "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
        )
        .into_response()
    })
    .await?;
    let closed = Networks::parse("none").map_err(anyhow::Error::msg)?;
    let (edge, secret) = edge_calling(&format!("{local}/v1"), closed).await?;
    let (status, body) = chat(&edge, &secret).await?;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not reachable"), "{message}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the loopback server was called"
    );

    let (edge, secret) = edge_calling(&format!("{local}/v1"), Networks::default()).await?;
    let (status, body) = chat(&edge, &secret).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answer_larger_than_the_limit_is_refused_unread() -> Result<()> {
    // Announces 200 MB, sends a little, then nothing: the edge must not wait or buffer.
    let (huge, _) = server(|| {
        let body = futures::stream::once(async { Ok::<_, std::io::Error>("{\"id\":") })
            .chain(futures::stream::pending());
        (
            [(header::CONTENT_LENGTH, "200000000")],
            axum::body::Body::from_stream(body),
        )
            .into_response()
    })
    .await?;
    let (edge, secret) = edge_calling(&format!("{huge}/v1"), Networks::default()).await?;
    let started = std::time::Instant::now();
    let (status, body) = chat(&edge, &secret).await?;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("more than"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    Ok(())
}
