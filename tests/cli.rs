//! `tollgate admin …` run as a person or a script would: the real binary against a control
//! plane on PostgreSQL and NATS JetStream, with results read back as JSON and as tables, and
//! failures checked for one readable line and a non-zero exit.

mod common;

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::words;
use serde_json::Value;
use tollgate_test_support::edge::{ADMIN_TOKEN, TestControlPlane, jetstream};

/// A control plane and a data directory for the CLI (so no stray admin-token file is read).
struct World {
    cp: TestControlPlane,
    data_dir: tempfile::TempDir,
}

async fn world() -> Result<World> {
    let (_, _, bus) = jetstream().await?;
    Ok(World {
        cp: TestControlPlane::on_bus(bus).await?,
        data_dir: tempfile::tempdir()?,
    })
}

impl World {
    /// Runs `tollgate admin --addr <cp> [--token <token>] <args…>`.
    async fn admin(&self, token: Option<&str>, args: &[&str]) -> Result<Output> {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .arg("admin")
            .arg("--addr")
            .arg(self.cp.addr.to_string());
        if let Some(token) = token {
            command.arg("--token").arg(token);
        }
        command
            .args(args)
            .env_remove("TOLLGATE_ADMIN_TOKEN")
            .env_remove("TOLLGATE_ADMIN_ADDR")
            .env_remove("RUST_BACKTRACE")
            .env("TOLLGATE_DATA_DIR", self.data_dir.path())
            .kill_on_drop(true);
        Ok(
            tokio::time::timeout(Duration::from_secs(60), command.output())
                .await
                .context("the CLI did not finish")??,
        )
    }

