-- The policy event log. Appends run in BEGIN IMMEDIATE transactions, which SQLite serializes,
-- so sequences become visible in order and a reader of `sequence > last` never skips one.
CREATE TABLE policy_sequence (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last INTEGER NOT NULL
);
INSERT INTO policy_sequence (singleton, last) VALUES (1, 0);

CREATE TABLE policy_events (
    sequence INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    actor TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (aggregate_id, version)
);

CREATE TABLE policy_snapshots (
    sequence INTEGER PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    taken_at TEXT NOT NULL
);
