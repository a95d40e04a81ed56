//! Reading a flash session from a clip: every phone's blob, its code word and where it is in
//! the picture. Pure computation on decoded grey frames (`video` gets them from FFmpeg), on
//! `threads` threads; nothing here waits on anything.
//!
//! 1. **Camera shake**: each frame's shift against the middle frame, from its row and column
//!    profiles (high-passed, so the stands' structure leads and the flashing averages out).
//! 2. **Blobs from temporal statistics**: every pixel's standard deviation over the whole
//!    clip, aligned; a lit-and-dark screen is a bright spot in that map whatever its mean
//!    brightness; spots above the noise floor grow into regions, brightest first.
//! 3. **Each blob's brightness over time**: its region's pixels weighted by their deviation,
//!    sampled with the frame's sub-pixel shift.
//! 4. **The symbol clock**: all blobs normalised and added up show the preamble every phone
//!    shows at once; the session's start instant (and the camera's exposure time) is where
//!    the model of that preamble fits the sum best.
//! 5. **Each blob's code word**: its own timing offset (the phone's clock error, the rolling
//!    shutter's row delay) is searched around the session clock; each slot's brightness is the
//!    mean of the frames whose exposure lies within it; the preamble must be there and every
//!    3-of-6 group clear ([`super::code::read`]), else the blob is unreadable.

use std::ops::Range;

use super::code::{self, Read, ReadError, DATA_AT, DATA_SLOTS, PREAMBLE, PREAMBLE_AT, SLOTS};

/// Decoded grey frames of one clip.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Size of a stored frame (the video's, divided by `scale`).
    pub width: usize,
    pub height: usize,
    /// Video pixels per stored pixel along each axis (1, or 2 for large videos).
    pub scale: f64,
    /// The frames, one after another, row by row, one byte a pixel.
    pub pixels: Vec<u8>,
    /// Each frame's presentation time, in seconds from the first.
    pub times: Vec<f64>,
    /// The decoder's largest resident memory while it ran, in bytes (0: not known).
    pub decoder_peak_bytes: u64,
}

impl Clip {
    pub fn frames(&self) -> usize {
        self.times.len()
    }

    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.width * self.height;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Seconds between frames, typically (the median: dropped frames make gaps).
    pub fn frame_interval(&self) -> f64 {
        let mut d: Vec<f64> = self.times.windows(2).map(|w| w[1] - w[0]).collect();
        if d.is_empty() {
            return 1.0 / 30.0;
        }
        d.sort_by(f64::total_cmp);
        d[d.len() / 2].max(1e-3)
    }
}

/// Why a blob gave no code word.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unread {
    /// It does not show the session's preamble: a light, a screen of something else, or a
    /// phone not in this session.
    NoPreamble,
    /// A 3-of-6 group is not clear: the phone was hidden for part of the clip, too dim or
    /// too small to read.
    Unclear,
}

/// One blob of the clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    /// Its centre, in video pixels (continuous: pixel (0, 0) covers [0, 1) × [0, 1)).
    pub x: f64,
    pub y: f64,
    /// Stored pixels in its region.
    pub area: usize,
    pub read: Result<Read, Unread>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub blobs: Vec<Blob>,
    /// Where the session starts in the clip, in seconds from its first frame.
    pub session_start_s: f64,
    /// The camera's exposure time as fitted, in seconds.
    pub exposure_s: f64,
    /// How well the preamble model fits the sum of the blobs (a correlation, 0 to 1).
    pub clock_fit: f64,
    /// The largest camera shake found, in video pixels.
    pub max_shake_px: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    #[error("the clip is {clip_s:.1} s long; the session lasts {session_s:.1} s: film from before the phones start flashing until after they stop")]
    TooShort { clip_s: f64, session_s: f64 },
    #[error("no flashing phones were found in the clip")]
    NoBlobs,
    #[error("no phone of this session was seen flashing in the clip (fit {fit:.2}): film the crowd during the whole session, from before the phones start flashing until after they stop")]
    NoSession { fit: f64 },
}

/// Largest shake searched, in stored pixels each way.
const MAX_SHIFT: usize = 6;
/// A blob's region stops growing at this many stored pixels (an LED wall is many regions).
const MAX_REGION: usize = 256;
/// Region pixels keep at least this share of their peak's deviation.
const REGION_SHARE: f32 = 0.5;
/// Two neighbouring pixels are of one screen when their brightness over time correlates at
/// least this much (two phones' codes share only the preamble: ~0.15).
const MIN_LINK: f32 = 0.75;
/// The noise floor: the background's deviation plus this many of its spreads (its 10 % to
/// 25 % quantiles apart).
const FLOOR_SPREADS: f32 = 6.0;
/// A region's pixel matches the code read from it when their brightness over time correlates
/// this much with what the code shows; a region whose matching pixels carry less than
/// `MIN_PURITY` of the weight within `NEIGHBOURHOOD_PX` of them holds other screens, and is
/// unclear. A phone's own region may also hold pixels that do not match: its edges, which the
/// camera's sub-pixel shake makes flicker (still 75-100 % of the weight near a phone matches
/// in the tests' clips), or a far fragment the region took in (not counted); the centre comes
/// from the matching pixels only.
const PIXEL_MATCH: f64 = 0.5;
const MIN_PURITY: f64 = 0.7;
const NEIGHBOURHOOD_PX: f64 = 1.5;
/// Blobs read from one clip at most, and the memory their brightness series may take.
const MAX_BLOBS: usize = 200_000;
const SERIES_BUDGET_BYTES: usize = 512 << 20;
/// Each blob's own timing offset is searched this far around the session clock, in seconds:
/// the phone's clock error (a few ms, rarely 20) plus the camera's rolling shutter (the last
/// row is exposed up to ~30 ms after the first).
const MAX_OFFSET_S: f64 = 0.045;
/// A blob shows the preamble when its lit preamble slots are all brighter than its dark ones
/// by at least this share of its contrast.
const MIN_PREAMBLE_SEPARATION: f32 = 0.25;
/// A group is clear when its 3rd and 4th brightest slots differ by this share of the
/// blob's contrast.
const MIN_GAP: f32 = 0.2;

/// How long each stage took (for the log), in seconds.
struct Stages(Vec<(&'static str, f64)>, std::time::Instant);

impl Stages {
    fn start() -> Stages {
        Stages(Vec::new(), std::time::Instant::now())
    }

    fn lap(&mut self, stage: &'static str) {
        self.0.push((stage, self.1.elapsed().as_secs_f64()));
        self.1 = std::time::Instant::now();
    }
}

/// Runs `work` over `0..n` split into one range per thread; the results in order.
fn parallel<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(Range<usize>) -> Vec<T> + Sync,
) -> Vec<T> {
    let threads = threads.clamp(1, 16).min(n.max(1));
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                scope.spawn(move || work(t * per..((t + 1) * per).min(n)))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("analysis thread"))
            .collect()
    })
}

