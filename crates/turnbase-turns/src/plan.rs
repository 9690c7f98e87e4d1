//! When a turn is due: pure functions of the schedule, the rules, the
//! seats and the time, so that every rule about deadlines is tested with
//! an injected clock and no scheduler running.

use std::time::Duration;

use chrono::{DateTime, Utc};
use turnbase_lobby::{Rules, Schedule};
use turnbase_store::lobby::{SeatRow, SeatStatus};
use turnbase_store::turns::Trigger;
use uuid::Uuid;

/// The longest an excused miss extends a turn.
pub const MAX_EXCUSE: Duration = Duration::from_secs(24 * 3600);

/// A turn's deadline and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The schedule slot the turn stands for (simultaneous games).
    pub slot: Option<DateTime<Utc>>,
    pub due: DateTime<Utc>,
    pub trigger: Trigger,
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Whether the platform waits for a seat's person: an active, human seat
/// its player (not the engine's bot) plays.
pub fn played_by_person(seat: &SeatRow) -> bool {
    !seat.is_bot && !seat.bot_control && seat.status == SeatStatus::Active
}

/// The deadline of a turn opened at `now`.
///
/// Simultaneous games take the schedule's next slot after both `now` and
/// the slot the previous turn stood for (`consumed`), so a turn resolved
/// early or by force uses up its slot and the next turn still gets a whole
/// one, and a game that was down resolves once and then keeps to the
/// schedule instead of firing the missed slots in a burst.
///
/// Sequential games run the mover's clock: the move limit for a person,
/// `bot_delay` for a bot (or a seat the bot plays), nothing for a seat that
/// resigned (the engine's timeout rule applies at once).
pub fn next_deadline(
    schedule: &Schedule,
    rules: &Rules,
    anchor: DateTime<Utc>,
    consumed: Option<DateTime<Utc>>,
    mover: Option<&SeatRow>,
    now: DateTime<Utc>,
) -> Option<Deadline> {
    match schedule {
        Schedule::PerMove(limit) => {
            let mover = mover?;
            let (due, trigger) = if mover.is_bot || mover.bot_control {
                (after(now, rules.bot_delay), Trigger::Bot)
            } else if mover.status != SeatStatus::Active {
                (now, Trigger::Timeout)
            } else {
                (after(now, *limit), Trigger::Timeout)
            };
            Some(Deadline {
                slot: None,
                due,
                trigger,
            })
        }
        _ => {
            let from = consumed.map_or(now, |c| c.max(now));
            let slot = schedule.slot_after(anchor, from)?;
            Some(Deadline {
                slot: Some(slot),
                due: slot,
                trigger: Trigger::Schedule,
            })
        }
    }
}

/// The deadline of a turn resumed at `now`: at least a whole turn from
/// now (the first slot at or after `now` plus a turn's length; the full
/// move limit or bot delay).
pub fn resumed_deadline(
    schedule: &Schedule,
    rules: &Rules,
    anchor: DateTime<Utc>,
    mover: Option<&SeatRow>,
    now: DateTime<Utc>,
) -> Option<Deadline> {
    match schedule {
        Schedule::PerMove(_) => next_deadline(schedule, rules, anchor, None, mover, now),
        _ => {
            let length = schedule.turn_length(now);
            let earliest = after(now, length) - chrono::Duration::milliseconds(1);
            let slot = schedule.slot_after(anchor, earliest)?;
            Some(Deadline {
                slot: Some(slot),
                due: slot,
                trigger: Trigger::Schedule,
            })
        }
    }
}

/// How long an excused miss extends the turn: a turn's length, at most a
/// day.
pub fn excuse_length(schedule: &Schedule, now: DateTime<Utc>) -> Duration {
    schedule.turn_length(now).min(MAX_EXCUSE)
}

/// The awaited seats (people) among `to_move` that have not acted.
pub fn missing(awaiting: &[Uuid], acted: &[Uuid]) -> Vec<Uuid> {
    awaiting
        .iter()
        .filter(|s| !acted.contains(s))
        .copied()
        .collect()
}

/// Whether every awaited seat still played by a person has acted (an
/// early turn), given the seats as they are now. At least one order must
/// have come: a game of bots keeps to its schedule.
pub fn all_in(awaiting: &[Uuid], acted: &[Uuid], seats: &[SeatRow]) -> bool {
    let still: Vec<Uuid> = awaiting
        .iter()
        .filter(|id| seats.iter().any(|s| s.id == **id && played_by_person(s)))
        .copied()
        .collect();
    !acted.is_empty() && missing(&still, acted).is_empty()
}

