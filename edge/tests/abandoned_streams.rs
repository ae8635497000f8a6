//! A client that hangs up mid-stream is still charged: the edge reads the upstream on for its
//! final usage (the provider's count when it comes within the grace period), and otherwise
//! charges the documented estimate of what was relayed. Never nothing. A stream that runs past
//! the edge's maximum stream duration is cut and charged the same way.

use tollgate_test_support::edge as common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::IntoResponse;
use common::*;
use futures::StreamExt;
use prost::Message;
use serde_json::json;
use tollgate_proto::admin::Deployment;
use tollgate_proto::usage::UsageEvent;
use tollgate_runtime::bus::{Bus, USAGE};

/// Chunks the usage-less upstream streams, 30 ms apart.
const CHUNKS: usize = 40;

/// An OpenAI-compatible upstream that streams slowly and never reports usage, whatever the
/// request asks (as some self-hosted servers do).
async fn usage_less_upstream() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    let app = axum::Router::new().fallback(|| async {
        let events = futures::stream::iter(0..=CHUNKS).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let event = if i == CHUNKS {
                "data: [DONE]\n\n".to_owned()
            } else {
                let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 0,
                    "model": "m", "choices": [{"index": 0, "delta": {"content": "word "},
                    "finish_reason": null}]});
                format!("data: {chunk}\n\n")
            };
            Ok::<_, std::io::Error>(Bytes::from(event))
        });
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(events),
        )
            .into_response()
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

struct World {
    cluster: TestCluster,
    edge: TestEdge,
    secret: String,
}

async fn world() -> Result<World> {
    world_with(|_| {}).await
}

/// The world with an edge configured by `configure`.
async fn world_with(
    configure: impl FnOnce(&mut tollgate_edge::config::EdgeConfig),
) -> Result<World> {
    let mut cluster = TestCluster::start().await?;
    let admin = &mut cluster.admin;
    mock_deployment(
        admin,
        "slow",
        &[("chunk_delay_ms", "30"), ("output_tokens", "20")],
    )
    .await?;
    admin
        .upsert_deployment(Deployment {
            model_name: "usage-less".into(),
            provider: "openai_compatible".into(),
            api_base: usage_less_upstream().await?,
            ..Default::default()
        })
        .await?;
    for model in ["slow", "usage-less"] {
        set_price(admin, model, [1_000.0, 10_000.0, 0.0, 0.0]).await?;
    }
    let (_, secret) = create_key(admin, &[]).await?;
    let edge = cluster.edge_with(configure).await?;
    Ok(World {
        cluster,
        edge,
        secret,
    })
}

/// A request for a long story from `model`, streamed.
fn long_story(model: &str) -> serde_json::Value {
    json!({"model": model, "stream": true,
        "messages": [{"role": "user", "content": "tell me a long story"}]})
}

/// Starts a stream of `model`, reads its first chunk and hangs up; the usage event charged for
/// it, after checking that it says the client closed the request.
async fn abandoned(w: &World, model: &str) -> Result<UsageEvent> {
    let mut response = w.edge.chat(&w.secret, &long_story(model)).await?;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str()?.to_owned();
    response.chunk().await?.context("no first chunk")?;
    drop(response);
    let event = usage_of(&w.cluster.bus, &id).await?;
    assert_eq!(
        (event.status, event.error_code.as_str()),
        (499, "client_closed")
    );
    Ok(event)
}

/// The usage event of request `id`.
async fn usage_of(bus: &Arc<dyn Bus>, id: &str) -> Result<UsageEvent> {
    let mut events = bus.subscribe(USAGE, 0).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let message = tokio::time::timeout_at(deadline, events.next())
            .await
            .with_context(|| format!("no usage event for {id}"))?
            .context("the usage subscription ended")??;
        let event = UsageEvent::decode(message.payload)?;
        if event.request_id == id {
            return Ok(event);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_abandoned_by_its_client_is_charged_the_providers_final_usage() -> Result<()> {
    let w = world().await?;
    let event = abandoned(&w, "slow").await?;
    assert_eq!(
        event.output_tokens, 20,
        "the provider's count, read after the client left"
    );
    assert!(event.input_tokens > 0 && event.cost_usd > 0.0, "{event:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_abandoned_without_a_usage_report_is_charged_the_estimate() -> Result<()> {
    let w = world().await?;
    let event = abandoned(&w, "usage-less").await?;
    // The upstream is read to its end: its text is 40 × "word " = 200 bytes, charged at one
    // token per four bytes (more than one per chunk); the input at one token per four
    // request bytes.
    assert_eq!(event.output_tokens, 50, "{event:?}");
    assert!(event.input_tokens > 0, "{event:?}");
    let expected = event.input_tokens as f64 * 1_000.0 / 1e6 + 50.0 * 10_000.0 / 1e6;
    assert!(
        (event.cost_usd - expected).abs() < 1e-9,
        "charged {} for {event:?}",
        event.cost_usd
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_maximum_duration_is_cut_in_band_and_charged() -> Result<()> {
    // The usage-less upstream needs 40 × 30 ms; the edge allows one second.
    let w = world_with(|config| config.max_stream_duration = Duration::from_secs(1)).await?;
    let response = w.edge.chat(&w.secret, &long_story("usage-less")).await?;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str()?.to_owned();
    let body = response.text().await?;
    let last = body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .last()
        .unwrap_or_default();
    assert!(
        last.contains("\"code\":\"upstream_timeout\"")
            && last.contains("longer than this gateway allows"),
        "the stream ends with the in-band error: {last}"
    );
    assert!(!body.contains("[DONE]"), "{body}");
    let event = usage_of(&w.cluster.bus, &id).await?;
    assert_eq!(
        (event.status, event.error_code.as_str()),
        (504, "upstream_timeout")
    );
    // What was relayed is charged (the provider never reported usage).
    assert!(event.output_tokens > 0 && event.cost_usd > 0.0, "{event:?}");
    Ok(())
}