/// Reads every phone of a flash session (slots of `symbol_s` seconds) in `clip`. Centres are
/// given in the frame shown at `still_s` (the still the observer marked the reference
/// points on: the camera may have moved since); NaN: the session's middle.
pub fn analyze(
    clip: &Clip,
    symbol_s: f64,
    still_s: f64,
    threads: usize,
) -> Result<Analysis, AnalysisError> {
    let session_s = SLOTS as f64 * symbol_s;
    let clip_s = clip.times.last().copied().unwrap_or(0.0) + clip.frame_interval();
    if clip.frames() < 2 || clip_s < session_s {
        return Err(AnalysisError::TooShort { clip_s, session_s });
    }
    // the shake: where the flashing points are in each frame; found from the unaligned clip
    // (each phone smeared along its shake), then once more from the clip so aligned
    let mut timer = Stages::start();
    let unaligned = vec![(0.0, 0.0); clip.frames()];
    let mut shifts = shake(clip, &deviation(clip, &unaligned, threads), threads);
    shifts = shake(clip, &deviation(clip, &shifts, threads), threads);
    timer.lap("shake");
    let stats = statistics(clip, &shifts, threads, true);
    timer.lap("statistics");
    let mut regions = regions(
        &stats.deviation,
        Some((&stats.right, &stats.down)),
        clip.width,
        clip.height,
    );
    // the brightest regions only, as many as the series of their brightness fit in
    // `SERIES_BUDGET_BYTES` (a clip of a million flashing dots is not a crowd to read whole)
    let most = (SERIES_BUDGET_BYTES / (clip.frames() * 4).max(1)).min(MAX_BLOBS);
    regions.truncate(most);
    if regions.is_empty() {
        return Err(AnalysisError::NoBlobs);
    }
    let series: Vec<Vec<f32>> = parallel(regions.len(), threads, |range| {
        range
            .map(|i| brightness(clip, &shifts, &regions[i]))
            .collect()
    });
    let (start, exposure, fit) = session_clock(clip, &series, symbol_s);
    if fit < 0.3 {
        return Err(AnalysisError::NoSession { fit });
    }
    timer.lap("clock");
    let offsets = Offsets::new(clip, start, exposure, symbol_s);
    let (mut reads, tried): (Vec<Result<Read, Unread>>, Vec<usize>) =
        parallel(series.len(), threads, |range| {
            range.map(|i| offsets.read(&series[i])).collect()
        })
        .into_iter()
        .unzip();
    timer.lap("read");
    let centres = verify(
        clip, &shifts, &regions, &offsets, &mut reads, &tried, threads,
    );
    timer.lap("verify");
    tracing::debug!(blobs = regions.len(), stages = ?timer.0, "clip analysed");
    // a clip of something else can fit the clock by chance; it has no blob with the preamble
    if reads.iter().all(|r| matches!(r, Err(Unread::NoPreamble))) {
        return Err(AnalysisError::NoSession { fit });
    }
    let scale = clip.scale;
    // no still said: the session's middle (every frame there has phones lit to align on)
    let still_s = if still_s.is_finite() {
        still_s
    } else {
        start + session_s / 2.0
    };
    let still = clip
        .times
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - still_s).abs().total_cmp(&(b.1 - still_s).abs()))
        .map_or(0, |(i, _)| i);
    let (sx, sy) = shifts[still];
    let blobs = merge_split_reads(
        regions
            .iter()
            .zip(reads)
            .zip(centres)
            .map(|((r, read), centre)| {
                // a read blob's centre from its pixels that match its code
                let (cx, cy) = centre.unwrap_or((r.cx, r.cy));
                Blob {
                    x: (cx + sx + 0.5) * scale,
                    y: (cy + sy + 0.5) * scale,
                    area: r.pixels.len(),
                    read,
                }
            })
            .collect(),
        scale,
    );
    let max_shake_px = shifts
        .iter()
        .map(|&(x, y)| x.hypot(y) * scale)
        .fold(0.0, f64::max);
    Ok(Analysis {
        blobs,
        session_start_s: start,
        exposure_s: exposure,
        clock_fit: fit,
        max_shake_px,
    })
}

/// One phone's screen can grow into two regions (a bright centre, a dimmer rim): two reads of
/// the same code within a few pixels of each other are one phone, kept once (its stronger
/// region's). Reads of one code far apart stay: the caller refuses them as duplicates.
fn merge_split_reads(mut blobs: Vec<Blob>, scale: f64) -> Vec<Blob> {
    let mut by_code: std::collections::HashMap<u64, Vec<usize>> = Default::default();
    for (i, b) in blobs.iter().enumerate() {
        if let Ok(r) = &b.read {
            by_code.entry(r.code).or_default().push(i);
        }
    }
    let mut dropped = vec![false; blobs.len()];
    for found in by_code.values().filter(|v| v.len() > 1) {
        // the first is the strongest (regions come brightest first)
        let keep = found[0];
        let reach = |i: usize| (blobs[i].area as f64).sqrt() * scale + 2.0 * scale;
        for &i in found {
            let d = (blobs[i].x - blobs[keep].x).hypot(blobs[i].y - blobs[keep].y);
            if i != keep && d <= reach(keep).max(reach(i)) {
                dropped[i] = true;
            }
        }
    }
    let mut i = 0;
    blobs.retain(|_| {
        i += 1;
        !dropped[i - 1]
    });
    blobs
}

// ------------------------------------------------------------------ 1. camera shake

/// The flashing points a frame's shift is found from, at most.
const SHAKE_POINTS: usize = 4000;
/// A frame's shift is trusted when, at its best shift, its points are on average this much
/// brighter (grey levels) than at the median shift: a frame in which every phone is dark
/// shows nothing to align.
const SHAKE_MIN_EXCESS: f64 = 8.0;

