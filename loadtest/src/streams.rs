//! Streamed requests: time to first token, the delay each chunk picks up on its way, stalls,
//! and streams held open to measure memory.
//!
//! The mock stamps every content delta with the wall-clock time it left (`t=<unix ns>`); the
//! client subtracts it from the time the chunk arrived. Both clocks are the same machine's,
//! so the difference is the chunk's transit through whatever sits between.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;

use crate::load::{Shot, client};
use crate::mock::unix_nanos;

/// What a streaming round measured.
#[derive(Clone, Debug)]
pub struct StreamOutcome {
    /// Send to first stamped chunk, nanoseconds.
    pub ttft: Histogram<u64>,
    /// Per chunk: arrival minus the mock's stamp, nanoseconds.
    pub chunk_delay: Histogram<u64>,
    pub completed: u64,
    /// Streams with a gap between chunks longer than the stall threshold, or cut short.
    pub stalled: u64,
    pub errors: u64,
    pub concurrency: usize,
}

impl StreamOutcome {
    fn new(concurrency: usize) -> anyhow::Result<Self> {
        Ok(StreamOutcome {
            ttft: Histogram::new_with_bounds(1_000, 120_000_000_000, 3)?,
            chunk_delay: Histogram::new_with_bounds(1_000, 120_000_000_000, 3)?,
            completed: 0,
            stalled: 0,
            errors: 0,
            concurrency,
        })
    }

    pub fn merge(&mut self, other: &StreamOutcome) -> anyhow::Result<()> {
        self.ttft.add(&other.ttft)?;
        self.chunk_delay.add(&other.chunk_delay)?;
        self.completed += other.completed;
        self.stalled += other.stalled;
        self.errors += other.errors;
        Ok(())
    }
}

/// Stamps found in complete SSE lines of `pending` (consumed up to the last newline).
fn take_stamps(pending: &mut Vec<u8>, out: &mut Vec<u64>) -> bool {
    let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
        return false;
    };
    let mut done = false;
    let text = &pending[..end];
    let mut i = 0;
    while i + 2 < text.len() {
        if text[i] == b't' && text[i + 1] == b'=' && text[i + 2].is_ascii_digit() {
            let digits: Vec<u8> = text[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            if let Some(n) = std::str::from_utf8(&digits)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                out.push(n);
            }
            i += 2 + digits.len();
        } else {
            i += 1;
        }
    }
    if text.windows(6).any(|w| w == b"[DONE]") {
        done = true;
    }
    pending.drain(..=end);
    done
}

/// One stream, read to its end: records into `outcome`.
async fn one_stream(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    shot: &Shot,
    stall: Duration,
    outcome: &mut StreamOutcome,
) {
    let Ok(request) = shot.request() else {
        outcome.errors += 1;
        return;
    };
    let sent = Instant::now();
    let response =
        match tokio::time::timeout(Duration::from_secs(30), client.request(request)).await {
            Ok(Ok(r)) if r.status().is_success() => r,
            _ => {
                outcome.errors += 1;
                return;
            }
        };
    let mut body = response.into_body();
    let mut pending = Vec::new();
    let mut stamps = Vec::new();
    let mut first = true;
    let mut last = Instant::now();
    let mut stalled = false;
    loop {
        let frame = match tokio::time::timeout(stall * 4, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                stalled = true;
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        let arrived = unix_nanos();
        if now.duration_since(last) > stall {
            stalled = true;
        }
        last = now;
        pending.extend_from_slice(&data);
        stamps.clear();
        take_stamps(&mut pending, &mut stamps);
        for stamp in &stamps {
            if first {
                first = false;
                let _ = outcome
                    .ttft
                    .record(now.duration_since(sent).as_nanos().max(1_000) as u64);
            }
            let _ = outcome
                .chunk_delay
                .record(arrived.saturating_sub(*stamp).max(1_000));
        }
    }
    if stalled || first {
        outcome.stalled += 1;
    } else {
        outcome.completed += 1;
    }
}

/// `concurrency` workers each streaming back to back for `duration` (blocking).
pub fn closed_loop(
    shot: &Shot,
    concurrency: usize,
    duration: Duration,
    stall: Duration,
) -> anyhow::Result<StreamOutcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = client();
        let until = Instant::now() + duration;
        let mut workers = Vec::new();
        let local = tokio::task::LocalSet::new();
        for _ in 0..concurrency {
            let (client, shot) = (client.clone(), shot.clone());
            workers.push(local.spawn_local(async move {
                let mut outcome = StreamOutcome::new(concurrency)?;
                while Instant::now() < until {
                    one_stream(&client, &shot, stall, &mut outcome).await;
                }
                Ok::<_, anyhow::Error>(outcome)
            }));
        }
        local.await;
        let mut total = StreamOutcome::new(concurrency)?;
        for worker in workers {
            total.merge(&worker.await.context("stream worker")??)?;
        }
        Ok(total)
    })
}

/// Streams held open (first chunk received, then idle) until [`Held::release`].
pub struct Held {
    pub established: usize,
    pub failed: usize,
    release: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Held {
    /// Closes every held stream.
    pub fn release(mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens `count` streams at `open_rate` per second and returns once each has its first chunk
/// (or failed). The answers must start with a chunk and then go idle (a mock with a long
/// chunk delay).
pub fn hold(shot: &Shot, count: usize, open_rate: f64) -> anyhow::Result<Held> {
    let shot = shot.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(usize, usize)>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("held-streams".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready_tx.send((0, count));
                return;
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let client = client();
                let interval = Duration::from_secs_f64(1.0 / open_rate.max(1.0));
                let start = tokio::time::Instant::now();
                let mut opening = Vec::with_capacity(count);
                for i in 0..count {
                    tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
                    let (client, shot) = (client.clone(), shot.clone());
                    opening.push(tokio::task::spawn_local(async move {
                        let request = shot.request().ok()?;
                        let response =
                            tokio::time::timeout(Duration::from_secs(30), client.request(request))
                                .await
                                .ok()?
                                .ok()?;
                        let mut body = response.into_body();
                        // Wait for the first chunk so the stream is really established.
                        tokio::time::timeout(Duration::from_secs(30), body.frame())
                            .await
                            .ok()??
                            .ok()?;
                        Some(body)
                    }));
                }
                let mut bodies = Vec::with_capacity(count);
                let mut failed = 0;
                for task in opening {
                    match task.await {
                        Ok(Some(body)) => bodies.push(body),
                        _ => failed += 1,
                    }
                }
                let _ = ready_tx.send((bodies.len(), failed));
                let _ = release_rx.await;
                drop(bodies);
            });
        })?;
    let (established, failed) = ready_rx
        .recv()
        .context("the held-streams thread ended early")?;
    Ok(Held {
        established,
        failed,
        release: Some(release_tx),
        thread: Some(thread),
    })
}
