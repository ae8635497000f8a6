//! Exercises the harness against real servers: the ephemeral ones directly, and the default
//! entry points (which follow `DATABASE_URL` / `NATS_URL` when set).

use anyhow::{Context, Result};
use async_nats::jetstream;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tollgate_test_support::{
    create_database, fresh_postgres_database, fresh_sqlite_database, nats_url,
    start_ephemeral_nats, start_ephemeral_postgres, unique_name,
};

/// Two databases from the same server must not see each other's tables.
async fn assert_isolated(a: &str, b: &str) -> Result<()> {
    assert_ne!(a, b);
    let mut conn_a = PgConnection::connect(a).await.context("connect a")?;
    let mut conn_b = PgConnection::connect(b).await.context("connect b")?;
    sqlx::query("CREATE TABLE only_in_a (id INT)")
        .execute(&mut conn_a)
        .await?;
    let in_a: bool = sqlx::query_scalar("SELECT to_regclass('only_in_a') IS NOT NULL")
        .fetch_one(&mut conn_a)
        .await?;
    let in_b: bool = sqlx::query_scalar("SELECT to_regclass('only_in_a') IS NOT NULL")
        .fetch_one(&mut conn_b)
        .await?;
    assert!(in_a && !in_b);
    conn_a.close().await?;
    conn_b.close().await?;
    Ok(())
}

/// Creates a stream, publishes to it and checks the message was stored.
async fn assert_jetstream_works(url: &str) -> Result<()> {
    let client = async_nats::connect(url).await.context("connect to NATS")?;
    let js = jetstream::new(client);
    let name = unique_name("harness");
    let mut stream = js
        .create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await?;
    js.publish(format!("{name}.hello"), "hi".into())
        .await?
        .await?;
    assert_eq!(stream.info().await?.state.messages, 1);
    js.delete_stream(&name).await?;
    Ok(())
}

#[tokio::test]
async fn ephemeral_postgres_gives_isolated_databases() -> Result<()> {
    let admin = start_ephemeral_postgres().await?;
    assert_eq!(
        admin,
        start_ephemeral_postgres().await?,
        "one server per process"
    );
    let (a, b) = (create_database(admin).await?, create_database(admin).await?);
    assert_isolated(&a, &b).await
}

#[tokio::test]
async fn ephemeral_nats_has_jetstream() -> Result<()> {
    let url = start_ephemeral_nats().await?;
    assert_eq!(url, start_ephemeral_nats().await?, "one server per process");
    assert_jetstream_works(url).await
}

#[tokio::test]
async fn default_postgres_gives_isolated_databases() -> Result<()> {
    let (a, b) = (
        fresh_postgres_database().await?,
        fresh_postgres_database().await?,
    );
    assert_isolated(&a, &b).await
}

#[tokio::test]
async fn default_nats_has_jetstream() -> Result<()> {
    assert_jetstream_works(&nats_url().await?).await
}

/// Each test has its own runtime on its own (short-lived) thread: the servers must be shared
/// across runtimes and must survive the thread and runtime that started them.
#[test]
fn servers_outlive_the_thread_and_runtime_that_started_them() -> Result<()> {
    let run = |f: fn() -> Result<()>| -> Result<()> {
        std::thread::spawn(f)
            .join()
            .map_err(|_| anyhow::anyhow!("thread panicked"))?
    };
    fn in_runtime() -> Result<()> {
        tokio::runtime::Runtime::new()?.block_on(async {
            let (a, b) = tokio::join!(
                create_database(start_ephemeral_postgres().await?),
                create_database(start_ephemeral_postgres().await?),
            );
            assert_isolated(&a?, &b?).await?;
            assert_jetstream_works(start_ephemeral_nats().await?).await
        })
    }
    run(in_runtime)?;
    // Give a wrongly-delivered parent-death signal time to take effect before checking again.
    std::thread::sleep(std::time::Duration::from_millis(500));
    run(in_runtime)
}

#[tokio::test]
async fn sqlite_database_is_writable() -> Result<()> {
    let (dir, url) = fresh_sqlite_database()?;
    assert!(url.ends_with("?mode=rwc"), "{url}");
    let mut conn = SqliteConnection::connect(&url).await?;
    sqlx::query("CREATE TABLE t (id INTEGER)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(count, 1);
    conn.close().await?;
    assert!(dir.path().join("test.db").is_file());
    Ok(())
}
