//! What only the `sagemaker` provider does, through the edge over HTTP: the official AWS SDK
//! client (InvokeEndpoint and InvokeEndpointWithResponseStream, SigV4-signed with the
//! deployment's static credential) against a fake SageMaker runtime — signing, a container
//! without usage, SageMaker's own errors, exceptions and stalls inside a stream. The translation
//! for both container formats, `messages` (an OpenAI-compatible Messages API container) and
//! `tgi` (TGI's native format), is pinned by the conformance suite's golden fixtures
//! (`tests/conformance/golden/sagemaker*/`) and its shared cases.

use tollgate_test_support::edge as common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_edge::config::EdgeConfig;
use tollgate_proto::admin::Deployment;
use tollgate_test_support::sagemaker_upstream::{
    ANSWER, FakeSagemaker, STREAM_ERROR_MESSAGE, VALIDATION_MESSAGE,
};

const ACCESS_KEY_ID: &str = "AKIDSAGEMAKER";
const SECRET_ACCESS_KEY: &str = "secret-sagemaker-test";

type Setup = Gateway<FakeSagemaker>;

async fn setup() -> Result<Setup> {
    setup_with(|_| {}).await
}

/// A control plane and an edge whose SageMaker models all live on one fake SageMaker, the
/// edge's configuration changed by `configure`.
async fn setup_with(configure: impl FnOnce(&mut EdgeConfig)) -> Result<Setup> {
    let fake = FakeSagemaker::start().await?;
    let mut staging = Staging::start().await?;
    let keys = [
        ("aws_access_key_id", ACCESS_KEY_ID),
        ("aws_secret_access_key", SECRET_ACCESS_KEY),
    ];
    let template = Deployment {
        region: "eu-west-1".into(),
        ..staging
            .provider("sagemaker", fake.endpoint_url(), &keys)
            .await?
    };
    staging.deploy(&template, &[("llama", "lmi-llama")]).await?;
    let failing = ["fail-validation", "fail-model-500", "fail-unavailable"];
    staging.deploy_as_named(&template, &failing).await?;
    let streams = ["fail-midstream", "stall-stream"];
    staging.deploy_as_named(&template, &streams).await?;
    let messages = with_setting(&template, "format", "messages");
    staging
        .deploy(&messages, &[("llama-no-usage", "lmi-no-usage")])
        .await?;
    staging.price("llama", [1.0, 2.0, 0.0, 0.0]).await?;
    staging.serve(fake, configure).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_are_signed_with_the_deployments_credential_for_its_region() -> Result<()> {
    let s = setup().await?;
    s.json(&chat_request("llama", "hello there")).await?;
    let request = s
        .fake
        .last_request()
        .context("no request reached SageMaker")?;
    assert_eq!(request.operation, "invocations");
    assert_eq!(request.resource, "lmi-llama");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("accept"), Some("application/json"));
    let scope = ("eu-west-1", "sagemaker");
    request.check_signed_by(ACCESS_KEY_ID, scope, SECRET_ACCESS_KEY)?;

    s.stream(&streamed_request("llama", "hello there")).await?;
    let request = s.fake.last_request().context("no request")?;
    assert_eq!(request.operation, "invocations-response-stream");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_sends_no_usage_gets_none_made_up() -> Result<()> {
    let s = setup().await?;
    let mut body = streamed_request("llama-no-usage", "hello there");
    body["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = s.stream(&body).await?;
    assert!(done);
    assert_eq!(streamed_text(&chunks), ANSWER);
    assert!(
        chunks.iter().all(|c| c["usage"].is_null()),
        "no usage chunk: {chunks:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagemaker_specific_errors_map_to_the_contract_codes() -> Result<()> {
    let s = setup().await?;
    for stream in [false, true] {
        let ask = |model: &str| {
            let mut body = chat_request(model, "hello");
            body["stream"] = json!(stream);
            body
        };
        let response = s.post(&ask("fail-validation")).await?;
        assert_eq!(response.status(), 400, "stream {stream}");
        let error: Value = response.json().await?;
        assert_eq!(error["error"]["message"], VALIDATION_MESSAGE);

        let response = s.post(&ask("fail-model-500")).await?;
        assert_eq!(response.status(), 502, "stream {stream}");
        let text = response.text().await?;
        assert!(text.contains("CUDA out of memory"), "{text}");
        assert!(!text.contains("000000000000"), "{text}");

        let response = s.post(&ask("fail-unavailable")).await?;
        assert_eq!(response.status(), 502, "stream {stream}");
        let error: Value = response.json().await?;
        assert_eq!(error["error"]["code"], "upstream_error");
    }

    // An exception in the middle of a stream is reported in-band, after what was sent.
    let text = s
        .stream_text(&streamed_request("fail-midstream", "hello there"))
        .await?;
    assert!(text.contains("\"role\":\"assistant\""), "{text}");
    assert!(text.contains("upstream_error"), "{text}");
    assert!(text.contains(STREAM_ERROR_MESSAGE), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_times_out_in_band_and_the_client_recovers() -> Result<()> {
    let s = setup_with(timeouts(
        Duration::from_millis(800),
        Duration::from_millis(800),
    ))
    .await?;
    // A stream that stops is ended with an in-band timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    s.stream_times_out(&streamed_request("stall-stream", "hello"), deadline)
        .await?;
    // Calls after a timeout still work on the same cached client.
    let answer = s.json(&chat_request("llama", "hello")).await?;
    assert_eq!(answer["choices"][0]["message"]["content"], ANSWER);
    Ok(())
}
