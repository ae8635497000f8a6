//! One conformance suite for every provider: the same cases, run against the edge with a
//! deployment on a local fake that speaks the provider's real wire protocol — the OpenAI API's
//! cases, and each translated surface (Bedrock runtime, Anthropic Messages, OpenAI Responses):
//! a matrix of surfaces × providers.
//!
//! A provider is described once, by a [`Provider`] (how to start its fake, how to register its
//! deployments, the fake's model names for each failure class, how to tell whether the fake
//! received an image, what it can do); every case in [`cases`] is a plain async fn taking that
//! description, and [`conformance!`] generates one `#[tokio::test]` per (provider, case), named
//! `<provider>::<case>`. Adding a provider is one constructor in [`providers`] and its name in
//! the `conformance!` invocation below the cases. A case a provider cannot do (a capability gap
//! declared by its flags) asserts the documented refusal instead: 400 `invalid_request_error`
//! naming what is missing, before any upstream call.
//!
//! `openai_sdk_streams_look_the_same_through_every_provider` puts every provider on one edge,
//! streams through each with the official OpenAI Python SDK (`include_usage`) and requires the
//! chunk sequences to have the same shape. It needs a Python with the `openai` package
//! (`scripts/test` provides one; `TOLLGATE_PYTHON`, default `python3`); without it the test fails
//! and says how to get it.

use tollgate_test_support::edge as common;
#[path = "conformance/golden.rs"]
mod golden;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;
use serde_json::{Value, json};
use tollgate_proto::admin::Deployment;
use tollgate_test_support::bedrock_upstream::read_event_stream;
use tollgate_test_support::fake_server::{Fake, Logged, WithBody};

/// What the suite asks of a fake upstream, whatever its protocol.
pub trait Recorded: Send + Sync {
    /// How many requests the fake received so far.
    fn requests(&self) -> usize;
    /// The JSON body of the last request the fake received (`null` before the first).
    fn last_body(&self) -> Value;
}

impl<R, X> Recorded for Fake<Logged<R, X>>
where
    R: Clone + WithBody + Send + Sync,
    X: Send + Sync,
{
    fn requests(&self) -> usize {
        Fake::requests(self)
    }

    fn last_body(&self) -> Value {
        Fake::last_body(self)
    }
}

/// A running fake upstream, seen the same way whatever its protocol; the fake stops when this
/// is dropped.
pub struct Upstream {
    /// The deployments' `api_base`.
    pub api_base: String,
    /// The fake itself.
    pub fake: Box<dyn Recorded>,
}

impl Upstream {
    /// Whether the last request the fake received carried an image, in the format of the
    /// fake's protocol: OpenAI `{"type": "image_url"}`, Anthropic `{"type": "image"}`, Bedrock
    /// `{"image": …}`, Gemini `inlineData` / `fileData` parts.
    fn saw_image(&self) -> bool {
        let body = self.fake.last_body();
        let openai_like = body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .any(|part| {
                part["type"] == "image_url" || part["type"] == "image" || part["image"].is_object()
            });
        let gemini = body["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["parts"].as_array())
            .flatten()
            .any(|part| part["inlineData"].is_object() || part["fileData"].is_object());
        openai_like || gemini
    }
}

type Start = fn() -> Pin<Box<dyn Future<Output = Result<Upstream>> + Send>>;

/// How one provider is set up and what the suite may expect of it.
pub struct Provider {
    /// Short name, used as the prefix of its model names on the edge.
    pub name: &'static str,
    /// The deployment's `provider` kind.
    pub kind: &'static str,
    /// Starts its fake.
    pub start: Start,
    /// The credential's fields (all of them are secret).
    pub credential: &'static [(&'static str, &'static str)],
    /// The deployments' `region` ("" for none).
    pub region: &'static str,
    /// The deployments' provider-specific settings.
    pub settings: &'static [(&'static str, &'static str)],
    /// The fake's model that answers normally.
    pub model: &'static str,
    /// The fake's model for embeddings, when the provider has them.
    pub embedding_model: Option<&'static str>,
    /// The fake's models for each failure class.
    pub rate_limited: &'static str,
    pub invalid_request: &'static str,
    pub auth_refused: &'static str,
    pub server_error: &'static str,
    pub hang: &'static str,
    /// The message the fake's `invalid_request` model answers with.
    pub invalid_message: &'static str,
    /// The `retry-after` the fake's `rate_limited` model sends, if any.
    pub retry_after: Option<&'static str>,
    pub supports_tools: bool,
    pub supports_images: bool,
    /// The provider reports token counts for embeddings (Gemini's embed API does not).
    pub embedding_usage: bool,
}

/// The provider descriptions.
pub mod providers {
    use tollgate_test_support::anthropic_upstream::FakeAnthropic;
    use tollgate_test_support::bedrock_upstream::{FakeBedrock, VALIDATION_MESSAGE};
    use tollgate_test_support::gemini_upstream::FakeGemini;
    use tollgate_test_support::openai_upstream::FakeOpenAi;
    use tollgate_test_support::sagemaker_upstream::{FakeSagemaker, MODEL_ERROR_MESSAGE};

    use super::{Provider, Upstream};

    pub fn openai_compatible() -> Provider {
        Provider {
            name: "openai_compatible",
            kind: "openai_compatible",
            start: || {
                Box::pin(async {
                    let fake = FakeOpenAi::start().await?;
                    Ok(Upstream {
                        api_base: fake.base_url(),
                        fake: Box::new(fake),
                    })
                })
            },
            credential: &[("api_key", "sk-conformance-openai-secret")],
            region: "",
            settings: &[],
            model: "gpt-upstream-x",
            embedding_model: Some("text-embedding-fake"),
            rate_limited: "fail-429",
            invalid_request: "fail-400",
            auth_refused: "fail-401",
            server_error: "fail-500",
            hang: "hang",
            invalid_message: "bad things in request",
            retry_after: Some("7"),
            supports_tools: true,
            supports_images: true,
            embedding_usage: true,
        }
    }

