//! The ring of recent events, bounded by count, bytes and age.
//!
//! Entries hold consecutive sequence numbers, so the entry after any
//! position is found by subtraction. The head (the newest sequence number
//! ever published) is kept even when every entry has gone, so that a cursor
//! equal to the head is always resumable.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// What kind of event an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ClientEvent,
    SessionInvalidation,
}

impl EventKind {
    pub fn label(self) -> &'static str {
        match self {
            EventKind::ClientEvent => "client_event",
            EventKind::SessionInvalidation => "session_invalidation",
        }
    }
}

/// One published event, encoded once as a `PushEvent` and shared by every
/// subscriber (cloning `Bytes` only counts a reference).
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub at: Instant,
    /// Whether this is a session invalidation, which must never be lost
    /// without the subscriber's stream ending.
    pub invalidation: bool,
    pub encoded: Bytes,
}

#[derive(Debug, Clone, Copy)]
pub struct RingLimits {
    pub capacity: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// The events after a position are no longer all held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The oldest sequence number still held (head + 1 when empty).
    pub oldest: u64,
}

#[derive(Debug)]
pub struct Ring {
    entries: VecDeque<Entry>,
    head: u64,
    bytes: usize,
    /// The newest session invalidation that left the ring (0: none).
    evicted_invalidation: u64,
    limits: RingLimits,
}

impl Ring {
    pub fn new(limits: RingLimits) -> Self {
        Self {
            entries: VecDeque::new(),
            head: 0,
            bytes: 0,
            evicted_invalidation: 0,
            limits,
        }
    }

    /// The newest sequence number ever published (0 before the first).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The oldest sequence number still held, or `head + 1` when empty.
    pub fn oldest(&self) -> u64 {
        self.entries.front().map_or(self.head + 1, |e| e.seq)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The sequence number the next entry must have.
    pub fn next_seq(&self) -> u64 {
        self.head + 1
    }

    /// Appends the next entry, evicting the oldest ones beyond the count and
    /// byte bounds.
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.seq, self.head + 1, "entries are consecutive");
        self.head = entry.seq;
        self.bytes += entry.encoded.len();
        self.entries.push_back(entry);
        while self.entries.len() > self.limits.capacity
            || (self.bytes > self.limits.max_bytes && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }

