//! The ECS stacks give the roles `DATABASE_URL=postgres://` and the libpq variables (`PGHOST`,
//! `PGPORT`, `PGDATABASE`, and `PGUSER` / `PGPASSWORD` from the database's generated secret), so
//! that no password is ever part of a URL: the control plane and the aggregator connect, migrate
//! and serve that way.

mod common;

use std::process::Command;

use anyhow::{Context, Result};
use common::{Process, eventually_in, free_port};

/// `url` as the ECS task definitions spell it: an empty URL and the libpq variables.
fn libpq(url: &str) -> Result<Vec<(&'static str, String)>> {
    let url = reqwest::Url::parse(url)?;
    Ok(vec![
        ("DATABASE_URL", "postgres://".to_owned()),
        ("PGHOST", url.host_str().context("a host")?.to_owned()),
        ("PGPORT", url.port().unwrap_or(5432).to_string()),
        ("PGUSER", url.username().to_owned()),
        ("PGPASSWORD", url.password().unwrap_or_default().to_owned()),
        ("PGDATABASE", url.path().trim_start_matches('/').to_owned()),
    ])
}

fn healthy(role: &str, address: &(&str, String)) -> bool {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["health", role])
        .env_remove("TOLLGATE_TLS_CERT")
        .env(address.0, &address.1)
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn migrations(url: &str) -> Result<i64> {
    let pool = sqlx::PgPool::connect(url).await?;
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await?;
    Ok(applied)
}

#[tokio::test]
async fn the_roles_connect_with_libpq_variables_and_no_url() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let policy_db = tollgate_test_support::fresh_postgres_database().await?;
    let ledger_db = tollgate_test_support::fresh_postgres_database().await?;
    let bus = [
        ("NATS_URL", tollgate_test_support::nats_url().await?),
        (
            "TOLLGATE_BUS_PREFIX",
            tollgate_test_support::unique_name("libpq"),
        ),
        ("TOLLGATE_ADMIN_TOKEN", "libpq-test-token".to_owned()),
    ];

    let admin = ("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()?));
    let mut env = libpq(&policy_db)?;
    env.extend(bus.iter().cloned());
    env.push(admin.clone());
    let _control_plane = Process::start("control-plane", "control-plane", dir.path(), &env)?;
    eventually_in(dir.path(), "a healthy control plane", || async {
        healthy("control-plane", &admin)
    })
    .await?;

    let usage = ("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{}", free_port()?));
    let mut env = libpq(&ledger_db)?;
    env.extend(bus.iter().cloned());
    env.push(usage.clone());
    env.push((
        "TOLLGATE_USAGE_HTTP_ADDR",
        format!("127.0.0.1:{}", free_port()?),
    ));
    let _aggregator = Process::start("aggregator", "aggregator", dir.path(), &env)?;
    eventually_in(dir.path(), "a healthy aggregator", || async {
        healthy("aggregator", &usage)
    })
    .await?;

    // Each role migrated the database the variables named, not another one.
    assert!(migrations(&policy_db).await? > 0, "the policy log");
    assert!(migrations(&ledger_db).await? > 0, "the usage ledger");
    Ok(())
}
