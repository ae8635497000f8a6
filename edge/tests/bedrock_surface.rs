//! boto3's `bedrock-runtime` client against the edge's Bedrock runtime surface, over HTTPS,
//! changed only in `endpoint_url`: `edge/tests/python/test_boto3_surface.py` calls Converse,
//! ConverseStream, InvokeModel, InvokeModelWithResponseStream (and ApplyGuardrail on Tollgate's
//! own guardrails) with a bearer token and with
//! SigV4, on a model served by a Bedrock-protocol upstream and on one served by an
//! OpenAI-compatible upstream; then sends what the edge must refuse (a wrong signature, an
//! expired date, a replay, a changed body, a revoked key) and this test checks that none of it
//! reached an upstream.
//!
//! Needs a Python with `boto3`, as `scripts/test` provides.

use tollgate_test_support::edge as common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::*;
use serde_json::json;
use tollgate_proto::admin::{Deployment, Guardrail, KeyRequest};
use tollgate_runtime::tls::TlsFiles;
use tollgate_test_support::bedrock_upstream::{self, FakeBedrock};
use tollgate_test_support::openai_upstream::{self, FakeOpenAi};

/// The Bedrock model id of the Bedrock-served model: boto3 percent-encodes its `:` in the
/// path, which SigV4 then encodes once more.
const BEDROCK_MODEL_ID: &str = "anthropic.claude-test-v1:0";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

struct Setup {
    _cluster: TestCluster,
    _edge: TestEdge,
    bedrock: FakeBedrock,
    openai: FakeOpenAi,
    env: Vec<(&'static str, String)>,
}

/// A control plane; an HTTPS edge; `claude-bedrock` and `titan-embed` on a fake Bedrock,
/// `gpt-test` and `embed-test` on a fake OpenAI; a live key and a revoked one.
async fn setup() -> Result<Setup> {
    let bedrock = FakeBedrock::start().await?;
    let openai = FakeOpenAi::start().await?;
    let mut cluster = TestCluster::start().await?;
    let admin = &mut cluster.admin;
    let aws = aws_credential(admin).await?;
    let openai_key = api_key_credential(admin, "openai_compatible").await?;
    for (model, upstream) in [
        ("claude-bedrock", BEDROCK_MODEL_ID),
        ("titan-embed", "amazon.titan-embed-text-v2:0"),
    ] {
        admin
            .upsert_deployment(Deployment {
                model_name: model.into(),
                provider: "bedrock".into(),
                upstream_model: upstream.into(),
                region: "us-east-1".into(),
                api_base: bedrock.endpoint_url(),
                credential_id: aws.clone(),
                ..Default::default()
            })
            .await?;
    }
    for model in [
        ("gpt-test", "gpt-upstream-x"),
        ("embed-test", "text-embedding-fake"),
    ] {
        openai_compatible_deployment(admin, model, openai.base_url(), &openai_key).await?;
    }
    // For ApplyGuardrail; run on answers (post_call), which hold neither an address nor the
    // word, so that they change nothing else.
    let guardrails = [
        (
            "pii-mask",
            "pii",
            json!({"entities": ["email"], "action": "mask"}),
        ),
        (
            "no-forbidden",
            "regex",
            json!({"patterns": ["forbidden"], "action": "block"}),
        ),
    ];
    for (name, kind, config) in guardrails {
        admin
            .set_guardrail(Guardrail {
                name: name.into(),
                kind: kind.into(),
                mode: "post_call".into(),
                config_json: config.to_string(),
                ..Default::default()
            })
            .await?;
    }
    let (key_id, secret) = create_key(admin, &[]).await?;
    let (revoked_id, revoked) = create_key(admin, &[]).await?;
    admin
        .revoke_key(KeyRequest {
            key_id: revoked_id.clone(),
        })
        .await?;
    let tls = TlsFiles {
        cert: fixture("edge-a.pem"),
        key: fixture("edge-a.key"),
        client_ca: None,
    };
    let edge = cluster.edge_with(|config| config.tls = Some(tls)).await?;

    let env = vec![
        (
            "TOLLGATE_ENDPOINT",
            format!("https://localhost:{}", edge.addr.port()),
        ),
        ("TOLLGATE_CA", fixture("ca-a.pem").display().to_string()),
        ("TOLLGATE_KEY_ID", key_id),
        ("TOLLGATE_KEY", secret),
        ("TOLLGATE_REVOKED_KEY_ID", revoked_id),
        ("TOLLGATE_REVOKED_KEY", revoked),
        (
            "TOLLGATE_MODELS",
            format!(
                "claude-bedrock={},gpt-test={}",
                bedrock_upstream::ANSWER,
                openai_upstream::ANSWER
            ),
        ),
        ("TOLLGATE_EMBEDDING_MODELS", "titan-embed,embed-test".into()),
        (
            "TOLLGATE_ALIASES",
            format!(
                "{BEDROCK_MODEL_ID},arn:aws:bedrock:us-east-1::foundation-model/{BEDROCK_MODEL_ID}"
            ),
        ),
    ];
    Ok(Setup {
        _cluster: cluster,
        _edge: edge,
        bedrock,
        openai,
        env,
    })
}

/// A setup on which the script's `phase` has run (what it printed is shown).
async fn after_phase(phase: &str) -> Result<Setup> {
    let python = tollgate_test_support::python_with("boto3").await?;
    let s = setup().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_boto3_surface.py");
    let mut env: Vec<(&str, &str)> = s.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("TOLLGATE_PHASE", phase));
    let stdout = tollgate_test_support::run_python(&python, &[script.as_os_str()], &env).await?;
    println!("{stdout}");
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_calls_every_bedrock_operation_over_https_served_by_bedrock_and_by_openai()
-> Result<()> {
    let s = after_phase("serve").await?;
    // Each provider served, in its own protocol, exactly the calls made on its models, both
    // ways of signing: per way, 7 chat calls (converse, the tool round trip's two, two
    // streams, two invokes) and the embeddings of 3 texts (OpenAI embeds the Cohere body's two
    // in one call, Titan takes one text per call); Bedrock also the 2 calls by alias.
    assert_eq!(s.openai.requests(), 2 * (7 + 2));
    assert_eq!(s.bedrock.requests(), 2 * (7 + 3 + 2));
    let last = s.bedrock.last_request().context("Bedrock got nothing")?;
    assert_eq!(last.resource, BEDROCK_MODEL_ID);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_expired_dates_replays_and_revoked_keys_never_reach_an_upstream()
-> Result<()> {
    let s = after_phase("refuse").await?;
    // Only the first send of the replayed request was served.
    assert_eq!(s.bedrock.requests(), 1, "refused requests reached Bedrock");
    assert_eq!(s.openai.requests(), 0, "refused requests reached OpenAI");
    Ok(())
}
