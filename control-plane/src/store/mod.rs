//! The event store: the policy log, append-only, with a global gap-free sequence, optimistic
//! concurrency per aggregate, and snapshots of the fold.
//!
//! One SQL implementation (`sql`) serves PostgreSQL (distributed mode) and SQLite (`tollgate up`);
//! both pass the same tests (`control-plane/tests/event_store.rs`).

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tollgate_policy::{PolicyEvent, PolicyState, RecordedEvent, SCHEMA_VERSION, decode_payload};
use uuid::Uuid;

pub use postgres::PgEventStore;
pub use sql::SqlEventStore;
pub use sqlite::SqliteEventStore;

/// An event to append, with the aggregate version it must get.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub id: Uuid,
    pub aggregate_id: String,
    /// Must be exactly one more than the aggregate's last version, or the append conflicts.
    pub version: u64,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    pub event: PolicyEvent,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else appended first; re-read and decide again.
    #[error("conflicting concurrent change: {0}")]
    Conflict(String),
    #[error("event store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("stored event {sequence} is unreadable: {reason}")]
    Corrupt { sequence: u64, reason: String },
    #[error("unsupported DATABASE_URL {0:?}: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    #[error("event store migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// An append that holds its place in the log but is not committed yet. Every later append
/// waits for it, which is what keeps the sequence gap-free for readers.
#[async_trait]
pub trait PendingAppend: Send {
    /// Commits the append and returns the events as recorded.
    async fn commit(self: Box<Self>) -> Result<Vec<RecordedEvent>, StoreError>;
}

/// An append open on a SQL database: its transaction, and the events as they will be recorded.
struct SqlPending<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    recorded: Vec<RecordedEvent>,
}

#[async_trait]
impl<DB: sqlx::Database> PendingAppend for SqlPending<DB> {
    async fn commit(self: Box<Self>) -> Result<Vec<RecordedEvent>, StoreError> {
        self.tx.commit().await.map_err(conflict_on_unique)?;
        Ok(self.recorded)
    }
}

/// The policy event log.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Starts an append: takes the log's write lock, checks `expected_sequence` (when given,
    /// the log's last sequence must equal it) and each event's aggregate version, and writes the
    /// events uncommitted. Dropping the result without committing rolls it back.
    async fn begin_append(
        &self,
        expected_sequence: Option<u64>,
        events: Vec<NewEvent>,
    ) -> Result<Box<dyn PendingAppend>, StoreError>;

    /// Appends `events` atomically; see [`EventStore::begin_append`].
    async fn append(
        &self,
        expected_sequence: Option<u64>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.begin_append(expected_sequence, events)
            .await?
            .commit()
            .await
    }

    /// Committed events with a sequence greater than `after`, oldest first, at most `limit`.
    async fn read_after(&self, after: u64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The sequence of the last committed event; 0 for an empty log.
    async fn last_sequence(&self) -> Result<u64, StoreError>;

    /// Stores `state` as the snapshot at its sequence (idempotent).
    async fn save_snapshot(&self, state: &PolicyState) -> Result<(), StoreError>;

    /// The most recent snapshot this build can read, if any.
    async fn latest_snapshot(&self) -> Result<Option<PolicyState>, StoreError>;
}

/// Opens the store named by `database_url` (`postgres://…` or `sqlite://…`) and migrates it.
pub async fn connect(database_url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PgEventStore::connect(database_url).await?))
    } else if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteEventStore::connect(database_url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(tollgate_policy::redact::url(
            database_url,
        )))
    }
}

/// Folds the whole log on top of the latest snapshot.
pub async fn load_state(store: &dyn EventStore) -> Result<PolicyState, StoreError> {
    let mut state = store.latest_snapshot().await?.unwrap_or_default();
    catch_up(store, &mut state).await?;
    Ok(state)
}

/// Applies every committed event after `state.sequence`.
pub async fn catch_up(store: &dyn EventStore, state: &mut PolicyState) -> Result<(), StoreError> {
    loop {
        let events = store.read_after(state.sequence, READ_BATCH).await?;
        if events.is_empty() {
            return Ok(());
        }
        for event in &events {
            state.apply(event);
        }
    }
}

/// How many events one read returns when catching up.
pub const READ_BATCH: u32 = 1000;

/// A row of `policy_events` as both backends return it.
#[derive(sqlx::FromRow)]
struct EventRow {
    sequence: i64,
    id: String,
    aggregate_id: String,
    version: i64,
    actor: String,
    occurred_at: DateTime<Utc>,
    schema_version: i32,
    payload: String,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let sequence = row.sequence as u64;
        let corrupt = |reason: String| StoreError::Corrupt { sequence, reason };
        let schema = u32::try_from(row.schema_version).map_err(|e| corrupt(e.to_string()))?;
        Ok(RecordedEvent {
            sequence,
            id: Uuid::parse_str(&row.id).map_err(|e| corrupt(e.to_string()))?,
            aggregate_id: row.aggregate_id,
            version: row.version as u64,
            actor: row.actor,
            occurred_at: row.occurred_at,
            event: decode_payload(schema, &row.payload).map_err(|e| corrupt(e.to_string()))?,
        })
    }
}

impl NewEvent {
    fn recorded(self, sequence: u64) -> RecordedEvent {
        RecordedEvent {
            sequence,
            id: self.id,
            aggregate_id: self.aggregate_id,
            version: self.version,
            actor: self.actor,
            occurred_at: self.occurred_at,
            event: self.event,
        }
    }
}

/// Refuses an event whose version does not directly follow the aggregate's `current` one.
fn check_version(new: &NewEvent, current: u64) -> Result<(), StoreError> {
    if new.version != current + 1 {
        return Err(StoreError::Conflict(format!(
            "{} is at version {current}, append expected {}",
            new.aggregate_id,
            new.version.saturating_sub(1)
        )));
    }
    Ok(())
}

fn sequence_conflict(expected: u64, actual: u64) -> StoreError {
    StoreError::Conflict(format!(
        "the log is at sequence {actual}, append expected {expected}"
    ))
}

/// Maps a unique-constraint violation (a racing writer won) to a conflict.
fn conflict_on_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Unavailable(e),
    }
}

fn snapshot_json(state: &PolicyState) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| StoreError::Corrupt {
        sequence: state.sequence,
        reason: e.to_string(),
    })
}

fn decode_snapshot(sequence: i64, schema: i32, json: &str) -> Option<PolicyState> {
    // An unreadable or newer snapshot is only a lost shortcut: the full log still folds.
    if schema != SCHEMA_VERSION as i32 {
        tracing::warn!(
            sequence,
            schema,
            "ignoring snapshot of another schema version"
        );
        return None;
    }
    serde_json::from_str(json)
        .inspect_err(|e| tracing::warn!(sequence, error = %e, "ignoring unreadable snapshot"))
        .ok()
}
