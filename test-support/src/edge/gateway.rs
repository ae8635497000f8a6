//! A control plane and one edge in front of fake upstreams, built the way every provider test
//! needs it: [`Staging`] registers credentials, deployments and prices through the admin API,
//! then [`Staging::serve`] starts an edge caught up with all of it and hands back a
//! [`Gateway`] (holding the test's fakes) to send requests with one key allowed every model.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use serde_json::Value;
use tollgate_edge::config::EdgeConfig;
use tollgate_proto::admin::{Deployment, Price, PutCredentialRequest};
use tollgate_runtime::bus::Bus;

use super::{AdminClient, TestControlPlane, TestEdge, create_key, jetstream, last_sequence};

/// A control plane whose policy is being written before its edge starts.
pub struct Staging {
    pub cp: TestControlPlane,
    pub admin: AdminClient,
    deployments: HashMap<String, String>,
    credentials: usize,
    nats: String,
    prefix: String,
    bus: Arc<dyn Bus>,
}

impl Staging {
    /// A control plane on streams of its own.
    pub async fn start() -> Result<Staging> {
        let (nats, prefix, bus) = jetstream().await?;
        let cp = TestControlPlane::on_bus(bus.clone()).await?;
        let admin = cp.admin().await?;
        Ok(Staging {
            cp,
            admin,
            deployments: HashMap::new(),
            credentials: 0,
            nats,
            prefix,
            bus,
        })
    }

    /// Stores a credential for `provider` with these secret fields; returns its id.
    pub async fn credential(&mut self, provider: &str, fields: &[(&str, &str)]) -> Result<String> {
        self.credentials += 1;
        let credential = self
            .admin
            .put_credential(PutCredentialRequest {
                name: format!("fake-{provider}-{}", self.credentials),
                provider: provider.to_owned(),
                secret_fields: fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await?
            .into_inner();
        Ok(credential.id)
    }

    /// Deploys each `(edge model, upstream model)` as `template` says (provider, address,
    /// credential, region, settings).
    pub async fn deploy(&mut self, template: &Deployment, models: &[(&str, &str)]) -> Result<()> {
        for (model, upstream) in models {
            let deployment = self
                .admin
                .upsert_deployment(Deployment {
                    model_name: model.to_string(),
                    upstream_model: upstream.to_string(),
                    ..template.clone()
                })
                .await?
                .into_inner();
            self.deployments.insert(model.to_string(), deployment.id);
        }
        Ok(())
    }

    /// USD per million tokens of `model`: input, output, cached input, cache write.
    pub async fn price(
        &mut self,
        model: &str,
        [input, output, cached, write]: [f64; 4],
    ) -> Result<()> {
        self.admin
            .set_price(Price {
                model: model.to_owned(),
                input_per_mtok: input,
                output_per_mtok: output,
                cached_input_per_mtok: cached,
                cache_write_per_mtok: write,
            })
            .await?;
        Ok(())
    }

    /// A key allowed every model, and an edge (its configuration changed by `configure`)
    /// that has applied everything registered so far; the gateway keeps `fake` alive.
    pub async fn serve<F>(
        mut self,
        fake: F,
        configure: impl FnOnce(&mut EdgeConfig),
    ) -> Result<Gateway<F>> {
        let (_, secret) = create_key(&mut self.admin, &[]).await?;
        let sequence = last_sequence(&mut self.admin).await?;
        let mut config = TestEdge::config(&self.nats, &self.prefix);
        configure(&mut config);
        let edge = TestEdge::start_with(config, self.bus, Some(self.cp.url())).await?;
        edge.wait_for_sequence(sequence).await?;
        Ok(Gateway {
            cp: self.cp,
            admin: self.admin,
            edge,
            secret,
            http: reqwest::Client::new(),
            deployments: self.deployments,
            fake,
        })
    }
}

/// A control plane and an edge following it, with a key for every model, in front of `fake`.
pub struct Gateway<F> {
    pub cp: TestControlPlane,
    pub admin: AdminClient,
    pub edge: TestEdge,
    pub secret: String,
    pub http: reqwest::Client,
    /// Deployment id of each edge model.
    pub deployments: HashMap<String, String>,
    pub fake: F,
}

impl<F> Gateway<F> {
    /// POSTs `body` to the edge's `path` with the key.
    pub async fn post_to(&self, path: &str, body: &Value) -> Result<reqwest::Response> {
        Ok(self
            .http
            .post(self.edge.url(path))
            .bearer_auth(&self.secret)
            .json(body)
            .send()
            .await?)
    }

    /// A chat completion request.
    pub async fn post(&self, body: &Value) -> Result<reqwest::Response> {
        self.post_to("/v1/chat/completions", body).await
    }

    /// A request to `path` that must succeed, as JSON.
    pub async fn json_to(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self.post_to(path, body).await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status == 200, "HTTP {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// A chat completion that must succeed, as JSON.
    pub async fn json(&self, body: &Value) -> Result<Value> {
        self.json_to("/v1/chat/completions", body).await
    }

    /// A chat completion that must succeed: the cost it was charged (`x-tollgate-cost-usd`)
    /// and its JSON body.
    pub async fn priced_json(&self, body: &Value) -> Result<(f64, Value)> {
        let response = self.post(body).await?;
        ensure!(response.status() == 200, "HTTP {}", response.status());
        let cost: f64 = response.headers()["x-tollgate-cost-usd"]
            .to_str()?
            .parse()?;
        Ok((cost, response.json().await?))
    }

    /// A streamed chat completion that must start: how long after sending it the content
    /// `Hello ` arrived and it ended, and its whole text.
    pub async fn stream_timed(&self, body: &Value) -> Result<(Duration, Duration, String)> {
        let started = Instant::now();
        let response = self.post(body).await?;
        ensure!(response.status() == 200, "HTTP {}", response.status());
        let mut body = response.bytes_stream();
        let mut first_content = None;
        let mut text = String::new();
        while let Some(bytes) = body.next().await {
            text.push_str(std::str::from_utf8(&bytes?)?);
            if first_content.is_none() && text.contains("\"content\":\"Hello \"") {
                first_content = Some(started.elapsed());
            }
        }
        let total = started.elapsed();
        let first = first_content.context("no first word")?;
        Ok((first, total, text))
    }

    /// A streamed chat completion that must start: its chunks, and whether it ended with
    /// `data: [DONE]`.
    pub async fn stream(&self, body: &Value) -> Result<(Vec<Value>, bool)> {
        let response = self.post(body).await?;
        let status = response.status();
        let kind = response.headers().get("content-type").cloned();
        ensure!(
            status != 200 || kind.as_ref().is_some_and(|k| k == "text/event-stream"),
            "a stream answered as {kind:?}"
        );
        let text = response.text().await?;
        ensure!(status == 200, "HTTP {status}: {text}");
        parse_stream(&text)
    }
}

/// The chunks of an OpenAI event stream, and whether it ended with `data: [DONE]`.
pub fn parse_stream(text: &str) -> Result<(Vec<Value>, bool)> {
    let mut chunks = Vec::new();
    let mut done = false;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .with_context(|| format!("not an OpenAI event: {event:?}"))?;
        ensure!(!done, "an event after [DONE]: {event:?}");
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str(data)?);
        }
    }
    Ok((chunks, done))
}

/// The concatenated `content` deltas of a stream.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}