    pub fn anthropic() -> Provider {
        Provider {
            name: "anthropic",
            kind: "anthropic",
            start: || {
                Box::pin(async {
                    let fake = FakeAnthropic::start().await?;
                    Ok(Upstream {
                        api_base: fake.base_url(),
                        fake: Box::new(fake),
                    })
                })
            },
            credential: &[("api_key", "sk-ant-conformance-secret")],
            region: "",
            settings: &[],
            model: "claude-test",
            embedding_model: None,
            rate_limited: "fail-429",
            invalid_request: "fail-400",
            auth_refused: "fail-401",
            server_error: "fail-500",
            hang: "hang",
            invalid_message: "messages.0.content: bad things in request",
            retry_after: Some("7"),
            supports_tools: true,
            supports_images: true,
            embedding_usage: true,
        }
    }

    /// Gemini's generateContent API; images arrive as `inlineData` parts.
    pub fn gemini() -> Provider {
        Provider {
            name: "gemini",
            kind: "gemini",
            start: || {
                Box::pin(async {
                    let fake = FakeGemini::start().await?;
                    Ok(Upstream {
                        api_base: fake.base_url(),
                        fake: Box::new(fake),
                    })
                })
            },
            credential: &[("api_key", "gemini-conformance-secret")],
            region: "",
            settings: &[],
            model: "gemini-test",
            embedding_model: Some("text-embedding-test"),
            rate_limited: "fail-429",
            invalid_request: "fail-400",
            auth_refused: "fail-403",
            server_error: "fail-500",
            hang: "hang",
            invalid_message: "bad things in request",
            retry_after: Some("7"),
            supports_tools: true,
            supports_images: true,
            embedding_usage: false,
        }
    }

    /// Azure OpenAI on the OpenAI fake's Azure paths (`/openai/deployments/{model}/…`).
    pub fn azure_openai() -> Provider {
        Provider {
            name: "azure_openai",
            kind: "azure_openai",
            start: || {
                Box::pin(async {
                    let fake = FakeOpenAi::start().await?;
                    let root = fake.base_url().trim_end_matches("/v1").to_owned();
                    Ok(Upstream {
                        api_base: format!("{root}/"),
                        fake: Box::new(fake),
                    })
                })
            },
            credential: &[("api_key", "azure-conformance-secret")],
            region: "",
            settings: &[],
            model: "gpt4o-prod",
            embedding_model: Some("text-embedding-prod"),
            rate_limited: "fail-429",
            invalid_request: "fail-400",
            auth_refused: "fail-401",
            server_error: "fail-500",
            hang: "hang",
            invalid_message: "bad things in request",
            retry_after: Some("7"),
            supports_tools: true,
            supports_images: true,
            embedding_usage: true,
        }
    }

    /// SageMaker with a Messages API (LMI) container, which takes OpenAI chat bodies.
    pub fn sagemaker() -> Provider {
        Provider {
            name: "sagemaker",
            kind: "sagemaker",
            start: || {
                Box::pin(async {
                    let fake = FakeSagemaker::start().await?;
                    Ok(Upstream {
                        api_base: fake.endpoint_url(),
                        fake: Box::new(fake),
                    })
                })
            },
            credential: &[
                ("aws_access_key_id", "AKIDSAGEMAKERCONF"),
                ("aws_secret_access_key", "conformance-sagemaker-secret"),
            ],
            region: "eu-west-1",
            settings: &[],
            model: "lmi-llama",
            embedding_model: None,
            rate_limited: "fail-throttle",
            invalid_request: "fail-model",
            auth_refused: "fail-denied",
            server_error: "fail-internal",
            hang: "hang",
            invalid_message: MODEL_ERROR_MESSAGE,
            // SageMaker's ThrottlingException carries no retry-after.
            retry_after: None,
            supports_tools: true,
            supports_images: true,
            embedding_usage: true,
        }
    }

    /// SageMaker with a Hugging Face TGI container (`format = tgi`): text in, text out; no
    /// tools and no images (declared gaps), no embeddings.
    pub fn sagemaker_tgi() -> Provider {
        Provider {
            name: "sagemaker_tgi",
            settings: &[("format", "tgi")],
            model: "tgi-llama",
            supports_tools: false,
            supports_images: false,
            ..sagemaker()
        }
    }

    pub fn bedrock() -> Provider {
        Provider {
            name: "bedrock",
            kind: "bedrock",
            start: || {
                Box::pin(async {
                    let fake = FakeBedrock::start().await?;
                    Ok(Upstream {
                        api_base: fake.endpoint_url(),
                        fake: Box::new(fake),
                    })
                })
            },
            credential: &[
                ("aws_access_key_id", "AKIDCONFORMANCE"),
                ("aws_secret_access_key", "conformance-aws-secret"),
            ],
            region: "us-east-1",
            settings: &[],
            model: "anthropic.claude-test",
            embedding_model: Some("amazon.titan-embed-text-v2:0"),
            rate_limited: "fail-throttle",
            invalid_request: "fail-validation",
            auth_refused: "fail-denied",
            server_error: "fail-500",
            hang: "hang",
            invalid_message: VALIDATION_MESSAGE,
            // Bedrock's ThrottlingException carries no retry-after.
            retry_after: None,
            supports_tools: true,
            supports_images: true,
            embedding_usage: true,
        }
    }
}

/// USD per million tokens of the `chat` model of every provider.
const INPUT_PRICE: f64 = 3.0;
const OUTPUT_PRICE: f64 = 15.0;
const CACHED_PRICE: f64 = 0.3;
const CACHE_WRITE_PRICE: f64 = 3.75;

/// What each of a provider's deployments is for; each role has its own model on the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Chat,
    Embed,
    RateLimited,
    InvalidRequest,
    AuthRefused,
    ServerError,
    Hang,
}

