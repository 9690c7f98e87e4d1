//! The secrets of signing in: session tokens and one-time codes. Tokens
//! are stored as SHA-256 hashes (256 random bits need no key); codes, with
//! only a million values, as HMAC-SHA-256 under the installation's
//! [`CodeKey`], so that a leaked table cannot be searched offline.

use hmac::{Mac as _, SimpleHmac};
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

    /// The stored form: keyed, and bound to the address, so a code is only
    /// good for the address it was sent to.
    pub fn hash(&self, key: &CodeKey, email: &str) -> [u8; 32] {
        let mut mac = key.mac();
        mac.update(email.as_bytes());
        mac.update(&[0]);
        mac.update(self.0.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The unkeyed form earlier versions stored. Codes live minutes, so a
    /// check accepts it too only for rows written before the upgrade.
    pub fn legacy_hash(&self, email: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(email.as_bytes());
        h.update([0]);
        h.update(self.0.as_bytes());
        h.finalize().into()
    }
}

/// The key sign-in codes are hashed under: one per installation, never in
/// the database. It is derived from the internal secret that every backend
/// replica and gateway already shares (required outside `turnbase up`,
/// kept in a 0600 file in the data folder under `up`), so replicas agree
/// on it with nothing more to configure. Changing the secret voids the
/// codes in flight, which last minutes.
#[derive(Clone)]
pub struct CodeKey([u8; 32]);

impl std::fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKey(***)")
    }
}

impl CodeKey {
    pub fn derive(installation_secret: &str) -> CodeKey {
        let mut mac = SimpleHmac::<Sha256>::new_from_slice(installation_secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"turnbase sign-in code key v1");
        CodeKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self) -> SimpleHmac<Sha256> {
        SimpleHmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
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
        let key = CodeKey::derive("installation secret one");
        assert_ne!(c.hash(&key, "a@example.org"), c.hash(&key, "b@example.org"));
    }

    #[test]
    fn code_hashes_are_keyed() {
        let c = LoginCode::parse("123456").expect("valid");
        let (one, two) = (
            CodeKey::derive("installation secret one"),
            CodeKey::derive("installation secret two"),
        );
        assert_eq!(c.hash(&one, "a@example.org"), c.hash(&one, "a@example.org"));
        assert_ne!(c.hash(&one, "a@example.org"), c.hash(&two, "a@example.org"));
        assert_ne!(
            c.hash(&one, "a@example.org"),
            c.legacy_hash("a@example.org")
        );
        // HMAC-SHA-256 as RFC 4231 test case 2 gives it, so the stored form
        // is the standard construction.
        let mut mac = SimpleHmac::<Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(format!("{one:?}"), "CodeKey(***)");
    }
}
