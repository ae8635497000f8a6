//! The event store on SQLite, for the single-process `tollgate up`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::StoreError;
use super::sql::{Dialect, SqlEventStore};

/// The policy log in a SQLite file.
pub type SqliteEventStore = SqlEventStore<Sqlite>;

impl SqlEventStore<Sqlite> {
    /// Opens (creating if missing) the database file and applies the embedded migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers proceed while an append is open; the busy timeout makes a second
            // writer wait for the first instead of failing at once.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqlEventStore::new(pool, &Dialect::SQLITE))
    }
}
