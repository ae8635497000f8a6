//! The three roles as processes on a NATS server with authorization on, each with its own NATS
//! user (`NATS_USER` / `NATS_PASSWORD`) and the edge and aggregator following policy with
//! service tokens, and policy and budget statuses signed (keys from `tollgate keygen`): a key
//! created on the control plane reaches the edge, a request is served, its usage reaches the
//! aggregator's ledger, and the signed status of the budget it exhausted is enforced by an
//! edge that started afterwards.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};
use common::{Process, eventually_in, free_port};
use serde_json::Value;
use tollgate_test_support::authorizing_nats::{
    AGGREGATOR_USER, AuthorizingNats, CONTROL_PLANE_USER, EDGE_USER,
};

const TOKEN: &str = "nats-roles-test-admin-token";

/// `tollgate <role>` as NATS user `user`, with `env`; its log in `<dir>/<name>.err`.
fn start(
    (role, name): (&str, &str),
    dir: &Path,
    nats: &AuthorizingNats,
    prefix: &str,
    (user, password): (&str, &str),
    env: &[(&str, String)],
) -> Result<Process> {
    let mut all = vec![
        ("NATS_URL", nats.url.clone()),
        ("NATS_USER", user.to_owned()),
        ("NATS_PASSWORD", password.to_owned()),
        ("TOLLGATE_BUS_PREFIX", prefix.to_owned()),
    ];
    all.extend_from_slice(env);
    Process::start(role, name, dir, &all)
}

/// A new key pair from `tollgate keygen`: (private, public).
fn keygen() -> Result<(String, String)> {
    let out = cli(&["keygen"], &[])?;
    anyhow::ensure!(out.status.success(), "keygen failed");
    let text = String::from_utf8(out.stdout)?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::to_owned)
            .with_context(|| format!("no {name} in {text}"))
    };
    Ok((field("private_key=")?, field("public_key=")?))
}

fn cli(args: &[&str], env: &[(&str, String)]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?)
}

#[tokio::test]
async fn the_roles_work_with_their_own_nats_credentials_service_tokens_and_signatures() -> Result<()>
{
    let prefix = tollgate_test_support::unique_name("roles");
    let nats = AuthorizingNats::start(&prefix).await?;
    let dir = tempfile::tempdir()?;
    let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    std::fs::write(
        dir.path().join("tollgate.toml"),
        "[[models]]\nname = \"mock\"\nprovider = \"mock\"\ninput_per_mtok = 1.0\n",
    )?;
    let (policy_private, policy_public) = keygen()?;
    let (status_private, status_public) = keygen()?;

    let admin = free_port()?;
    let admin_addr = ("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin}"));
    let _control_plane = start(
        ("control-plane", "control-plane"),
        dir.path(),
        &nats,
        &prefix,
        CONTROL_PLANE_USER,
        &[
            admin_addr.clone(),
            ("DATABASE_URL", sqlite("policy.db")),
            ("TOLLGATE_ADMIN_TOKEN", TOKEN.to_owned()),
            ("TOLLGATE_POLICY_SIGNING_KEY", policy_private),
            ("TOLLGATE_STATUS_PUBLIC_KEY", status_public),
            (
                "TOLLGATE_CONFIG",
                dir.path().join("tollgate.toml").display().to_string(),
            ),
        ],
    )?;
    let admin_env = [admin_addr];
    eventually_in(dir.path(), "the control plane answering", || async {
        cli(&["admin", "teams", "list"], &admin_env).is_ok_and(|o| o.status.success())
    })
    .await?;
    let json = |args: &[&str]| -> Result<Value> {
        let out = cli(&[&["admin", "--output", "json"], args].concat(), &admin_env)?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let service_token = |role: &str| -> Result<String> {
        let created = json(&["tokens", "create", "--name", role, "--role", role])?;
        Ok(created["secret"]
            .as_str()
            .context("no token secret")?
            .to_owned())
    };
    let (edge_token, aggregator_token) = (service_token("edge")?, service_token("aggregator")?);
    let key = json(&["keys", "create", "--alias", "over-authz"])?;
    let secret = key["secret"].as_str().context("no key secret")?.to_owned();
    let key_id = key["key"]["id"].as_str().context("no key id")?.to_owned();
    // Less than one request costs: the first request exhausts it.
    json(&[
        "budgets",
        "set",
        "--scope",
        "key",
        "--scope-id",
        &key_id,
        "--amount",
        "0.000001",
        "--period",
        "daily",
    ])?;

    let control_plane_url = format!("http://127.0.0.1:{admin}");
    let start_edge = |name: &str, port: u16| {
        start(
            ("edge", name),
            dir.path(),
            &nats,
            &prefix,
            EDGE_USER,
            &[
                ("TOLLGATE_EDGE_ADDR", format!("127.0.0.1:{port}")),
                ("TOLLGATE_CONTROL_PLANE_URL", control_plane_url.clone()),
                ("TOLLGATE_EDGE_TOKEN", edge_token.clone()),
                ("TOLLGATE_POLICY_PUBLIC_KEY", policy_public.clone()),
            ],
        )
    };
    let edge = free_port()?;
    let _edge = start_edge("edge", edge)?;
    let (usage, export) = (free_port()?, free_port()?);
    let _aggregator = start(
        ("aggregator", "aggregator"),
        dir.path(),
        &nats,
        &prefix,
        AGGREGATOR_USER,
        &[
            ("DATABASE_URL", sqlite("usage.db")),
            ("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{usage}")),
            ("TOLLGATE_USAGE_HTTP_ADDR", format!("127.0.0.1:{export}")),
            ("TOLLGATE_CONTROL_PLANE_URL", control_plane_url.clone()),
            ("TOLLGATE_EDGE_TOKEN", aggregator_token),
            ("TOLLGATE_ADMIN_TOKEN", TOKEN.to_owned()),
            ("TOLLGATE_POLICY_PUBLIC_KEY", policy_public.clone()),
            ("TOLLGATE_STATUS_SIGNING_KEY", status_private),
        ],
    )?;

    let http = reqwest::Client::new();
    let chat = |edge: u16| {
        http.post(format!("http://127.0.0.1:{edge}/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&serde_json::json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    eventually_in(dir.path(), "the edge serving the new key", || async {
        chat(edge).await.is_ok_and(|r| r.status() == 200)
    })
    .await?;
    let usage_env = [("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{usage}"))];
    eventually_in(dir.path(), "the usage reaching the ledger", || async {
        let today = chrono::Utc::now().date_naive();
        let (start, end) = (
            today.to_string(),
            today.succ_opt().unwrap_or(today).to_string(),
        );
        let out = cli(
            &[
                "usage", "--output", "json", "query", "--start", &start, "--end", &end,
            ],
            &usage_env,
        );
        let rows = out
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
        rows.is_some_and(|v| v["rows"].as_array().is_some_and(|rows| !rows.is_empty()))
    })
    .await?;

    // Only the aggregator's signed status says the budget is spent: an edge that starts now
    // has seen none of it, and refuses the key.
    let late = free_port()?;
    let _late_edge = start_edge("late-edge", late)?;
    eventually_in(
        dir.path(),
        "the late edge refusing the spent key",
        || async { chat(late).await.is_ok_and(|r| r.status() == 429) },
    )
    .await?;
    for port in [edge, late] {
        let metrics = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        for refused in [
            "tollgate_policy_refused 0",
            "tollgate_budget_status_refused 0",
        ] {
            assert!(metrics.contains(refused), "{metrics}");
        }
    }
    Ok(())
}