const ROLES: [Role; 7] = [
    Role::Chat,
    Role::Embed,
    Role::RateLimited,
    Role::InvalidRequest,
    Role::AuthRefused,
    Role::ServerError,
    Role::Hang,
];

impl Role {
    fn suffix(self) -> &'static str {
        match self {
            Role::Chat => "chat",
            Role::Embed => "embed",
            Role::RateLimited => "rate-limited",
            Role::InvalidRequest => "invalid-request",
            Role::AuthRefused => "auth-refused",
            Role::ServerError => "server-error",
            Role::Hang => "hang",
        }
    }

    /// The fake's model behind this role.
    fn upstream(self, p: &Provider) -> &'static str {
        match self {
            Role::Chat => p.model,
            // Without embeddings, the chat model: the edge must refuse before calling it.
            Role::Embed => p.embedding_model.unwrap_or(p.model),
            Role::RateLimited => p.rate_limited,
            Role::InvalidRequest => p.invalid_request,
            Role::AuthRefused => p.auth_refused,
            Role::ServerError => p.server_error,
            Role::Hang => p.hang,
        }
    }
}

/// The edge model name of `role` on provider `p`.
fn model(p: &Provider, role: Role) -> String {
    format!("{}-{}", p.name, role.suffix())
}

/// A control plane and one edge with deployments on the fakes of some providers; its fakes are
/// the fake of each provider, by provider name.
pub type Harness = Gateway<HashMap<&'static str, Upstream>>;

/// A harness on `providers`, with edge timeouts of 5 s to the first byte and 10 s in all.
pub async fn harness(providers: &[&Provider]) -> Result<Harness> {
    harness_with(providers, |_| {}).await
}

/// A harness with the edge's configuration changed by `configure`.
pub async fn harness_with(
    providers: &[&Provider],
    configure: impl FnOnce(&mut tollgate_edge::config::EdgeConfig),
) -> Result<Harness> {
    let mut staging = Staging::start().await?;
    let mut upstreams = HashMap::new();
    for p in providers {
        let upstream = (p.start)()
            .await
            .with_context(|| format!("starting the fake {}", p.name))?;
        let api_base = upstream.api_base.clone();
        let template = Deployment {
            region: p.region.into(),
            settings: p
                .settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..staging.provider(p.kind, api_base, p.credential).await?
        };
        let names: Vec<String> = ROLES.iter().map(|role| model(p, *role)).collect();
        let models: Vec<(&str, &str)> = ROLES
            .iter()
            .zip(&names)
            .map(|(role, name)| (name.as_str(), role.upstream(p)))
            .collect();
        staging.deploy(&template, &models).await?;
        let prices = [INPUT_PRICE, OUTPUT_PRICE, CACHED_PRICE, CACHE_WRITE_PRICE];
        staging.price(&model(p, Role::Chat), prices).await?;
        upstreams.insert(p.name, upstream);
    }
    staging.serve(upstreams, configure).await
}

/// The fake upstream of provider `p`.
fn upstream<'h>(h: &'h Harness, p: &Provider) -> &'h Upstream {
    &h.fake[p.name]
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
            "required": ["location"]}}}])
}

/// A 1×1 PNG.
const PNG_DATA_URL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// The JSON chunks of an OpenAI event stream; fails unless every event is a `data:` line and
/// the stream ends with exactly one `data: [DONE]`.
fn parse_stream(text: &str) -> Result<Vec<Value>> {
    let (chunks, done) = common::parse_stream(text).with_context(|| text.to_owned())?;
    ensure!(
        done && text.ends_with("data: [DONE]\n\n"),
        "the stream does not end with data: [DONE]:\n{text}"
    );
    Ok(chunks)
}

/// Asserts what every chunk of every chat stream must satisfy, and returns the streamed text.
fn check_chunks(chunks: &[Value], text: &str) -> Result<String> {
    ensure!(!chunks.is_empty(), "no chunks:\n{text}");
    for chunk in chunks {
        ensure!(
            chunk["object"] == "chat.completion.chunk",
            "not a chunk: {chunk}"
        );
        ensure!(
            chunk["id"].as_str().is_some_and(|id| !id.is_empty()),
            "no id: {chunk}"
        );
        ensure!(chunk["id"] == chunks[0]["id"], "ids differ: {chunk}");
        ensure!(chunk["created"].is_u64(), "no created: {chunk}");
        ensure!(chunk["model"].is_string(), "no model: {chunk}");
        ensure!(chunk["choices"].is_array(), "no choices: {chunk}");
    }
    ensure!(
        chunks[0]["choices"][0]["delta"]["role"] == "assistant",
        "the first delta has no role assistant: {}",
        chunks[0]
    );
    let finishes = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|choice| !choice["finish_reason"].is_null())
        })
        .count();
    ensure!(
        finishes == 1,
        "{finishes} chunks with a finish_reason:\n{text}"
    );
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    Ok(streamed)
}

/// The typed events of an SSE stream (Anthropic's and the Responses API's): `(event, data)`,
/// checking that each event's `type` is its name.
fn typed_events(text: &str) -> Result<Vec<(String, Value)>> {
    let mut events = Vec::new();
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let (name, data) = event
            .strip_prefix("event: ")
            .and_then(|e| e.split_once("\ndata: "))
            .with_context(|| format!("not a typed event: {event:?}\n{text}"))?;
        let data: Value = serde_json::from_str(data)?;
        ensure!(
            data["type"] == name,
            "event {name} has type {}",
            data["type"]
        );
        events.push((name.to_owned(), data));
    }
    Ok(events)
}

