//! A clip's show frames in the frame cache: decoded on demand, ahead of playback, and never
//! all at once (a 3-minute clip at 30 fps is 5 400 frames; the cache holds a few seconds).
//!
//! The scheduler asks for the show frames a window lacks ([`Clips::want`]); a decoder per
//! (clip, play rate, grid) runs FFmpeg from the first frame asked for, puts each show frame in
//! the cache as it comes and keeps going while it is less than `ahead` frames past the last
//! frame asked for (then it waits: the pipe fills and FFmpeg blocks). A frame asked for behind
//! the decoder, or far past it (a seek), starts a new decoder there. Decoders nobody asks for
//! stop after [`IDLE`]; at most `max_decoders` run on a node (the least recently asked-for
//! stops first).
//!
//! The clip's file is read from a local copy (`spool`, named by the file's SHA-256): the node
//! that took the upload keeps its copy; another node fetches it from the frame store once.
//! The copies are kept within a disk budget, least recently used removed first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::framecache::FrameCache;
use super::grid::{Grid, Raster};
use super::scheduler::Waker;
use crate::clips::{source_frame_for, ClipLimits, FrameStream};
use crate::playback::{ClipPlay, ShowFrame};

/// A decoder nobody has asked anything of for this long stops.
pub const IDLE: Duration = Duration::from_secs(30);

/// A frame asked for this far (in seconds of show) past where a decoder is makes it decode on
/// to it; farther is a seek, and a new decoder starts there.
const SEEK_FORWARD_S: u32 = 10;

/// The node's clip settings.
#[derive(Debug, Clone)]
pub struct ClipSettings {
    /// Where local copies of clip files are kept.
    pub spool: PathBuf,
    /// The copies' disk budget, in bytes.
    pub spool_bytes: u64,
    pub limits: ClipLimits,
    /// Decoders running at once on the node.
    pub max_decoders: usize,
    /// How far ahead of the last frame asked for a decoder goes, in seconds of show.
    pub ahead_s: u32,
}

