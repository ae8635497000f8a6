//! A usage event as the ledger stores it, checked on the way in.

use tollgate_proto::convert::from_timestamp;
use tollgate_proto::usage::UsageEvent;

/// The usage-event schema versions this aggregator reads.
pub const SUPPORTED_SCHEMA: u32 = 1;
/// The longest name (key, team, model, region, …) an event may carry, in bytes; edges refuse
/// longer ones from clients.
pub const MAX_NAME_BYTES: usize = 256;
/// The most tokens of one kind one request may report (edges cap what providers report far
/// below this); more is a malformed event, not spend.
pub const MAX_TOKENS: u64 = 10_000_000_000;
/// The most one request may cost, in USD; more is a malformed event.
pub const MAX_COST_USD: f64 = 1_000_000.0;

/// The dimensions finance groups by; one rollup row per distinct value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    pub team_id: String,
    pub user_id: String,
    pub key_id: String,
    pub model: String,
    pub deployment_id: String,
    pub provider: String,
    pub region: String,
}

/// What rollups add up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollupSums {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cost_nanos: i64,
    pub errors: i64,
    pub cache_hits: i64,
    pub latency_ms_sum: i64,
}

// Sums saturate rather than wrap or panic: a rollup that reaches i64::MAX is absurd, but must
// not stop the consumer (the database refuses an overflowing row, which isolates the event).
impl RollupSums {
    pub fn add(&mut self, e: &Entry) {
        self.merge(&RollupSums {
            requests: 1,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cached_input_tokens: e.cached_input_tokens,
            cost_nanos: e.cost_nanos,
            errors: i64::from(!(200..300).contains(&e.status)),
            cache_hits: i64::from(e.cache_hit),
            latency_ms_sum: e.latency_ms,
        });
    }

    pub fn merge(&mut self, other: &RollupSums) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
        self.errors = self.errors.saturating_add(other.errors);
        self.cache_hits = self.cache_hits.saturating_add(other.cache_hits);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
    }
}

/// One ledger row.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub request_id: String,
    pub occurred_at_ms: i64,
    pub key: RollupKey,
    /// The model that answered when a fallback served the request, else `key.model`.
    pub served_model: String,
    pub edge_id: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_nanos: i64,
    pub latency_ms: i64,
    pub ttft_ms: i64,
    pub status: i32,
    pub error_code: String,
    pub cache_hit: bool,
    pub stream: bool,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// USD as integer nano-USD, so that sums are exact.
pub fn nanos(usd: f64) -> i64 {
    (usd * 1e9).round() as i64
}

impl Entry {
    /// Checks a decoded event; the error says why it goes to the dead-letter topic.
    pub fn from_event(e: UsageEvent) -> Result<Entry, String> {
        if e.schema_version != SUPPORTED_SCHEMA {
            return Err(format!(
                "unsupported usage schema version {}",
                e.schema_version
            ));
        }
        if e.request_id.is_empty()
            || e.request_id.len() > 128
            || e.request_id.chars().any(char::is_control)
        {
            return Err("request_id must be 1-128 printable characters".to_owned());
        }
        let at = e
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or("occurred_at is missing or out of range")?;
        if !e.cost_usd.is_finite() || !(0.0..=MAX_COST_USD).contains(&e.cost_usd) {
            return Err(format!(
                "cost_usd {} is not an amount from 0 to {MAX_COST_USD}",
                e.cost_usd
            ));
        }
        for (what, name) in [
            ("team_id", &e.team_id),
            ("user_id", &e.user_id),
            ("key_id", &e.key_id),
            ("model", &e.model),
            ("served_model", &e.served_model),
            ("deployment_id", &e.deployment_id),
            ("provider", &e.provider),
            ("region", &e.region),
            ("edge_id", &e.edge_id),
            ("error_code", &e.error_code),
        ] {
            if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
                return Err(format!(
                    "{what} is longer than {MAX_NAME_BYTES} bytes or holds control characters"
                ));
            }
        }
        let count = |n: u64, what: &str| {
            i64::try_from(n)
                .ok()
                .filter(|_| n <= MAX_TOKENS)
                .ok_or_else(|| format!("{what} is out of range"))
        };
        let served_model = if e.served_model.is_empty() {
            e.model.clone()
        } else {
            e.served_model
        };
        Ok(Entry {
            occurred_at_ms: at.timestamp_millis(),
            served_model,
            key: RollupKey {
                team_id: e.team_id,
                user_id: e.user_id,
                key_id: e.key_id,
                model: e.model,
                deployment_id: e.deployment_id,
                provider: e.provider,
                region: e.region,
            },
            edge_id: e.edge_id,
            input_tokens: count(e.input_tokens, "input_tokens")?,
            output_tokens: count(e.output_tokens, "output_tokens")?,
            cached_input_tokens: count(e.cached_input_tokens, "cached_input_tokens")?,
            cache_write_tokens: count(e.cache_write_tokens, "cache_write_tokens")?,
            cost_nanos: nanos(e.cost_usd),
            latency_ms: count(e.latency_ms, "latency_ms")?,
            ttft_ms: count(e.ttft_ms, "ttft_ms")?,
            status: i32::try_from(e.status).map_err(|_| "status is out of range".to_owned())?,
            error_code: e.error_code,
            cache_hit: e.cache_hit,
            stream: e.stream,
            request_id: e.request_id,
        })
    }

    /// The start of the UTC hour of the request.
    pub fn hour_ms(&self) -> i64 {
        self.occurred_at_ms.div_euclid(HOUR_MS) * HOUR_MS
    }

    /// The start of the UTC day of the request.
    pub fn day_ms(&self) -> i64 {
        self.occurred_at_ms.div_euclid(DAY_MS) * DAY_MS
    }
}
