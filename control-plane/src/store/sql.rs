//! The event store's SQL, written once for both backends.
//!
//! PostgreSQL and SQLite run the same statements: both take `$n` parameters, and the schemas
//! have the same tables and columns. What differs is in a [`Dialect`]: how an append takes the
//! log's write lock, and whether ids and payloads are typed columns (`uuid`, `jsonb`) that must
//! be cast to and from text.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    AssertSqlSafe, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, SqlSafeStr,
    SqlStr, Type,
};
use tollgate_policy::{PolicyState, RecordedEvent, SCHEMA_VERSION, encode_payload};

use super::{
    EventRow, EventStore, NewEvent, PendingAppend, SqlPending, StoreError, check_version,
    conflict_on_unique, decode_snapshot, sequence_conflict, snapshot_json,
};

/// What one backend's SQL does its own way.
pub(super) struct Dialect {
    /// Opens an append's transaction.
    pub begin: &'static str,
    /// Follows the read of `policy_sequence` in an append ("" where `begin` holds the lock).
    pub lock_sequence: &'static str,
    /// Whether ids, payloads and snapshots are `uuid`/`jsonb` columns, read and written as text.
    pub typed_columns: bool,
}

impl Dialect {
    /// A row lock on `policy_sequence`: the next append's read of it waits.
    pub const POSTGRES: Dialect = Dialect {
        begin: "BEGIN",
        lock_sequence: "FOR UPDATE",
        typed_columns: true,
    };

    /// `BEGIN IMMEDIATE` takes the database's write lock up front: no row lock is needed.
    pub const SQLITE: Dialect = Dialect {
        begin: "BEGIN IMMEDIATE",
        lock_sequence: "",
        typed_columns: false,
    };
}

/// The statements, built once from a dialect.
struct Statements {
    last_locked: SqlStr,
    insert_event: SqlStr,
    read_after: SqlStr,
    save_snapshot: SqlStr,
    latest_snapshot: SqlStr,
}

impl Statements {
    fn new(dialect: &Dialect) -> Self {
        let (uuid, json, text) = match dialect.typed_columns {
            true => ("::uuid", "::jsonb", "::text"),
            false => ("", "", ""),
        };
        // Only the casts and the lock clause above are spliced in: no value ever is.
        let sql = |s: String| AssertSqlSafe(Arc::<str>::from(s)).into_sql_str();
        Statements {
            last_locked: sql(format!(
                "SELECT last FROM policy_sequence {}",
                dialect.lock_sequence
            )),
            insert_event: sql(format!(
                "INSERT INTO policy_events (sequence, id, aggregate_id, version, event_type, \
                 schema_version, actor, occurred_at, payload) \
                 VALUES ($1, $2{uuid}, $3, $4, $5, $6, $7, $8, $9{json})"
            )),
            read_after: sql(format!(
                "SELECT sequence, id{text} AS id, aggregate_id, version, actor, occurred_at, \
                 schema_version, payload{text} AS payload FROM policy_events \
                 WHERE sequence > $1 ORDER BY sequence LIMIT $2"
            )),
            save_snapshot: sql(format!(
                "INSERT INTO policy_snapshots (sequence, schema_version, state, taken_at) \
                 VALUES ($1, $2, $3{json}, $4) ON CONFLICT (sequence) DO NOTHING"
            )),
            latest_snapshot: sql(format!(
                "SELECT sequence, schema_version, state{text} AS state FROM policy_snapshots \
                 ORDER BY sequence DESC LIMIT 1"
            )),
        }
    }
}

/// The policy log in a SQL database (see [`super::PgEventStore`], [`super::SqliteEventStore`]).
pub struct SqlEventStore<DB: Database> {
    pool: Pool<DB>,
    begin: &'static str,
    sql: Statements,
}

impl<DB: Database> SqlEventStore<DB> {
    /// A store on a pool that is already migrated.
    pub(super) fn new(pool: Pool<DB>, dialect: &Dialect) -> Self {
        SqlEventStore {
            pool,
            begin: dialect.begin,
            sql: Statements::new(dialect),
        }
    }
}

#[async_trait]
impl<DB> EventStore for SqlEventStore<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'static str: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'r> EventRow: FromRow<'r, DB::Row>,
    for<'r> (i64, i32, String): FromRow<'r, DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    async fn begin_append(
        &self,
        expected_sequence: Option<u64>,
        events: Vec<NewEvent>,
    ) -> Result<Box<dyn PendingAppend>, StoreError> {
        // The dialect's lock serializes appends: the next append waits until this one commits
        // or rolls back, so sequence n+1 can never become visible before n.
        let mut tx = self.pool.begin_with(self.begin).await?;
        let last: i64 = sqlx::query_scalar(self.sql.last_locked.clone())
            .fetch_one(&mut *tx)
            .await?;
        let last = last as u64;
        if let Some(expected) = expected_sequence.filter(|e| *e != last) {
            return Err(sequence_conflict(expected, last));
        }
        let mut recorded = Vec::with_capacity(events.len());
        for (i, new) in events.into_iter().enumerate() {
            let current: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(version), 0) FROM policy_events WHERE aggregate_id = $1",
            )
            .bind(new.aggregate_id.clone())
            .fetch_one(&mut *tx)
            .await?;
            // The transaction sees its own inserts, so `current` counts this batch's events too.
            check_version(&new, current as u64)?;
            let sequence = last + 1 + i as u64;
            sqlx::query(self.sql.insert_event.clone())
                .bind(sequence as i64)
                .bind(new.id.to_string())
                .bind(new.aggregate_id.clone())
                .bind(new.version as i64)
                .bind(new.event.type_name())
                .bind(SCHEMA_VERSION as i32)
                .bind(new.actor.clone())
                .bind(new.occurred_at)
                .bind(encode_payload(&new.event))
                .execute(&mut *tx)
                .await
                .map_err(conflict_on_unique)?;
            recorded.push(new.recorded(sequence));
        }
        sqlx::query("UPDATE policy_sequence SET last = $1")
            .bind((last + recorded.len() as u64) as i64)
            .execute(&mut *tx)
            .await?;
        Ok(Box::new(SqlPending { tx, recorded }))
    }

    async fn read_after(&self, after: u64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(self.sql.read_after.clone())
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
        sqlx::query(self.sql.save_snapshot.clone())
            .bind(state.sequence as i64)
            .bind(SCHEMA_VERSION as i32)
            .bind(snapshot_json(state)?)
            .bind(Utc::now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn latest_snapshot(&self) -> Result<Option<PolicyState>, StoreError> {
        let row: Option<(i64, i32, String)> = sqlx::query_as(self.sql.latest_snapshot.clone())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|(seq, schema, json)| decode_snapshot(seq, schema, &json)))
    }
}