impl ClipSettings {
    /// For tests and tools: a spool in the system's temporary directory.
    pub fn temporary() -> ClipSettings {
        ClipSettings {
            spool: std::env::temp_dir().join(format!("c3s-clips-{}", std::process::id())),
            spool_bytes: 4 << 30,
            limits: ClipLimits {
                max_bytes: 2 << 30,
                max_seconds: 600.0,
                max_pixels: 4096 * 2304,
                timeout: Duration::from_secs(60),
                decoder_memory_bytes: 2 << 30,
                threads: 2,
            },
            max_decoders: 2,
            ahead_s: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecoderKey {
    sha256: String,
    fps: u32,
    grid: Grid,
}

/// What a decoder and those asking of it share.
struct Decoder {
    /// The first show frame it gives, and the next it will.
    start: u32,
    next: AtomicU32,
    /// It decodes up to (not including) this show frame.
    wanted_to: Mutex<(u32, Instant)>,
    more: Condvar,
    stop: AtomicBool,
    failed: AtomicBool,
}

impl Decoder {
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.more.notify_all();
    }

    fn last_asked(&self) -> Instant {
        self.wanted_to.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

pub struct Clips {
    settings: ClipSettings,
    decoders: Mutex<HashMap<DecoderKey, Arc<Decoder>>>,
    /// Files being fetched into the spool (one fetch per file).
    fetching: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    runtime: Option<tokio::runtime::Handle>,
}

impl Clips {
    pub fn new(settings: ClipSettings) -> Clips {
        Clips {
            settings,
            decoders: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    pub fn settings(&self) -> &ClipSettings {
        &self.settings
    }

    /// The local copy of a clip file, by its hash.
    pub fn spool_path(&self, sha256: &str) -> PathBuf {
        self.settings.spool.join(format!("{sha256}.clip"))
    }

    /// Adopts a file (the upload's own copy) as the local copy of the clip `sha256`.
    pub fn adopt(&self, sha256: &str, file: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.settings.spool)?;
        std::fs::rename(file, self.spool_path(sha256))?;
        self.trim_spool();
        Ok(())
    }

    /// Forgets the local copy of a deleted clip.
    pub fn forget(&self, sha256: &str) {
        let _ = std::fs::remove_file(self.spool_path(sha256));
    }

    /// Asks for show frame `index` of the clip `frame` on `grid`: a decoder there is asked
    /// to go on, or one is started. Never waits.
    pub fn want(
        &self,
        cache: &Arc<FrameCache>,
        frame: &ShowFrame,
        clip: &ClipPlay,
        index: u32,
        grid: Grid,
        waker: Option<Waker>,
    ) {
        let key = DecoderKey {
            sha256: frame.sha256.clone(),
            fps: clip.fps,
            grid,
        };
        let ahead = self.ahead_frames(clip.fps, grid, cache.budget_bytes());
        let cached = cache.contains_sub(&frame.sha256, clip.cache_sub(index), grid);
        let mut decoders = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = decoders.get(&key) {
            // one window may span many seconds of the clip (a catch-up of 5.5 s): a frame up
            // to SEEK_FORWARD_S past the decoder is decoded to, not jumped to
            let reach = ahead.max(SEEK_FORWARD_S * clip.fps);
            let next = d.next.load(Ordering::Acquire);
            let alive = !d.failed.load(Ordering::Acquire) && !d.stop.load(Ordering::Acquire);
            // behind the decoder: decoded already (or asked for in a race with its insert),
            // else gone from the cache (a loop, a seek back, an eviction) and decoded again
            let behind_and_gone = index < next && !cached;
            let reusable = alive && d.start <= index && index <= next + reach && !behind_and_gone;
            if reusable {
                let mut wanted = d.wanted_to.lock().unwrap_or_else(|p| p.into_inner());
                wanted.0 = wanted.0.max((index + ahead).min(clip.first + clip.frames));
                wanted.1 = Instant::now();
                d.more.notify_all();
                return;
            }
            if d.failed.load(Ordering::Acquire) && d.last_asked().elapsed() < Duration::from_secs(5)
            {
                return; // a broken file is not decoded again at every tick
            }
            if !alive && cached {
                return; // a decoder that got to the stretch's end: the frame is there
            }
            d.stop();
            decoders.remove(&key);
        } else if cached {
            return; // nothing to decode
        }
        decoders.retain(|_, d| !d.stop.load(Ordering::Acquire));
        while decoders.len() >= self.settings.max_decoders.max(1) {
            let Some(oldest) = decoders
                .iter()
                .min_by_key(|(_, d)| d.last_asked())
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(d) = decoders.remove(&oldest) {
                d.stop();
            }
        }
        let decoder = Arc::new(Decoder {
            start: index,
            next: AtomicU32::new(index),
            wanted_to: Mutex::new((
                (index + ahead).min(clip.first + clip.frames),
                Instant::now(),
            )),
            more: Condvar::new(),
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        decoders.insert(key.clone(), decoder.clone());
        drop(decoders);
        let job = Job {
            key,
            clip: clip.clone(),
            gridfs_id: frame.gridfs_id.clone(),
            decoder,
            cache: cache.clone(),
            waker,
        };
        let spawned = std::thread::Builder::new()
            .name("c3s-clip".into())
            .spawn(move || job.run());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a clip decoder");
        }
    }

    /// Frames a decoder keeps ready past the last asked for: `ahead_s` of show, but at most
    /// a third of the cache (the window being played must still fit beside them).
    fn ahead_frames(&self, fps: u32, grid: Grid, budget: u64) -> u32 {
        let frame_bytes = (grid.cells() as u64 * 3).max(1);
        let fit = (budget / frame_bytes / 3).max(2) as u32;
        (self.settings.ahead_s * fps).clamp(2, fit.max(2))
    }

    /// Decoders running now (for tests and metrics).
    pub fn running(&self) -> usize {
        let decoders = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
        decoders
            .values()
            .filter(|d| !d.stop.load(Ordering::Acquire))
            .count()
    }

    /// Makes sure the clip's file is in the spool, fetching it when it is not. Blocking.
    fn local_copy(&self, sha256: &str, gridfs_id: &str, cache: &FrameCache) -> Option<PathBuf> {
        let path = self.spool_path(sha256);
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sha256.to_owned())
            .or_default()
            .clone();
        let _one_fetch = lock.lock().unwrap_or_else(|p| p.into_inner());
        if path.exists() {
            // used now: the last to go
            if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            return Some(path);
        }
        let runtime = self.runtime.as_ref()?;
        std::fs::create_dir_all(&self.settings.spool).ok()?;
        let partial = self
            .settings
            .spool
            .join(format!("{sha256}.{}.part", std::process::id()));
        let source = cache.source();
        let fetched = runtime.block_on(source.fetch_to_file(gridfs_id, &partial));
        match fetched {
            Ok(()) => {
                std::fs::rename(&partial, &path).ok()?;
                self.trim_spool();
                Some(path)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                tracing::warn!(gridfs_id, error = ?e, "cannot fetch a clip's file");
                None
            }
        }
    }

    /// Removes the least recently used copies beyond the disk budget (never a clip being
    /// decoded: its file stays open, and is fetched again if asked for later).
    fn trim_spool(&self) {
        let Ok(dir) = std::fs::read_dir(&self.settings.spool) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "clip"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut used: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if used <= self.settings.spool_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                used -= len;
            }
        }
    }
}

/// One decoder's work, on its own thread.
struct Job {
    key: DecoderKey,
    clip: ClipPlay,
    gridfs_id: String,
    decoder: Arc<Decoder>,
    cache: Arc<FrameCache>,
    waker: Option<Waker>,
}

/// Marks a decoder stopped however its job ends (a panic too), so it is never taken for a
/// live one.
struct Ended(Arc<Decoder>);

impl Drop for Ended {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::Release);
        }
        self.0.stop.store(true, Ordering::Release);
    }
}

