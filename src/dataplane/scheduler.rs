//! The playback scheduler: the hot path. On its own OS thread (so its CPU work never stalls
//! the reactor), every tick it builds, for each connected located phone, the chunk of colours
//! for the next window and queues it without waiting.
//!
//! Per scene and tick the work is: the window's segments (shared by every phone), one chunk
//! per grid cell in use (phones in the same cell share the bytes: all of a tick's chunks are
//! slices of one buffer), and one non-blocking `try_send` per phone. Nothing is allocated per
//! phone: scratch space is kept between ticks.
//!
//! Windows are contiguous per window group (a scene's phones are spread over `window_ms /
//! tick_ms` groups, see `Hub::new`): a group's window is due when what its phones hold would
//! run short of the lookahead before the next tick, and then covers `[horizon, end)`. Once a
//! show version has held for `SETTLE_MS`, `end` is the next tick boundary of the group's own
//! phase past `now + lookahead + tick`, so each phone gets about `window_ms` of show per
//! message, and the groups fall due on different ticks (a tick serves a share of the crowd);
//! right after a new version every group gets one tick's window at each tick, since an
//! operator seeking or pausing would make longer windows stale at once. A phone that joins,
//! is located, or sees a new show version gets a catch-up chunk for `[now, horizon)` of its
//! group at once, so it never waits a tick to be right.

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
use super::hub::{Conn, Hub, SceneHub, SceneSnapshot};
use crate::clock;
use crate::playback::Segment;

/// Build buffers kept for reuse, per scene.
const SPENT_BUFFERS: usize = 4;

/// From this many phones in a scene, a window is queued by two threads (the machine's cores).
const PARALLEL_SEND_MIN_PHONES: usize = 20_000;

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// How often windows are built and sent.
    pub tick_ms: i64,
    /// How far ahead of its instant a colour reaches the phone (at least).
    pub lookahead_ms: i64,
    /// How much show a phone gets in one message once the show version has settled (the
    /// scene's phones are spread over `window_ms / tick_ms` groups).
    pub window_ms: i64,
}

impl SchedulerConfig {
    /// The window groups a hub needs for these settings.
    pub fn groups(&self) -> usize {
        (self.window_ms / self.tick_ms.max(1)).clamp(1, 64) as usize
    }
}

/// How long a show version must hold (from the instant it takes over) before windows grow
/// past one tick.
pub const SETTLE_MS: i64 = 10_000;

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
    /// End of the last regular window sent, per window group.
    horizons: Vec<i64>,
    /// The show version the windows are of, and since when (server ms).
    version: i64,
    version_since_ms: i64,
    /// Phones picked for a catch-up this tick, per group (kept for its capacity).
    picked: Vec<Vec<Arc<Conn>>>,
    segments: Vec<Segment>,
    rasters: Vec<Option<Arc<Raster>>>,
    buf: Vec<u8>,
    /// For each grid cell, the build number its chunk was last built in, and its byte range.
    built_in: Vec<u32>,
    range: Vec<(u32, u32)>,
    build_no: u32,
    /// The cells in use this build, a bit each (kept for its capacity).
    wanted: Vec<u64>,
    /// The buffers of the last builds, until every phone has sent its chunk of them.
    spent: std::collections::VecDeque<Bytes>,
}

/// What one build produced: the bytes, and whether anything but idle colour is in them.
pub struct Built {
    pub bytes: Bytes,
    pub all_idle: bool,
}

