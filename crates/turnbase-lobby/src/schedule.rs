//! A game's turn schedule: when its turns resolve.
//!
//! Simultaneous games resolve on the slots of a cron expression read in an
//! IANA time zone (so "18:00 in Berlin" stays 18:00 across daylight saving:
//! a local time that does not exist that day is taken at the next instant
//! that does, and one that exists twice fires once), or every fixed
//! interval. Sequential games give each move a time limit instead.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};
use turnbase_engine_kit::protocol::Mode;

/// Shortest interval or move limit by default (`BACKEND_LOBBY_MIN_TURN_STEP`
/// lowers it, e.g. for benchmarks), the floor under any configuration, and
/// the longest.
pub const MIN_STEP: Duration = Duration::from_secs(10);
pub const FLOOR_STEP: Duration = Duration::from_secs(1);
pub const MAX_STEP: Duration = Duration::from_secs(90 * 24 * 3600);

/// A schedule as stored (and as the API shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// Five fields: minute hour day-of-month month day-of-week.
    Cron { cron: String, time_zone: String },
    /// A duration such as `24h` or `90m`.
    Interval { every: String },
    /// Sequential games: each move's time limit.
    PerMove { limit: String },
}

/// A checked schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        cron: Box<Cron>,
        zone: chrono_tz::Tz,
    },
    Interval(Duration),
    PerMove(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule.cron: {0}")]
    Cron(String),
    #[error("schedule.time_zone: {0:?} is not an IANA time zone (e.g. Europe/Berlin, UTC)")]
    TimeZone(String),
    #[error("schedule.{field}: {reason}")]
    Duration { field: &'static str, reason: String },
    #[error("schedule.kind: {0}")]
    Mode(String),
    #[error("schedule.cron: the expression never fires")]
    NeverFires,
}

/// One previewed turn time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewTime {
    pub utc: DateTime<Utc>,
    /// The same instant in the game's zone (RFC 3339 with its offset).
    pub local: String,
}

impl Schedule {
    /// Checks `spec` for an engine of `mode`, with the default shortest
    /// step.
    pub fn parse(spec: &ScheduleSpec, mode: Mode) -> Result<Schedule, ScheduleError> {
        Self::parse_bounded(spec, mode, MIN_STEP)
    }

    /// Checks `spec` for an engine of `mode`; intervals and move limits
    /// are at least `min` (never below [`FLOOR_STEP`]).
    pub fn parse_bounded(
        spec: &ScheduleSpec,
        mode: Mode,
        min: Duration,
    ) -> Result<Schedule, ScheduleError> {
        let min = min.max(FLOOR_STEP);
        let schedule = match spec {
            ScheduleSpec::Cron { cron, time_zone } => {
                let zone = chrono_tz::Tz::from_str(time_zone)
                    .map_err(|_| ScheduleError::TimeZone(time_zone.clone()))?;
                if cron.split_whitespace().count() != 5 {
                    return Err(ScheduleError::Cron(
                        "five fields are expected: minute hour day-of-month month day-of-week"
                            .into(),
                    ));
                }
                let parsed = CronParser::builder()
                    .seconds(Seconds::Disallowed)
                    .build()
                    .parse(cron)
                    .map_err(|e| ScheduleError::Cron(e.to_string()))?;
                Schedule::Cron {
                    cron: Box::new(parsed),
                    zone,
                }
            }
            ScheduleSpec::Interval { every } => Schedule::Interval(step("every", every, min)?),
            ScheduleSpec::PerMove { limit } => Schedule::PerMove(step("limit", limit, min)?),
        };
        match (mode, &schedule) {
            (Mode::Simultaneous, Schedule::PerMove(_)) => Err(ScheduleError::Mode(
                "a simultaneous game resolves on a cron or interval schedule, not per move".into(),
            )),
            (Mode::Sequential, Schedule::Cron { .. } | Schedule::Interval(_)) => {
                Err(ScheduleError::Mode(
                    "a sequential game has a per_move time limit, not a turn schedule".into(),
                ))
            }
            _ => {
                if let Schedule::Cron { .. } = schedule
                    && schedule.next_after(Utc::now()).is_none()
                {
                    return Err(ScheduleError::NeverFires);
                }
                Ok(schedule)
            }
        }
    }

    /// The first turn time strictly after `after`; `None` for per-move
    /// schedules (the clock starts with each move) and for a cron
    /// expression that never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, zone } => cron
                .find_next_occurrence(&after.with_timezone(zone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Schedule::Interval(every) => Some(after + chrono::Duration::from_std(*every).ok()?),
            Schedule::PerMove(_) => None,
        }
    }

