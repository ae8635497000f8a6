//! The usage ledger on PostgreSQL or SQLite (one SQL dialect both run, through sqlx's `Any`
//! driver): idempotent on request id, with hourly and daily rollups, budget spend and the
//! alert outbox written in the same transaction as the events they come from.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool};
use sqlx::{AssertSqlSafe, Executor};

use crate::entry::{Entry, RollupKey, RollupSums};

/// Why the ledger failed; every case is worth a retry (the batch is not acknowledged).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("usage ledger unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("usage ledger migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl LedgerError {
    /// Whether the database refused the data itself (a value out of range, a byte it cannot
    /// store, a constraint), so that writing the same rows again can never succeed. Everything
    /// else (connections, deadlocks, a full disk, …) may pass and is worth retrying.
    pub fn is_about_the_data(&self) -> bool {
        let LedgerError::Database(sqlx::Error::Database(error)) = self else {
            return false;
        };
        use sqlx::error::ErrorKind;
        let code = error.code();
        let data_class = if error
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation).
            code.is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
        } else {
            // SQLite's primary result codes TOOBIG, CONSTRAINT and MISMATCH (the low byte of
            // an extended code).
            code.and_then(|code| code.parse::<u32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 18..=20))
        };
        data_class
            || matches!(
                error.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
            )
    }
}

/// Spend to add to a budget's period, by the edge that served it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpendKey {
    pub budget_id: String,
    pub period_start_ms: i64,
    pub edge_id: String,
}

/// An alert to store, once, for each sink.
#[derive(Clone, Debug)]
pub struct NewAlert {
    pub budget_id: String,
    pub period_start_ms: i64,
    pub threshold_pct: f64,
    pub payload: String,
}

/// An alert waiting for delivery to one sink.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PendingAlert {
    pub budget_id: String,
    pub period_start_ms: i64,
    pub threshold_pct: f64,
    pub sink: String,
    pub payload: String,
    pub attempts: i32,
}

/// What a batch changed.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Entries that were new (not duplicates of recorded requests).
    pub inserted: usize,
}

/// The ledger's database.
#[derive(Clone)]
pub struct Ledger {
    pool: AnyPool,
}

/// Rows per multi-row INSERT ([`LEDGER_COLUMNS`] each, within both databases' parameter limits).
const INSERT_CHUNK: usize = 200;
/// Columns of a ledger row.
const LEDGER_COLUMNS: usize = 21;