/// The cost the price table gives for token counts.
fn priced(uncached: u64, cached: u64, written: u64, output: u64) -> f64 {
    (uncached as f64 * INPUT_PRICE
        + cached as f64 * CACHED_PRICE
        + written as f64 * CACHE_WRITE_PRICE
        + output as f64 * OUTPUT_PRICE)
        / 1e6
}

/// A 200 answer as JSON with its `x-tollgate-cost-usd`, or an error saying what came instead.
async fn ok_json(response: reqwest::Response) -> Result<(Value, f64)> {
    let status = response.status();
    let cost = header(&response, "x-tollgate-cost-usd").unwrap_or_default();
    let text = response.text().await?;
    ensure!(status == 200, "HTTP {status}: {text}");
    Ok((serde_json::from_str(&text)?, cost.parse().unwrap_or(-1.0)))
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The cases, each run for every provider.
pub mod cases {
    use super::*;

    pub use super::golden::golden_translations;

    /// A completion: content, usage, cost from the price table, and the edge's headers.
    pub async fn plain_completion(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let response = h
            .post(&json!({"model": model(p, Role::Chat), "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there, how are you?"}]}))
            .await?;
        let status = response.status();
        let request_id = header(&response, "x-request-id");
        let deployment = header(&response, "x-tollgate-deployment");
        let cost = header(&response, "x-tollgate-cost-usd");
        let body: Value = response.json().await?;
        ensure!(status == 200, "HTTP {status}: {body}");
        ensure!(
            request_id.is_some_and(|id| !id.is_empty()),
            "no x-request-id"
        );
        assert_eq!(
            deployment.as_ref(),
            h.deployments.get(&model(p, Role::Chat)),
            "x-tollgate-deployment"
        );
        assert_eq!(body["object"], "chat.completion", "{body}");
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant", "{body}");
        assert!(
            choice["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "no content: {body}"
        );
        assert_eq!(choice["finish_reason"], "stop", "{body}");

        let usage = &body["usage"];
        let prompt = usage["prompt_tokens"].as_u64().unwrap_or_default();
        let completion = usage["completion_tokens"].as_u64().unwrap_or_default();
        assert!(prompt > 0 && completion > 0, "usage: {usage}");
        assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
        let details = &usage["prompt_tokens_details"];
        let cached = details["cached_tokens"].as_u64().unwrap_or_default();
        let written = details["cache_write_tokens"].as_u64().unwrap_or_default();
        let expected = ((prompt - cached - written) as f64 * INPUT_PRICE
            + cached as f64 * CACHED_PRICE
            + written as f64 * CACHE_WRITE_PRICE
            + completion as f64 * OUTPUT_PRICE)
            / 1e6;
        let cost: f64 = cost.context("no x-tollgate-cost-usd")?.parse()?;
        assert!(
            (cost - expected).abs() < 1e-6,
            "x-tollgate-cost-usd {cost}, but the price table on {usage} gives {expected}"
        );
        Ok(())
    }

    fn stream_request(p: &Provider, include_usage: bool) -> Value {
        let mut body = chat_request(&model(p, Role::Chat), "Hello there");
        body["stream"] = json!(true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// A stream with `include_usage`: OpenAI chunks, role first, one finish, usage last.
    pub async fn streaming_with_usage(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let response = h.post(&stream_request(p, true)).await?;
        assert_eq!(response.status(), 200);
        assert!(
            header(&response, "content-type").is_some_and(|t| t.starts_with("text/event-stream")),
            "content-type {:?}",
            header(&response, "content-type")
        );
        assert!(header(&response, "x-request-id").is_some());
        assert!(header(&response, "x-tollgate-deployment").is_some());
        let text = response.text().await?;
        let chunks = parse_stream(&text)?;
        let streamed = check_chunks(&chunks, &text)?;
        assert!(!streamed.is_empty(), "no text was streamed:\n{text}");
        let last = chunks.last().context("no chunks")?;
        assert_eq!(
            last["choices"],
            json!([]),
            "the last chunk is not usage:\n{text}"
        );
        let usage = &last["usage"];
        assert!(
            usage["prompt_tokens"].as_u64().is_some_and(|n| n > 0)
                && usage["completion_tokens"].as_u64().is_some_and(|n| n > 0),
            "usage: {usage}"
        );
        let with_usage = chunks.iter().filter(|c| c["usage"].is_object()).count();
        assert_eq!(with_usage, 1, "usage in more than one chunk:\n{text}");
        Ok(())
    }

    /// With `include_usage`, as OpenAI documents it: "All other chunks will also include a
    /// usage field, but with a null value" — so that every upstream's stream looks the same.
    pub async fn streaming_usage_null_before_the_last_chunk(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let response = h.post(&stream_request(p, true)).await?;
        assert_eq!(response.status(), 200);
        let text = response.text().await?;
        let chunks = parse_stream(&text)?;
        let (last, others) = chunks.split_last().context("no chunks")?;
        assert!(last["usage"].is_object(), "no usage last:\n{text}");
        for chunk in others {
            assert!(
                chunk.get("usage").is_some_and(Value::is_null),
                "a chunk before the usage chunk has no \"usage\": null: {chunk}"
            );
        }
        Ok(())
    }

    /// A stream without `include_usage`: the same, and no `usage` key anywhere.
    pub async fn streaming_without_usage(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let response = h.post(&stream_request(p, false)).await?;
        assert_eq!(response.status(), 200);
        let text = response.text().await?;
        let chunks = parse_stream(&text)?;
        let streamed = check_chunks(&chunks, &text)?;
        assert!(!streamed.is_empty(), "no text was streamed:\n{text}");
        for chunk in &chunks {
            assert!(
                chunk.get("usage").is_none(),
                "usage was not asked for, yet a chunk has a usage key: {chunk}\n{text}"
            );
            assert!(
                !chunk["choices"].as_array().is_some_and(Vec::is_empty),
                "{chunk}"
            );
        }
        Ok(())
    }

    /// Tools offered → a tool call; its result sent back → text.
    pub async fn tool_call_round_trip(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let mut request = chat_request(&model(p, Role::Chat), "What is the weather in Paris?");
        request["tools"] = weather_tool();
        request["tool_choice"] = json!("auto");
        if !p.supports_tools {
            return refused_as_unsupported(&h, p, &request, "tools").await;
        }
        let body = h.json(&request).await?;
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
        assert_eq!(choice["message"]["role"], "assistant", "{body}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function", "{body}");
        assert_eq!(call["function"]["name"], "get_weather", "{body}");
        let id = call["id"].as_str().context("the tool call has no id")?;
        assert!(!id.is_empty());
        let arguments = call["function"]["arguments"]
            .as_str()
            .context("arguments are not a string")?;
        let arguments: Value = serde_json::from_str(arguments)
            .with_context(|| format!("arguments are not JSON: {arguments:?}"))?;
        assert!(arguments.is_object(), "{arguments}");

        let messages = request["messages"].as_array_mut().context("messages")?;
        messages.push(choice["message"].clone());
        messages.push(json!({"role": "tool", "tool_call_id": id,
            "content": "22 degrees and sunny"}));
        let body = h.json(&request).await?;
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{body}");
        assert!(
            choice["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "no text after the tool result: {body}"
        );
        assert!(
            choice["message"]
                .get("tool_calls")
                .is_none_or(Value::is_null),
            "{body}"
        );
        Ok(())
    }

    /// Tools offered to a stream → tool-call deltas: id, type and name first, then argument
    /// fragments that join into JSON, and one `finish_reason: tool_calls`.
    pub async fn tool_call_streamed(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let mut request = chat_request(&model(p, Role::Chat), "What is the weather in Paris?");
        request["tools"] = weather_tool();
        request["stream"] = json!(true);
        if !p.supports_tools {
            return refused_as_unsupported(&h, p, &request, "tools").await;
        }
        let response = h.post(&request).await?;
        assert_eq!(response.status(), 200);
        let text = response.text().await?;
        let chunks = parse_stream(&text)?;
        check_chunks(&chunks, &text)?;
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
            .flatten()
            .collect();
        let first = calls.first().context("no tool-call deltas")?;
        assert!(
            first["id"].as_str().is_some_and(|id| !id.is_empty()),
            "the first tool-call delta has no id: {first}"
        );
        assert_eq!(first["type"], "function", "{first}");
        assert_eq!(first["function"]["name"], "get_weather", "{first}");
        assert!(
            calls.iter().all(|c| c["index"] == 0),
            "one call, index 0: {calls:?}"
        );
        assert!(
            calls[1..]
                .iter()
                .all(|c| c.get("id").is_none_or(Value::is_null)),
            "only the first delta of a call has its id: {calls:?}"
        );
        let arguments: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        let arguments: Value = serde_json::from_str(&arguments)
            .with_context(|| format!("the argument fragments are not JSON: {arguments:?}"))?;
        assert!(arguments.is_object(), "{arguments}");
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, vec![&json!("tool_calls")], "{text}");
        Ok(())
    }

    /// An `image_url` data: part reaches the fake as an image.
    pub async fn image_input(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let upstream = upstream(&h, p);
        let with_image = json!({"model": model(p, Role::Chat), "messages": [{"role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": PNG_DATA_URL}}]}]});
        if !p.supports_images {
            return refused_as_unsupported(&h, p, &with_image, "image_url").await;
        }
        h.json(&chat_request(&model(p, Role::Chat), "no picture here"))
            .await?;
        assert!(
            !upstream.saw_image(),
            "the fake says a text-only request carried an image"
        );
        let body = h.json(&with_image).await?;
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{body}"
        );
        assert!(upstream.saw_image(), "the image did not reach the upstream");
        Ok(())
    }

    /// Embeddings where the provider has them; elsewhere a 400 without any upstream call.
    pub async fn embeddings(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let before = upstream(&h, p).fake.requests();
        let response = h
            .post_to(
                "/v1/embeddings",
                &json!({"model": model(p, Role::Embed), "input": ["a b", "c"]}),
            )
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if p.embedding_model.is_some() {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["object"], "list");
            let data = body["data"].as_array().context("no data")?;
            assert_eq!(data.len(), 2, "{body}");
            assert!(data.iter().all(|d| d["embedding"].is_array()), "{body}");
            if p.embedding_usage {
                assert!(
                    body["usage"]["prompt_tokens"]
                        .as_u64()
                        .is_some_and(|n| n > 0),
                    "{body}"
                );
            }
        } else {
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["code"], "invalid_request_error", "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
            assert_eq!(
                upstream(&h, p).fake.requests(),
                before,
                "the upstream was called"
            );
        }
        Ok(())
    }

    /// A declared capability gap: the request is refused with 400 `invalid_request_error`, a
    /// message naming what is missing (`what`), and no upstream call.
    async fn refused_as_unsupported(
        h: &Harness,
        p: &Provider,
        request: &Value,
        what: &str,
    ) -> Result<()> {
        let before = upstream(h, p).fake.requests();
        let (status, _, body) = error_of(h.post(request).await?).await?;
        assert_eq!(status, 400, "{}: {body}", p.name);
        assert_eq!(body["error"]["code"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(what),
            "the refusal does not name {what}: {body}"
        );
        assert_eq!(
            upstream(h, p).fake.requests(),
            before,
            "the upstream was called"
        );
        Ok(())
    }

    /// The status, `retry-after` and JSON body of an error answer.
    async fn error_of(response: reqwest::Response) -> Result<(u16, Option<String>, Value)> {
        let status = response.status().as_u16();
        let retry_after = header(&response, "retry-after");
        let text = response.text().await?;
        let body = serde_json::from_str(&text)
            .with_context(|| format!("HTTP {status}: not a JSON error: {text}"))?;
        Ok((status, retry_after, body))
    }

    /// The error answer to `role`'s model, plain and streamed.
    async fn errors(
        h: &Harness,
        p: &Provider,
        role: Role,
    ) -> Result<Vec<(bool, u16, Option<String>, Value)>> {
        let mut out = Vec::new();
        for stream in [false, true] {
            let mut body = chat_request(&model(p, role), "hello");
            body["stream"] = json!(stream);
            let (status, retry_after, body) = error_of(h.post(&body).await?).await?;
            out.push((stream, status, retry_after, body));
        }
        Ok(out)
    }

    /// No error answer reveals a secret of the credential or the upstream's address.
    fn check_no_leak(p: &Provider, h: &Harness, body: &Value) {
        let text = body.to_string();
        for (_, secret) in p.credential {
            assert!(!text.contains(secret), "the credential leaked: {text}");
        }
        assert!(
            !text.contains(&upstream(h, p).api_base) && !text.contains("127.0.0.1"),
            "the upstream's address leaked: {text}"
        );
    }

    pub async fn error_rate_limited(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        for (stream, status, retry_after, body) in errors(&h, p, Role::RateLimited).await? {
            assert_eq!(status, 429, "stream {stream}: {body}");
            assert_eq!(
                body["error"]["code"], "rate_limit_exceeded",
                "stream {stream}: {body}"
            );
            if let Some(expected) = p.retry_after {
                assert_eq!(
                    retry_after.as_deref(),
                    Some(expected),
                    "stream {stream}: retry-after"
                );
            }
            check_no_leak(p, &h, &body);
        }
        Ok(())
    }

    pub async fn error_invalid_request(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        for (stream, status, _, body) in errors(&h, p, Role::InvalidRequest).await? {
            assert_eq!(status, 400, "stream {stream}: {body}");
            assert_eq!(
                body["error"]["code"], "upstream_rejected",
                "stream {stream}: {body}"
            );
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(p.invalid_message),
                "stream {stream}: the upstream's message {:?} is not in {body}",
                p.invalid_message
            );
            check_no_leak(p, &h, &body);
        }
        Ok(())
    }

    pub async fn error_auth_refused(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let deployment = &h.deployments[&model(p, Role::AuthRefused)];
        for (stream, status, _, body) in errors(&h, p, Role::AuthRefused).await? {
            assert_eq!(status, 502, "stream {stream}: {body}");
            assert_eq!(
                body["error"]["code"], "upstream_error",
                "stream {stream}: {body}"
            );
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&format!("deployment {deployment}")),
                "stream {stream}: the message does not name deployment {deployment}: {body}"
            );
            check_no_leak(p, &h, &body);
        }
        Ok(())
    }

    pub async fn error_server_error(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        for (stream, status, _, body) in errors(&h, p, Role::ServerError).await? {
            assert_eq!(status, 502, "stream {stream}: {body}");
            assert_eq!(
                body["error"]["code"], "upstream_error",
                "stream {stream}: {body}"
            );
            check_no_leak(p, &h, &body);
        }
        Ok(())
    }

    /// boto3's four Bedrock operations through the Bedrock surface, served by this provider:
    /// Converse's output, usage and cost; ConverseStream's events; InvokeModel with an
    /// Anthropic body, plain and streamed as Bedrock `chunk`s.
    pub async fn surface_bedrock(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let m = model(p, Role::Chat);
        let question = json!({"messages": [{"role": "user", "content": [{"text": "Hello there"}]}],
            "inferenceConfig": {"maxTokens": 50}});
        let (out, cost) = ok_json(
            h.post_to(&format!("/model/{m}/converse"), &question)
                .await?,
        )
        .await?;
        let text = out["output"]["message"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        ensure!(!text.is_empty() && out["stopReason"] == "end_turn", "{out}");
        let usage = &out["usage"];
        let count = |name: &str| usage[name].as_u64().unwrap_or_default();
        ensure!(
            count("inputTokens") > 0 && count("outputTokens") > 0,
            "{out}"
        );
        let expected = priced(
            count("inputTokens"),
            count("cacheReadInputTokens"),
            count("cacheWriteInputTokens"),
            count("outputTokens"),
        );
        ensure!(
            (cost - expected).abs() < 1e-6,
            "cost {cost}, usage {usage} gives {expected}"
        );

        let response = h
            .post_to(&format!("/model/{m}/converse-stream"), &question)
            .await?;
        ensure!(response.status() == 200, "HTTP {}", response.status());
        let events = read_event_stream(&response.bytes().await?)?;
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        ensure!(
            kinds.first() == Some(&"messageStart") && kinds.last() == Some(&"metadata"),
            "{kinds:?}"
        );
        let streamed: String = events
            .iter()
            .filter_map(|(_, e)| e["delta"]["text"].as_str())
            .collect();
        ensure!(streamed == text, "streamed {streamed:?}, answered {text:?}");
        let (_, metadata) = &events[events.len() - 1];
        ensure!(
            metadata["usage"]["outputTokens"].as_u64() > Some(0),
            "{metadata}"
        );

        let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hello there"}]});
        let (message, _) = ok_json(h.post_to(&format!("/model/{m}/invoke"), &body).await?).await?;
        ensure!(
            message["type"] == "message" && message["content"][0]["text"] == text,
            "{message}"
        );
        let response = h
            .post_to(&format!("/model/{m}/invoke-with-response-stream"), &body)
            .await?;
        ensure!(response.status() == 200, "HTTP {}", response.status());
        let mut kinds = Vec::new();
        for (kind, chunk) in read_event_stream(&response.bytes().await?)? {
            ensure!(kind == "chunk", "{kind}: {chunk}");
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                chunk["bytes"].as_str().unwrap_or_default(),
            )?;
            let event: Value = serde_json::from_slice(&bytes)?;
            kinds.push(event["type"].as_str().unwrap_or_default().to_owned());
        }
        ensure!(
            kinds.first().map(String::as_str) == Some("message_start"),
            "{kinds:?}"
        );
        ensure!(
            kinds.last().map(String::as_str) == Some("message_stop"),
            "{kinds:?}"
        );
        Ok(())
    }

    /// Anthropic's Messages API served by this provider: a message with usage and cost, and
    /// the stream's event sequence.
    pub async fn surface_anthropic_messages(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let body = json!({"model": model(p, Role::Chat), "max_tokens": 50,
            "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there"}]});
        let (message, cost) = ok_json(h.post_to("/v1/messages", &body).await?).await?;
        let text = message["content"][0]["text"].as_str().unwrap_or_default();
        ensure!(
            !text.is_empty() && message["stop_reason"] == "end_turn",
            "{message}"
        );
        let usage = &message["usage"];
        let count = |name: &str| usage[name].as_u64().unwrap_or_default();
        let expected = priced(
            count("input_tokens"),
            count("cache_read_input_tokens"),
            count("cache_creation_input_tokens"),
            count("output_tokens"),
        );
        ensure!(count("output_tokens") > 0, "{message}");
        ensure!(
            (cost - expected).abs() < 1e-6,
            "cost {cost}, usage {usage} gives {expected}"
        );

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = typed_events(&h.post_to("/v1/messages", &streamed).await?.text().await?)?;
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        ensure!(kinds.first() == Some(&"message_start"), "{kinds:?}");
        ensure!(
            kinds.ends_with(&["message_delta", "message_stop"]),
            "{kinds:?}"
        );
        let streamed: String = events
            .iter()
            .filter_map(|(_, e)| e["delta"]["text"].as_str())
            .collect();
        ensure!(streamed == text, "streamed {streamed:?}, answered {text:?}");
        let delta = &events[events.len() - 2].1;
        ensure!(
            delta["usage"]["output_tokens"].as_u64() > Some(0),
            "{delta}"
        );
        Ok(())
    }

    /// OpenAI's Responses API served by this provider: a response with usage and cost, and
    /// the stream's event sequence.
    pub async fn surface_responses(p: &Provider) -> Result<()> {
        let h = harness(&[p]).await?;
        let body = json!({"model": model(p, Role::Chat), "input": "Hello there",
            "instructions": "Be brief.", "store": false});
        let (response, cost) = ok_json(h.post_to("/v1/responses", &body).await?).await?;
        let text = response["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            !text.is_empty() && response["status"] == "completed",
            "{response}"
        );
        let usage = &response["usage"];
        let count = |name: &str| usage[name].as_u64().unwrap_or_default();
        let cached = usage["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or_default();
        ensure!(count("output_tokens") > 0, "{response}");
        // No cache_control was sent, so nothing was written to a prompt cache (the Responses
        // API has no field for cache writes).
        let expected = priced(
            count("input_tokens") - cached,
            cached,
            0,
            count("output_tokens"),
        );
        ensure!(
            (cost - expected).abs() < 1e-6,
            "cost {cost}, usage {usage} gives {expected}"
        );

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = typed_events(&h.post_to("/v1/responses", &streamed).await?.text().await?)?;
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        ensure!(kinds.first() == Some(&"response.created"), "{kinds:?}");
        ensure!(kinds.last() == Some(&"response.completed"), "{kinds:?}");
        let streamed: String = events
            .iter()
            .filter(|(k, _)| k == "response.output_text.delta")
            .filter_map(|(_, e)| e["delta"].as_str())
            .collect();
        ensure!(streamed == text, "streamed {streamed:?}, answered {text:?}");
        let completed = &events[events.len() - 1].1["response"];
        ensure!(
            completed["usage"]["output_tokens"].as_u64() > Some(0),
            "{completed}"
        );
        Ok(())
    }

    pub async fn error_hang(p: &Provider) -> Result<()> {
        let timeout = Duration::from_millis(800);
        let h = harness_with(&[p], timeouts(timeout, timeout)).await?;
        for stream in [false, true] {
            let mut body = chat_request(&model(p, Role::Hang), "hello");
            body["stream"] = json!(stream);
            let started = tokio::time::Instant::now();
            let (status, _, body) = error_of(h.post(&body).await?).await?;
            let took = started.elapsed();
            assert_eq!(status, 504, "stream {stream}: {body}");
            assert_eq!(
                body["error"]["code"], "upstream_timeout",
                "stream {stream}: {body}"
            );
            assert!(
                took < Duration::from_secs(5),
                "stream {stream}: took {took:?}"
            );
            check_no_leak(p, &h, &body);
        }
        Ok(())
    }
}