impl Job {
    fn run(self) {
        let _ended = Ended(self.decoder.clone());
        if let Err(e) = self.decode() {
            tracing::warn!(sha256 = %self.key.sha256, error = %e, "a clip decoder stopped");
            self.decoder.failed.store(true, Ordering::Release);
        }
    }

    /// Waits until show frame `index` is wanted; false when the decoder is to stop.
    fn wait_until_wanted(&self, index: u32) -> bool {
        let d = &self.decoder;
        let mut wanted = d.wanted_to.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if d.stop.load(Ordering::Acquire) {
                return false;
            }
            if index < wanted.0 {
                return true;
            }
            if wanted.1.elapsed() > IDLE {
                return false;
            }
            wanted = d
                .more
                .wait_timeout(wanted, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn decode(&self) -> Result<(), String> {
        let clips = self.cache.clips();
        let path = clips
            .local_copy(&self.key.sha256, &self.gridfs_id, &self.cache)
            .ok_or("the clip's file cannot be had")?;
        let (grid, fps, clip) = (self.key.grid, self.key.fps, &self.clip);
        let start_s = clip.video_start_us as f64 / 1e6;
        let mut index = self.decoder.start;
        let from_s = start_s + f64::from(index) / f64::from(fps);
        let mut stream = FrameStream::start(
            &path,
            from_s,
            start_s,
            grid.w,
            grid.h,
            &clips.settings.limits,
        )
        .map_err(|e| e.to_string())?;

        // the newest source frames decoded: the one showing, and the one after it
        let mut shown: Option<(f64, Arc<Raster>)> = None;
        let mut upcoming: Option<(f64, Arc<Raster>)> = None;
        let mut ended = false;
        let mut since_wake = 0;
        while self.wait_until_wanted(index) {
            // take source frames until the next one begins after this show frame's instant
            loop {
                if upcoming.is_none() && !ended {
                    match stream.next_frame().map_err(|e| e.to_string())? {
                        Some((t, rgb)) => upcoming = Some((t, Arc::new(raster(grid, &rgb)))),
                        None => ended = true,
                    }
                }
                let Some((t, _)) = &upcoming else { break };
                let times = [*t];
                if source_frame_for(&times, start_s, index, fps).is_none() {
                    break; // it begins later
                }
                shown = upcoming.take();
            }
            let Some((_, raster)) = shown.clone().or_else(|| upcoming.clone()) else {
                return Err("the clip has no frames there".into());
            };
            self.cache
                .insert_sub(&self.key.sha256, clip.cache_sub(index), raster);
            index += 1;
            self.decoder.next.store(index, Ordering::Release);
            since_wake += 1;
            if since_wake >= fps.div_ceil(4) {
                since_wake = 0;
                if let Some(w) = &self.waker {
                    w.wake();
                }
            }
            if index >= clip.first + clip.frames {
                break; // the end of the stretch that plays
            }
        }
        if let Some(w) = &self.waker {
            w.wake();
        }
        Ok(())
    }
}

fn raster(grid: Grid, rgb: &[u8]) -> Raster {
    Raster {
        grid,
        rgb: rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(),
    }
}
