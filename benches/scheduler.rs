//! The hot path, measured: frame preparation (decode + resample) and one scheduler tick (a
//! window's segments, every cell's chunk, one queued message per phone) for 10k and 100k
//! located phones, all due at once (one window group, a tick's window), and for 100k phones
//! as the server runs them at its defaults once a show has settled (8 window groups of which
//! one is due per tick, each a 4 s window).
//!
//! `cargo bench --bench scheduler` (no stores needed). Criterion prints its statistics; the
//! last line is JSON: `{"bench":"scheduler","tick_10k_ms":..,"tick_100k_ms":..,...}`.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c3s::clock;
use c3s::dataplane::framecache::{FetchError, FrameCache, FrameSource};
use c3s::dataplane::grid::{Grid, Raster};
use c3s::dataplane::hub::{ChunkReceiver, Conn, Hub, SceneSnapshot};
use c3s::dataplane::scheduler::SceneWork;
use c3s::playback::{Command, Show, ShowFrame, Timeline};
use criterion::Criterion;
use image::{ImageFormat, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const FPS: u32 = 30;
const FRAME_PX: u32 = 128;
const WINDOW_MS: i64 = 500;
/// The settled window and its groups at the server's defaults (C3S_WINDOW_MS / C3S_TICK_MS).
const SETTLED_WINDOW_MS: i64 = 4000;
const GROUPS: usize = 8;

fn png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x ^ seed) as u8, (y + seed) as u8, (x * y) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

struct Setup {
    hub: Arc<Hub>,
    snapshot: SceneSnapshot,
    cache: FrameCache,
    receivers: Vec<ChunkReceiver>,
    _conns: Vec<Arc<Conn>>,
}

/// Every frame is in the cache before the tick: nothing is ever fetched.
struct NoFrames;

impl FrameSource for NoFrames {
    fn fetch<'a>(
        &'a self,
        _: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        Box::pin(async { Err("the bench fetches nothing".into()) })
    }
}

fn setup(phones: usize, groups: usize) -> Setup {
    let cache = FrameCache::new(Arc::new(NoFrames), 1 << 30);
    let show = Show {
        frames: (0..FPS)
            .map(|i| ShowFrame {
                frame_id: Uuid::new_v4(),
                sha256: format!("{i:064x}"),
                gridfs_id: String::new(),
                duration_ms: 1000 / FPS,
                width: FRAME_PX,
                height: FRAME_PX,
                clip: None,
            })
            .collect(),
        looped: true,
    };
    let grid = Grid::for_show(&show);
    for (i, f) in show.frames.iter().enumerate() {
        let raster = Raster::from_image_bytes(&png(FRAME_PX, FRAME_PX, i as u32), grid).unwrap();
        cache.insert(&f.sha256, Arc::new(raster));
    }
    let timeline = Timeline::NEW
        .apply(
            Command::Play {
                start_at_ms: 0,
                from_ms: 0,
            },
            &show,
        )
        .unwrap();
    let snapshot = SceneSnapshot {
        width: 100.0,
        height: 100.0,
        idle_rgb: [0, 0, 0],
        show: Some(Arc::new(show)),
        grid,
        timeline,
    };
    let hub = Arc::new(Hub::new(groups));
    let scene = hub.scene_or_insert(Uuid::new_v4(), || (snapshot.clone(), 0));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut receivers = Vec::with_capacity(phones);
    let mut conns = Vec::with_capacity(phones);
    for _ in 0..phones {
        let pos = (rng.gen_range(0.0..100.0), rng.gen_range(0.0..100.0));
        let (conn, rx) = hub.connect(&scene, Uuid::new_v4(), Some(pos), 8);
        conn.take_catch_up();
        receivers.push(rx);
        conns.push(conn);
    }
    Setup {
        hub,
        snapshot,
        cache,
        receivers,
        _conns: conns,
    }
}

