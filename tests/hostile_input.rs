//! Hostile input on the distributed roles (PostgreSQL + JetStream): nothing a client sends can
//! stop or falsify accounting. Model names the ledger's database would choke on, or that would
//! invent rollup rows, are refused at the edge, and every request after them is counted once.

use tollgate_test_support::edge as common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_test_support::Served;
use tollgate_test_support::aggregator::serve_aggregator;
use tollgate_usage_aggregator::ledger::Ledger;

/// An edge and an aggregator following one control plane.
struct World {
    _cluster: TestCluster,
    edge: TestEdge,
    secret: String,
    ledger: Ledger,
    _aggregator: Served,
}

async fn world() -> Result<World> {
    let mut cluster = TestCluster::start().await?;
    mock_deployment(&mut cluster.admin, "mock", &[]).await?;
    let (_, secret) = create_key(&mut cluster.admin, &[]).await?;
    let (ledger, served) = serve_aggregator(cluster.bus.clone(), &cluster.cp.url()).await?;
    let edge = cluster.edge().await?;
    Ok(World {
        _cluster: cluster,
        edge,
        secret,
        ledger,
        _aggregator: served,
    })
}

async fn post_raw(w: &World, body: String) -> Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(w.edge.url("/v1/chat/completions"))
        .bearer_auth(&w.secret)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    Ok((status, body))
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_model_names_are_refused_and_accounting_goes_on() -> Result<()> {
    let w = world().await?;
    let hostile = [
        ("a NUL byte", chat("a\u{0}b")),
        ("4 KB", chat(&"m".repeat(4 * 1024))),
        ("200 KB", chat(&"m".repeat(200 * 1024))),
        (
            "an invalid escape",
            r#"{"model": "a\x00b", "messages": [{"role": "user", "content": "hi"}]}"#.to_owned(),
        ),
        (
            "a lone surrogate",
            r#"{"model": "a\ud800b", "messages": [{"role": "user", "content": "hi"}]}"#.to_owned(),
        ),
        ("a newline", chat("a\nb")),
    ];
    for (what, body) in &hostile {
        let (status, answer) = post_raw(&w, body.clone()).await?;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request_error", "{what}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{what}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.len() < 300, "{what}: the refusal echoes the input");
    }

    let mut ids = Vec::new();
    for _ in 0..100 {
        let response = reqwest::Client::new()
            .post(w.edge.url("/v1/chat/completions"))
            .bearer_auth(&w.secret)
            .header("content-type", "application/json")
            .body(chat("mock"))
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        ids.push(response.headers()["x-request-id"].to_str()?.to_owned());
    }
    // Every request is in the ledger once: the refused ones (with no model recorded) and the
    // hundred after them.
    let expected = (hostile.len() + ids.len()) as i64;
    eventually(Duration::from_secs(30), || async {
        w.ledger
            .ledger_totals()
            .await
            .is_ok_and(|t| t.0 >= expected)
    })
    .await
    .context("usage stopped being counted")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.ledger.ledger_totals().await?.0, expected);
    Ok(())
}
