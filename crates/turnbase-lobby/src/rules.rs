//! A game's play rules: what the platform (not the engine) does about
//! turns. Stored with the game as JSON; defaults fill what the owner left
//! out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest bot delay.
pub const MAX_BOT_DELAY: Duration = Duration::from_secs(3600);
/// Most excused misses per seat, and most misses before the bot takes over.
pub const MAX_EXCUSES: u32 = 10;
pub const MAX_TAKEOVER_AFTER: u32 = 100;

/// The rules as stored and as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlayRules {
    /// A simultaneous turn resolves as soon as every awaited seat sent
    /// orders (bots count as ready).
    pub early_turns: bool,
    /// How long after the previous move a bot's move is due (sequential
    /// games), e.g. `2s`.
    pub bot_delay: String,
    /// Misses per seat that extend the turn instead of counting.
    pub excused_misses: u32,
    /// Consecutive misses after which the engine's bot plays the seat
    /// (0: never).
    pub bot_takeover_after: u32,
    /// How long before a deadline the seats still to act are reminded
    /// ("orders due"): a duration, `0s` for never, or left out for half
    /// the turn, at most 12 hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remind_before: Option<String>,
}

/// Longest reminder lead a game may set.
pub const MAX_REMIND_BEFORE: Duration = Duration::from_secs(48 * 3600);
/// The automatic lead: half the turn, at most this.
pub const AUTO_REMIND_CAP: Duration = Duration::from_secs(12 * 3600);

/// When a game's seats are reminded of their orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reminder {
    /// Half the turn, at most [`AUTO_REMIND_CAP`].
    #[default]
    Auto,
    Never,
    Before(Duration),
}

impl Reminder {
    /// How long before the deadline of a turn of `turn_length` the
    /// reminder goes; `None` for never.
    pub fn lead(self, turn_length: Duration) -> Option<Duration> {
        match self {
            Reminder::Auto => Some((turn_length / 2).min(AUTO_REMIND_CAP)),
            Reminder::Never => None,
            Reminder::Before(d) => Some(d),
        }
    }
}

impl Default for PlayRules {
    fn default() -> PlayRules {
        PlayRules {
            early_turns: true,
            bot_delay: "2s".into(),
            excused_misses: 1,
            bot_takeover_after: 3,
            remind_before: None,
        }
    }
}

/// The rules, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub early_turns: bool,
    pub bot_delay: Duration,
    pub excused_misses: u32,
    pub bot_takeover_after: u32,
    pub reminder: Reminder,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            early_turns: true,
            bot_delay: Duration::from_secs(2),
            excused_misses: 1,
            bot_takeover_after: 3,
            reminder: Reminder::Auto,
        }
    }
}

impl PlayRules {
    /// Checks the rules; the message names the field.
    pub fn check(&self) -> Result<Rules, String> {
        let bot_delay = turnbase_core::config::parse_duration(&self.bot_delay)
            .map_err(|e| format!("rules.bot_delay: {e} (e.g. 2s, 500ms)"))?;
        if bot_delay > MAX_BOT_DELAY {
            return Err(format!(
                "rules.bot_delay: at most {} s",
                MAX_BOT_DELAY.as_secs()
            ));
        }
        if self.excused_misses > MAX_EXCUSES {
            return Err(format!("rules.excused_misses: at most {MAX_EXCUSES}"));
        }
        if self.bot_takeover_after > MAX_TAKEOVER_AFTER {
            return Err(format!(
                "rules.bot_takeover_after: at most {MAX_TAKEOVER_AFTER} (0: never)"
            ));
        }
        let reminder = match &self.remind_before {
            None => Reminder::Auto,
            Some(text) => {
                let d = turnbase_core::config::parse_duration(text).map_err(|e| {
                    format!("rules.remind_before: {e} (e.g. 12h, 30m; 0s for never)")
                })?;
                if d.is_zero() {
                    Reminder::Never
                } else if d > MAX_REMIND_BEFORE {
                    return Err(format!(
                        "rules.remind_before: at most {} h",
                        MAX_REMIND_BEFORE.as_secs() / 3600
                    ));
                } else {
                    Reminder::Before(d)
                }
            }
        };
        Ok(Rules {
            early_turns: self.early_turns,
            bot_delay,
            excused_misses: self.excused_misses,
            bot_takeover_after: self.bot_takeover_after,
            reminder,
        })
    }

    /// The stored rules of a game (defaults for what is missing; the
    /// defaults when the text does not parse, which the lobby never
    /// writes).
    pub fn stored(text: &str) -> Rules {
        serde_json::from_str::<PlayRules>(text)
            .ok()
            .and_then(|r| r.check().ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::PlayRules;

    #[test]
    fn defaults_fill_in_and_bad_values_name_their_field() {
        let r: PlayRules = serde_json::from_str(r#"{"bot_delay":"1s"}"#).expect("parses");
        let checked = r.check().expect("valid");
        assert!(checked.early_turns);
        assert_eq!(checked.bot_delay.as_secs(), 1);
        assert_eq!(checked.bot_takeover_after, 3);
        let bad = PlayRules {
            bot_delay: "soon".into(),
            ..PlayRules::default()
        };
        assert!(
            bad.check()
                .expect_err("invalid")
                .starts_with("rules.bot_delay")
        );
        let bad = PlayRules {
            excused_misses: 11,
            ..PlayRules::default()
        };
        assert!(
            bad.check()
                .expect_err("invalid")
                .starts_with("rules.excused_misses")
        );
        assert!(serde_json::from_str::<PlayRules>(r#"{"nope":1}"#).is_err());
        assert_eq!(PlayRules::stored("{}").excused_misses, 1);
        let hour = std::time::Duration::from_secs(3600);
        let auto = PlayRules::stored("{}").reminder;
        assert_eq!(auto.lead(24 * hour), Some(12 * hour));
        assert_eq!(auto.lead(2 * hour), Some(hour));
        assert_eq!(
            PlayRules::stored(r#"{"remind_before":"0s"}"#)
                .reminder
                .lead(hour),
            None
        );
        assert_eq!(
            PlayRules::stored(r#"{"remind_before":"3h"}"#)
                .reminder
                .lead(hour),
            Some(3 * hour)
        );
        let bad = PlayRules {
            remind_before: Some("3d".into()),
            ..PlayRules::default()
        };
        assert!(
            bad.check()
                .expect_err("too long")
                .starts_with("rules.remind_before")
        );
    }
}
