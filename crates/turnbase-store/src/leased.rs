//! One leased queue, for every table whose rows are work that workers
//! claim: the mail outbox, the runtime's jobs and notification routes.
//!
//! Such a table has the lease columns: `status` (the queue's own state
//! names), `next_attempt_at` (when a row is due), `lease_owner` and
//! `lease_until` (who holds it, until when), `attempts` (the retry budget
//! spent). A [`LeasedQueue`] names the table, its two queue states and the
//! columns a claim returns, and writes the statements:
//!
//! - **claim**: due rows (pending, or held by a lease that ran out) move to
//!   the leased state under `owner` until the lease ends, which is also
//!   when they fall due again should the worker die. Postgres takes rows
//!   `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait for each
//!   other; SQLite runs the claim in an immediate transaction, which holds
//!   the file's write lock. The states are written into the statement as
//!   literals, so that the planner can use the table's partial index on due
//!   rows, whose predicate names them.
//! - **release**: a held row goes back, due now, without spending an
//!   attempt (shutdown).
//! - **held**: the condition every finishing statement adds, so that only
//!   the lease holder can record an outcome.
//!
//! Dead letters, one convention for every queue: a row that failed for
//! good stays in its table in a `failed` state with its last error and its
//! history, where admins list it and retry it (a retry makes it pending
//! with a fresh budget). There is no second table: a dead letter then
//! keeps its foreign keys, its id and its place in the admin lists.

/// A table used as a leased queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeasedQueue {
    pub table: &'static str,
    /// The state of a row waiting to be claimed.
    pub pending: &'static str,
    /// The state of a row held under a lease.
    pub leased: &'static str,
    /// What a claim returns of each row.
    pub claimed_columns: &'static str,
}

impl LeasedQueue {
    /// Claims up to `$4` rows due at `$3` for owner `$1` until `$2`.
    pub fn claim_postgres(&self) -> String {
        // The claimed ids are gathered into an array first: with
        // `id IN (subquery)` the generic plan of the prepared statement
        // joined the subquery against a sequential scan of the whole table.
        format!(
            "UPDATE {table}
             SET status = '{leased}', lease_owner = $1, lease_until = $2, next_attempt_at = $2
             WHERE id = ANY(ARRAY(
                 SELECT id FROM {table}
                 WHERE status IN ('{pending}', '{leased}') AND next_attempt_at <= $3
                 ORDER BY next_attempt_at
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED))
             RETURNING {columns}",
            table = self.table,
            leased = self.leased,
            pending = self.pending,
            columns = self.claimed_columns,
        )
    }

    /// The same claim for SQLite, to run in an immediate transaction.
    pub fn claim_sqlite(&self) -> String {
        format!(
            "UPDATE {table}
             SET status = '{leased}', lease_owner = $1, lease_until = $2, next_attempt_at = $2
             WHERE id IN (
                 SELECT id FROM {table}
                 WHERE status IN ('{pending}', '{leased}') AND next_attempt_at <= $3
                 ORDER BY next_attempt_at
                 LIMIT $4)
             RETURNING {columns}",
            table = self.table,
            leased = self.leased,
            pending = self.pending,
            columns = self.claimed_columns,
        )
    }

    /// Gives row `$2` back to the queue, due at `$1`, if owner `$3` holds
    /// it; the same text on both backends.
    pub fn release(&self) -> String {
        format!(
            "UPDATE {table} SET status = '{pending}', next_attempt_at = $1,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = $2 AND {held}",
            table = self.table,
            pending = self.pending,
            held = self.held("$3"),
        )
    }

    /// The condition under which `owner` (a parameter, e.g. `$7`) may
    /// finish a row: it is leased, and to that owner.
    pub fn held(&self, owner: &str) -> String {
        format!(
            "status = '{leased}' AND lease_owner = {owner}",
            leased = self.leased
        )
    }
}

/// The mail outbox as a leased queue.
pub(crate) const MAIL: LeasedQueue = LeasedQueue {
    table: "mail_outbox",
    pending: crate::mail::PENDING,
    leased: crate::mail::SENDING,
    claimed_columns: "id, to_address, subject, text_body, html_body, attempts",
};

/// The mail queue's statements, written once per process.
pub(crate) mod mail {
    use std::sync::LazyLock;

    pub static CLAIM_POSTGRES: LazyLock<String> = LazyLock::new(|| super::MAIL.claim_postgres());
    pub static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| super::MAIL.claim_sqlite());
    pub static RELEASE: LazyLock<String> = LazyLock::new(|| super::MAIL.release());
}

/// Notification routes as a leased queue.
pub(crate) const NOTIFY: LeasedQueue = LeasedQueue {
    table: "notification_routes",
    pending: crate::notify::PENDING,
    leased: crate::notify::DISPATCHING,
    claimed_columns: "id, notification_id, account_id, kind, channel, target, digest_key, \
         attempts, created_at",
};

/// The notification queue's statements, written once per process.
pub(crate) mod notify {
    use std::sync::LazyLock;

    pub static CLAIM_POSTGRES: LazyLock<String> = LazyLock::new(|| super::NOTIFY.claim_postgres());
    pub static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| super::NOTIFY.claim_sqlite());
    pub static RELEASE: LazyLock<String> = LazyLock::new(|| super::NOTIFY.release());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_queue_and_its_states_as_literals() {
        let q = LeasedQueue {
            table: "jobs",
            pending: "queued",
            leased: "running",
            claimed_columns: "id, payload",
        };
        let pg = q.claim_postgres();
        assert!(pg.contains("UPDATE jobs"), "{pg}");
        assert!(pg.contains("status IN ('queued', 'running')"), "{pg}");
        assert!(pg.contains("FOR UPDATE SKIP LOCKED"), "{pg}");
        assert!(pg.contains("RETURNING id, payload"), "{pg}");
        let lite = q.claim_sqlite();
        assert!(!lite.contains("SKIP LOCKED"), "{lite}");
        assert!(lite.contains("status = 'running'"), "{lite}");
        let release = q.release();
        assert!(release.contains("SET status = 'queued'"), "{release}");
        assert!(
            release.contains("status = 'running' AND lease_owner = $3"),
            "{release}"
        );
    }
}
