//! Edges in-process for the tests (the edge's own, the binary's end-to-end ones, the allocation
//! bench): edges following a control plane (the `roles` harness's, on real PostgreSQL and NATS
//! JetStream), each on an ephemeral port.

mod cluster;
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
use serde_json::{Value, json};
use tollgate_edge::Edge;
use tollgate_edge::config::EdgeConfig;
use tollgate_edge::metrics::Metrics;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::{CreateKeyRequest, Price, PutCredentialRequest};
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::{BudgetStatus, UsageEvent};
use tollgate_runtime::bus::{Bus, JetStreamBus, USAGE};
use tollgate_runtime::follow::{GrpcSnapshots, PolicyView, SnapshotSource};

pub use cluster::TestCluster;
pub use gateway::{
    Gateway, Staging, parse_stream, streamed_content, streamed_text, timeouts, with_setting,
};

/// A NATS connection with streams of its own.
pub async fn jetstream() -> Result<(String, String, Arc<dyn Bus>)> {
    let url = crate::nats_url().await?;
    let (prefix, bus) = jetstream_at(&url).await?;
    Ok((url, prefix, bus))
}

/// A connection to the NATS server at `url`, with streams of its own under the returned prefix.
pub async fn jetstream_at(url: &str) -> Result<(String, Arc<dyn Bus>)> {
    let prefix = crate::unique_name("edge");
    let bus = Arc::new(JetStreamBus::connect(url, &prefix).await?);
    Ok((prefix, bus))
}

/// The status of daily budget `budget_id`, computed at `computed_at`: today's spend is ten
/// times its amount.
pub fn exhausted_daily_status(
    budget_id: &str,
    computed_at: chrono::DateTime<chrono::Utc>,
) -> Result<BudgetStatus> {
    let today = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    Ok(BudgetStatus {
        budget_id: budget_id.to_owned(),
        spent_usd: 50.0,
        amount_usd: 5.0,
        exceeded: true,
        period: "daily".into(),
        period_start: Some(timestamp(today)),
        computed_at: Some(timestamp(computed_at)),
        ..Default::default()
    })
}

/// An edge serving on 127.0.0.1 at a random port.
pub struct TestEdge {
    pub addr: SocketAddr,
    pub policy: Arc<PolicyView>,
    pub metrics: Arc<Metrics>,
    pub budgets: Arc<tollgate_edge::budget::Budgets>,
    http: reqwest::Client,
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
            http: reqwest::Client::new(),
            served,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` as JSON to `path` with `key` as the bearer token.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Result<reqwest::Response> {
        let request = self.http.post(self.url(path)).bearer_auth(key).json(body);
        Ok(request.send().await?)
    }

    /// POSTs `body` to the chat completions API with `key`.
    pub async fn chat(&self, key: &str, body: &Value) -> Result<reqwest::Response> {
        self.post("/v1/chat/completions", key, body).await
    }

    /// Waits until this edge has applied policy up to `sequence`.
    pub async fn wait_for_sequence(&self, sequence: u64) -> Result<()> {
        let within = Duration::from_secs(15);
        crate::roles::wait_for_policy(&self.policy, sequence, within, "the edge").await
    }

    /// Stops serving and waits until buffered usage is flushed.
    pub async fn stop(self) -> Result<()> {
        self.served.stop().await
    }
}

/// A chat completion request for `model` of one user message, `text`.
pub fn chat_request(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// [`chat_request`], streamed.
pub fn streamed_request(model: &str, text: &str) -> Value {
    let mut body = chat_request(model, text);
    body["stream"] = json!(true);
    body
}

/// The value of header `name` of `response`, when it is text.
pub fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A rate limit of key `key_id`, its limits to be set.
pub fn key_limit(key_id: &str) -> tollgate_proto::admin::RateLimit {
    tollgate_proto::admin::RateLimit {
        scope: "key".into(),
        scope_id: key_id.to_owned(),
        ..Default::default()
    }
}

/// A virtual key allowed `models` (empty: all), returned as (key id, secret).
pub async fn create_key(admin: &mut AdminClient, models: &[&str]) -> Result<(String, String)> {
    let request = CreateKeyRequest {
        models: models.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    };
    key_from(admin, request).await
}

/// The key `request` describes, returned as (key id, secret).
pub async fn key_from(
    admin: &mut AdminClient,
    request: CreateKeyRequest,
) -> Result<(String, String)> {
    let created = admin.create_key(request).await?.into_inner();
    Ok((created.key.context("key")?.id, created.secret))
}

/// Sets the USD per million tokens of `model`: input, output, cached input, cache write.
pub async fn set_price(
    admin: &mut AdminClient,
    model: &str,
    [input, output, cached, write]: [f64; 4],
) -> Result<()> {
    let price = Price {
        model: model.to_owned(),
        input_per_mtok: input,
        output_per_mtok: output,
        cached_input_per_mtok: cached,
        cache_write_per_mtok: write,
    };
    admin.set_price(price).await?;
    Ok(())
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

/// Stores a credential `name` for `provider` with these secret fields; returns its id.
pub async fn credential(
    admin: &mut AdminClient,
    name: String,
    provider: &str,
    fields: &[(&str, &str)],
) -> Result<String> {
    let secret_fields = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let request = PutCredentialRequest {
        name,
        provider: provider.to_owned(),
        secret_fields,
    };
    Ok(admin.put_credential(request).await?.into_inner().id)
}

/// A credential for a provider whose only secret is an `api_key`; returns its id.
pub async fn api_key_credential(admin: &mut AdminClient, provider: &str) -> Result<String> {
    let fields = [("api_key", "sk-upstream")];
    credential(admin, format!("fake-{provider}"), provider, &fields).await
}

/// A Bedrock credential with a fake AWS key pair (`AKIDTEST`); returns its id.
pub async fn aws_credential(admin: &mut AdminClient) -> Result<String> {
    let fields = [
        ("aws_access_key_id", "AKIDTEST"),
        ("aws_secret_access_key", "secret"),
    ];
    credential(admin, "fake-bedrock".into(), "bedrock", &fields).await
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
    let request = CreateKeyRequest {
        team_id: team_id.to_owned(),
        ..Default::default()
    };
    key_from(admin, request).await
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
