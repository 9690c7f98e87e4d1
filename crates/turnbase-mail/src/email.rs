//! `Email`: an address that has been checked, the only way an address
//! enters the mail service.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address: {0}")]
pub struct EmailError(&'static str);

/// RFC 5321 limits the whole path to 254 characters and the local part to 64.
const MAX_LEN: usize = 254;
const MAX_LOCAL: usize = 64;

impl Email {
    /// Accepts `local@domain` with a dot-atom local part and a domain of
    /// letters, digits and hyphens in dot-separated labels. The domain is
    /// lower-cased; the local part is kept as written.
    pub fn parse(text: &str) -> Result<Email, EmailError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(EmailError("empty"));
        }
        if text.len() > MAX_LEN {
            return Err(EmailError("longer than 254 characters"));
        }
        let (local, domain) = text.rsplit_once('@').ok_or(EmailError("no @"))?;
        if local.is_empty() || local.len() > MAX_LOCAL {
            return Err(EmailError("the part before @ must be 1 to 64 characters"));
        }
        let atom_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
        if local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local.chars().all(|c| c == '.' || atom_char(c))
        {
            return Err(EmailError(
                "the part before @ has characters that are not allowed",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 && domain != "localhost" {
            return Err(EmailError("the domain needs a dot"));
        }
        if !labels.iter().all(label_ok) {
            return Err(EmailError("the domain is not a host name"));
        }
        Ok(Email(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("player@example.org", Some("player@example.org")),
            (
                "  Player.One+turns@Example.ORG ",
                Some("Player.One+turns@example.org"),
            ),
            ("a@localhost", Some("a@localhost")),
            (
                "o'neil@mail.example.co.uk",
                Some("o'neil@mail.example.co.uk"),
            ),
            ("", None),
            ("plainaddress", None),
            ("@example.org", None),
            ("a@", None),
            ("a@b", None),
            ("a@@example.org", None),
            ("a b@example.org", None),
            (".a@example.org", None),
            ("a..b@example.org", None),
            ("a@-example.org", None),
            ("a@example..org", None),
            ("a@exa_mple.org", None),
            ("a\n@example.org", None),
            ("\"quoted\"@example.org", None),
            ("<a@example.org>", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                Email::parse(text).ok().as_ref().map(Email::as_str),
                *want,
                "Email::parse({text:?})"
            );
        }
        assert!(Email::parse(&format!("{}@example.org", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.org", "b".repeat(250))).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,80}") {
            if let Ok(e) = Email::parse(&text) {
                proptest::prop_assert!(Email::parse(e.as_str()).is_ok());
            }
        }
    }
}