    /// Drops the entries older than the freshness window.
    pub fn expire(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.at) <= self.limits.max_age {
                break;
            }
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.encoded.len();
            if e.invalidation {
                self.evicted_invalidation = e.seq;
            }
        }
    }

    /// Whether a session invalidation was published after `after` (held
    /// or already evicted). Scans the held entries, so it is for the rare
    /// case of a lapped subscriber, not the hot path.
    pub fn invalidation_after(&self, after: u64) -> bool {
        self.evicted_invalidation > after
            || self
                .entries
                .iter()
                .rev()
                .take_while(|e| e.seq > after)
                .any(|e| e.invalidation)
    }

    /// Whether every event after `after` is still held (or there is none).
    pub fn covers(&self, after: u64) -> bool {
        after <= self.head && after + 1 >= self.oldest()
    }

    /// Appends to `out` the encoded events after `after`, oldest first, at
    /// most `max_events` and (beyond the first) at most `max_bytes` bytes.
    /// They are consecutive: the last one appended has sequence number
    /// `after + out.len()` when `out` started empty.
    pub fn read_after(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
        out: &mut Vec<Bytes>,
    ) -> Result<(), Evicted> {
        if after >= self.head {
            return Ok(());
        }
        let oldest = self.oldest();
        if after + 1 < oldest {
            return Err(Evicted { oldest });
        }
        let start = usize::try_from(after + 1 - oldest).expect("ring index fits in usize");
        let mut bytes = 0;
        for entry in self.entries.range(start..).take(max_events) {
            if !out.is_empty() && bytes + entry.encoded.len() > max_bytes {
                break;
            }
            bytes += entry.encoded.len();
            out.push(entry.encoded.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(capacity: usize, max_bytes: usize, secs: u64) -> RingLimits {
        RingLimits {
            capacity,
            max_bytes,
            max_age: Duration::from_secs(secs),
        }
    }

    fn push(ring: &mut Ring, at: Instant, size: usize) {
        let seq = ring.next_seq();
        ring.push(Entry {
            seq,
            at,
            invalidation: false,
            encoded: Bytes::from(vec![0; size]),
        });
    }

    fn seqs(ring: &Ring, after: u64) -> Result<Vec<u64>, Evicted> {
        let mut out = Vec::new();
        ring.read_after(after, usize::MAX, usize::MAX, &mut out)?;
        Ok((after + 1..=after + out.len() as u64).collect())
    }

    #[test]
    fn empty_ring_covers_its_head() {
        let ring = Ring::new(limits(4, 1024, 60));
        assert_eq!((ring.head(), ring.oldest()), (0, 1));
        assert!(ring.covers(0));
        assert!(!ring.covers(1));
        assert_eq!(seqs(&ring, 0), Ok(vec![]));
    }

    #[test]
    fn count_bound_evicts_oldest() {
        let now = Instant::now();
        let mut ring = Ring::new(limits(3, 1024, 60));
        for _ in 0..5 {
            push(&mut ring, now, 10);
        }
        assert_eq!((ring.head(), ring.oldest(), ring.len()), (5, 3, 3));
        assert_eq!(seqs(&ring, 2), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(&ring, 4), Ok(vec![5]));
        assert_eq!(seqs(&ring, 5), Ok(vec![]));
        assert_eq!(seqs(&ring, 1), Err(Evicted { oldest: 3 }));
        assert!(ring.covers(2) && !ring.covers(1));
    }

    #[test]
    fn byte_bound_evicts_oldest_but_keeps_the_newest() {
        let now = Instant::now();
        let mut ring = Ring::new(limits(100, 25, 60));
        push(&mut ring, now, 10);
        push(&mut ring, now, 10);
        push(&mut ring, now, 10);
        assert_eq!((ring.oldest(), ring.bytes()), (2, 20));
        push(&mut ring, now, 100);
        assert_eq!((ring.oldest(), ring.len(), ring.bytes()), (4, 1, 100));
    }

    #[test]
    fn age_bound_expires_and_head_survives_an_empty_ring() {
        let t0 = Instant::now();
        let mut ring = Ring::new(limits(100, 1024, 10));
        push(&mut ring, t0, 1);
        push(&mut ring, t0 + Duration::from_secs(5), 1);
        ring.expire(t0 + Duration::from_secs(11));
        assert_eq!((ring.oldest(), ring.len()), (2, 1));
        ring.expire(t0 + Duration::from_secs(16));
        assert!(ring.is_empty());
        assert_eq!((ring.head(), ring.oldest()), (2, 3));
        assert!(
            ring.covers(2),
            "a cursor at the head resumes with nothing to replay"
        );
        assert!(!ring.covers(1));
    }

    #[test]
    fn invalidations_are_tracked_after_eviction() {
        let now = Instant::now();
        let mut ring = Ring::new(limits(3, 1024, 60));
        push(&mut ring, now, 1);
        let seq = ring.next_seq();
        ring.push(Entry {
            seq,
            at: now,
            invalidation: true,
            encoded: Bytes::from_static(b"x"),
        });
        push(&mut ring, now, 1);
        assert!(ring.invalidation_after(1));
        assert!(!ring.invalidation_after(2));
        for _ in 0..3 {
            push(&mut ring, now, 1);
        }
        assert_eq!(ring.oldest(), 4, "the invalidation was evicted");
        assert!(ring.invalidation_after(1));
        assert!(!ring.invalidation_after(2));
    }

    #[test]
    fn batches_respect_limits() {
        let now = Instant::now();
        let mut ring = Ring::new(limits(100, 10_000, 60));
        for _ in 0..10 {
            push(&mut ring, now, 100);
        }
        let mut out = Vec::new();
        ring.read_after(0, 4, usize::MAX, &mut out).expect("held");
        assert_eq!(out.len(), 4);
        out.clear();
        ring.read_after(0, 100, 250, &mut out).expect("held");
        assert_eq!(out.len(), 2);
        out.clear();
        ring.read_after(0, 100, 10, &mut out).expect("held");
        assert_eq!(out.len(), 1, "one entry always fits");
    }
}