/// One `#[tokio::test]` per (provider, case), in a module per provider (`bedrock::image_input`),
/// and `all_providers()` for the tests that put every provider on one edge.
macro_rules! conformance {
    (@cases $provider:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() -> anyhow::Result<()> {
                super::cases::$case(&super::providers::$provider()).await
            }
        )*
    };
    ($($provider:ident),* $(,)?) => {
        /// Every provider of the suite, in the order listed.
        fn all_providers() -> Vec<Provider> {
            vec![$(providers::$provider()),*]
        }

        $(
            mod $provider {
                conformance!(@cases $provider:
                    plain_completion,
                    streaming_with_usage,
                    streaming_usage_null_before_the_last_chunk,
                    streaming_without_usage,
                    tool_call_round_trip,
                    tool_call_streamed,
                    image_input,
                    embeddings,
                    error_rate_limited,
                    error_invalid_request,
                    error_auth_refused,
                    error_server_error,
                    error_hang,
                    surface_bedrock,
                    surface_anthropic_messages,
                    surface_responses,
                    golden_translations,
                );
            }
        )*
    };
}

conformance!(
    openai_compatible,
    anthropic,
    bedrock,
    azure_openai,
    sagemaker,
    sagemaker_tgi,
    gemini
);

/// Streams through each model with the OpenAI SDK and prints, per model, the shape of every
/// chunk as the SDK parsed it.
const SDK_SCRIPT: &str = r#"
import json, os, sys
from openai import OpenAI

