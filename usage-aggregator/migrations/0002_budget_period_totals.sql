-- The total spend of each budget period, updated in place: its row lock serialises concurrent
-- aggregator replicas, so each sees the exact total before and after its own batch.
CREATE TABLE budget_period_totals (
    budget_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    spent_nanos BIGINT NOT NULL,
    PRIMARY KEY (budget_id, period_start_ms)
);
INSERT INTO budget_period_totals (budget_id, period_start_ms, spent_nanos)
    SELECT budget_id, period_start_ms, SUM(spent_nanos) FROM budget_spend GROUP BY budget_id, period_start_ms;