impl SceneWork {
    /// Computes the window's segments and finds their rasters. Returns the frames (show
    /// frame index, and a clip's show frame or 0) that are not cached yet (the window cannot
    /// be built until they are).
    pub fn prepare(
        &mut self,
        snap: &SceneSnapshot,
        cache: &FrameCache,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<(usize, u32)> {
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
                sub: 0,
            }),
        }
        for seg in &self.segments {
            let raster = seg.frame.and_then(|i| {
                let frame = &snap.show.as_ref()?.frames[i as usize];
                let sub = frame.clip.as_ref().map_or(0, |c| c.cache_sub(seg.sub));
                let r = cache.get_sub(&frame.sha256, sub, snap.grid);
                if r.is_none() {
                    missing.push((i as usize, seg.sub));
                }
                r
            });
            self.rasters.push(raster);
        }
        missing
    }

    fn start_build(&mut self, cells: usize) {
        // the buffer of an earlier build whose chunks every phone has sent, when there is one:
        // a fresh one of megabytes each tick costs its page faults (a tenth of a tick)
        while self.spent.front().is_some_and(Bytes::is_unique) {
            let spent = self.spent.pop_front().expect("front");
            if let Ok(reused) = spent.try_into_mut() {
                if reused.capacity() > self.buf.capacity() {
                    self.buf = Vec::from(reused);
                }
            }
        }
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
    /// When phones outnumber twice the grid's cells (then nearly every cell has a phone) every
    /// cell is built up front (cheaper than a second walk over the phones); a large crowd is
    /// served by two threads at once.
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
        if conns.len() >= 2 * grid.cells() {
            // one allocation for the whole tick: header and up to 5 bytes per segment a cell
            self.buf
                .reserve(grid.cells() * (chunk::HEADER_BYTES + 5 * self.segments.len()));
            for cell in 0..grid.cells() as u32 {
                self.chunk_for(cell, version, from_ms, to_ms, snap.idle_rgb);
            }
        } else {
            // mark the cells in use, then build them in cell order: a cell's colours are read
            // from every raster of the window at the cell's offset, so neighbouring cells share
            // those cache lines (built in the phones' order, each cell missed cache once per
            // raster)
            self.wanted.clear();
            self.wanted.resize(grid.cells().div_ceil(64), 0);
            for conn in conns {
                if let Some(cell) = cell_of(conn, snap, grid) {
                    self.wanted[cell as usize / 64] |= 1u64 << (cell % 64);
                }
            }
            for word in 0..self.wanted.len() {
                let mut bits = self.wanted[word];
                while bits != 0 {
                    let cell = word as u32 * 64 + bits.trailing_zeros();
                    bits &= bits - 1;
                    self.chunk_for(cell, version, from_ms, to_ms, snap.idle_rgb);
                }
            }
        }
        if self.buf.is_empty() {
            return 0;
        }
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        if self.spent.len() >= SPENT_BUFFERS {
            self.spent.pop_front();
        }
        self.spent.push_back(bytes.clone());
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

    /// The last clip frame of the prepared window (show frame index and the clip's show
    /// frame), if it shows a clip.
    pub fn last_clip_frame(&self) -> Option<(usize, u32)> {
        // (a still's is given too: asking a still's "decoder" does nothing)
        self.segments
            .iter()
            .rev()
            .find_map(|s| s.frame.map(|f| (f as usize, s.sub)))
    }

    /// Whether the prepared window shows only the idle colour.
    pub fn all_idle(&self) -> bool {
        self.rasters.iter().all(Option::is_none)
    }
}

/// Where a window of group `group` (of `groups`) ends: at `min_end` while the version is not
/// settled, else at the first boundary of the group's phase (tick boundaries `b` with
/// `b / tick ≡ group (mod groups)`) at or after `min_end`, which is less than one full window
/// later.
pub fn window_end(min_end: i64, tick_ms: i64, group: usize, groups: usize, settled: bool) -> i64 {
    if !settled || groups <= 1 {
        return min_end;
    }
    let tick = tick_ms.max(1);
    let slot = min_end.div_euclid(tick) + i64::from(min_end.rem_euclid(tick) != 0);
    let groups = groups as i64;
    let shift = (group as i64 - slot.rem_euclid(groups)).rem_euclid(groups);
    (slot + shift) * tick
}

fn cell_of(conn: &Conn, snap: &SceneSnapshot, grid: Grid) -> Option<u32> {
    conn.position()
        .map(|(x, y)| grid.cell_of(x, y, snap.width, snap.height))
}

/// What `loading` knows a frame by: its hash, its cache sub-key and the grid.
fn load_key(frame: &crate::playback::ShowFrame, sub: u32, grid: Grid) -> (String, u32, Grid) {
    let sub = frame.clip.as_ref().map_or(0, |c| c.cache_sub(sub));
    (frame.sha256.clone(), sub, grid)
}

pub struct Scheduler {
    hub: Arc<Hub>,
    cache: Arc<FrameCache>,
    config: SchedulerConfig,
    runtime: tokio::runtime::Handle,
    scenes: HashMap<Uuid, SceneWork>,
    /// Its own waker: a frame load that completes wakes the scheduler to use it.
    waker: Waker,
    /// Frames being fetched or decoded (by hash, cache sub-key and grid), and since when (a
    /// failed fetch is tried again after a while).
    loading: HashMap<(String, u32, Grid), Instant>,
}

