//! Names people choose: [`DisplayName`] (shown to other players) and
//! [`DeviceName`] (shown in the session list). `parse` is the only way in.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct NameError {
    field: &'static str,
    problem: &'static str,
}

/// Checks a name: trimmed, 1..=`max` characters, no control or
/// formatting characters (which could hide or reorder text).
fn check(field: &'static str, text: &str, max: usize) -> Result<String, NameError> {
    let err = |problem| NameError { field, problem };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(err("must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(err(match max {
            DisplayName::MAX => "must be at most 32 characters",
            _ => "must be at most 64 characters",
        }));
    }
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    if trimmed.chars().any(invisible) {
        return Err(err(
            "must not contain control or invisible formatting characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// The name other players see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX: usize = 32;

    pub fn parse(text: &str) -> Result<DisplayName, NameError> {
        check("display_name", text, Self::MAX).map(DisplayName)
    }

    /// A starting name for an account made from an address: its local
    /// part, cut to length, or `Player` when nothing usable is left.
    pub fn from_email(email: &str) -> DisplayName {
        let local = email.split('@').next().unwrap_or_default();
        let cut: String = local.chars().take(Self::MAX).collect();
        DisplayName::parse(&cut).unwrap_or_else(|_| DisplayName("Player".into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a session's device is called in the session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

impl DeviceName {
    pub const MAX: usize = 64;

    /// A missing name becomes `Unknown device`.
    pub fn parse(text: Option<&str>) -> Result<DeviceName, NameError> {
        match text {
            None => Ok(DeviceName("Unknown device".into())),
            Some(t) => check("device_name", t, Self::MAX).map(DeviceName),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(
            DisplayName::parse("  Admiral Ann ").map(|n| n.0),
            Ok("Admiral Ann".to_string())
        );
        assert_eq!(
            DisplayName::parse("Ærø Ünïcødé").map(|n| n.0),
            Ok("Ærø Ünïcødé".to_string())
        );
        let max: String = "é".repeat(32);
        assert!(DisplayName::parse(&max).is_ok(), "32 characters, 64 bytes");
        for bad in [
            "",
            "   ",
            &"x".repeat(33),
            "a\u{0}b",
            "tab\there",
            "new\nline",
            "rtl\u{202E}x",
            "zw\u{200B}j",
        ] {
            let err = DisplayName::parse(bad).expect_err(bad);
            assert!(err.to_string().starts_with("display_name "), "{err}");
        }
    }

    #[test]
    fn names_from_emails() {
        assert_eq!(
            DisplayName::from_email("ann.lee@example.org").as_str(),
            "ann.lee"
        );
        assert_eq!(
            DisplayName::from_email(&format!("{}@example.org", "a".repeat(60))).as_str(),
            "a".repeat(32)
        );
    }

    #[test]
    fn device_names() {
        assert_eq!(
            DeviceName::parse(None).map(|d| d.0),
            Ok("Unknown device".into())
        );
        assert_eq!(
            DeviceName::parse(Some("Pixel 9")).map(|d| d.0),
            Ok("Pixel 9".into())
        );
        assert!(DeviceName::parse(Some(&"d".repeat(65))).is_err());
        assert!(DeviceName::parse(Some("\u{7}")).is_err());
    }
}