/// Each frame's shift, in stored pixels, against where the flashing points are on average
/// (content at reference point p is at p + shift in that frame).
///
/// The points are the centres of the deviation map's blobs (the phones); in a frame, the lit ones among them are brightest where the frame is shifted
/// right: the shift whose points sum brightest wins, refined to a fraction of a pixel. This
/// needs no texture in the stands (a stadium at night has none), and the flashing that would
/// fool an estimate from the background is what it aligns on. A frame with nothing lit (the
/// guards, before and after the session) takes its shift from the nearest frames that had.
fn shake(clip: &Clip, deviation: &[f32], threads: usize) -> Vec<(f64, f64)> {
    let (w, h) = (clip.width, clip.height);
    // one point a blob, at its centre (a smeared blob has several peaks along its path)
    let mut points: Vec<u32> = regions(deviation, None, w, h)
        .iter()
        .map(|r| (r.cy.round() as usize * w + r.cx.round() as usize) as u32)
        .collect();
    points.truncate(SHAKE_POINTS);
    let n = clip.frames();
    if points.is_empty() {
        return vec![(0.0, 0.0); n];
    }
    let r = MAX_SHIFT as isize;
    let side = (2 * r + 1) as usize;
    let found: Vec<Option<(f64, f64)>> = parallel(n, threads, |range| {
        range
            .map(|f| {
                let frame = clip.frame(f);
                let mut scores = vec![0f64; side * side];
                for &p in &points {
                    let (px, py) = ((p as usize % w) as isize, (p as usize / w) as isize);
                    for dy in -r..=r {
                        let y = py + dy;
                        if y < 0 || y >= h as isize {
                            continue;
                        }
                        let row = &frame[y as usize * w..(y as usize + 1) * w];
                        for dx in -r..=r {
                            let x = px + dx;
                            if x >= 0 && x < w as isize {
                                scores[(dy + r) as usize * side + (dx + r) as usize] +=
                                    f64::from(row[x as usize]);
                            }
                        }
                    }
                }
                let best = (0..scores.len())
                    .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                    .expect("shifts to try");
                let mut sorted = scores.clone();
                sorted.sort_by(f64::total_cmp);
                let median = sorted[sorted.len() / 2];
                if (scores[best] - median) / (points.len() as f64) < SHAKE_MIN_EXCESS {
                    return None;
                }
                let (bx, by) = (best % side, best / side);
                let refine = |a: f64, b: f64, c: f64| {
                    let d = a - 2.0 * b + c;
                    if d < -1e-9 {
                        (0.5 * (a - c) / d).clamp(-0.5, 0.5)
                    } else {
                        0.0
                    }
                };
                let sx = if bx > 0 && bx + 1 < side {
                    refine(scores[best - 1], scores[best], scores[best + 1])
                } else {
                    0.0
                };
                let sy = if by > 0 && by + 1 < side {
                    refine(scores[best - side], scores[best], scores[best + side])
                } else {
                    0.0
                };
                Some((bx as f64 - r as f64 + sx, by as f64 - r as f64 + sy))
            })
            .collect()
    });
    // frames that showed nothing to align: the nearest that did (linear between two)
    let known: Vec<usize> = (0..n).filter(|&f| found[f].is_some()).collect();
    if known.is_empty() {
        return vec![(0.0, 0.0); n];
    }
    (0..n)
        .map(|f| {
            if let Some(s) = found[f] {
                return s;
            }
            let after = known.partition_point(|&k| k < f);
            match (after.checked_sub(1).map(|i| known[i]), known.get(after)) {
                (Some(a), Some(&b)) => {
                    let (sa, sb) = (found[a].expect("known"), found[b].expect("known"));
                    let t = (f - a) as f64 / (b - a) as f64;
                    (sa.0 + (sb.0 - sa.0) * t, sa.1 + (sb.1 - sa.1) * t)
                }
                (Some(a), None) => found[a].expect("known"),
                (None, Some(&b)) => found[b].expect("known"),
                (None, None) => (0.0, 0.0),
            }
        })
        .collect()
}

/// The deviation map's background level and its noise floor. The background is taken from
/// the lower quarter of the map: in a dense crowd a third of the pixels or more belong to
/// phones, which would lift a median-based floor above the dimmest of them.
fn noise_floor(deviation: &[f32]) -> (f32, f32) {
    let mut sample: Vec<f32> = deviation.iter().step_by(7).copied().collect();
    let low = select(&mut sample, 0.1);
    let quarter = select(&mut sample, 0.25);
    let spread = (quarter - low).max(0.25);
    (quarter, quarter + FLOOR_SPREADS * spread)
}

// ------------------------------------------------------------------ 2. blobs

/// Every stored pixel's standard deviation over the clip, frames aligned (integer shifts).
fn deviation(clip: &Clip, shifts: &[(f64, f64)], threads: usize) -> Vec<f32> {
    statistics(clip, shifts, threads, false).deviation
}

/// Per-pixel temporal statistics of the aligned clip.
struct Statistics {
    deviation: Vec<f32>,
    /// How alike each pixel's brightness over time is to its right and lower neighbours'
    /// (a correlation): high within one phone's screen, low between two phones.
    right: Vec<f32>,
    down: Vec<f32>,
}

/// The deviation map, and with `links` the neighbour correlations too (one pass over the
/// frames either way).
fn statistics(clip: &Clip, shifts: &[(f64, f64)], threads: usize, links: bool) -> Statistics {
    let (w, h) = (clip.width, clip.height);
    let rounded: Vec<(isize, isize)> = shifts
        .iter()
        .map(|&(x, y)| (x.round() as isize, y.round() as isize))
        .collect();
    // per row: the frames counted, and each pixel's sums of v, v², v·right, v·below
    // (u64: a long clip's sums of squares pass what 32 bits hold)
    type Sums = (u32, Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>);
    let rows: Vec<Sums> = parallel(h, threads, |range| {
        let mut out = Vec::with_capacity(range.len());
        for y in range {
            let (mut sum, mut squares) = (vec![0u64; w], vec![0u64; w]);
            let (mut right, mut down) = if links {
                (vec![0u64; w], vec![0u64; w])
            } else {
                (Vec::new(), Vec::new())
            };
            let mut counted = 0u32;
            for (f, &(dx, dy)) in rounded.iter().enumerate() {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize || (links && sy + 1 >= h as isize) {
                    continue;
                }
                counted += 1;
                let frame = clip.frame(f);
                let row = &frame[sy as usize * w..(sy as usize + 1) * w];
                let (from, to) = (dx.max(0) as usize, (w as isize + dx.min(0)) as usize);
                let at = (from as isize - dx) as usize;
                for (i, &v) in row[from..to].iter().enumerate() {
                    let v = u64::from(v);
                    sum[at + i] += v;
                    squares[at + i] += v * v;
                }
                if links {
                    let below = &frame[(sy as usize + 1) * w..(sy as usize + 2) * w];
                    for i in 0..to - from {
                        let x = from + i;
                        let v = u64::from(row[x]);
                        if x + 1 < w {
                            right[at + i] += v * u64::from(row[x + 1]);
                        }
                        down[at + i] += v * u64::from(below[x]);
                    }
                }
            }
            out.push((counted, sum, squares, right, down));
        }
        out
    });
    let mut mean = vec![0f32; w * h];
    let mut deviation = vec![0f32; w * h];
    for (y, (n, sum, squares, _, _)) in rows.iter().enumerate() {
        let k = (*n).max(1) as f32;
        for x in 0..w {
            let m = sum[x] as f32 / k;
            mean[y * w + x] = m;
            deviation[y * w + x] = (squares[x] as f32 / k - m * m).max(0.0).sqrt();
        }
    }
    let (mut right, mut down) = (Vec::new(), Vec::new());
    if links {
        right = vec![0f32; w * h];
        down = vec![0f32; w * h];
        let corr = |xy: u64, k: f32, a: usize, b: usize| {
            let cov = xy as f32 / k - mean[a] * mean[b];
            let sd = deviation[a] * deviation[b];
            if sd > 1e-3 {
                cov / sd
            } else {
                0.0
            }
        };
        for (y, (n, _, _, r, d)) in rows.iter().enumerate() {
            let k = (*n).max(1) as f32;
            for x in 0..w {
                let i = y * w + x;
                if x + 1 < w {
                    right[i] = corr(r[x], k, i, i + 1);
                }
                if y + 1 < h {
                    down[i] = corr(d[x], k, i, i + w);
                }
            }
        }
    }
    Statistics {
        deviation,
        right,
        down,
    }
}

