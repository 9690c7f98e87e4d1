//! `TurnStore` for both backends, written once (see turns.rs for what the
//! rows mean and why a turn resolves once).

macro_rules! impl_turn_store {
    ($module:ident, $store:ty, $row:ty, $lobby:path, $notify:path, $lock_rows:literal) => {
        mod $module {
            use chrono::{DateTime, Utc};
            use uuid::Uuid;

            use $lobby as lobby_sql;
            use $notify as notify_sql;
            use crate::backend::SqlBackend;
            use crate::lobby::{GAME_COLUMNS, GameRow, SeatRow};
            use crate::turns::{
                CLOCK_COLUMNS, ClockRow, RecordedTurn, TURN_COLUMNS, TurnClaim, TurnPage, TurnResult,
                TurnRow, TurnStore,
            };
            use crate::StoreResult;

            fn all<T>(rows: &[$row]) -> StoreResult<Vec<T>>
            where
                T: for<'r> sqlx::FromRow<'r, $row>,
            {
                rows.iter()
                    .map(|r| T::from_row(r))
                    .collect::<Result<_, _>>()
                    .map_err(Into::into)
            }

            fn one<T>(row: Option<&$row>) -> StoreResult<Option<T>>
            where
                T: for<'r> sqlx::FromRow<'r, $row>,
            {
                row.map(|r| T::from_row(r)).transpose().map_err(Into::into)
            }

            /// Writes every field of a clock (and raises its version) where
            /// the row also meets `guard` on `$2` (its version, or the turn
            /// it must still have open); the rows changed.
            async fn write_clock<'c, E>(
                conn: E,
                c: &ClockRow,
                guard: &'static str,
                key: i64,
            ) -> StoreResult<u64>
            where
                E: sqlx::Executor<'c, Database = <$row as sqlx::Row>::Database>,
            {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE game_clocks SET turn = $3, opened_at = $4, anchor_at = $5,
                         slot_at = $6, due_at = $7, trigger = $8, to_move = $9,
                         awaiting = $10, extended = $11, excused = $12, paused_at = $13,
                         attempts = $14, updated_at = $15, version = version + 1
                     WHERE game_id = $1 AND {guard}"
                )))
                .bind(c.game_id)
                .bind(key)
                .bind(c.turn)
                .bind(c.opened_at)
                .bind(c.anchor_at)
                .bind(c.slot_at)
                .bind(c.due_at)
                .bind(c.trigger.as_str())
                .bind(&c.to_move)
                .bind(&c.awaiting)
                .bind(c.extended)
                .bind(c.excused)
                .bind(c.paused_at)
                .bind(c.attempts)
                .bind(c.updated_at)
                .execute(conn)
                .await?;
                Ok(done.rows_affected())
            }

            #[async_trait::async_trait]
            impl TurnStore for $store {
                async fn clock(&self, game: Uuid) -> StoreResult<Option<ClockRow>> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {CLOCK_COLUMNS} FROM game_clocks WHERE game_id = $1"
                    )))
                    .bind(game)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?;
                    one(row.as_ref())
                }

                async fn due_clocks(
                    &self,
                    now: DateTime<Utc>,
                    limit: i64,
                ) -> StoreResult<Vec<ClockRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {CLOCK_COLUMNS} FROM game_clocks
                         WHERE due_at IS NOT NULL AND due_at <= $1
                         ORDER BY due_at LIMIT $2"
                    )))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows)
                }

                async fn next_due_after(
                    &self,
                    now: DateTime<Utc>,
                ) -> StoreResult<Option<DateTime<Utc>>> {
                    Ok(sqlx::query_scalar(
                        "SELECT due_at FROM game_clocks WHERE due_at > $1
                         ORDER BY due_at LIMIT 1",
                    )
                    .bind(now)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?)
                }

                async fn due_count(&self, now: DateTime<Utc>) -> StoreResult<i64> {
                    Ok(sqlx::query_scalar(
                        "SELECT COUNT(*) FROM game_clocks WHERE due_at IS NOT NULL AND due_at <= $1",
                    )
                    .bind(now)
                    .fetch_one(SqlBackend::reader(self))
                    .await?)
                }

                async fn update_clock(&self, c: &ClockRow) -> StoreResult<bool> {
                    let turn = SqlBackend::write_turn(self).await;
                    let done = write_clock(turn.pool(), c, "version = $2", c.version).await?;
                    Ok(done == 1)
                }

                async fn update_clock_telling(
                    &self,
                    c: &ClockRow,
                    notices: &[crate::notify::NewNotice],
                ) -> StoreResult<bool> {
                    if notices.is_empty() {
                        return self.update_clock(c).await;
                    }
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let done = write_clock(&mut *tx, c, "version = $2", c.version).await?;
                    if done != 1 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    notify_sql::write_in(&mut tx, notices, c.updated_at).await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn claim_turn(&self, c: &TurnClaim<'_>) -> StoreResult<Option<TurnRow>> {
                    Ok(self.claim_turns(std::slice::from_ref(c)).await?.pop())
                }

                async fn claim_turns(&self, claims: &[TurnClaim<'_>]) -> StoreResult<Vec<TurnRow>> {
                    // Three statements for the whole batch, whatever its
                    // size: lock the clocks that still have these turns
                    // open, insert (or take over) the turns' rows, and move
                    // the claimed clocks' due time to the lease's end.
                    let Some(first) = claims.first() else {
                        return Ok(Vec::new());
                    };
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let pairs: Vec<String> = (0..claims.len())
                        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                        .collect();
                    let sql = format!(
                        "SELECT game_id FROM game_clocks
                         WHERE due_at IS NOT NULL AND (game_id, turn) IN (VALUES {})
                         ORDER BY game_id{}",
                        pairs.join(", "),
                        $lock_rows
                    );
                    let mut query = sqlx::query_scalar::<_, Uuid>(sqlx::AssertSqlSafe(sql));
                    for c in claims {
                        query = query.bind(c.game_id).bind(c.turn);
                    }
                    let open = query.fetch_all(&mut *tx).await?;
                    let open: Vec<&TurnClaim<'_>> =
                        claims.iter().filter(|c| open.contains(&c.game_id)).collect();
                    if open.is_empty() {
                        return Ok(Vec::new());
                    }
                    let rows: Vec<String> = (0..open.len())
                        .map(|i| {
                            let p = 7 * i;
                            format!(
                                "(${}, ${}, 'claimed', ${}, ${}, ${}, ${}, ${})",
                                p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7
                            )
                        })
                        .collect();
                    let sql = format!(
                        "INSERT INTO game_turns (game_id, turn, status, trigger, due_at,
                             claimed_at, claimed_by, lease_until)
                         VALUES {}
                         ON CONFLICT (game_id, turn) DO UPDATE
                         SET claimed_by = excluded.claimed_by,
                             lease_until = excluded.lease_until
                         WHERE game_turns.status = 'claimed'
                           AND game_turns.lease_until <= excluded.claimed_at
                         RETURNING {TURN_COLUMNS}",
                        rows.join(", ")
                    );
                    let until = |c: &TurnClaim<'_>| {
                        c.now + chrono::Duration::from_std(c.lease).unwrap_or(chrono::Duration::MAX)
                    };
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for c in &open {
                        query = query
                            .bind(c.game_id)
                            .bind(c.turn)
                            .bind(c.trigger.as_str())
                            .bind(c.due_at)
                            .bind(c.now)
                            .bind(c.owner)
                            .bind(until(c));
                    }
                    let claimed: Vec<TurnRow> = all(&query.fetch_all(&mut *tx).await?)?;
                    if !claimed.is_empty() {
                        let ids: Vec<String> =
                            (0..claimed.len()).map(|i| format!("${}", i + 3)).collect();
                        let sql = format!(
                            "UPDATE game_clocks SET due_at = $1, version = version + 1,
                                 updated_at = $2
                             WHERE game_id IN ({})",
                            ids.join(", ")
                        );
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(until(first))
                            .bind(first.now);
                        for row in &claimed {
                            query = query.bind(row.game_id);
                        }
                        query.execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(claimed)
                }

                async fn release_turn(
                    &self,
                    game: Uuid,
                    turn: i64,
                    owner: &str,
                    retry_at: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> StoreResult<()> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let held = sqlx::query(
                        "UPDATE game_turns SET lease_until = $4
                         WHERE game_id = $1 AND turn = $2 AND status = 'claimed'
                           AND claimed_by = $3
                         RETURNING turn",
                    )
                    .bind(game)
                    .bind(turn)
                    .bind(owner)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if held.is_some() {
                        sqlx::query(
                            "UPDATE game_clocks SET due_at = $3, attempts = attempts + 1,
                                 version = version + 1, updated_at = $4
                             WHERE game_id = $1 AND turn = $2 AND due_at IS NOT NULL",
                        )
                        .bind(game)
                        .bind(turn)
                        .bind(retry_at)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                    }
                    Ok(())
                }

                async fn record_turn(&self, r: &TurnResult) -> StoreResult<Option<RecordedTurn>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    // The clock's row first, as a claim takes it, so that a
                    // record and a claim of the same game never wait for
                    // each other in opposite orders (a deadlock on Postgres).
                    sqlx::query("UPDATE game_clocks SET version = version WHERE game_id = $1")
                        .bind(r.game_id)
                        .execute(&mut *tx)
                        .await?;
                    // A claim becomes the result; a sequential move (no
                    // claim) is inserted as resolved. A row already
                    // resolved means the turn was recorded before.
                    let recorded = sqlx::query(
                        "INSERT INTO game_turns (game_id, turn, status, trigger, due_at,
                             claimed_at, sent_at, resolved_at, lateness_ms, duration_ms,
                             resolution)
                         VALUES ($1, $2, 'resolved', $3, $4, $5, $5, $6, $7, $8, $9)
                         ON CONFLICT (game_id, turn) DO UPDATE
                         SET status = 'resolved', sent_at = excluded.sent_at,
                             resolved_at = excluded.resolved_at,
                             lateness_ms = excluded.lateness_ms,
                             duration_ms = excluded.duration_ms,
                             resolution = excluded.resolution,
                             lease_until = NULL
                         WHERE game_turns.status = 'claimed'
                         RETURNING turn",
                    )
                    .bind(r.game_id)
                    .bind(r.turn)
                    .bind(r.trigger.as_str())
                    .bind(r.due_at)
                    .bind(r.sent_at)
                    .bind(r.resolved_at)
                    .bind(r.lateness_ms)
                    .bind(r.duration_ms)
                    .bind(&r.resolution)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if recorded.is_none() {
                        return Ok(None);
                    }
                    match &r.next {
                        Some(c) => {
                            write_clock(&mut *tx, c, "turn = $2", r.turn).await?;
                        }
                        None => {
                            sqlx::query("DELETE FROM game_clocks WHERE game_id = $1")
                                .bind(r.game_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    sqlx::query("DELETE FROM turn_submissions WHERE game_id = $1 AND turn <= $2")
                        .bind(r.game_id)
                        .bind(r.turn)
                        .execute(&mut *tx)
                        .await?;
                    for seat in &r.missed {
                        sqlx::query("UPDATE game_players SET misses = misses + 1 WHERE id = $1")
                            .bind(seat)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for seat in &r.acted {
                        sqlx::query("UPDATE game_players SET misses = 0 WHERE id = $1")
                            .bind(seat)
                            .execute(&mut *tx)
                            .await?;
                    }
                    notify_sql::write_in(&mut tx, &r.notices, r.resolved_at).await?;
                    let finished = match &r.finish {
                        Some(change) => lobby_sql::transition_in(&mut tx, change, None).await?,
                        None => None,
                    };
                    tx.commit().await?;
                    // Read after the commit, off the writer (on SQLite the
                    // one writer is what every turn waits for).
                    let game_row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {GAME_COLUMNS} FROM games g WHERE g.id = $1"
                    )))
                    .bind(r.game_id)
                    .fetch_one(SqlBackend::reader(self))
                    .await?;
                    let game: GameRow = sqlx::FromRow::from_row(&game_row)?;
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {} FROM game_players WHERE game_id = $1 ORDER BY joined_at, id",
                        lobby_sql::SEAT
                    )))
                    .bind(r.game_id)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    let seats: Vec<SeatRow> = all(&rows)?;
                    Ok(Some(RecordedTurn {
                        game,
                        seats,
                        finished,
                    }))
                }

                async fn submit(
                    &self,
                    game: Uuid,
                    turn: i64,
                    seat: Uuid,
                    now: DateTime<Utc>,
                ) -> StoreResult<Option<Vec<Uuid>>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    // Open and not claimed: the clock has the turn, and no
                    // scheduler holds its row.
                    let open: Option<i64> = sqlx::query_scalar(
                        "SELECT c.turn FROM game_clocks c
                         WHERE c.game_id = $1 AND c.turn = $2
                           AND NOT EXISTS (SELECT 1 FROM game_turns t
                                           WHERE t.game_id = c.game_id AND t.turn = c.turn)",
                    )
                    .bind(game)
                    .bind(turn)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if open.is_none() {
                        return Ok(None);
                    }
                    sqlx::query(
                        "INSERT INTO turn_submissions (game_id, turn, seat_id, submitted_at)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (game_id, turn, seat_id)
                         DO UPDATE SET submitted_at = excluded.submitted_at",
                    )
                    .bind(game)
                    .bind(turn)
                    .bind(seat)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let seats = sqlx::query_scalar(
                        "SELECT seat_id FROM turn_submissions WHERE game_id = $1 AND turn = $2
                         ORDER BY seat_id",
                    )
                    .bind(game)
                    .bind(turn)
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Some(seats))
                }

                async fn submissions(&self, game: Uuid, turn: i64) -> StoreResult<Vec<Uuid>> {
                    Ok(sqlx::query_scalar(
                        "SELECT seat_id FROM turn_submissions WHERE game_id = $1 AND turn = $2
                         ORDER BY seat_id",
                    )
                    .bind(game)
                    .bind(turn)
                    .fetch_all(SqlBackend::reader(self))
                    .await?)
                }

                async fn turn(&self, game: Uuid, turn: i64) -> StoreResult<Option<TurnRow>> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {TURN_COLUMNS} FROM game_turns WHERE game_id = $1 AND turn = $2"
                    )))
                    .bind(game)
                    .bind(turn)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?;
                    one(row.as_ref())
                }

                async fn turns(&self, game: Uuid, page: TurnPage) -> StoreResult<Vec<TurnRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {TURN_COLUMNS} FROM game_turns
                         WHERE game_id = $1 AND ($2 IS NULL OR turn < $2)
                         ORDER BY turn DESC LIMIT $3"
                    )))
                    .bind(game)
                    .bind(page.before)
                    .bind(page.limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows)
                }

                async fn set_bot_control(&self, seat: Uuid, bot: bool) -> StoreResult<()> {
                    let turn = SqlBackend::write_turn(self).await;
                    sqlx::query(
                        "UPDATE game_players SET bot_control = $2,
                             misses = CASE WHEN $2 THEN misses ELSE 0 END
                         WHERE id = $1",
                    )
                    .bind(seat)
                    .bind(bot)
                    .execute(turn.pool())
                    .await?;
                    Ok(())
                }

                async fn spend_excuses(&self, seats: &[Uuid]) -> StoreResult<()> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    for seat in seats {
                        sqlx::query(
                            "UPDATE game_players SET excuses_used = excuses_used + 1 WHERE id = $1",
                        )
                        .bind(seat)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
            }
        }
    };
}

// SQLite's write transaction holds the whole database; Postgres locks the
// clocks' rows, in game order, so that two batches never wait for each
// other crosswise.
impl_turn_store!(
    sqlite_turns,
    crate::SqliteStore,
    sqlx::sqlite::SqliteRow,
    crate::lobby_sql::sqlite_lobby,
    crate::notify_sql::sqlite_notify,
    ""
);
impl_turn_store!(
    postgres_turns,
    crate::PostgresStore,
    sqlx::postgres::PgRow,
    crate::lobby_sql::postgres_lobby,
    crate::notify_sql::postgres_notify,
    " FOR UPDATE"
);
