//! `RaceName`: the name a player (or bot) goes by in a game, and the key
//! under which the directory keeps it unique.
//!
//! The key is what people would read as the same name: the text is
//! decomposed for compatibility (NFKD, so `ﬁ` is `fi` and full-width
//! letters are plain), combining marks are dropped (`Zoë` is `Zoe`),
//! case is folded fully (`ß` is `ss`), spaces are collapsed, and the result
//! is recomposed (NFKC).

use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

/// Shortest and longest name, in characters.
pub const MIN_CHARS: usize = 2;
pub const MAX_CHARS: usize = 24;

/// Names nobody may take: they would pass for the platform or its staff.
/// Compared by key, so `ADMIN` and `Ädmin` are caught too.
const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "bot",
    "gamemaster",
    "mod",
    "moderator",
    "null",
    "operator",
    "root",
    "server",
    "staff",
    "support",
    "system",
    "turnbase",
    "undefined",
];

/// A valid race name: NFKC-normalised text and its directory key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaceName {
    shown: String,
    key: String,
}

/// Why a name is not a race name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaceNameError {
    #[error("a race name has {MIN_CHARS} to {MAX_CHARS} characters")]
    Length,
    #[error(
        "a race name may hold letters, digits, spaces and the marks - ' . only, and must start with a letter or digit ({0:?} is not allowed)"
    )]
    Character(char),
    #[error("a race name starts and ends with a letter or digit, with single spaces between words")]
    Spacing,
    #[error("{0:?} is reserved")]
    Reserved(String),
}

impl RaceName {
    /// The only way to a `RaceName`.
    pub fn parse(input: &str) -> Result<RaceName, RaceNameError> {
        let shown: String = input.trim().nfkc().collect();
        let count = shown.chars().count();
        if !(MIN_CHARS..=MAX_CHARS).contains(&count) {
            return Err(RaceNameError::Length);
        }
        if let Some(c) = shown
            .chars()
            .find(|&c| !(c.is_alphanumeric() || c == ' ' || is_joiner(c) || is_combining_mark(c)))
        {
            return Err(RaceNameError::Character(c));
        }
        let first_last_ok = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        if !first_last_ok(shown.chars().next())
            || !first_last_ok(shown.chars().last())
            || shown.contains("  ")
        {
            return Err(RaceNameError::Spacing);
        }
        let key = key_of(&shown);
        if key.is_empty() {
            return Err(RaceNameError::Length);
        }
        let bare: String = key.chars().filter(|c| c.is_alphanumeric()).collect();
        if RESERVED.contains(&bare.as_str()) {
            return Err(RaceNameError::Reserved(shown));
        }
        Ok(RaceName { shown, key })
    }

    /// The name as shown (NFKC).
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    /// The directory key: equal for names people would confuse.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn is_joiner(c: char) -> bool {
    matches!(c, '-' | '\'' | '.' | '’')
}

/// Compatibility-decomposed, marks stripped, fully case folded, and
/// recomposed.
fn key_of(name: &str) -> String {
    let stripped: String = name.nfkd().filter(|&c| !is_combining_mark(c)).collect();
    let folded = caseless::default_case_fold_str(&stripped);
    // Folding can produce new compatibility forms; normalise once more.
    let folded: String = folded.nfkd().filter(|&c| !is_combining_mark(c)).collect();
    let apostrophes = folded.replace('’', "'");
    apostrophes.nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::{RaceName, RaceNameError};

    #[test]
    fn names_people_would_confuse_share_a_key() {
        let zoe = RaceName::parse("Zoë").expect("valid");
        for same in ["ZOE", "zoe", "zoe\u{308}", "Zoe\u{301}", "Ｚｏｅ", "  Zoë "] {
            let other = RaceName::parse(same).unwrap_or_else(|e| panic!("{same:?}: {e}"));
            assert_eq!(other.key(), zoe.key(), "{same:?}");
        }
        let strasse = RaceName::parse("Straße").expect("valid");
        assert_eq!(
            strasse.key(),
            RaceName::parse("STRASSE").expect("valid").key()
        );
        assert_eq!(
            RaceName::parse("O’Neil").expect("valid").key(),
            RaceName::parse("o'neil").expect("valid").key()
        );
        assert_ne!(zoe.key(), RaceName::parse("Zoey").expect("valid").key());
    }

    #[test]
    fn the_shown_name_is_nfkc_and_trimmed() {
        assert_eq!(
            RaceName::parse(" ﬁre Lords ").expect("valid").as_str(),
            "fire Lords"
        );
        assert_eq!(
            RaceName::parse("zoe\u{308}").expect("valid").as_str(),
            "zoë"
        );
        assert_eq!(
            RaceName::parse("Ωmega 7").expect("valid").as_str(),
            "Ωmega 7"
        );
    }

    #[test]
    fn bad_names_are_refused_with_the_rule() {
        let too_long = "a".repeat(25);
        let cases: &[(&str, RaceNameError)] = &[
            ("", RaceNameError::Length),
            ("x", RaceNameError::Length),
            (too_long.as_str(), RaceNameError::Length),
            ("bad<name>", RaceNameError::Character('<')),
            ("tab\there", RaceNameError::Character('\t')),
            ("emoji 🚀", RaceNameError::Character('🚀')),
            ("-dash", RaceNameError::Spacing),
            ("two  spaces", RaceNameError::Spacing),
            ("end.", RaceNameError::Spacing),
            ("Admin", RaceNameError::Reserved("Admin".into())),
            ("ÄDMIN", RaceNameError::Reserved("ÄDMIN".into())),
            ("Turn-Base", RaceNameError::Reserved("Turn-Base".into())),
        ];
        for (input, want) in cases {
            assert_eq!(RaceName::parse(input).as_ref(), Err(want), "{input:?}");
        }
        assert!(RaceName::parse(&"a".repeat(24)).is_ok());
        assert!(RaceName::parse("Lords of Ægir").is_ok());
    }
}
