//! Policy propagation: three edges follow one control plane over NATS; the suite commits
//! policy changes (keys created and revoked, a rate limit changed) at a steady pace and
//! measures, per change and per edge, the time from the commit being acknowledged to the
//! admin caller until the edge reports that sequence applied on `/health/ready`. Then it
//! revokes keys that are in use and measures when each edge starts refusing them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use tollgate_proto::admin::{CreateKeyRequest, CreateKeyResponse, KeyRequest, RateLimit};

use crate::plan::Plan;
use crate::results::{Pct, Propagation};
use crate::suite::chat_body;
use crate::tollgate::{Stack, policy_sequence};

const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Sequences an edge reported, each with when it was first seen.
struct Seen {
    changes: Vec<(Instant, u64)>,
    polls: u64,
    elapsed: Duration,
}

fn poll(addr: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let began = Instant::now();
        let mut seen = Seen {
            changes: Vec::new(),
            polls: 0,
            elapsed: Duration::ZERO,
        };
        let mut last = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Some(seq)) = policy_sequence(&addr).await
                && seq > last
            {
                last = seq;
                seen.changes.push((Instant::now(), seq));
            }
            seen.polls += 1;
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        seen.elapsed = began.elapsed();
        seen
    })
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1_000, 600_000_000_000, 3)?)
}

/// Runs the propagation and revocation measurements on `stack` (adding edges up to three).
pub async fn run(stack: &mut Stack, plan: &Plan) -> anyhow::Result<Propagation> {
    while stack.edges.len() < 3 {
        stack.add_edge().await?;
    }
    let addrs: Vec<String> = stack.edges.iter().map(|e| e.addr.clone()).collect();
    let limit = stack
        .admin
        .set_rate_limit(RateLimit {
            scope: "team".into(),
            scope_id: stack.team_id.clone(),
            rpm: 1_000_000_000,
            ..Default::default()
        })
        .await?
        .into_inner();

    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = addrs
        .iter()
        .map(|a| poll(a.clone(), stop.clone()))
        .collect();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut commits: Vec<(u64, Instant)> = Vec::with_capacity(plan.changes);
    let mut live_keys: Vec<String> = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / plan.change_rate);
    let start = tokio::time::Instant::now();
    for i in 0..plan.changes {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let kind = match i % 10 {
            4..=6 if !live_keys.is_empty() => "key revoked",
            7..=9 => "rate limit changed",
            _ => "key created",
        };
        match kind {
            "key revoked" => {
                let id = live_keys.remove(0);
                stack.admin.revoke_key(KeyRequest { key_id: id }).await?;
            }
            "rate limit changed" => {
                stack
                    .admin
                    .set_rate_limit(RateLimit {
                        rpm: 1_000_000_000 - i as u64,
                        ..limit.clone()
                    })
                    .await?;
            }
            _ => {
                let created = chat_key(stack, format!("propagation-{i}")).await?;
                live_keys.push(created.key.context("no key")?.id);
            }
        }
        let committed = Instant::now();
        let sequence = stack.last_sequence().await?;
        commits.push((sequence, committed));
        *kinds.entry(kind.to_owned()).or_default() += 1;
    }
    let last = commits.last().map_or(0, |c| c.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in &addrs {
        while policy_sequence(addr).await.ok().flatten().unwrap_or(0) < last
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram()?;
    let mut per_edge = Vec::new();
    let mut missing = 0;
    let mut polls = 0u64;
    let mut poll_time = Duration::ZERO;
    for poller in pollers {
        let seen = poller.await?;
        polls += seen.polls;
        poll_time += seen.elapsed;
        let mut edge = histogram()?;
        for (sequence, committed) in &commits {
            let index = seen.changes.partition_point(|(_, s)| s < sequence);
            match seen.changes.get(index) {
                Some((at, _)) => {
                    let ns = at
                        .saturating_duration_since(*committed)
                        .as_nanos()
                        .max(1_000) as u64;
                    edge.record(ns)?;
                    all.record(ns)?;
                }
                None => missing += 1,
            }
        }
        per_edge.push(Pct::of(&edge));
    }
    let (revocation, revocation_failures, revocation_violations) =
        revocations(stack, plan, &addrs).await?;
    Ok(Propagation {
        changes: plan.changes,
        change_rate: plan.change_rate,
        kinds,
        per_edge,
        all: Pct::of(&all),
        missing,
        poll_interval_us: poll_time.as_secs_f64() * 1e6 / polls.max(1) as f64,
        revocation: Pct::of(&revocation),
        revocation_failures,
        revocation_violations,
    })
}

async fn chat_status(addr: &str, auth: &str) -> u16 {
    let body = Bytes::from(chat_body("chat", false));
    crate::http::post(addr, "/v1/chat/completions", Some(auth), body)
        .await
        .map_or(0, |(status, _)| status)
}

/// Creates a key named `alias` for the `chat` model in the load team.
async fn chat_key(stack: &mut Stack, alias: String) -> anyhow::Result<CreateKeyResponse> {
    Ok(stack
        .admin
        .create_key(CreateKeyRequest {
            alias,
            team_id: stack.team_id.clone(),
            models: vec!["chat".into()],
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Keys in use, revoked: time from the revoke call's answer to the first 401 on each edge.
async fn revocations(
    stack: &mut Stack,
    plan: &Plan,
    addrs: &[String],
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut times = histogram()?;
    let (mut failures, mut violations) = (0, 0);
    for i in 0..plan.revocations {
        let created = chat_key(stack, format!("revocation-{i}")).await?;
        let id = created.key.context("no key")?.id;
        let auth = format!("Bearer {}", created.secret);
        let target = stack.last_sequence().await?;
        for addr in addrs {
            let deadline = Instant::now() + Duration::from_secs(10);
            while policy_sequence(addr).await.ok().flatten().unwrap_or(0) < target
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if chat_status(addr, &auth).await != 200 {
                failures += 1;
            }
        }
        stack.admin.revoke_key(KeyRequest { key_id: id }).await?;
        let revoked_at = Instant::now();
        let revoked_seq = stack.last_sequence().await?;
        let probes = addrs.iter().map(|addr| {
            let (addr, auth) = (addr.clone(), auth.clone());
            async move {
                loop {
                    if chat_status(&addr, &auth).await == 401 {
                        return Some(revoked_at.elapsed());
                    }
                    if revoked_at.elapsed() > Duration::from_secs(5) {
                        return None;
                    }
                }
            }
        });
        for result in futures::future::join_all(probes).await {
            match result {
                Some(elapsed) => times.record(elapsed.as_nanos().max(1_000) as u64)?,
                None => failures += 1,
            }
        }
        // Once an edge says it applied the revocation, the key must be refused there.
        for addr in addrs {
            if policy_sequence(addr).await.ok().flatten().unwrap_or(0) >= revoked_seq
                && chat_status(addr, &auth).await != 401
            {
                violations += 1;
            }
        }
    }
    Ok((times, failures, violations))
}