client = OpenAI(base_url=os.environ["TOLLGATE_BASE_URL"], api_key=os.environ["TOLLGATE_KEY"],
                max_retries=0, timeout=30)
shapes = {}
for model in os.environ["TOLLGATE_MODELS"].split(","):
    stream = client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Hello there"}])
    chunks = []
    for chunk in stream:
        raw = chunk.model_dump(exclude_unset=True)
        choices = raw.get("choices") or []
        chunks.append({
            "keys": sorted(raw.keys()),
            "object": chunk.object,
            "choices": len(chunk.choices),
            "choice_keys": sorted(choices[0].keys()) if choices else [],
            "role": chunk.choices[0].delta.role if chunk.choices else None,
            "content": bool(chunk.choices and chunk.choices[0].delta.content),
            "finish_reason": chunk.choices[0].finish_reason if chunk.choices else None,
            "usage": chunk.usage is not None,
        })
    shapes[model] = chunks
print(json.dumps(shapes))
"#;

/// Optional chunk fields that only some upstreams have anything truthful to fill in, and that
/// OpenAI's own API leaves out at times: not part of the compared shape.
const OPTIONAL_KEYS: [&str; 2] = ["system_fingerprint", "service_tier"];

/// The shape a chunk is compared by: everything but whether it carries text (providers split
/// text into different numbers of deltas) and the [`OPTIONAL_KEYS`].
fn shape(chunk: &Value) -> Value {
    let keys: Vec<&Value> = chunk["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| !k.as_str().is_some_and(|k| OPTIONAL_KEYS.contains(&k)))
        .collect();
    json!({"keys": keys, "object": chunk["object"], "choices": chunk["choices"],
        "choice_keys": chunk["choice_keys"], "role": chunk["role"],
        "finish": !chunk["finish_reason"].is_null(), "usage": chunk["usage"]})
}

/// One line per shape, for failure messages.
fn lines(shapes: &[Value]) -> String {
    shapes
        .iter()
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_streams_look_the_same_through_every_provider() -> Result<()> {
    let python = tollgate_test_support::python_with("openai").await?;
    // The first, openai_compatible, is the reference the others are compared with.
    let all = all_providers();
    let h = harness(&all.iter().collect::<Vec<_>>()).await?;
    let models: Vec<String> = all.iter().map(|p| model(p, Role::Chat)).collect();
    let base_url = h.edge.url("/v1");
    let models_list = models.join(",");
    let env = [
        ("TOLLGATE_BASE_URL", base_url.as_str()),
        ("TOLLGATE_KEY", h.secret.as_str()),
        ("TOLLGATE_MODELS", models_list.as_str()),
    ];
    let stdout = tollgate_test_support::run_python(
        &python,
        &[OsStr::new("-c"), OsStr::new(SDK_SCRIPT)],
        &env,
    )
    .await?;
    let shapes: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the SDK script printed no JSON: {stdout}"))?;

    let mut collapsed = Vec::new();
    for model in &models {
        let chunks = shapes[model].as_array().context("no chunks")?;
        ensure!(!chunks.is_empty(), "{model}: no chunks");
        assert_eq!(
            chunks[0]["role"], "assistant",
            "{model}: role first: {chunks:?}"
        );
        assert!(
            chunks.iter().any(|c| c["content"] == true),
            "{model}: no text: {chunks:?}"
        );
        let finishes = chunks
            .iter()
            .filter(|c| !c["finish_reason"].is_null())
            .count();
        assert_eq!(finishes, 1, "{model}: finish_reasons: {chunks:?}");
        let last = &chunks[chunks.len() - 1];
        assert!(
            last["usage"] == true && last["choices"] == 0,
            "{model}: the last chunk is not usage with empty choices: {last}"
        );
        // Consecutive chunks of one shape (the text deltas) count as one.
        let mut shapes: Vec<Value> = chunks.iter().map(shape).collect();
        shapes.dedup();
        collapsed.push((model, shapes));
    }
    let (first_model, first) = &collapsed[0];
    let differences: Vec<String> = collapsed[1..]
        .iter()
        .filter(|(_, shapes)| shapes != first)
        .map(|(model, shapes)| format!("{model}:\n{}", lines(shapes)))
        .collect();
    assert!(
        differences.is_empty(),
        "the chunk shapes differ from those through {first_model}:\n{first_model}:\n{}\n{}",
        lines(first),
        differences.join("\n")
    );
    Ok(())
}
