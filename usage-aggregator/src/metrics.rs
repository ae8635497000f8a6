//! The aggregator's `/metrics` (Prometheus text format): what its consumer has done, and how
//! far behind the edges it is.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::watch;
use tollgate_runtime::bus::{Bus, USAGE, USAGE_CONSUMER};

use crate::ConsumerCounters;

/// How often the backlog is read from the bus.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// A backlog at which the aggregator logs an error on every reading: usage is waiting
/// (budgets lag behind it), and the stream refuses new events once it is full.
pub const BACKLOG_ERROR: u64 = 100_000;

/// What `/metrics` reports.
pub struct AggregatorMetrics {
    pub counters: Arc<ConsumerCounters>,
    /// Usage events not yet acknowledged by the ledger consumer, as last read.
    backlog: AtomicU64,
}

impl AggregatorMetrics {
    pub fn new(counters: Arc<ConsumerCounters>) -> Arc<Self> {
        Arc::new(AggregatorMetrics {
            counters,
            backlog: AtomicU64::new(0),
        })
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let (recorded, failed_writes, dead_lettered, batches) = self.counters.read();
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "tollgate_usage_recorded",
                "counter",
                "Usage events this replica committed to the ledger.",
                recorded,
            ),
            (
                "tollgate_usage_batches",
                "counter",
                "Ledger transactions that committed usage events (recorded / batches = events per transaction).",
                batches,
            ),
            (
                "tollgate_usage_write_failures",
                "counter",
                "Ledger batch writes that failed and were retried.",
                failed_writes,
            ),
            (
                "tollgate_usage_dead_lettered",
                "counter",
                "Usage events parked on the dead-letter topic.",
                dead_lettered,
            ),
            (
                "tollgate_usage_backlog_messages",
                "gauge",
                "Usage events stored on the bus and not yet committed to the ledger.",
                self.backlog.load(Ordering::Relaxed),
            ),
        ] {
            let suffix = if kind == "counter" { "_total" } else { "" };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{suffix} {value}");
        }
        out.push_str("# EOF\n");
        out
    }

    /// Reads the backlog from the bus until `shutdown`.
    pub async fn follow_backlog(
        self: Arc<Self>,
        bus: Arc<dyn Bus>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            match bus.backlog(USAGE, USAGE_CONSUMER).await {
                Ok(backlog) => {
                    self.backlog.store(backlog, Ordering::Relaxed);
                    if backlog >= BACKLOG_ERROR {
                        tracing::error!(
                            backlog,
                            "usage events are waiting for the ledger: budgets lag behind spend, and edges buffer (then drop) usage once the stream is full"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read the usage backlog"),
            }
            tokio::select! {
                _ = tokio::time::sleep(BACKLOG_EVERY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// `GET /metrics`.
pub async fn serve(State(metrics): State<Arc<AggregatorMetrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tollgate_runtime::bus::MemoryBus;

    use super::*;

    #[tokio::test]
    async fn the_backlog_is_what_the_ledger_consumer_has_not_acknowledged() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        for i in 0..5 {
            bus.publish(USAGE, &format!("r{i}"), Bytes::from_static(b"e"))
                .await
                .expect("the memory bus takes it");
        }
        let metrics = AggregatorMetrics::new(Arc::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(metrics.clone().follow_backlog(bus, stopped));
        for _ in 0..100 {
            if metrics
                .render()
                .contains("\ntollgate_usage_backlog_messages 5\n")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        let _ = task.await;
        let text = metrics.render();
        assert!(
            text.contains("\ntollgate_usage_backlog_messages 5\n"),
            "{text}"
        );
        assert!(
            text.contains("\ntollgate_usage_recorded_total 0\n"),
            "{text}"
        );
    }
}
