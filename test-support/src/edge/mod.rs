//! Edges in-process for the tests (the edge's own, the binary's end-to-end ones, the allocation
//! bench): edges following a control plane (the `roles` harness's, on real PostgreSQL and NATS
//! JetStream), each on an ephemeral port.

mod gateway;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::Served;
pub use crate::roles::{
    ADMIN_TOKEN, AdminClient, Bearer, SEALING_KEY, TestControlPlane, TestStore, eventually,
    last_sequence,
};
use anyhow::{Context, Result};
use futures::StreamExt;
use prost::Message;
use tollgate_edge::Edge;
use tollgate_edge::config::EdgeConfig;
use tollgate_edge::metrics::Metrics;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::usage::UsageEvent;
use tollgate_runtime::bus::{Bus, JetStreamBus, USAGE};
use tollgate_runtime::follow::{GrpcSnapshots, PolicyView, SnapshotSource};

pub use gateway::{Gateway, Staging, parse_stream, streamed_text};

/// A NATS connection with streams of its own.
pub async fn jetstream() -> Result<(String, String, Arc<dyn Bus>)> {
    let url = crate::nats_url().await?;
    let prefix = crate::unique_name("edge");
    let bus = Arc::new(JetStreamBus::connect(&url, &prefix).await?);
    Ok((url, prefix, bus))
}

/// An edge serving on 127.0.0.1 at a random port.
pub struct TestEdge {
    pub addr: SocketAddr,
    pub policy: Arc<PolicyView>,
    pub metrics: Arc<Metrics>,
    pub budgets: Arc<tollgate_edge::budget::Budgets>,
    served: Served,
}

impl TestEdge {
    /// An edge following `bus`, bootstrapping from `control_plane_url` when given.
    pub async fn start(
        nats_url: &str,
        prefix: &str,
        bus: Arc<dyn Bus>,
        control_plane_url: Option<String>,
    ) -> Result<Self> {
        Self::start_with(Self::config(nats_url, prefix), bus, control_plane_url).await
    }

    /// The configuration [`TestEdge::start`] uses, for tests that change a setting first.
    pub fn config(nats_url: &str, prefix: &str) -> EdgeConfig {
        let mut config = EdgeConfig::local(nats_url);
        config.bus.prefix = prefix.to_owned();
        config.edge_id = crate::unique_name("edge");
        config.region = "test-region".to_owned();
        config.credential_key = Some(SealingKey::from_bytes(SEALING_KEY));
        config.first_byte_timeout = Duration::from_secs(5);
        config.upstream_timeout = Duration::from_secs(10);
        config
    }

    pub async fn start_with(
        config: EdgeConfig,
        bus: Arc<dyn Bus>,
        control_plane_url: Option<String>,
    ) -> Result<Self> {
        let snapshots = match control_plane_url {
            Some(url) => Some(Arc::new(
                GrpcSnapshots::new(&url, ADMIN_TOKEN).map_err(anyhow::Error::msg)?,
            ) as Arc<dyn SnapshotSource>),
            None => None,
        };
        Self::start_from(config, bus, snapshots).await
    }

