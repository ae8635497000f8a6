//! Guardrails end to end, on an OpenAI-routed model: Amazon Bedrock Guardrails through the real
//! AWS SDK's `ApplyGuardrail` against a Bedrock-protocol test server, and the built-in `pii` and
//! `regex` guardrails. The upstream is a fake OpenAI server whose `echo` model answers with the
//! prompt, so output guardrails can be given the text to find.

use tollgate_test_support::edge as common;

use anyhow::{Context, Result};
use common::*;
use serde_json::{Value, json};
use tollgate_proto::admin::Guardrail;
use tollgate_proto::usage::UsageEvent;
use tollgate_test_support::bedrock_upstream::FakeBedrock;
use tollgate_test_support::openai_upstream::FakeOpenAi;

struct Setup {
    cluster: TestCluster,
    edge: TestEdge,
    openai: FakeOpenAi,
    bedrock: FakeBedrock,
    bedrock_credential: String,
    secret: String,
    http: reqwest::Client,
}

/// What a test's guardrails may name: the fake Bedrock's endpoint, a credential for it, and
/// the team of the setup's key.
struct Names<'a> {
    endpoint: &'a str,
    credential: &'a str,
    team: &'a str,
}

impl Names<'_> {
    /// Guardrail `name` (in `mode`), the fake Bedrock's guardrail `id`.
    fn bedrock(&self, name: &str, mode: &str, id: &str) -> Guardrail {
        bedrock(name, mode, self.endpoint, self.credential, id)
    }
}

/// A control plane and an edge with model `gpt-test` (the fake's `echo`), a key in a team, and
/// `guardrails` set before the edge starts (a closure, as they need the setup's names).
async fn setup(guardrails: impl Fn(&Names) -> Vec<Guardrail>) -> Result<Setup> {
    let openai = FakeOpenAi::start().await?;
    let bedrock = FakeBedrock::start().await?;
    let mut cluster = TestCluster::start().await?;
    let admin = &mut cluster.admin;
    let openai_credential = api_key_credential(admin, "openai_compatible").await?;
    let bedrock_credential = aws_credential(admin).await?;
    let model = ("gpt-test", "echo");
    openai_compatible_deployment(admin, model, openai.base_url(), &openai_credential).await?;
    let team = create_team(admin, "search").await?;
    let (_, secret) = create_team_key(admin, &team).await?;
    let names = Names {
        endpoint: &bedrock.endpoint_url(),
        credential: &bedrock_credential,
        team: &team,
    };
    for guardrail in guardrails(&names) {
        admin.set_guardrail(guardrail).await?;
    }
    let edge = cluster.edge().await?;
    Ok(Setup {
        cluster,
        edge,
        openai,
        bedrock,
        bedrock_credential,
        secret,
        http: reqwest::Client::new(),
    })
}

/// Guardrail `name` (in `mode`), the Bedrock guardrail `id` at `endpoint`.
fn bedrock(name: &str, mode: &str, endpoint: &str, credential: &str, id: &str) -> Guardrail {
    Guardrail {
        name: name.into(),
        kind: "bedrock".into(),
        mode: mode.into(),
        config_json: json!({"guardrail_id": id, "version": "1", "region": "us-east-1",
            "endpoint": endpoint, "credential_id": credential})
        .to_string(),
        ..Default::default()
    }
}

fn local(name: &str, kind: &str, mode: &str, config: Value) -> Guardrail {
    Guardrail {
        name: name.into(),
        kind: kind.into(),
        mode: mode.into(),
        config_json: config.to_string(),
        ..Default::default()
    }
}

impl Setup {
    async fn chat(&self, prompt: &str, stream: bool) -> Result<reqwest::Response> {
        let mut body = chat_request("gpt-test", prompt);
        body["stream"] = json!(stream);
        self.edge.chat(&self.secret, &body).await
    }

    /// The whole text of a streamed answer to `prompt`.
    async fn streamed(&self, prompt: &str) -> Result<String> {
        Ok(self.chat(prompt, true).await?.text().await?)
    }

