//! What players, owners and admins do with a running game: orders, views,
//! options, the clock and the turn history (a seat is checked on every
//! call), and forcing or extending a turn.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use turnbase_engine_kit::protocol::{Mode, OrdersAnswer, OrdersRequest, Resolution};
use turnbase_lobby::{AdminActor, Caller};
use turnbase_store::accounts::AuditEntry;
use turnbase_store::lobby::{GameState, SeatRow, SeatStatus};
use turnbase_store::notify::{Audience, Kind, NewNotice};
use turnbase_store::turns::{ClockRow, Trigger, TurnPage, TurnRow, TurnStatus};
use uuid::Uuid;

use crate::plan::{self, played_by_person};
use crate::{Game, TurnError, TurnResultOf, TurnService, parse_ids};

/// Longest extension of a turn, and the shortest.
pub const MAX_EXTENSION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MIN_EXTENSION: Duration = Duration::from_secs(1);

/// What sending orders did.
#[derive(Debug, Clone, Serialize)]
pub struct OrdersOutcome {
    pub turn: i64,
    pub stored: bool,
    pub count: usize,
    /// A sequential move resolves at once: the turn that is open now.
    pub next_turn: Option<i64>,
    pub finished: bool,
    /// Every awaited seat has sent orders: the turn resolves now.
    pub resolves_early: bool,
}

/// A game's clock as a player sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClockView {
    pub game_id: Uuid,
    pub state: &'static str,
    pub turn: i64,
    pub deadline: Option<DateTime<Utc>>,
    /// Why it resolves then: schedule, timeout, bot, early, forced, …
    pub trigger: &'static str,
    pub paused: bool,
    /// Seats the engine waits for.
    pub to_move: Vec<SeatMark>,
    /// Seats that have sent orders this turn (never what they sent).
    pub submitted: Vec<Uuid>,
    /// The turn was extended by its owner this turn.
    pub extended: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeatMark {
    pub seat_id: Uuid,
    pub race_name: String,
    /// The engine's bot plays it (a bot seat, or one taken over).
    pub bot: bool,
}

/// A recorded turn as one seat sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TurnView {
    pub turn: i64,
    pub trigger: &'static str,
    pub due_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The seat's own summary.
    pub summary: Option<String>,
    pub standings: Value,
    pub events: Value,
    pub finished: bool,
    /// Admins only: resolve call sent minus due time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// `/turns/{n}` only: the seat's view after this turn, for replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<Value>,
}

impl TurnView {
    fn of(row: &TurnRow, seat: Option<Uuid>, admin: bool) -> TurnView {
        let resolution: Option<Resolution> = row
            .resolution
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        let summary = match (&resolution, seat) {
            (Some(r), Some(seat)) => r.summaries.get(&seat.to_string()).cloned(),
            _ => None,
        };
        TurnView {
            turn: row.turn,
            trigger: row.trigger.as_str(),
            due_at: row.due_at,
            resolved_at: row.resolved_at,
            summary,
            standings: resolution
                .as_ref()
                .map_or(Value::Null, |r| json!(r.standings)),
            events: resolution.as_ref().map_or(Value::Null, |r| json!(r.events)),
            finished: resolution.as_ref().is_some_and(|r| r.finished),
            lateness_ms: if admin { row.lateness_ms } else { None },
            duration_ms: if admin { row.duration_ms } else { None },
            view: None,
        }
    }
}

