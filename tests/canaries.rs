//! Secrets stay secret. The three roles run as processes on PostgreSQL and JetStream, with
//! debug logging, seeded with canary secrets: a database password, the bootstrap admin token,
//! the credential key, a provider API key and a virtual key. After successful, failing and
//! refused traffic, none of them appears in any role's log lines, in an error or other answer,
//! in `/metrics`, in a usage event, or in a `pg_dump` of either database.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use common::free_port;
use futures::StreamExt;
use sqlx::Connection;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::admin::{CreateKeyRequest, Deployment, Price, PutCredentialRequest};
use tollgate_runtime::bus::{Bus, JetStreamBus, USAGE};
use tollgate_test_support::openai_upstream::FakeOpenAi;
use tonic::Request;

const ADMIN_TOKEN: &str = "canary-admin-token-5f2a9e71";
const PROVIDER_KEY: &str = "sk-canary-provider-8c1d77aa";
const DB_PASSWORD: &str = "canary-db-password-3e9b0c";
const CREDENTIAL_KEY_BYTES: [u8; 32] = [0x5a; 32];

/// A child process stopped with SIGTERM (so that it flushes its logs), then reaped, on drop.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        tollgate_test_support::terminate(&self.0);
        let _ = self.0.wait();
    }
}

fn start(role: &str, env: &[(&str, String)], log: &Path) -> Result<Role> {
    let log = std::fs::File::create(log)?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .arg(role)
        .env("RUST_LOG", "debug")
        .env("TOLLGATE_UI_ADDR", "off")
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (name, value) in env {
        command.env(name, value);
    }
    Ok(Role(
        command
            .spawn()
            .with_context(|| format!("starting {role}"))?,
    ))
}

/// A login role with a password, and two databases it owns; their URLs carry the password.
async fn databases_with_a_password() -> Result<(String, String)> {
    let policy = tollgate_test_support::fresh_postgres_database().await?;
    let ledger = tollgate_test_support::fresh_postgres_database().await?;
    let role = tollgate_test_support::unique_name("canary");
    let mut admin = sqlx::PgConnection::connect(&policy).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'"
    )))
    .execute(&mut admin)
    .await?;
    let with_password = |url: &str| -> Result<String> {
        let (scheme, rest) = url.split_once("://").context("a URL")?;
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        Ok(format!("{scheme}://{role}:{DB_PASSWORD}@{host}"))
    };
    Ok((with_password(&policy)?, with_password(&ledger)?))
}

/// `pg_dump` of the harness's PostgreSQL (or the machine's).
fn pg_dump() -> Result<PathBuf> {
    let named = std::env::var_os("TOLLGATE_POSTGRES_BIN").map(PathBuf::from);
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    named
        .into_iter()
        .chain(on_path)
        .chain(debian)
        .map(|dir| dir.join("pg_dump"))
        .find(|p| p.is_file())
        .context("no pg_dump (scripts/test provides one)")
}

/// `message` with the bootstrap admin token.
fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {ADMIN_TOKEN}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The body of the answer to `request`.
async fn body(request: reqwest::RequestBuilder) -> Result<String> {
    Ok(request.send().await?.text().await?)
}

