//! "Orders due" reminders: a core worker [`Job`] that looks at the running
//! games whose open turn is due soon and, once the game's reminder lead is
//! reached, tells the awaited seats that have not acted. The store marks
//! the clock in the same transaction as the notices, so a turn is
//! reminded at most once across backends, and never once it resolved
//! (its clock has moved on).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use turnbase_core::worker::{Job, Outcome, Runner};
use turnbase_lobby::rules::{MAX_REMIND_BEFORE, PlayRules};
use turnbase_store::notify::{Audience, Kind, NewNotice, ReminderCandidate};

use crate::TurnService;

/// Clocks looked at per step.
const BATCH: i64 = 500;

/// When a candidate's reminder is due; `None` when the game wants none.
pub fn remind_at(c: &ReminderCandidate) -> Option<DateTime<Utc>> {
    let length = (c.due_at - c.opened_at).to_std().unwrap_or_default();
    let lead = PlayRules::stored(&c.rules).reminder.lead(length)?;
    Some(c.due_at - chrono::Duration::from_std(lead).ok()?)
}

struct Reminders {
    turns: TurnService,
}

#[async_trait::async_trait]
impl Job for Reminders {
    fn name(&self) -> &'static str {
        "turn-reminders"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        _stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let store = self.turns.inner.db.notify();
        let horizon = now + chrono::Duration::from_std(MAX_REMIND_BEFORE)?;
        let candidates = store.reminder_candidates(now, horizon, BATCH).await?;
        let mut next: Option<DateTime<Utc>> = None;
        let mut told = 0;
        for c in &candidates {
            let Some(at) = remind_at(c) else { continue };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let payload = serde_json::json!({
                "game_id": c.game_id,
                "turn": c.turn,
                "deadline": c.due_at,
            });
            let notice = NewNotice::new(
                Kind::OrdersDue,
                Some(c.game_id),
                payload.to_string(),
                Audience::Users(Vec::new()),
            );
            if let Some(n) = store.remind(c.game_id, c.turn, &notice, now).await? {
                told += n;
                tracing::debug!(game = %c.game_id, turn = c.turn, told = n, "orders-due reminder");
            }
        }
        if told > 0 {
            self.turns.notices_written();
        }
        Ok(Outcome::Idle { next_due: next })
    }
}

impl TurnService {
    /// Runs the reminders until `stop`, looking at least every
    /// `every` and whenever a clock changes here.
    pub async fn run_reminders(
        self,
        every: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let runner = Runner::new(every)
            .with_clock(self.inner.clock.clone())
            .with_wake(self.inner.reminders_wake.clone());
        runner.run(Arc::new(Reminders { turns: self }), stop).await
    }
}
