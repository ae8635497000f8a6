//! Model access by role through real edges: a model in an access group is only for the keys the
//! group is granted to (here through their user's role), `/v1/models` shows what a key may use,
//! and a grant made through the admin API reaches every edge within a second.

use tollgate_test_support::edge as common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use serde_json::Value;
use tollgate_proto::admin::{AccessGroup, CreateKeyRequest, CreateUserRequest};

/// How soon a grant must reach every edge.
const PROPAGATION: Duration = Duration::from_secs(1);

async fn key_of_user(admin: &mut AdminClient, email: &str, role: &str) -> Result<String> {
    let user = admin
        .create_user(CreateUserRequest {
            email: email.into(),
            role: role.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(admin
        .create_key(CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        })
        .await?
        .into_inner()
        .secret)
}

async fn status(edge: &TestEdge, secret: &str, model: &str) -> Result<(u16, Value)> {
    let response = edge.chat(secret, &chat_request(model, "hi")).await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn listed(http: &reqwest::Client, edge: &TestEdge, secret: &str) -> Result<Vec<String>> {
    let models: Value = http
        .get(edge.url("/v1/models"))
        .bearer_auth(secret)
        .send()
        .await?
        .json()
        .await?;
    Ok(models["data"]
        .as_array()
        .context("a model list")?
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_not_granted_a_group_is_refused_until_granted_on_every_edge() -> Result<()> {
    let mut cluster = TestCluster::start().await?;
    let admin = &mut cluster.admin;
    for model in ["small", "large"] {
        mock_deployment(admin, model, &[]).await?;
    }
    let analyst = key_of_user(admin, "ann@example.com", "member").await?;
    let lead = key_of_user(admin, "lee@example.com", "admin").await?;
    let group = admin
        .set_access_group(AccessGroup {
            name: "large models".into(),
            models: vec!["large".into()],
            roles: vec!["admin".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let edges = cluster.edges(2).await?;
    let http = reqwest::Client::new();
    for edge in &edges {
        let (code, body) = status(edge, &analyst, "large").await?;
        assert_eq!(code, 403, "{body}");
        assert_eq!(body["error"]["code"], "model_not_allowed");
        assert_eq!(status(edge, &analyst, "small").await?.0, 200);
        assert_eq!(status(edge, &lead, "large").await?.0, 200);
        assert_eq!(listed(&http, edge, &analyst).await?, vec!["small"]);
        assert_eq!(listed(&http, edge, &lead).await?, vec!["large", "small"]);
    }

    // Analysts (members) get the large models too.
    cluster
        .admin
        .set_access_group(AccessGroup {
            roles: vec!["admin".into(), "member".into()],
            ..group
        })
        .await?;
    let granted = Instant::now();
    for edge in &edges {
        loop {
            if status(edge, &analyst, "large").await?.0 == 200 {
                break;
            }
            anyhow::ensure!(
                granted.elapsed() < PROPAGATION,
                "the grant did not reach an edge within {PROPAGATION:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(listed(&http, edge, &analyst).await?, vec!["large", "small"]);
    }
    Ok(())
}
