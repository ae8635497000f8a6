//! The control plane's Prometheus metrics, served at `GET /metrics` on the admin address
//! (HTTP/1.1 beside the gRPC API), so that scraping needs no listener of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `ok`, or the gRPC code the change was refused with (`invalid_argument`, `not_found`, …).
    pub result: &'static str,
}

/// Every metric the control plane exposes.
pub struct ControlMetrics {
    registry: Registry,
    /// Admin changes, by result.
    pub commands: Family<CommandLabels, Counter>,
    /// The sequence of the last policy event committed to the log (set at scrape time).
    pub committed: Gauge,
    /// The sequence of the last policy event the relay published to the bus.
    pub relayed: Arc<AtomicU64>,
    relayed_gauge: Gauge,
    /// Relay passes that failed (the bus or the store was away) and were retried.
    pub relay_failures: Counter,
    /// Open `WatchEvents` and `TailRequests` streams (set at scrape time).
    pub watchers: Gauge,
    pub tails: Gauge,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let metrics = ControlMetrics {
            commands: Family::default(),
            committed: Gauge::default(),
            relayed: Arc::default(),
            relayed_gauge: Gauge::default(),
            relay_failures: Counter::default(),
            watchers: Gauge::default(),
            tails: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "admin_changes",
            "Policy changes asked of the admin API, by result (ok, or the gRPC code of the refusal)",
            metrics.commands.clone(),
        );
        registry.register(
            "policy_committed_sequence",
            "Sequence of the last policy event committed to the log",
            metrics.committed.clone(),
        );
        registry.register(
            "policy_relayed_sequence",
            "Sequence of the last policy event published to the bus (behind the committed one while the bus is away)",
            metrics.relayed_gauge.clone(),
        );
        registry.register(
            "policy_relay_failures",
            "Relay passes that failed and were retried (the bus or the store was away)",
            metrics.relay_failures.clone(),
        );
        registry.register(
            "admin_watch_streams",
            "Open WatchEvents streams (edges and aggregators hold one each)",
            metrics.watchers.clone(),
        );
        registry.register(
            "admin_tail_streams",
            "Open TailRequests streams",
            metrics.tails.clone(),
        );
        ControlMetrics {
            registry,
            ..metrics
        }
    }
}

impl ControlMetrics {
    /// Counts a change that ended with `code` (`None`: committed).
    pub fn changed(&self, code: Option<tonic::Code>) {
        let result = match code {
            None => "ok",
            Some(code) => code_name(code),
        };
        self.commands.get_or_create(&CommandLabels { result }).inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let relayed = self.relayed.load(Ordering::Relaxed);
        self.relayed_gauge
            .set(i64::try_from(relayed).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The answer to `GET /metrics`: the exposition `text`.
pub fn serve(text: String) -> axum::response::Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}
