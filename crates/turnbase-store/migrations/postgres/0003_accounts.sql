-- Accounts and what hangs off them: sessions, pending sign-in codes, game
-- seats (filled by the lobby), the admin audit log and daily sign-in counts
-- per country.
CREATE TABLE accounts (
    id UUID PRIMARY KEY NOT NULL,
    -- Lower-cased; NULL for a guest.
    email TEXT UNIQUE,
    display_name TEXT NOT NULL,
    -- 'player' or 'admin'.
    role TEXT NOT NULL,
    is_guest BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    blocked_at TIMESTAMPTZ,
    blocked_reason TEXT
);
-- The guest reaper's scan: old guests first.
CREATE INDEX accounts_guests ON accounts (created_at) WHERE is_guest;

CREATE TABLE sessions (
    id UUID PRIMARY KEY NOT NULL,
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- SHA-256 of the bearer token; the token itself is never stored.
    token_hash BYTEA NOT NULL UNIQUE,
    device_name TEXT NOT NULL,
    country TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);

-- At most one live code per address; asking again replaces it.
CREATE TABLE login_codes (
    email TEXT PRIMARY KEY NOT NULL,
    code_hash BYTEA NOT NULL,
    tries_left BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Seats in games. The lobby fills this table; it exists now so that the
-- guest reaper's rule ("a guest with any seat is kept") holds from the
-- start. No cascade: deleting a seated account is refused.
CREATE TABLE game_players (
    game_id UUID NOT NULL,
    account_id UUID NOT NULL REFERENCES accounts (id),
    joined_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (game_id, account_id)
);
CREATE INDEX game_players_account ON game_players (account_id);

-- Who did what as an admin. No foreign key: the log outlives accounts.
CREATE TABLE admin_audit (
    id UUID PRIMARY KEY NOT NULL,
    actor_id UUID NOT NULL,
    actor_email TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);

-- Sign-ins per country per UTC day ('ZZ' when the country is unknown).
CREATE TABLE login_counts (
    day TEXT NOT NULL,
    country TEXT NOT NULL,
    logins BIGINT NOT NULL,
    PRIMARY KEY (day, country)
);
