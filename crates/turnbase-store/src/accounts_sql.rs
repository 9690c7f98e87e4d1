//! `AccountStore` for both backends. The statements are the same text on
//! SQLite and Postgres (numbered `$n` parameters, `ON CONFLICT`,
//! `RETURNING`), so one macro writes both implementations; only the pool,
//! the row type and how a write transaction begins differ.

macro_rules! impl_account_store {
    ($module:ident, $store:ty, $row:ty, $tx_variant:path, $backend:literal, $notify:path) => {
        pub(crate) mod $module {
            use chrono::{DateTime, Utc};
            use sqlx::Row as _;
            use subtle::ConstantTimeEq as _;
            use uuid::Uuid;

            use crate::accounts::{
                AccountFilter, AccountRow, AccountStore, AuditEntry, CodeCheck, EmailSignIn,
                LoginCount, NewAccount, NewLoginCode, NewSession, Role, SessionRow,
                SessionWithAccount, Upgrade,
            };
            use crate::{StoreError, StoreResult, Tx, like_pattern};
            use $notify as notify_sql;

            const ACCOUNT: &str = "a.id, a.email, a.display_name, a.role, a.is_guest, \
                 a.created_at, a.updated_at, a.blocked_at, a.blocked_reason";
            /// The same columns unqualified, for `RETURNING` (SQLite does
            /// not take a table alias there).
            const RETURNED: &str = "id, email, display_name, role, is_guest, created_at, \
                 updated_at, blocked_at, blocked_reason";
            const SESSION: &str = "s.id AS s_id, s.account_id AS s_account_id, \
                 s.device_name AS s_device_name, s.country AS s_country, \
                 s.created_at AS s_created_at, s.last_seen_at AS s_last_seen_at, \
                 s.token_hash AS s_token_hash";

            // Rows are read by the types' derived `FromRow` (accounts.rs).
            fn account(row: &$row) -> Result<AccountRow, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            fn with_account(row: &$row) -> Result<SessionWithAccount, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            fn audit(row: &$row) -> Result<AuditEntry, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            fn all<T>(
                rows: &[$row],
                f: fn(&$row) -> Result<T, sqlx::Error>,
            ) -> StoreResult<Vec<T>> {
                rows.iter()
                    .map(f)
                    .collect::<Result<_, _>>()
                    .map_err(Into::into)
            }

            async fn insert_session<'c, E>(
                conn: E,
                account_id: Uuid,
                s: &NewSession,
            ) -> StoreResult<()>
            where
                E: sqlx::Executor<'c, Database = <$row as sqlx::Row>::Database>,
            {
                sqlx::query(
                    "INSERT INTO sessions (id, account_id, token_hash, device_name, country,
                         created_at, last_seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(s.id)
                .bind(account_id)
                .bind(&s.token_hash)
                .bind(&s.device_name)
                .bind(&s.country)
                .bind(s.created_at)
                .execute(conn)
                .await?;
                Ok(())
            }

            pub(crate) async fn insert_audit<'c, E>(conn: E, e: &AuditEntry) -> StoreResult<()>
            where
                E: sqlx::Executor<'c, Database = <$row as sqlx::Row>::Database>,
            {
                sqlx::query(
                    "INSERT INTO admin_audit (id, actor_id, actor_email, action, target, detail, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(e.id)
                .bind(e.actor_id)
                .bind(&e.actor_email)
                .bind(&e.action)
                .bind(&e.target)
                .bind(&e.detail)
                .bind(e.at)
                .execute(conn)
                .await?;
                Ok(())
            }

            #[async_trait::async_trait]
            impl AccountStore for $store {
                async fn put_login_code(&self, tx: &mut Tx, code: &NewLoginCode) -> StoreResult<()> {
                    let $tx_variant(tx) = &mut tx.0 else {
                        return Err(StoreError::Unsupported(format!(
                            "a transaction of another backend for {}",
                            $backend
                        )));
                    };
                    sqlx::query(
                        "INSERT INTO login_codes (email, code_hash, tries_left, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (email) DO UPDATE SET
                             code_hash = excluded.code_hash, tries_left = excluded.tries_left,
                             created_at = excluded.created_at, expires_at = excluded.expires_at",
                    )
                    .bind(&code.email)
                    .bind(&code.code_hash)
                    .bind(code.tries)
                    .bind(code.created_at)
                    .bind(code.expires_at)
                    .execute(&mut **tx)
                    .await?;
                    Ok(())
                }

                async fn check_login_code(
                    &self,
                    email: &str,
                    code_hashes: &[[u8; 32]],
                    now: DateTime<Utc>,
                ) -> StoreResult<CodeCheck> {
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    let row = sqlx::query(
                        "SELECT code_hash, tries_left, expires_at FROM login_codes WHERE email = $1",
                    )
                    .bind(email)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(CodeCheck::Missing);
                    };
                    let stored: Vec<u8> = row.try_get("code_hash")?;
                    let tries_left: i64 = row.try_get("tries_left")?;
                    let expires_at: DateTime<Utc> = row.try_get("expires_at")?;
                    let delete = "DELETE FROM login_codes WHERE email = $1";
                    let check = if expires_at <= now || tries_left <= 0 {
                        sqlx::query(delete).bind(email).execute(&mut *tx).await?;
                        CodeCheck::Missing
                    } else if code_hashes
                        .iter()
                        .fold(subtle::Choice::from(0), |any, h| any | stored.ct_eq(&h[..]))
                        .into()
                    {
                        sqlx::query(delete).bind(email).execute(&mut *tx).await?;
                        CodeCheck::Accepted
                    } else if tries_left <= 1 {
                        sqlx::query(delete).bind(email).execute(&mut *tx).await?;
                        CodeCheck::Rejected { tries_left: 0 }
                    } else {
                        sqlx::query("UPDATE login_codes SET tries_left = $2 WHERE email = $1")
                            .bind(email)
                            .bind(tries_left - 1)
                            .execute(&mut *tx)
                            .await?;
                        CodeCheck::Rejected {
                            tries_left: tries_left - 1,
                        }
                    };
                    tx.commit().await?;
                    Ok(check)
                }

                async fn sign_in_by_email_telling(
                    &self,
                    new: &NewAccount,
                    s: &NewSession,
                    new_device: Option<&crate::notify::NewNotice>,
                ) -> StoreResult<EmailSignIn> {
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    let created = sqlx::query(
                        "INSERT INTO accounts (id, email, display_name, role, is_guest,
                             created_at, updated_at)
                         VALUES ($1, $2, $3, $4, FALSE, $5, $5)
                         ON CONFLICT (email) DO NOTHING",
                    )
                    .bind(new.id)
                    .bind(&new.email)
                    .bind(&new.display_name)
                    .bind(new.role.as_str())
                    .bind(new.created_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ACCOUNT} FROM accounts a WHERE a.email = $1"
                    )))
                    .bind(&new.email)
                    .fetch_one(&mut *tx)
                    .await?;
                    let found = account(&row)?;
                    if found.blocked_at.is_some() {
                        tx.rollback().await?;
                        return Ok(EmailSignIn::Blocked);
                    }
                    if let Some(notice) = new_device.filter(|_| !created) {
                        // New: the account has sessions, none on a device
                        // of this name (a first sign-in tells nobody).
                        let (others, same): (i64, i64) = sqlx::query_as(
                            "SELECT COUNT(*),
                                 COALESCE(SUM(CASE WHEN device_name = $2 THEN 1 ELSE 0 END), 0)
                             FROM sessions WHERE account_id = $1",
                        )
                        .bind(found.id)
                        .bind(&s.device_name)
                        .fetch_one(&mut *tx)
                        .await?;
                        if others > 0 && same == 0 {
                            let mut notice = notice.clone();
                            notice.to = crate::notify::Audience::Users(vec![found.id]);
                            notify_sql::write_in(&mut tx, std::slice::from_ref(&notice), s.created_at)
                                .await?;
                        }
                    }
                    insert_session(&mut *tx, found.id, s).await?;
                    tx.commit().await?;
                    Ok(EmailSignIn::SignedIn {
                        account: found,
                        created,
                    })
                }

                async fn create_guests(&self, guests: &[(NewAccount, NewSession)]) -> StoreResult<()> {
                    if guests.is_empty() {
                        return Ok(());
                    }
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    // Multi-row inserts: two statements however many guests.
                    let mut accounts = sqlx::QueryBuilder::new(
                        "INSERT INTO accounts (id, email, display_name, role, is_guest, \
                         created_at, updated_at) ",
                    );
                    accounts.push_values(guests, |mut row, (a, _)| {
                        row.push_bind(a.id)
                            .push("NULL")
                            .push_bind(&a.display_name)
                            .push_bind(a.role.as_str())
                            .push("TRUE")
                            .push_bind(a.created_at)
                            .push_bind(a.created_at);
                    });
                    accounts.build().execute(&mut *tx).await?;
                    let mut sessions = sqlx::QueryBuilder::new(
                        "INSERT INTO sessions (id, account_id, token_hash, device_name, country, \
                         created_at, last_seen_at) ",
                    );
                    sessions.push_values(guests, |mut row, (a, s)| {
                        row.push_bind(s.id)
                            .push_bind(a.id)
                            .push_bind(&s.token_hash)
                            .push_bind(&s.device_name)
                            .push_bind(&s.country)
                            .push_bind(s.created_at)
                            .push_bind(s.created_at);
                    });
                    sessions.build().execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn session_by_token(
                    &self,
                    token_hash: &[u8],
                ) -> StoreResult<Option<SessionWithAccount>> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {SESSION}, {ACCOUNT} FROM sessions s
                         JOIN accounts a ON a.id = s.account_id
                         WHERE s.token_hash = $1"
                    )))
                    .bind(token_hash)
                    .fetch_optional($crate::backend::SqlBackend::reader(self))
                    .await?;
                    Ok(row.as_ref().map(with_account).transpose()?)
                }

                async fn recent_sessions(
                    &self,
                    limit: i64,
                ) -> StoreResult<Vec<SessionWithAccount>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {SESSION}, {ACCOUNT} FROM sessions s
                         JOIN accounts a ON a.id = s.account_id
                         ORDER BY s.last_seen_at DESC LIMIT $1"
                    )))
                    .bind(limit)
                    .fetch_all($crate::backend::SqlBackend::reader(self))
                    .await?;
                    all(&rows, with_account)
                }

                async fn touch_sessions(&self, seen: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
                    if seen.is_empty() {
                        return Ok(());
                    }
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    for (id, at) in seen {
                        sqlx::query(
                            "UPDATE sessions SET last_seen_at = $2
                             WHERE id = $1 AND last_seen_at < $2",
                        )
                        .bind(id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn sessions(&self, account_id: Uuid) -> StoreResult<Vec<SessionRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {SESSION} FROM sessions s WHERE s.account_id = $1
                         ORDER BY s.last_seen_at DESC, s.id"
                    )))
                    .bind(account_id)
                    .fetch_all($crate::backend::SqlBackend::reader(self))
                    .await?;
                    all(&rows, |r| <SessionRow as sqlx::FromRow<'_, $row>>::from_row(r))
                }

                async fn delete_session(
                    &self,
                    account_id: Uuid,
                    session_id: Uuid,
                ) -> StoreResult<bool> {
                    let turn = $crate::backend::SqlBackend::write_turn(self).await;
                    let n = sqlx::query("DELETE FROM sessions WHERE id = $1 AND account_id = $2")
                        .bind(session_id)
                        .bind(account_id)
                        .execute(turn.pool())
                        .await?
                        .rows_affected();
                    Ok(n == 1)
                }

                async fn delete_sessions(
                    &self,
                    account_id: Uuid,
                    keep: Option<Uuid>,
                ) -> StoreResult<Vec<Uuid>> {
                    let turn = $crate::backend::SqlBackend::write_turn(self).await;
                    let rows = sqlx::query(
                        "DELETE FROM sessions WHERE account_id = $1 AND ($2 IS NULL OR id <> $2)
                         RETURNING id",
                    )
                    .bind(account_id)
                    .bind(keep)
                    .fetch_all(turn.pool())
                    .await?;
                    rows.iter()
                        .map(|r| r.try_get("id"))
                        .collect::<Result<_, _>>()
                        .map_err(Into::into)
                }

                async fn rename_account(
                    &self,
                    id: Uuid,
                    display_name: &str,
                    now: DateTime<Utc>,
                ) -> StoreResult<AccountRow> {
                    let turn = $crate::backend::SqlBackend::write_turn(self).await;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE accounts SET display_name = $2, updated_at = $3
                         WHERE id = $1 RETURNING {RETURNED}"
                    )))
                    .bind(id)
                    .bind(display_name)
                    .bind(now)
                    .fetch_one(turn.pool())
                    .await?;
                    Ok(account(&row)?)
                }

                async fn upgrade_guest(
                    &self,
                    id: Uuid,
                    email: &str,
                    now: DateTime<Utc>,
                ) -> StoreResult<Upgrade> {
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    let taken: Option<Uuid> =
                        sqlx::query_scalar("SELECT id FROM accounts WHERE email = $1")
                            .bind(email)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if taken.is_some() {
                        return Ok(Upgrade::EmailTaken);
                    }
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE accounts SET email = $2, is_guest = FALSE, updated_at = $3
                         WHERE id = $1 AND is_guest RETURNING {RETURNED}"
                    )))
                    .bind(id)
                    .bind(email)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await;
                    let row = match row {
                        Ok(row) => row,
                        // Another upgrade took the address in between.
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            return Ok(Upgrade::EmailTaken);
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let Some(row) = row else {
                        return Ok(Upgrade::NotGuest);
                    };
                    let upgraded = account(&row)?;
                    tx.commit().await?;
                    Ok(Upgrade::Done(upgraded))
                }

                async fn account(&self, id: Uuid) -> StoreResult<AccountRow> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ACCOUNT} FROM accounts a WHERE a.id = $1"
                    )))
                    .bind(id)
                    .fetch_one($crate::backend::SqlBackend::reader(self))
                    .await?;
                    Ok(account(&row)?)
                }

                async fn list_accounts(
                    &self,
                    filter: &AccountFilter,
                ) -> StoreResult<Vec<AccountRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ACCOUNT} FROM accounts a
                         WHERE ($1 IS NULL OR LOWER(a.email) LIKE $1 ESCAPE '\\'
                                OR LOWER(a.display_name) LIKE $1 ESCAPE '\\')
                           AND ($2 IS NULL OR a.is_guest = $2)
                           AND ($3 IS NULL OR (a.blocked_at IS NOT NULL) = $3)
                           AND ($4 IS NULL OR a.role = $4)
                           AND ($5 IS NULL OR a.id < $5)
                         ORDER BY a.id DESC LIMIT $6"
                    )))
                    .bind(filter.search.as_deref().map(like_pattern))
                    .bind(filter.guest)
                    .bind(filter.blocked)
                    .bind(filter.role.map(Role::as_str))
                    .bind(filter.before)
                    .bind(filter.limit)
                    .fetch_all($crate::backend::SqlBackend::reader(self))
                    .await?;
                    all(&rows, account)
                }

                async fn session_count(&self, account_id: Uuid) -> StoreResult<i64> {
                    Ok(
                        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE account_id = $1")
                            .bind(account_id)
                            .fetch_one($crate::backend::SqlBackend::reader(self))
                            .await?,
                    )
                }

                async fn block_account(
                    &self,
                    id: Uuid,
                    reason: &str,
                    entry: &AuditEntry,
                ) -> StoreResult<(AccountRow, Vec<Uuid>)> {
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE accounts SET
                             blocked_at = COALESCE(blocked_at, $2), blocked_reason = $3,
                             updated_at = $2
                         WHERE id = $1 RETURNING {RETURNED}"
                    )))
                    .bind(id)
                    .bind(entry.at)
                    .bind(reason)
                    .fetch_one(&mut *tx)
                    .await?;
                    let blocked = account(&row)?;
                    let rows = sqlx::query("DELETE FROM sessions WHERE account_id = $1 RETURNING id")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let sessions = rows
                        .iter()
                        .map(|r| r.try_get("id"))
                        .collect::<Result<_, _>>()?;
                    // A blocked account's pending applications are rejected
                    // and the names they reserved released.
                    sqlx::query(
                        "UPDATE game_applications
                         SET status = 'rejected', reason = 'account blocked', decided_at = $2
                         WHERE account_id = $1 AND status = 'pending'",
                    )
                    .bind(id)
                    .bind(entry.at)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM race_names WHERE account_id = $1 AND status = 'pending'")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    insert_audit(&mut *tx, entry).await?;
                    tx.commit().await?;
                    Ok((blocked, sessions))
                }

                async fn unblock_account(
                    &self,
                    id: Uuid,
                    entry: &AuditEntry,
                ) -> StoreResult<AccountRow> {
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE accounts SET blocked_at = NULL, blocked_reason = NULL,
                             updated_at = $2
                         WHERE id = $1 RETURNING {RETURNED}"
                    )))
                    .bind(id)
                    .bind(entry.at)
                    .fetch_one(&mut *tx)
                    .await?;
                    let unblocked = account(&row)?;
                    insert_audit(&mut *tx, entry).await?;
                    tx.commit().await?;
                    Ok(unblocked)
                }

                async fn ensure_admin(&self, new: &NewAccount) -> StoreResult<AccountRow> {
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    sqlx::query(
                        "INSERT INTO accounts (id, email, display_name, role, is_guest,
                             created_at, updated_at)
                         VALUES ($1, $2, $3, $4, FALSE, $5, $5)
                         ON CONFLICT (email) DO UPDATE SET role = excluded.role",
                    )
                    .bind(new.id)
                    .bind(&new.email)
                    .bind(&new.display_name)
                    .bind(Role::Admin.as_str())
                    .bind(new.created_at)
                    .execute(&mut *tx)
                    .await?;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ACCOUNT} FROM accounts a WHERE a.email = $1"
                    )))
                    .bind(&new.email)
                    .fetch_one(&mut *tx)
                    .await?;
                    let admin = account(&row)?;
                    tx.commit().await?;
                    Ok(admin)
                }

                async fn record_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
                    let turn = $crate::backend::SqlBackend::write_turn(self).await;
                    insert_audit(turn.pool(), entry).await
                }

                async fn list_audit(
                    &self,
                    before: Option<Uuid>,
                    limit: i64,
                ) -> StoreResult<Vec<AuditEntry>> {
                    let rows = sqlx::query(
                        "SELECT id, actor_id, actor_email, action, target, detail, at
                         FROM admin_audit WHERE ($1 IS NULL OR id < $1)
                         ORDER BY id DESC LIMIT $2",
                    )
                    .bind(before)
                    .bind(limit)
                    .fetch_all($crate::backend::SqlBackend::reader(self))
                    .await?;
                    all(&rows, audit)
                }

                async fn reap_abandoned_guests(
                    &self,
                    created_before: DateTime<Utc>,
                ) -> StoreResult<Vec<Uuid>> {
                    let turn = $crate::backend::SqlBackend::write_turn(self).await;
                    let rows = sqlx::query(
                        "DELETE FROM accounts
                         WHERE is_guest AND created_at < $1
                           AND NOT EXISTS (
                               SELECT 1 FROM game_players p WHERE p.account_id = accounts.id)
                           AND NOT EXISTS (
                               SELECT 1 FROM games g WHERE g.owner_id = accounts.id)
                         RETURNING id",
                    )
                    .bind(created_before)
                    .fetch_all(turn.pool())
                    .await?;
                    rows.iter()
                        .map(|r| r.try_get("id"))
                        .collect::<Result<_, _>>()
                        .map_err(Into::into)
                }

                async fn add_login_counts(&self, counts: &[LoginCount]) -> StoreResult<()> {
                    if counts.is_empty() {
                        return Ok(());
                    }
                    let mut tx = $crate::backend::SqlBackend::begin_write(self).await?;
                    for c in counts {
                        sqlx::query(
                            "INSERT INTO login_counts (day, country, logins) VALUES ($1, $2, $3)
                             ON CONFLICT (day, country) DO UPDATE
                             SET logins = login_counts.logins + excluded.logins",
                        )
                        .bind(&c.day)
                        .bind(&c.country)
                        .bind(c.logins)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn login_counts(&self, from: &str, to: &str) -> StoreResult<Vec<LoginCount>> {
                    let rows = sqlx::query(
                        "SELECT day, country, logins FROM login_counts
                         WHERE day >= $1 AND day <= $2 ORDER BY day, logins DESC, country",
                    )
                    .bind(from)
                    .bind(to)
                    .fetch_all($crate::backend::SqlBackend::reader(self))
                    .await?;
                    all(&rows, |r| <LoginCount as sqlx::FromRow<'_, $row>>::from_row(r))
                }
            }
        }
    };
}

impl_account_store!(
    sqlite_accounts,
    crate::SqliteStore,
    sqlx::sqlite::SqliteRow,
    crate::TxInner::Sqlite,
    "SQLite",
    crate::notify_sql::sqlite_notify
);
impl_account_store!(
    postgres_accounts,
    crate::PostgresStore,
    sqlx::postgres::PgRow,
    crate::TxInner::Postgres,
    "Postgres",
    crate::notify_sql::postgres_notify
);
