//! Event payloads: JSON documents checked once, where they are made.
//!
//! Domain code builds payloads from typed values, which serialize to valid
//! JSON by construction; only bytes from outside (a test, a tool) need
//! parsing. Carrying the result as [`JsonPayload`] lets the push service
//! take it without parsing it again on the publish path.

use bytes::Bytes;
use serde::Serialize;

/// A JSON document, known to be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPayload(Bytes);

/// Bytes that are not one JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the payload is not a JSON document: {0}")]
pub struct InvalidJson(pub String);

impl JsonPayload {
    /// The encoding of a JSON value (always valid).
    pub fn from_value(value: &serde_json::Value) -> Self {
        // Serializing a `Value` into memory has no failure path: its map
        // keys are strings and a Vec grows as needed.
        Self(Bytes::from(
            serde_json::to_vec(value).expect("a JSON value serializes"),
        ))
    }

    /// The JSON encoding of any serializable value (it fails only where
    /// the value's `Serialize` does, e.g. a map with non-string keys).
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Self(Bytes::from(v)))
    }

    /// Checks bytes from elsewhere.
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Self, InvalidJson> {
        let bytes = bytes.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map_err(|e| InvalidJson(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Bytes that are JSON by construction: written by a formatter the
    /// producer owns (digits, quoted text it has escaped). Nothing is
    /// checked in release builds; debug builds (and so every test) check.
    pub fn from_trusted(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        debug_assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok(),
            "JsonPayload::from_trusted was given bytes that are not JSON"
        );
        Self(bytes)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_documents_are_taken() {
        assert_eq!(
            JsonPayload::parse(&b" {\"a\": [1, 2]} "[..])
                .expect("valid")
                .as_bytes(),
            b" {\"a\": [1, 2]} "
        );
        for bad in [&b""[..], b"{", b"{} {}", b"nul", b"\xff"] {
            assert!(JsonPayload::parse(bad).is_err(), "{bad:?} was taken");
        }
        let v = serde_json::json!({"turn": 3, "name": "Ann \"the\" first"});
        let made = JsonPayload::from_value(&v);
        let back: serde_json::Value = serde_json::from_slice(made.as_bytes()).expect("valid");
        assert_eq!(back, v);
        assert_eq!(JsonPayload::to_json(&v).expect("serializes"), made);
        let mut keyed = std::collections::HashMap::new();
        keyed.insert((1, 2), 3);
        assert!(JsonPayload::to_json(&keyed).is_err());
    }
}
