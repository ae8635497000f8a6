//! `WatchEvents`: the committed events after a sequence, then each new one as it commits.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tollgate_proto::policy::PolicyEvent;
use tollgate_runtime::events::event_to_proto;
use tonic::Status;

use crate::log::PolicyLog;
use crate::store::READ_BATCH;

/// How often a caught-up watcher looks for events committed by another control plane.
const POLL: Duration = Duration::from_secs(1);

/// Streams every committed event after `after`, in order, until the receiver goes away.
pub fn events_after(
    log: Arc<PolicyLog>,
    mut after: u64,
) -> impl Stream<Item = Result<PolicyEvent, Status>> {
    let (tx, rx) = mpsc::channel(READ_BATCH as usize);
    tokio::spawn(async move {
        let mut committed = log.committed();
        loop {
            match log.store().read_after(after, READ_BATCH).await {
                Ok(events) if !events.is_empty() => {
                    for event in &events {
                        if tx.send(Ok(event_to_proto(event))).await.is_err() {
                            return;
                        }
                        after = event.sequence;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "watch: reading the log failed");
                    let _ = tx
                        .send(Err(Status::unavailable("the policy store is unavailable")))
                        .await;
                    return;
                }
            }
            tokio::select! {
                _ = committed.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}
