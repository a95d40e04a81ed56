//! Frames decoded and resampled to a show's grid, cached by content hash.
//!
//! Each frame is fetched once from its [`FrameSource`] (GridFS, in the server), decoded and
//! resized onto the grid off the reactor, and kept while the cache's byte budget allows (least
//! recently used go first). The scheduler only ever does a non-blocking [`FrameCache::get`].
//! A clip's show frames are kept under the clip's hash and a sub-key each
//! ([`crate::playback::ClipPlay::cache_sub`]); they are decoded ahead of playback by the
//! cache's [`Clips`], never all at once. A still's sub-key is 0.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::clips::{ClipSettings, Clips};
use super::grid::{Grid, Raster};
use crate::playback::{Show, ShowFrame};

/// Why a frame's bytes could not be had.
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// Where frame bytes come from: the frame store, named by the frame's stored id.
pub trait FrameSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, stored_id: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FetchError>>;

    /// Writes the stored bytes to a file (a clip: streamed, not held in memory).
    fn fetch_to_file<'a>(
        &'a self,
        stored_id: &'a str,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let bytes = self.fetch(stored_id).await?;
            tokio::fs::write(path, bytes).await?;
            Ok(())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the frame's bytes cannot be fetched")]
    Fetch(#[source] FetchError),
    #[error("the frame cannot be decoded")]
    Decode(#[from] image::ImageError),
    #[error("the decoder stopped")]
    Stopped,
    #[error("the clip's frame was not decoded in time")]
    ClipNotReady,
}

struct Entry {
    raster: Arc<Raster>,
    last_used: u64,
}

/// One grid's rasters: by content hash, then sub-key (0 for a still, a clip's show frame).
type BySha = HashMap<String, HashMap<u32, Entry>>;

/// Rasters by grid and content hash, within a byte budget.
pub struct FrameCache {
    /// Grid first, then hash: a lookup borrows the hash (the scheduler looks up every
    /// segment of every window, and should not allocate to do it).
    entries: Mutex<HashMap<Grid, BySha>>,
    /// The bytes the entries take.
    used: AtomicU64,
    budget_bytes: u64,
    clock: AtomicU64,
    source: Arc<dyn FrameSource>,
    clips: Clips,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl FrameCache {
    /// A cache whose clips are kept in a temporary spool (tests and tools).
    pub fn new(source: Arc<dyn FrameSource>, budget_bytes: u64) -> FrameCache {
        FrameCache::with_clips(source, budget_bytes, ClipSettings::temporary())
    }

    pub fn with_clips(
        source: Arc<dyn FrameSource>,
        budget_bytes: u64,
        clips: ClipSettings,
    ) -> FrameCache {
        FrameCache {
            entries: Mutex::new(HashMap::new()),
            used: AtomicU64::new(0),
            budget_bytes,
            clock: AtomicU64::new(0),
            source,
            clips: Clips::new(clips),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// The bytes the cached rasters take now.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn source(&self) -> &dyn FrameSource {
        &*self.source
    }

    /// The node's clip decoders and local copies.
    pub fn clips(&self) -> &Clips {
        &self.clips
    }

    /// The raster when it is cached; never waits.
    pub fn get(&self, sha256: &str, grid: Grid) -> Option<Arc<Raster>> {
        self.get_sub(sha256, 0, grid)
    }

    /// The raster of sub-key `sub` (a clip's show frame) when it is cached; never waits.
    pub fn get_sub(&self, sha256: &str, sub: u32, grid: Grid) -> Option<Arc<Raster>> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().expect("frame cache lock");
        match entries
            .get_mut(&grid)
            .and_then(|m| m.get_mut(sha256))
            .and_then(|m| m.get_mut(&sub))
        {
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
        self.contains_sub(sha256, 0, grid)
    }

    pub fn contains_sub(&self, sha256: &str, sub: u32, grid: Grid) -> bool {
        self.entries
            .lock()
            .expect("frame cache lock")
            .get(&grid)
            .and_then(|m| m.get(sha256))
            .is_some_and(|m| m.contains_key(&sub))
    }

    /// Puts a raster in, evicting the least recently used beyond the budget.
    pub fn insert(&self, sha256: &str, raster: Arc<Raster>) {
        self.insert_sub(sha256, 0, raster)
    }

    /// Puts the raster of sub-key `sub` in, evicting the least recently used beyond the
    /// budget (never the one just put in).
    pub fn insert_sub(&self, sha256: &str, sub: u32, raster: Arc<Raster>) {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let grid = raster.grid;
        let added = raster.bytes();
        let mut entries = self.entries.lock().expect("frame cache lock");
        let old = entries
            .entry(grid)
            .or_default()
            .entry(sha256.to_owned())
            .or_default()
            .insert(
                sub,
                Entry {
                    raster,
                    last_used: tick,
                },
            );
        let mut used = self.used.load(Ordering::Relaxed) + added;
        used -= old.map_or(0, |e| e.raster.bytes());
        while used > self.budget_bytes {
            let oldest = entries
                .iter()
                .flat_map(|(g, m)| {
                    m.iter().flat_map(move |(sha, subs)| {
                        subs.iter().map(move |(s, e)| (g, sha, *s, e.last_used))
                    })
                })
                .filter(|&(_, _, _, last_used)| last_used != tick)
                .min_by_key(|&(_, _, _, last_used)| last_used)
                .map(|(g, sha, s, _)| (*g, sha.clone(), s));
            let Some((grid, sha, sub)) = oldest else {
                break;
            };
            let by_sha = entries.get_mut(&grid).expect("found above");
            let subs = by_sha.get_mut(&sha).expect("found above");
            if let Some(e) = subs.remove(&sub) {
                used -= e.raster.bytes();
            }
            if subs.is_empty() {
                by_sha.remove(&sha);
            }
            if by_sha.is_empty() {
                entries.remove(&grid);
            }
        }
        self.used.store(used, Ordering::Relaxed);
    }

    /// Asks for a clip's show frame `index` on `grid` (see [`Clips::want`]); never waits.
    pub fn want_clip(
        self: &Arc<Self>,
        frame: &ShowFrame,
        index: u32,
        grid: Grid,
        waker: Option<super::scheduler::Waker>,
    ) {
        if let Some(clip) = &frame.clip {
            self.clips.want(self, frame, clip, index, grid, waker);
        }
    }

    /// A clip's show frame `index` on `grid`: from the cache, or decoded (waiting up to
    /// `patience` for it).
    pub async fn load_clip_frame(
        self: &Arc<Self>,
        frame: &ShowFrame,
        index: u32,
        grid: Grid,
        patience: std::time::Duration,
    ) -> Result<Arc<Raster>, LoadError> {
        let Some(clip) = &frame.clip else {
            return self.load(frame, grid).await;
        };
        let sub = clip.cache_sub(index);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(raster) = self.get_sub(&frame.sha256, sub, grid) {
                return Ok(raster);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LoadError::ClipNotReady);
            }
            self.want_clip(frame, index, grid, None);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The frame on `grid`: from the cache, or fetched, decoded and resampled (and cached).
    pub async fn load(&self, frame: &ShowFrame, grid: Grid) -> Result<Arc<Raster>, LoadError> {
        debug_assert!(
            frame.clip.is_none(),
            "a clip's frames are decoded by its decoder"
        );
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

    /// Loads every frame of a show (used when a show is installed, long before it plays); a
    /// clip's first seconds are decoded.
    pub async fn preload(self: &Arc<Self>, show: &Show) {
        let grid = Grid::for_show(show);
        for frame in &show.frames {
            if let Some(clip) = &frame.clip {
                self.want_clip(frame, clip.first, grid, None);
                continue;
            }
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
            clip: None,
        };
        let grid = Grid { w: 2, h: 1 };
        let raster = cache.load(&frame, grid).await.unwrap();
        assert_eq!(raster.rgb, vec![[10, 20, 30]; 2]);
        assert!(cache.contains("abc", grid));
        assert_eq!(raster.to_rgb_bytes(), [10, 20, 30, 10, 20, 30]);
    }
}