/// A blob's region: its pixels with their weights, and its weighted centre (stored pixels).
#[derive(Debug, Clone)]
struct Region {
    pixels: Vec<(u32, f32)>,
    cx: f64,
    cy: f64,
}

/// Regions of high deviation: peaks of the smoothed map above the noise floor, each grown
/// over its neighbours that keep half its deviation, brightest peak first; with `links`
/// (the neighbour correlations) only between pixels that flash alike, so two phones whose
/// blurred screens touch stay two regions.
fn regions(deviation: &[f32], links: Option<(&[f32], &[f32])>, w: usize, h: usize) -> Vec<Region> {
    if w < 3 || h < 3 {
        return Vec::new();
    }
    let (median, floor) = noise_floor(deviation);
    // a light smoothing (the pixel, half its four neighbours): noise is tamed, and two
    // phones a few pixels apart keep a valley between them
    let mut smooth = vec![0f32; w * h];
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let cross = deviation[i - 1] + deviation[i + 1] + deviation[i - w] + deviation[i + w];
            smooth[i] = (deviation[i] * 4.0 + cross) / 8.0;
        }
    }
    let mut peaks: Vec<u32> = Vec::new();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let v = smooth[i];
            if v <= floor {
                continue;
            }
            // a peak is above its earlier neighbours and not below its later ones (so a
            // flat top gives one peak)
            let earlier = [i - w - 1, i - w, i - w + 1, i - 1];
            let later = [i + 1, i + w - 1, i + w, i + w + 1];
            if earlier.iter().all(|&j| v > smooth[j]) && later.iter().all(|&j| v >= smooth[j]) {
                peaks.push(i as u32);
            }
        }
    }
    peaks.sort_by(|&a, &b| smooth[b as usize].total_cmp(&smooth[a as usize]));
    let mut owner = vec![u32::MAX; w * h];
    let mut grown: Vec<Vec<u32>> = Vec::new();
    let mut queue = Vec::new();
    for &peak in &peaks {
        if owner[peak as usize] != u32::MAX {
            continue;
        }
        let id = grown.len() as u32;
        let keep = (smooth[peak as usize] * REGION_SHARE).max(floor);
        queue.clear();
        queue.push(peak);
        owner[peak as usize] = id;
        let mut pixels = Vec::new();
        while let Some(p) = queue.pop() {
            pixels.push(p);
            if pixels.len() >= MAX_REGION {
                break;
            }
            let (x, y) = ((p as usize) % w, (p as usize) / w);
            let steps: &[(isize, isize)] = if links.is_some() {
                &[(-1, 0), (1, 0), (0, -1), (0, 1)]
            } else {
                &[
                    (-1, 0),
                    (1, 0),
                    (0, -1),
                    (0, 1),
                    (-1, -1),
                    (1, -1),
                    (-1, 1),
                    (1, 1),
                ]
            };
            for &(dx, dy) in steps {
                let (nx, ny) = (x as isize + dx, y as isize + dy);
                if nx < 1 || ny < 1 || nx >= w as isize - 1 || ny >= h as isize - 1 {
                    continue;
                }
                let q = ny as usize * w + nx as usize;
                let alike = links.is_none_or(|(right, down)| {
                    let link = match (dx, dy) {
                        (1, 0) => right[p as usize],
                        (-1, 0) => right[q],
                        (0, 1) => down[p as usize],
                        _ => down[q],
                    };
                    link >= MIN_LINK
                });
                if owner[q] == u32::MAX && smooth[q] >= keep && alike {
                    owner[q] = id;
                    queue.push(q as u32);
                }
            }
        }
        grown.push(pixels);
    }
    // fragments of one screen (a big phone's centre and rim grew apart) flash alike across
    // their border: joined again; two phones do not
    if let Some((right, down)) = links {
        let mut parent: Vec<u32> = (0..grown.len() as u32).collect();
        fn root(parent: &mut [u32], mut i: u32) -> u32 {
            while parent[i as usize] != i {
                parent[i as usize] = parent[parent[i as usize] as usize];
                i = parent[i as usize];
            }
            i
        }
        for (a, pixels) in grown.iter().enumerate() {
            for &p in pixels {
                let p = p as usize;
                for (q, link) in [(p + 1, right[p]), (p + w, down[p])] {
                    let b = owner.get(q).copied().unwrap_or(u32::MAX);
                    if b == u32::MAX || b == a as u32 || link < MIN_LINK {
                        continue;
                    }
                    let (ra, rb) = (root(&mut parent, a as u32), root(&mut parent, b));
                    // the stronger (earlier) fragment names the joined region
                    if ra != rb {
                        parent[ra.max(rb) as usize] = ra.min(rb);
                    }
                }
            }
        }
        let mut joined: Vec<Vec<u32>> = vec![Vec::new(); grown.len()];
        for (i, pixels) in grown.iter_mut().enumerate() {
            let r = root(&mut parent, i as u32) as usize;
            joined[r].extend(std::mem::take(pixels));
        }
        grown = joined.into_iter().filter(|p| !p.is_empty()).collect();
    }
    grown
        .into_iter()
        .map(|pixels| {
            let weighted: Vec<(u32, f32)> = pixels
                .iter()
                .map(|&p| (p, (deviation[p as usize] - median).max(0.0) + 1e-3))
                .collect();
            // the centre from the region's core only (its pixels above half its brightest):
            // a halo that grew further on one side does not pull it
            let top = weighted.iter().map(|&(_, wt)| wt).fold(0.0f32, f32::max);
            let core = |wt: f32| f64::from((wt - 0.5 * top).max(0.0)) + 1e-9;
            let total: f64 = weighted.iter().map(|&(_, wt)| core(wt)).sum();
            let (sx, sy) = weighted.iter().fold((0.0, 0.0), |(a, b), &(p, wt)| {
                let wt = core(wt);
                (
                    a + wt * (p as usize % w) as f64,
                    b + wt * (p as usize / w) as f64,
                )
            });
            Region {
                pixels: weighted,
                cx: sx / total,
                cy: sy / total,
            }
        })
        .collect()
}

