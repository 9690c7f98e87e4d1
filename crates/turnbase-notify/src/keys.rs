//! The notification keys, all derived from the installation's internal
//! secret (never stored): unsubscribe links, each signed for one person,
//! one kind and one use, and each webhook's signing secret, derived from
//! a random salt stored with the registration. Also the webhook signature
//! scheme itself, for senders and receivers alike.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use turnbase_store::notify::Kind;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying a webhook's signature: `t=<unix seconds>,v1=<hex
/// HMAC-SHA256 over "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "turnbase-signature";
/// The route's id: the same for every retry, so receivers drop duplicates.
pub const DELIVERY_HEADER: &str = "turnbase-delivery";
/// The notification's kind.
pub const KIND_HEADER: &str = "turnbase-kind";
/// How far a signature's time may be from the receiver's clock.
pub const REPLAY_WINDOW_SECS: i64 = 300;

const TAG_BYTES: usize = 16;

#[derive(Clone)]
pub struct Keys {
    unsubscribe: [u8; 32],
    webhook: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

/// Why an unsubscribe link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature does not match (altered or not ours)")]
    Forged,
}

/// An unsubscribe link's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe {
    pub account: Uuid,
    pub kind: Kind,
    /// Makes the link single-use (the route that mailed it).
    pub token_id: Uuid,
}

fn derive(secret: &str, label: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

impl Keys {
    pub fn derive(installation_secret: &str) -> Keys {
        Keys {
            unsubscribe: derive(installation_secret, b"turnbase unsubscribe link v1"),
            webhook: derive(installation_secret, b"turnbase webhook secret v1"),
        }
    }

    fn link_mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.unsubscribe).expect("HMAC takes any key length");
        mac.update(body);
        mac
    }

    /// The token of an unsubscribe link (URL-safe).
    pub fn unsubscribe_token(&self, u: &Unsubscribe) -> String {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(u.account.as_bytes());
        body.extend_from_slice(u.token_id.as_bytes());
        body.extend_from_slice(u.kind.as_str().as_bytes());
        let tag = self.link_mac(&body).finalize().into_bytes();
        body.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(body)
    }

    pub fn check_unsubscribe(&self, token: &str) -> Result<Unsubscribe, LinkError> {
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| LinkError::Malformed)?;
        if raw.len() <= 32 + TAG_BYTES {
            return Err(LinkError::Malformed);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_BYTES);
        self.link_mac(body)
            .verify_truncated_left(tag)
            .map_err(|_| LinkError::Forged)?;
        let account = Uuid::from_slice(&body[..16]).map_err(|_| LinkError::Malformed)?;
        let token_id = Uuid::from_slice(&body[16..32]).map_err(|_| LinkError::Malformed)?;
        let kind = std::str::from_utf8(&body[32..])
            .ok()
            .and_then(Kind::parse)
            .ok_or(LinkError::Malformed)?;
        Ok(Unsubscribe {
            account,
            kind,
            token_id,
        })
    }

    /// The operator's webhook secret (admin notices).
    pub fn operator_secret(&self) -> String {
        self.webhook_secret(Uuid::nil(), "operator")
    }

    /// A webhook's signing secret, from the registration's salt.
    pub fn webhook_secret(&self, account: Uuid, salt: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.webhook).expect("HMAC takes any key length");
        mac.update(account.as_bytes());
        mac.update(salt.as_bytes());
        format!("whsec_{}", hex(&mac.finalize().into_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature header's value for `body` sent at `unix_secs`.
pub fn sign(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_secs},v1={}", hex(&mac.finalize().into_bytes()))
}

/// Why a receiver refuses a signed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature's time is outside the replay window")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// What a receiver does: checks the header against the body, with the
/// time within [`REPLAY_WINDOW_SECS`] of `now_unix`.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    if (now_unix - t).abs() > REPLAY_WINDOW_SECS {
        return Err(SignatureError::Stale);
    }
    let given: Vec<u8> = (0..v1.len())
        .step_by(2)
        .filter_map(|i| {
            v1.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    if given.len() != 32 || v1.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_refuse_tampering() {
        let keys = Keys::derive("an installation secret of some length");
        let u = Unsubscribe {
            account: Uuid::now_v7(),
            kind: Kind::TurnResolved,
            token_id: Uuid::now_v7(),
        };
        let token = keys.unsubscribe_token(&u);
        assert_eq!(keys.check_unsubscribe(&token), Ok(u));
        // Another installation's key, a flipped character, another kind.
        let other = Keys::derive("another installation's secret");
        assert_eq!(other.check_unsubscribe(&token), Err(LinkError::Forged));
        let mut raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        raw[3] ^= 1;
        assert_eq!(
            keys.check_unsubscribe(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(LinkError::Forged)
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        let kind_at = 32;
        raw.splice(kind_at..kind_at + "turn_resolved".len(), *b"your_move");
        assert_eq!(
            keys.check_unsubscribe(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(LinkError::Forged)
        );
        assert_eq!(keys.check_unsubscribe("x"), Err(LinkError::Malformed));
        assert_eq!(keys.check_unsubscribe("%%%"), Err(LinkError::Malformed));
    }

    #[test]
    fn signatures_verify_and_refuse_changes_and_replays() {
        let body = br#"{"kind":"your_move"}"#;
        let header = sign("whsec_x", 1_000_000, body);
        assert_eq!(verify("whsec_x", &header, body, 1_000_010), Ok(()));
        assert_eq!(
            verify("whsec_x", &header, br#"{"kind":"your_movf"}"#, 1_000_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_y", &header, body, 1_000_010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_x", &header, body, 1_000_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify("whsec_x", "v1=zz", body, 1_000_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn webhook_secrets_differ_by_account_and_salt() {
        let keys = Keys::derive("an installation secret of some length");
        let a = Uuid::now_v7();
        let s1 = keys.webhook_secret(a, "salt1");
        assert_eq!(s1, keys.webhook_secret(a, "salt1"));
        assert_ne!(s1, keys.webhook_secret(a, "salt2"));
        assert_ne!(s1, keys.webhook_secret(Uuid::now_v7(), "salt1"));
    }
}
