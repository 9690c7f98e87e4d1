//! `LobbyStore` for both backends, written once: the statements are the
//! same text on SQLite and Postgres.
//!
//! Every change that must see a consistent game first touches the game's
//! row (`UPDATE games … WHERE id = $1 RETURNING …`): on Postgres that takes
//! the row lock until commit, on SQLite the write gate already orders
//! writers. So an application cannot slip into a game whose enrolment is
//! closing, and seats are counted in the very statement that checks the
//! maximum.

macro_rules! impl_lobby_store {
    ($module:ident, $store:ty, $row:ty, $accounts:path, $runtime:path, $notify:path) => {
        pub(crate) mod $module {
            use chrono::{DateTime, Utc};
            use sqlx::Row as _;
            use subtle::ConstantTimeEq as _;
            use uuid::Uuid;

            use $accounts as accounts_sql;
            use $runtime as runtime_sql;
            use $notify as notify_sql;
            use crate::notify::NewNotice;
            use crate::accounts::AuditEntry;
            use crate::backend::SqlBackend;
            use crate::lobby::{
                Applied, ApplicationRow, ApplicationStatus, GAME_COLUMNS, GameEdit, GameFilter, GameRow,
                GameState, LobbyStore, MyGame, NameHold, NewApplication, NewBot, NewGame,
                RaceNameRow, SeatRefusal, SeatRow, StateChange, StateChangeRow, Transitioned,
                Visibility,
            };
            use crate::{StoreError, StoreResult, like_pattern};

            /// [`GAME_COLUMNS`] unqualified, for `RETURNING` (SQLite takes no
            /// alias there).
            const GAME_RETURNED: &str = "id, owner_id, title, engine, engine_version, settings, \
                 min_players, max_players, seats_taken, enrol_deadline, schedule, visibility, \
                 invite_code, state, created_at, updated_at, started_at, ended_at, start_error, \
                 rules";
            const APPLICATION: &str = "id, game_id, account_id, race_name, status, reason, \
                 created_at, decided_at, expires_at, seat_id";
            pub(crate) const SEAT: &str = "id, game_id, account_id, is_bot, race_name, status, \
                 joined_at, resigned_at, misses, excuses_used, bot_control";

            type Tx = <$store as SqlBackend>::WriteTx;

            fn game(row: &$row) -> Result<GameRow, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            fn application(row: &$row) -> Result<ApplicationRow, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            fn seat(row: &$row) -> Result<SeatRow, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            fn all<T>(rows: &[$row], f: fn(&$row) -> Result<T, sqlx::Error>) -> StoreResult<Vec<T>> {
                rows.iter()
                    .map(f)
                    .collect::<Result<_, _>>()
                    .map_err(Into::into)
            }

            /// The game's row, locked for the rest of the transaction.
            struct Locked {
                owner_id: Uuid,
                title: String,
                state: GameState,
                seats_taken: i64,
                max_players: i64,
                visibility: Visibility,
                invite_code: Option<String>,
            }

            async fn lock_game(tx: &mut Tx, id: Uuid) -> StoreResult<Option<Locked>> {
                let row = sqlx::query(
                    "UPDATE games SET updated_at = updated_at WHERE id = $1
                     RETURNING owner_id, title, state, seats_taken, max_players, visibility,
                         invite_code",
                )
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let state: String = row.try_get("state")?;
                let visibility: String = row.try_get("visibility")?;
                Ok(Some(Locked {
                    owner_id: row.try_get("owner_id")?,
                    title: row.try_get("title")?,
                    state: GameState::try_from(state).map_err(stored)?,
                    seats_taken: row.try_get("seats_taken")?,
                    max_players: row.try_get("max_players")?,
                    visibility: Visibility::try_from(visibility).map_err(stored)?,
                    invite_code: row.try_get("invite_code")?,
                }))
            }

            fn stored(message: String) -> StoreError {
                StoreError::Unexpected(anyhow::anyhow!("a stored value does not parse: {message}"))
            }

            /// Takes a seat in a locked game: the count rises only while it is
            /// below the maximum and the game enrolling.
            async fn take_seat(
                tx: &mut Tx,
                id: Uuid,
                now: DateTime<Utc>,
            ) -> StoreResult<Result<(), SeatRefusal>> {
                let raised = sqlx::query(
                    "UPDATE games SET seats_taken = seats_taken + 1, updated_at = $2
                     WHERE id = $1 AND state = 'enrolling' AND seats_taken < max_players
                     RETURNING id",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
                if raised.is_some() {
                    return Ok(Ok(()));
                }
                Ok(Err(match lock_game(tx, id).await? {
                    None => SeatRefusal::NoGame,
                    Some(g) if g.state != GameState::Enrolling => SeatRefusal::NotEnrolling(g.state),
                    Some(_) => SeatRefusal::Full,
                }))
            }

            /// A race name to enter in the directory: pending until
            /// `expires_at` when it has one, registered otherwise.
            struct Hold<'a> {
                key: &'a str,
                name: &'a str,
                game_id: Uuid,
                account_id: Option<Uuid>,
                application_id: Option<Uuid>,
                expires_at: Option<DateTime<Utc>>,
                now: DateTime<Utc>,
            }

            async fn hold_name(tx: &mut Tx, h: Hold<'_>) -> StoreResult<Result<(), SeatRefusal>> {
                let Hold { key, name, game_id, account_id, application_id, expires_at, now } = h;
                let hold = if expires_at.is_some() {
                    NameHold::Pending
                } else {
                    NameHold::Registered
                };
                let inserted = sqlx::query(
                    "INSERT INTO race_names
                         (name_key, name, game_id, account_id, application_id, status,
                          expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (name_key) DO NOTHING RETURNING name_key",
                )
                .bind(key)
                .bind(name)
                .bind(game_id)
                .bind(account_id)
                .bind(application_id)
                .bind(hold.as_str())
                .bind(expires_at)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
                if inserted.is_some() {
                    return Ok(Ok(()));
                }
                let held: Option<String> =
                    sqlx::query_scalar("SELECT status FROM race_names WHERE name_key = $1")
                        .bind(key)
                        .fetch_optional(&mut **tx)
                        .await?;
                let hold = held
                    .map(NameHold::try_from)
                    .transpose()
                    .map_err(stored)?
                    .unwrap_or(NameHold::Registered);
                Ok(Err(SeatRefusal::NameHeld(hold)))
            }

            /// Why an application could not be changed: it is not there, or
            /// not pending.
            async fn application_refusal(
                tx: &mut Tx,
                game_id: Uuid,
                id: Uuid,
            ) -> StoreResult<SeatRefusal> {
                let status: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM game_applications WHERE id = $1 AND game_id = $2",
                )
                .bind(id)
                .bind(game_id)
                .fetch_optional(&mut **tx)
                .await?;
                Ok(match status {
                    None => SeatRefusal::NoApplication,
                    Some(s) => SeatRefusal::NotPending(
                        ApplicationStatus::try_from(s).map_err(stored)?,
                    ),
                })
            }

            /// A seat read from columns prefixed `p_`, absent when the join
            /// found none.
            fn prefixed_seat(row: &$row) -> Result<Option<SeatRow>, sqlx::Error> {
                let Some(id) = row.try_get::<Option<Uuid>, _>("p_id")? else {
                    return Ok(None);
                };
                let status: String = row.try_get("p_status")?;
                Ok(Some(SeatRow {
                    id,
                    game_id: row.try_get("id")?,
                    account_id: row.try_get("p_account_id")?,
                    is_bot: row.try_get("p_is_bot")?,
                    race_name: row.try_get("p_race_name")?,
                    status: status
                        .try_into()
                        .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                    joined_at: row.try_get("p_joined_at")?,
                    resigned_at: row.try_get("p_resigned_at")?,
                    misses: row.try_get("p_misses")?,
                    excuses_used: row.try_get("p_excuses_used")?,
                    bot_control: row.try_get("p_bot_control")?,
                }))
            }

            /// An application read from columns prefixed `a_`.
            fn prefixed_application(row: &$row) -> Result<Option<ApplicationRow>, sqlx::Error> {
                let Some(id) = row.try_get::<Option<Uuid>, _>("a_id")? else {
                    return Ok(None);
                };
                let status: String = row.try_get("a_status")?;
                Ok(Some(ApplicationRow {
                    id,
                    game_id: row.try_get("id")?,
                    account_id: row.try_get("a_account_id")?,
                    race_name: row.try_get("a_race_name")?,
                    status: status
                        .try_into()
                        .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                    reason: row.try_get("a_reason")?,
                    created_at: row.try_get("a_created_at")?,
                    decided_at: row.try_get("a_decided_at")?,
                    expires_at: row.try_get("a_expires_at")?,
                    seat_id: row.try_get("a_seat_id")?,
                }))
            }

            /// [`LobbyStore::transition_game`] inside the caller's
            /// transaction (the turns store ends a game with its last
            /// turn's record).
            pub(crate) async fn transition_in(
                tx: &mut Tx,
                c: &StateChange,
                audit: Option<&AuditEntry>,
            ) -> StoreResult<Option<Transitioned>> {
                let started = (c.to == GameState::Running).then_some(c.at);
                let ended = c.to.is_over().then_some(c.at);
                let start_error =
                    (c.to == GameState::StartFailed).then_some(c.reason.as_str());
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE games SET state = $3, updated_at = $4,
                         started_at = COALESCE(started_at, $5),
                         ended_at = COALESCE($6, ended_at),
                         start_error = $7
                     WHERE id = $1 AND state = $2
                     RETURNING {GAME_RETURNED}"
                )))
                .bind(c.game_id)
                .bind(c.from.as_str())
                .bind(c.to.as_str())
                .bind(c.at)
                .bind(started)
                .bind(ended)
                .bind(start_error)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let moved = game(&row)?;
                sqlx::query(
                    "INSERT INTO game_state_changes
                         (id, game_id, from_state, to_state, actor_id, reason, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(c.id)
                .bind(c.game_id)
                .bind(c.from.as_str())
                .bind(c.to.as_str())
                .bind(c.actor_id)
                .bind(&c.reason)
                .bind(c.at)
                .execute(&mut **tx)
                .await?;
                let mut closed = Vec::new();
                if c.from == GameState::Enrolling || c.to.is_over() {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE game_applications SET status = 'closed', decided_at = $2
                         WHERE game_id = $1 AND status = 'pending'
                         RETURNING {APPLICATION}"
                    )))
                    .bind(c.game_id)
                    .bind(c.at)
                    .fetch_all(&mut **tx)
                    .await?;
                    closed = all(&rows, application)?;
                    sqlx::query(
                        "DELETE FROM race_names WHERE game_id = $1 AND status = 'pending'",
                    )
                    .bind(c.game_id)
                    .execute(&mut **tx)
                    .await?;
                }
                if c.to.is_over() {
                    sqlx::query("DELETE FROM race_names WHERE game_id = $1")
                        .bind(c.game_id)
                        .execute(&mut **tx)
                        .await?;
                }
                notify_sql::write_in(tx, &c.notices, c.at).await?;
                // The runtime's work, queued with the move (see
                // runtime_sql.rs for the queue).
                let job = match (c.from, c.to) {
                    (_, GameState::Starting) => Some("start"),
                    (GameState::Enrolling, _) => None,
                    (_, to) if to.is_over() => Some("stop"),
                    _ => None,
                };
                if let Some(kind) = job {
                    runtime_sql::queue_job(&mut **tx, c.game_id, kind, c.at, c.at).await?;
                }
                // The turn scheduler's clock (see turns.rs): a game that
                // begins gets one, due at once so that the scheduler opens
                // its first turn; pausing stops it; resuming makes it due
                // so that the scheduler gives the turn a new deadline; an
                // ending removes it.
                match (c.from, c.to) {
                    (GameState::Starting, GameState::Running) => {
                        sqlx::query(
                            "INSERT INTO game_clocks (game_id, turn, opened_at, anchor_at,
                                 slot_at, due_at, trigger, to_move, awaiting, extended, excused,
                                 paused_at, attempts, version, updated_at)
                             VALUES ($1, 1, $2, $2, NULL, $2, 'open', '[]', '[]', FALSE, FALSE,
                                 NULL, 0, 0, $2)
                             ON CONFLICT (game_id) DO NOTHING",
                        )
                        .bind(c.game_id)
                        .bind(c.at)
                        .execute(&mut **tx)
                        .await?;
                    }
                    (_, GameState::Paused) => {
                        sqlx::query(
                            "UPDATE game_clocks SET paused_at = $2, due_at = NULL,
                                 version = version + 1, updated_at = $2
                             WHERE game_id = $1",
                        )
                        .bind(c.game_id)
                        .bind(c.at)
                        .execute(&mut **tx)
                        .await?;
                    }
                    (GameState::Paused, GameState::Running) => {
                        sqlx::query(
                            "UPDATE game_clocks SET due_at = $2, trigger = 'resume',
                                 paused_at = NULL, version = version + 1, updated_at = $2
                             WHERE game_id = $1",
                        )
                        .bind(c.game_id)
                        .bind(c.at)
                        .execute(&mut **tx)
                        .await?;
                    }
                    (_, to) if to.is_over() => {
                        sqlx::query("DELETE FROM game_clocks WHERE game_id = $1")
                            .bind(c.game_id)
                            .execute(&mut **tx)
                            .await?;
                    }
                    _ => {}
                }
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {SEAT} FROM game_players WHERE game_id = $1 ORDER BY joined_at, id"
                )))
                .bind(c.game_id)
                .fetch_all(&mut **tx)
                .await?;
                let seats = all(&rows, seat)?;
                if let Some(entry) = audit {
                    accounts_sql::insert_audit(&mut **tx, entry).await?;
                }
                Ok(Some(Transitioned {
                    game: moved,
                    closed,
                    seats,
                }))
            }

            /// Approves a substitute: the seat passes to the applicant (its
            /// race name and history stay), back from the bot, misses and
            /// excuses cleared, if it is still open.
            async fn substitute_in(
                mut tx: Tx,
                game_id: Uuid,
                id: Uuid,
                seat_id: Uuid,
                now: DateTime<Utc>,
            ) -> StoreResult<Result<(ApplicationRow, SeatRow), SeatRefusal>> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE game_applications SET status = 'approved', decided_at = $3
                     WHERE id = $1 AND game_id = $2 AND status = 'pending'
                     RETURNING {APPLICATION}"
                )))
                .bind(id)
                .bind(game_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(Err(application_refusal(&mut tx, game_id, id).await?));
                };
                let approved = application(&row)?;
                let before: Option<Option<Uuid>> = sqlx::query_scalar(
                    "SELECT account_id FROM game_players
                     WHERE id = $1 AND game_id = $2 AND bot_control AND NOT is_bot
                       AND status = 'active'",
                )
                .bind(seat_id)
                .bind(game_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(previous) = before else {
                    return Ok(Err(SeatRefusal::SeatNotOpen));
                };
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE game_players SET account_id = $2, bot_control = FALSE, misses = 0,
                         excuses_used = 0
                     WHERE id = $1
                     RETURNING {SEAT}"
                )))
                .bind(seat_id)
                .bind(approved.account_id)
                .fetch_one(&mut *tx)
                .await?;
                let seated = seat(&row)?;
                sqlx::query(
                    "UPDATE race_names SET account_id = $3
                     WHERE game_id = $1 AND account_id IS NOT DISTINCT FROM $2
                       AND status = 'registered' AND name = $4",
                )
                .bind(game_id)
                .bind(previous)
                .bind(approved.account_id)
                .bind(&seated.race_name)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Ok((approved, seated)))
            }

            #[async_trait::async_trait]
            impl LobbyStore for $store {
                async fn create_game(&self, g: &NewGame, actor: Uuid) -> StoreResult<GameRow> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO games (id, owner_id, title, engine, engine_version, settings,
                             min_players, max_players, seats_taken, enrol_deadline, schedule,
                             visibility, invite_code, state, created_at, updated_at, rules)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, $12,
                             'enrolling', $13, $13, $14)
                         RETURNING {GAME_RETURNED}"
                    )))
                    .bind(g.id)
                    .bind(g.owner_id)
                    .bind(&g.title)
                    .bind(&g.engine)
                    .bind(&g.engine_version)
                    .bind(&g.settings)
                    .bind(g.min_players)
                    .bind(g.max_players)
                    .bind(g.enrol_deadline)
                    .bind(&g.schedule)
                    .bind(g.visibility.as_str())
                    .bind(&g.invite_code)
                    .bind(g.created_at)
                    .bind(&g.rules)
                    .fetch_one(&mut *tx)
                    .await?;
                    let created = game(&row)?;
                    sqlx::query(
                        "INSERT INTO game_state_changes
                             (id, game_id, from_state, to_state, actor_id, reason, at)
                         VALUES ($1, $2, NULL, 'enrolling', $3, 'created', $4)",
                    )
                    .bind(Uuid::now_v7())
                    .bind(g.id)
                    .bind(actor)
                    .bind(g.created_at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(created)
                }

                async fn game(&self, id: Uuid) -> StoreResult<GameRow> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {GAME_COLUMNS} FROM games g WHERE g.id = $1"
                    )))
                    .bind(id)
                    .fetch_one(SqlBackend::reader(self))
                    .await?;
                    Ok(game(&row)?)
                }

                async fn list_games(&self, f: &GameFilter) -> StoreResult<Vec<GameRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {GAME_COLUMNS} FROM games g
                         WHERE ($1 = FALSE OR g.visibility = 'public')
                           AND ($2 IS NULL OR g.engine = $2)
                           AND ($3 IS NULL OR g.state = $3)
                           AND ($4 IS NULL OR g.max_players - g.seats_taken >= $4)
                           AND ($5 IS NULL OR LOWER(g.title) LIKE $5 ESCAPE '\\')
                           AND ($6 IS NULL OR g.owner_id = $6)
                           AND ($7 IS NULL OR g.id < $7)
                         ORDER BY g.id DESC LIMIT $8"
                    )))
                    .bind(f.public_only)
                    .bind(&f.engine)
                    .bind(f.state.map(GameState::as_str))
                    .bind(f.min_free_seats)
                    .bind(f.search.as_deref().map(like_pattern))
                    .bind(f.owner)
                    .bind(f.before)
                    .bind(f.limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows, game)
                }

                async fn my_games(
                    &self,
                    account: Uuid,
                    before: Option<Uuid>,
                    limit: i64,
                ) -> StoreResult<Vec<MyGame>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {GAME_COLUMNS},
                             p.id AS p_id, p.account_id AS p_account_id, p.is_bot AS p_is_bot,
                             p.race_name AS p_race_name, p.status AS p_status,
                             p.joined_at AS p_joined_at, p.resigned_at AS p_resigned_at,
                             p.misses AS p_misses, p.excuses_used AS p_excuses_used,
                             p.bot_control AS p_bot_control,
                             a.id AS a_id, a.account_id AS a_account_id,
                             a.race_name AS a_race_name, a.status AS a_status,
                             a.reason AS a_reason, a.created_at AS a_created_at,
                             a.decided_at AS a_decided_at, a.expires_at AS a_expires_at,
                             a.seat_id AS a_seat_id
                         FROM games g
                         LEFT JOIN game_players p ON p.game_id = g.id AND p.account_id = $1
                         LEFT JOIN game_applications a
                             ON a.game_id = g.id AND a.account_id = $1 AND a.status = 'pending'
                         WHERE (g.owner_id = $1 OR p.id IS NOT NULL OR a.id IS NOT NULL)
                           AND ($2 IS NULL OR g.id < $2)
                         ORDER BY g.id DESC LIMIT $3"
                    )))
                    .bind(account)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(MyGame {
                                game: game(row)?,
                                seat: prefixed_seat(row)?,
                                application: prefixed_application(row)?,
                            })
                        })
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(Into::into)
                }

                async fn edit_game(
                    &self,
                    id: Uuid,
                    e: &GameEdit,
                    now: DateTime<Utc>,
                ) -> StoreResult<GameRow> {
                    // The write turn ends with this block, before the read below.
                    let row = {
                        let turn = SqlBackend::write_turn(self).await;
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE games SET
                             title = COALESCE($2, title),
                             settings = COALESCE($3, settings),
                             min_players = COALESCE($4, min_players),
                             max_players = COALESCE($5, max_players),
                             enrol_deadline = COALESCE($6, enrol_deadline),
                             schedule = COALESCE($7, schedule),
                             rules = COALESCE($9, rules),
                             updated_at = $8
                         WHERE id = $1 AND state = 'enrolling'
                           AND COALESCE($5, max_players) >= seats_taken
                         RETURNING {GAME_RETURNED}"
                    )))
                    .bind(id)
                    .bind(&e.title)
                    .bind(&e.settings)
                    .bind(e.min_players)
                    .bind(e.max_players)
                    .bind(e.enrol_deadline)
                    .bind(&e.schedule)
                    .bind(now)
                    .bind(&e.rules)
                    .fetch_optional(turn.pool())
                    .await?
                    };
                    if let Some(row) = row {
                        return Ok(game(&row)?);
                    }
                    let current = LobbyStore::game(self, id).await?;
                    Err(StoreError::Conflict(if current.state == GameState::Enrolling {
                        format!(
                            "{} seats are taken; max_players cannot be lower",
                            current.seats_taken
                        )
                    } else {
                        format!(
                            "the game is {}; only an enrolling game can be edited",
                            current.state.as_str()
                        )
                    }))
                }

                async fn transition_game(
                    &self,
                    c: &StateChange,
                    audit: Option<&AuditEntry>,
                ) -> StoreResult<Option<Transitioned>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let moved = transition_in(&mut tx, c, audit).await?;
                    if moved.is_some() {
                        tx.commit().await?;
                    }
                    Ok(moved)
                }

                async fn state_history(&self, id: Uuid) -> StoreResult<Vec<StateChangeRow>> {
                    let rows = sqlx::query(
                        "SELECT id, game_id, from_state, to_state, actor_id, reason, at
                         FROM game_state_changes WHERE game_id = $1 ORDER BY id",
                    )
                    .bind(id)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows, |r| sqlx::FromRow::from_row(r))
                }

                async fn transfer_game(
                    &self,
                    id: Uuid,
                    owner: Uuid,
                    audit: &AuditEntry,
                ) -> StoreResult<GameRow> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE games SET owner_id = $2, updated_at = $3 WHERE id = $1
                         RETURNING {GAME_RETURNED}"
                    )))
                    .bind(id)
                    .bind(owner)
                    .bind(audit.at)
                    .fetch_one(&mut *tx)
                    .await?;
                    let moved = game(&row)?;
                    accounts_sql::insert_audit(&mut *tx, audit).await?;
                    tx.commit().await?;
                    Ok(moved)
                }

                async fn apply(
                    &self,
                    a: &NewApplication,
                    notices: &[NewNotice],
                ) -> StoreResult<Result<Applied, SeatRefusal>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let Some(g) = lock_game(&mut tx, a.game_id).await? else {
                        return Ok(Err(SeatRefusal::NoGame));
                    };
                    if g.state != GameState::Enrolling {
                        return Ok(Err(SeatRefusal::NotEnrolling(g.state)));
                    }
                    if g.visibility == Visibility::Unlisted {
                        let given = a.invite_code.as_deref().unwrap_or("").as_bytes();
                        let own = g.invite_code.as_deref().unwrap_or("").as_bytes();
                        if own.is_empty() || !bool::from(given.ct_eq(own)) {
                            return Ok(Err(SeatRefusal::WrongInvite));
                        }
                    }
                    if g.seats_taken >= g.max_players {
                        return Ok(Err(SeatRefusal::Full));
                    }
                    // A second live application of the player breaks the
                    // partial unique index `game_applications_live`.
                    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO game_applications
                             (id, game_id, account_id, race_name, status, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, 'pending', $5, $6)
                         RETURNING {APPLICATION}"
                    )))
                    .bind(a.id)
                    .bind(a.game_id)
                    .bind(a.account_id)
                    .bind(&a.race_name)
                    .bind(a.created_at)
                    .bind(a.expires_at)
                    .fetch_one(&mut *tx)
                    .await;
                    let row = match inserted {
                        Ok(row) => row,
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            return Ok(Err(SeatRefusal::AlreadyApplied));
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let recorded = application(&row)?;
                    let hold = Hold {
                        key: &a.name_key,
                        name: &a.race_name,
                        game_id: a.game_id,
                        account_id: Some(a.account_id),
                        application_id: Some(a.id),
                        expires_at: Some(a.expires_at),
                        now: a.created_at,
                    };
                    if let Err(refusal) = hold_name(&mut tx, hold).await? {
                        return Ok(Err(refusal));
                    }
                    notify_sql::write_in(&mut tx, notices, a.created_at).await?;
                    tx.commit().await?;
                    Ok(Ok(Applied {
                        application: recorded,
                        owner_id: g.owner_id,
                        title: g.title,
                    }))
                }

                async fn apply_substitute(
                    &self,
                    a: &NewApplication,
                    seat_id: Uuid,
                    notices: &[NewNotice],
                ) -> StoreResult<Result<Applied, SeatRefusal>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let Some(g) = lock_game(&mut tx, a.game_id).await? else {
                        return Ok(Err(SeatRefusal::NoGame));
                    };
                    if !matches!(g.state, GameState::Running | GameState::Paused) {
                        return Ok(Err(SeatRefusal::SeatNotOpen));
                    }
                    let name: Option<String> = sqlx::query_scalar(
                        "SELECT race_name FROM game_players
                         WHERE id = $1 AND game_id = $2 AND bot_control AND NOT is_bot
                           AND status = 'active' AND account_id IS DISTINCT FROM $3",
                    )
                    .bind(seat_id)
                    .bind(a.game_id)
                    .bind(a.account_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(name) = name else {
                        return Ok(Err(SeatRefusal::SeatNotOpen));
                    };
                    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO game_applications
                             (id, game_id, account_id, race_name, status, created_at, expires_at,
                              seat_id)
                         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)
                         RETURNING {APPLICATION}"
                    )))
                    .bind(a.id)
                    .bind(a.game_id)
                    .bind(a.account_id)
                    .bind(&name)
                    .bind(a.created_at)
                    .bind(a.expires_at)
                    .bind(seat_id)
                    .fetch_one(&mut *tx)
                    .await;
                    let row = match inserted {
                        Ok(row) => row,
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            return Ok(Err(SeatRefusal::AlreadyApplied));
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let recorded = application(&row)?;
                    notify_sql::write_in(&mut tx, notices, a.created_at).await?;
                    tx.commit().await?;
                    Ok(Ok(Applied {
                        application: recorded,
                        owner_id: g.owner_id,
                        title: g.title,
                    }))
                }

                async fn approve(
                    &self,
                    game_id: Uuid,
                    id: Uuid,
                    now: DateTime<Utc>,
                    notices: &[NewNotice],
                ) -> StoreResult<Result<(ApplicationRow, SeatRow), SeatRefusal>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let substitute: Option<Option<Uuid>> = sqlx::query_scalar(
                        "SELECT seat_id FROM game_applications WHERE id = $1 AND game_id = $2",
                    )
                    .bind(id)
                    .bind(game_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(Some(seat_id)) = substitute {
                        return substitute_in(tx, game_id, id, seat_id, now).await;
                    }
                    if let Err(refusal) = take_seat(&mut tx, game_id, now).await? {
                        return Ok(Err(refusal));
                    }
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE game_applications SET status = 'approved', decided_at = $3
                         WHERE id = $1 AND game_id = $2 AND status = 'pending'
                         RETURNING {APPLICATION}"
                    )))
                    .bind(id)
                    .bind(game_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(Err(application_refusal(&mut tx, game_id, id).await?));
                    };
                    let approved = application(&row)?;
                    sqlx::query(
                        "UPDATE race_names SET status = 'registered', expires_at = NULL
                         WHERE application_id = $1",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO game_players
                             (id, game_id, account_id, is_bot, race_name, status, joined_at)
                         VALUES ($1, $2, $3, FALSE, $4, 'active', $5)
                         RETURNING {SEAT}"
                    )))
                    .bind(Uuid::now_v7())
                    .bind(game_id)
                    .bind(approved.account_id)
                    .bind(&approved.race_name)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    let seated = seat(&row)?;
                    notify_sql::write_in(&mut tx, notices, now).await?;
                    tx.commit().await?;
                    Ok(Ok((approved, seated)))
                }

                async fn reject(
                    &self,
                    game_id: Uuid,
                    id: Uuid,
                    reason: Option<&str>,
                    now: DateTime<Utc>,
                    notices: &[NewNotice],
                ) -> StoreResult<Result<ApplicationRow, SeatRefusal>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE game_applications
                         SET status = 'rejected', reason = $3, decided_at = $4
                         WHERE id = $1 AND game_id = $2 AND status = 'pending'
                         RETURNING {APPLICATION}"
                    )))
                    .bind(id)
                    .bind(game_id)
                    .bind(reason)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(Err(application_refusal(&mut tx, game_id, id).await?));
                    };
                    let rejected = application(&row)?;
                    sqlx::query("DELETE FROM race_names WHERE application_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    notify_sql::write_in(&mut tx, notices, now).await?;
                    tx.commit().await?;
                    Ok(Ok(rejected))
                }

                async fn withdraw(
                    &self,
                    game_id: Uuid,
                    account: Uuid,
                    now: DateTime<Utc>,
                ) -> StoreResult<Result<ApplicationRow, SeatRefusal>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let Some(g) = lock_game(&mut tx, game_id).await? else {
                        return Ok(Err(SeatRefusal::NoGame));
                    };
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {APPLICATION} FROM game_applications
                         WHERE game_id = $1 AND account_id = $2
                           AND status IN ('pending', 'approved')"
                    )))
                    .bind(game_id)
                    .bind(account)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(Err(SeatRefusal::NoApplication));
                    };
                    let live = application(&row)?;
                    if live.status == ApplicationStatus::Approved {
                        if g.state != GameState::Enrolling {
                            return Ok(Err(SeatRefusal::NotEnrolling(g.state)));
                        }
                        sqlx::query(
                            "DELETE FROM game_players WHERE game_id = $1 AND account_id = $2",
                        )
                        .bind(game_id)
                        .bind(account)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query("UPDATE games SET seats_taken = seats_taken - 1 WHERE id = $1")
                            .bind(game_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE game_applications SET status = 'withdrawn', decided_at = $2
                         WHERE id = $1 RETURNING {APPLICATION}"
                    )))
                    .bind(live.id)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    let withdrawn = application(&row)?;
                    sqlx::query("DELETE FROM race_names WHERE application_id = $1")
                        .bind(live.id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(Ok(withdrawn))
                }

                async fn resign(
                    &self,
                    game_id: Uuid,
                    account: Uuid,
                    now: DateTime<Utc>,
                ) -> StoreResult<Option<SeatRow>> {
                    let turn = SqlBackend::write_turn(self).await;
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE game_players SET status = 'resigned', resigned_at = $3
                         WHERE game_id = $1 AND account_id = $2 AND status = 'active'
                         RETURNING {SEAT}"
                    )))
                    .bind(game_id)
                    .bind(account)
                    .bind(now)
                    .fetch_optional(turn.pool())
                    .await?;
                    row.as_ref().map(seat).transpose().map_err(Into::into)
                }

                async fn add_bot(&self, b: &NewBot) -> StoreResult<Result<SeatRow, SeatRefusal>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    if let Err(refusal) = take_seat(&mut tx, b.game_id, b.at).await? {
                        return Ok(Err(refusal));
                    }
                    let hold = Hold {
                        key: &b.name_key,
                        name: &b.race_name,
                        game_id: b.game_id,
                        account_id: None,
                        application_id: None,
                        expires_at: None,
                        now: b.at,
                    };
                    if let Err(refusal) = hold_name(&mut tx, hold).await?
                    {
                        return Ok(Err(refusal));
                    }
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO game_players
                             (id, game_id, account_id, is_bot, race_name, status, joined_at)
                         VALUES ($1, $2, NULL, TRUE, $3, 'active', $4)
                         RETURNING {SEAT}"
                    )))
                    .bind(b.id)
                    .bind(b.game_id)
                    .bind(&b.race_name)
                    .bind(b.at)
                    .fetch_one(&mut *tx)
                    .await?;
                    let seated = seat(&row)?;
                    tx.commit().await?;
                    Ok(Ok(seated))
                }

                async fn remove_bot(
                    &self,
                    game_id: Uuid,
                    seat_id: Uuid,
                ) -> StoreResult<Result<SeatRow, SeatRefusal>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let Some(g) = lock_game(&mut tx, game_id).await? else {
                        return Ok(Err(SeatRefusal::NoGame));
                    };
                    if g.state != GameState::Enrolling {
                        return Ok(Err(SeatRefusal::NotEnrolling(g.state)));
                    }
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DELETE FROM game_players WHERE id = $1 AND game_id = $2 AND is_bot
                         RETURNING {SEAT}"
                    )))
                    .bind(seat_id)
                    .bind(game_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(Err(SeatRefusal::NoApplication));
                    };
                    let removed = seat(&row)?;
                    sqlx::query("UPDATE games SET seats_taken = seats_taken - 1 WHERE id = $1")
                        .bind(game_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "DELETE FROM race_names
                         WHERE game_id = $1 AND account_id IS NULL AND name = $2",
                    )
                    .bind(game_id)
                    .bind(&removed.race_name)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Ok(removed))
                }

                async fn application(&self, id: Uuid) -> StoreResult<ApplicationRow> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {APPLICATION} FROM game_applications WHERE id = $1"
                    )))
                    .bind(id)
                    .fetch_one(SqlBackend::reader(self))
                    .await?;
                    Ok(application(&row)?)
                }

                async fn applications(
                    &self,
                    game_id: Uuid,
                    status: Option<ApplicationStatus>,
                ) -> StoreResult<Vec<ApplicationRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {APPLICATION} FROM game_applications
                         WHERE game_id = $1 AND ($2 IS NULL OR status = $2) ORDER BY id"
                    )))
                    .bind(game_id)
                    .bind(status.map(ApplicationStatus::as_str))
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows, application)
                }

                async fn seats(&self, game_id: Uuid) -> StoreResult<Vec<SeatRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {SEAT} FROM game_players WHERE game_id = $1 ORDER BY joined_at, id"
                    )))
                    .bind(game_id)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows, seat)
                }

                async fn race_name(&self, key: &str) -> StoreResult<Option<RaceNameRow>> {
                    let row = sqlx::query(
                        "SELECT name_key, name, game_id, account_id, status, expires_at
                         FROM race_names WHERE name_key = $1",
                    )
                    .bind(key)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?;
                    row.as_ref()
                        .map(sqlx::FromRow::from_row)
                        .transpose()
                        .map_err(Into::into)
                }

                async fn expire_applications(
                    &self,
                    now: DateTime<Utc>,
                ) -> StoreResult<Vec<ApplicationRow>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE game_applications SET status = 'expired', decided_at = $1
                         WHERE status = 'pending' AND expires_at <= $1
                         RETURNING {APPLICATION}"
                    )))
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                    let expired = all(&rows, application)?;
                    sqlx::query(
                        "DELETE FROM race_names WHERE status = 'pending' AND expires_at <= $1",
                    )
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(expired)
                }

                async fn games_past_deadline(
                    &self,
                    now: DateTime<Utc>,
                    limit: i64,
                ) -> StoreResult<Vec<GameRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {GAME_COLUMNS} FROM games g
                         WHERE g.state = 'enrolling' AND g.enrol_deadline <= $1
                         ORDER BY g.enrol_deadline LIMIT $2"
                    )))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows, game)
                }

                async fn game_counts(&self) -> StoreResult<Vec<(GameState, i64)>> {
                    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM games GROUP BY state")
                        .fetch_all(SqlBackend::reader(self))
                        .await?;
                    rows.iter()
                        .map(|r| {
                            let state: String = r.try_get("state")?;
                            let n: i64 = r.try_get("n")?;
                            Ok((GameState::try_from(state).map_err(stored)?, n))
                        })
                        .collect()
                }
            }
        }
    };
}

impl_lobby_store!(
    sqlite_lobby,
    crate::SqliteStore,
    sqlx::sqlite::SqliteRow,
    crate::accounts_sql::sqlite_accounts,
    crate::runtime_sql::sqlite_runtime,
    crate::notify_sql::sqlite_notify
);
impl_lobby_store!(
    postgres_lobby,
    crate::PostgresStore,
    sqlx::postgres::PgRow,
    crate::accounts_sql::postgres_accounts,
    crate::runtime_sql::postgres_runtime,
    crate::notify_sql::postgres_notify
);
