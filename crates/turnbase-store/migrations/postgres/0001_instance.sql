-- The installation itself: exactly one row (singleton = 1), created on first
-- start and updated on every start after it.
CREATE TABLE instance (
    singleton BIGINT PRIMARY KEY NOT NULL CHECK (singleton = 1),
    id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_started_at TIMESTAMPTZ NOT NULL,
    last_version TEXT NOT NULL,
    start_count BIGINT NOT NULL
);