    /// The text of the last message the upstream received.
    fn upstream_saw(&self) -> Result<String> {
        let (_, body) = self.openai.last_request().context("no upstream request")?;
        Ok(body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The next `n` usage events.
    async fn usage(&self, n: usize) -> Result<Vec<UsageEvent>> {
        usage_events(&self.cluster.bus, n).await
    }
}

/// The message of an OpenAI-shaped error answer, after checking its code.
async fn refusal(response: reqwest::Response, status: u16, code: &str) -> Result<String> {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], code, "{body}");
    Ok(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bedrock_guardrail_blocks_an_openai_routed_request_before_the_call() -> Result<()> {
    let s = setup(|at| vec![at.bedrock("topics", "pre_call", "gr-block")]).await?;

    let response = s.chat("tell me the forbidden recipe", false).await?;
    assert_eq!(response.headers()["x-tollgate-cost-usd"], "0.000000");
    let message = refusal(response, 400, "guardrail_intervened").await?;
    assert!(message.contains("denied topic Forbidden"), "{message}");
    assert!(
        !message.contains("recipe"),
        "the blocked text is echoed: {message}"
    );
    assert_eq!(
        s.openai.requests(),
        0,
        "a blocked prompt reached the upstream"
    );
    assert_eq!(s.bedrock.guardrail_calls(), 1);
    assert_eq!(
        s.bedrock.guardrail_texts(),
        ["tell me the forbidden recipe"]
    );

    let response = s.chat("tell me a recipe", false).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(s.openai.requests(), 1);

    let events = s.usage(2).await?;
    let blocked = &events[0];
    assert_eq!(blocked.error_code, "guardrail_intervened");
    assert_eq!(blocked.cost_usd, 0.0);
    assert_eq!(blocked.guardrails_intervened.len(), 1);
    assert!(blocked.guardrail_micros > 0);
    assert!(events[1].guardrails_intervened.is_empty());
    let metrics = s
        .http
        .get(s.edge.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("outcome=\"blocked\"") && metrics.contains("outcome=\"passed\""),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_anonymized_text_is_what_the_upstream_receives() -> Result<()> {
    let s = setup(|at| vec![at.bedrock("pii", "pre_call", "gr-anonymize")]).await?;
    let response = s.chat("write to bob@example.com today", false).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(s.upstream_saw()?, "write to {EMAIL} today");
    // The echo shows the client what the model was given.
    let body: Value = response.json().await?;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "write to {EMAIL} today"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_cut_at_the_offending_window() -> Result<()> {
    let s = setup(|at| vec![at.bedrock("topics", "during_call", "gr-block")]).await?;
    // Over a window (500 characters) of harmless words, then the offending one.
    let harmless = "lorem ipsum dolor sit amet ".repeat(25);
    let prompt = format!("{harmless}and now the forbidden part and more words after it");
    let response = s.chat(&prompt, true).await?;
    assert_eq!(response.status(), 200);
    let body = response.text().await?;
    let content = streamed_content(&body);
    assert!(
        content.starts_with("lorem ipsum") && content.len() >= 500,
        "the first window was not released: {content:?}"
    );
    assert!(
        !body.contains("forbidden"),
        "offending text released: {body}"
    );
    let last = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .last()
        .context("no events")?;
    assert!(
        last.contains("\"code\":\"guardrail_intervened\""),
        "the stream did not end with the guardrail's error: {last}"
    );
    assert!(!body.contains("[DONE]"));
    // Each window was checked as output.
    assert!(s.bedrock.guardrail_calls() >= 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_is_masked_before_the_upstream_sees_the_prompt() -> Result<()> {
    let s = setup(|_| {
        vec![local(
            "pii",
            "pii",
            "pre_call",
            json!({"action": "mask", "custom": [{"name": "EMPLOYEE_ID", "pattern": "E\\d{6}"}]}),
        )]
    })
    .await?;
    let prompt = "I am E123456, mail jane@example.com or call +44 20 7946 0958, \
                  card 4111 1111 1111 1111, from 10.1.2.3 with AKIAIOSFODNN7EXAMPLE";
    let response = s.chat(prompt, false).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        s.upstream_saw()?,
        "I am [EMPLOYEE_ID], mail [EMAIL] or call [PHONE], card [CREDIT_CARD], from \
         [IP_ADDRESS] with [AWS_ACCESS_KEY]"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regex_block_answers_guardrail_intervened_for_the_teams_it_covers() -> Result<()> {
    let mut s = setup(|at| {
        vec![Guardrail {
            team_ids: vec![at.team.to_owned()],
            ..local(
                "codenames",
                "regex",
                "pre_call",
                json!({"patterns": ["(?i)project\\s+falcon"], "action": "block"}),
            )
        }]
    })
    .await?;
    let message = refusal(
        s.chat("status of Project Falcon?", false).await?,
        400,
        "guardrail_intervened",
    )
    .await?;
    assert!(message.contains("codenames"), "{message}");
    assert!(!message.contains("Falcon"), "{message}");
    assert_eq!(s.openai.requests(), 0);

    // A key of no team is not covered.
    let (_, other) = create_key(&mut s.cluster.admin, &[]).await?;
    s.cluster.sync(&s.edge).await?;
    let response = s
        .edge
        .chat(
            &other,
            &chat_request("gpt-test", "status of Project Falcon?"),
        )
        .await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_guardrails_mask_answers_and_block_streams_before_release() -> Result<()> {
    let s = setup(|_| {
        vec![
            local(
                "emails out",
                "pii",
                "post_call",
                json!({"entities": ["email"], "action": "mask"}),
            ),
            local(
                "no secrets out",
                "regex",
                "post_call",
                json!({"patterns": ["TOP SECRET"], "action": "block"}),
            ),
        ]
    })
    .await?;
    // A complete answer is masked.
    let response = s.chat("reach me at ann@example.com", false).await?;
    let body: Value = response.json().await?;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "reach me at [EMAIL]"
    );
    // The upstream got the prompt as written: these are output guardrails.
    assert_eq!(s.upstream_saw()?, "reach me at ann@example.com");

    // A stream is held whole, then released masked.
    let body = s.streamed("reach me at ann@example.com").await?;
    assert!(!body.contains("ann@example.com"), "{body}");
    assert!(
        body.contains("[EMAIL]") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );

    // A stream that must be blocked releases none of its text.
    let body = s.streamed("the plan is TOP SECRET and more").await?;
    assert!(!body.contains("plan"), "{body}");
    assert!(body.contains("\"code\":\"guardrail_intervened\""), "{body}");

    // A blocked complete answer is still charged: the upstream did the work.
    let response = s.chat("it is TOP SECRET", false).await?;
    refusal(response, 400, "guardrail_intervened").await?;
    let events = s.usage(4).await?;
    let blocked: Vec<&UsageEvent> = events
        .iter()
        .filter(|e| e.error_code == "guardrail_intervened")
        .collect();
    assert_eq!(blocked.len(), 2, "{events:?}");
    // The stream's usage chunk was released ahead of its error; the answer's was read.
    for event in blocked {
        assert!(event.output_tokens > 0, "{event:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardrail_that_cannot_run_refuses_instead_of_letting_requests_through() -> Result<()> {
    let mut s = setup(|_| vec![]).await?;
    let admin = &mut s.cluster.admin;
    // A Bedrock guardrail whose endpoint answers nothing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    admin
        .set_guardrail(bedrock(
            "unreachable",
            "pre_call",
            &format!("http://{closed}"),
            &s.bedrock_credential,
            "gr-block",
        ))
        .await?;
    s.cluster.sync(&s.edge).await?;
    let message = refusal(s.chat("hello", false).await?, 502, "upstream_error").await?;
    assert!(
        message.contains("guardrail unreachable could not be applied"),
        "{message}"
    );
    assert_eq!(s.openai.requests(), 0);
    Ok(())
}