/// The `q` quantile of `v` (reorders it).
fn select(v: &mut [f32], q: f64) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let k = ((v.len() - 1) as f64 * q) as usize;
    *v.select_nth_unstable_by(k, f32::total_cmp).1
}

// ------------------------------------------------------------------ 3. brightness over time

/// A region's brightness (its pixels' mean, weighted by their deviation) in every frame,
/// following the camera's shake.
fn brightness(clip: &Clip, shifts: &[(f64, f64)], region: &Region) -> Vec<f32> {
    let (w, h) = (clip.width as f64, clip.height as f64);
    let total: f32 = region
        .pixels
        .iter()
        .map(|&(_, wt)| wt)
        .sum::<f32>()
        .max(1e-6);
    (0..clip.frames())
        .map(|f| {
            let frame = clip.frame(f);
            let (dx, dy) = shifts[f];
            let mut s = 0f32;
            for &(p, wt) in &region.pixels {
                let x = (p as usize % clip.width) as f64 + dx;
                let y = (p as usize / clip.width) as f64 + dy;
                if x < 0.0 || y < 0.0 || x >= w - 1.0 || y >= h - 1.0 {
                    continue;
                }
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = ((x - x0) as f32, (y - y0) as f32);
                let i = y0 as usize * clip.width + x0 as usize;
                let v = (f32::from(frame[i]) * (1.0 - fx) + f32::from(frame[i + 1]) * fx)
                    * (1.0 - fy)
                    + (f32::from(frame[i + clip.width]) * (1.0 - fx)
                        + f32::from(frame[i + clip.width + 1]) * fx)
                        * fy;
                s += wt * v;
            }
            s / total
        })
        .collect()
}

// ------------------------------------------------------------------ 4. the symbol clock

/// What share of the slots' phones are lit, on average: 0 or 1 in the guards and the
/// preamble (every phone alike), ½ in the data.
fn lit_share(slot: usize) -> f64 {
    match slot {
        s if (PREAMBLE_AT..DATA_AT).contains(&s) => f64::from(u8::from(PREAMBLE[s - PREAMBLE_AT])),
        s if (DATA_AT..DATA_AT + DATA_SLOTS).contains(&s) => 0.5,
        _ => 0.0,
    }
}

/// The share of an exposure `[t, t + e]` (a point when `e` is 0) that falls in each slot of a
/// session starting at `start`: (slot, share) for the one or two slots it touches; none when
/// any of it is outside the session.
fn exposure_in_slots(t: f64, e: f64, start: f64, symbol_s: f64) -> Option<[(usize, f64); 2]> {
    let (a, b) = ((t - start) / symbol_s, (t + e - start) / symbol_s);
    if a < 0.0 || b >= SLOTS as f64 {
        return None;
    }
    let (sa, sb) = (a.floor() as usize, (b.floor() as usize).min(SLOTS - 1));
    if e <= 0.0 || sa == sb {
        return Some([(sa, 1.0), (sb, 0.0)]);
    }
    // exposures shorter than a slot touch at most two
    let boundary = sb as f64;
    let share_a = ((boundary - a) / (b - a)).clamp(0.0, 1.0);
    Some([(sa, share_a), (sb, 1.0 - share_a)])
}

/// The session's start in the clip, the exposure time, and how well they fit (a correlation
/// between the sum of all blobs and the model of what every phone shows).
fn session_clock(clip: &Clip, series: &[Vec<f32>], symbol_s: f64) -> (f64, f64, f64) {
    let frames = clip.frames();
    // every blob's brightness (grey levels) about its median, added up: a phone swings by
    // a hundred levels or more, a flicker of the codec or the stands by a few, so the phones
    // lead however many of those there are
    let mut sum = vec![0f64; frames];
    for s in series {
        let mut sorted = s.clone();
        let mid = select(&mut sorted, 0.5);
        for (acc, v) in sum.iter_mut().zip(s) {
            *acc += f64::from(v - mid);
        }
    }
    let interval = clip.frame_interval();
    let last = clip.times[frames - 1];
    let session = SLOTS as f64 * symbol_s;
    let fit = |start: f64, e: f64| -> f64 {
        let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (f, &t) in clip.times.iter().enumerate() {
            let Some(parts) = exposure_in_slots(t, e, start, symbol_s) else {
                continue;
            };
            let m: f64 = parts.iter().map(|&(s, share)| share * lit_share(s)).sum();
            let y = sum[f];
            n += 1.0;
            sx += m;
            sy += y;
            sxx += m * m;
            syy += y * y;
            sxy += m * y;
        }
        if n < 8.0 {
            return -1.0;
        }
        let cov = sxy / n - sx / n * sy / n;
        let vx = sxx / n - (sx / n).powi(2);
        let vy = syy / n - (sy / n).powi(2);
        if vx <= 1e-12 || vy <= 1e-12 {
            return -1.0;
        }
        cov / (vx * vy).sqrt()
    };
    let exposures = [0.0, 0.25, 0.5, 0.75].map(|k| k * interval);
    let (from, to) = (clip.times[0] - symbol_s * 0.5, last + interval - session);
    let mut best = (from, 0.0, -1.0);
    let step = symbol_s / 10.0;
    let mut start = from;
    while start <= to {
        for &e in &exposures {
            let r = fit(start, e);
            if r > best.2 {
                best = (start, e, r);
            }
        }
        start += step;
    }
    // refine: ±1 step at 0.5 ms
    let (coarse, e, _) = best;
    let mut start = coarse - step;
    while start <= coarse + step {
        for e in [e, e * 0.8, e * 1.2] {
            let r = fit(start, e);
            if r > best.2 {
                best = (start, e, r);
            }
        }
        start += 0.0005;
    }
    best
}

