//! The gateway's Ed25519 signing keys: loaded from (or, for `turnbase up`,
//! generated into) a file holding 32-byte seeds as hex, one per line, and
//! published as a JWK set at `/.well-known/turnbase-signing-keys`, each
//! under a key id derived from it, so clients verify offline.
//!
//! The first key signs; every key in the file is published. That makes
//! rotation safe with several gateways and with clients that cache the
//! set: add the new key as a second line everywhere (published, not yet
//! signing), then move it to the first line, and drop the old line once no
//! client can still hold envelopes it signed.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

pub struct Signer {
    key: SigningKey,
    kid: String,
    /// Keys published besides the signing one (being introduced or
    /// retired), with their ids.
    others: Vec<(VerifyingKey, String)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ kid: {}, key: *** }}", self.kid)
    }
}

impl Signer {
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(&seed);
        let kid = key_id(&key.verifying_key());
        Signer {
            key,
            kid,
            others: Vec::new(),
        }
    }

    /// Reads the keys at `path`; with `create`, a missing file is made with
    /// a fresh key (readable by its owner only).
    /// A key file open to other users is narrowed to 0600 first.
    pub fn load(path: &Path, create: bool) -> Result<Signer, String> {
        turnbase_core::private_fs::tighten(path);
        match std::fs::read_to_string(path) {
            Ok(text) => parse_keys(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let seed: [u8; 32] = rand::rng().random();
                let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    turnbase_core::private_fs::create_private_dir(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                write_private(path, &format!("{hex}\n"))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                tracing::info!(path = %path.display(), "generated a new envelope signing key");
                Ok(Signer::from_seed(seed))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signature of `message`, base64url without padding.
    pub fn sign(&self, message: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.key.sign(message).to_bytes())
    }

    /// The public keys as a JWK set (RFC 8037: `OKP`, `Ed25519`), the
    /// signing key first.
    pub fn jwks(&self) -> serde_json::Value {
        let jwk = |key: &VerifyingKey, kid: &str| {
            serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
            })
        };
        let keys: Vec<_> = std::iter::once(jwk(&self.key.verifying_key(), &self.kid))
            .chain(self.others.iter().map(|(key, kid)| jwk(key, kid)))
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// A key's id: the first 8 bytes of the SHA-256 of its public key, as hex.
fn key_id(key: &VerifyingKey) -> String {
    Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One seed per line (blank lines and `#` comments allowed); the first
/// signs.
fn parse_keys(text: &str) -> Result<Signer, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((n, first)) = lines.next() else {
        return Err("no key: expected 64 hex digits (an Ed25519 seed) per line".into());
    };
    let mut signer = parse_seed(first)
        .map(Signer::from_seed)
        .map_err(|e| format!("line {n}: {e}"))?;
    for (n, line) in lines {
        let key = SigningKey::from_bytes(&parse_seed(line).map_err(|e| format!("line {n}: {e}"))?)
            .verifying_key();
        let kid = key_id(&key);
        if kid == signer.kid || signer.others.iter().any(|(_, k)| *k == kid) {
            return Err(format!("line {n}: the same key appears twice"));
        }
        signer.others.push((key, kid));
    }
    Ok(signer)
}

fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected 64 hex digits (an Ed25519 seed)".into());
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16)
            .map_err(|_| "expected 64 hex digits (an Ed25519 seed)".to_string())?;
    }
    Ok(seed)
}

/// A new key file, 0600; never over an existing one.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(turnbase_core::private_fs::FILE_MODE)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

    #[test]
    fn generated_keys_persist_and_signatures_verify() {
        let dir = std::env::temp_dir().join(format!("tb-key-{}", uuid::Uuid::now_v7()));
        let path = dir.join("key");
        assert!(
            Signer::load(&path, false).is_err(),
            "missing and not created"
        );
        let a = Signer::load(&path, true).expect("generated");
        let b = Signer::load(&path, false).expect("read back");
        assert_eq!(a.kid(), b.kid());
        let jwks = a.jwks();
        let x = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().expect("x"))
            .expect("base64url");
        let public = VerifyingKey::from_bytes(&x.try_into().expect("32 bytes")).expect("a key");
        let sig = URL_SAFE_NO_PAD.decode(a.sign(b"hello")).expect("base64url");
        let sig = Signature::from_slice(&sig).expect("64 bytes");
        assert!(public.verify(b"hello", &sig).is_ok());
        assert!(public.verify(b"hellp", &sig).is_err());
        assert!(
            !format!("{a:?}").contains(&hex_seed(&path)),
            "the key is not printed"
        );
        std::fs::write(&path, "not a key").expect("write");
        assert!(
            Signer::load(&path, true)
                .expect_err("bad")
                .contains("64 hex digits")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_first_key_signs_and_every_key_is_published() {
        let (old, new) = ([7u8; 32], [9u8; 32]);
        let hex = |seed: &[u8; 32]| seed.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let dir = std::env::temp_dir().join(format!("tb-keys-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("keys");
        // Rotating: the new key signs, the old one is still published.
        std::fs::write(
            &path,
            format!("# rotated today\n{}\n\n{}\n", hex(&new), hex(&old)),
        )
        .expect("write");
        let signer = Signer::load(&path, false).expect("two keys");
        let (old_signer, new_signer) = (Signer::from_seed(old), Signer::from_seed(new));
        assert_eq!(signer.kid(), new_signer.kid());
        let jwks = signer.jwks();
        let published: Vec<(String, VerifyingKey)> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| {
                let x = URL_SAFE_NO_PAD
                    .decode(k["x"].as_str().expect("x"))
                    .expect("base64url");
                (
                    k["kid"].as_str().expect("kid").to_string(),
                    VerifyingKey::from_bytes(&x.try_into().expect("32 bytes")).expect("a key"),
                )
            })
            .collect();
        assert_eq!(published.len(), 2);
        // An envelope signed before the rotation still verifies, by its kid.
        for (by, message) in [(&old_signer, b"before"), (&signer, b"after!")] {
            let sig = URL_SAFE_NO_PAD.decode(by.sign(message)).expect("base64url");
            let sig = Signature::from_slice(&sig).expect("64 bytes");
            let (_, key) = published
                .iter()
                .find(|(kid, _)| kid == by.kid())
                .expect("its key is published");
            assert!(key.verify(message, &sig).is_ok());
        }
        std::fs::write(&path, format!("{}\n{}\n", hex(&new), hex(&new))).expect("write");
        assert!(
            Signer::load(&path, false)
                .expect_err("twice")
                .contains("line 2: the same key appears twice")
        );
        std::fs::write(&path, format!("{}\nnope\n", hex(&new))).expect("write");
        assert!(
            Signer::load(&path, false)
                .expect_err("bad line")
                .contains("line 2: expected 64 hex digits")
        );
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(
            Signer::load(&path, false)
                .expect_err("empty")
                .contains("no key")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn hex_seed(path: &Path) -> String {
        std::fs::read_to_string(path)
            .expect("read")
            .trim()
            .to_string()
    }
}
