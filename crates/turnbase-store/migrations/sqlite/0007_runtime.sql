-- The game runtime: one record per game that was given an engine, and the
-- durable queue of start, stop and remove jobs the runtime's workers claim
-- (a leased queue, see leased.rs).

CREATE TABLE runtime_records (
    game_id UUID PRIMARY KEY NOT NULL REFERENCES games (id),
    -- The engine kind and how it runs.
    engine TEXT NOT NULL,
    -- 'process' or 'docker'; 'per_game' or 'shared'.
    driver TEXT NOT NULL,
    placement TEXT NOT NULL,
    -- The engine's base URL, once it answers.
    address TEXT,
    -- What the driver knows the engine by (a pid, a container id).
    handle TEXT,
    -- starting, ready, stopped, removed, failed.
    state TEXT NOT NULL,
    -- The game's seed, chosen once by the backend and given to init.
    seed BIGINT NOT NULL,
    restarts BIGINT NOT NULL,
    last_health_at TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE runtime_jobs (
    id UUID PRIMARY KEY NOT NULL,
    game_id UUID NOT NULL REFERENCES games (id),
    -- start, stop, remove.
    kind TEXT NOT NULL,
    -- queued, running (leased), done, failed.
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
-- The claim's scan: due rows.
CREATE INDEX runtime_jobs_due ON runtime_jobs (next_attempt_at)
    WHERE status IN ('queued', 'running');
-- At most one live job of a kind per game.
CREATE UNIQUE INDEX runtime_jobs_live ON runtime_jobs (game_id, kind)
    WHERE status IN ('queued', 'running');

-- Why the game's last start failed (a game in 'start_failed').
ALTER TABLE games ADD COLUMN start_error TEXT;

-- Loops that must run on one backend at a time (the runtime's reconciler)
-- hold a named lease here, renewed each pass; another backend takes it
-- over when it runs out.
CREATE TABLE worker_leases (
    name TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    until_at TIMESTAMPTZ NOT NULL
);