async fn wait_until_ready(url: &str) -> Result<()> {
    for _ in 0..600 {
        if reqwest::get(url).await.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} never became ready")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_appear_in_no_log_answer_metric_event_or_database_dump() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    let (policy_url, ledger_url) = databases_with_a_password().await?;
    let nats = tollgate_test_support::nats_url().await?;
    let prefix = tollgate_test_support::unique_name("canary");
    let credential_key = base64::engine::general_purpose::STANDARD.encode(CREDENTIAL_KEY_BYTES);
    let (admin_port, edge_port, usage_port, export_port) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let common = |database: &str| {
        vec![
            ("DATABASE_URL", database.to_owned()),
            ("NATS_URL", nats.clone()),
            ("TOLLGATE_BUS_PREFIX", prefix.clone()),
            ("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            // The roles are given a token to follow policy with: none falls back to the above.
            ("TOLLGATE_EDGE_TOKEN", ADMIN_TOKEN.to_owned()),
            ("TOLLGATE_CREDENTIAL_KEY", credential_key.clone()),
            (
                "TOLLGATE_CONTROL_PLANE_URL",
                format!("http://127.0.0.1:{admin_port}"),
            ),
            ("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
            ("TOLLGATE_EDGE_ADDR", format!("127.0.0.1:{edge_port}")),
            ("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{usage_port}")),
            (
                "TOLLGATE_USAGE_HTTP_ADDR",
                format!("127.0.0.1:{export_port}"),
            ),
        ]
    };
    let logs = ["control-plane", "edge", "aggregator"].map(|role| dir.join(format!("{role}.log")));
    let control_plane = start("control-plane", &common(&policy_url), &logs[0])?;

    // Policy with a provider credential and a virtual key, through the admin API.
    let fake = FakeOpenAi::start().await?;
    let mut admin = None;
    for _ in 0..600 {
        if let Ok(client) =
            AdminServiceClient::connect(format!("http://127.0.0.1:{admin_port}")).await
        {
            admin = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut admin = admin.context("the control plane never answered")?;
    let credential = admin
        .put_credential(authorized(PutCredentialRequest {
            name: "canary-provider".into(),
            provider: "openai_compatible".into(),
            secret_fields: [("api_key".to_owned(), PROVIDER_KEY.to_owned())].into(),
        }))
        .await?
        .into_inner();
    for (model, upstream) in [
        ("canary-model", "gpt-upstream"),
        ("canary-broken", "fail-500"),
    ] {
        admin
            .upsert_deployment(authorized(Deployment {
                model_name: model.into(),
                provider: "openai_compatible".into(),
                upstream_model: upstream.into(),
                api_base: fake.base_url(),
                credential_id: credential.id.clone(),
                ..Default::default()
            }))
            .await?;
        admin
            .set_price(authorized(Price {
                model: model.into(),
                input_per_mtok: 1.0,
                output_per_mtok: 2.0,
                ..Default::default()
            }))
            .await?;
    }
    let virtual_key = admin
        .create_key(authorized(CreateKeyRequest {
            alias: "canary".into(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .secret;
    // An admin mistake that echoes what it was given would leak here.
    let refused = admin
        .put_credential(authorized(PutCredentialRequest {
            name: String::new(),
            provider: "nope".into(),
            secret_fields: [("api_key".to_owned(), PROVIDER_KEY.to_owned())].into(),
        }))
        .await
        .err()
        .map(|status| status.message().to_owned())
        .unwrap_or_default();

    let edge = start("edge", &common(&policy_url), &logs[1])?;
    let aggregator = start("aggregator", &common(&ledger_url), &logs[2])?;
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    wait_until_ready(&format!("{edge_url}/health/ready")).await?;

    // Every usage event as stored: read from before the first request, since the stream lets
    // go of an event once the aggregator has it.
    let bus = JetStreamBus::connect(&nats, &prefix).await?;
    let mut events = bus.subscribe(USAGE, 0).await?;

    let http = reqwest::Client::new();
    let mut answers = vec![refused];
    let chat = |model: &str, stream: bool| {
        serde_json::json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]})
    };
    for (key, body) in [
        (virtual_key.as_str(), chat("canary-model", false)),
        (virtual_key.as_str(), chat("canary-model", true)),
        (virtual_key.as_str(), chat("canary-broken", false)),
        (virtual_key.as_str(), chat("no-such-model", false)),
        ("tg-not-the-key", chat("canary-model", false)),
    ] {
        let response = http
            .post(format!("{edge_url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await?;
        answers.push(format!("{:?}", response.headers()));
        answers.push(response.text().await?);
    }
    assert!(
        fake.last_header("authorization")
            .is_some_and(|v| v.contains(PROVIDER_KEY)),
        "the provider key did reach the provider"
    );
    answers.push(body(http.get(format!("{edge_url}/metrics"))).await?);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let export = format!(
        "http://127.0.0.1:{export_port}/v1/usage/export?start=2020-01-01&end=2100-01-01&group_by=team,model"
    );
    answers.push(body(http.get(export).bearer_auth(ADMIN_TOKEN)).await?);
    answers.push(body(http.get(format!("http://127.0.0.1:{export_port}/metrics"))).await?);

    let mut stored = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await
    {
        stored.push(String::from_utf8_lossy(&message?.payload).into_owned());
    }
    assert!(
        stored.len() >= 5,
        "the requests were accounted: {}",
        stored.len()
    );

    drop((edge, aggregator, control_plane));
    let mut dumps = Vec::new();
    for url in [&policy_url, &ledger_url] {
        let output = Command::new(pg_dump()?).arg("--dbname").arg(url).output()?;
        anyhow::ensure!(
            output.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&output.stderr).replace(DB_PASSWORD, "<password>")
        );
        dumps.push(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    assert!(
        dumps[0].contains("policy_events") && dumps[1].contains("usage_ledger"),
        "the dumps hold the data"
    );

    let places: Vec<(String, String)> = logs
        .iter()
        .map(|log| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            (log.display().to_string(), text)
        })
        .chain(answers.into_iter().map(|a| ("an answer".to_owned(), a)))
        .chain(stored.into_iter().map(|e| ("a usage event".to_owned(), e)))
        .chain(dumps.into_iter().map(|d| ("a pg_dump".to_owned(), d)))
        .collect();
    assert!(
        places[1].1.contains("DEBUG"),
        "debug logging is on, so the check means something"
    );
    for (what, canary) in [
        ("the database password", DB_PASSWORD),
        ("the admin token", ADMIN_TOKEN),
        ("the credential key", credential_key.as_str()),
        ("the provider key", PROVIDER_KEY),
        ("the virtual key", virtual_key.as_str()),
    ] {
        for (place, text) in &places {
            assert!(!text.contains(canary), "{what} appears in {place}");
        }
    }
    Ok(())
}
