//! A short-lived cache of public game listings.
//!
//! Browsing is by far the lobby's most frequent request and most browsers
//! look at the same few pages, so a page is kept for up to [`LIST_TTL`].
//! A game created, edited, moved to another state or given to another
//! owner here empties the cache at once (a generation counter, bumped by
//! each such change and compared on each hit; a page fetched while a
//! change was under way is stored under the generation it started with,
//! so it is never served after that change). Seat counts, which change
//! with every approval, and changes made by another backend on the same
//! Postgres show within the TTL: a listing may call a game one seat
//! emptier than it is for up to a second, and applying to it then answers
//! `game_full`, which is the check that counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use turnbase_store::lobby::GameFilter;

use crate::GameView;

/// How long a page may be served without looking at the database.
pub const LIST_TTL: Duration = Duration::from_secs(1);
/// Pages kept at most; the cache is emptied when it would grow past it.
pub const LIST_CAPACITY: usize = 4096;

/// One page of a listing as fetched, and its answer body once an edge
/// has rendered it: every hit on a cached page then sends the same bytes
/// (serialising twenty games was most of a hit's cost).
#[derive(Debug)]
pub struct ListedPage {
    pub games: Vec<GameView>,
    rendered: OnceLock<bytes::Bytes>,
}

impl ListedPage {
    pub(crate) fn new(games: Vec<GameView>) -> ListedPage {
        ListedPage {
            games,
            rendered: OnceLock::new(),
        }
    }

    /// The page's body, rendered by `render` the first time it is asked
    /// for. Each page belongs to one filter, so one rendering fits every
    /// request that finds it.
    pub fn rendered(&self, render: impl FnOnce(&[GameView]) -> bytes::Bytes) -> bytes::Bytes {
        self.rendered.get_or_init(|| render(&self.games)).clone()
    }
}

struct Page {
    generation: u64,
    fetched: Instant,
    games: Arc<ListedPage>,
}

#[derive(Default)]
pub(crate) struct ListCache {
    generation: AtomicU64,
    pages: Mutex<HashMap<GameFilter, Page>>,
}

impl ListCache {
    /// Marks every cached page stale (a change a listing may show).
    pub(crate) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The generation to store a page fetched from now on under.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, filter: &GameFilter, now: Instant) -> Option<Arc<ListedPage>> {
        let current = self.generation();
        let pages = self.pages.lock().ok()?;
        let page = pages.get(filter)?;
        (page.generation == current && now.duration_since(page.fetched) < LIST_TTL)
            .then(|| page.games.clone())
    }

    pub(crate) fn put(
        &self,
        filter: GameFilter,
        generation: u64,
        fetched: Instant,
        games: Arc<ListedPage>,
    ) {
        let Ok(mut pages) = self.pages.lock() else {
            return;
        };
        if pages.len() >= LIST_CAPACITY && !pages.contains_key(&filter) {
            pages.clear();
        }
        pages.insert(
            filter,
            Page {
                generation,
                fetched,
                games,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use turnbase_store::lobby::GameFilter;

    use super::{LIST_TTL, ListCache, ListedPage};

    fn page() -> Arc<ListedPage> {
        Arc::new(ListedPage::new(Vec::new()))
    }

    #[test]
    fn a_page_lives_until_a_change_or_its_ttl() {
        let cache = ListCache::default();
        let filter = GameFilter {
            limit: 21,
            ..GameFilter::default()
        };
        let t0 = Instant::now();
        cache.put(filter.clone(), cache.generation(), t0, page());
        assert!(cache.get(&filter, t0).is_some());
        assert!(
            cache
                .get(&filter, t0 + LIST_TTL - Duration::from_millis(1))
                .is_some()
        );
        assert!(cache.get(&filter, t0 + LIST_TTL).is_none(), "expired");
        let other = GameFilter {
            limit: 5,
            ..GameFilter::default()
        };
        assert!(
            cache.get(&other, t0).is_none(),
            "another filter is another page"
        );

        cache.put(filter.clone(), cache.generation(), t0, page());
        cache.changed();
        assert!(cache.get(&filter, t0).is_none(), "a change empties it");
    }

    #[test]
    fn a_page_fetched_across_a_change_is_never_served_after_it() {
        let cache = ListCache::default();
        let filter = GameFilter::default();
        let t0 = Instant::now();
        let before = cache.generation();
        // The change lands while the page is being read from the database.
        cache.changed();
        cache.put(filter.clone(), before, t0, page());
        assert!(cache.get(&filter, t0).is_none());
    }

    #[test]
    fn a_page_is_rendered_once() {
        let page = ListedPage::new(Vec::new());
        let mut calls = 0;
        let first = page.rendered(|_| {
            calls += 1;
            bytes::Bytes::from_static(b"[]")
        });
        let second = page.rendered(|_| bytes::Bytes::from_static(b"other"));
        assert_eq!(
            (first, second, calls),
            (
                bytes::Bytes::from_static(b"[]"),
                bytes::Bytes::from_static(b"[]"),
                1
            )
        );
    }
}
