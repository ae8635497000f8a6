//! Anthropic's Python SDK against the edge's Messages API (`/v1/messages`): plain, streaming,
//! tool use, `count_tokens` and errors, on a model served by an Anthropic-protocol upstream and
//! on one served by an OpenAI-compatible upstream (`edge/tests/python/test_anthropic_sdk.py`).
//!
//! Needs a Python with `anthropic`, as `scripts/test` provides.

use tollgate_test_support::edge as common;

use std::path::Path;

use anyhow::Result;
use common::*;
use tollgate_test_support::anthropic_upstream::{self, FakeAnthropic};
use tollgate_test_support::openai_upstream::{self, FakeOpenAi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_works_against_the_edge_served_by_anthropic_and_by_openai() -> Result<()>
{
    let python = tollgate_test_support::python_with("anthropic").await?;
    let anthropic = FakeAnthropic::start().await?;
    let openai = FakeOpenAi::start().await?;
    let mut staging = Staging::start().await?;
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
        let api_key = [("api_key", "sk-upstream")];
        let template = staging.provider(provider, api_base, &api_key).await?;
        staging.deploy(&template, &[(model, upstream)]).await?;
    }
    let s = staging.serve((anthropic, openai), |_| {}).await?;
    let (anthropic, openai) = &s.fake;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_anthropic_sdk.py");
    let models = format!(
        "claude-test={},gpt-test={}",
        anthropic_upstream::ANSWER,
        openai_upstream::ANSWER
    );
    let base_url = s.edge.url("");
    let env = [
        ("TOLLGATE_BASE_URL", base_url.as_str()),
        ("TOLLGATE_KEY", s.secret.as_str()),
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
