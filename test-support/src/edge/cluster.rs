//! A control plane on NATS streams of its own, and edges that follow it: what a test of the
//! edge's request path starts with before it writes its policy and sends its requests.

use std::sync::Arc;

use anyhow::Result;
use tollgate_edge::config::EdgeConfig;
use tollgate_runtime::bus::Bus;

use super::{AdminClient, TestControlPlane, TestEdge, jetstream, last_sequence};

/// A control plane on PostgreSQL and streams of its own, with an admin client; edges started
/// from it follow its policy on the same streams.
pub struct TestCluster {
    /// The control plane.
    pub cp: TestControlPlane,
    /// A client of its admin API, with the bootstrap admin token.
    pub admin: AdminClient,
    /// The bus it publishes policy on, and the edges follow.
    pub bus: Arc<dyn Bus>,
    /// The URL of the NATS server the streams are on.
    pub nats: String,
    /// The prefix of the streams' names.
    pub prefix: String,
}

impl TestCluster {
    /// A control plane on streams of its own, and its admin client.
    pub async fn start() -> Result<TestCluster> {
        let (nats, prefix, bus) = jetstream().await?;
        let cp = TestControlPlane::on_bus(bus.clone()).await?;
        let admin = cp.admin().await?;
        Ok(TestCluster {
            cp,
            admin,
            bus,
            nats,
            prefix,
        })
    }

    /// An edge that has applied everything committed so far.
    pub async fn edge(&mut self) -> Result<TestEdge> {
        self.edge_with(|_| {}).await
    }

    /// An edge, its configuration changed by `configure`, that has applied everything
    /// committed so far.
    pub async fn edge_with(&mut self, configure: impl FnOnce(&mut EdgeConfig)) -> Result<TestEdge> {
        let edge = self.edge_on(self.bus.clone(), configure).await?;
        self.sync(&edge).await?;
        Ok(edge)
    }

    /// An edge following this control plane over `bus` (the cluster's, or a way to it a test
    /// can cut), its configuration changed by `configure`; it may not have caught up yet.
    pub async fn edge_on(
        &self,
        bus: Arc<dyn Bus>,
        configure: impl FnOnce(&mut EdgeConfig),
    ) -> Result<TestEdge> {
        let mut config = TestEdge::config(&self.nats, &self.prefix);
        configure(&mut config);
        TestEdge::start_with(config, bus, Some(self.cp.url())).await
    }

    /// `n` edges, started one after another, that have all applied everything committed so far.
    pub async fn edges(&mut self, n: usize) -> Result<Vec<TestEdge>> {
        let mut edges = Vec::with_capacity(n);
        for _ in 0..n {
            edges.push(self.edge_on(self.bus.clone(), |_| {}).await?);
        }
        self.sync_all(&edges).await?;
        Ok(edges)
    }

    /// Waits until `edge` has applied everything committed so far.
    pub async fn sync(&mut self, edge: &TestEdge) -> Result<()> {
        self.sync_all(std::slice::from_ref(edge)).await
    }

    /// Waits until each of `edges` has applied everything committed so far.
    pub async fn sync_all(&mut self, edges: &[TestEdge]) -> Result<()> {
        let sequence = last_sequence(&mut self.admin).await?;
        for edge in edges {
            edge.wait_for_sequence(sequence).await?;
        }
        Ok(())
    }
}
