//! `TailRequests`: the requests served on every edge, live, filtered, within a second; nothing
//! from before the tail opened; a filter that cannot match is refused.

use tollgate_test_support::edge as common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use serde_json::json;
use tollgate_proto::admin::{CreateKeyRequest, CreateTeamRequest, TailRequestsRequest};

async fn team_key(admin: &mut AdminClient, name: &str) -> Result<(String, String)> {
    let team = admin
        .create_team(CreateTeamRequest {
            name: name.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    let created = admin
        .create_key(CreateKeyRequest {
            team_id: team.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((team, created.secret))
}

/// Sends one chat request to `edge` with `key`; returns its request id.
async fn chat(http: &reqwest::Client, edge: &TestEdge, key: &str) -> Result<String> {
    let response = http
        .post(edge.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    Ok(response.headers()["x-request-id"].to_str()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_shows_one_teams_requests_on_two_edges_within_a_second() -> Result<()> {
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(&mut admin, "mock-small", &[("output_tokens", "3")]).await?;
    let (red, red_key) = team_key(&mut admin, "red").await?;
    let (_, blue_key) = team_key(&mut admin, "blue").await?;
    let sequence = last_sequence(&mut admin).await?;
    let one = TestEdge::start(&nats, &prefix, bus.clone(), Some(cp.url())).await?;
    let two = TestEdge::start(&nats, &prefix, bus.clone(), Some(cp.url())).await?;
    one.wait_for_sequence(sequence).await?;
    two.wait_for_sequence(sequence).await?;
    let http = reqwest::Client::new();

    // Served, and its usage published, before the tail opens: never shown.
    let before = chat(&http, &one, &red_key).await?;
    eventually(Duration::from_secs(5), || async {
        one.metrics.usage_published.get() >= 1
    })
    .await?;

    let mut tail = admin
        .tail_requests(TailRequestsRequest {
            team_id: red.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let sent = Instant::now();
    let mut expected = HashSet::new();
    expected.insert(chat(&http, &one, &red_key).await?);
    chat(&http, &one, &blue_key).await?;
    chat(&http, &two, &blue_key).await?;
    expected.insert(chat(&http, &two, &red_key).await?);

    let mut edges = HashSet::new();
    while !expected.is_empty() {
        let event = tokio::time::timeout(Duration::from_secs(5), tail.message())
            .await
            .context("the tail showed nothing for 5 s")??
            .context("the tail ended")?;
        assert_ne!(
            event.request_id, before,
            "shown from before the tail opened"
        );
        assert_eq!(event.team_id, red, "another team's request was shown");
        assert!(
            expected.remove(&event.request_id),
            "unexpected {}",
            event.request_id
        );
        assert_eq!((event.status, event.model.as_str()), (200, "mock-small"));
        edges.insert(event.edge_id);
    }
    let waited = sent.elapsed();
    assert_eq!(edges.len(), 2, "both edges' requests are shown");
    assert!(
        waited < Duration::from_secs(1),
        "the tail took {waited:?} to show the requests"
    );

    let refused = admin
        .tail_requests(TailRequestsRequest {
            status: 200,
            errors_only: true,
            ..Default::default()
        })
        .await
        .err()
        .context("a filter that matches nothing was accepted")?;
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    Ok(())
}
