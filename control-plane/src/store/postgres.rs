//! The event store on PostgreSQL.

use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::PgPoolOptions;

use super::StoreError;
use super::sql::{Dialect, SqlEventStore};

/// The policy log in a PostgreSQL database.
pub type PgEventStore = SqlEventStore<Postgres>;

impl SqlEventStore<Postgres> {
    /// Connects (5 s timeout) and applies the embedded migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(SqlEventStore::new(pool, &Dialect::POSTGRES))
    }
}
