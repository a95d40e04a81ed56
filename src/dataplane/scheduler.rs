//! The playback scheduler: the hot path. On its own OS thread (so its CPU work never stalls
//! the reactor), every tick it builds, for each connected located phone, the chunk of colours
//! for the next window and queues it without waiting.
//!
//! Per scene and tick the work is: the window's segments (shared by every phone), one chunk
//! per grid cell in use (phones in the same cell share the bytes: all of a tick's chunks are
//! slices of one buffer), and one non-blocking `try_send` per phone. Nothing is allocated per
//! phone: scratch space is kept between ticks.
//!
//! Windows are contiguous per scene: each tick covers `[horizon, now + lookahead + tick)`. A
//! phone that joins, is located, or sees a new show version gets a catch-up chunk for
//! `[now, horizon)` at once, so it never waits a tick to be right.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::chunk;
use super::framecache::FrameCache;
use super::grid::{Grid, Raster};
use super::hub::{Conn, Hub, SceneSnapshot};
use crate::clock;
use crate::playback::Segment;

/// From this many phones in a scene, a window is queued by two threads (the machine's cores).
const PARALLEL_SEND_MIN_PHONES: usize = 20_000;

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// How often windows are built and sent.
    pub tick_ms: i64,
    /// How far ahead of its instant a colour reaches the phone (at least).
    pub lookahead_ms: i64,
}

/// Wakes the scheduler early (a phone joined or was located, a show changed). Cheap to clone.
#[derive(Clone)]
pub struct Waker(SyncSender<()>);

impl Waker {
    pub fn wake(&self) {
        let _ = self.0.try_send(());
    }
}

/// The scratch space of one scene, kept between ticks so a tick allocates nothing per phone.
#[derive(Default)]
pub struct SceneWork {
    /// End of the last regular window sent.
    horizon_ms: i64,
    segments: Vec<Segment>,
    rasters: Vec<Option<Arc<Raster>>>,
    buf: Vec<u8>,
    /// For each grid cell, the build number its chunk was last built in, and its byte range.
    built_in: Vec<u32>,
    range: Vec<(u32, u32)>,
    build_no: u32,
}

/// What one build produced: the bytes, and whether anything but idle colour is in them.
pub struct Built {
    pub bytes: Bytes,
    pub all_idle: bool,
}

