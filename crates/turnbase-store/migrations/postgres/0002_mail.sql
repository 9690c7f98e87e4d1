-- The mail outbox: one row per mail, written in the transaction of the
-- change that caused it, and the attempts to deliver each.
CREATE TABLE mail_outbox (
    id UUID PRIMARY KEY NOT NULL,
    idempotency_key TEXT UNIQUE,
    to_address TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ,
    last_error TEXT
);
-- Rows still to deliver, by when they are due. A row being sent is due
-- again when its lease ends (claims set next_attempt_at to the lease end),
-- so one range scan finds both new work and work whose worker died.
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE status IN ('pending', 'sending');

CREATE TABLE mail_attempts (
    id UUID PRIMARY KEY NOT NULL,
    mail_id UUID NOT NULL REFERENCES mail_outbox (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    outcome TEXT NOT NULL,
    smtp_code BIGINT,
    error TEXT
);
CREATE INDEX mail_attempts_mail ON mail_attempts (mail_id, attempt);
