-- Notifications: what each person is told (the rows are their inbox), the
-- routes that carry a notification to one channel (a leased queue, like
-- the mail outbox), every delivery attempt, people's preferences, the
-- unsubscribe links already used, and which turn of a game had its
-- "orders due" reminder.

CREATE TABLE notifications (
    id UUID PRIMARY KEY NOT NULL,
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- What happened (`turn_resolved`, `your_move`, …).
    kind TEXT NOT NULL,
    game_id UUID,
    -- A JSON object: the facts the templates and clients show.
    payload TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    read_at TIMESTAMPTZ,
    -- Set when its routes were written; NULL rows are the router's work.
    routed_at TIMESTAMPTZ
);
-- The inbox, newest first, and its unread part.
CREATE INDEX notifications_inbox ON notifications (account_id, id);
CREATE INDEX notifications_unread ON notifications (account_id, id) WHERE read_at IS NULL;
CREATE INDEX notifications_unrouted ON notifications (id) WHERE routed_at IS NULL;

CREATE TABLE notification_routes (
    id UUID PRIMARY KEY NOT NULL,
    notification_id UUID NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    account_id UUID NOT NULL,
    kind TEXT NOT NULL,
    -- 'push', 'email' or 'webhook'.
    channel TEXT NOT NULL,
    -- The address or URL, fixed when the route was made.
    target TEXT,
    -- Turn results gathered into one mail per game and day share one route.
    digest_key TEXT,
    -- 'pending', 'dispatching' (leased), 'delivered' or 'failed' (a dead letter).
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    attempts_total BIGINT NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    delivered_at TIMESTAMPTZ,
    last_error TEXT
);
CREATE UNIQUE INDEX notification_routes_once ON notification_routes (notification_id, channel);
CREATE UNIQUE INDEX notification_routes_digest ON notification_routes (digest_key);
-- Routes still to dispatch, by when they are due (a leased route falls due
-- when its lease ends).
CREATE INDEX notification_routes_due ON notification_routes (next_attempt_at)
    WHERE status IN ('pending', 'dispatching');
CREATE INDEX notification_routes_dead ON notification_routes (id) WHERE status = 'failed';

CREATE TABLE notification_attempts (
    id UUID PRIMARY KEY NOT NULL,
    route_id UUID NOT NULL REFERENCES notification_routes (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    -- 'delivered', 'retry' or 'failed'.
    outcome TEXT NOT NULL,
    status_code BIGINT,
    error TEXT
);
CREATE INDEX notification_attempts_route ON notification_attempts (route_id, attempt);

CREATE TABLE notification_preferences (
    account_id UUID PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- A JSON object: channels per kind, time zone, quiet hours, digest.
    settings TEXT NOT NULL,
    webhook_url TEXT,
    -- Random, not secret by itself: the webhook's signing key is derived
    -- from it and the installation's key, which is never stored.
    webhook_salt TEXT,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Each unsubscribe link works once.
CREATE TABLE notification_unsubscribes (
    token_id UUID PRIMARY KEY NOT NULL,
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    used_at TIMESTAMPTZ NOT NULL
);

-- The turn whose "orders due" reminder went out.
ALTER TABLE game_clocks ADD COLUMN reminded_turn BIGINT;
