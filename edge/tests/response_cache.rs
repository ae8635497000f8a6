//! The response cache end to end: hits cost nothing upstream and in the ledger, answers are
//! shared within the policy's scope only, request controls are honoured, a streamed hit is a
//! well-formed stream (read by the OpenAI Python SDK), and an answer cached by one edge is a
//! hit on another through the bus.

use tollgate_test_support::edge as common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use tollgate_proto::admin::{CachePolicy, PutCredentialRequest, RateLimit};
use tollgate_proto::usage::UsageEvent;
use tollgate_test_support::openai_upstream::{ANSWER, FakeOpenAi};

struct Setup {
    cluster: TestCluster,
    fake: FakeOpenAi,
    http: reqwest::Client,
}

/// A control plane with models `gpt-test` (cached for `ttl_seconds`, per team) and `plain`
/// (no cache policy), both on one fake upstream.
async fn setup(ttl_seconds: u32) -> Result<Setup> {
    let fake = FakeOpenAi::start().await?;
    let mut cluster = TestCluster::start().await?;
    let admin = &mut cluster.admin;
    let credential = api_key_credential(admin, "openai_compatible").await?;
    for model in ["gpt-test", "plain"] {
        let model = (model, "gpt-upstream-x");
        openai_compatible_deployment(admin, model, fake.base_url(), &credential).await?;
    }
    admin
        .set_cache_policy(CachePolicy {
            model: "gpt-test".into(),
            ttl_seconds,
            ..Default::default()
        })
        .await?;
    Ok(Setup {
        cluster,
        fake,
        http: reqwest::Client::new(),
    })
}

impl Setup {
    /// A new team's id.
    async fn team(&mut self, name: &str) -> Result<String> {
        create_team(&mut self.cluster.admin, name).await
    }

    /// A key in a new team named `team`, as (key id, secret).
    async fn key_in(&mut self, team: &str) -> Result<(String, String)> {
        let team = self.team(team).await?;
        self.key_of(&team).await
    }

    /// A key in a new team named `team` and an edge that knows it, as (secret, edge).
    async fn edge_for(&mut self, team: &str) -> Result<(String, TestEdge)> {
        let (_, secret) = self.key_in(team).await?;
        Ok((secret, self.cluster.edge().await?))
    }

    /// A key in team `team` (an id), as (key id, secret).
    async fn key_of(&mut self, team: &str) -> Result<(String, String)> {
        create_team_key(&mut self.cluster.admin, team).await
    }

    /// Asks `edge` with `body`; returns (status, x-tollgate-cache, cost header, body).
    async fn ask(
        &self,
        edge: &TestEdge,
        secret: &str,
        body: &str,
        cache_control: Option<&str>,
    ) -> Result<(u16, Option<String>, String, String)> {
        let mut request = self
            .http
            .post(edge.url("/v1/chat/completions"))
            .bearer_auth(secret)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(value) = cache_control {
            request = request.header("cache-control", value);
        }
        let response = request.send().await?;
        let value = |name: &str| header(&response, name).map(str::to_owned);
        let (cache, cost) = (value("x-tollgate-cache"), value("x-tollgate-cost-usd"));
        let status = response.status().as_u16();
        Ok((
            status,
            cache,
            cost.unwrap_or_default(),
            response.text().await?,
        ))
    }

    /// Checks `edge`'s count of cache lookups with `result`.
    async fn assert_lookups(&self, edge: &TestEdge, result: &str, count: u64) -> Result<()> {
        let metrics = self
            .http
            .get(edge.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let line = format!("tollgate_cache_lookups_total{{result=\"{result}\"}} {count}");
        assert!(metrics.contains(&line), "no {line:?} in {metrics}");
        Ok(())
    }

    async fn usage(&self, n: usize) -> Result<Vec<UsageEvent>> {
        usage_events(&self.cluster.bus, n).await
    }
}

const QUESTION: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi there"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_hit_within_a_team_and_miss_across_teams() -> Result<()> {
    let mut s = setup(60).await?;
    let search = s.team("search").await?;
    let (_, a1) = s.key_of(&search).await?;
    let (_, a2) = s.key_of(&search).await?;
    let (_, b) = s.key_in("billing").await?;
    let edge = s.cluster.edge().await?;