impl SceneWork {
    /// Computes the window's segments and finds their rasters. Returns the frames that are
    /// not cached yet (the window cannot be built until they are).
    pub fn prepare(
        &mut self,
        snap: &SceneSnapshot,
        cache: &FrameCache,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<usize> {
        self.segments.clear();
        self.rasters.clear();
        let mut missing = Vec::new();
        match &snap.show {
            Some(show) => snap
                .timeline
                .segments(show, from_ms, to_ms, &mut self.segments),
            None => self.segments.push(Segment {
                start_ms: from_ms,
                frame: None,
            }),
        }
        for seg in &self.segments {
            let raster = seg.frame.and_then(|i| {
                let frame = &snap.show.as_ref()?.frames[i as usize];
                let r = cache.get(&frame.sha256, snap.grid);
                if r.is_none() {
                    missing.push(i as usize);
                }
                r
            });
            self.rasters.push(raster);
        }
        missing
    }

    fn start_build(&mut self, cells: usize) {
        self.buf.clear();
        if self.built_in.len() != cells {
            self.built_in = vec![0; cells];
            self.range = vec![(0, 0); cells];
            self.build_no = 0;
        }
        self.build_no = self.build_no.wrapping_add(1).max(1);
    }

    /// The chunk of `cell` for the prepared window, built on first use in this build.
    fn chunk_for(&mut self, cell: u32, version: u32, from_ms: i64, to_ms: i64, idle: [u8; 3]) {
        let c = cell as usize;
        if self.built_in[c] == self.build_no {
            return;
        }
        let start = self.buf.len();
        chunk::push_header(&mut self.buf, version, from_ms, (to_ms - from_ms) as u32);
        let mut last: Option<[u8; 3]> = None;
        let mut last_at = from_ms;
        for (seg, raster) in self.segments.iter().zip(&self.rasters) {
            let rgb = raster.as_ref().map_or(idle, |r| r.rgb[c]);
            if last != Some(rgb) {
                chunk::push_entry(&mut self.buf, (seg.start_ms - last_at) as u32, rgb);
                last = Some(rgb);
                last_at = seg.start_ms;
            }
        }
        self.built_in[c] = self.build_no;
        self.range[c] = (start as u32, (self.buf.len() - start) as u32);
    }

    /// Builds the prepared window `[from, to)` for `conns` and queues it. Returns how many
    /// chunks were queued.
    ///
    /// When phones outnumber half the grid's cells every cell is built up front (cheaper than
    /// a second walk over the phones), and a large crowd is served by two threads at once.
    pub fn build_and_send(
        &mut self,
        snap: &SceneSnapshot,
        from_ms: i64,
        to_ms: i64,
        conns: &[Arc<Conn>],
    ) -> usize {
        let grid = snap.grid;
        self.start_build(grid.cells());
        let version = snap.timeline.version as u32;
        if conns.len() * 2 >= grid.cells() {
            // one allocation for the whole tick: header and up to 5 bytes per segment a cell
            self.buf
                .reserve(grid.cells() * (chunk::HEADER_BYTES + 5 * self.segments.len()));
            for cell in 0..grid.cells() as u32 {
                self.chunk_for(cell, version, from_ms, to_ms, snap.idle_rgb);
            }
        } else {
            for conn in conns {
                if let Some(cell) = cell_of(conn, snap, grid) {
                    self.chunk_for(cell, version, from_ms, to_ms, snap.idle_rgb);
                }
            }
        }
        if self.buf.is_empty() {
            return 0;
        }
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        let (range, built_in, build_no) = (&self.range, &self.built_in, self.build_no);
        let send = |part: &[Arc<Conn>], bytes: &Bytes| {
            let mut sent = 0;
            for conn in part {
                // a phone moved since the build may be in a cell not built this time: it has
                // asked for a catch-up, which it gets on the next wake-up
                let Some(cell) =
                    cell_of(conn, snap, grid).filter(|&c| built_in[c as usize] == build_no)
                else {
                    continue;
                };
                let (start, len) = range[cell as usize];
                let (start, end) = (start as usize, start as usize + len as usize);
                if end <= bytes.len() {
                    sent += usize::from(conn.offer(bytes.slice(start..end)));
                }
            }
            sent
        };
        if conns.len() < PARALLEL_SEND_MIN_PHONES {
            return send(conns, &bytes);
        }
        // the second thread gets its own copy of the bytes: sharing one reference count
        // between two cores would bounce its cache line on every phone
        let copy = Bytes::copy_from_slice(&bytes);
        let (a, b) = conns.split_at(conns.len() / 2);
        std::thread::scope(|scope| {
            let other = scope.spawn(|| send(b, &copy));
            send(a, &bytes) + other.join().expect("send thread")
        })
    }

    /// Whether the prepared window shows only the idle colour.
    pub fn all_idle(&self) -> bool {
        self.rasters.iter().all(Option::is_none)
    }
}

fn cell_of(conn: &Conn, snap: &SceneSnapshot, grid: Grid) -> Option<u32> {
    conn.position()
        .map(|(x, y)| grid.cell_of(x, y, snap.width, snap.height))
}

pub struct Scheduler {
    hub: Arc<Hub>,
    cache: Arc<FrameCache>,
    config: SchedulerConfig,
    runtime: tokio::runtime::Handle,
    scenes: HashMap<Uuid, SceneWork>,
    /// Its own waker: a frame load that completes wakes the scheduler to use it.
    waker: Waker,
    /// Frames being fetched, and since when (a failed fetch is tried again after a while).
    loading: HashMap<(String, Grid), Instant>,
}

/// How long a frame fetch may take before the scheduler asks for it again.
const RELOAD_AFTER: Duration = Duration::from_secs(5);
/// How long windows wait for a frame being fetched before showing idle colour in its place.
const LOAD_PATIENCE: Duration = Duration::from_secs(1);

impl Scheduler {
    /// Starts the scheduler thread; it stops when `stop` is cancelled.
    pub fn spawn(
        hub: Arc<Hub>,
        cache: Arc<FrameCache>,
        config: SchedulerConfig,
        stop: tokio_util::sync::CancellationToken,
    ) -> Waker {
        // one pending wake-up is enough: the scheduler looks at everything when it wakes
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let waker = Waker(tx);
        let mut scheduler = Scheduler {
            waker: waker.clone(),
            hub,
            cache,
            config,
            runtime: tokio::runtime::Handle::current(),
            scenes: HashMap::new(),
            loading: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("c3s-scheduler".into())
            .spawn(move || scheduler.run(rx, stop))
            .expect("spawn the scheduler thread");
        waker
    }

    fn run(&mut self, wakes: Receiver<()>, stop: tokio_util::sync::CancellationToken) {
        let tick = Duration::from_millis(self.config.tick_ms as u64);
        let mut next_tick = Instant::now();
        while !stop.is_cancelled() {
            let now = Instant::now();
            if now >= next_tick {
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick; // we fell behind: skip, never burst
                }
            }
            self.tick();
            match wakes.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// One pass over every scene: catch-ups, and the regular window where it is due.
    pub fn tick(&mut self) {
        let started = Instant::now();
        self.tick_scenes();
        metrics::histogram!("c3s_scheduler_tick_seconds").record(started.elapsed().as_secs_f64());
    }

    fn tick_scenes(&mut self) {
        let now = clock::now_ms();
        let scenes = self.hub.scenes();
        // a scene with no phones here needs no work (and keeps no scratch memory)
        self.scenes.retain(|id, _| {
            scenes
                .iter()
                .any(|s| s.scene_id == *id && s.conn_count() > 0)
        });
        for scene in scenes {
            if scene.conn_count() == 0 {
                continue;
            }
            // the flag before the snapshot: a change between the two is then caught next time
            let everyone = scene.needs_catch_up.swap(false, Ordering::AcqRel);
            let snap = scene.snapshot();
            let work = self.scenes.entry(scene.scene_id).or_default();
            if work.horizon_ms < now {
                work.horizon_ms = now;
            }
            let mut missing = Vec::new();

            // a new version, or phones that joined or moved: [now, horizon) at once
            let mut picked: Vec<Arc<Conn>> = Vec::new();
            scene.for_each_conn(|c| {
                if c.take_catch_up() || everyone {
                    picked.push(c.clone());
                }
            });
            if !picked.is_empty() && work.horizon_ms > now {
                missing = work.prepare(&snap, &self.cache, now, work.horizon_ms);
                if missing.is_empty() {
                    work.build_and_send(&snap, now, work.horizon_ms, &picked);
                } else {
                    // try again on the next wake-up, when the frames are in
                    picked.iter().for_each(|c| c.request_catch_up());
                    if everyone {
                        scene.needs_catch_up.store(true, Ordering::Release);
                    }
                }
            }

            // the regular window: due when the phones' coverage would run short of the
            // lookahead before the next tick (half a tick of slack for timer jitter); so each
            // window reaches the phones a full lookahead before it starts
            let target = now + self.config.lookahead_ms;
            if work.horizon_ms < target + self.config.tick_ms / 2 && missing.is_empty() {
                let (from, to) = (work.horizon_ms, target + self.config.tick_ms);
                missing = work.prepare(&snap, &self.cache, from, to);
                // Wait for missing frames while they load; a frame the store has not given
                // within LOAD_PATIENCE is shown as idle colour instead, so one unreadable
                // frame does not stop the whole show.
                let given_up = snap.show.as_ref().is_some_and(|show| {
                    missing.iter().any(|&i| {
                        self.loading
                            .get(&(show.frames[i].sha256.clone(), snap.grid))
                            .is_some_and(|since| since.elapsed() > LOAD_PATIENCE)
                    })
                });
                if missing.is_empty() || given_up {
                    if !missing.is_empty() {
                        tracing::warn!(scene_id = %scene.scene_id, frames = missing.len(), "frames not loaded in time; shown as idle");
                    }
                    if !work.all_idle() {
                        scene.with_conns(|conns| work.build_and_send(&snap, from, to, conns));
                    }
                    work.horizon_ms = to;
                }
            }
            if let Some(show) = &snap.show {
                for i in missing {
                    let frame = show.frames[i].clone();
                    let key = (frame.sha256.clone(), snap.grid);
                    let due = self
                        .loading
                        .get(&key)
                        .is_none_or(|since| since.elapsed() > RELOAD_AFTER);
                    if due {
                        self.loading.insert(key, Instant::now());
                        let cache = self.cache.clone();
                        let grid = snap.grid;
                        let waker = self.waker.clone();
                        self.runtime.spawn(async move {
                            match cache.load(&frame, grid).await {
                                Ok(_) => waker.wake(),
                                Err(e) => tracing::warn!(frame_id = %frame.frame_id, error = ?e, "frame load failed"),
                            }
                        });
                    }
                }
            }
        }
        let cache = &self.cache;
        self.loading
            .retain(|(sha, grid), _| !cache.contains(sha, *grid));
    }
}
