//! `TailRequests`: the requests served on every edge, live, filtered, within a second; nothing
//! from before the tail opened; a filter that cannot match is refused.

use tollgate_test_support::edge as common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use tollgate_proto::admin::TailRequestsRequest;

/// A new team `name` and a key in it: (team id, secret).
async fn team_key(admin: &mut AdminClient, name: &str) -> Result<(String, String)> {
    let team = create_team(admin, name).await?;
    let (_, secret) = create_team_key(admin, &team).await?;
    Ok((team, secret))
}

/// Sends one chat request to `edge` with `key`; returns its request id.
async fn chat(edge: &TestEdge, key: &str) -> Result<String> {
    let response = edge.chat(key, &chat_request("mock-small", "hi")).await?;
    assert_eq!(response.status(), 200);
    Ok(response.headers()["x-request-id"].to_str()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_shows_one_teams_requests_on_two_edges_within_a_second() -> Result<()> {
    let mut cluster = TestCluster::start().await?;
    let admin = &mut cluster.admin;
    mock_deployment(admin, "mock-small", &[("output_tokens", "3")]).await?;
    let (red, red_key) = team_key(admin, "red").await?;
    let (_, blue_key) = team_key(admin, "blue").await?;
    let edges = cluster.edges(2).await?;
    let (one, two) = (&edges[0], &edges[1]);

    // Served, and its usage published, before the tail opens: never shown.
    let before = chat(one, &red_key).await?;
    eventually(Duration::from_secs(5), || async {
        one.metrics.usage_published.get() >= 1
    })
    .await?;

    let mut tail = cluster
        .admin
        .tail_requests(TailRequestsRequest {
            team_id: red.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let sent = Instant::now();
    let mut expected = HashSet::new();
    expected.insert(chat(one, &red_key).await?);
    chat(one, &blue_key).await?;
    chat(two, &blue_key).await?;
    expected.insert(chat(two, &red_key).await?);

    let mut shown_by = HashSet::new();
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
        shown_by.insert(event.edge_id);
    }
    let waited = sent.elapsed();
    assert_eq!(shown_by.len(), 2, "both edges' requests are shown");
    assert!(
        waited < Duration::from_secs(1),
        "the tail took {waited:?} to show the requests"
    );

    let refused = cluster
        .admin
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
