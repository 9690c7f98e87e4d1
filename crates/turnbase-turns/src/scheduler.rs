//! The turn scheduler: sleeps until the earliest due clock (an indexed
//! query for the next time, never a scan of every game per tick), is woken
//! when a clock changes here, and resolves each due turn on a task of its
//! own, at most `concurrency` at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use turnbase_engine_kit::protocol::Resolution;
use turnbase_runtime::CallError;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use turnbase_core::backoff::Backoff;
use turnbase_store::lobby::GameState;
use turnbase_store::notify::{Audience, Kind, NewNotice};
use turnbase_store::turns::{ClockRow, Trigger, TurnClaim, TurnRow};

use crate::plan::{self, played_by_person};
use crate::{Game, TurnError, TurnService, ids_json, parse_ids, seat_ids};

/// Clocks read per look.
const BATCH: i64 = 512;

/// Runs the scheduler until stopped; turns in hand are finished or left
/// to their lease.
pub async fn run_scheduler(service: TurnService, stop: CancellationToken) -> anyhow::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        service.inner.config.concurrency.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_count = Instant::now() - Duration::from_secs(10);
    loop {
        while tasks.try_join_next().is_some() {}
        let now = service.now();
        let store = service.inner.db.turns();
        // Turns due within the lookahead are claimed now and sent on time,
        // so the claim's transaction is not part of their lateness.
        let lookahead =
            chrono::Duration::from_std(service.inner.config.lookahead).unwrap_or_default();
        let horizon = now + lookahead;
        let due = match store.due_clocks(horizon, BATCH).await {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "the scheduler cannot read the clocks; trying again");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if last_count.elapsed() >= Duration::from_secs(1) {
            last_count = Instant::now();
            if let Ok(n) = store.due_count(now).await {
                service
                    .inner
                    .due_games
                    .store(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let full = due.len() as i64 == BATCH;
        // Turns that need nothing but their claim are claimed together in
        // one transaction; the others (a game to plan, a deadline with
        // people missing) go one by one.
        let mut batch = Vec::new();
        let mut held_back: Option<DateTime<Utc>> = None;
        for clock in due {
            if !service.claims_alone(&clock) && clock.due_at.is_some_and(|d| d > now) {
                // Planned or excused at their time, not ahead of it.
                held_back = held_back.min(clock.due_at).or(clock.due_at);
                continue;
            }
            {
                let mut in_flight = service
                    .inner
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if !in_flight.insert(clock.game_id) {
                    continue;
                }
            }
            if service.claims_alone(&clock) {
                batch.push(clock);
                continue;
            }
            let (service, permits) = (service.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let game = clock.game_id;
                if let Err(err) = service.handle(clock).await {
                    tracing::warn!(%game, error = %err, "turn not handled; the clock comes round again");
                }
                service.done(game);
            });
        }
        if !batch.is_empty() {
            let claimed = service.claim_batch(&batch).await;
            for clock in batch {
                let Some(row) = claimed.iter().find(|r| r.game_id == clock.game_id).cloned() else {
                    service.done(clock.game_id);
                    continue;
                };
                let (service, permits) = (service.clone(), permits.clone());
                tasks.spawn(async move {
                    // Claimed ahead: the call goes out at the due time (the
                    // wait is the dispatcher's; the slot is held through it).
                    let _permit = permits.acquire_owned().await;
                    let game = clock.game_id;
                    if let Err(err) = service.resolve_claimed(clock, row).await {
                        tracing::warn!(%game, error = %err, "turn not handled; the clock comes round again");
                    }
                    service.done(game);
                });
            }
        }
        let wait = if full {
            Duration::ZERO
        } else {
            let idle = service.inner.config.idle_recheck;
            let next = match store.next_due_after(horizon).await {
                Ok(Some(at)) => Some(at - lookahead),
                _ => None,
            };
            match next.into_iter().chain(held_back).min() {
                Some(at) => (at - service.now()).to_std().unwrap_or_default().min(idle),
                None => idle,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = service.inner.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    // Turns in hand finish (their engine calls are short); a stop that
    // comes first leaves them to their lease.
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    // Nothing more is handed to the dispatch thread: it ends here, at a
    // step of the shutdown of its own, not whenever the service is dropped.
    if let Some(dispatcher) = &service.inner.dispatcher {
        dispatcher.stop().await;
    }
    Ok(())
}

impl TurnService {
    /// Acts on a due clock: plans it (a game that began or was resumed),
    /// excuses a miss, or resolves the turn.
    pub(crate) async fn handle(&self, clock: ClockRow) -> Result<(), TurnError> {
        let Some(due) = clock.due_at else {
            return Ok(());
        };
        if clock.trigger.plans() {
            let game = self.game(clock.game_id).await?;
            if game.row.state != GameState::Running {
                return Ok(());
            }
            return self.plan_clock(&game, clock).await;
        }
        // Only a deadline with people missing needs the game before the
        // claim; otherwise the resolve call goes out after the claim alone
        // (the clock exists only for running and paused games, and a
        // paused one is never due), and the game is read while the engine
        // works: the time between due and sent is the lateness.
        if matches!(clock.trigger, Trigger::Schedule | Trigger::Timeout)
            && !clock.excused
            && clock.awaiting != "[]"
        {
            let game = self.game(clock.game_id).await?;
            if self.excuse(&game, &clock).await? {
                return Ok(());
            }
        }
        let now = self.now();
        let claim = self.claim_of(&clock, due, now);
        let Some(claimed) = self.inner.db.turns().claim_turn(&claim).await? else {
            return Ok(());
        };
        self.resolve_claimed(clock, claimed).await
    }

    /// Whether a due clock needs nothing before its claim.
    fn claims_alone(&self, clock: &ClockRow) -> bool {
        let may_excuse = matches!(clock.trigger, Trigger::Schedule | Trigger::Timeout)
            && !clock.excused
            && clock.awaiting != "[]";
        !clock.trigger.plans() && !may_excuse
    }

    /// The claim of a due clock's turn.
    fn claim_of<'a>(
        &'a self,
        clock: &ClockRow,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> TurnClaim<'a> {
        // Due before this scheduler started: the backend was down.
        let trigger = if due < self.inner.started_at
            && matches!(clock.trigger, Trigger::Schedule | Trigger::Timeout)
        {
            Trigger::CatchUp
        } else {
            clock.trigger
        };
        TurnClaim {
            game_id: clock.game_id,
            turn: clock.turn,
            trigger,
            due_at: due,
            owner: &self.inner.owner,
            now,
            lease: self.inner.config.lease,
        }
    }

    /// Claims a batch of due turns in one transaction.
    async fn claim_batch(&self, batch: &[ClockRow]) -> Vec<TurnRow> {
        let now = self.now();
        let claims: Vec<TurnClaim<'_>> = batch
            .iter()
            .filter_map(|c| Some(self.claim_of(c, c.due_at?, now)))
            .collect();
        match self.inner.db.turns().claim_turns(&claims).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(error = %err, turns = claims.len(), "turns not claimed; the clocks come round again");
                Vec::new()
            }
        }
    }

    /// The game is no longer in this scheduler's hands.
    fn done(&self, game: uuid::Uuid) {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&game);
        self.wake();
    }

    /// Resolves a claimed turn and records it; a failure hands the claim
    /// back with backoff.
    async fn resolve_claimed(&self, clock: ClockRow, claimed: TurnRow) -> Result<(), TurnError> {
        // A claim taken over keeps the first claimant's due time and
        // trigger, so lateness counts from when the turn was first due.
        let (due, trigger) = (claimed.due_at, claimed.trigger);
        let turn = u32::try_from(clock.turn).unwrap_or(u32::MAX);
        let id = clock.game_id;
        let resolved = async {
            let base = self.engine_cached(id).await?;
            let Called {
                sent_at,
                resolution,
                took,
                game,
            } = self.call_resolve(base.clone(), id, turn, due).await?;
            let resolution = resolution.map_err(|e| {
                // The engine may have moved (restarted elsewhere).
                self.forget_engine(id);
                TurnError::Unavailable(e.to_string())
            })?;
            let mut game = game?;
            self.record(
                &base,
                &mut game,
                &clock,
                trigger,
                due,
                sent_at,
                took,
                &resolution,
            )
            .await
        }
        .await;
        if let Err(err) = resolved {
            // Handed back with a backoff rather than left to its lease: the
            // engine's resolve is idempotent, so the next attempt (here or
            // on another backend) gets the same result.
            let failures = u32::try_from(clock.attempts + 1).unwrap_or(u32::MAX);
            let delay = Backoff::new(self.inner.config.retry_base, self.inner.config.retry_max)
                .delay(failures, &mut rand::rng());
            let now = self.now();
            let retry_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            tracing::warn!(game = %id, turn, error = %err, retry_in = ?delay, "the turn was not resolved; retrying");
            self.inner
                .db
                .turns()
                .release_turn(id, clock.turn, &self.inner.owner, retry_at, now)
                .await?;
        }
        Ok(())
    }

    /// Sends the resolve call when the turn is due (at once if it is due
    /// already) and reads the game while the engine works.
    async fn call_resolve(
        &self,
        base: String,
        id: uuid::Uuid,
        turn: u32,
        due: DateTime<Utc>,
    ) -> Result<Called, TurnError> {
        let wait = (due - self.now()).to_std().unwrap_or_default();
        let Some(dispatcher) = &self.inner.dispatcher else {
            tokio::time::sleep(wait).await;
            let sent_at = self.now();
            let started = Instant::now();
            let ((resolution, took), game) = tokio::join!(
                async {
                    let answer = self.inner.client.resolve(&base, id, turn).await;
                    (answer, started.elapsed())
                },
                self.game(id)
            );
            return Ok(Called {
                sent_at,
                resolution,
                took,
                game,
            });
        };
        let dispatched = dispatcher.resolve_after(wait, self.inner.clock.clone(), base, id, turn);
        let stopped = || TurnError::Unavailable("the turn dispatcher stopped".into());
        let sent_at = dispatched.sent.await.map_err(|_| stopped())?;
        // The game is read once the call is out, while the engine works.
        let (answer, game) = tokio::join!(dispatched.answer, self.game(id));
        let (took, bytes) = answer.map_err(|_| stopped())?;
        Ok(Called {
            sent_at,
            resolution: bytes.and_then(turnbase_runtime::client::decode_resolution),
            took,
            game,
        })
    }

    /// Gives the open turn its deadline: the first turn of a game that
    /// began, or the turn of a game that was resumed.
    async fn plan_clock(&self, game: &Game, clock: ClockRow) -> Result<(), TurnError> {
        let base = self.engine(game.row.id).await?;
        let state = match self.inner.client.state(&base, game.row.id).await {
            Ok(state) => state,
            Err(err) => {
                // The reconciler brings the engine back; look again soon.
                let mut retry = clock.clone();
                let now = self.now();
                retry.due_at = Some(now + chrono::Duration::seconds(1));
                retry.attempts += 1;
                retry.updated_at = now;
                self.inner.db.turns().update_clock(&retry).await?;
                return Err(TurnError::Unavailable(err.to_string()));
            }
        };
        let now = self.now();
        let to_move = seat_ids(&state.to_move);
        let mover = to_move
            .first()
            .and_then(|id| game.seats.iter().find(|s| s.id == *id));
        let deadline = match clock.trigger {
            Trigger::Resume => {
                plan::resumed_deadline(&game.schedule, &game.rules, clock.anchor_at, mover, now)
            }
            _ => plan::next_deadline(&game.schedule, &game.rules, now, None, mover, now),
        };
        let Some(deadline) = deadline else {
            return Err(TurnError::Unexpected(anyhow::anyhow!(
                "game {}: no deadline can be given to turn {}",
                game.row.id,
                clock.turn
            )));
        };
        let awaiting = self.awaited(&base, game, &to_move).await;
        let opening = clock.trigger == Trigger::Open;
        let planned = ClockRow {
            turn: i64::from(state.turn),
            anchor_at: if opening { now } else { clock.anchor_at },
            opened_at: if opening { now } else { clock.opened_at },
            slot_at: deadline.slot,
            due_at: Some(deadline.due),
            trigger: deadline.trigger,
            to_move: ids_json(&to_move),
            awaiting: ids_json(&awaiting),
            paused_at: None,
            updated_at: now,
            ..clock
        };
        let mut notices = Vec::new();
        for seat in &game.seats {
            let Some(user) = seat.account_id else {
                continue;
            };
            let payload = serde_json::json!({
                "game_id": game.row.id,
                "title": game.row.title,
                "turn": planned.turn,
                "deadline": deadline.due,
                "to_move": awaiting.contains(&seat.id),
            });
            let kind = if game.mode == turnbase_engine_kit::protocol::Mode::Sequential
                && awaiting.contains(&seat.id)
            {
                Kind::YourMove
            } else {
                Kind::TurnOpened
            };
            notices.push(NewNotice::new(
                kind,
                Some(game.row.id),
                payload.to_string(),
                Audience::Users(vec![user]),
            ));
        }
        // The turn's opening and its notices commit together.
        if self
            .inner
            .db
            .turns()
            .update_clock_telling(&planned, &notices)
            .await?
        {
            self.notices_written();
            // The new deadline may bring a reminder before the next look.
            self.inner.reminders_wake.notify_one();
        }
        Ok(())
    }

    /// A deadline came with awaited people missing: those with an excused
    /// miss left spend one and the turn is extended once (by a turn's
    /// length, at most a day). Whether it was.
    async fn excuse(&self, game: &Game, clock: &ClockRow) -> Result<bool, TurnError> {
        let awaiting = parse_ids(&clock.awaiting);
        if awaiting.is_empty() {
            return Ok(false);
        }
        let acted = self
            .inner
            .db
            .turns()
            .submissions(game.row.id, clock.turn)
            .await?;
        let missing = plan::missing(&awaiting, &acted);
        let excused = plan::excusable(&missing, &game.seats, &game.rules);
        if excused.is_empty() {
            return Ok(false);
        }
        let now = self.now();
        let Some(due) = clock.due_at else {
            return Ok(false);
        };
        let extended_to = due.max(now)
            + chrono::Duration::from_std(plan::excuse_length(&game.schedule, now))
                .unwrap_or_default();
        let changed = ClockRow {
            due_at: Some(extended_to),
            excused: true,
            updated_at: now,
            ..clock.clone()
        };
        let mut notices = Vec::new();
        for id in &excused {
            let Some(seat) = game.seats.iter().find(|s| s.id == *id) else {
                continue;
            };
            if let Some(user) = seat.account_id.filter(|_| played_by_person(seat)) {
                let payload = serde_json::json!({
                    "game_id": game.row.id,
                    "title": game.row.title,
                    "turn": clock.turn,
                    "deadline": extended_to,
                    "reason": "excused_miss",
                    "excuses_left": i64::from(game.rules.excused_misses) - seat.excuses_used - 1,
                });
                notices.push(NewNotice::new(
                    Kind::TurnExtended,
                    Some(game.row.id),
                    payload.to_string(),
                    Audience::Users(vec![user]),
                ));
            }
        }
        // The extension and its notices commit together.
        if !self
            .inner
            .db
            .turns()
            .update_clock_telling(&changed, &notices)
            .await?
        {
            return Ok(true);
        }
        self.notices_written();
        self.inner.reminders_wake.notify_one();
        self.inner.db.turns().spend_excuses(&excused).await?;
        tracing::info!(game = %game.row.id, turn = clock.turn, seats = excused.len(), "turn extended for an excused miss");
        Ok(true)
    }
}

/// A resolve call made: when it went out, the engine's answer and how long
/// it took, and the game as read while the engine worked.
struct Called {
    sent_at: DateTime<Utc>,
    resolution: Result<Resolution, CallError>,
    took: Duration,
    game: Result<Game, TurnError>,
}
