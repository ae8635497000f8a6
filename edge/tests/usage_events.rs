//! Exactly one usage event per request — completed, streamed, failed upstream or cut off by
//! the client — even when NATS restarts in the middle of the traffic.

use tollgate_test_support::edge as common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::*;
use futures::StreamExt;
use prost::Message;
use serde_json::json;
use tollgate_proto::usage::UsageEvent;
use tollgate_runtime::bus::{Bus, JetStreamBus, USAGE};
use tollgate_test_support::own_nats::OwnNats;

const REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 32;

/// What the client did with request `i`.
fn kind(i: usize) -> &'static str {
    match i % 10 {
        0..=5 => "complete",
        6 | 7 => "stream",
        8 => "upstream-fails",
        _ => "client-hangs-up",
    }
}

async fn send(http: &reqwest::Client, url: &str, key: &str, i: usize) -> Result<()> {
    let (model, stream) = match kind(i) {
        "complete" => ("mock", false),
        "stream" => ("mock", true),
        "upstream-fails" => ("mock-failing", false),
        _ => ("mock-slow", true),
    };
    let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": format!("request {i}")}]});
    let mut response = http.post(url).bearer_auth(key).json(&body).send().await?;
    if kind(i) == "client-hangs-up" {
        // Read the first chunk, then drop the connection mid-stream.
        response.chunk().await?;
        return Ok(());
    }
    response.bytes().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_yields_exactly_one_usage_event_across_a_nats_restart() -> Result<()> {
    let mut nats = OwnNats::start().await?;
    let prefix = tollgate_test_support::unique_name("usage");
    let bus: Arc<dyn Bus> = Arc::new(JetStreamBus::connect(&nats.url(), &prefix).await?);
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(&mut admin, "mock", &[]).await?;
    mock_deployment(&mut admin, "mock-failing", &[("fail_status", "500")]).await?;
    mock_deployment(&mut admin, "mock-slow", &[("chunk_delay_ms", "20")]).await?;
    let (_, secret) = create_key(&mut admin, &[]).await?;
    let edge = TestEdge::start(&nats.url(), &prefix, bus.clone(), Some(cp.url())).await?;
    edge.wait_for_sequence(last_sequence(&mut admin).await?)
        .await?;

    let http = reqwest::Client::new();
    let url = edge.url("/v1/chat/completions");
    let requests = futures::stream::iter(0..REQUESTS)
        .map(move |i| {
            let (http, url, secret) = (http.clone(), url.clone(), secret.clone());
            async move { send(&http, &url, &secret, i).await }
        })
        .buffer_unordered(CONCURRENCY);
    let traffic = tokio::spawn(async move {
        let results: Vec<Result<()>> = requests.collect().await;
        results.into_iter().collect::<Result<Vec<()>>>()
    });
    // Restart NATS while requests are flowing.
    eventually(Duration::from_secs(60), || async {
        edge.metrics.usage_published.get() >= 2_000
    })
    .await?;
    assert!(
        !traffic.is_finished(),
        "the restart happens while requests flow"
    );
    let failures_before = edge.metrics.usage_publish_failures.get();
    // Down for longer than the bus waits for a publish acknowledgement (5 s): a short outage is
    // absorbed inside the NATS client; this one makes publishes fail, so the edge's buffer,
    // retries and the stream's de-duplication all take part.
    nats.restart(Duration::from_secs(6)).await?;
    traffic.await??;
    // The outage was felt: publishing failed (and was retried from the buffer), and yet every
    // event is stored below.
    assert!(
        edge.metrics.usage_publish_failures.get() > failures_before,
        "no publish failed while NATS was down"
    );

    let mut seen: HashMap<String, UsageEvent> = HashMap::new();
    let mut stored = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut subscription = bus.subscribe(USAGE, 0).await?;
    while seen.len() < REQUESTS {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(remaining, subscription.next()).await else {
            bail!(
                "only {} usage events of {REQUESTS} arrived (dropped: {})",
                seen.len(),
                edge.metrics.usage_dropped.get()
            );
        };
        let event = UsageEvent::decode(message?.payload)?;
        stored += 1;
        seen.insert(event.request_id.clone(), event);
    }
    assert_eq!(stored, REQUESTS, "no usage event is stored twice");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = bus.last(USAGE).await?.context("usage stream")?.sequence;
    assert_eq!(
        last, REQUESTS as u64,
        "nothing beyond one event per request was stored"
    );
    assert_eq!(edge.metrics.usage_dropped.get(), 0);

    let count = |status: u32| seen.values().filter(|e| e.status == status).count();
    assert_eq!(
        count(502),
        REQUESTS / 10,
        "failed upstream calls are accounted"
    );
    assert_eq!(
        count(499),
        REQUESTS / 10,
        "clients that hung up are accounted"
    );
    assert_eq!(count(200), REQUESTS * 8 / 10);
    assert!(
        seen.values()
            .filter(|e| e.status == 200)
            .all(|e| e.output_tokens == 8 && e.input_tokens > 0)
    );
    Ok(())
}
