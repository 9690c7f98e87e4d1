//! The session cache: token hash → session and account, written through
//! by every change the accounts service makes, so a revoked session is
//! refused at once. Bounded; when full, an arbitrary entry makes room.
//!
//! A lookup that misses reads the database and fills the cache. To keep a
//! revocation that lands during that read from being undone by the fill,
//! every invalidation bumps a generation and a fill only lands if the
//! generation is unchanged since its read began.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use turnbase_store::accounts::{AccountRow, SessionWithAccount};
use uuid::Uuid;

/// A resolved session.
#[derive(Debug)]
pub struct CachedSession {
    pub session_id: Uuid,
    pub device_name: String,
    pub country: Option<String>,
    pub created_at: DateTime<Utc>,
    pub account: AccountRow,
    /// Unix seconds of the last-seen time last recorded for the database.
    pub(crate) last_seen_recorded: AtomicI64,
}

impl CachedSession {
    pub(crate) fn from_row(row: SessionWithAccount) -> Self {
        CachedSession {
            session_id: row.session.id,
            device_name: row.session.device_name,
            country: row.session.country,
            created_at: row.session.created_at,
            last_seen_recorded: AtomicI64::new(row.session.last_seen_at.timestamp()),
            account: row.account,
        }
    }

    fn with_account(&self, account: AccountRow) -> Self {
        CachedSession {
            session_id: self.session_id,
            device_name: self.device_name.clone(),
            country: self.country.clone(),
            created_at: self.created_at,
            last_seen_recorded: AtomicI64::new(self.last_seen_recorded.load(Ordering::Relaxed)),
            account,
        }
    }

    pub fn last_seen_recorded(&self) -> i64 {
        self.last_seen_recorded.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<[u8; 32], Arc<CachedSession>>,
    generation: u64,
}

pub struct SessionCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<Arc<CachedSession>> {
        self.lock().entries.get(hash).cloned()
    }

    /// The generation to pass to [`SessionCache::fill`] after a read.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Adds an entry read from the database, unless something was
    /// invalidated since `generation` was taken.
    pub fn fill(&self, hash: [u8; 32], entry: Arc<CachedSession>, generation: u64) -> bool {
        let mut inner = self.lock();
        if inner.generation != generation {
            return false;
        }
        self.insert_locked(&mut inner, hash, entry);
        true
    }

    /// Adds an entry the service just created (a new session).
    pub fn insert(&self, hash: [u8; 32], entry: Arc<CachedSession>) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, hash, entry);
    }

    fn insert_locked(&self, inner: &mut Inner, hash: [u8; 32], entry: Arc<CachedSession>) {
        if inner.entries.len() >= self.capacity
            && !inner.entries.contains_key(&hash)
            && let Some(victim) = inner.entries.keys().next().copied()
        {
            inner.entries.remove(&victim);
        }
        inner.entries.insert(hash, entry);
    }

    /// Drops the sessions named.
    pub fn remove_sessions(&self, ids: &[Uuid]) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|_, e| !ids.contains(&e.session_id));
    }

    /// Drops every session of the accounts named.
    pub fn remove_accounts(&self, ids: &[Uuid]) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|_, e| !ids.contains(&e.account.id));
    }

    /// Replaces the account in every entry of its sessions.
    pub fn update_account(&self, account: &AccountRow) {
        let mut inner = self.lock();
        inner.generation += 1;
        for entry in inner.entries.values_mut() {
            if entry.account.id == account.id {
                *entry = Arc::new(entry.with_account(account.clone()));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnbase_store::accounts::SessionRow;

    fn row(account: Uuid, session: Uuid) -> SessionWithAccount {
        let now = Utc::now();
        SessionWithAccount {
            token_hash: vec![0; 32],
            session: SessionRow {
                id: session,
                account_id: account,
                device_name: "d".into(),
                country: None,
                created_at: now,
                last_seen_at: now,
            },
            account: AccountRow {
                id: account,
                email: None,
                display_name: "A".into(),
                role: turnbase_store::accounts::Role::Player,
                is_guest: true,
                created_at: now,
                updated_at: now,
                blocked_at: None,
                blocked_reason: None,
            },
        }
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_dropped() {
        let cache = SessionCache::new(10);
        let (a, s) = (Uuid::now_v7(), Uuid::now_v7());
        let generation = cache.generation();
        cache.remove_sessions(&[s]);
        assert!(!cache.fill(
            [1; 32],
            Arc::new(CachedSession::from_row(row(a, s))),
            generation
        ));
        assert!(cache.get(&[1; 32]).is_none());
        let generation = cache.generation();
        assert!(cache.fill(
            [1; 32],
            Arc::new(CachedSession::from_row(row(a, s))),
            generation
        ));
        assert!(cache.get(&[1; 32]).is_some());
    }

    #[test]
    fn removal_by_session_and_account_and_updates() {
        let cache = SessionCache::new(10);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (s1, s2, s3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        cache.insert([1; 32], Arc::new(CachedSession::from_row(row(a, s1))));
        cache.insert([2; 32], Arc::new(CachedSession::from_row(row(a, s2))));
        cache.insert([3; 32], Arc::new(CachedSession::from_row(row(b, s3))));
        let mut renamed = row(a, s1).account;
        renamed.display_name = "New".into();
        cache.update_account(&renamed);
        assert_eq!(
            cache.get(&[2; 32]).map(|e| e.account.display_name.clone()),
            Some("New".into())
        );
        assert_eq!(
            cache.get(&[3; 32]).map(|e| e.account.display_name.clone()),
            Some("A".into())
        );
        cache.remove_sessions(&[s1]);
        assert!(cache.get(&[1; 32]).is_none());
        assert!(cache.get(&[2; 32]).is_some());
        cache.remove_accounts(&[a]);
        assert!(cache.get(&[2; 32]).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stays_within_capacity() {
        let cache = SessionCache::new(3);
        for i in 0..10u8 {
            cache.insert(
                [i; 32],
                Arc::new(CachedSession::from_row(row(Uuid::now_v7(), Uuid::now_v7()))),
            );
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(&[9; 32]).is_some(), "the newest entry is kept");
    }
}
