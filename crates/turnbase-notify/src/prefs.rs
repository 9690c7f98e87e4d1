//! A person's notification preferences: which channels each kind takes,
//! their time zone, quiet hours and the turn-result digest. Parsed from
//! what people send (every problem named), stored as JSON, and asked
//! by the router: `wants(kind, channel)` and `held_until(now)`.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike as _, Duration, NaiveTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use turnbase_store::notify::{Channel, Kind};

/// Quiet hours in the person's zone: `start` to `end`, across midnight
/// when `end` is earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    /// Channels per kind; kinds not named take their defaults.
    pub channels: BTreeMap<Kind, Vec<Channel>>,
    pub time_zone: Tz,
    pub quiet: Option<QuietHours>,
    /// Turn results by email as one mail per game and day.
    pub digest: bool,
}

/// The defaults: everything in the inbox and live; by email what a
/// player must not miss.
pub fn default_channels(kind: Kind) -> Vec<Channel> {
    match kind {
        Kind::YourMove
        | Kind::OrdersDue
        | Kind::GameStarted
        | Kind::GameFinished
        | Kind::ApplicationReceived
        | Kind::ApplicationApproved
        | Kind::ApplicationRejected
        | Kind::GameCancelled
        | Kind::NewDevice
        | Kind::AdminNotice => vec![Channel::Push, Channel::Email],
        _ => vec![Channel::Push],
    }
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            channels: BTreeMap::new(),
            time_zone: Tz::UTC,
            quiet: None,
            digest: false,
        }
    }
}

/// The stored and the sent form (channels by kind name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesDoc {
    #[serde(default)]
    pub channels: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub quiet_hours: Option<QuietDoc>,
    #[serde(default)]
    pub digest: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietDoc {
    pub start: String,
    pub end: String,
}

impl Preferences {
    /// Whether `kind` goes to `channel` (the inbox always has it).
    pub fn wants(&self, kind: Kind, channel: Channel) -> bool {
        match self.channels.get(&kind) {
            Some(chosen) => chosen.contains(&channel),
            None => default_channels(kind).contains(&channel),
        }
    }