    /// The first slot strictly after `t`. Interval slots fall every
    /// interval from `anchor` (the game's start), so a turn resolved early
    /// or late leaves the grid where it was. `None` as for
    /// [`Schedule::next_after`].
    pub fn slot_after(&self, anchor: DateTime<Utc>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Interval(every) => {
                let every = i64::try_from(every.as_millis()).ok()?.max(1);
                let elapsed = (t - anchor).num_milliseconds();
                let k = elapsed.div_euclid(every) + 1;
                Some(anchor + chrono::Duration::milliseconds(k.checked_mul(every)?))
            }
            _ => self.next_after(t),
        }
    }

    /// How long one turn lasts from `t`: the interval, the move limit, or
    /// the gap between the next two cron slots.
    pub fn turn_length(&self, t: DateTime<Utc>) -> Duration {
        match self {
            Schedule::Interval(d) | Schedule::PerMove(d) => *d,
            Schedule::Cron { .. } => self
                .next_after(t)
                .and_then(|a| Some((a, self.next_after(a)?)))
                .and_then(|(a, b)| (b - a).to_std().ok())
                .unwrap_or(Duration::from_secs(24 * 3600)),
        }
    }

    /// The next `count` turn times after `start`, in UTC and in the game's
    /// zone (UTC for intervals). Empty for per-move schedules.
    pub fn preview(&self, start: DateTime<Utc>, count: usize) -> Vec<PreviewTime> {
        let mut out = Vec::with_capacity(count);
        let mut at = start;
        while out.len() < count {
            let Some(next) = self.next_after(at) else {
                break;
            };
            let local = match self {
                Schedule::Cron { zone, .. } => next.with_timezone(zone).to_rfc3339(),
                _ => next.to_rfc3339(),
            };
            out.push(PreviewTime { utc: next, local });
            at = next;
        }
        out
    }
}

fn step(field: &'static str, text: &str, min: Duration) -> Result<Duration, ScheduleError> {
    let d =
        turnbase_core::config::parse_duration(text).map_err(|reason| ScheduleError::Duration {
            field,
            reason: format!("{reason} (e.g. 90s, 30m, 24h)"),
        })?;
    if !(min..=MAX_STEP).contains(&d) {
        return Err(ScheduleError::Duration {
            field,
            reason: format!(
                "must be between {} s and {} days",
                min.as_secs(),
                MAX_STEP.as_secs() / 86_400
            ),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use turnbase_engine_kit::protocol::Mode;

    use super::{Schedule, ScheduleError, ScheduleSpec};

    fn cron(expr: &str, zone: &str) -> ScheduleSpec {
        ScheduleSpec::Cron {
            cron: expr.into(),
            time_zone: zone.into(),
        }
    }

    #[test]
    fn cron_slots_keep_local_time_across_daylight_saving() {
        let s = Schedule::parse(&cron("0 18 * * *", "Europe/Berlin"), Mode::Simultaneous)
            .expect("valid");
        // Berlin leaves summer time on 2026-10-25.
        let start = chrono::Utc
            .with_ymd_and_hms(2026, 10, 23, 12, 0, 0)
            .single()
            .expect("valid");
        let times: Vec<String> = s
            .preview(start, 4)
            .into_iter()
            .map(|t| format!("{} {}", t.utc.to_rfc3339(), t.local))
            .collect();
        assert_eq!(
            times,
            [
                "2026-10-23T16:00:00+00:00 2026-10-23T18:00:00+02:00",
                "2026-10-24T16:00:00+00:00 2026-10-24T18:00:00+02:00",
                "2026-10-25T17:00:00+00:00 2026-10-25T18:00:00+01:00",
                "2026-10-26T17:00:00+00:00 2026-10-26T18:00:00+01:00",
            ]
        );
    }

    #[test]
    fn a_slot_in_the_repeated_hour_fires_once_and_a_skipped_one_still_fires() {
        let start = chrono::Utc
            .with_ymd_and_hms(2026, 10, 24, 12, 0, 0)
            .single()
            .expect("valid");
        // 02:30 happens twice in Berlin on 2026-10-25.
        let twice = Schedule::parse(&cron("30 2 * * *", "Europe/Berlin"), Mode::Simultaneous)
            .expect("valid");
        let days: Vec<_> = twice
            .preview(start, 2)
            .iter()
            .map(|t| t.utc.date_naive().to_string())
            .collect();
        assert_eq!(days, ["2026-10-25", "2026-10-26"]);
        // 02:30 does not exist in Berlin on 2026-03-29.
        let spring = chrono::Utc
            .with_ymd_and_hms(2026, 3, 28, 12, 0, 0)
            .single()
            .expect("valid");
        let days: Vec<_> = twice
            .preview(spring, 2)
            .iter()
            .map(|t| t.utc.date_naive().to_string())
            .collect();
        assert_eq!(days.len(), 2);
        assert_ne!(days[0], days[1], "one slot per day");
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let cases = [
            (
                cron("61 * * * *", "UTC"),
                Mode::Simultaneous,
                "schedule.cron",
            ),
            (cron("0 18 * *", "UTC"), Mode::Simultaneous, "schedule.cron"),
            (
                cron("0 18 * * *", "Mars/Olympus"),
                Mode::Simultaneous,
                "schedule.time_zone",
            ),
            (cron("0 0 30 2 *", "UTC"), Mode::Simultaneous, "never fires"),
            (
                ScheduleSpec::Interval { every: "5s".into() },
                Mode::Simultaneous,
                "schedule.every",
            ),
            (
                ScheduleSpec::Interval {
                    every: "soon".into(),
                },
                Mode::Simultaneous,
                "schedule.every",
            ),
            (
                ScheduleSpec::PerMove { limit: "1h".into() },
                Mode::Simultaneous,
                "schedule.kind",
            ),
            (
                ScheduleSpec::Interval { every: "1h".into() },
                Mode::Sequential,
                "schedule.kind",
            ),
        ];
        for (spec, mode, want) in cases {
            let err: ScheduleError = Schedule::parse(&spec, mode).expect_err("invalid");
            assert!(err.to_string().contains(want), "{spec:?}: {err}");
        }
        assert!(
            Schedule::parse(
                &ScheduleSpec::PerMove { limit: "1h".into() },
                Mode::Sequential
            )
            .expect("valid")
            .preview(chrono::Utc::now(), 5)
            .is_empty()
        );
    }
}