/// Seats among `missing` that still have an excused miss to spend.
pub fn excusable(missing: &[Uuid], seats: &[SeatRow], rules: &Rules) -> Vec<Uuid> {
    missing
        .iter()
        .filter(|id| {
            seats.iter().any(|s| {
                s.id == **id
                    && played_by_person(s)
                    && s.excuses_used < i64::from(rules.excused_misses)
            })
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use turnbase_engine_kit::protocol::Mode;
    use turnbase_lobby::ScheduleSpec;

    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid")
    }

    fn cron(expr: &str, zone: &str) -> Schedule {
        Schedule::parse(
            &ScheduleSpec::Cron {
                cron: expr.into(),
                time_zone: zone.into(),
            },
            Mode::Simultaneous,
        )
        .expect("valid")
    }

    fn interval(every: &str) -> Schedule {
        Schedule::parse(
            &ScheduleSpec::Interval {
                every: every.into(),
            },
            Mode::Simultaneous,
        )
        .expect("valid")
    }

    fn seat(bot: bool) -> SeatRow {
        SeatRow {
            id: Uuid::now_v7(),
            game_id: Uuid::nil(),
            account_id: (!bot).then(Uuid::now_v7),
            is_bot: bot,
            race_name: "x".into(),
            status: SeatStatus::Active,
            joined_at: Utc::now(),
            resigned_at: None,
            misses: 0,
            excuses_used: 0,
            bot_control: false,
        }
    }

    /// Walks a daily 18:00 Berlin schedule over the autumn change: each
    /// turn resolved on its slot opens the next at 18:00 local, one slot
    /// per day, none skipped or doubled.
    #[test]
    fn cron_turns_keep_local_time_across_daylight_saving() {
        let s = cron("0 18 * * *", "Europe/Berlin");
        let rules = Rules::default();
        let start = at(2026, 10, 23, 12, 0);
        let mut now = start;
        let mut consumed = None;
        let mut dues = Vec::new();
        for _ in 0..4 {
            let d = next_deadline(&s, &rules, start, consumed, None, now).expect("due");
            dues.push(d.due.to_rfc3339());
            consumed = d.slot;
            now = d.due;
        }
        assert_eq!(
            dues,
            [
                "2026-10-23T16:00:00+00:00",
                "2026-10-24T16:00:00+00:00",
                "2026-10-25T17:00:00+00:00",
                "2026-10-26T17:00:00+00:00",
            ]
        );
        // Spring: 02:30 does not exist on 2026-03-29 in Berlin; the slot
        // fires once, at the next instant that does.
        let s = cron("30 2 * * *", "Europe/Berlin");
        let start = at(2026, 3, 27, 12, 0);
        let (mut now, mut consumed, mut dues) = (start, None, Vec::new());
        for _ in 0..3 {
            let d = next_deadline(&s, &rules, start, consumed, None, now).expect("due");
            dues.push(d.due);
            consumed = d.slot;
            now = d.due;
        }
        assert_eq!(dues[0], at(2026, 3, 28, 1, 30));
        assert_eq!(dues[2], at(2026, 3, 30, 0, 30));
        assert!(dues[1] > dues[0] && dues[1] < dues[2], "{dues:?}");
    }

    #[test]
    fn an_early_or_forced_turn_uses_up_its_slot() {
        let s = interval("1h");
        let rules = Rules::default();
        let start = at(2026, 1, 1, 0, 0);
        // Turn 1 was due at 01:00 and resolved early at 00:20: turn 2 is
        // due at 02:00, not 01:00.
        let d = next_deadline(
            &s,
            &rules,
            start,
            Some(at(2026, 1, 1, 1, 0)),
            None,
            at(2026, 1, 1, 0, 20),
        )
        .expect("due");
        assert_eq!(d.due, at(2026, 1, 1, 2, 0));
        assert_eq!(d.trigger, Trigger::Schedule);
    }

    #[test]
    fn after_downtime_one_late_turn_then_the_schedule() {
        let s = interval("1h");
        let rules = Rules::default();
        let start = at(2026, 1, 1, 0, 0);
        // Turn 3 was due at 03:00; the backend came back at 07:40 and
        // resolved it then: turn 4 is due at 08:00, not at 04:00 (which
        // would fire 04:00, 05:00, 06:00, 07:00 at once).
        let d = next_deadline(
            &s,
            &rules,
            start,
            Some(at(2026, 1, 1, 3, 0)),
            None,
            at(2026, 1, 1, 7, 40),
        )
        .expect("due");
        assert_eq!(d.due, at(2026, 1, 1, 8, 0));
        // Daily cron: the same, a day's slots skipped at once.
        let s = cron("0 18 * * *", "UTC");
        let d = next_deadline(
            &s,
            &rules,
            start,
            Some(at(2026, 1, 1, 18, 0)),
            None,
            at(2026, 1, 4, 9, 0),
        )
        .expect("due");
        assert_eq!(d.due, at(2026, 1, 4, 18, 0));
    }

    #[test]
    fn a_resumed_turn_gets_at_least_a_whole_turn() {
        let rules = Rules::default();
        let start = at(2026, 1, 1, 0, 0);
        let s = interval("1h");
        let d = resumed_deadline(&s, &rules, start, None, at(2026, 1, 1, 5, 10)).expect("due");
        assert_eq!(d.due, at(2026, 1, 1, 7, 0), "≥ 1 h from 05:10 on the grid");
        let s = cron("0 18 * * *", "UTC");
        let d = resumed_deadline(&s, &rules, start, None, at(2026, 1, 2, 10, 0)).expect("due");
        assert_eq!(d.due, at(2026, 1, 3, 18, 0), "≥ 24 h from 10:00");
        let d = resumed_deadline(&s, &rules, start, None, at(2026, 1, 2, 18, 0)).expect("due");
        assert_eq!(d.due, at(2026, 1, 3, 18, 0), "exactly a day is enough");
    }

    #[test]
    fn move_clocks_for_people_bots_and_seats_that_left() {
        let s = Schedule::parse(
            &ScheduleSpec::PerMove { limit: "1h".into() },
            Mode::Sequential,
        )
        .expect("valid");
        let rules = Rules::default();
        let now = at(2026, 1, 1, 0, 0);
        let person = seat(false);
        let d = next_deadline(&s, &rules, now, None, Some(&person), now).expect("due");
        assert_eq!((d.due, d.trigger), (at(2026, 1, 1, 1, 0), Trigger::Timeout));
        let bot = seat(true);
        let d = next_deadline(&s, &rules, now, None, Some(&bot), now).expect("due");
        assert_eq!(d.due - now, chrono::Duration::seconds(2));
        assert_eq!(d.trigger, Trigger::Bot);
        let mut taken_over = seat(false);
        taken_over.bot_control = true;
        let d = next_deadline(&s, &rules, now, None, Some(&taken_over), now).expect("due");
        assert_eq!(d.trigger, Trigger::Bot);
        let mut left = seat(false);
        left.status = SeatStatus::Resigned;
        let d = next_deadline(&s, &rules, now, None, Some(&left), now).expect("due");
        assert_eq!(d.due, now);
        assert!(next_deadline(&s, &rules, now, None, None, now).is_none());
    }

    #[test]
    fn early_turns_wait_for_every_person_and_at_least_one_order() {
        let (a, b, bot) = (seat(false), seat(false), seat(true));
        let seats = vec![a.clone(), b.clone(), bot.clone()];
        let awaiting = vec![a.id, b.id];
        assert!(!all_in(&awaiting, &[a.id], &seats));
        assert!(all_in(&awaiting, &[a.id, b.id], &seats));
        assert!(!all_in(&[], &[], &seats), "bots alone keep the schedule");
        // b left: a's orders are enough.
        let mut left = b.clone();
        left.status = SeatStatus::Resigned;
        let seats = vec![a.clone(), left, bot];
        assert!(all_in(&awaiting, &[a.id], &seats));
    }

    #[test]
    fn excuses_are_spent_once_per_seat() {
        let rules = Rules::default();
        let (a, mut b) = (seat(false), seat(false));
        b.excuses_used = 1;
        let seats = vec![a.clone(), b.clone()];
        assert_eq!(excusable(&[a.id, b.id], &seats, &rules), vec![a.id]);
        let none = Rules {
            excused_misses: 0,
            ..Rules::default()
        };
        assert!(excusable(&[a.id], &seats, &none).is_empty());
        assert_eq!(
            excuse_length(&interval("48h"), Utc::now()),
            MAX_EXCUSE,
            "a day at most"
        );
        assert_eq!(excuse_length(&interval("1h"), Utc::now()).as_secs(), 3600);
    }
}
