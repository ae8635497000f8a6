//! Observability of `tollgate up`, as an operator sees it.
//!
//! Request traces exported over OTLP, configured by the standard
//! `OTEL_EXPORTER_OTLP_*` variables alone, received by a local collector over gRPC and over
//! HTTP/protobuf: one trace per request continuing the client's `traceparent`, the phases as
//! child spans, one provider span per attempt, the GenAI attributes with the provider's token
//! counts, and never the prompt or a key; the request's JSON log line names the same trace.
//!
//! The live request tail: `tollgate admin tail` prints each request as it is served, filtered.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{ADMIN_TOKEN, Up};
use serde_json::{Value, json};
use tollgate_test_support::openai_upstream::{Failure, FakeOpenAi};
use tollgate_test_support::otlp_receiver::{OtlpReceiver, ReceivedSpan};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// Words of the prompt that must never leave the gateway in telemetry.
const PROMPT: &str = "please keep zanzibar-quartz-77 between us";

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test]
async fn a_retried_request_is_one_trace_over_grpc() -> Result<()> {
    one_request_one_trace("grpc").await
}

#[tokio::test]
async fn a_retried_request_is_one_trace_over_http_protobuf() -> Result<()> {
    one_request_one_trace("http/protobuf").await
}

async fn one_request_one_trace(protocol: &str) -> Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let upstream = FakeOpenAi::start().await?;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let temp = tempfile::tempdir()?;
    let up = Up::ready(
        temp.path(),
        &upstream.base_url(),
        Some((protocol, &endpoint)),
    )
    .await?;
    let key: &str = &up.first_key()?;

    // The first attempt fails with a 503; the retry answers.
    upstream.fail_times(
        1,
        Failure::Status {
            status: 503,
            retry_after: None,
        },
    );
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", up.edge))
        .bearer_auth(key)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({
            "model": "traced-model",
            "messages": [{"role": "user", "content": PROMPT}],
        }))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let request_id = response
        .headers()
        .get("x-request-id")
        .context("no x-request-id")?
        .to_str()?
        .to_owned();
    assert_eq!(
        response
            .headers()
            .get("x-tollgate-attempts")
            .map(|v| v.to_str().unwrap_or("")),
        Some("2")
    );
    let answer: Value = response.json().await?;
    let usage = &answer["usage"];

    let spans = receiver
        .trace(CLIENT_TRACE, Duration::from_secs(15), |spans| {
            spans.iter().any(|s| s.kind == SERVER)
                && spans.iter().filter(|s| s.kind == CLIENT).count() >= 2
        })
        .await;
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let root = spans
        .iter()
        .find(|s| s.kind == SERVER)
        .with_context(|| format!("no server span among {names:?}"))?;

    // One trace, continuing the client's, exported the way it was asked to be.
    assert!(spans.iter().all(|s| s.via == via(protocol)));
    assert_eq!(root.service, "gateway-under-test");
    assert_eq!(root.parent_span_id, CLIENT_SPAN);
    assert_eq!(root.name, "chat traced-model");
    assert_eq!(root.attribute("tollgate.request_id"), Some(&*request_id));
    assert_eq!(root.attribute("gen_ai.operation.name"), Some("chat"));
    assert_eq!(root.attribute("gen_ai.request.model"), Some("traced-model"));
    assert_eq!(root.attribute("http.response.status_code"), Some("200"));
    assert_tokens(root, usage);
    assert!(
        root.attribute("tollgate.key_id")
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        root.attribute("tollgate.cost_usd")
            .and_then(|c| c.parse::<f64>().ok())
            .is_some_and(|c| c > 0.0)
    );

    // The phases, as children of the request.
    for phase in ["auth", "parse", "access", "limits", "budget"] {
        let span = spans
            .iter()
            .find(|s| s.name == phase)
            .with_context(|| format!("no {phase} span among {names:?}"))?;
        assert_eq!(span.parent_span_id, root.span_id, "{phase}");
    }

    // One provider span per attempt: the first failed, the second answered.
    let mut attempts: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| s.attribute("tollgate.attempt").map(str::to_owned));
    let [failed, answered] = attempts.as_slice() else {
        bail!("expected two provider spans, got {attempts:?}");
    };
    for span in [failed, answered] {
        assert_eq!(span.parent_span_id, root.span_id);
        assert_eq!(span.name, "chat traced-model");
        assert_eq!(
            span.attribute("gen_ai.provider.name"),
            Some("openai_compatible")
        );
        assert_eq!(span.attribute("gen_ai.request.model"), Some("traced-model"));
    }
    assert_eq!(failed.attribute("tollgate.attempt"), Some("1"));
    assert_eq!(failed.status, 2, "the failed attempt is an error");
    assert!(
        failed
            .attribute("error.type")
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(answered.attribute("tollgate.attempt"), Some("2"));
    assert_eq!(answered.attribute("error.type"), None);
    assert_tokens(answered, usage);

    // The request's log line names the same request and trace.
    let logs = std::fs::read_to_string(temp.path().join("up.err"))?;
    let line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["request_id"] == request_id.as_str())
        .with_context(|| format!("no log line for {request_id}:\n{logs}"))?;
    assert_eq!(line["target"], "tollgate::access");
    assert_eq!(line["trace_id"], CLIENT_TRACE);
    assert_eq!(line["status"], 200);
    assert_eq!(line["model"], "traced-model");
    assert_eq!(line["input_tokens"], usage["prompt_tokens"]);
    // The CloudWatch metric filters in deploy/ read fields this line has.
    let alarms: Value = serde_json::from_str(&std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cloudwatch/alarms.json"),
    )?)?;
    for filter in alarms["metric_filters"].as_array().context("no filters")? {
        let text = filter.to_string();
        for field in text.split("$.").skip(1) {
            let field: String = field
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                line.get(&field).is_some(),
                "metric filter {} reads {field}, which the request line lacks",
                filter["filterName"]
            );
        }
    }

    // The phases are timed, and a refusal is counted by phase and code.
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", up.edge))
        .bearer_auth("tg-not-a-key-zanzibar")
        .json(&json!({"model": "traced-model", "messages": []}))
        .send()
        .await?;
    assert_eq!(refused.status(), 401);
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", up.edge))
        .await?
        .text()
        .await?;
    for phase in ["auth", "parse", "access", "limits", "budget"] {
        let count = format!("tollgate_phase_duration_seconds_count{{phase=\"{phase}\"}} ");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&count) && !l.ends_with(" 0")),
            "{phase} is not timed:\n{metrics}"
        );
    }
    assert!(
        metrics
            .contains("tollgate_phase_refusals_total{phase=\"auth\",code=\"invalid_api_key\"} 1"),
        "{metrics}"
    );

    // Nothing secret or said by the client left in telemetry.
    for secret in [key, "sk-upstream-secret-credential", "zanzibar"] {
        assert!(!logs.contains(secret), "the logs hold a secret:\n{logs}");
        assert!(!metrics.contains(secret), "the metrics hold a secret");
    }
    for span in &spans {
        for (name, value) in &span.attributes {
            for secret in [key, "sk-upstream-secret-credential", "zanzibar"] {
                assert!(
                    !value.contains(secret),
                    "span {} attribute {name} holds a secret: {value}",
                    span.name
                );
            }
        }
    }
    Ok(())
}

