//! The gateway's Ed25519 signing key: loaded from (or, for `turnbase up`,
//! generated into) a file holding the 32-byte seed as hex, published as a
//! JWK set at `/.well-known/turnbase-signing-keys` under a key id that
//! changes with the key, so clients can verify offline and keys can rotate.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

pub struct Signer {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ kid: {}, key: *** }}", self.kid)
    }
}

impl Signer {
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(&seed);
        let digest = Sha256::digest(key.verifying_key().as_bytes());
        let kid = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Signer { key, kid }
    }

    /// Reads the key at `path`; with `create`, a missing file is made with
    /// a fresh key (readable by its owner only).
    pub fn load(path: &Path, create: bool) -> Result<Signer, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => parse_seed(text.trim())
                .map(Signer::from_seed)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let seed: [u8; 32] = rand::rng().random();
                let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
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

    /// The public key as a JWK set (RFC 8037: `OKP`, `Ed25519`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
            }]
        })
    }
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

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
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

    fn hex_seed(path: &Path) -> String {
        std::fs::read_to_string(path)
            .expect("read")
            .trim()
            .to_string()
    }
}