    let (status, cache, _, first) = s.ask(&edge, &a1, QUESTION, None).await?;
    assert_eq!((status, cache.as_deref()), (200, Some("miss")));
    assert_eq!(s.fake.requests(), 1);

    // Same question, other key of the team, other key order and spacing: a hit.
    let reordered =
        r#"{ "messages": [{"content": "hi there", "role": "user"}], "model": "gpt-test" }"#;
    let (status, cache, cost, second) = s.ask(&edge, &a2, reordered, None).await?;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")));
    assert_eq!(cost, "0.000000");
    assert_eq!(second, first);
    assert_eq!(s.fake.requests(), 1, "a hit went upstream");

    // Another team misses.
    let (_, cache, _, _) = s.ask(&edge, &b, QUESTION, None).await?;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(s.fake.requests(), 2);

    // no-cache goes upstream; no-store answers from the cache but stores nothing.
    let (_, cache, _, _) = s.ask(&edge, &a1, QUESTION, Some("no-cache")).await?;
    assert_eq!(cache.as_deref(), Some("bypass"));
    assert_eq!(s.fake.requests(), 3);
    let fresh = r#"{"model":"gpt-test","messages":[{"role":"user","content":"new"}]}"#;
    let (_, cache, _, _) = s.ask(&edge, &a1, fresh, Some("no-store")).await?;
    assert_eq!(cache.as_deref(), Some("miss"));
    let (_, cache, _, _) = s.ask(&edge, &a1, fresh, None).await?;
    assert_eq!(cache.as_deref(), Some("miss"), "no-store stored the answer");
    assert_eq!(s.fake.requests(), 5);

    // A streamed request is answered from the entry a plain one stored.
    let streamed =
        r#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi there"}]}"#;
    let (status, cache, _, events) = s.ask(&edge, &a1, streamed, None).await?;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")));
    assert_eq!(streamed_content(&events), ANSWER);
    assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
    assert_eq!(s.fake.requests(), 5);

    // A model without a cache policy says nothing about the cache.
    let plain = r#"{"model":"plain","messages":[{"role":"user","content":"hi there"}]}"#;
    let (status, cache, _, _) = s.ask(&edge, &a1, plain, None).await?;
    assert_eq!((status, cache), (200, None));

