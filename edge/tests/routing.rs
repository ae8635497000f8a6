//! Routing and resilience through a real edge: weights, strategies, retries with back-off and
//! retry-after, deadlines, circuit breakers with probes, fallbacks and traffic rules. Upstreams
//! are the built-in `mock` provider or fake OpenAI servers that fail and hang on command.

use tollgate_test_support::edge as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_proto::admin::{
    CreateKeyRequest, Deployment, ListDeploymentHealthRequest, RoutingRule, TrafficAction,
    TrafficMatch, TrafficRule,
};
use tollgate_test_support::openai_upstream::{Failure, FakeOpenAi};

struct Setup {
    cluster: TestCluster,
    http: reqwest::Client,
}

async fn setup() -> Result<Setup> {
    Ok(Setup {
        cluster: TestCluster::start().await?,
        http: reqwest::Client::new(),
    })
}

/// Held by the tests whose assertions involve time (deadlines, latency) and by the one that
/// loads the CPU (10,000 requests), so that they never run at the same moment.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The circuit breaker cooldown of the failover test.
const COOLDOWN: Duration = Duration::from_secs(2);
/// How late after its deadline a request may be answered. The edge answers within a few
/// milliseconds of it; the rest is room for a loaded two-core machine (the test waits for 5 s
/// upstream delays and ten retries, so a broken deadline shows as seconds, not milliseconds).
const DEADLINE_SLACK: Duration = Duration::from_millis(250);

/// A deployment named `id` of `model`.
fn deployment(id: &str, model: &str) -> Deployment {
    Deployment {
        id: id.to_owned(),
        model_name: model.to_owned(),
        provider: "mock".to_owned(),
        weight: 1,
        ..Default::default()
    }
}

