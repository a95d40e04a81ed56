//! Search (and the iCalendar feeds) with in-memory caches that never serve a result older
//! than a change.
//!
//! Every entry remembers the catalog version it was computed at (`catalog_version`, bumped by
//! triggers on every change a search can see: scenes, venues, their features, organizers).
//! A lookup reads the current version first (one primary-key read) and uses an entry only if
//! it matches, so a change made through any node is seen by the next search on every node.
//!
//! The cache is bounded in bytes (each entry weighed by its page's JSON size), and its keys
//! are normalised by the handler (text case and spacing, instants to the second), so searches
//! that differ only in how they are written share one entry, and no stream of distinct
//! searches can grow it past its budget.

use std::sync::Arc;

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::store::calendar::{self, Listing, Search};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchPage {
    pub items: Vec<Listing>,
    pub page: i64,
    pub per_page: i64,
    /// Whether a next page exists.
    pub has_more: bool,
}

pub struct SearchCache {
    /// Page and the catalog version it was computed at, per normalised search.
    entries: moka::sync::Cache<Search, (i64, Arc<SearchPage>)>,
}

impl SearchCache {
    /// A cache of at most `max_bytes` of pages (least recently and least often used go first).
    pub fn new(max_bytes: u64) -> SearchCache {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Search, (_, page): &(i64, Arc<SearchPage>)| {
                let page_bytes = serde_json::to_vec(&**page).map_or(0, |v| v.len());
                let key_bytes = key.text.as_ref().map_or(0, String::len) + 2 * key.features.len();
                u32::try_from(page_bytes + key_bytes + 128).unwrap_or(u32::MAX)
            })
            .build();
        SearchCache { entries }
    }

    /// Bytes the entries weigh (after pending evictions), for tests and metrics.
    pub fn weighed_bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// The page for `q`, and whether it came from the cache.
    pub async fn search(
        &self,
        pool: &PgPool,
        q: &Search,
    ) -> Result<(Arc<SearchPage>, bool), sqlx::Error> {
        let version = calendar::catalog_version(pool).await?;
        if let Some(hit) = self.entries.get(q).filter(|e| e.0 == version) {
            return Ok((hit.1, true));
        }
        let mut items = calendar::search(pool, q).await?;
        let has_more = items.len() as i64 > q.limit;
        items.truncate(q.limit as usize);
        let page = Arc::new(SearchPage {
            items,
            page: q.offset / q.limit.max(1) + 1,
            per_page: q.limit,
            has_more,
        });
        self.entries.insert(q.clone(), (version, page.clone()));
        Ok((page, false))
    }
}

/// Which iCalendar feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedKey {
    Venue(uuid::Uuid),
    Organizer(uuid::Uuid),
}

/// How long a feed is served from the cache at most: its window ("from a month ago") and its
/// timestamps move with time even when the catalog does not.
const ICS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// Built iCalendar feeds, bounded in bytes, each valid for the catalog version it was built at.
pub struct FeedCache {
    feeds: moka::sync::Cache<FeedKey, (i64, bytes::Bytes)>,
}

impl FeedCache {
    pub fn new(max_bytes: u64) -> FeedCache {
        let feeds = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .time_to_live(ICS_MAX_AGE)
            .weigher(|_: &FeedKey, (_, body): &(i64, bytes::Bytes)| {
                u32::try_from(body.len() + 64).unwrap_or(u32::MAX)
            })
            .build();
        FeedCache { feeds }
    }

    /// The feed, if it was built at `version`.
    pub fn get(&self, key: &FeedKey, version: i64) -> Option<bytes::Bytes> {
        self.feeds
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, body)| body)
    }

    pub fn put(&self, key: FeedKey, version: i64, body: bytes::Bytes) {
        self.feeds.insert(key, (version, body));
    }
}
