//! Frames decoded and resampled to a show's grid, cached by content hash.
//!
//! A show's frames are mapped onto the scene rectangle through one grid (its cells are what
//! phones sample): the largest frame's resolution, capped at [`MAX_GRID_CELLS`]. Each frame is
//! fetched from GridFS once, decoded and resized to that grid off the reactor, and kept while
//! the cache's byte budget allows (least recently used go first). The scheduler only ever does
//! a non-blocking [`FrameCache::get`].

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use image::imageops::FilterType;
use mongodb::bson::oid::ObjectId;

use crate::playback::{Show, ShowFrame};
use crate::store::gridfs::FrameStore;

/// Cells in a show's grid at most (512 × 512): finer than any crowd.
pub const MAX_GRID_CELLS: u64 = 512 * 512;

/// The resolution frames are resampled to; a phone's colour is its cell's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grid {
    pub w: u32,
    pub h: u32,
}

impl Grid {
    /// The largest frame's size, scaled down (keeping its shape) to at most `MAX_GRID_CELLS`.
    pub fn for_show(show: &Show) -> Grid {
        let (w, h) = show
            .frames
            .iter()
            .map(|f| (f.width.max(1), f.height.max(1)))
            .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
            .unwrap_or((1, 1));
        let cells = u64::from(w) * u64::from(h);
        if cells <= MAX_GRID_CELLS {
            return Grid { w, h };
        }
        let scale = (MAX_GRID_CELLS as f64 / cells as f64).sqrt();
        Grid {
            w: ((f64::from(w) * scale) as u32).max(1),
            h: ((f64::from(h) * scale) as u32).max(1),
        }
    }

    pub fn cells(&self) -> usize {
        self.w as usize * self.h as usize
    }

    /// The cell of scene point (x, y) in a scene of `scene_w` × `scene_h` units.
    pub fn cell_of(&self, x: f32, y: f32, scene_w: f32, scene_h: f32) -> u32 {
        let cx = ((x / scene_w) * self.w as f32).clamp(0.0, (self.w - 1) as f32) as u32;
        let cy = ((y / scene_h) * self.h as f32).clamp(0.0, (self.h - 1) as f32) as u32;
        cy * self.w + cx
    }
}

/// One frame at grid resolution: a colour per cell, row by row.
#[derive(Debug)]
pub struct Raster {
    pub grid: Grid,
    pub rgb: Vec<[u8; 3]>,
}

impl Raster {
    /// Decodes image bytes and resizes them onto `grid` (transparent parts over black).
    pub fn from_image_bytes(bytes: &[u8], grid: Grid) -> anyhow::Result<Raster> {
        let img = image::load_from_memory(bytes)?.to_rgb8();
        let img = if img.dimensions() == (grid.w, grid.h) {
            img
        } else {
            image::imageops::resize(&img, grid.w, grid.h, FilterType::Triangle)
        };
        let rgb = img.pixels().map(|p| p.0).collect();
        Ok(Raster { grid, rgb })
    }

    fn bytes(&self) -> u64 {
        (self.rgb.len() * 3) as u64
    }
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
    store: FrameStore,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl FrameCache {
    pub fn new(store: FrameStore, budget_bytes: u64) -> FrameCache {
        FrameCache {
            entries: Mutex::new(HashMap::new()),
            budget_bytes,
            clock: AtomicU64::new(0),
            store,
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

    /// Fetches, decodes and resamples one frame unless it is cached already.
    pub async fn load(&self, frame: &ShowFrame, grid: Grid) -> anyhow::Result<()> {
        if self.contains(&frame.sha256, grid) {
            return Ok(());
        }
        let oid = ObjectId::from_str(&frame.gridfs_id)?;
        let fetching = std::time::Instant::now();
        let bytes = self.store.get(oid).await?;
        metrics::histogram!("c3s_gridfs_fetch_seconds").record(fetching.elapsed().as_secs_f64());
        let raster =
            tokio::task::spawn_blocking(move || Raster::from_image_bytes(&bytes, grid)).await??;
        self.insert(&frame.sha256, Arc::new(raster));
        Ok(())
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

    fn frame(w: u32, h: u32) -> ShowFrame {
        ShowFrame {
            frame_id: uuid::Uuid::new_v4(),
            sha256: String::new(),
            gridfs_id: String::new(),
            duration_ms: 1,
            width: w,
            height: h,
        }
    }

    #[test]
    fn grid_is_the_largest_frame_capped() {
        let show = Show {
            frames: vec![frame(10, 10), frame(96, 48)],
            looped: false,
        };
        assert_eq!(Grid::for_show(&show), Grid { w: 96, h: 48 });
        let huge = Show {
            frames: vec![frame(4000, 2000)],
            looped: false,
        };
        let g = Grid::for_show(&huge);
        assert!(g.cells() as u64 <= MAX_GRID_CELLS);
        assert!((f64::from(g.w) / f64::from(g.h) - 2.0).abs() < 0.01);
    }

    #[tokio::test]
    async fn the_least_recently_used_raster_goes_first() {
        let config = crate::config::Config::for_tests(
            String::new(),
            "mongodb://127.0.0.1:1".into(),
            "none".into(),
        );
        let store = FrameStore::connect(&config).await.unwrap();
        let grid = Grid { w: 2, h: 2 };
        let raster = || {
            Arc::new(Raster {
                grid,
                rgb: vec![[0; 3]; 4],
            })
        };
        let cache = FrameCache::new(store, 2 * 12); // room for two 2×2 rasters
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

    #[test]
    fn cells_cover_the_scene_and_clamp_its_edges() {
        let g = Grid { w: 4, h: 2 };
        assert_eq!(g.cell_of(0.0, 0.0, 100.0, 50.0), 0);
        assert_eq!(g.cell_of(99.9, 49.9, 100.0, 50.0), 7);
        assert_eq!(g.cell_of(100.0, 50.0, 100.0, 50.0), 7);
        assert_eq!(g.cell_of(-5.0, 30.0, 100.0, 50.0), 4);
        assert_eq!(g.cell_of(30.0, 10.0, 100.0, 50.0), 1);
    }
}
