//! Heap allocations per request on the edge's request path, so that a change that allocates
//! more per request shows as a number rather than as a slower load test weeks later.
//!
//! A control plane and an edge (real PostgreSQL and NATS JetStream, as in the integration
//! tests) forward chat completions to a fake OpenAI-compatible upstream. A counting global
//! allocator counts what the edge's runtime threads allocate; the fake upstream and the client
//! run on threads of their own that are not counted. What the idle edge and control plane
//! allocate on their own (policy following, timers) is measured first and taken off.
//!
//! It also lists the allocations of 1 KiB and more by size class. Each request's handler
//! future is one of them, boxed by axum: whatever a request's future holds inline is copied
//! into it and touched on every request (a guardrail SDK call once made it 13 KB).
//!
//! Run: `scripts/test-env cargo bench -p tollgate-edge --bench allocations`.

// A global allocator can only be written with `unsafe`: this one forwards every call to the
// system allocator unchanged and counts it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::oneshot;
use tollgate_test_support::openai_upstream::FakeOpenAi;

use tollgate_test_support::edge::{Gateway, Staging};

/// Requests before counting: pools, caches and buffers reach their working size.
const WARM_UP: usize = 2_000;
/// Requests counted.
const REQUESTS: usize = 10_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// How long the idle edge is watched for its own allocations.
const IDLE: Duration = Duration::from_secs(3);
/// Time for the usage publisher to send the last events after the last answer.
const SETTLE: Duration = Duration::from_millis(1_500);

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations and bytes by size class: class `c` holds sizes below 2^c (and at least
/// 2^(c-1)). A request's large allocations are memory it moves and touches, cold.
static BY_CLASS: [[AtomicU64; 2]; 24] = [const { [AtomicU64::new(0), AtomicU64::new(0)] }; 24];

thread_local! {
    /// Set on the threads whose allocations are not the edge's (client, fake upstream, main).
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

impl Counting {
    fn count(size: usize) {
        if !UNCOUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(size as u64, Ordering::Relaxed);
            let class = ((usize::BITS - size.leading_zeros()) as usize).min(BY_CLASS.len() - 1);
            BY_CLASS[class][0].fetch_add(1, Ordering::Relaxed);
            BY_CLASS[class][1].fetch_add(size as u64, Ordering::Relaxed);
        }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations and bytes of each size class counted so far.
fn by_class() -> Vec<[u64; 2]> {
    BY_CLASS
        .iter()
        .map(|[n, bytes]| [n.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed)])
        .collect()
}

/// Allocations and bytes counted so far.
fn counted() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

fn main() -> Result<()> {
    let uncounted = || UNCOUNTED.with(|u| u.set(true));
    uncounted();
    let harness = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(uncounted)
        .enable_all()
        .build()?;
    // Two workers, as the load test's edge has.
    let edge_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let fake = harness.block_on(FakeOpenAi::start())?;
    let (ready, gateway_ready) = oneshot::channel();
    let (finished, until_finished) = oneshot::channel::<()>();
    let gateway = edge_runtime.spawn(async move {
        let gateway = serve(fake).await?;
        let target = (
            gateway.edge.url("/v1/chat/completions"),
            gateway.secret.clone(),
        );
        let _ = ready.send(target);
        let _ = until_finished.await;
        anyhow::Ok(())
    });
    let (url, secret) = harness
        .block_on(gateway_ready)
        .context("the gateway did not start")?;
    let measured = harness.block_on(measure(&url, &secret));
    let _ = finished.send(());
    edge_runtime.block_on(gateway)??;
    let (allocations, bytes, large) = measured?;
    println!(
        "edge allocations per request: {allocations:.1} ({bytes:.0} bytes), {REQUESTS} \
         non-streamed chat completions through an openai_compatible deployment, \
         {CONCURRENCY} at a time"
    );
    for (class, [n, bytes]) in large {
        println!(
            "  {:>6} to {:>6} bytes: {n:.2} per request ({bytes:.0} bytes)",
            1u64 << (class - 1),
            (1u64 << class) - 1
        );
    }
    Ok(())
}

/// A control plane and an edge with one `openai_compatible` deployment in front of `fake`.
async fn serve(fake: FakeOpenAi) -> Result<Gateway<FakeOpenAi>> {
    let mut staging = Staging::start().await?;
    let api_key = [("api_key", "sk-upstream")];
    let template = staging
        .provider("openai_compatible", fake.base_url(), &api_key)
        .await?;
    staging
        .deploy(&template, &[("gpt-bench", "gpt-upstream")])
        .await?;
    staging.serve(fake, |_| {}).await
}

/// Allocations of 1 KiB and more, by size class, that a request makes at least one of in ten.
type Large = Vec<(usize, [f64; 2])>;

/// Allocations and bytes per request, the idle edge's own taken off, and the large ones.
async fn measure(url: &str, secret: &str) -> Result<(f64, f64, Large)> {
    let client = reqwest::Client::new();
    send(&client, url, secret, WARM_UP).await?;

    let (idle_allocations, idle_bytes) = counted();
    tokio::time::sleep(IDLE).await;
    let (after_allocations, after_bytes) = counted();
    let idle_rate = |before: u64, after: u64| (after - before) as f64 / IDLE.as_secs_f64();
    let background = (
        idle_rate(idle_allocations, after_allocations),
        idle_rate(idle_bytes, after_bytes),
    );

    let (allocations, bytes) = counted();
    let classes = by_class();
    let start = Instant::now();
    send(&client, url, secret, REQUESTS).await?;
    tokio::time::sleep(SETTLE).await;
    let elapsed = start.elapsed().as_secs_f64();
    let (allocations_after, bytes_after) = counted();
    let large = by_class()
        .into_iter()
        .zip(classes)
        .enumerate()
        .skip(11)
        .map(|(class, (after, before))| {
            let per_request = |i: usize| (after[i] - before[i]) as f64 / REQUESTS as f64;
            (class, [per_request(0), per_request(1)])
        })
        .filter(|(_, [n, _])| *n >= 0.1)
        .collect();
    let per_request = |before: u64, after: u64, background: f64| {
        ((after - before) as f64 - background * elapsed).max(0.0) / REQUESTS as f64
    };
    Ok((
        per_request(allocations, allocations_after, background.0),
        per_request(bytes, bytes_after, background.1),
        large,
    ))
}

/// Sends `count` chat completions, [`CONCURRENCY`] at a time; each must succeed.
async fn send(client: &reqwest::Client, url: &str, secret: &str, count: usize) -> Result<()> {
    let body = json!({
        "model": "gpt-bench",
        "messages": [{"role": "user", "content": "How many allocations does a request take?"}],
        "max_tokens": 16,
    });
    let answers = futures::stream::iter(0..count)
        .map(|_| async {
            let response = client
                .post(url)
                .bearer_auth(secret)
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            let text = response.bytes().await?;
            ensure!(
                status == 200,
                "HTTP {status}: {}",
                String::from_utf8_lossy(&text)
            );
            anyhow::Ok(())
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    answers.into_iter().collect()
}
