//! Frames decoded and resampled to a show's grid, cached by content hash.
//!
//! Each frame is fetched once from its [`FrameSource`] (GridFS, in the server), decoded and
//! resized onto the grid off the reactor, and kept while the cache's byte budget allows (least
//! recently used go first). The scheduler only ever does a non-blocking [`FrameCache::get`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::grid::{Grid, Raster};
use crate::playback::{Show, ShowFrame};

/// Why a frame's bytes could not be had.
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// Where frame bytes come from: the frame store, named by the frame's stored id.
pub trait FrameSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, stored_id: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FetchError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the frame's bytes cannot be fetched")]
    Fetch(#[source] FetchError),
    #[error("the frame cannot be decoded")]
    Decode(#[from] image::ImageError),
    #[error("the decoder stopped")]
    Stopped,
}

struct Entry {
    raster: Arc<Raster>,
    last_used: u64,
}

/// Rasters by grid and content hash, within a byte budget.
pub struct FrameCache {
    /// Grid first, then hash: a lookup borrows the hash (the scheduler looks up every
    /// segment of every window, and should not allocate to do it).
    entries: Mutex<HashMap<Grid, HashMap<String, Entry>>>,
    budget_bytes: u64,
    clock: AtomicU64,
    source: Arc<dyn FrameSource>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl FrameCache {
    pub fn new(source: Arc<dyn FrameSource>, budget_bytes: u64) -> FrameCache {
        FrameCache {
            entries: Mutex::new(HashMap::new()),
            budget_bytes,
            clock: AtomicU64::new(0),
            source,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The raster when it is cached; never waits.
    pub fn get(&self, sha256: &str, grid: Grid) -> Option<Arc<Raster>> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().expect("frame cache lock");
        match entries.get_mut(&grid).and_then(|m| m.get_mut(sha256)) {
            Some(e) => {
                e.last_used = tick;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(e.raster.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Lookups that found their raster, and those that did not, since the start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub fn contains(&self, sha256: &str, grid: Grid) -> bool {
        self.entries
            .lock()
            .expect("frame cache lock")
            .get(&grid)
            .is_some_and(|m| m.contains_key(sha256))
    }

    /// Puts a raster in, evicting the least recently used beyond the budget.
    pub fn insert(&self, sha256: &str, raster: Arc<Raster>) {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().expect("frame cache lock");
        entries.entry(raster.grid).or_default().insert(
            sha256.to_owned(),
            Entry {
                raster,
                last_used: tick,
            },
        );
        let mut used: u64 = entries
            .values()
            .flat_map(|m| m.values())
            .map(|e| e.raster.bytes())
            .sum();
        let mut count: usize = entries.values().map(HashMap::len).sum();
        while used > self.budget_bytes && count > 1 {
            let Some((grid, sha)) = entries
                .iter()
                .flat_map(|(g, m)| m.iter().map(move |(sha, e)| (g, sha, e.last_used)))
                .min_by_key(|&(_, _, last_used)| last_used)
                .map(|(g, sha, _)| (*g, sha.clone()))
            else {
                break;
            };
            let by_sha = entries.get_mut(&grid).expect("found above");
            if let Some(e) = by_sha.remove(&sha) {
                used -= e.raster.bytes();
                count -= 1;
            }
            if by_sha.is_empty() {
                entries.remove(&grid);
            }
        }
    }

    /// The frame on `grid`: from the cache, or fetched, decoded and resampled (and cached).
    pub async fn load(&self, frame: &ShowFrame, grid: Grid) -> Result<Arc<Raster>, LoadError> {
        if let Some(raster) = self.get(&frame.sha256, grid) {
            return Ok(raster);
        }
        let fetching = std::time::Instant::now();
        let bytes = self
            .source
            .fetch(&frame.gridfs_id)
            .await
            .map_err(LoadError::Fetch)?;
        metrics::histogram!("c3s_gridfs_fetch_seconds").record(fetching.elapsed().as_secs_f64());
        let raster = tokio::task::spawn_blocking(move || Raster::from_image_bytes(&bytes, grid))
            .await
            .map_err(|_| LoadError::Stopped)??;
        let raster = Arc::new(raster);
        self.insert(&frame.sha256, raster.clone());
        Ok(raster)
    }

    /// Loads every frame of a show (used when a show is installed, long before it plays).
    pub async fn preload(&self, show: &Show) {
        let grid = Grid::for_show(show);
        for frame in &show.frames {
            if let Err(e) = self.load(frame, grid).await {
                tracing::warn!(frame_id = %frame.frame_id, error = ?e, "frame preload failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame source holding one PNG under every id.
    struct OnePng(Vec<u8>);

    impl FrameSource for OnePng {
        fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
            Box::pin(async move { Ok(self.0.clone()) })
        }
    }

    fn cache(budget: u64) -> FrameCache {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(4, 2, image::Rgb([10, 20, 30]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        FrameCache::new(Arc::new(OnePng(png)), budget)
    }

    #[test]
    fn the_least_recently_used_raster_goes_first() {
        let grid = Grid { w: 2, h: 2 };
        let raster = || {
            Arc::new(Raster {
                grid,
                rgb: vec![[0; 3]; 4],
            })
        };
        let cache = cache(2 * 12); // room for two 2×2 rasters
        cache.insert("a", raster());
        cache.insert("b", raster());
        assert!(cache.get("a", grid).is_some()); // a is now fresher than b
        cache.insert("c", raster());
        assert!(cache.contains("a", grid) && cache.contains("c", grid));
        assert!(!cache.contains("b", grid));
        assert!(
            cache.get("a", Grid { w: 1, h: 1 }).is_none(),
            "grids are kept apart"
        );
    }

    #[tokio::test]
    async fn a_frame_is_fetched_resampled_and_kept() {
        let cache = cache(1 << 20);
        let frame = ShowFrame {
            frame_id: uuid::Uuid::new_v4(),
            sha256: "abc".into(),
            gridfs_id: "any".into(),
            duration_ms: 100,
            width: 4,
            height: 2,
        };
        let grid = Grid { w: 2, h: 1 };
        let raster = cache.load(&frame, grid).await.unwrap();
        assert_eq!(raster.rgb, vec![[10, 20, 30]; 2]);
        assert!(cache.contains("abc", grid));
        assert_eq!(raster.to_rgb_bytes(), [10, 20, 30, 10, 20, 30]);
    }
}
