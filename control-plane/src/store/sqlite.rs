//! The event store on SQLite, for the single-process `tollgate up`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tollgate_policy::{PolicyState, RecordedEvent, SCHEMA_VERSION, encode_payload};

use super::{
    EventRow, EventStore, NewEvent, PendingAppend, SqlPending, StoreError, check_version,
    conflict_on_unique, decode_snapshot, sequence_conflict, snapshot_json,
};

/// The policy log in a SQLite file.
#[derive(Clone)]
pub struct SqliteEventStore {
    pool: SqlitePool,
}

impl SqliteEventStore {
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
        Ok(SqliteEventStore { pool })
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn begin_append(
        &self,
        expected_sequence: Option<u64>,
        events: Vec<NewEvent>,
    ) -> Result<Box<dyn PendingAppend>, StoreError> {
        // IMMEDIATE takes the database's write lock up front: appends are serialized, so
        // sequence n+1 can never become visible before n.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let last: i64 = sqlx::query_scalar("SELECT last FROM policy_sequence")
            .fetch_one(&mut *tx)
            .await?;
        let last = last as u64;
        if let Some(expected) = expected_sequence.filter(|e| *e != last) {
            return Err(sequence_conflict(expected, last));
        }
        let mut recorded = Vec::with_capacity(events.len());
        for (i, new) in events.into_iter().enumerate() {
            let current: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(version), 0) FROM policy_events WHERE aggregate_id = ?1",
            )
            .bind(&new.aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
            check_version(&new, current as u64)?;
            let sequence = last + 1 + i as u64;
            sqlx::query(
                "INSERT INTO policy_events (sequence, id, aggregate_id, version, event_type, \
                 schema_version, actor, occurred_at, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(sequence as i64)
            .bind(new.id.to_string())
            .bind(&new.aggregate_id)
            .bind(new.version as i64)
            .bind(new.event.type_name())
            .bind(SCHEMA_VERSION as i32)
            .bind(&new.actor)
            .bind(new.occurred_at)
            .bind(encode_payload(&new.event))
            .execute(&mut *tx)
            .await
            .map_err(conflict_on_unique)?;
            recorded.push(new.recorded(sequence));
        }
        sqlx::query("UPDATE policy_sequence SET last = ?1")
            .bind((last + recorded.len() as u64) as i64)
            .execute(&mut *tx)
            .await?;
        Ok(Box::new(SqlPending { tx, recorded }))
    }

    async fn read_after(&self, after: u64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT sequence, id, aggregate_id, version, actor, occurred_at, schema_version, \
             payload FROM policy_events WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
        )
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT last FROM policy_sequence")
            .fetch_one(&self.pool)
            .await?;
        Ok(last as u64)
    }

    async fn save_snapshot(&self, state: &PolicyState) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO policy_snapshots (sequence, schema_version, state, taken_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (sequence) DO NOTHING",
        )
        .bind(state.sequence as i64)
        .bind(SCHEMA_VERSION as i32)
        .bind(snapshot_json(state)?)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_snapshot(&self) -> Result<Option<PolicyState>, StoreError> {
        let row: Option<(i64, i32, String)> = sqlx::query_as(
            "SELECT sequence, schema_version, state FROM policy_snapshots \
             ORDER BY sequence DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(seq, schema, json)| decode_snapshot(seq, schema, &json)))
    }
}
