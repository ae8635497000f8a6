//! `WatchEvents` streams are capped per control plane (each runs its own reader of the log):
//! one more than the cap is refused with RESOURCE_EXHAUSTED, and a closed stream frees its place.

use std::time::Duration;

use anyhow::{Context, Result};
use tollgate_control_plane::MAX_WATCHERS;
use tollgate_proto::admin::WatchEventsRequest;
use tollgate_test_support::roles::*;

/// Streams opened per connection: below HTTP/2's usual limit of concurrent streams.
const STREAMS_PER_CONNECTION: usize = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_beyond_the_cap_are_refused_until_one_closes() -> Result<()> {
    let cp = TestControlPlane::start(Backend::SqliteMemory).await?;
    let mut clients = Vec::new();
    for _ in 0..=MAX_WATCHERS / STREAMS_PER_CONNECTION {
        clients.push(cp.admin().await?);
    }
    let mut streams = Vec::with_capacity(MAX_WATCHERS);
    for i in 0..MAX_WATCHERS {
        let stream = clients[i / STREAMS_PER_CONNECTION]
            .watch_events(WatchEventsRequest { after_sequence: 0 })
            .await
            .with_context(|| format!("watcher {i} of {MAX_WATCHERS}"))?
            .into_inner();
        streams.push(stream);
    }
    let last = clients.last_mut().context("a client")?;
    let refused = last
        .watch_events(WatchEventsRequest { after_sequence: 0 })
        .await
        .err()
        .context("one watcher too many was accepted")?;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains(&MAX_WATCHERS.to_string()),
        "{}",
        refused.message()
    );

    // Closing one frees its place once the server has seen it go.
    drop(streams.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match last
            .watch_events(WatchEventsRequest { after_sequence: 0 })
            .await
        {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the closed watcher's place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    drop(streams);
    cp.stop().await?;
    Ok(())
}