// ------------------------------------------------------------------ 5. code words

/// For each frame, the one or two slots its exposure falls in, with a weight: the share of
/// the exposure in the slot, to the 4th power, so frames wholly inside a slot lead.
type FrameSlots = Vec<[(u16, f32); 2]>;

/// For each timing offset tried, which frames see which slot and how purely: shared by every
/// blob.
struct Offsets {
    /// (offset, which frames see which slot, how many frames from the first see only the
    /// guard and the preamble)
    tried: Vec<(f64, FrameSlots, usize)>,
    /// Index of the first fine offset (after the coarse ones).
    coarse: usize,
}

const COARSE_STEP_S: f64 = 0.004;
const FINE_STEP_S: f64 = 0.001;

impl Offsets {
    fn new(clip: &Clip, start: f64, exposure: f64, symbol_s: f64) -> Offsets {
        let weights = |offset: f64| -> FrameSlots {
            clip.times
                .iter()
                .map(
                    |&t| match exposure_in_slots(t + offset, exposure, start, symbol_s) {
                        Some([(a, wa), (b, wb)]) => [
                            (a as u16, (wa as f32).powi(4)),
                            (b as u16, (wb as f32).powi(4)),
                        ],
                        None => [(0, 0.0), (0, 0.0)],
                    },
                )
                .collect()
        };
        let with_head = |offset: f64| {
            let w = weights(offset);
            let head = w
                .iter()
                .position(|parts| {
                    parts
                        .iter()
                        .any(|&(slot, wt)| wt > 0.0 && slot as usize >= DATA_AT)
                })
                .unwrap_or(w.len());
            (offset, w, head)
        };
        let steps = (MAX_OFFSET_S / COARSE_STEP_S).round() as i64;
        let mut tried: Vec<(f64, FrameSlots, usize)> = (-steps..=steps)
            .map(|k| with_head(k as f64 * COARSE_STEP_S))
            .collect();
        let coarse = tried.len();
        tried.extend((-steps * 4..=steps * 4).map(|k| with_head(k as f64 * FINE_STEP_S)));
        Offsets { tried, coarse }
    }

