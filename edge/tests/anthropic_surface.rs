//! Anthropic's Python SDK against the edge's Messages API (`/v1/messages`): plain, streaming,
//! tool use, `count_tokens` and errors, on a model served by an Anthropic-protocol upstream and
//! on one served by an OpenAI-compatible upstream (`edge/tests/python/test_anthropic_sdk.py`).
//!
//! Needs a Python with `anthropic`, as `scripts/test` provides.

use tollgate_test_support::edge as common;

use std::path::Path;

use anyhow::Result;
use common::*;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::Deployment;
use tollgate_test_support::anthropic_upstream::{self, FakeAnthropic};
use tollgate_test_support::openai_upstream::{self, FakeOpenAi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_works_against_the_edge_served_by_anthropic_and_by_openai() -> Result<()>
{
    let python = tollgate_test_support::python_with("anthropic").await?;
    let anthropic = FakeAnthropic::start().await?;
    let openai = FakeOpenAi::start().await?;
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    let upstreams = [
        (
            "claude-test",
            "anthropic",
            "claude-upstream",
            anthropic.base_url(),
        ),
        (
            "gpt-test",
            "openai_compatible",
            "gpt-upstream-x",
            openai.base_url(),
        ),
    ];
    for (model, provider, upstream, api_base) in upstreams {
        let credential_id = api_key_credential(&mut admin, provider).await?;
        admin
            .upsert_deployment(Deployment {
                model_name: model.into(),
                provider: provider.into(),
                upstream_model: upstream.into(),
                api_base,
                credential_id,
                ..Default::default()
            })
            .await?;
    }
    let (_, secret) = create_key(&mut admin, &[]).await?;
    let sequence = last_sequence(&mut admin).await?;
    let mut config = TestEdge::config(&nats, &prefix);
    config.credential_key = Some(SealingKey::from_bytes(SEALING_KEY));
    let edge = TestEdge::start_with(config, bus, Some(cp.url())).await?;
    edge.wait_for_sequence(sequence).await?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_anthropic_sdk.py");
    let models = format!(
        "claude-test={},gpt-test={}",
        anthropic_upstream::ANSWER,
        openai_upstream::ANSWER
    );
    let base_url = edge.url("");
    let env = [
        ("TOLLGATE_BASE_URL", base_url.as_str()),
        ("TOLLGATE_KEY", secret.as_str()),
        ("TOLLGATE_MODELS", models.as_str()),
    ];
    let stdout = tollgate_test_support::run_python(&python, &[script.as_os_str()], &env).await?;
    println!("{stdout}");
    // Per model: plain, stream, the tool round trip's two calls and its stream; count_tokens
    // goes nowhere. The Anthropic model also answered the bearer-token call.
    assert_eq!(anthropic.requests(), 5 + 1);
    assert_eq!(openai.requests(), 5);
    Ok(())
}