impl TurnService {
    /// The caller's seat in the game: 403 without one.
    fn seat<'g>(&self, game: &'g Game, caller: Caller) -> TurnResultOf<&'g SeatRow> {
        game.seats
            .iter()
            .find(|s| s.account_id == Some(caller.id))
            .ok_or_else(|| TurnError::Forbidden("you hold no seat in this game".into()))
    }

    fn playing(game: &Game) -> TurnResultOf<()> {
        match game.row.state {
            GameState::Running => Ok(()),
            GameState::Paused => Err(TurnError::Conflict {
                code: "game_paused",
                message: "the game is paused; orders are taken again once it is resumed".into(),
            }),
            GameState::Finished | GameState::Cancelled => Err(TurnError::Conflict {
                code: "game_over",
                message: format!("the game is {}", game.row.state.as_str()),
            }),
            other => Err(TurnError::Conflict {
                code: "not_running",
                message: format!("the game is {}; it has no turns yet", other.as_str()),
            }),
        }
    }

    async fn open_clock(&self, game: &Game) -> TurnResultOf<ClockRow> {
        self.inner
            .db
            .turns()
            .clock(game.row.id)
            .await?
            .ok_or_else(|| TurnError::Conflict {
                code: "not_running",
                message: "the game's first turn is being opened; try again in a moment".into(),
            })
    }

    /// Sends the caller's orders for `turn`: forwarded to the engine (its
    /// 422 details come back unchanged); a sequential move resolves at once.
    #[tracing::instrument(skip_all, fields(game = %id, turn))]
    pub async fn send_orders(
        &self,
        caller: Caller,
        id: Uuid,
        turn: i64,
        orders: Value,
    ) -> TurnResultOf<OrdersOutcome> {
        let mut game = self.game(id).await?;
        let seat = self.seat(&game, caller)?.clone();
        if seat.status != SeatStatus::Active {
            return Err(TurnError::Forbidden(
                "you resigned from this game; your seat takes no orders".into(),
            ));
        }
        Self::playing(&game)?;
        let clock = self.open_clock(&game).await?;
        let store = self.inner.db.turns();
        if turn != clock.turn {
            return Err(TurnError::TurnClosed {
                closed: turn,
                turn: clock.turn,
            });
        }
        // A turn claimed ahead of its due time still takes orders until
        // then: the engine decides which come before its resolve.
        if let Some(row) = store.turn(id, turn).await?
            && (row.status == TurnStatus::Resolved || row.due_at <= self.now())
        {
            return Err(TurnError::TurnClosed {
                closed: turn,
                turn: turn + 1,
            });
        }
        let base = self.engine(id).await?;
        if seat.bot_control {
            // The player is back: the seat is theirs again.
            self.inner
                .client
                .control(&base, id, seat.id, false)
                .await
                .map_err(|e| TurnError::Unavailable(e.to_string()))?;
            store.set_bot_control(seat.id, false).await?;
            if let Some(s) = game.seats.iter_mut().find(|s| s.id == seat.id) {
                s.bot_control = false;
                s.misses = 0;
            }
        }
        let body = OrdersRequest {
            turn: u32::try_from(turn)
                .map_err(|_| TurnError::Invalid("turn is out of range".into()))?,
            orders,
        };
        let started = Instant::now();
        let mut answer = self
            .inner
            .client
            .orders(&base, id, seat.id, &body)
            .await
            .map_err(|e| TurnError::Unavailable(e.to_string()))?;
        if answer.status == 409 && answer.error_code().as_deref() == Some("seat_played_by_bot") {
            // The seat changed hands (a substitute) while the engine's bot
            // still had it: hand it back and send again.
            self.inner
                .client
                .control(&base, id, seat.id, false)
                .await
                .map_err(|e| TurnError::Unavailable(e.to_string()))?;
            answer = self
                .inner
                .client
                .orders(&base, id, seat.id, &body)
                .await
                .map_err(|e| TurnError::Unavailable(e.to_string()))?;
        }
        if answer.status == 409 && answer.error_code().as_deref() == Some("wrong_turn") {
            // The engine is past this turn although no result is recorded
            // (a backend stopped between the two): the scheduler fetches
            // the stored resolution now.
            let mut sync = clock.clone();
            sync.due_at = Some(self.now());
            sync.updated_at = self.now();
            if store.update_clock(&sync).await? {
                self.wake();
            }
            return Err(TurnError::TurnClosed {
                closed: turn,
                turn: turn + 1,
            });
        }
        if answer.status != 200 {
            return Err(TurnError::Engine {
                status: answer.status,
                body: answer.body,
            });
        }
        let taken: OrdersAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| TurnError::Unavailable(format!("the engine's answer: {e}")))?;
        let mut outcome = OrdersOutcome {
            turn,
            stored: taken.stored,
            count: taken.count,
            next_turn: None,
            finished: false,
            resolves_early: false,
        };
        match (game.mode, taken.resolution) {
            (Mode::Sequential, Some(resolution)) => {
                let now = self.now();
                let due = clock.due_at.unwrap_or(now);
                outcome.next_turn = resolution.next_turn.map(i64::from);
                outcome.finished = resolution.finished;
                self.record(
                    &base,
                    &mut game,
                    &clock,
                    Trigger::Move,
                    due,
                    now,
                    started.elapsed(),
                    &resolution,
                )
                .await?;
            }
            _ => {
                let Some(acted) = store.submit(id, turn, seat.id, self.now()).await? else {
                    // Claimed meanwhile: the engine had the orders first,
                    // so they count in that turn.
                    return Ok(outcome);
                };
                if game.rules.early_turns
                    && plan::all_in(&parse_ids(&clock.awaiting), &acted, &game.seats)
                {
                    outcome.resolves_early = self.set_due(id, turn, Trigger::Early).await?;
                }
            }
        }
        Ok(outcome)
    }

    /// Makes the open turn `turn` due now for `trigger`; whether it did.
    async fn set_due(&self, id: Uuid, turn: i64, trigger: Trigger) -> TurnResultOf<bool> {
        let store = self.inner.db.turns();
        for _ in 0..5 {
            let Some(clock) = store.clock(id).await? else {
                return Ok(false);
            };
            if clock.turn != turn || clock.due_at.is_none() {
                return Ok(false);
            }
            if matches!(clock.trigger, Trigger::Early | Trigger::Forced)
                && clock.due_at <= Some(self.now())
            {
                return Ok(true);
            }
            let now = self.now();
            let changed = ClockRow {
                due_at: Some(now),
                trigger,
                updated_at: now,
                ..clock
            };
            if store.update_clock(&changed).await? {
                self.wake();
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The engine's view for the caller's seat, with the turn and deadline.
    pub async fn view(&self, caller: Caller, id: Uuid) -> TurnResultOf<Value> {
        let game = self.game(id).await?;
        let seat = self.seat(&game, caller)?;
        let clock = self.inner.db.turns().clock(id).await?;
        let base = self.engine(id).await?;
        let answer = self
            .inner
            .client
            .view(&base, id, seat.id, None)
            .await
            .map_err(|e| TurnError::Unavailable(e.to_string()))?;
        if answer.status != 200 {
            return Err(TurnError::Engine {
                status: answer.status,
                body: answer.body,
            });
        }
        let view: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| TurnError::Unavailable(format!("the engine's view: {e}")))?;
        Ok(json!({
            "game_id": id,
            "state": game.row.state.as_str(),
            "seat_id": seat.id,
            "turn": clock.as_ref().map(|c| c.turn).or_else(|| view.get("turn").and_then(Value::as_i64)),
            "deadline": clock.as_ref().and_then(|c| c.due_at),
            "paused": game.row.state == GameState::Paused,
            "to_move": clock.as_ref().is_some_and(|c| parse_ids(&c.to_move).contains(&seat.id)),
            "view": view.get("view").cloned().unwrap_or(Value::Null),
        }))
    }

    /// What the caller can order now (the engine's options).
    pub async fn options(&self, caller: Caller, id: Uuid) -> TurnResultOf<Value> {
        let game = self.game(id).await?;
        let seat = self.seat(&game, caller)?;
        let base = self.engine(id).await?;
        let options = self
            .inner
            .client
            .options(&base, id, seat.id)
            .await
            .map_err(|e| TurnError::Unavailable(e.to_string()))?;
        Ok(json!(options))
    }

    /// The deadline, who is to move and who has sent orders.
    pub async fn clock_view(&self, caller: Caller, id: Uuid) -> TurnResultOf<ClockView> {
        let game = self.game(id).await?;
        self.seat(&game, caller)?;
        self.clock_of(&game).await
    }

    /// The clock without a seat check (owners and admins may hold no seat;
    /// nothing secret is in a clock).
    async fn clock_of(&self, game: &Game) -> TurnResultOf<ClockView> {
        let id = game.row.id;
        // A game that is over has no open turn: its clock says so, at the
        // last turn it played, with no deadline and no one to move.
        if game.row.state.is_over() {
            let last = self
                .inner
                .db
                .turns()
                .turns(
                    id,
                    turnbase_store::turns::TurnPage {
                        before: None,
                        limit: 1,
                    },
                )
                .await?;
            return Ok(ClockView {
                game_id: id,
                state: game.row.state.as_str(),
                turn: last.first().map_or(0, |t| t.turn),
                deadline: None,
                trigger: "none",
                paused: false,
                to_move: Vec::new(),
                submitted: Vec::new(),
                extended: false,
            });
        }
        let clock = self.open_clock(game).await?;
        let submitted = self.inner.db.turns().submissions(id, clock.turn).await?;
        let to_move = parse_ids(&clock.to_move)
            .into_iter()
            .filter_map(|id| game.seats.iter().find(|s| s.id == id))
            .map(|s| SeatMark {
                seat_id: s.id,
                race_name: s.race_name.clone(),
                bot: !played_by_person(s),
            })
            .collect();
        Ok(ClockView {
            game_id: id,
            state: game.row.state.as_str(),
            turn: clock.turn,
            deadline: clock.due_at,
            trigger: clock.trigger.as_str(),
            paused: clock.paused_at.is_some(),
            to_move,
            submitted,
            extended: clock.extended,
        })
    }

    /// Recorded turns, newest first (the caller's summaries).
    pub async fn history(
        &self,
        caller: Caller,
        id: Uuid,
        page: TurnPage,
    ) -> TurnResultOf<Vec<TurnView>> {
        let game = self.game(id).await?;
        let seat = self.seat(&game, caller)?.id;
        let rows = self.inner.db.turns().turns(id, page).await?;
        Ok(rows
            .iter()
            .filter(|r| r.status == TurnStatus::Resolved)
            .map(|r| TurnView::of(r, Some(seat), false))
            .collect())
    }

    /// One recorded turn with the caller's view after it (replay).
    pub async fn turn(&self, caller: Caller, id: Uuid, n: i64) -> TurnResultOf<TurnView> {
        let game = self.game(id).await?;
        let seat = self.seat(&game, caller)?.id;
        let row = self
            .inner
            .db
            .turns()
            .turn(id, n)
            .await?
            .filter(|r| r.status == TurnStatus::Resolved)
            .ok_or_else(|| TurnError::NotFound(format!("turn {n} has not been resolved")))?;
        let mut view = TurnView::of(&row, Some(seat), false);
        let base = self.engine(id).await?;
        let turn =
            u32::try_from(n).map_err(|_| TurnError::Invalid("turn is out of range".into()))?;
        let answer = self
            .inner
            .client
            .view(&base, id, seat, Some(turn))
            .await
            .map_err(|e| TurnError::Unavailable(e.to_string()))?;
        if answer.status == 200 {
            let parsed: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| TurnError::Unavailable(format!("the engine's view: {e}")))?;
            view.view = parsed.get("view").cloned();
        }
        Ok(view)
    }

    /// Turns with their lateness (admins).
    pub async fn admin_turns(&self, id: Uuid, page: TurnPage) -> TurnResultOf<Vec<TurnView>> {
        self.inner.db.lobby().game(id).await?;
        let rows = self.inner.db.turns().turns(id, page).await?;
        Ok(rows.iter().map(|r| TurnView::of(r, None, true)).collect())
    }

    fn manages(game: &Game, caller: Caller) -> TurnResultOf<()> {
        if caller.admin || game.row.owner_id == caller.id {
            Ok(())
        } else {
            Err(TurnError::Forbidden(
                "only the game's owner or an admin can do this".into(),
            ))
        }
    }

    /// The open turn, if no scheduler is resolving it.
    async fn changeable_clock(&self, game: &Game) -> TurnResultOf<ClockRow> {
        Self::playing(game)?;
        let clock = self.open_clock(game).await?;
        if clock.trigger.plans() {
            return Err(TurnError::Conflict {
                code: "turn_being_resolved",
                message: "the turn is being opened; try again in a moment".into(),
            });
        }
        if self
            .inner
            .db
            .turns()
            .turn(game.row.id, clock.turn)
            .await?
            .is_some()
        {
            return Err(TurnError::Conflict {
                code: "turn_being_resolved",
                message: format!("turn {} is being resolved", clock.turn),
            });
        }
        Ok(clock)
    }

    /// Resolves the open turn now (the owner or an admin; one-shot).
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn force(
        &self,
        caller: Caller,
        id: Uuid,
        admin: Option<(&AdminActor, &str)>,
    ) -> TurnResultOf<ClockView> {
        let game = self.game(id).await?;
        Self::manages(&game, caller)?;
        let clock = self.changeable_clock(&game).await?;
        if !self.set_due(id, clock.turn, Trigger::Forced).await? {
            return Err(TurnError::Conflict {
                code: "turn_being_resolved",
                message: format!("turn {} moved on meanwhile", clock.turn),
            });
        }
        self.audit(
            admin,
            "game.force_turn",
            id,
            &format!("turn {}", clock.turn),
        )
        .await?;
        self.clock_of(&game).await
    }

    /// Pushes the open turn's deadline back by `by` (the owner once per
    /// turn; admins any number of times).
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn extend(
        &self,
        caller: Caller,
        id: Uuid,
        by: Duration,
        admin: Option<(&AdminActor, &str)>,
    ) -> TurnResultOf<ClockView> {
        if !(MIN_EXTENSION..=MAX_EXTENSION).contains(&by) {
            return Err(TurnError::Invalid(format!(
                "by: between 1 s and {} days",
                MAX_EXTENSION.as_secs() / 86_400
            )));
        }
        let game = self.game(id).await?;
        Self::manages(&game, caller)?;
        let clock = self.changeable_clock(&game).await?;
        if clock.extended && admin.is_none() {
            return Err(TurnError::Conflict {
                code: "already_extended",
                message: format!("turn {} was extended once already", clock.turn),
            });
        }
        let Some(due) = clock.due_at else {
            return Err(TurnError::Conflict {
                code: "game_paused",
                message: "the game is paused".into(),
            });
        };
        let now = self.now();
        let new_due = due.max(now) + chrono::Duration::from_std(by).unwrap_or_default();
        let changed = ClockRow {
            due_at: Some(new_due),
            extended: true,
            updated_at: now,
            ..clock.clone()
        };
        let users: Vec<Uuid> = game.seats.iter().filter_map(|s| s.account_id).collect();
        let payload = json!({
            "game_id": id,
            "title": game.row.title,
            "turn": clock.turn,
            "deadline": new_due,
            "reason": "extended",
        });
        let notices = [NewNotice::new(
            Kind::TurnExtended,
            Some(id),
            payload.to_string(),
            Audience::Users(users),
        )];
        // The extension and its notices commit together.
        if !self
            .inner
            .db
            .turns()
            .update_clock_telling(&changed, &notices)
            .await?
        {
            return Err(TurnError::Conflict {
                code: "turn_being_resolved",
                message: "the turn changed meanwhile; look at the clock again".into(),
            });
        }
        self.notices_written();
        self.wake();
        self.audit(
            admin,
            "game.extend_turn",
            id,
            &format!("turn {} by {}s", clock.turn, by.as_secs()),
        )
        .await?;
        self.clock_of(&game).await
    }

    async fn audit(
        &self,
        admin: Option<(&AdminActor, &str)>,
        action: &str,
        game: Uuid,
        what: &str,
    ) -> TurnResultOf<()> {
        let Some((actor, why)) = admin else {
            return Ok(());
        };
        let entry = AuditEntry {
            id: Uuid::now_v7(),
            actor_id: actor.id,
            actor_email: actor.email.clone(),
            action: action.to_string(),
            target: game.to_string(),
            detail: format!("{what}: {why}"),
            at: self.now(),
        };
        self.inner.db.accounts().record_audit(&entry).await?;
        Ok(())
    }

    /// A substitute took a seat over: the engine's bot gives it back.
    pub async fn hand_back(&self, id: Uuid, seat: Uuid) -> TurnResultOf<()> {
        let base = self.engine(id).await?;
        self.inner
            .client
            .control(&base, id, seat, false)
            .await
            .map_err(|e| TurnError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// A seat left the game (resigned): it is no longer waited for; a
    /// sequential game whose mover left applies its timeout rule now.
    pub async fn seat_left(&self, id: Uuid, seat: Uuid) -> TurnResultOf<()> {
        let game = self.game(id).await?;
        if game.row.state != GameState::Running {
            return Ok(());
        }
        let Some(clock) = self.inner.db.turns().clock(id).await? else {
            return Ok(());
        };
        if !parse_ids(&clock.to_move).contains(&seat) {
            return Ok(());
        }
        match game.mode {
            Mode::Sequential => {
                self.set_due(id, clock.turn, Trigger::Timeout).await?;
            }
            Mode::Simultaneous => {
                let acted = self.inner.db.turns().submissions(id, clock.turn).await?;
                if game.rules.early_turns
                    && plan::all_in(&parse_ids(&clock.awaiting), &acted, &game.seats)
                {
                    self.set_due(id, clock.turn, Trigger::Early).await?;
                }
            }
        }
        Ok(())
    }
}
