//! The secrets of signing in: session tokens and one-time codes. Both are
//! stored only as SHA-256 hashes.

use rand::Rng as _;
use sha2::{Digest as _, Sha256};

/// Every token starts with this, so leaked tokens are easy to recognise
/// (secret scanners, logs).
const TOKEN_PREFIX: &str = "tbs_";
/// 32 random bytes, hex-encoded.
const TOKEN_HEX_LEN: usize = 64;

/// An opaque bearer token: 256 random bits.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(***)")
    }
}

impl SessionToken {
    pub fn generate() -> SessionToken {
        let bytes: [u8; 32] = rand::rng().random();
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_HEX_LEN);
        text.push_str(TOKEN_PREFIX);
        for b in bytes {
            text.push_str(&format!("{b:02x}"));
        }
        SessionToken(text)
    }

    /// Accepts only the shape `generate` makes, so garbage never reaches
    /// the database.
    pub fn parse(text: &str) -> Option<SessionToken> {
        let hex = text.strip_prefix(TOKEN_PREFIX)?;
        (hex.len() == TOKEN_HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| SessionToken(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Digits in a sign-in code.
pub const CODE_DIGITS: usize = 6;

/// A one-time sign-in code.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginCode(String);

impl std::fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginCode(***)")
    }
}

impl LoginCode {
    pub fn generate() -> LoginCode {
        let n: u32 = rand::rng().random_range(0..1_000_000);
        LoginCode(format!("{n:06}"))
    }

    /// Exactly six ASCII digits, spaces around them ignored.
    pub fn parse(text: &str) -> Option<LoginCode> {
        let t = text.trim();
        (t.len() == CODE_DIGITS && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| LoginCode(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Bound to the address, so a code is only good for the address it
    /// was sent to.
    pub fn hash(&self, email: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(email.as_bytes());
        h.update([0]);
        h.update(self.0.as_bytes());
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = SessionToken::generate();
        assert_eq!(t.as_str().len(), 68);
        assert_eq!(SessionToken::parse(t.as_str()), Some(t.clone()));
        assert_ne!(SessionToken::generate(), t);
        assert_eq!(format!("{t:?}"), "SessionToken(***)");
        let upper = t.as_str().to_uppercase();
        for bad in [
            "",
            "tbs_",
            "Bearer x",
            &t.as_str()[1..],
            &upper,
            &format!("{}0", t.as_str()),
        ] {
            assert!(SessionToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn codes() {
        for _ in 0..100 {
            let c = LoginCode::generate();
            assert_eq!(LoginCode::parse(c.as_str()), Some(c));
        }
        assert!(LoginCode::parse(" 012345 ").is_some());
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert!(LoginCode::parse(bad).is_none(), "{bad:?}");
        }
        let c = LoginCode::parse("123456").expect("valid");
        assert_ne!(c.hash("a@example.org"), c.hash("b@example.org"));
    }
}
