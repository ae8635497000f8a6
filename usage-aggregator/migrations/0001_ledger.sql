-- The usage ledger and what is derived from it, in SQL that PostgreSQL and SQLite both run.
-- Times are Unix milliseconds; costs are integer nano-USD, so totals add up exactly.
CREATE TABLE usage_ledger (
    request_id TEXT PRIMARY KEY,
    occurred_at_ms BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    team_id TEXT NOT NULL,
    model TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    region TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT NOT NULL,
    status INTEGER NOT NULL,
    error_code TEXT NOT NULL,
    cache_hit BOOLEAN NOT NULL,
    stream BOOLEAN NOT NULL
);
CREATE INDEX usage_ledger_time ON usage_ledger (occurred_at_ms);

-- Sums per hour and per day (UTC buckets) over every dimension finance groups by.
CREATE TABLE usage_rollups (
    granularity TEXT NOT NULL,
    bucket_start_ms BIGINT NOT NULL,
    team_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    region TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    PRIMARY KEY (granularity, bucket_start_ms, team_id, user_id, key_id, model, deployment_id, provider, region)
);

-- Spend per budget and period, with the share each edge served (for the edges' budget split).
CREATE TABLE budget_spend (
    budget_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    edge_id TEXT NOT NULL,
    spent_nanos BIGINT NOT NULL,
    PRIMARY KEY (budget_id, period_start_ms, edge_id)
);

-- One row per alert per sink: at most one alert per budget, period and threshold, ever.
CREATE TABLE budget_alerts (
    budget_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    threshold_pct DOUBLE PRECISION NOT NULL,
    sink TEXT NOT NULL,
    payload TEXT NOT NULL,
    delivered BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    PRIMARY KEY (budget_id, period_start_ms, threshold_pct, sink)
);