    // Hits are in the usage events, free and without tokens.
    let events = s.usage(8).await?;
    let hits: Vec<&UsageEvent> = events.iter().filter(|e| e.cache_hit).collect();
    assert_eq!(hits.len(), 2, "{events:?}");
    for hit in hits {
        assert_eq!(
            (hit.cost_usd, hit.input_tokens, hit.output_tokens),
            (0.0, 0, 0)
        );
        assert_eq!(hit.status, 200);
    }
    s.assert_lookups(&edge, "hit", 2).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_hit_replays_through_the_openai_python_sdk() -> Result<()> {
    let python = tollgate_test_support::python_with("openai").await?;
    let mut s = setup(60).await?;
    let (secret, edge) = s.edge_for("sdk").await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_cache_replay.py");
    let base_url = edge.url("/v1");
    let env = [
        ("TOLLGATE_BASE_URL", base_url.as_str()),
        ("TOLLGATE_KEY", secret.as_str()),
    ];
    tollgate_test_support::run_python(&python, &[script.as_os_str()], &env).await?;
    // The miss and the no-cache request went upstream; the streamed hit did not.
    assert_eq!(s.fake.requests(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cached_by_one_edge_is_a_hit_on_another() -> Result<()> {
    let mut s = setup(60).await?;
    let (_, secret) = s.key_in("shared").await?;
    let edges = s.cluster.edges(2).await?;
    let (a, b) = (&edges[0], &edges[1]);
    let (_, cache, _, first) = s.ask(a, &secret, QUESTION, None).await?;
    assert_eq!(cache.as_deref(), Some("miss"));
    // The entry reaches edge B over the bus.
    let http = s.http.clone();
    let metrics_url = b.url("/metrics");
    eventually(Duration::from_secs(5), || async {
        let metrics = match http.get(&metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        metrics.contains("tollgate_cache_entries 1")
    })
    .await
    .context("edge B never received the shared entry")?;
    let (_, cache, _, second) = s.ask(b, &secret, QUESTION, None).await?;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(second, first);
    assert_eq!(s.fake.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_never_count_toward_tpm() -> Result<()> {
    let mut s = setup(60).await?;
    let (key_id, secret) = s.key_in("limited").await?;
    let limit = RateLimit {
        tpm: 100,
        ..key_limit(&key_id)
    };
    s.cluster.admin.set_rate_limit(limit).await?;
    let edge = s.cluster.edge().await?;
    // Each request is admitted at ~18 estimated tokens; the miss costs 13 real ones. Counted
    // as estimated, ten hits would pass the 100-token limit.
    for i in 0..11 {
        let (status, cache, _, body) = s.ask(&edge, &secret, QUESTION, None).await?;
        assert_eq!(status, 200, "request {i}: {body}");
        let expected = if i == 0 { "miss" } else { "hit" };
        assert_eq!(cache.as_deref(), Some(expected));
    }
    assert_eq!(s.fake.requests(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_too_old_answer_is_not_served() -> Result<()> {
    let mut s = setup(1).await?;
    let (secret, edge) = s.edge_for("ttl").await?;
    s.ask(&edge, &secret, QUESTION, None).await?;
    let (_, cache, _, _) = s.ask(&edge, &secret, QUESTION, None).await?;
    assert_eq!(cache.as_deref(), Some("hit"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, cache, _, _) = s.ask(&edge, &secret, QUESTION, Some("max-age=60")).await?;
    assert_eq!(
        cache.as_deref(),
        Some("miss"),
        "an expired answer was served"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, cache, _, _) = s.ask(&edge, &secret, QUESTION, Some("max-age=0")).await?;
    assert_eq!(
        cache.as_deref(),
        Some("miss"),
        "an answer older than max-age was served"
    );
    assert_eq!(s.fake.requests(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_semantic_tier_answers_a_differently_worded_request() -> Result<()> {
    let mut s = setup(60).await?;
    let admin = &mut s.cluster.admin;
    let credential = admin
        .put_credential(PutCredentialRequest {
            name: "fake-embeddings".into(),
            provider: "openai_compatible".into(),
            secret_fields: [("api_key".to_owned(), "sk-up".to_owned())].into(),
        })
        .await?
        .into_inner();
    let model = ("embed-test", "bag-of-words");
    openai_compatible_deployment(admin, model, s.fake.base_url(), &credential.id).await?;
    let policy = admin
        .list_cache_policies(tollgate_proto::admin::ListCachePoliciesRequest {})
        .await?
        .into_inner();
    let mut policy = policy
        .policies
        .into_iter()
        .next()
        .context("the cache policy")?;
    policy.semantic_embeddings_model = "embed-test".into();
    policy.semantic_threshold = 0.99;
    s.cluster.admin.set_cache_policy(policy).await?;
    let (secret, edge) = s.edge_for("semantic").await?;

    let (_, cache, _, first) = s.ask(&edge, &secret, QUESTION, None).await?;
    assert_eq!(cache.as_deref(), Some("miss"));
    // The same words, reordered and in a text part: no exact match, the same meaning.
    let reworded = r#"{"model":"gpt-test","messages":[{"role":"user",
        "content":[{"type":"text","text":"There, hi!"}]}]}"#;
    let (_, cache, cost, second) = s.ask(&edge, &secret, reworded, None).await?;
    assert_eq!((cache.as_deref(), cost.as_str()), (Some("hit"), "0.000000"));
    assert_eq!(second, first);
    let other = r#"{"model":"gpt-test","messages":[{"role":"user","content":"goodbye now"}]}"#;
    let (_, cache, _, _) = s.ask(&edge, &secret, other, None).await?;
    assert_eq!(cache.as_deref(), Some("miss"));
    // Two chat calls upstream, and one embedding per exact miss.
    assert_eq!(s.fake.requests(), 2 + 3);
    let events = s.usage(6).await?;
    let embeddings = events.iter().filter(|e| e.model == "embed-test").count();
    assert_eq!(embeddings, 3, "each embedding is accounted: {events:?}");
    s.assert_lookups(&edge, "semantic_hit", 1).await?;
    Ok(())
}