/// A deployment of `model` on a fake OpenAI server.
fn on_fake(id: &str, model: &str, fake: &FakeOpenAi) -> Deployment {
    Deployment {
        provider: "openai_compatible".to_owned(),
        api_base: fake.base_url(),
        upstream_model: "gpt-fake".to_owned(),
        ..deployment(id, model)
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// What the edge answered, with the routing headers.
struct Answer {
    status: u16,
    deployment: String,
    attempts: String,
    fallback: String,
    code: String,
}

impl Answer {
    /// The status, the fallback model that answered and the number of attempts.
    fn outcome(&self) -> (u16, &str, &str) {
        (self.status, self.fallback.as_str(), self.attempts.as_str())
    }

    /// The status and the deployment that answered.
    fn served_by(&self) -> (u16, &str) {
        (self.status, self.deployment.as_str())
    }

    /// The status and the error code.
    fn error(&self) -> (u16, &str) {
        (self.status, self.code.as_str())
    }

    /// The status and the number of attempts.
    fn attempts(&self) -> (u16, &str) {
        (self.status, self.attempts.as_str())
    }
}

impl Setup {
    /// Models `primary` and `backup`, each on a fake of its own, and `rule` for `primary`
    /// with `backup` as its fallback; returns the two fakes.
    async fn primary_and_backup(&mut self, rule: RoutingRule) -> Result<(FakeOpenAi, FakeOpenAi)> {
        let (primary, backup) = (FakeOpenAi::start().await?, FakeOpenAi::start().await?);
        self.add([
            on_fake("primary-1", "primary", &primary),
            on_fake("backup-1", "backup", &backup),
        ])
        .await?;
        let rule = RoutingRule {
            fallbacks: vec!["backup".into()],
            ..rule
        };
        self.rule("primary", rule).await?;
        Ok((primary, backup))
    }

    async fn add(&mut self, deployments: impl IntoIterator<Item = Deployment>) -> Result<()> {
        for d in deployments {
            self.cluster.admin.upsert_deployment(d).await?;
        }
        Ok(())
    }

    /// Sets `rule` for `model`.
    async fn rule(&mut self, model: &str, rule: RoutingRule) -> Result<()> {
        let rule = RoutingRule {
            model_name: model.to_owned(),
            ..rule
        };
        self.cluster.admin.set_routing_rule(rule).await?;
        Ok(())
    }

    /// A key allowed `models` (empty: all), and an edge that has applied everything so far.
    async fn key_and_edge(&mut self, models: &[&str]) -> Result<(String, TestEdge)> {
        let (_, key) = create_key(&mut self.cluster.admin, models).await?;
        Ok((key, self.cluster.edge().await?))
    }

    /// A chat request for `model` to `edge` with `key` and `headers`.
    async fn send(
        &self,
        edge: &TestEdge,
        key: &str,
        model: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let mut request = self
            .http
            .post(edge.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat(model));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let header = |name: &str| header(&response, name).unwrap_or_default().to_owned();
        let (deployment, attempts, fallback) = (
            header("x-tollgate-deployment"),
            header("x-tollgate-attempts"),
            header("x-tollgate-fallback"),
        );
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            deployment,
            attempts,
            fallback,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// A rule of `max_retries` retries, opening a deployment's circuit after `allowed_fails`.
fn retrying(max_retries: u32, allowed_fails: u32) -> RoutingRule {
    RoutingRule {
        max_retries,
        allowed_fails,
        ..Default::default()
    }
}

/// How many answers each deployment gave.
fn tally(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.deployment.clone()).or_default() += 1;
    }
    counts
}

/// The value of a `deployment_circuit_state` sample for `deployment` on `edge`.
fn circuit_state(edge: &TestEdge, deployment: &str) -> Option<i64> {
    let text = edge.metrics.render();
    let prefix = format!("tollgate_deployment_circuit_state{{deployment=\"{deployment}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_followed_within_three_points_over_10000_requests() -> Result<()> {
    let _timing = TIMING.lock().await;
    let mut s = setup().await?;
    s.add([
        Deployment {
            weight: 1,
            ..deployment("w-1", "weighted")
        },
        Deployment {
            weight: 2,
            ..deployment("w-2", "weighted")
        },
        Deployment {
            weight: 5,
            ..deployment("w-5", "weighted")
        },
    ])
    .await?;
    let (key, edge) = s.key_and_edge(&[]).await?;

    const REQUESTS: usize = 10_000;
    let s = &s;
    let answers: Vec<Answer> = futures::stream::iter(0..REQUESTS)
        .map(|_| s.send(&edge, &key, "weighted", &[]))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    assert!(answers.iter().all(|a| a.status == 200 && a.attempts == "1"));
    let counts = tally(&answers);
    for (id, weight) in [("w-1", 1.0), ("w-2", 2.0), ("w-5", 5.0)] {
        let share = counts.get(id).copied().unwrap_or(0) as f64 / REQUESTS as f64 * 100.0;
        let expected = weight / 8.0 * 100.0;
        assert!(
            (share - expected).abs() <= 3.0,
            "{id}: {share:.2} % of requests, expected {expected:.2} % ± 3"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deployment_is_cooled_down_and_probed_back_while_clients_see_no_errors()
-> Result<()> {
    let mut s = setup().await?;
    let (primary, _backup) = s
        .primary_and_backup(RoutingRule {
            cooldown_seconds: COOLDOWN.as_secs() as u32,
            ..retrying(0, 2)
        })
        .await?;
    let (key, edge) = s.key_and_edge(&["primary", "backup"]).await?;

    let answer = s.send(&edge, &key, "primary", &[]).await?;
    assert_eq!(answer.served_by(), (200, "primary-1"));
    assert_eq!(
        circuit_state(&edge, "primary-1"),
        None,
        "no circuit event yet"
    );

    primary.fail(Failure::status(500, None));
    let broken_at = primary.requests();
    let mut answers = Vec::new();
    let started = Instant::now();
    for _ in 0..20 {
        answers.push(s.send(&edge, &key, "primary", &[]).await?);
    }
    // The property is logical (an open circuit lets nothing through until its cooldown ends);
    // this only checks that the twenty requests fitted in the cooldown, as they do by far
    // (about 100 ms of 2 s).
    assert!(
        started.elapsed() < COOLDOWN,
        "twenty requests took {:?}, longer than the cooldown",
        started.elapsed()
    );
    for a in &answers {
        assert_eq!(a.status, 200, "the client saw an error: {}", a.code);
        assert_eq!(
            (a.deployment.as_str(), a.fallback.as_str()),
            ("backup-1", "backup")
        );
    }
    // Two failures opened the circuit; the cooldown has not passed: no further calls.
    assert_eq!(primary.requests() - broken_at, 2);
    assert_eq!(answers[0].attempts, "2");
    assert_eq!(answers.last().map(|a| a.attempts.as_str()), Some("1"));
    assert_eq!(circuit_state(&edge, "primary-1"), Some(2), "open");

    // The admin API shows the open circuit, as the edge reported it through the bus.
    let admin = s.cluster.admin.clone();
    eventually(Duration::from_secs(15), || {
        let mut admin = admin.clone();
        async move {
            let request = ListDeploymentHealthRequest {
                deployment_id: "primary-1".into(),
            };
            admin.list_deployment_health(request).await.is_ok_and(|r| {
                r.into_inner()
                    .deployments
                    .iter()
                    .any(|d| d.state == "open" && d.failures == 2 && d.retry_at.is_some())
            })
        }
    })
    .await
    .context("the open circuit never reached the admin API")?;

    // Still broken when the cooldown ends: the probe fails, the client still gets an answer,
    // and the circuit opens again.
    tokio::time::sleep(COOLDOWN + Duration::from_millis(100)).await;
    let answer = s.send(&edge, &key, "primary", &[]).await?;
    assert_eq!(answer.attempts(), (200, "2"));
    assert_eq!(primary.requests() - broken_at, 3, "one probe");
    assert_eq!(circuit_state(&edge, "primary-1"), Some(2));

    // Healed: the next probe succeeds and the deployment is back in rotation.
    primary.heal();
    tokio::time::sleep(COOLDOWN + Duration::from_millis(100)).await;
    let answer = s.send(&edge, &key, "primary", &[]).await?;
    assert_eq!(answer.served_by(), (200, "primary-1"));
    assert_eq!(answer.fallback, "");
    assert_eq!(circuit_state(&edge, "primary-1"), Some(0), "closed");
    for _ in 0..5 {
        let answer = s.send(&edge, &key, "primary", &[]).await?;
        assert_eq!(answer.deployment, "primary-1");
    }
    eventually(Duration::from_secs(15), || {
        let mut admin = admin.clone();
        async move {
            admin
                .list_deployment_health(ListDeploymentHealthRequest::default())
                .await
                .is_ok_and(|r| {
                    r.into_inner()
                        .deployments
                        .iter()
                        .any(|d| d.deployment_id == "primary-1" && d.state == "closed")
                })
        }
    })
    .await
    .context("the closed circuit never reached the admin API")?;
    let metrics = edge.metrics.render();
    assert!(
        metrics.contains("tollgate_deployment_circuit_opened_total{deployment=\"primary-1\"} 2")
    );
    assert!(metrics.contains("tollgate_fallbacks_total{reason=\"failure\"}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_fails_over_before_its_first_byte() -> Result<()> {
    let mut s = setup().await?;
    let (primary, _backup) = s
        .primary_and_backup(RoutingRule {
            max_retries: 1,
            ..Default::default()
        })
        .await?;
    let (key, edge) = s.key_and_edge(&[]).await?;
    primary.fail(Failure::status(529, None));
    let response = s
        .http
        .post(edge.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "primary", "stream": true,
            "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().map(str::to_owned);
    assert_eq!(header("x-tollgate-fallback")?, "backup");
    assert_eq!(header("x-tollgate-attempts")?, "3");
    let text = response.text().await?;
    assert!(
        text.contains("Hello") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(primary.requests(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_fail_over_to_another_deployment_at_once() -> Result<()> {
    let mut s = setup().await?;
    let (broken, healthy) = (FakeOpenAi::start().await?, FakeOpenAi::start().await?);
    // The broken one is always chosen first (priority), so every request needs a retry.
    s.add([
        on_fake("broken", "pair", &broken),
        Deployment {
            priority: 1,
            ..on_fake("healthy", "pair", &healthy)
        },
    ])
    .await?;
    s.rule("pair", retrying(1, 100)).await?;
    let (key, edge) = s.key_and_edge(&[]).await?;
    broken.fail(Failure::status(503, Some("30")));
    let started = Instant::now();
    let answer = s.send(&edge, &key, "pair", &[]).await?;
    assert_eq!(
        (
            answer.status,
            answer.deployment.as_str(),
            answer.attempts.as_str()
        ),
        (200, "healthy", "2")
    );
    // Waiting would take the 30 s retry-after; failing over takes milliseconds. 10 s tells
    // the two apart even on a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failing over to another deployment does not wait: {:?}",
        started.elapsed()
    );
    assert!(
        edge.metrics
            .render()
            .contains("tollgate_upstream_retries_total{reason=\"upstream_error\"} 1")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_before_trying_the_same_deployment_again() -> Result<()> {
    let mut s = setup().await?;
    let fake = FakeOpenAi::start().await?;
    s.add([on_fake("only", "solo", &fake)]).await?;
    s.rule("solo", retrying(2, 100)).await?;
    let (key, edge) = s.key_and_edge(&[]).await?;

    fake.fail_times(1, Failure::status(429, Some("1")));
    let answer = s.send(&edge, &key, "solo", &[]).await?;
    assert_eq!(answer.attempts(), (200, "2"));
    let arrivals = fake.arrivals();
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_secs(1),
        "retried {gap:?} after a retry-after of 1 s"
    );

    // A retry-after beyond the deadline is not waited for: the client hears at once.
    fake.fail(Failure::status(429, Some("5")));
    let started = Instant::now();
    let answer = s
        .send(&edge, &key, "solo", &[("x-tollgate-timeout", "2")])
        .await?;
    assert_eq!(answer.error(), (429, "rate_limit_exceeded"));
    // Not waiting for the deadline (2 s), let alone the retry-after (5 s).
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_deadline_is_kept_whatever_the_upstream_does() -> Result<()> {
    let _timing = TIMING.lock().await;
    let mut s = setup().await?;
    let (slow, flaky) = (FakeOpenAi::start().await?, FakeOpenAi::start().await?);
    s.add([
        on_fake("slow", "slow", &slow),
        on_fake("flaky", "flaky", &flaky),
    ])
    .await?;
    for model in ["slow", "flaky"] {
        s.rule(model, retrying(10, 1000)).await?;
    }
    let (key, edge) = s.key_and_edge(&[]).await?;
    slow.fail(Failure::Delay(Duration::from_secs(5)));
    flaky.fail(Failure::status(502, None));

    for (model, timeout) in [
        ("slow", 0.2),
        ("slow", 0.45),
        ("flaky", 0.3),
        ("flaky", 0.75),
        ("slow", 1.0),
    ] {
        let started = Instant::now();
        let header = timeout.to_string();
        let answer = s
            .send(&edge, &key, model, &[("x-tollgate-timeout", &header)])
            .await?;
        let elapsed = started.elapsed();
        let deadline = Duration::from_secs_f64(timeout);
        println!(
            "{model}: deadline {deadline:?}, answered after {elapsed:?} (slack {DEADLINE_SLACK:?})"
        );
        assert!(answer.status >= 500, "{model}: {}", answer.status);
        assert!(
            elapsed <= deadline + DEADLINE_SLACK,
            "{model} with a {deadline:?} deadline answered after {elapsed:?}"
        );
        if model == "slow" {
            assert_eq!(answer.error(), (504, "upstream_timeout"));
        }
    }
    // The deadline cut those calls short, so they say nothing against the slow deployment.
    assert_eq!(circuit_state(&edge, "slow"), None);

    let answer = s
        .send(&edge, &key, "slow", &[("x-tollgate-timeout", "soon")])
        .await?;
    assert_eq!(answer.error(), (400, "invalid_request_error"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_window_and_content_policy_failures_move_to_their_own_fallbacks() -> Result<()> {
    let mut s = setup().await?;
    let fake = FakeOpenAi::start().await?;
    let refusing = |id: &str, upstream: &str| Deployment {
        upstream_model: upstream.to_owned(),
        ..on_fake(id, "small", &fake)
    };
    s.add([
        refusing("small-1", "fail-context"),
        on_fake("large-1", "large", &fake),
        on_fake("lenient-1", "lenient", &fake),
        on_fake("general-1", "general", &fake),
    ])
    .await?;
    s.rule(
        "small",
        RoutingRule {
            fallbacks: vec!["general".into()],
            context_window_fallbacks: vec!["large".into()],
            content_policy_fallbacks: vec!["lenient".into()],
            max_retries: 3,
            ..Default::default()
        },
    )
    .await?;
    let (_, key) = create_key(&mut s.cluster.admin, &["small", "large", "lenient"]).await?;
    let (_, small_only) = create_key(&mut s.cluster.admin, &["small"]).await?;
    let edge = s.cluster.edge().await?;

    let answer = s.send(&edge, &key, "small", &[]).await?;
    assert_eq!(
        answer.outcome(),
        (200, "large", "2"),
        "a context-window refusal is not retried on the same model"
    );
    // A fallback is a model like any other: a key that may not use it does not get it.
    let answer = s.send(&edge, &small_only, "small", &[]).await?;
    assert_eq!(
        answer.outcome(),
        (400, "", "1"),
        "the key may use only small: the refusal is its answer"
    );

    s.add([refusing("small-1", "fail-content")]).await?;
    s.cluster.sync(&edge).await?;
    let answer = s.send(&edge, &key, "small", &[]).await?;
    assert_eq!((answer.status, answer.fallback.as_str()), (200, "lenient"));

    // Any other refusal is the client's to fix: no retry, no fallback.
    s.add([refusing("small-1", "fail-400")]).await?;
    s.cluster.sync(&edge).await?;
    let answer = s.send(&edge, &key, "small", &[]).await?;
    assert_eq!(answer.attempts(), (400, "1"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_choose_by_latency_cost_usage_and_load() -> Result<()> {
    let _timing = TIMING.lock().await;
    let mut s = setup().await?;
    let mock = |id: &str, model: &str, upstream: &str, latency: &str| Deployment {
        upstream_model: upstream.to_owned(),
        settings: [("latency_ms".to_owned(), latency.to_owned())].into(),
        ..deployment(id, model)
    };
    s.add([
        mock("fast", "by-latency", "m", "1"),
        mock("slow", "by-latency", "m", "40"),
        mock("cheap", "by-cost", "cheap-model", "0"),
        mock("dear", "by-cost", "dear-model", "0"),
        Deployment {
            rpm: 10,
            ..mock("small-quota", "by-usage", "m", "0")
        },
        Deployment {
            rpm: 1000,
            ..mock("big-quota", "by-usage", "m", "0")
        },
        mock("busy-a", "by-load", "m", "300"),
        mock("busy-b", "by-load", "m", "300"),
    ])
    .await?;
    for (model, price) in [("cheap-model", 1.0), ("dear-model", 10.0)] {
        set_price(&mut s.cluster.admin, model, [price, price, 0.0, 0.0]).await?;
    }
    for (model, strategy) in [
        ("by-latency", "latency_based"),
        ("by-cost", "cost_based"),
        ("by-usage", "usage_based"),
        ("by-load", "least_busy"),
    ] {
        s.rule(
            model,
            RoutingRule {
                strategy: strategy.into(),
                ..Default::default()
            },
        )
        .await?;
    }
    let (key, edge) = s.key_and_edge(&[]).await?;
    let sequential = |model: &'static str, n: usize| {
        let (s, edge, key) = (&s, &edge, &key);
        async move {
            let mut answers = Vec::new();
            for _ in 0..n {
                answers.push(s.send(edge, key, model, &[]).await?);
            }
            anyhow::Ok(tally(&answers))
        }
    };

    let latency = sequential("by-latency", 30).await?;
    assert!(latency["fast"] >= 27, "{latency:?}");
    let cost = sequential("by-cost", 20).await?;
    assert_eq!(cost.get("cheap"), Some(&20), "{cost:?}");
    let usage = sequential("by-usage", 40).await?;
    assert!(
        usage.get("small-quota").copied().unwrap_or(0) <= 2,
        "{usage:?}"
    );

    let concurrent: Vec<Answer> =
        futures::future::join_all((0..8).map(|_| s.send(&edge, &key, "by-load", &[])))
            .await
            .into_iter()
            .collect::<Result<_>>()?;
    let load = tally(&concurrent);
    assert!(
        load.get("busy-a").copied().unwrap_or(0) >= 3
            && load.get("busy-b").copied().unwrap_or(0) >= 3,
        "{load:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_sending_team_a_to_region_x_holds_for_all_of_a_and_none_of_b() -> Result<()> {
    let mut s = setup().await?;
    // Without rules everyone goes to region y (priority 0).
    s.add([
        Deployment {
            region: "region-x".into(),
            priority: 1,
            ..deployment("in-x", "model")
        },
        Deployment {
            region: "region-y".into(),
            ..deployment("in-y", "model")
        },
    ])
    .await?;
    let team = |name: &'static str| {
        let mut admin = s.cluster.admin.clone();
        async move {
            let team = create_team(&mut admin, name).await?;
            let mut keys = Vec::new();
            for tags in [vec![], vec!["batch".to_owned()]] {
                let request = CreateKeyRequest {
                    team_id: team.clone(),
                    tags,
                    ..Default::default()
                };
                keys.push(key_from(&mut admin, request).await?.1);
            }
            anyhow::Ok((team, keys.remove(0), keys.remove(0)))
        }
    };
    let (team_a, key_a, batch_key_a) = team("team-a").await?;
    let (_, key_b, batch_key_b) = team("team-b").await?;
    s.cluster
        .admin
        .set_traffic_rule(TrafficRule {
            order: 10,
            description: "team A stays in region x".into(),
            when: Some(TrafficMatch {
                team_ids: vec![team_a],
                ..Default::default()
            }),
            then: Some(TrafficAction {
                regions: vec!["region-x".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    s.cluster
        .admin
        .set_traffic_rule(TrafficRule {
            order: 20,
            when: Some(TrafficMatch {
                tags: vec!["batch".into()],
                request_types: vec!["chat".into()],
                ..Default::default()
            }),
            then: Some(TrafficAction {
                deny: "batch jobs must use the batch API".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    // Preferences a client may select with its own headers, ordered before team A's rule.
    for (order, when, region) in [
        (
            5,
            TrafficMatch {
                tags: vec!["vip".into()],
                ..Default::default()
            },
            "region-x",
        ),
        (
            6,
            TrafficMatch {
                regions: vec!["region-y".into()],
                ..Default::default()
            },
            "region-y",
        ),
    ] {
        s.cluster
            .admin
            .set_traffic_rule(TrafficRule {
                order,
                when: Some(when),
                then: Some(TrafficAction {
                    prefer_region: region.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
    }
    let edge = s.cluster.edge().await?;

    let s = &s;
    let run = |key: &str| {
        let (edge, key) = (&edge, key.to_owned());
        async move {
            let answers = futures::stream::iter(0..200)
                .map(|_| s.send(edge, &key, "model", &[]))
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            anyhow::Ok(tally(&answers))
        }
    };
    assert_eq!(
        run(&key_a).await?,
        BTreeMap::from([("in-x".to_owned(), 200)])
    );
    assert_eq!(
        run(&key_b).await?,
        BTreeMap::from([("in-y".to_owned(), 200)])
    );

    // Rules are evaluated in order: team A's rule comes first, so A's batch jobs still run.
    let answer = s.send(&edge, &batch_key_b, "model", &[]).await?;
    assert_eq!(answer.error(), (403, "routing_denied"));
    let answer = s.send(&edge, &batch_key_a, "model", &[]).await?;
    assert_eq!(answer.served_by(), (200, "in-x"));

    // A client may ask for a preference with its own headers...
    let answer = s
        .send(&edge, &key_b, "model", &[("x-tollgate-tags", "vip")])
        .await?;
    assert_eq!(answer.served_by(), (200, "in-x"));
    // ...but a rule that denies or restricts holds whatever the client says about itself: its own
    // tags and region do not match such rules, and cannot steer it past them.
    let answer = s
        .send(&edge, &key_b, "model", &[("x-tollgate-tags", "batch")])
        .await?;
    assert_eq!(
        answer.served_by(),
        (200, "in-y"),
        "a tag a client sends does not make a deny rule its own"
    );
    for header in [
        ("x-tollgate-region", "region-y"),
        ("x-tollgate-tags", "vip"),
    ] {
        let answer = s.send(&edge, &key_a, "model", &[header]).await?;
        assert_eq!(
            answer.served_by(),
            (200, "in-x"),
            "{header:?} lets team A out of region x"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_rules_that_cannot_work_are_refused_and_change_nothing() -> Result<()> {
    let mut s = setup().await?;
    s.add([deployment("d", "model")]).await?;
    let before = last_sequence(&mut s.cluster.admin).await?;
    let rule = |when: TrafficMatch, then: TrafficAction| TrafficRule {
        when: Some(when),
        then: Some(then),
        ..Default::default()
    };
    // A rule restricting regions where its match, changed by `set`, holds; and one doing for
    // all traffic what its action, changed by `set`, says.
    let when = |set: fn(&mut TrafficMatch)| {
        let mut matching = TrafficMatch::default();
        set(&mut matching);
        let restrict = TrafficAction {
            regions: vec!["eu".into()],
            ..Default::default()
        };
        rule(matching, restrict)
    };
    let then = |set: fn(&mut TrafficAction)| {
        let mut action = TrafficAction::default();
        set(&mut action);
        rule(TrafficMatch::default(), action)
    };
    let cases = [
        (then(|_| {}), "does nothing"),
        (
            then(|a| (a.deny, a.regions) = ("no".into(), vec!["eu".into()])),
            "cannot also",
        ),
        (
            when(|m| m.team_ids = vec!["no-such-team".into()]),
            "team no-such-team does not exist",
        ),
        (
            when(|m| m.request_types = vec!["batch".into()]),
            "unknown RequestType",
        ),
        (
            when(|m| (m.time_start, m.time_end) = ("9:00".into(), "17:00".into())),
            "HH:MM",
        ),
        (
            when(|m| m.time_start = "09:00".into()),
            "both time_start and time_end",
        ),
        (
            then(|a| a.deployment_ids = vec!["missing".into()]),
            "deployment missing does not exist",
        ),
        (
            then(|a| a.strategy = "fastest".into()),
            "unknown RoutingStrategy",
        ),
    ];
    for (rule, expected) in cases {
        let status = s
            .cluster
            .admin
            .set_traffic_rule(rule)
            .await
            .err()
            .context("accepted")?;
        assert!(
            status.message().contains(expected),
            "{:?}: {}",
            status.code(),
            status.message()
        );
    }
    let status = s
        .cluster
        .admin
        .set_routing_rule(RoutingRule {
            model_name: "model".into(),
            context_window_fallbacks: vec!["model".into()],
            ..Default::default()
        })
        .await
        .err()
        .context("accepted")?;
    assert!(status.message().contains("cannot be its own fallback"));
    assert_eq!(last_sequence(&mut s.cluster.admin).await?, before);

    // What a rule names cannot be deleted from under it.
    let pinned = then(|a| a.deployment_ids = vec!["d".into()]);
    let pinned = s.cluster.admin.set_traffic_rule(pinned).await?.into_inner();
    let request = tollgate_proto::admin::DeleteRequest { id: "d".into() };
    let status = s
        .cluster
        .admin
        .delete_deployment(request)
        .await
        .err()
        .context("deleted")?;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains(&format!("traffic rule {}", pinned.id))
    );
    Ok(())
}
