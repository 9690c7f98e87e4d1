-- The lobby: games, their state history, applications, the race-name
-- directory, and game_players rebuilt with a foreign key to games.

CREATE TABLE games (
    id UUID PRIMARY KEY NOT NULL,
    -- No cascade: an owner with games is never deleted (the reaper skips
    -- them); an admin transfers ownership instead.
    owner_id UUID NOT NULL REFERENCES accounts (id),
    title TEXT NOT NULL,
    -- The engine kind's name and the version it had when the game was made.
    engine TEXT NOT NULL,
    engine_version TEXT NOT NULL,
    -- A JSON object: the settings as validated, defaults filled in.
    settings TEXT NOT NULL,
    min_players BIGINT NOT NULL,
    max_players BIGINT NOT NULL,
    -- Approved players and bots; never above max_players (checked in the
    -- same statement that raises it).
    seats_taken BIGINT NOT NULL,
    enrol_deadline TIMESTAMPTZ NOT NULL,
    -- A JSON object: cron (with its time zone), interval or per-move limit.
    schedule TEXT NOT NULL,
    -- 'public' or 'unlisted'.
    visibility TEXT NOT NULL,
    -- Only for unlisted games.
    invite_code TEXT,
    -- enrolling, starting, running, paused, finished, cancelled.
    state TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ
);
-- Browsing: games of one state, newest first.
CREATE INDEX games_state ON games (state, id);
CREATE INDEX games_owner ON games (owner_id);
-- The sweeper's scan: enrolment deadlines of open games.
CREATE INDEX games_enrolling_deadline ON games (enrol_deadline) WHERE state = 'enrolling';

-- Every state a game went through, and who or what moved it.
CREATE TABLE game_state_changes (
    id UUID PRIMARY KEY NOT NULL,
    game_id UUID NOT NULL REFERENCES games (id),
    -- NULL for the creation.
    from_state TEXT,
    to_state TEXT NOT NULL,
    -- NULL when the sweeper (or another part of the platform) moved it.
    actor_id UUID,
    reason TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX game_state_changes_game ON game_state_changes (game_id, id);

-- Applications to join a game. A guest's pending applications go with
-- the guest when it is reaped; an approved one comes with a seat, which
-- keeps the guest.
CREATE TABLE game_applications (
    id UUID PRIMARY KEY NOT NULL,
    game_id UUID NOT NULL REFERENCES games (id),
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    race_name TEXT NOT NULL,
    -- pending, approved, rejected, withdrawn, expired, closed.
    status TEXT NOT NULL,
    reason TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    decided_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ NOT NULL
);
-- One live application per player and game.
CREATE UNIQUE INDEX game_applications_live ON game_applications (game_id, account_id)
    WHERE status IN ('pending', 'approved');
CREATE INDEX game_applications_account ON game_applications (account_id);
CREATE INDEX game_applications_expiry ON game_applications (expires_at) WHERE status = 'pending';

-- The race-name directory: one row per name held in an active game. The
-- key is the name normalised (NFKC, case folded, marks stripped), so that
-- names people would confuse collide.
CREATE TABLE race_names (
    name_key TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    game_id UUID NOT NULL REFERENCES games (id),
    -- NULL for a bot.
    account_id UUID REFERENCES accounts (id) ON DELETE CASCADE,
    -- The application that reserved it; NULL for a bot.
    application_id UUID REFERENCES game_applications (id) ON DELETE CASCADE,
    -- 'pending' (reserved until expires_at) or 'registered'.
    status TEXT NOT NULL,
    expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX race_names_game ON race_names (game_id);

-- Seats, rebuilt with a key to games. The games table is created empty
-- just above, so no seat written before this migration can name a game
-- and none is carried over (before the lobby nothing made real seats).
-- Nothing references game_players, so dropping it is correct with foreign
-- keys on.
CREATE TABLE game_players_next (
    id UUID PRIMARY KEY NOT NULL,
    game_id UUID NOT NULL REFERENCES games (id),
    -- NULL for a bot. No cascade: a seated account is never deleted.
    account_id UUID REFERENCES accounts (id),
    is_bot BOOLEAN NOT NULL,
    race_name TEXT NOT NULL,
    -- 'active' or 'resigned' (the seat stays for history).
    status TEXT NOT NULL,
    joined_at TIMESTAMPTZ NOT NULL,
    resigned_at TIMESTAMPTZ
);
DROP TABLE game_players;
ALTER TABLE game_players_next RENAME TO game_players;
CREATE UNIQUE INDEX game_players_seat ON game_players (game_id, account_id);
CREATE INDEX game_players_account ON game_players (account_id);