/// `tollgate admin tail --model M` prints, as JSON lines, the requests for model M as they are
/// served, and not the others.
#[tokio::test]
async fn admin_tail_prints_each_request_for_the_model_as_it_is_served() -> Result<()> {
    let (_upstream, _temp, up) = up_on_fake_openai().await?;
    let key = up.first_key()?;

    let mut tail = up
        .admin_command(ADMIN_TOKEN)
        .args(["--output", "json", "tail", "--model", "traced-model"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = tail.stdout.take().context("no stdout")?;
    let (lines, shown) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });

    // The tail starts at "now", and "now" is when it has connected: send until one shows.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", up.edge);
    let mut sent = Vec::new();
    let mut first = None;
    for _ in 0..50 {
        for model in ["traced-model", "no-such-model"] {
            let response = http
                .post(&url)
                .bearer_auth(&key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await?;
            if model == "traced-model" {
                assert_eq!(response.status(), 200);
                sent.push(response.headers()["x-request-id"].to_str()?.to_owned());
            }
        }
        if let Ok(line) = shown.recv_timeout(Duration::from_millis(200)) {
            first = Some(line);
            break;
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let line = first.context("the tail printed nothing")?;
    let event: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
    assert_eq!(event["model"], "traced-model", "{line}");
    assert_eq!(event["status"], 200, "{line}");
    let id = event["request_id"].as_str().unwrap_or_default();
    assert!(sent.iter().any(|s| s == id), "{id} was not sent: {line}");
    assert!(!line.contains(&key), "the tail shows the key: {line}");
    Ok(())
}

/// The control plane serves `/metrics` on its admin port: changes by result, and the committed
/// and relayed policy sequences.
#[tokio::test]
async fn the_control_plane_counts_changes_and_how_far_it_relayed_them() -> Result<()> {
    let (_upstream, _temp, up) = up_on_fake_openai().await?;
    let admin = |token: &str, name: &str| {
        up.admin_command(token)
            .args(["teams", "create", "--name", name])
            .output()
    };
    assert!(admin(ADMIN_TOKEN, "observed")?.status.success());
    assert!(!admin(ADMIN_TOKEN, "")?.status.success(), "an empty name");
    assert!(!admin("tga-wrong", "intruders")?.status.success());

    let url = format!("http://127.0.0.1:{}/metrics", up.admin);
    let (mut metrics, mut relayed) = (String::new(), false);
    for _ in 0..100 {
        metrics = reqwest::get(&url).await?.text().await?;
        let value = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<i64>().ok())
        };
        let committed = value("tollgate_policy_committed_sequence ");
        if committed.is_some_and(|c| c > 0)
            && committed == value("tollgate_policy_relayed_sequence ")
        {
            relayed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        relayed,
        "the relayed sequence never reached the committed one:\n{metrics}"
    );
    for line in [
        "tollgate_admin_changes_total{result=\"ok\"} 1",
        "tollgate_admin_changes_total{result=\"invalid_argument\"} 1",
        "tollgate_admin_changes_total{result=\"unauthenticated\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    assert!(!metrics.contains("tga-"), "a token in the metrics");
    Ok(())
}

/// `tollgate up`, ready, its model served by a fake OpenAI; the upstream and the directory
/// must live as long as it.
async fn up_on_fake_openai() -> Result<(FakeOpenAi, tempfile::TempDir, Up)> {
    let upstream = FakeOpenAi::start().await?;
    let temp = tempfile::tempdir()?;
    let up = Up::ready(temp.path(), &upstream.base_url(), None).await?;
    Ok((upstream, temp, up))
}

fn via(protocol: &str) -> &'static str {
    if protocol == "grpc" { "grpc" } else { "http" }
}

/// The span's GenAI token counts are the provider's.
fn assert_tokens(span: &ReceivedSpan, usage: &Value) {
    let input = usage["prompt_tokens"].as_u64().unwrap_or(0);
    let output = usage["completion_tokens"].as_u64().unwrap_or(0);
    assert!(input > 0 && output > 0, "{usage}");
    assert_eq!(
        span.attribute("gen_ai.usage.input_tokens"),
        Some(&*input.to_string()),
        "{}",
        span.name
    );
    assert_eq!(
        span.attribute("gen_ai.usage.output_tokens"),
        Some(&*output.to_string()),
        "{}",
        span.name
    );
}