/// How long a frame fetch may take before the scheduler asks for it again.
const RELOAD_AFTER: Duration = Duration::from_secs(5);
/// How long a frame stays in the list of those being fetched or decoded when it never comes.
const FORGET_LOADING_AFTER: Duration = Duration::from_secs(60);
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

    /// One scene's catch-ups, and the regular window of each group where it is due.
    fn serve_scene(&mut self, scene: &Arc<SceneHub>, now: i64) {
        let config = self.config;
        // the flag before the snapshot: a change between the two is then caught next time
        let everyone = scene.needs_catch_up.swap(false, Ordering::AcqRel);
        let snap = scene.snapshot();
        let groups = scene.groups();
        let work = self.scenes.entry(scene.scene_id).or_default();
        work.horizons.resize(groups, now);
        work.picked.resize_with(groups, Vec::new);
        for h in &mut work.horizons {
            *h = (*h).max(now);
        }
        if snap.timeline.version != work.version || work.version_since_ms == 0 {
            // since the version took over (a node that starts serving a show long on sees
            // it settled at once; one that takes over later, from when it was seen), and
            // never before it was seen here less SETTLE_MS
            work.version = snap.timeline.version;
            work.version_since_ms = snap
                .timeline
                .current
                .effective_ms
                .min(now)
                .max(now - SETTLE_MS);
        }
        let settled = now - work.version_since_ms >= SETTLE_MS;
        // frames a catch-up lacked: fetched, but they hold up only those phones' catch-ups
        // (tried again at the next wake-up), never the regular windows
        let mut catch_up_missing = Vec::new();

        // a new version, or phones that joined or moved: [now, horizon) of their group at once
        if everyone {
            scene.clear_catch_ups();
            scene.for_each_conn_by_group(|g, c| work.picked[g].push(c.clone()));
        } else {
            scene.take_catch_ups(|g, c| work.picked[g].push(c.clone()));
        }
        for g in 0..groups {
            let picked = std::mem::take(&mut work.picked[g]);
            let horizon = work.horizons[g];
            if !picked.is_empty() && horizon > now {
                let absent = work.prepare(&snap, &self.cache, now, horizon);
                if absent.is_empty() {
                    work.build_and_send(&snap, now, horizon, &picked);
                } else {
                    // try again on the next wake-up, when the frames are in
                    picked.iter().for_each(|c| c.request_catch_up());
                    if everyone {
                        scene.needs_catch_up.store(true, Ordering::Release);
                    }
                    catch_up_missing.extend(absent);
                }
            }
            let mut picked = picked;
            picked.clear();
            work.picked[g] = picked;
        }

        // the regular windows: due when the phones' coverage would run short of the
        // lookahead before the next tick (half a tick of slack for timer jitter); so each
        // window reaches the phones a full lookahead before it starts
        let target = now + config.lookahead_ms;
        let mut missing = Vec::new();
        for g in 0..groups {
            let from = work.horizons[g];
            if from >= target + config.tick_ms / 2 || !missing.is_empty() {
                continue;
            }
            let to = window_end(target + config.tick_ms, config.tick_ms, g, groups, settled);
            missing = work.prepare(&snap, &self.cache, from, to);
            // Wait for missing frames while they load; a frame the store has not given
            // within LOAD_PATIENCE is shown as idle colour instead, so one unreadable frame
            // does not stop the whole show.
            // (a clip's frame is waited for while the phones still hold show: a decoder
            // that starts at a seek may need more than LOAD_PATIENCE to get there)
            let running_short = from < now + config.tick_ms;
            let given_up = snap.show.as_ref().is_some_and(|show| {
                missing.iter().any(|&(i, sub)| {
                    let frame = &show.frames[i];
                    self.loading
                        .get(&load_key(frame, sub, snap.grid))
                        .is_some_and(|since| since.elapsed() > LOAD_PATIENCE)
                        && (frame.clip.is_none() || running_short)
                })
            });
            if missing.is_empty() || given_up {
                if !missing.is_empty() {
                    tracing::warn!(scene_id = %scene.scene_id, frames = missing.len(), "frames not loaded in time; shown as idle");
                    missing.clear();
                }
                if !work.all_idle() {
                    scene.with_group(g, |conns| work.build_and_send(&snap, from, to, conns));
                }
                work.horizons[g] = to;
                // a clip's decoder is told where the windows have got to, so it stays ahead
                // of them instead of waiting for the next miss
                if let Some((i, sub)) = work.last_clip_frame() {
                    if let Some(frame) = snap.show.as_ref().map(|s| &s.frames[i]) {
                        self.cache
                            .want_clip(frame, sub, snap.grid, Some(self.waker.clone()));
                    }
                }
            }
        }
        missing.extend(catch_up_missing);
        missing.sort_unstable();
        missing.dedup();
        if let Some(show) = &snap.show {
            for (i, sub) in missing {
                let frame = &show.frames[i];
                let key = load_key(frame, sub, snap.grid);
                if frame.clip.is_some() {
                    // a clip's decoder is asked at every wake-up (cheap): it goes on, or
                    // starts where the show is
                    self.loading.entry(key).or_insert_with(Instant::now);
                    self.cache
                        .want_clip(frame, sub, snap.grid, Some(self.waker.clone()));
                    continue;
                }
                let frame = frame.clone();
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
            if scene.conn_count() > 0 {
                self.serve_scene(&scene, now);
            }
        }
        let cache = &self.cache;
        // (a frame given up on, or evicted before it was seen, is forgotten after a while)
        self.loading.retain(|(sha, sub, grid), since| {
            since.elapsed() < FORGET_LOADING_AFTER && !cache.contains_sub(sha, *sub, *grid)
        });
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::dataplane::framecache::{FetchError, FrameSource};
    use crate::playback::{Command, Show, ShowFrame, Timeline};

    /// The recorded case: what every phone was sent for each window, one line per window and
    /// phone (`window phone hex`), as the scheduler built it before windows were phased.
    const RECORDED: &str = "tests/fixtures/scheduler_windows.txt";

    struct NoFrames;

    impl FrameSource for NoFrames {
        fn fetch<'a>(
            &'a self,
            _: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, FetchError>> {
            Box::pin(async { Err("nothing to fetch".into()) })
        }
    }

    /// A 16 × 9 show of 7 frames of uneven lengths, looped, whose colours repeat in places
    /// (so entries merge), played from 1 000 000 000 000 ms; 61 phones at fixed places (edges,
    /// shared cells, one not located).
    type Case = (
        SceneSnapshot,
        FrameCache,
        Vec<Arc<Conn>>,
        Vec<crate::dataplane::hub::ChunkReceiver>,
    );

    fn recorded_case(hub: &Hub) -> Case {
        let durations = [33, 33, 34, 100, 500, 16, 200];
        let show = Show {
            frames: durations
                .iter()
                .enumerate()
                .map(|(i, &d)| ShowFrame {
                    frame_id: Uuid::from_u128(i as u128 + 1),
                    sha256: format!("{i:064x}"),
                    gridfs_id: String::new(),
                    duration_ms: d,
                    width: 16,
                    height: 9,
                    clip: None,
                })
                .collect(),
            looped: true,
        };
        let grid = Grid::for_show(&show);
        let cache = FrameCache::new(Arc::new(NoFrames), 1 << 20);
        for (i, f) in show.frames.iter().enumerate() {
            let i = i as u32;
            let rgb = (0..grid.cells() as u32)
                .map(|c| {
                    let (x, y) = (c % grid.w, c / grid.w);
                    if x < 4 {
                        [10, 20, 30] // a band that never changes
                    } else {
                        [
                            (x * 16 + i) as u8,
                            (y * 28) as u8,
                            ((x + y) * i % 7 * 36) as u8,
                        ]
                    }
                })
                .collect();
            cache.insert(&f.sha256, Arc::new(Raster { grid, rgb }));
        }
        let timeline = Timeline::NEW
            .apply(
                Command::Play {
                    start_at_ms: 1_000_000_000_000,
                    from_ms: 0,
                },
                &show,
            )
            .unwrap();
        let snap = SceneSnapshot {
            width: 160.0,
            height: 90.0,
            idle_rgb: [1, 2, 3],
            show: Some(Arc::new(show)),
            grid,
            timeline,
        };
        let scene = hub.scene_or_insert(Uuid::from_u128(99), || (snap.clone(), 0));
        let (mut conns, mut queues) = (Vec::new(), Vec::new());
        for k in 0..61u32 {
            let position = (k != 60).then(|| ((k * 37 % 170) as f32, (k * 13 % 95) as f32));
            let (conn, rx) =
                hub.connect(&scene, Uuid::from_u128(1000 + u128::from(k)), position, 64);
            conns.push(conn);
            queues.push(rx);
        }
        (snap, cache, conns, queues)
    }

    /// The windows of the case: regular ones, a catch-up's odd length, one across the loop's
    /// end, one before the show starts.
    const WINDOWS: [(i64, i64); 6] = [
        (1_000_000_000_000, 1_000_000_000_500),
        (1_000_000_000_500, 1_000_000_001_000),
        (1_000_000_000_777, 1_000_000_002_011),
        (1_000_000_000_900, 1_000_000_001_900),
        (999_999_999_800, 1_000_000_000_300),
        (1_000_000_004_000, 1_000_000_006_000),
    ];

    fn windows_sent() -> String {
        let hub = Hub::default();
        let (snap, cache, conns, mut queues) = recorded_case(&hub);
        let mut work = SceneWork::default();
        let mut out = String::new();
        for (w, &(from, to)) in WINDOWS.iter().enumerate() {
            assert!(work.prepare(&snap, &cache, from, to).is_empty());
            work.build_and_send(&snap, from, to, &conns);
            for (p, rx) in queues.iter_mut().enumerate() {
                while let Some(bytes) = rx.try_recv() {
                    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    writeln!(out, "{w} {p} {hex}").unwrap();
                }
            }
        }
        out
    }

    /// The bytes a window gives each phone are those recorded (`C3S_RECORD=1` writes them
    /// anew: only when the chunk format itself is meant to change).
    #[test]
    fn windows_are_byte_identical_to_the_recorded_case() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORDED);
        let sent = windows_sent();
        if std::env::var_os("C3S_RECORD").is_some() {
            std::fs::write(&path, &sent).unwrap();
        }
        let recorded = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            sent.lines().count(),
            6 * 60,
            "every located phone, every window"
        );
        for (a, b) in sent.lines().zip(recorded.lines()) {
            assert_eq!(a, b, "a window's bytes differ from the recorded case");
        }
        assert_eq!(sent.lines().count(), recorded.lines().count());
    }

    #[test]
    fn window_ends_keep_each_group_to_its_phase() {
        // not settled, or one group: the window ends where it must
        assert_eq!(window_end(10_250, 500, 3, 4, false), 10_250);
        assert_eq!(window_end(10_250, 500, 3, 1, true), 10_250);
        for g in 0..4 {
            let end = window_end(10_250, 500, g, 4, true);
            assert!((10_250..10_250 + 2000).contains(&end), "{end}");
            assert_eq!(end % 500, 0);
            assert_eq!((end / 500) % 4, g as i64, "group {g} ends on its own ticks");
        }
        assert_eq!(
            window_end(10_500, 500, 1, 4, true),
            10_500,
            "a boundary is its own end"
        );
    }

    /// What each phone holds: the chunks it got, decoded, with the tick they came at.
    struct Seen {
        chunks: Vec<(i64, chunk::Chunk)>,
    }

    /// Ticks the scheduler through `ticks` ticks of 500 ms from `start` on a hub of `groups`
    /// window groups; `at_tick` may change the scene before a tick.
    fn run_ticks(
        groups: usize,
        start: i64,
        ticks: usize,
        mut at_tick: impl FnMut(usize, &SceneHub, &SceneSnapshot),
    ) -> Vec<Seen> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let hub = Arc::new(Hub::new(groups));
        let (snap, cache, _conns, mut queues) = recorded_case(&hub);
        let config = SchedulerConfig {
            tick_ms: 500,
            lookahead_ms: 1500,
            window_ms: 500 * groups as i64,
        };
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let mut scheduler = Scheduler {
            hub: hub.clone(),
            cache: Arc::new(cache),
            config,
            runtime: runtime.handle().clone(),
            scenes: HashMap::new(),
            waker: Waker(tx),
            loading: HashMap::new(),
        };
        let scene = hub.scene(Uuid::from_u128(99)).unwrap();
        let mut seen: Vec<Seen> = queues.iter().map(|_| Seen { chunks: Vec::new() }).collect();
        for t in 0..ticks {
            at_tick(t, &scene, &snap);
            let now = start + 500 * t as i64;
            scheduler.serve_scene(&scene, now);
            for (p, rx) in queues.iter_mut().enumerate() {
                while let Some(bytes) = rx.try_recv() {
                    seen[p].chunks.push((now, chunk::decode(&bytes).unwrap()));
                }
            }
        }
        seen
    }

    /// Once settled, each phone gets one window of `window_ms` per message, a group's windows
    /// fall due on their own ticks (so a tick serves a share of the crowd), and no phone ever
    /// holds less than the lookahead or has a gap.
    #[test]
    fn settled_windows_are_long_phased_and_never_short_of_the_lookahead() {
        let start = 1_000_000_000_000;
        let seen = run_ticks(4, start, 80, |_, _, _| {});
        let located: Vec<&Seen> = seen.iter().filter(|s| !s.chunks.is_empty()).collect();
        assert_eq!(located.len(), 60);
        let mut per_tick: HashMap<i64, usize> = HashMap::new();
        for phone in &located {
            let mut covered_to = i64::MIN;
            for (sent_at, c) in &phone.chunks {
                let end = c.start_ms + i64::from(c.length_ms);
                if covered_to != i64::MIN {
                    assert!(c.start_ms <= covered_to, "a gap before {}", c.start_ms);
                    assert!(end > covered_to);
                }
                covered_to = end;
                assert!(
                    covered_to >= sent_at + 1500,
                    "short of the lookahead at {sent_at}"
                );
                if *sent_at >= start + SETTLE_MS + 2000 {
                    assert_eq!(c.length_ms, 2000, "a settled window is window_ms long");
                    *per_tick.entry(*sent_at).or_default() += 1;
                }
            }
            // covered at every tick, up to the last
            assert!(covered_to >= start + 500 * 79 + 1500);
        }
        // after settling: each phone once per four ticks, a quarter of the phones per tick
        assert!(per_tick.values().all(|&n| n == 15), "{per_tick:?}");
        let ticks_after = 80 - ((SETTLE_MS + 2000) / 500) as usize;
        assert_eq!(per_tick.len(), ticks_after, "a group is due on every tick");
    }

    /// A new version reaches every phone at once (a catch-up of the new version), windows
    /// shrink to a tick while it is new, and grow again once it has held.
    #[test]
    fn a_new_version_is_sent_at_once_and_windows_shrink_then_grow() {
        let start = 1_000_000_000_000;
        let change_tick = 40;
        let seen = run_ticks(4, start, 80, |t, scene, snap| {
            if t == change_tick {
                let show = snap.show.as_ref().unwrap();
                let at = start + 500 * t as i64;
                let timeline = snap
                    .timeline
                    .apply(
                        crate::playback::Command::Seek {
                            position_ms: 100,
                            at_ms: at,
                        },
                        show,
                    )
                    .unwrap();
                scene.set_snapshot(SceneSnapshot {
                    timeline,
                    ..snap.clone()
                });
            }
        });
        let changed_at = start + 500 * change_tick as i64;
        for phone in seen.iter().filter(|s| !s.chunks.is_empty()) {
            let first_new = phone
                .chunks
                .iter()
                .find(|(_, c)| c.version as i64 > snap_version())
                .expect("the new version reached the phone");
            assert_eq!(first_new.0, changed_at, "at the tick of the change");
            assert_eq!(first_new.1.start_ms, changed_at, "from that instant");
            let lengths: Vec<u32> = phone
                .chunks
                .iter()
                .filter(|(at, _)| *at > changed_at && *at < changed_at + SETTLE_MS)
                .map(|(_, c)| c.length_ms)
                .collect();
            assert!(
                lengths.iter().all(|&l| l <= 500),
                "short windows while new: {lengths:?}"
            );
            assert!(phone
                .chunks
                .iter()
                .any(|(at, c)| *at > changed_at + SETTLE_MS && c.length_ms == 2000));
        }
    }

    fn snap_version() -> i64 {
        let hub = Hub::default();
        recorded_case(&hub).0.timeline.version
    }
}