    /// An edge taking its snapshots from `snapshots`.
    pub async fn start_from(
        config: EdgeConfig,
        bus: Arc<dyn Bus>,
        snapshots: Option<Arc<dyn SnapshotSource>>,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let edge = Edge::start(config, bus, snapshots)?;
        let (policy, metrics) = (edge.policy().clone(), edge.metrics().clone());
        let budgets = edge.budgets().clone();
        let served = Served::spawn("an edge", |shutdown| edge.serve(listener, shutdown));
        Ok(TestEdge {
            addr,
            policy,
            metrics,
            budgets,
            served,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until this edge has applied policy up to `sequence`.
    pub async fn wait_for_sequence(&self, sequence: u64) -> Result<()> {
        let mut applied = self.policy.applied();
        tokio::time::timeout(
            Duration::from_secs(15),
            applied.wait_for(|s| *s >= sequence),
        )
        .await
        .with_context(|| {
            format!(
                "edge stuck at sequence {} < {sequence}",
                self.policy.sequence()
            )
        })??;
        Ok(())
    }

    /// Stops serving and waits until buffered usage is flushed.
    pub async fn stop(self) -> Result<()> {
        self.served.stop().await
    }
}

/// A virtual key allowed `models` (empty: all), returned as (key id, secret).
pub async fn create_key(admin: &mut AdminClient, models: &[&str]) -> Result<(String, String)> {
    let created = admin
        .create_key(tollgate_proto::admin::CreateKeyRequest {
            models: models.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((created.key.context("key")?.id, created.secret))
}

/// A `mock` deployment of `model` with the given settings.
pub async fn mock_deployment(
    admin: &mut AdminClient,
    model: &str,
    settings: &[(&str, &str)],
) -> Result<()> {
    admin
        .upsert_deployment(tollgate_proto::admin::Deployment {
            model_name: model.to_owned(),
            provider: "mock".to_owned(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// A credential for a provider whose only secret is an `api_key`; returns its id.
pub async fn api_key_credential(admin: &mut AdminClient, provider: &str) -> Result<String> {
    let credential = admin
        .put_credential(tollgate_proto::admin::PutCredentialRequest {
            name: format!("fake-{provider}"),
            provider: provider.to_owned(),
            secret_fields: [("api_key".to_owned(), "sk-upstream".to_owned())].into(),
        })
        .await?
        .into_inner();
    Ok(credential.id)
}

/// A Bedrock credential with a fake AWS key pair (`AKIDTEST`); returns its id.
pub async fn aws_credential(admin: &mut AdminClient) -> Result<String> {
    let credential = admin
        .put_credential(tollgate_proto::admin::PutCredentialRequest {
            name: "fake-bedrock".into(),
            provider: "bedrock".into(),
            secret_fields: [
                ("aws_access_key_id".to_owned(), "AKIDTEST".to_owned()),
                ("aws_secret_access_key".to_owned(), "secret".to_owned()),
            ]
            .into(),
        })
        .await?
        .into_inner();
    Ok(credential.id)
}

/// Deploys `model` as `upstream` on the OpenAI-compatible server at `api_base`, signed in with
/// `credential_id`.
pub async fn openai_compatible_deployment(
    admin: &mut AdminClient,
    (model, upstream): (&str, &str),
    api_base: String,
    credential_id: &str,
) -> Result<()> {
    admin
        .upsert_deployment(tollgate_proto::admin::Deployment {
            model_name: model.into(),
            provider: "openai_compatible".into(),
            upstream_model: upstream.into(),
            api_base,
            credential_id: credential_id.to_owned(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// A new team `name`; returns its id.
pub async fn create_team(admin: &mut AdminClient, name: &str) -> Result<String> {
    let team = admin
        .create_team(tollgate_proto::admin::CreateTeamRequest {
            name: name.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(team.id)
}

/// A key in team `team_id`, returned as (key id, secret).
pub async fn create_team_key(admin: &mut AdminClient, team_id: &str) -> Result<(String, String)> {
    let created = admin
        .create_key(tollgate_proto::admin::CreateKeyRequest {
            team_id: team_id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((created.key.context("key")?.id, created.secret))
}

/// An edge following `bus` that has applied everything committed so far by the control plane
/// at `cp_url` that `admin` writes to.
pub async fn caught_up_edge(
    (nats, prefix): (&str, &str),
    bus: Arc<dyn Bus>,
    admin: &mut AdminClient,
    cp_url: String,
) -> Result<TestEdge> {
    let sequence = last_sequence(admin).await?;
    let edge = TestEdge::start(nats, prefix, bus, Some(cp_url)).await?;
    edge.wait_for_sequence(sequence).await?;
    Ok(edge)
}

/// The first `n` usage events on `bus`, each within 10 s.
pub async fn usage_events(bus: &Arc<dyn Bus>, n: usize) -> Result<Vec<UsageEvent>> {
    let mut events = bus.subscribe(USAGE, 0).await?;
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .context("usage event")?
            .context("usage stream ended")??;
        out.push(UsageEvent::decode(message.payload)?);
    }
    Ok(out)
}