    /// Checks a document; every problem is named, field by field.
    pub fn parse(doc: &PreferencesDoc) -> Result<Preferences, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut channels = BTreeMap::new();
        for (name, chosen) in &doc.channels {
            let Some(kind) = Kind::parse(name) else {
                problems.push((
                    format!("channels.{name}"),
                    "no such notification kind".to_string(),
                ));
                continue;
            };
            let mut set = Vec::new();
            for c in chosen {
                match Channel::parse(c) {
                    Some(ch) if !set.contains(&ch) => set.push(ch),
                    Some(_) => {}
                    None => problems.push((
                        format!("channels.{name}"),
                        format!("{c:?} is not a channel (push, email or webhook)"),
                    )),
                }
            }
            set.sort();
            channels.insert(kind, set);
        }
        let time_zone = match &doc.time_zone {
            None => Tz::UTC,
            Some(zone) => match zone.parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    problems.push((
                        "time_zone".into(),
                        format!("{zone:?} is not an IANA time zone (e.g. Europe/Berlin)"),
                    ));
                    Tz::UTC
                }
            },
        };
        let quiet = match &doc.quiet_hours {
            None => None,
            Some(q) => {
                let start = parse_time(&q.start);
                let end = parse_time(&q.end);
                match (start, end) {
                    (Some(start), Some(end)) if start == end => {
                        problems.push((
                            "quiet_hours".into(),
                            "start and end are the same time; leave quiet hours out instead".into(),
                        ));
                        None
                    }
                    (Some(start), Some(end)) => Some(QuietHours { start, end }),
                    (s, e) => {
                        if s.is_none() {
                            problems.push((
                                "quiet_hours.start".into(),
                                format!("{:?} is not a time of day as HH:MM", q.start),
                            ));
                        }
                        if e.is_none() {
                            problems.push((
                                "quiet_hours.end".into(),
                                format!("{:?} is not a time of day as HH:MM", q.end),
                            ));
                        }
                        None
                    }
                }
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Preferences {
            channels,
            time_zone,
            quiet,
            digest: doc.digest,
        })
    }

    /// Stored text (or an empty object) back into preferences; a stored
    /// value that no longer parses counts as the defaults.
    pub fn from_stored(text: Option<&str>) -> Preferences {
        text.and_then(|t| serde_json::from_str::<PreferencesDoc>(t).ok())
            .and_then(|doc| Preferences::parse(&doc).ok())
            .unwrap_or_default()
    }

    pub fn doc(&self) -> PreferencesDoc {
        PreferencesDoc {
            channels: self
                .channels
                .iter()
                .map(|(k, cs)| {
                    (
                        k.as_str().to_string(),
                        cs.iter().map(|c| c.as_str().to_string()).collect(),
                    )
                })
                .collect(),
            time_zone: Some(self.time_zone.name().to_string()),
            quiet_hours: self.quiet.map(|q| QuietDoc {
                start: q.start.format("%H:%M").to_string(),
                end: q.end.format("%H:%M").to_string(),
            }),
            digest: self.digest,
        }
    }

    /// Every kind with the channels it takes now (defaults filled in).
    pub fn effective(&self) -> BTreeMap<&'static str, Vec<&'static str>> {
        Kind::ALL
            .iter()
            .map(|k| {
                let chosen = self
                    .channels
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| default_channels(*k));
                (k.as_str(), chosen.iter().map(|c| c.as_str()).collect())
            })
            .collect()
    }

    /// When quiet hours that hold `now` end; `None` outside them.
    pub fn held_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let q = self.quiet?;
        let local = now.with_timezone(&self.time_zone);
        let t = local.time();
        let inside = if q.start < q.end {
            t >= q.start && t < q.end
        } else {
            t >= q.start || t < q.end
        };
        if !inside {
            return None;
        }
        let mut day = local.date_naive();
        if t >= q.end {
            day = day.succ_opt()?;
        }
        Some(self.local_to_utc(day, q.end))
    }

    /// The start of the person's next local day after `at` (when a day's
    /// digest goes out), and the start of `at`'s own day.
    pub fn day_bounds(&self, at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let day = at.with_timezone(&self.time_zone).date_naive();
        let start = self.local_to_utc(day, NaiveTime::MIN);
        let next = day
            .succ_opt()
            .map(|d| self.local_to_utc(d, NaiveTime::MIN))
            .unwrap_or(start + Duration::days(1));
        (start, next)
    }

    /// The digest key of `at`'s local day for a person and game.
    pub fn digest_day(&self, at: DateTime<Utc>) -> String {
        let d = at.with_timezone(&self.time_zone).date_naive();
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    }

    /// A local wall time as UTC; a time skipped by a DST change moves to
    /// the first instant after the gap, a repeated one takes the earlier.
    fn local_to_utc(&self, day: chrono::NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        let mut naive = day.and_time(time);
        for _ in 0..4 {
            if let Some(t) = self.time_zone.from_local_datetime(&naive).earliest() {
                return t.with_timezone(&Utc);
            }
            naive += Duration::minutes(30);
        }
        Utc.from_utc_datetime(&day.and_time(time))
    }
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    let t = text.trim();
    if t.len() != 5 {
        return None;
    }
    NaiveTime::parse_from_str(t, "%H:%M").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    fn quiet(zone: &str, start: &str, end: &str) -> Preferences {
        Preferences::parse(&PreferencesDoc {
            time_zone: Some(zone.into()),
            quiet_hours: Some(QuietDoc {
                start: start.into(),
                end: end.into(),
            }),
            ..Default::default()
        })
        .expect("valid")
    }

    #[test]
    fn quiet_hours_across_midnight_in_the_persons_zone() {
        let p = quiet("Europe/Berlin", "22:00", "07:00");
        // 21:30 UTC is 22:30 in Berlin in winter: held until 07:00 Berlin.
        assert_eq!(
            p.held_until(at("2026-01-10T21:30:00Z")),
            Some(at("2026-01-11T06:00:00Z"))
        );
        // 05:00 UTC is 06:00 Berlin: still quiet, until 07:00 the same day.
        assert_eq!(
            p.held_until(at("2026-01-11T05:00:00Z")),
            Some(at("2026-01-11T06:00:00Z"))
        );
        assert_eq!(p.held_until(at("2026-01-11T06:00:00Z")), None);
        assert_eq!(p.held_until(at("2026-01-11T12:00:00Z")), None);
    }

    #[test]
    fn quiet_hours_within_a_day() {
        let p = quiet("UTC", "12:00", "14:00");
        assert_eq!(
            p.held_until(at("2026-01-11T12:00:00Z")),
            Some(at("2026-01-11T14:00:00Z"))
        );
        assert_eq!(p.held_until(at("2026-01-11T14:00:00Z")), None);
        assert_eq!(p.held_until(at("2026-01-11T11:59:59Z")), None);
    }

    #[test]
    fn bad_documents_name_each_problem() {
        let doc: PreferencesDoc = serde_json::from_value(serde_json::json!({
            "channels": {"your_move": ["email", "pigeon"], "nonsense": ["push"]},
            "time_zone": "Mars/Olympus",
            "quiet_hours": {"start": "25:00", "end": "07:00"}
        }))
        .expect("shape");
        let problems = Preferences::parse(&doc).expect_err("invalid");
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "channels.nonsense",
                "channels.your_move",
                "time_zone",
                "quiet_hours.start"
            ]
        );
        let same = quiet_doc("07:00", "07:00");
        assert_eq!(
            Preferences::parse(&same).expect_err("same")[0].0,
            "quiet_hours"
        );
    }

    fn quiet_doc(start: &str, end: &str) -> PreferencesDoc {
        PreferencesDoc {
            quiet_hours: Some(QuietDoc {
                start: start.into(),
                end: end.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_choices() {
        let p = Preferences::default();
        assert!(p.wants(Kind::YourMove, Channel::Email));
        assert!(!p.wants(Kind::TurnResolved, Channel::Email));
        assert!(p.wants(Kind::TurnResolved, Channel::Push));
        assert!(!p.wants(Kind::YourMove, Channel::Webhook));
        let mut chosen = p.clone();
        chosen
            .channels
            .insert(Kind::YourMove, vec![Channel::Webhook]);
        assert!(!chosen.wants(Kind::YourMove, Channel::Email));
        assert!(chosen.wants(Kind::YourMove, Channel::Webhook));
        let round =
            Preferences::from_stored(Some(&serde_json::to_string(&chosen.doc()).expect("JSON")));
        assert_eq!(round, chosen);
    }

    #[test]
    fn digest_days_follow_the_zone() {
        let p = quiet("America/New_York", "23:00", "06:00");
        assert_eq!(p.digest_day(at("2026-01-11T03:00:00Z")), "2026-01-10");
        let (start, next) = p.day_bounds(at("2026-01-11T03:00:00Z"));
        assert_eq!(start, at("2026-01-10T05:00:00Z"));
        assert_eq!(next, at("2026-01-11T05:00:00Z"));
    }
}
