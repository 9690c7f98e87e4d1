-- Turns: each running game's clock, one row per turn (its claim, then its
-- result), which seats sent orders for the open turn, the platform's play
-- rules per game, and what the scheduler keeps per seat about absences.

-- A JSON object of play rules (early turns, bot delay, excused misses, bot
-- takeover); the lobby fills in defaults.
ALTER TABLE games ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';

-- Consecutive turns the seat's player let pass without orders.
ALTER TABLE game_players ADD COLUMN misses BIGINT NOT NULL DEFAULT 0;
-- Excused misses spent (each extended a turn once).
ALTER TABLE game_players ADD COLUMN excuses_used BIGINT NOT NULL DEFAULT 0;
-- The engine's bot plays the seat after too many misses, until its player
-- (or an approved substitute) sends orders again.
ALTER TABLE game_players ADD COLUMN bot_control BOOLEAN NOT NULL DEFAULT FALSE;

-- A substitute's application names the seat it would take over.
ALTER TABLE game_applications ADD COLUMN seat_id UUID;

-- One row per running game: its open turn and when that turn resolves. It
-- appears when the game starts running (due at once: the scheduler opens
-- the first turn) and goes when the game ends.
CREATE TABLE game_clocks (
    game_id UUID PRIMARY KEY NOT NULL REFERENCES games (id) ON DELETE CASCADE,
    -- The open turn (the one taking orders).
    turn BIGINT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    -- Interval schedules count their slots from here (the game's start).
    anchor_at TIMESTAMPTZ NOT NULL,
    -- The schedule slot this turn stands for (NULL for move clocks).
    slot_at TIMESTAMPTZ,
    -- When the scheduler acts next; NULL while paused.
    due_at TIMESTAMPTZ,
    -- Why it is due: open, schedule, timeout, bot, early, forced, catch_up.
    trigger TEXT NOT NULL,
    -- JSON arrays of seat ids: whom the engine waits for, and which of
    -- them are people the platform waits for.
    to_move TEXT NOT NULL,
    awaiting TEXT NOT NULL,
    -- The owner extended this turn (once per turn unless an admin).
    extended BOOLEAN NOT NULL,
    -- An excused miss already extended this turn.
    excused BOOLEAN NOT NULL,
    -- While paused: when it was paused.
    paused_at TIMESTAMPTZ,
    -- Failed engine calls for this turn (the retry backoff grows with it).
    attempts BIGINT NOT NULL,
    -- Raised by every change: writers change the row only at the version
    -- they read.
    version BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX game_clocks_due ON game_clocks (due_at) WHERE due_at IS NOT NULL;

-- A turn's claim (unique per game and turn: the scheduler that inserts it,
-- or takes over its run-out lease, is the one calling the engine), then
-- its recorded result.
CREATE TABLE game_turns (
    game_id UUID NOT NULL REFERENCES games (id) ON DELETE CASCADE,
    turn BIGINT NOT NULL,
    -- claimed, resolved.
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    -- When the turn was due (lateness counts from here).
    due_at TIMESTAMPTZ NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    claimed_by TEXT,
    lease_until TIMESTAMPTZ,
    -- When the resolve call went out, and when its result was recorded.
    sent_at TIMESTAMPTZ,
    resolved_at TIMESTAMPTZ,
    lateness_ms BIGINT,
    duration_ms BIGINT,
    -- The engine's resolution (JSON), once recorded.
    resolution TEXT,
    PRIMARY KEY (game_id, turn)
);

-- Seats that sent orders for a turn (never what they sent: that stays in
-- the engine).
CREATE TABLE turn_submissions (
    game_id UUID NOT NULL REFERENCES games (id) ON DELETE CASCADE,
    turn BIGINT NOT NULL,
    seat_id UUID NOT NULL,
    submitted_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (game_id, turn, seat_id)
);
