-- The policy event log. Appends are serialized by the row lock on policy_sequence, so
-- sequences become visible in order and a reader of `sequence > last` never skips one.
CREATE TABLE policy_sequence (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last BIGINT NOT NULL
);
INSERT INTO policy_sequence (singleton, last) VALUES (TRUE, 0);

CREATE TABLE policy_events (
    sequence BIGINT PRIMARY KEY,
    id UUID NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    actor TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    payload JSONB NOT NULL,
    UNIQUE (aggregate_id, version)
);

CREATE TABLE policy_snapshots (
    sequence BIGINT PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    state JSONB NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL
);