    /// The blob's code word: the coarse offset whose preamble shows best (the frames of the
    /// guard and the preamble only: a blob with no preamble at any offset, most of them in a
    /// busy shot, is done with at a seventh of the cost), refined on the whole code, then
    /// read.
    fn read(&self, series: &[f32]) -> (Result<Read, Unread>, usize) {
        let evaluate = |i: usize| slot_values(series, &self.tried[i].1);
        let mut best: Option<(f32, usize)> = None;
        for i in 0..self.coarse {
            let head = self.tried[i].2;
            let values = slot_values(&series[..head], &self.tried[i].1[..head]);
            let separation = head_separation(&values).unwrap_or(-10.0);
            if best.is_none_or(|(s, _)| separation > s) {
                best = Some((separation, i));
            }
        }
        let (separation, coarse) = best.expect("offsets to try");
        if separation < MIN_PREAMBLE_SEPARATION * 0.5 {
            return (Err(Unread::NoPreamble), coarse);
        }
        let centre = self.tried[coarse].0;
        let mut best: Option<(f32, usize)> = None;
        for i in self.coarse..self.tried.len() {
            if (self.tried[i].0 - centre).abs() > COARSE_STEP_S * 0.75 {
                continue;
            }
            let score = score(&evaluate(i));
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        let (_, fine) = best.unwrap_or((0.0, coarse));
        (decide(&evaluate(fine)), fine)
    }

    /// What a blob showing `code` at timing offset `tried` should look like in each frame:
    /// the share of the frame's exposure in lit slots.
    fn model(&self, code: u64, tried: usize) -> Vec<f32> {
        let slots = code::slots(code);
        self.tried[tried]
            .1
            .iter()
            .map(|parts| {
                let total: f32 = parts.iter().map(|&(_, w)| w).sum();
                if total <= 0.0 {
                    return f32::NAN;
                }
                parts
                    .iter()
                    .map(|&(s, w)| if slots[s as usize] { w } else { 0.0 })
                    .sum::<f32>()
                    / total
            })
            .collect()
    }
}

/// A region's pixels are checked against the code read from it: each pixel's brightness over
/// time is correlated with what that code makes the phone show. A region that is mostly
/// another phone's pixels (two screens the camera could not tell apart) is unclear, not
/// placed between them; the centre of one that passes is taken from its pixels that match.
fn verify(
    clip: &Clip,
    shifts: &[(f64, f64)],
    regions: &[Region],
    offsets: &Offsets,
    reads: &mut [Result<Read, Unread>],
    tried: &[usize],
    threads: usize,
) -> Vec<Option<(f64, f64)>> {
    let w = clip.width;
    let rounded: Vec<(isize, isize)> = shifts
        .iter()
        .map(|&(x, y)| (x.round() as isize, y.round() as isize))
        .collect();
    // (blob, the code read from it)
    let checked: Vec<(usize, u64)> = reads
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|r| (i, r.code)))
        .collect();
    let results: Vec<Option<(f64, f64)>> = parallel(checked.len(), threads, |range| {
        range
            .map(|k| {
                let (i, code) = checked[k];
                let model = offsets.model(code, tried[i]);
                let region = &regions[i];
                // each pixel's sums over the frames the model covers: v, v², v·m; and m's
                let mut sums = vec![(0f64, 0f64, 0f64); region.pixels.len()];
                let (mut n, mut sm, mut smm) = (0f64, 0f64, 0f64);
                for (f, &m) in model.iter().enumerate() {
                    if m.is_nan() {
                        continue;
                    }
                    let frame = clip.frame(f);
                    let (dx, dy) = rounded[f];
                    let m = f64::from(m);
                    n += 1.0;
                    sm += m;
                    smm += m * m;
                    for (acc, &(p, _)) in sums.iter_mut().zip(&region.pixels) {
                        let (x, y) = (
                            (p as usize % w) as isize + dx,
                            (p as usize / w) as isize + dy,
                        );
                        if x < 0 || y < 0 || x >= w as isize || y >= clip.height as isize {
                            continue;
                        }
                        let v = f64::from(frame[y as usize * w + x as usize]);
                        acc.0 += v;
                        acc.1 += v * v;
                        acc.2 += v * m;
                    }
                }
                let sd_m = (smm / n - (sm / n).powi(2)).max(0.0).sqrt();
                let corrs: Vec<f64> = sums
                    .iter()
                    .map(|&(sv, svv, svm)| {
                        let sd_v = (svv / n - (sv / n).powi(2)).max(0.0).sqrt();
                        if sd_v * sd_m > 1e-9 {
                            (svm / n - sv / n * sm / n) / (sd_v * sd_m)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let at = |p: u32| ((p as usize % w) as f64, (p as usize / w) as f64);
                // the centre of the matching pixels, weighted by how well they match
                let (mut weight, mut cx, mut cy) = (0f64, 0f64, 0f64);
                for (&corr, &(p, wt)) in corrs.iter().zip(&region.pixels) {
                    if corr >= PIXEL_MATCH {
                        let k = f64::from(wt) * (corr - PIXEL_MATCH);
                        let (x, y) = at(p);
                        weight += k;
                        cx += k * x;
                        cy += k * y;
                    }
                }
                if weight <= 0.0 {
                    return None;
                }
                let (cx, cy) = (cx / weight, cy / weight);
                // the purity is that of the screen around them: a far fragment the region
                // took in does not count, a neighbour's screen touching this one does
                let reach = corrs
                    .iter()
                    .zip(&region.pixels)
                    .filter(|(&corr, _)| corr >= PIXEL_MATCH)
                    .map(|(_, &(p, _))| {
                        let (x, y) = at(p);
                        (x - cx).hypot(y - cy)
                    })
                    .fold(0f64, f64::max)
                    + NEIGHBOURHOOD_PX;
                let (mut matched, mut near) = (0f64, 0f64);
                for (&corr, &(p, wt)) in corrs.iter().zip(&region.pixels) {
                    let (x, y) = at(p);
                    if (x - cx).hypot(y - cy) <= reach {
                        near += f64::from(wt);
                        if corr >= PIXEL_MATCH {
                            matched += f64::from(wt);
                        }
                    }
                }
                (matched / near >= MIN_PURITY).then_some((cx, cy))
            })
            .collect()
    });
    let mut out = vec![None; regions.len()];
    for (k, &(i, _)) in checked.iter().enumerate() {
        out[i] = results[k];
        if results[k].is_none() {
            reads[i] = Err(Unread::Unclear);
        }
    }
    out
}

/// Each slot's brightness: the weighted mean of the frames that see it (NaN: none does).
fn slot_values(series: &[f32], weights: &[[(u16, f32); 2]]) -> [f32; SLOTS] {
    let mut sum = [0f32; SLOTS];
    let mut total = [0f32; SLOTS];
    for (v, parts) in series.iter().zip(weights) {
        for &(slot, w) in parts {
            sum[slot as usize] += w * v;
            total[slot as usize] += w;
        }
    }
    let mut out = [f32::NAN; SLOTS];
    for s in 0..SLOTS {
        if total[s] > 0.05 {
            out[s] = sum[s] / total[s];
        }
    }
    out
}

/// The blob's lit and dark levels from its preamble and guards: (lit mean, dark mean, how
/// far apart the dimmest lit and brightest dark are, as a share of lit − dark).
fn preamble(values: &[f32; SLOTS]) -> Option<(f32, f32, f32)> {
    levels(values, &[0, SLOTS - 1])
}

/// How far apart the dimmest lit and the brightest dark of the first guard and the preamble
/// are, as a share of lit − dark (the other slots need not be known).
fn head_separation(values: &[f32; SLOTS]) -> Option<f32> {
    levels(values, &[0]).map(|(_, _, separation)| separation)
}

/// The preamble's slots with the dark `guards`: (lit mean, dark mean, separation).
fn levels(values: &[f32; SLOTS], guards: &[usize]) -> Option<(f32, f32, f32)> {
    let mut lit = Vec::new();
    let mut dark: Vec<f32> = guards.iter().map(|&g| values[g]).collect();
    for (i, &on) in PREAMBLE.iter().enumerate() {
        let v = values[PREAMBLE_AT + i];
        if on {
            lit.push(v);
        } else {
            dark.push(v);
        }
    }
    if lit.iter().chain(&dark).any(|v| v.is_nan()) {
        return None;
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (l, d) = (mean(&lit), mean(&dark));
    let contrast = l - d;
    if contrast <= 0.0 {
        return None;
    }
    let dimmest = lit.iter().copied().fold(f32::INFINITY, f32::min);
    let brightest = dark.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    Some((l, d, (dimmest - brightest) / contrast))
}

/// How good a timing offset makes the blob look: its preamble's separation plus its groups'
/// mean gap.
fn score(values: &[f32; SLOTS]) -> f32 {
    let Some((l, d, separation)) = preamble(values) else {
        return -10.0;
    };
    let contrast = l - d;
    let data = &values[DATA_AT..DATA_AT + DATA_SLOTS];
    let mut gaps = 0.0;
    for group in data.chunks_exact(code::GROUP_SLOTS) {
        let mut g: Vec<f32> = group.to_vec();
        if g.iter().any(|v| v.is_nan()) {
            return separation - 10.0;
        }
        g.sort_by(|a, b| b.total_cmp(a));
        gaps += (g[code::GROUP_LIT - 1] - g[code::GROUP_LIT]) / contrast;
    }
    separation + gaps / code::GROUPS as f32
}

fn decide(values: &[f32; SLOTS]) -> Result<Read, Unread> {
    let Some((_, _, separation)) = preamble(values) else {
        return Err(Unread::NoPreamble);
    };
    if separation < MIN_PREAMBLE_SEPARATION {
        return Err(Unread::NoPreamble);
    }
    let (l, d, _) = preamble(values).expect("checked");
    let data = &values[DATA_AT..DATA_AT + DATA_SLOTS];
    code::read(data, l - d, MIN_GAP).map_err(|ReadError::Unclear { .. }| Unread::Unclear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The still the reference points would be marked on: the session's middle.
    const STILL_S: f64 = 2.5;

    /// A small clip drawn here: phones of 2 × 2 stored pixels on a grid, each showing its
    /// code with its own timing error, a shaking camera, noise; 30 fps, 1/60 s exposure.
    pub(super) fn clip_for_debug(
        codes: &[u64],
        offsets_s: &[f64],
        symbol_s: f64,
    ) -> (Clip, Vec<(f64, f64)>) {
        clip(codes, offsets_s, symbol_s)
    }

    fn clip(codes: &[u64], offsets_s: &[f64], symbol_s: f64) -> (Clip, Vec<(f64, f64)>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (w, h) = (160usize, 120usize);
        let fps = 30.0;
        let lead = 0.4;
        let seconds = lead * 2.0 + SLOTS as f64 * symbol_s;
        let n = (seconds * fps) as usize;
        let background: Vec<u8> = (0..w * h)
            .map(|i| (40 + (i % w / 9 + i / w / 7) % 30 + i % 13) as u8)
            .collect();
        let places: Vec<(f64, f64)> = (0..codes.len())
            .map(|i| (20.0 + (i % 8) as f64 * 16.0, 20.0 + (i / 8) as f64 * 16.0))
            .collect();
        let slots: Vec<[bool; SLOTS]> = codes.iter().map(|&c| code::slots(c)).collect();
        let mut pixels = Vec::with_capacity(w * h * n);
        let mut times = Vec::new();
        for f in 0..n {
            let t = f as f64 / fps;
            times.push(t);
            let (sx, sy) = ((t * 7.0).sin() * 2.0, (t * 5.0).cos() * 2.0);
            let mut frame: Vec<f32> = (0..w * h)
                .map(|i| {
                    let (x, y) = (
                        (i % w) as isize - sx.round() as isize,
                        (i / w) as isize - sy.round() as isize,
                    );
                    if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
                        40.0
                    } else {
                        f32::from(background[y as usize * w + x as usize])
                    }
                })
                .collect();
            for (p, &(px, py)) in places.iter().enumerate() {
                // the share of the 1/60 s exposure this phone is lit
                let mut lit = 0.0;
                for k in 0..10 {
                    let at = t + k as f64 / 600.0 - lead - offsets_s[p];
                    let slot = (at / symbol_s).floor();
                    if slot >= 0.0 && (slot as usize) < SLOTS && slots[p][slot as usize] {
                        lit += 0.1;
                    }
                }
                for dy in 0..2 {
                    for dx in 0..2 {
                        let x = (px as isize + dx + sx.round() as isize) as usize;
                        let y = (py as isize + dy + sy.round() as isize) as usize;
                        frame[y * w + x] = 20.0 + 200.0 * lit as f32;
                    }
                }
            }
            pixels.extend(
                frame
                    .iter()
                    .map(|v| (v + rng.gen_range(-3.0..3.0)).clamp(0.0, 255.0) as u8),
            );
        }
        // where each phone is in the frame at STILL_S (the camera has moved it)
        let t = (STILL_S * fps).round() / fps;
        let (sx, sy) = (
            ((t * 7.0).sin() * 2.0).round(),
            ((t * 5.0).cos() * 2.0).round(),
        );
        let truth = places
            .iter()
            .map(|&(x, y)| (x + 1.0 + sx, y + 1.0 + sy))
            .collect();
        (
            Clip {
                width: w,
                height: h,
                scale: 1.0,
                pixels,
                times,
                decoder_peak_bytes: 0,
            },
            truth,
        )
    }

    #[test]
    fn every_phone_of_a_small_clip_is_read_where_it_is() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let codes: Vec<u64> = (0..40).map(|_| code::random_code(&mut rng)).collect();
        let offsets: Vec<f64> = (0..40)
            .map(|i| {
                if i % 10 == 0 {
                    0.02
                } else {
                    rng.gen_range(-0.004..0.004)
                }
            })
            .collect();
        let symbol_s = 2.0 / 30.0;
        let (clip, truth) = clip(&codes, &offsets, symbol_s);
        let a = analyze(&clip, symbol_s, STILL_S, 2).unwrap();
        assert!(
            (a.session_start_s - 0.4).abs() < symbol_s / 2.0,
            "{}",
            a.session_start_s
        );
        for (code, &(x, y)) in codes.iter().zip(&truth) {
            let blob = a
                .blobs
                .iter()
                .find(|b| b.read.as_ref().is_ok_and(|r| r.code == *code))
                .unwrap_or_else(|| {
                    panic!(
                        "code {code} at ({x}, {y}) not read: {:?}",
                        a.blobs
                            .iter()
                            .filter(|b| (b.x - x).abs() < 3.0 && (b.y - y).abs() < 3.0)
                            .collect::<Vec<_>>()
                    )
                });
            assert!(
                (blob.x - x).abs() < 1.0 && (blob.y - y).abs() < 1.0,
                "{code}: ({}, {}) vs ({x}, {y})",
                blob.x,
                blob.y
            );
        }
        let read = a.blobs.iter().filter(|b| b.read.is_ok()).count();
        assert_eq!(read, codes.len(), "nothing else reads as a code");
    }

    #[test]
    fn a_clip_shorter_than_the_session_or_without_phones_is_refused() {
        let symbol_s = 2.0 / 30.0;
        let still = Clip {
            width: 64,
            height: 48,
            scale: 1.0,
            pixels: vec![90; 64 * 48 * 200],
            times: (0..200).map(|f| f as f64 / 30.0).collect(),
            decoder_peak_bytes: 0,
        };
        assert_eq!(
            analyze(&still, symbol_s, 0.0, 2).unwrap_err(),
            AnalysisError::NoBlobs
        );
        let short = Clip {
            times: (0..30).map(|f| f as f64 / 30.0).collect(),
            pixels: vec![90; 64 * 48 * 30],
            ..still
        };
        assert!(matches!(
            analyze(&short, symbol_s, 0.0, 2),
            Err(AnalysisError::TooShort { .. })
        ));
    }
}
#[cfg(test)]
mod shake_tests {
    #[test]
    fn the_camera_shake_is_found_from_the_phones_themselves() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
        let codes: Vec<u64> = (0..40)
            .map(|_| super::code::random_code(&mut rng))
            .collect();
        let symbol_s = 2.0 / 30.0;
        let (clip, _) = super::tests::clip_for_debug(&codes, &[0.0; 40], symbol_s);
        let blurred = super::deviation(&clip, &vec![(0.0, 0.0); clip.frames()], 2);
        let first = super::shake(&clip, &blurred, 2);
        let found = super::shake(&clip, &super::deviation(&clip, &first, 2), 2);
        // in the frames of the data slots (half the phones lit) the found shift follows the
        // drawn one, up to a constant (the reference is the phones' mean place)
        let drawn = |t: f64| {
            (
                ((t * 7.0).sin() * 2.0).round(),
                ((t * 5.0).cos() * 2.0).round(),
            )
        };
        let in_session: Vec<usize> = (0..clip.frames())
            .filter(|&f| {
                let t = clip.times[f];
                t > 0.4 + 8.0 * symbol_s && t < 0.4 + 61.0 * symbol_s
            })
            .collect();
        let diff = |f: usize| {
            let d = drawn(clip.times[f]);
            (found[f].0 - d.0, found[f].1 - d.1)
        };
        let base = diff(in_session[0]);
        for &f in &in_session {
            let d = diff(f);
            assert!(
                (d.0 - base.0).abs() < 0.6 && (d.1 - base.1).abs() < 0.6,
                "frame {f}: {d:?} vs {base:?}"
            );
        }
    }
}
