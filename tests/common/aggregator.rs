//! An aggregator beside the edges of a root test, on a fresh PostgreSQL ledger; included with
//! `#[path]` by the tests that use the edge's harness as `common`.

use std::sync::Arc;

use anyhow::Result;
use tollgate_runtime::bus::Bus;
use tollgate_runtime::follow::GrpcSnapshots;
use tollgate_test_support::Served;
use tollgate_test_support::roles::ADMIN_TOKEN;
use tollgate_usage_aggregator::alerts::AlertSinks;
use tollgate_usage_aggregator::config::DEFAULT_LINGER_MS;
use tollgate_usage_aggregator::ledger::Ledger;
use tollgate_usage_aggregator::{Aggregator, AggregatorParts};

/// An aggregator on a fresh PostgreSQL database, following the control plane at `cp_url` over
/// `bus` in batches of 100 gathered as in production (the budget bound must hold with the
/// default linger): its ledger, and the server, which runs as long as it is kept.
pub async fn serve_aggregator(bus: Arc<dyn Bus>, cp_url: &str) -> Result<(Ledger, Served)> {
    let database_url = tollgate_test_support::fresh_postgres_database().await?;
    let aggregator = Aggregator::start(AggregatorParts {
        database_url,
        bus,
        snapshots: Some(Arc::new(
            GrpcSnapshots::new(cp_url, ADMIN_TOKEN).map_err(anyhow::Error::msg)?,
        )),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        sinks: AlertSinks::default(),
        batch: 100,
        linger: std::time::Duration::from_millis(DEFAULT_LINGER_MS),
        keys: Default::default(),
    })
    .await?;
    let ledger = aggregator.ledger().clone();
    let (grpc, http) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    );
    let served = Served::spawn("the aggregator", |shutdown| {
        aggregator.serve(grpc, http, shutdown)
    });
    Ok((ledger, served))
}
