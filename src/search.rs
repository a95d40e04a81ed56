//! Search with an in-memory cache that never serves a result older than a change.
//!
//! Every entry remembers the catalog version it was computed at (`catalog_version`, bumped by
//! triggers on every change a search can see: scenes, venues, their features, organizers).
//! A lookup reads the current version first (one primary-key read) and uses an entry only if
//! it matches, so a change made through any node is seen by the next search on every node.

use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::store::calendar::{self, Listing, Search};

/// Entries kept at most; past this the cache starts again empty (hot queries come back first).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchPage {
    pub items: Vec<Listing>,
    pub page: i64,
    pub per_page: i64,
    /// Whether a next page exists.
    pub has_more: bool,
}

#[derive(Default)]
pub struct SearchCache {
    entries: DashMap<Search, (i64, Arc<SearchPage>)>,
}

impl SearchCache {
    /// The page for `q`, and whether it came from the cache.
    pub async fn search(
        &self,
        pool: &PgPool,
        q: &Search,
    ) -> Result<(Arc<SearchPage>, bool), sqlx::Error> {
        let version = calendar::catalog_version(pool).await?;
        if let Some(hit) = self.entries.get(q).filter(|e| e.0 == version) {
            return Ok((hit.1.clone(), true));
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
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(q.clone(), (version, page.clone()));
        Ok((page, false))
    }
}
