//! A control plane and one edge in front of fake upstreams, built the way every provider test
//! needs it: [`Staging`] registers credentials, deployments and prices through the admin API,
//! then [`Staging::serve`] starts an edge caught up with all of it and hands back a
//! [`Gateway`] (holding the test's fakes) to send requests with one key allowed every model.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use serde_json::Value;
use tollgate_edge::config::EdgeConfig;
use tollgate_proto::admin::Deployment;

use super::{AdminClient, TestCluster, TestControlPlane, TestEdge, create_key};

/// A control plane whose policy is being written before its edge starts.
pub struct Staging {
    /// The control plane, and its admin client for what the methods below do not write.
    pub cluster: TestCluster,
    deployments: HashMap<String, String>,
    credentials: usize,
}

impl Staging {
    /// A control plane on streams of its own.
    pub async fn start() -> Result<Staging> {
        Ok(Staging {
            cluster: TestCluster::start().await?,
            deployments: HashMap::new(),
            credentials: 0,
        })
    }

    /// Stores a credential for `provider` with these secret fields; returns its id.
    pub async fn credential(&mut self, provider: &str, fields: &[(&str, &str)]) -> Result<String> {
        self.credentials += 1;
        let name = format!("fake-{provider}-{}", self.credentials);
        super::credential(&mut self.cluster.admin, name, provider, fields).await
    }

    /// Stores a credential for `provider` with these secret fields, and returns the template
    /// of a deployment of `provider` at `api_base` signed in with it.
    pub async fn provider(
        &mut self,
        provider: &str,
        api_base: String,
        fields: &[(&str, &str)],
    ) -> Result<Deployment> {
        Ok(Deployment {
            provider: provider.to_owned(),
            api_base,
            credential_id: self.credential(provider, fields).await?,
            ..Default::default()
        })
    }

    /// Deploys each `(edge model, upstream model)` as `template` says (provider, address,
    /// credential, region, settings).
    pub async fn deploy(&mut self, template: &Deployment, models: &[(&str, &str)]) -> Result<()> {
        for (model, upstream) in models {
            let deployment = self
                .cluster
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

    /// Deploys each of `models` as `template` says, under the name the upstream knows it by
    /// (the fakes' models that fail or stall on command).
    pub async fn deploy_as_named(&mut self, template: &Deployment, models: &[&str]) -> Result<()> {
        let models: Vec<(&str, &str)> = models.iter().map(|model| (*model, *model)).collect();
        self.deploy(template, &models).await
    }

    /// USD per million tokens of `model`: input, output, cached input, cache write.
    pub async fn price(&mut self, model: &str, prices: [f64; 4]) -> Result<()> {
        super::set_price(&mut self.cluster.admin, model, prices).await
    }

    /// A key allowed every model, and an edge (its configuration changed by `configure`)
    /// that has applied everything registered so far; the gateway keeps `fake` alive.
    pub async fn serve<F>(
        mut self,
        fake: F,
        configure: impl FnOnce(&mut EdgeConfig),
    ) -> Result<Gateway<F>> {
        let (_, secret) = create_key(&mut self.cluster.admin, &[]).await?;
        let edge = self.cluster.edge_with(configure).await?;
        Ok(Gateway {
            cp: self.cluster.cp,
            admin: self.cluster.admin,
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

    /// An embeddings request.
    pub async fn embeddings(&self, body: &Value) -> Result<reqwest::Response> {
        self.post_to("/v1/embeddings", body).await
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

    /// A streamed chat completion of `model`, whose upstream spaces its events out: the edge
    /// must relay them as they come (the end at least `spread` after the content `Hello `)
    /// and end the stream with `[DONE]`.
    pub async fn relays_events_as_they_come(&self, model: &str, spread: Duration) -> Result<()> {
        let started = Instant::now();
        let response = self.post(&super::streamed_request(model, "hi")).await?;
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
        let (first, total) = (first_content.context("no first word")?, started.elapsed());
        ensure!(
            total - first > spread,
            "the first word came at {first:?}, the end at {total:?}"
        );
        ensure!(text.ends_with("data: [DONE]\n\n"), "{text}");
        Ok(())
    }

    /// A streamed chat completion that must start: the whole text of its events, however it
    /// ends.
    pub async fn stream_text(&self, body: &Value) -> Result<String> {
        let response = self.post(body).await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status == 200, "HTTP {status}: {text}");
        Ok(text)
    }

    /// A streamed chat completion whose upstream stalls: it must start, and end before
    /// `deadline` with an in-band `upstream_timeout`.
    pub async fn stream_times_out(&self, body: &Value, deadline: Instant) -> Result<()> {
        let text = self.stream_text(body).await?;
        ensure!(text.contains("upstream_timeout"), "{text}");
        ensure!(Instant::now() < deadline, "the stall was cut too late");
        Ok(())
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

/// The concatenated `content` deltas in the text of an OpenAI event stream, passing over
/// whatever is not a JSON chunk (`[DONE]`, other events).
pub fn streamed_content(text: &str) -> String {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// `template` with its setting `key` set to `value`.
pub fn with_setting(template: &Deployment, key: &str, value: &str) -> Deployment {
    let mut deployment = template.clone();
    deployment.settings.insert(key.to_owned(), value.to_owned());
    deployment
}

/// Sets an edge's upstream timeouts: to the first byte (and between chunks), and in all.
pub fn timeouts(first_byte: Duration, total: Duration) -> impl FnOnce(&mut EdgeConfig) {
    move |config| {
        config.first_byte_timeout = first_byte;
        config.upstream_timeout = total;
    }
}

/// The concatenated `content` deltas of a stream.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}
