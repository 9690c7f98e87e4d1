//! Push cursors: a position `(epoch, seq)` in one continuous event history.
//!
//! The epoch is random and changes whenever the history is not continuous
//! with the previous one (in memory: every process start); `seq` grows by
//! exactly one per event. The text form, `<epoch as 16 hex digits>.<seq>`,
//! is opaque to gateways: they store and return it, nothing more. Parsing is
//! strict so that every cursor has exactly one spelling.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor {
    pub epoch: u64,
    /// The sequence number of the event; 0 is the position before the first.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor: {0}")]
pub struct CursorError(&'static str);

/// The longest text a cursor can have: 16 + 1 + 20.
pub const MAX_LEN: usize = 37;

impl Cursor {
    pub fn new(epoch: u64, seq: u64) -> Self {
        Self { epoch, seq }
    }

    pub fn parse(text: &str) -> Result<Cursor, CursorError> {
        if text.len() > MAX_LEN {
            return Err(CursorError("too long"));
        }
        let (epoch, seq) = text
            .split_once('.')
            .ok_or(CursorError("expected <epoch>.<seq>"))?;
        if epoch.len() != 16
            || !epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(CursorError("epoch must be 16 lower-case hex digits"));
        }
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CursorError("seq must be decimal digits"));
        }
        if seq.len() > 1 && seq.starts_with('0') {
            return Err(CursorError("seq must not have leading zeros"));
        }
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| CursorError("bad epoch"))?;
        let seq = seq.parse().map_err(|_| CursorError("seq out of range"))?;
        Ok(Cursor { epoch, seq })
    }
}

impl Cursor {
    /// Writes the text form into `buf` and returns its length; used on the
    /// publish path, where formatting through `fmt` would allocate.
    pub fn write_text(&self, buf: &mut [u8; MAX_LEN]) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, slot) in buf[..16].iter_mut().enumerate() {
            *slot = HEX[((self.epoch >> ((15 - i) * 4)) & 0xf) as usize];
        }
        buf[16] = b'.';
        let mut digits = [0u8; 20];
        let mut n = self.seq;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[17 + i] = digits[len - 1 - i];
        }
        17 + len
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; MAX_LEN];
        let len = self.write_text(&mut buf);
        // Only ASCII digits, letters and a dot were written.
        f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<(u64, u64)>)] = &[
            ("00000000000000ff.0", Some((255, 0))),
            ("0123456789abcdef.42", Some((0x0123_4567_89ab_cdef, 42))),
            (
                "ffffffffffffffff.18446744073709551615",
                Some((u64::MAX, u64::MAX)),
            ),
            ("", None),
            (".", None),
            ("00000000000000ff", None),
            ("00000000000000ff.", None),
            ("00000000000000ff.01", None),
            ("00000000000000FF.1", None),
            ("0000000000000ff.1", None),
            ("000000000000000ff.1", None),
            ("00000000000000ff.-1", None),
            ("00000000000000ff.+1", None),
            ("00000000000000ff.18446744073709551616", None),
            ("00000000000000ff.1.2", None),
            ("zzzzzzzzzzzzzzzz.1", None),
            ("00000000000000ff. 1", None),
        ];
        for (text, want) in cases {
            let got = Cursor::parse(text).ok().map(|c| (c.epoch, c.seq));
            assert_eq!(got, *want, "Cursor::parse({text:?})");
        }
    }

    proptest! {
        #[test]
        fn round_trips(epoch: u64, seq: u64) {
            let c = Cursor::new(epoch, seq);
            prop_assert_eq!(c.to_string(), format!("{epoch:016x}.{seq}"));
            prop_assert_eq!(Cursor::parse(&c.to_string()), Ok(c));
        }

        #[test]
        fn parsing_never_panics_and_accepts_only_canonical_text(text in "\\PC{0,48}") {
            if let Ok(c) = Cursor::parse(&text) {
                prop_assert_eq!(c.to_string(), text);
            }
        }

        #[test]
        fn near_misses_never_panic(text in "[0-9a-fA-F.+-]{0,40}") {
            if let Ok(c) = Cursor::parse(&text) {
                prop_assert_eq!(c.to_string(), text);
            }
        }
    }
}