/// One tick's work for the scene: prepare the window, build and queue the chunk of every
/// phone of the group due.
fn tick(s: &Setup, work: &mut SceneWork, from: i64, window_ms: i64, group: usize) -> usize {
    let scene = &s.hub.scenes()[0];
    let missing = work.prepare(&s.snapshot, &s.cache, from, from + window_ms);
    assert!(missing.is_empty());
    scene.with_group(group, |conns| {
        work.build_and_send(&s.snapshot, from, from + window_ms, conns)
    })
}

fn drain(s: &mut Setup) {
    for rx in &mut s.receivers {
        while rx.try_recv().is_some() {}
    }
}

/// Median wall time of `runs` ticks, in ms: each tick serves the next group (of `groups`)
/// a window of `window_ms`.
fn median_tick_ms(s: &mut Setup, runs: usize, window_ms: i64, groups: usize) -> f64 {
    let mut work = SceneWork::default();
    let mut times = Vec::with_capacity(runs);
    let mut from = clock::now_ms();
    let mut sent_total = 0;
    for run in 0..runs {
        drain(s);
        let started = Instant::now();
        sent_total += tick(s, &mut work, from, window_ms, run % groups);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        from += window_ms / groups as i64;
    }
    assert_eq!(
        sent_total,
        s.receivers.len() * runs / groups,
        "every phone got its chunk when its group was due"
    );
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median wall time of building a window's chunks when no phone is located.
fn median_tick_ms_unsent(s: &mut Setup, runs: usize) -> f64 {
    let mut work = SceneWork::default();
    let mut times = Vec::with_capacity(runs);
    let mut from = clock::now_ms();
    for _ in 0..runs {
        let started = Instant::now();
        assert_eq!(tick(s, &mut work, from, WINDOW_MS, 0), 0);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        from += WINDOW_MS;
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));

    let big = png(1920, 1080, 3);
    let grid = Grid { w: 512, h: 288 };
    criterion.bench_function("prepare_frame_1080p_to_512x288", |b| {
        b.iter(|| Raster::from_image_bytes(&big, grid).unwrap())
    });
    let started = Instant::now();
    let runs = 10;
    for _ in 0..runs {
        Raster::from_image_bytes(&big, grid).unwrap();
    }
    let prepare_ms = started.elapsed().as_secs_f64() * 1000.0 / runs as f64;

    let mut figures = Vec::new();
    for phones in [10_000usize, 100_000] {
        let mut s = setup(phones, 1);
        let mut work = SceneWork::default();
        let mut from = clock::now_ms();
        criterion.bench_function(&format!("tick_{}k_phones", phones / 1000), |b| {
            // queues are emptied between ticks, outside the measured time
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    drain(&mut s);
                    from += WINDOW_MS;
                    let started = Instant::now();
                    tick(&s, &mut work, from, WINDOW_MS, 0);
                    total += started.elapsed();
                }
                total
            })
        });
        figures.push(median_tick_ms(&mut s, 30, WINDOW_MS, 1));
    }
    let mut s = setup(100_000, GROUPS);
    let phased_ms = median_tick_ms(&mut s, 32, SETTLED_WINDOW_MS, GROUPS);
    drop(s);
    // the build alone: every cell's chunk, for phones none of which is located (nothing sent)
    // (twice the grid's cells: every cell is built up front)
    let mut s = setup(40_000, 1);
    s._conns.iter().for_each(|c| c.set_position(None));
    let build_only_ms = median_tick_ms_unsent(&mut s, 30);
    criterion.final_summary();
    println!(
        "{}",
        serde_json::json!({
            "bench": "scheduler",
            "fps": FPS,
            "window_ms": WINDOW_MS,
            "grid": format!("{FRAME_PX}x{FRAME_PX}"),
            "prepare_frame_1080p_ms": (prepare_ms * 100.0).round() / 100.0,
            "tick_10k_ms": (figures[0] * 1000.0).round() / 1000.0,
            "tick_100k_ms": (figures[1] * 1000.0).round() / 1000.0,
            "tick_100k_phased_ms": (phased_ms * 1000.0).round() / 1000.0,
            "settled_window_ms": SETTLED_WINDOW_MS,
            "groups": GROUPS,
            "build_all_cells_ms": (build_only_ms * 1000.0).round() / 1000.0,
        })
    );
}