impl Ledger {
    /// Connects to `postgres://…` or `sqlite://…` and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        // Readers (queries, exports) proceed during a batch; writers wait.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Ledger { pool })
    }

    /// Records `entries` not seen before and what derives from them: rollups, the spend that
    /// `spend_of` assigns to budgets, and the alerts `alerts_for` decides from the spend totals
    /// before and after. All or nothing.
    pub async fn record(
        &self,
        entries: &[Entry],
        spend_of: impl Fn(&Entry) -> Vec<SpendKey>,
        alerts_for: impl Fn(&SpendKey, i64, i64) -> Vec<NewAlert>,
        sinks: &[String],
    ) -> Result<Recorded, LedgerError> {
        // A request sent twice within one batch counts once, like one sent twice across batches.
        let mut seen = HashSet::new();
        let entries: Vec<&Entry> = entries
            .iter()
            .filter(|e| seen.insert(&e.request_id))
            .collect();
        let mut tx = self.pool.begin().await?;
        let inserted_ids = insert_entries(&mut tx, &entries).await?;
        let new: Vec<&Entry> = entries
            .into_iter()
            .filter(|e| inserted_ids.contains(&e.request_id))
            .collect();

        let mut rollups: BTreeMap<(&'static str, i64, &RollupKey), RollupSums> = BTreeMap::new();
        let mut spend: BTreeMap<SpendKey, i64> = BTreeMap::new();
        for entry in &new {
            for (granularity, bucket) in [("hour", entry.hour_ms()), ("day", entry.day_ms())] {
                rollups
                    .entry((granularity, bucket, &entry.key))
                    .or_default()
                    .add(entry);
            }
            for key in spend_of(entry) {
                let spent = spend.entry(key).or_default();
                *spent = spent.saturating_add(entry.cost_nanos);
            }
        }
        add_rollups(&mut tx, &rollups).await?;
        add_spend(&mut tx, &spend).await?;
        queue_alerts(&mut tx, &spend, alerts_for, sinks).await?;
        tx.commit().await?;
        Ok(Recorded {
            inserted: new.len(),
        })
    }

    /// Spend of a budget's period, in nano-USD, in total and by edge.
    pub async fn spend(
        &self,
        budget_id: &str,
        period_start_ms: i64,
    ) -> Result<BTreeMap<String, i64>, LedgerError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT edge_id, spent_nanos FROM budget_spend WHERE budget_id = $1 AND period_start_ms = $2",
        )
        .bind(budget_id.to_owned())
        .bind(period_start_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Rollup rows of `granularity` (`hour` or `day`) with buckets in `[start_ms, end_ms)`.
    pub async fn rollups(
        &self,
        granularity: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<(i64, RollupKey, RollupSums)>, LedgerError> {
        let rows: Vec<RollupRow> = sqlx::query_as(
            "SELECT bucket_start_ms, team_id, user_id, key_id, model, deployment_id, provider, region, \
             requests, input_tokens, output_tokens, cached_input_tokens, cost_nanos, errors, cache_hits, \
             latency_ms_sum FROM usage_rollups \
             WHERE granularity = $1 AND bucket_start_ms >= $2 AND bucket_start_ms < $3 ORDER BY bucket_start_ms",
        )
        .bind(granularity.to_owned())
        .bind(start_ms)
        .bind(end_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(RollupRow::split).collect())
    }

    /// Totals over the whole ledger: (requests, input, output, cached input tokens, cost nanos).
    pub async fn ledger_totals(&self) -> Result<(i64, i64, i64, i64, i64), LedgerError> {
        Ok(sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cached_input_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT) FROM usage_ledger",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Alerts due for delivery at `now_ms`.
    pub async fn due_alerts(&self, now_ms: i64) -> Result<Vec<PendingAlert>, LedgerError> {
        Ok(sqlx::query_as(
            "SELECT budget_id, period_start_ms, threshold_pct, sink, payload, attempts FROM budget_alerts \
             WHERE delivered = $1 AND next_attempt_ms <= $2 ORDER BY period_start_ms, threshold_pct LIMIT 100",
        )
        .bind(false)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks an alert delivered, or schedules its next attempt.
    pub async fn alert_attempted(
        &self,
        alert: &PendingAlert,
        delivered: bool,
        next_attempt_ms: i64,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE budget_alerts SET delivered = $1, attempts = attempts + 1, next_attempt_ms = $2 \
             WHERE budget_id = $3 AND period_start_ms = $4 AND threshold_pct = $5 AND sink = $6",
        )
        .bind(delivered)
        .bind(next_attempt_ms)
        .bind(alert.budget_id.clone())
        .bind(alert.period_start_ms)
        .bind(alert.threshold_pct)
        .bind(alert.sink.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct RollupRow {
    bucket_start_ms: i64,
    team_id: String,
    user_id: String,
    key_id: String,
    model: String,
    deployment_id: String,
    provider: String,
    region: String,
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_input_tokens: i64,
    cost_nanos: i64,
    errors: i64,
    cache_hits: i64,
    latency_ms_sum: i64,
}

impl RollupRow {
    fn split(self) -> (i64, RollupKey, RollupSums) {
        (
            self.bucket_start_ms,
            RollupKey {
                team_id: self.team_id,
                user_id: self.user_id,
                key_id: self.key_id,
                model: self.model,
                deployment_id: self.deployment_id,
                provider: self.provider,
                region: self.region,
            },
            RollupSums {
                requests: self.requests,
                input_tokens: self.input_tokens,
                output_tokens: self.output_tokens,
                cached_input_tokens: self.cached_input_tokens,
                cost_nanos: self.cost_nanos,
                errors: self.errors,
                cache_hits: self.cache_hits,
                latency_ms_sum: self.latency_ms_sum,
            },
        )
    }
}

/// Inserts the entries the ledger has not seen; the request ids it inserted.
async fn insert_entries(
    conn: &mut AnyConnection,
    entries: &[&Entry],
) -> Result<HashSet<String>, LedgerError> {
    let mut inserted_ids = std::collections::HashSet::new();
    // SQLite finds a numbered or named parameter (`$7`) by a linear scan of the statement's
    // names, when it prepares the statement and again at every bind: over a chunk's 4,200
    // parameters that was 15 % of `tollgate up`'s CPU under load. Its anonymous `?` are bound
    // in order without a lookup; PostgreSQL knows only numbered ones.
    let numbered = conn.backend_name() != "SQLite";
    for chunk in entries.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO usage_ledger (request_id, occurred_at_ms, key_id, user_id, team_id, model, \
             deployment_id, provider, region, edge_id, input_tokens, output_tokens, cached_input_tokens, \
             cache_write_tokens, cost_nanos, latency_ms, ttft_ms, status, error_code, cache_hit, stream) VALUES ",
        );
        for row in 0..chunk.len() {
            sql.push_str(if row == 0 { "(" } else { ",(" });
            for column in 0..LEDGER_COLUMNS {
                if column > 0 {
                    sql.push(',');
                }
                if numbered {
                    let _ = write!(sql, "${}", row * LEDGER_COLUMNS + column + 1);
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
        for e in chunk {
            query = query
                .bind(e.request_id.clone())
                .bind(e.occurred_at_ms)
                .bind(e.key.key_id.clone())
                .bind(e.key.user_id.clone())
                .bind(e.key.team_id.clone())
                .bind(e.key.model.clone())
                .bind(e.key.deployment_id.clone())
                .bind(e.key.provider.clone())
                .bind(e.key.region.clone())
                .bind(e.edge_id.clone())
                .bind(e.input_tokens)
                .bind(e.output_tokens)
                .bind(e.cached_input_tokens)
                .bind(e.cache_write_tokens)
                .bind(e.cost_nanos)
                .bind(e.latency_ms)
                .bind(e.ttft_ms)
                .bind(e.status)
                .bind(e.error_code.clone())
                .bind(e.cache_hit)
                .bind(e.stream);
        }
        inserted_ids.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(inserted_ids)
}

/// Adds `rollups` to the hourly and daily totals.
async fn add_rollups(
    conn: &mut AnyConnection,
    rollups: &BTreeMap<(&'static str, i64, &RollupKey), RollupSums>,
) -> Result<(), LedgerError> {
    for ((granularity, bucket, key), sums) in rollups {
        sqlx::query(
            "INSERT INTO usage_rollups (granularity, bucket_start_ms, team_id, user_id, key_id, model, \
             deployment_id, provider, region, requests, input_tokens, output_tokens, cached_input_tokens, \
             cost_nanos, errors, cache_hits, latency_ms_sum) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (granularity, bucket_start_ms, team_id, user_id, key_id, model, deployment_id, provider, region) \
             DO UPDATE SET requests = usage_rollups.requests + excluded.requests, \
             input_tokens = usage_rollups.input_tokens + excluded.input_tokens, \
             output_tokens = usage_rollups.output_tokens + excluded.output_tokens, \
             cached_input_tokens = usage_rollups.cached_input_tokens + excluded.cached_input_tokens, \
             cost_nanos = usage_rollups.cost_nanos + excluded.cost_nanos, \
             errors = usage_rollups.errors + excluded.errors, \
             cache_hits = usage_rollups.cache_hits + excluded.cache_hits, \
             latency_ms_sum = usage_rollups.latency_ms_sum + excluded.latency_ms_sum",
        )
        .bind(*granularity)
        .bind(*bucket)
        .bind(key.team_id.clone())
        .bind(key.user_id.clone())
        .bind(key.key_id.clone())
        .bind(key.model.clone())
        .bind(key.deployment_id.clone())
        .bind(key.provider.clone())
        .bind(key.region.clone())
        .bind(sums.requests)
        .bind(sums.input_tokens)
        .bind(sums.output_tokens)
        .bind(sums.cached_input_tokens)
        .bind(sums.cost_nanos)
        .bind(sums.errors)
        .bind(sums.cache_hits)
        .bind(sums.latency_ms_sum)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Adds `spend` to each budget period's spend by edge.
async fn add_spend(
    conn: &mut AnyConnection,
    spend: &BTreeMap<SpendKey, i64>,
) -> Result<(), LedgerError> {
    for (key, delta) in spend {
        sqlx::query(
            "INSERT INTO budget_spend (budget_id, period_start_ms, edge_id, spent_nanos) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (budget_id, period_start_ms, edge_id) \
             DO UPDATE SET spent_nanos = budget_spend.spent_nanos + excluded.spent_nanos",
        )
        .bind(key.budget_id.clone())
        .bind(key.period_start_ms)
        .bind(key.edge_id.clone())
        .bind(*delta)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Adds `spend` to each budget period's total and queues, once per sink, the alerts
/// `alerts_for` decides from the total before and after.
async fn queue_alerts(
    conn: &mut AnyConnection,
    spend: &BTreeMap<SpendKey, i64>,
    alerts_for: impl Fn(&SpendKey, i64, i64) -> Vec<NewAlert>,
    sinks: &[String],
) -> Result<(), LedgerError> {
    // Alerts compare each budget period's total before and after this batch.
    let mut period_delta: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (key, delta) in spend {
        *period_delta
            .entry((key.budget_id.clone(), key.period_start_ms))
            .or_default() += delta;
    }
    for ((budget_id, period_start_ms), delta) in period_delta {
        let after: i64 = sqlx::query_scalar(
            "INSERT INTO budget_period_totals (budget_id, period_start_ms, spent_nanos) VALUES ($1, $2, $3) \
             ON CONFLICT (budget_id, period_start_ms) \
             DO UPDATE SET spent_nanos = budget_period_totals.spent_nanos + excluded.spent_nanos \
             RETURNING spent_nanos",
        )
        .bind(budget_id.clone())
        .bind(period_start_ms)
        .bind(delta)
        .fetch_one(&mut *conn)
        .await?;
        let key = SpendKey {
            budget_id,
            period_start_ms,
            edge_id: String::new(),
        };
        for alert in alerts_for(&key, after - delta, after) {
            for sink in sinks {
                sqlx::query(
                    "INSERT INTO budget_alerts (budget_id, period_start_ms, threshold_pct, sink, payload, \
                     delivered, attempts, next_attempt_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (budget_id, period_start_ms, threshold_pct, sink) DO NOTHING",
                )
                .bind(alert.budget_id.clone())
                .bind(alert.period_start_ms)
                .bind(alert.threshold_pct)
                .bind(sink.clone())
                .bind(alert.payload.clone())
                .bind(false)
                .bind(0i32)
                .bind(0i64)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}