    /// The JSON a successful `tollgate admin --output json <args…>` prints.
    async fn json(&self, args: &[&str]) -> Result<Value> {
        let output = self
            .admin(Some(ADMIN_TOKEN), &[&["--output", "json"], args].concat())
            .await?;
        ensure!(
            output.status.success(),
            "tollgate admin {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "tollgate admin {args:?} printed no JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// What a successful `tollgate admin <args…>` prints in table mode.
    async fn table(&self, args: &[&str]) -> Result<String> {
        let output = self.admin(Some(ADMIN_TOKEN), args).await?;
        ensure!(
            output.status.success(),
            "tollgate admin {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }

    /// The stderr of a `tollgate admin <args…>` that must fail.
    async fn failure(&self, token: Option<&str>, args: &[&str]) -> Result<String> {
        let output = self.admin(token, args).await?;
        if output.status.success() {
            bail!(
                "tollgate admin {args:?} succeeded: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        Ok(String::from_utf8(output.stderr)?)
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> Result<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .with_context(|| format!("no {pointer} in {value}"))
}

fn list<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>> {
    value[field]
        .as_array()
        .with_context(|| format!("no list {field} in {value}"))
}

#[tokio::test]
async fn creates_policy_and_lists_it_back_as_json() -> Result<()> {
    let w = world().await?;

    let team = w
        .json(&words("teams create --name ml --meta cost_center=42"))
        .await?;
    let team_id = text(&team, "/id")?.to_owned();
    assert_eq!(text(&team, "/name")?, "ml");
    assert_eq!(text(&team, "/metadata/cost_center")?, "42");

    let user = w
        .json(&words(&format!(
            "users create --email ada@example.com --team {team_id} --role finance"
        )))
        .await?;
    let user_id = text(&user, "/id")?.to_owned();
    assert_eq!(text(&user, "/team_id")?, team_id);
    assert_eq!(text(&user, "/role")?, "finance");

    let created = w
        .json(&words(&format!(
            "keys create --alias notebook --team {team_id} --user {user_id} \
             --model gpt-4o --model mock --expires 2099-01-01 --tag dev"
        )))
        .await?;
    assert!(text(&created, "/secret")?.starts_with("tg-"), "{created}");
    let key_id = text(&created, "/key/id")?.to_owned();
    assert_eq!(
        created["key"]["models"],
        serde_json::json!(["gpt-4o", "mock"])
    );
    assert_eq!(text(&created, "/key/expires_at")?, "2099-01-01T00:00:00Z");

    let price = w
        .json(&[
            "prices", "set", "--model", "gpt-4o", "--input", "2.5", "--output", "10",
        ])
        .await?;
    assert_eq!(price["input_per_mtok"], 2.5);
    assert_eq!(price["output_per_mtok"], 10.0);

    let budget = w
        .json(&words(&format!(
            "budgets set --scope team --scope-id {team_id} --amount 100 --period monthly \
             --threshold 50 --threshold 90"
        )))
        .await?;
    let budget_id = text(&budget, "/id")?.to_owned();
    assert_eq!(budget["thresholds"], serde_json::json!([50.0, 90.0]));

    let limit = w
        .json(&words(&format!(
            "rate-limits set --scope team --scope-id {team_id} --rpm 600 --model gpt-4o \
             --schedule from=20:00,to=06:00,tz=Europe/Berlin,days=mon+fri,rpm=6000"
        )))
        .await?;
    assert_eq!(limit["model"], "gpt-4o");
    assert_eq!(
        limit["schedules"],
        serde_json::json!([{"time_start": "20:00", "time_end": "06:00",
            "timezone": "Europe/Berlin", "weekdays": ["mon", "fri"], "rpm": 6000,
            "tpm": 0, "max_concurrent": 0}])
    );
    let refused = w
        .failure(
            None,
            &words(&format!(
                "rate-limits set --scope team --scope-id {team_id} --rpm 1 \
                 --schedule from=20:00,rpm=6000"
            )),
        )
        .await?;
    assert!(refused.contains("from=HH:MM and to=HH:MM"), "{refused}");

    let guardrail = w
        .json(&[
            "guardrails",
            "set",
            "--name",
            "no cards",
            "--kind",
            "pii",
            "--mode",
            "pre_call",
            "--team",
            &team_id,
            "--config",
            r#"{"entities": ["credit_card"], "action": "block"}"#,
        ])
        .await?;
    assert_eq!(guardrail["team_ids"][0], team_id.as_str());
    let refused = w
        .failure(
            Some(ADMIN_TOKEN),
            &[
                "guardrails",
                "set",
                "--name",
                "x",
                "--kind",
                "pii",
                "--mode",
                "pre_call",
                "--config",
                r#"{"action": "shout"}"#,
            ],
        )
        .await?;
    assert!(refused.contains("shout"), "{refused}");
    let cached = w
        .json(&words(
            "cache-policies set --model gpt-4o --ttl-seconds 600",
        ))
        .await?;
    assert_eq!(cached["scope"], "team");
    let policies = w.json(&["cache-policies", "list"]).await?;
    assert_eq!(list(&policies, "policies")?.len(), 1);

    let teams = w.json(&["teams", "list"]).await?;
    assert!(
        list(&teams, "teams")?
            .iter()
            .any(|t| t["id"] == team_id.as_str())
    );
    let users = w.json(&["users", "list", "--team", &team_id]).await?;
    assert_eq!(list(&users, "users")?.len(), 1);
    let keys = w.json(&["keys", "list", "--team", &team_id]).await?;
    let keys = list(&keys, "keys")?;
    assert!(
        keys.iter()
            .any(|k| k["id"] == key_id.as_str() && k["alias"] == "notebook")
    );
    assert!(
        keys.iter().all(|k| k.get("secret").is_none()),
        "a listed key must not carry its secret"
    );
    let prices = w.json(&["prices", "list"]).await?;
    assert!(
        list(&prices, "prices")?
            .iter()
            .any(|p| p["model"] == "gpt-4o")
    );
    let budgets = w
        .json(&["budgets", "list", "--scope", "team", "--scope-id", &team_id])
        .await?;
    assert!(
        list(&budgets, "budgets")?
            .iter()
            .any(|b| b["id"] == budget_id.as_str())
    );

    let events = w.json(&["events"]).await?;
    let events = list(&events, "events")?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for expected in [
        "team.created",
        "user.created",
        "key.created",
        "price.set",
        "budget.set",
    ] {
        assert!(types.contains(&expected), "{expected} not in {types:?}");
    }
    assert!(
        events.iter().all(|e| e["actor"] == "bootstrap"),
        "{events:?}"
    );
    let after = w.json(&["events", "--after", "3", "--limit", "1"]).await?;
    assert_eq!(list(&after, "events")?.len(), 1);
    assert_eq!(after["events"][0]["sequence"], 4);
    Ok(())
}

#[tokio::test]
async fn table_output_is_aligned_and_shows_secrets_once() -> Result<()> {
    let w = world().await?;

    let created = w
        .table(&["teams", "create", "--name", "ml-platform"])
        .await?;
    assert!(created.contains("name:     ml-platform"), "{created}");
    w.table(&["teams", "create", "--name", "ops"]).await?;
    let teams = w.table(&["teams", "list"]).await?;
    let lines: Vec<&str> = teams.lines().collect();
    assert_eq!(lines.len(), 3, "{teams}");
    assert!(
        lines[0].starts_with("id ") && lines[0].contains("  name"),
        "{teams}"
    );
    // Aligned: the name column starts at the same place on every line.
    let column = lines[0].find("name").context("name column")?;
    assert!(lines[1..].iter().all(|l| {
        let name = &l[column..];
        name.starts_with("ml-platform") || name.starts_with("ops")
    }));

    let key = w.table(&["keys", "create", "--alias", "nb"]).await?;
    let secret = key
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .with_context(|| format!("no secret line in {key}"))?;
    assert!(secret.starts_with("tg-"), "{key}");
    assert!(key.contains("shown only this once"), "{key}");

    let token = w
        .table(&["tokens", "create", "--name", "grafana", "--role", "viewer"])
        .await?;
    assert!(token.contains("secret: tga-"), "{token}");

    // The price command's own --output is the price; --format chooses the format there.
    let price = w
        .table(&[
            "prices", "set", "--model", "m", "--input", "1", "--output", "3.5",
        ])
        .await?;
    let output_price = price
        .lines()
        .find_map(|l| l.strip_prefix("output_per_mtok:"))
        .with_context(|| format!("no output price in {price}"))?;
    assert_eq!(output_price.trim(), "3.5", "{price}");

    let events = w.table(&["events"]).await?;
    let header = events
        .lines()
        .find(|l| l.starts_with("sequence"))
        .context("header")?;
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        ["sequence", "type", "actor", "occurred_at", "aggregate_id"]
    );
    assert!(
        events.contains("team.created") && events.contains("bootstrap"),
        "{events}"
    );

    let empty = w.table(&["guardrails", "list"]).await?;
    assert_eq!(empty, "(no guardrails)\n");
    Ok(())
}

#[tokio::test]
async fn failures_are_one_readable_line_and_exit_non_zero() -> Result<()> {
    let w = world().await?;

    let wrong = w.failure(Some("not-the-token"), &["teams", "list"]).await?;
    assert!(
        wrong.contains("not authorised") && wrong.contains("UNAUTHENTICATED"),
        "{wrong}"
    );
    let missing = w.failure(None, &["teams", "list"]).await?;
    assert!(
        missing.contains("no token given") && missing.contains("--token"),
        "{missing}"
    );

    let invalid = w
        .failure(
            Some(ADMIN_TOKEN),
            &words("budgets set --scope team --scope-id t --amount 5 --period yearly"),
        )
        .await?;
    assert!(
        invalid.contains("setting the budget: period:")
            && invalid.contains("yearly")
            && invalid.contains("(INVALID_ARGUMENT)"),
        "{invalid}"
    );
    assert_eq!(invalid.trim().lines().count(), 1, "{invalid}");

    let missing_team = w
        .failure(Some(ADMIN_TOKEN), &["teams", "delete", "no-such-team"])
        .await?;
    assert!(missing_team.contains("NOT_FOUND"), "{missing_team}");

    // Nothing listens on the port of a listener just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "admin",
            "--addr",
            &closed.to_string(),
            "--token",
            "x",
            "teams",
            "list",
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .await?;
    let unreachable = String::from_utf8(output.stderr)?;
    assert!(!output.status.success());
    assert!(
        unreachable.contains(&format!("cannot reach the admin API at {closed}")),
        "{unreachable}"
    );
    Ok(())
}

#[tokio::test]
async fn the_token_is_read_from_the_data_directory() -> Result<()> {
    let w = world().await?;
    std::fs::write(
        w.data_dir.path().join("admin-token"),
        format!("{ADMIN_TOKEN}\n"),
    )?;
    let output = w
        .admin(None, &["--output", "json", "teams", "list"])
        .await?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let teams: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(teams["teams"], serde_json::json!([]));
    Ok(())
}
