//! C3S's own QR finder for crowd photos: hundreds of small version-2 codes in one large image.
//!
//! rqrr's detector (quirc's flood fill and capstone grouping) found under half of them in
//! 12 MP photos and took minutes on dense ones; ZXing's row-scan finder is the better idea, and
//! knowing that every code is version 2 makes the rest simple:
//!
//! 1. [`Binary`]: each pixel dark or light against the mean of a window around it.
//! 2. [`scan_band`]: every row is cut into runs; five runs in the ratio 1:1:3:1:1 with a core
//!    clearly darker than its ring are a finder pattern candidate, kept only if the column
//!    through its centre shows the same ratio; its module size is the shortest of the row,
//!    column and diagonal measures (right at any angle). Rows are scanned in bands, one per
//!    thread.
//! 3. [`cluster`]: the many rows that cross one finder pattern agree on its centre; merged,
//!    then [`refine`]d to the centroid of the dark core (sub-pixel).
//! 4. [`triples`]: three finder patterns 18 modules apart at a right angle are a code's corners.
//! 5. [`read`]: the 25 × 25 modules are sampled through the affine map those corners give (a
//!    code is small enough that perspective within it is negligible) and judged against the
//!    code's own dark/light midpoint blended with their neighbourhood; the timing patterns and
//!    then the fixed structure must read right before rqrr decodes (format, unmasking,
//!    Reed–Solomon).
//!
//! [`detect`] runs all this on the photo and again on it halved, quartered, … for close-ups,
//! whose big modules the binarisation window cannot hold.

use image::GrayImage;

use super::Found;

/// Modules per side of a version-2 code, and the distance between finder centres in modules.
const SIDE: usize = 25;
const FINDER_SPAN: f64 = 18.0;
/// The binarisation window reaches this far each way: wider than a finder's 3-module core at
/// the largest module size expected (~6 px), narrow enough to follow uneven lighting.
const WINDOW_RADIUS: usize = 12;
/// A pixel is dark when this much darker than its window's mean (noise in flat areas).
const BIAS: u32 = 8;
/// Partners one finder pattern considers, nearest first, and candidate codes one photo reads
/// at most: bounds on the work a hostile photo can cause (a real code needs 2 and 1).
const MAX_SIDES: usize = 24;
const MAX_TRIPLES: usize = 200_000;
/// Grey levels between a finder's core and its light ring, at least.
const MIN_CONTRAST: i32 = 24;
/// A finder narrower than this (7 modules of ~1.5 px) cannot be read anyway.
const MIN_FINDER_PX: usize = 10;

/// Every pixel of a photo, dark (1) or light (0).
struct Binary {
    w: usize,
    h: usize,
    dark: Vec<u8>,
}

impl Binary {
    fn new(photo: &GrayImage, threads: usize) -> Binary {
        let (w, h) = (photo.width() as usize, photo.height() as usize);
        let mut dark = vec![0u8; w * h];
        let band = h.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (i, out) in dark.chunks_mut(band * w).enumerate() {
                s.spawn(move || threshold_band(photo, i * band, out));
            }
        });
        Binary { w, h, dark }
    }

    fn at(&self, x: usize, y: usize) -> bool {
        self.dark[y * self.w + x] != 0
    }
}

/// Thresholds rows `y0..` (as many as `out` holds) with a sliding window sum.
///
/// Column sums over the window's rows move down one row at a time; their running (prefix) sum
/// along the row gives each window's sum as one difference. The sums wrap in `u32`: a
/// difference of two wrapped prefix sums is still right, as a window's own sum (at most
/// 25 × 25 × 255) fits. Away from the photo's left and right edges every window has the same
/// area, and that loop is one the compiler vectorises.
fn threshold_band(photo: &GrayImage, y0: usize, out: &mut [u8]) {
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let px = photo.as_raw();
    let rows = out.len() / w;
    let r = WINDOW_RADIUS;
    let span = 2 * r + 1;
    // column sums over the window's rows, for the current row
    let mut col = vec![0u32; w];
    let mut prefix = vec![0u32; w + 1];
    let (mut top, mut bottom) = (y0.saturating_sub(r), y0.saturating_sub(r));
    for y in y0..y0 + rows {
        let (want_top, want_bottom) = (y.saturating_sub(r), (y + r + 1).min(h));
        while bottom < want_bottom {
            col.iter_mut()
                .zip(&px[bottom * w..(bottom + 1) * w])
                .for_each(|(c, &p)| *c += u32::from(p));
            bottom += 1;
        }
        while top < want_top {
            col.iter_mut()
                .zip(&px[top * w..(top + 1) * w])
                .for_each(|(c, &p)| *c -= u32::from(p));
            top += 1;
        }
        let n_rows = (bottom - top) as u32;
        let mut running = 0u32;
        for (p, &c) in prefix[1..].iter_mut().zip(&col) {
            running = running.wrapping_add(c);
            *p = running;
        }
        let row = &px[y * w..(y + 1) * w];
        let dst = &mut out[(y - y0) * w..(y - y0 + 1) * w];
        let dark = |p: u8, sum: u32, area: u32| u8::from((u32::from(p) + BIAS) * area < sum);
        let at_edge = |x: usize| {
            let (left, right) = (x.saturating_sub(r), (x + r + 1).min(w));
            let sum = prefix[right].wrapping_sub(prefix[left]);
            dark(row[x], sum, n_rows * (right - left) as u32)
        };
        if w <= span {
            for (x, d) in dst.iter_mut().enumerate() {
                *d = at_edge(x);
            }
            continue;
        }
        for x in (0..r).chain(w - r..w) {
            dst[x] = at_edge(x);
        }
        let area = n_rows * span as u32;
        let inner = r..w - r;
        let windows = prefix[span..].iter().zip(&prefix[..w + 1 - span]);
        for ((d, &p), (&right, &left)) in
            dst[inner.clone()].iter_mut().zip(&row[inner]).zip(windows)
        {
            *d = dark(p, right.wrapping_sub(left), area);
        }
    }
}

/// A finder pattern: its centre (photo pixels, continuous: pixel `i` spans `[i, i + 1)`) and
/// module size.
#[derive(Debug, Clone, Copy)]
struct Finder {
    x: f64,
    y: f64,
    module: f64,
}

/// Whether five runs (dark, light, dark, light, dark) are in the ratio 1:1:3:1:1.
///
/// Each run may be off by half a module either way, plus most of a pixel for rounding to whole
/// pixels at 2–3 px per module (blur and the window's mean thin a ring by about that much):
/// with `m` = total / 7, `|run - m| < m / 2 + 0.9` and `|core - 3m| < 3 (m / 2 + 0.9)`. Called
/// for nearly every run of every row, so written in integers, times 14: `|14 run - 2 total| <
/// total + 12.6` and `|14 core - 6 total| < 3 total + 37.8`.
fn finder_ratio(runs: &[usize; 5]) -> bool {
    let total: usize = runs.iter().sum();
    if total < MIN_FINDER_PX {
        return false;
    }
    let t = total as i64;
    let ring = |run: usize| (14 * run as i64 - 2 * t).abs() <= t + 12;
    ring(runs[0])
        && ring(runs[1])
        && (14 * runs[2] as i64 - 6 * t).abs() <= 3 * t + 37
        && ring(runs[3])
        && ring(runs[4])
}

/// Runs along a line through (x, y) in direction (dx, dy), starting in the finder's dark core:
/// returns the five runs and the offset of the core's centre from (x, y), in steps.
fn cross_runs(
    bin: &Binary,
    x: usize,
    y: usize,
    (dx, dy): (isize, isize),
    max_run: usize,
) -> Option<([usize; 5], f64)> {
    if !bin.at(x, y) {
        return None;
    }
    // walks from the centre one way: core part, light ring, dark ring
    let walk = |sign: isize| -> Option<[usize; 3]> {
        let mut counts = [0usize; 3];
        let mut state = 0; // 0 core (dark), 1 ring (light), 2 outer ring (dark)
        let (mut cx, mut cy) = (x as isize, y as isize);
        loop {
            cx += sign * dx;
            cy += sign * dy;
            if cx < 0 || cy < 0 || cx >= bin.w as isize || cy >= bin.h as isize {
                return (state == 2).then_some(counts);
            }
            let dark = bin.at(cx as usize, cy as usize);
            let expect_dark = state != 1;
            if dark != expect_dark {
                if state == 2 {
                    return Some(counts);
                }
                state += 1;
            }
            counts[state] += 1;
            if counts[state] > max_run {
                return None;
            }
        }
    };
    let back = walk(-1)?;
    let fwd = walk(1)?;
    let runs = [back[2], back[1], back[0] + fwd[0] + 1, fwd[1], fwd[2]];
    // the core spans steps -back[0] ..= fwd[0]; its centre, measured from (x, y)
    let centre = (fwd[0] as f64 - back[0] as f64) / 2.0;
    finder_ratio(&runs).then_some((runs, centre))
}

/// Scans rows `y0..y1` for finder patterns, each confirmed by the column through its centre
/// and then re-measured along the row through that corrected centre.
fn scan_band(
    photo: &GrayImage,
    bin: &Binary,
    y0: usize,
    y1: usize,
    min_total: usize,
) -> Vec<Finder> {
    let grey = photo.as_raw();
    let mut out = Vec::new();
    // where each run of the row starts, and the row's end: written at every pixel and kept
    // only where the colour changes (no branch to mispredict in a row of small modules)
    let mut starts: Vec<u32> = vec![0; bin.w + 1];
    for y in y0..y1 {
        let row = &bin.dark[y * bin.w..(y + 1) * bin.w];
        let mut n = 1;
        for x in 1..row.len() {
            starts[n] = x as u32;
            n += usize::from(row[x] != row[x - 1]);
        }
        starts[n] = row.len() as u32;
        let starts = &starts[..=n];
        let run = |i: usize| (starts[i] as usize, (starts[i + 1] - starts[i]) as usize);
        let runs = n;
        let first_dark = usize::from(row.first() == Some(&0));
        for i in (first_dark..runs.saturating_sub(4)).step_by(2) {
            let five = [
                run(i).1,
                run(i + 1).1,
                run(i + 2).1,
                run(i + 3).1,
                run(i + 4).1,
            ];
            if five.iter().sum::<usize>() < min_total || !finder_ratio(&five) {
                continue;
            }
            let total: usize = five.iter().sum();
            let max_run = total; // generous: the column may be longer under rotation
            let cx = run(i + 2).0 + run(i + 2).1 / 2;
            // noise in a flat area passes the ratio now and then: a finder's core is much
            // darker than its light ring (checked on this row, before walking a column)
            let level = |x: usize| i32::from(grey[y * bin.w + x]);
            let ring =
                level(run(i + 1).0 + run(i + 1).1 / 2).min(level(run(i + 3).0 + run(i + 3).1 / 2));
            if ring - level(cx) < MIN_CONTRAST {
                continue;
            }
            let Some((vruns, dy)) = cross_runs(bin, cx, y, (0, 1), max_run) else {
                continue;
            };
            let vtotal: usize = vruns.iter().sum();
            if vtotal * 10 < total * 6 || vtotal * 6 > total * 10 {
                continue;
            }
            let fy = y as f64 + 0.5 + dy;
            let ry = fy as usize;
            let Some((hruns, dx)) = cross_runs(bin, cx, ry, (1, 0), max_run) else {
                continue;
            };
            let htotal: usize = hruns.iter().sum();
            out.push(Finder {
                x: cx as f64 + 0.5 + dx,
                y: fy,
                module: (htotal + vtotal) as f64 / 14.0,
            });
        }
    }
    out
}

/// Row and column overstate a turned finder's module (by up to √2 at 45°); the diagonals
/// overstate an upright one's by as much. The shortest of the four is within 8 % of the truth
/// at any angle: measured once per merged finder, through its centre.
fn square_up(bin: &Binary, f: Finder) -> Finder {
    let (x, y) = (f.x as usize, f.y as usize);
    if x >= bin.w || y >= bin.h {
        return f;
    }
    let max_run = (7.0 * f.module).ceil() as usize;
    let diagonal = |dir| {
        cross_runs(bin, x, y, dir, max_run)
            .map(|(runs, _)| runs.iter().sum::<usize>() as f64 * std::f64::consts::SQRT_2 / 7.0)
    };
    let module = [diagonal((1, 1)), diagonal((1, -1))]
        .into_iter()
        .flatten()
        .fold(f.module, f64::min);
    Finder { module, ..f }
}

/// Merges the candidates of one finder pattern (found on many rows) into one; a lone
/// candidate is noise and dropped.
///
/// Candidates come sorted by row; open clusters are kept in buckets of columns so each
/// candidate looks only at its neighbourhood, and clusters the rows have moved well past are
/// closed once per row (a photo wide and full of finder-like patterns stays linear).
fn cluster(mut raw: Vec<Finder>) -> Vec<Finder> {
    const BUCKET_PX: f64 = 32.0;
    raw.sort_by(|a, b| a.y.total_cmp(&b.y));
    // running sums of each cluster: x, y, module, count
    let mut acc: Vec<(f64, f64, f64, usize)> = Vec::new();
    let mut open: std::collections::HashMap<i64, Vec<usize>> = Default::default();
    let mut done = Vec::new();
    let mut swept_at = f64::NEG_INFINITY;
    let mean = |a: &(f64, f64, f64, usize)| {
        let n = a.3 as f64;
        (a.0 / n, a.1 / n, a.2 / n)
    };
    for f in raw {
        if f.y - swept_at >= 1.0 {
            swept_at = f.y;
            open.retain(|_, ids| {
                ids.retain(|&i| {
                    let (_, y, m) = mean(&acc[i]);
                    let keep = f.y - y <= 2.0 * m + 2.0;
                    if !keep {
                        done.push(i);
                    }
                    keep
                });
                !ids.is_empty()
            });
        }
        let bucket = (f.x / BUCKET_PX).floor() as i64;
        let near = (bucket - 1..=bucket + 1)
            .flat_map(|b| open.get(&b).into_iter().flatten().copied())
            .find(|&i| {
                let (x, y, m) = mean(&acc[i]);
                let reach = m.clamp(1.5, BUCKET_PX);
                (x - f.x).abs() <= reach && (y - f.y).abs() <= reach
            });
        match near {
            Some(i) => {
                let a = &mut acc[i];
                a.0 += f.x;
                a.1 += f.y;
                a.2 += f.module;
                a.3 += 1;
            }
            None => {
                open.entry(bucket).or_default().push(acc.len());
                acc.push((f.x, f.y, f.module, 1));
            }
        }
    }
    done.extend(open.into_values().flatten());
    done.into_iter()
        .filter(|&i| acc[i].3 >= 2)
        .map(|i| {
            let (x, y, module) = mean(&acc[i]);
            Finder { x, y, module }
        })
        .collect()
}

/// Moves a finder's centre to the darkness-weighted centroid of its core (3 × 3 modules,
/// inside a disc that stops short of the outer ring): sub-pixel, where the scan lines only
/// give whole pixels, and a fifth of a module matters when sampling 18 modules away.
fn refine(photo: &GrayImage, f: Finder) -> Finder {
    let (w, px) = (photo.width() as usize, photo.as_raw());
    let mut c = f;
    for _ in 0..2 {
        let r = 2.2 * f.module;
        let (x0, x1) = (
            (c.x - r).floor().max(0.0) as usize,
            ((c.x + r).ceil() as usize).min(w),
        );
        let (y0, y1) = (
            (c.y - r).floor().max(0.0) as usize,
            ((c.y + r).ceil() as usize).min(photo.height() as usize),
        );
        // the disc's pixels (their centres within r of the current centre) with their levels
        let disc = |y: usize| {
            let dy = y as f64 + 0.5 - c.y;
            let row = &px[y * w..(y + 1) * w];
            (x0..x1).filter_map(move |x| {
                let dx = x as f64 + 0.5 - c.x;
                (dx * dx + dy * dy <= r * r).then_some((x, f64::from(row[x])))
            })
        };
        let (mut lo, mut hi) = (255.0f64, 0.0f64);
        for (_, v) in (y0..y1).flat_map(&disc) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let t = (lo + hi) / 2.0;
        let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
        for y in y0..y1 {
            for (x, v) in disc(y) {
                let weight = t - v;
                if weight > 0.0 {
                    sx += weight * (x as f64 + 0.5);
                    sy += weight * (y as f64 + 0.5);
                    sw += weight;
                }
            }
        }
        if sw == 0.0 {
            return f;
        }
        c = Finder {
            x: sx / sw,
            y: sy / sw,
            ..f
        };
    }
    // a centroid far from the scan's centre found something else (a neighbour's module)
    if (c.x - f.x).hypot(c.y - f.y) > f.module {
        f
    } else {
        c
    }
}

/// Candidate codes: (top-left, top-right, bottom-left) finder indices, best-looking first.
fn triples(finders: &[Finder]) -> Vec<[usize; 3]> {
    // a coarse grid of finders, so each one looks only at its neighbourhood: cells about one
    // code wide at the typical module size, and each finder reaching as far as its own size
    // allows (one huge false finder does not make every finder look at every other)
    let mut modules: Vec<f64> = finders.iter().map(|f| f.module).collect();
    modules.sort_by(f64::total_cmp);
    let typical = modules.get(modules.len() / 2).copied().unwrap_or(1.0);
    let cell = (typical * FINDER_SPAN * 1.4).max(16.0);
    let mut grid: std::collections::HashMap<(i64, i64), Vec<usize>> = Default::default();
    let key = |f: &Finder| ((f.x / cell) as i64, (f.y / cell) as i64);
    for (i, f) in finders.iter().enumerate() {
        grid.entry(key(f)).or_default().push(i);
    }
    let mut out: Vec<(f64, [usize; 3])> = Vec::new();
    let mut sides = Vec::new();
    for (a, fa) in finders.iter().enumerate() {
        let (kx, ky) = key(fa);
        // a partner is at most 26 modules away, of a module up to 1.67 times this one's
        let reach = ((26.0 * 1.34 * fa.module / cell).ceil() as i64).max(1);
        sides.clear();
        for gx in kx - reach..=kx + reach {
            for gy in ky - reach..=ky + reach {
                for &b in grid.get(&(gx, gy)).into_iter().flatten() {
                    let fb = &finders[b];
                    let d = (fb.x - fa.x).hypot(fb.y - fa.y);
                    let span = d / (0.5 * (fa.module + fb.module));
                    let sizes = fa.module / fb.module;
                    if b != a && (10.5..26.0).contains(&span) && (0.6..1.67).contains(&sizes) {
                        sides.push((b, fb.x - fa.x, fb.y - fa.y, d));
                    }
                }
            }
        }
        // a real code's partners are among the nearest; a photo of nothing but finder-like
        // patterns must not make this quadratic
        if sides.len() > MAX_SIDES {
            sides.sort_by(|x, y| x.3.total_cmp(&y.3));
            sides.truncate(MAX_SIDES);
        }
        for (i, &(b, bx, by, bd)) in sides.iter().enumerate() {
            for &(c, cx, cy, cd) in &sides[i + 1..] {
                let cos = (bx * cx + by * cy) / (bd * cd);
                let ratio = bd / cd;
                if cos.abs() > 0.25 || !(0.8..1.25).contains(&ratio) {
                    continue;
                }
                let score = cos.abs() + (ratio - 1.0).abs();
                // clockwise in the image (y down): top-left → top-right → bottom-left
                let cross = bx * cy - by * cx;
                out.push((score, if cross > 0.0 { [a, b, c] } else { [a, c, b] }));
            }
        }
    }
    out.sort_by(|x, y| x.0.total_cmp(&y.0));
    out.truncate(MAX_TRIPLES);
    out.into_iter().map(|(_, t)| t).collect()
}

/// Of the 218 modules every version-2 code has the same, how many may read wrong.
const STRUCTURE_MISSES_MAX: usize = 20;

/// How many of the fixed modules of a version-2 code (`dark(m, n)`: column, row) read wrong:
/// the three finder patterns with their light separators, and the alignment pattern.
fn structure_misses(dark: impl Fn(usize, usize) -> bool) -> usize {
    let mut misses = 0;
    let mut expect =
        |m: usize, n: usize, want_dark: bool| misses += usize::from(dark(m, n) != want_dark);
    let last = SIDE - 1;
    for (m0, n0) in [(0, 0), (SIDE - 7, 0), (0, SIDE - 7)] {
        for j in 0..7 {
            for i in 0..7 {
                // rings from the outside: dark, light, then the dark 3 × 3 core
                let ring = i.min(j).min(6 - i).min(6 - j);
                expect(m0 + i, n0 + j, ring != 1);
            }
        }
    }
    // separators: one light module around each finder, on the code's inner sides
    for k in 0..8 {
        expect(7, k, false);
        expect(k, 7, false);
        expect(last - 7, k, false);
        expect(last - k, 7, false);
        expect(7, last - k, false);
        expect(k, last - 7, false);
    }
    // the alignment pattern, centred on module (18, 18)
    for j in 16..=20usize {
        for i in 16..=20usize {
            let ring = i.abs_diff(18).max(j.abs_diff(18));
            expect(i, j, ring != 1);
        }
    }
    misses
}

/// Bilinear grey level at continuous photo coordinates.
fn sample(photo: &GrayImage, x: f64, y: f64) -> Option<f64> {
    let (fx, fy) = (x - 0.5, y - 0.5);
    let (x0, y0) = (fx.floor(), fy.floor());
    if x0 < 0.0 || y0 < 0.0 || x0 + 1.0 >= f64::from(photo.width()) {
        return None;
    }
    if y0 + 1.0 >= f64::from(photo.height()) {
        return None;
    }
    let (tx, ty) = (fx - x0, fy - y0);
    let (ix, iy) = (x0 as u32, y0 as u32);
    let p = |x, y| f64::from(photo.get_pixel(x, y).0[0]);
    let top = p(ix, iy) * (1.0 - tx) + p(ix + 1, iy) * tx;
    let bottom = p(ix, iy + 1) * (1.0 - tx) + p(ix + 1, iy + 1) * tx;
    Some(top * (1.0 - ty) + bottom * ty)
}

/// The map from module coordinates (0..25 across the code) to the photo that puts the finder
/// centres (3.5, 3.5), (21.5, 3.5) and (3.5, 21.5) on the three finders.
#[derive(Debug, Clone, Copy)]
struct Affine {
    origin: (f64, f64),
    u: (f64, f64),
    v: (f64, f64),
}

impl Affine {
    fn new(tl: &Finder, tr: &Finder, bl: &Finder) -> Affine {
        let u = ((tr.x - tl.x) / FINDER_SPAN, (tr.y - tl.y) / FINDER_SPAN);
        let v = ((bl.x - tl.x) / FINDER_SPAN, (bl.y - tl.y) / FINDER_SPAN);
        let origin = (tl.x - 3.5 * (u.0 + v.0), tl.y - 3.5 * (u.1 + v.1));
        Affine { origin, u, v }
    }

    fn map(&self, m: f64, n: f64) -> (f64, f64) {
        (
            self.origin.0 + m * self.u.0 + n * self.v.0,
            self.origin.1 + m * self.u.1 + n * self.v.1,
        )
    }
}

/// Reads the code whose finders are `tl`, `tr`, `bl`.
fn read(photo: &GrayImage, tl: &Finder, tr: &Finder, bl: &Finder) -> Option<Found> {
    let map = Affine::new(tl, tr, bl);
    // the code's own dark (finder cores) and light (the ring two modules from each core)
    let mut dark = 0.0;
    let mut light = 0.0;
    for (cm, cn) in [(3.5, 3.5), (21.5, 3.5), (3.5, 21.5)] {
        let (x, y) = map.map(cm, cn);
        dark += sample(photo, x, y)?;
        for (dm, dn) in [(2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)] {
            let (x, y) = map.map(cm + dm, cn + dn);
            light += sample(photo, x, y)? / 4.0;
        }
    }
    let (dark, light) = (dark / 3.0, light / 3.0);
    if light - dark < 16.0 {
        return None;
    }
    let mid = (dark + light) / 2.0;
    // Three finders of different codes rarely line up with a timing pattern between them:
    // check its 18 modules (row 6 and column 6, from 8 to 16) before sampling the rest. Each
    // is judged against the midpoint blended with the mean of itself and its two neighbours
    // along the line (they alternate, so a lone module blurred grey still tells).
    let line = |along: &dyn Fn(f64) -> (f64, f64)| -> Option<usize> {
        let mut v = [0.0f64; 11];
        for (k, slot) in v.iter_mut().enumerate() {
            let (x, y) = along(7.5 + k as f64);
            *slot = sample(photo, x, y)?;
        }
        Some(
            (1..10)
                .filter(|&k| {
                    let threshold = (mid + (v[k - 1] + v[k] + v[k + 1]) / 3.0) / 2.0;
                    (v[k] < threshold) != (k % 2 == 1)
                })
                .count(),
        )
    };
    let misses = line(&|t| map.map(t, 6.5))? + line(&|t| map.map(6.5, t))?;
    if misses > 4 {
        return None;
    }
    let mut levels = [0.0f64; SIDE * SIDE];
    for n in 0..SIDE {
        for m in 0..SIDE {
            let (x, y) = map.map(m as f64 + 0.5, n as f64 + 0.5);
            levels[n * SIDE + m] = sample(photo, x, y)?;
        }
    }
    // A lone dark module between light ones comes out grey once a slightly soft lens has
    // spread it over 2–3 pixels, and may miss the code's midpoint: first judge each module
    // against the midpoint and its 3 × 3 neighbourhood together, then the midpoint alone.
    let local = |m: usize, n: usize| {
        let (mut sum, mut count) = (0.0, 0.0);
        for j in n.saturating_sub(1)..(n + 2).min(SIDE) {
            for i in m.saturating_sub(1)..(m + 2).min(SIDE) {
                sum += levels[j * SIDE + i];
                count += 1.0;
            }
        }
        sum / count
    };
    let blended: Vec<f64> = (0..SIDE * SIDE)
        .map(|k| (mid + local(k % SIDE, k / SIDE)) / 2.0)
        .collect();
    // the fixed parts of a version-2 code (finders, separators, alignment pattern) must be
    // nearly all right before rqrr, whose error correction is slow on a grid of noise, tries
    let dark_at = |m: usize, n: usize| levels[n * SIDE + m] < blended[n * SIDE + m];
    if structure_misses(dark_at) > STRUCTURE_MISSES_MAX {
        return None;
    }
    let thresholds = [&blended[..], &[mid; SIDE * SIDE][..]];
    let clean = || {
        thresholds
            .iter()
            .find_map(|t| super::clean::payload(|m, n| levels[n * SIDE + m] < t[n * SIDE + m]))
    };
    let payload = clean().or_else(|| {
        thresholds.iter().find_map(|thresholds| {
            let grid = rqrr::Grid::new(rqrr::SimpleGrid::from_func(SIDE, |m, n| {
                levels[n * SIDE + m] < thresholds[n * SIDE + m]
            }));
            let mut payload = Vec::new();
            grid.decode_to(&mut payload).ok().map(|_| payload)
        })
    })?;
    let s = SIDE as f64;
    Some(Found {
        payload,
        outline: [
            map.map(0.0, 0.0),
            map.map(s, 0.0),
            map.map(s, s),
            map.map(0.0, s),
        ],
    })
}

/// Finds every version-2 QR code in a photo on `threads` threads.
///
/// The binarisation window suits modules up to about 6 px; a photo taken closer holds bigger
/// ones, so the scan runs again on the photo halved, quartered and so on (each pass costs a
/// quarter of the one before), and every code is kept once, from the finest scale that read it.
pub fn detect(photo: &GrayImage, threads: usize) -> Vec<Found> {
    // smaller than one code at 1 px per module: nothing to find (and no empty bands to cut)
    if photo.width().min(photo.height()) < SIDE as u32 {
        return Vec::new();
    }
    let mut found = scan_scale(photo, threads, 0.0);
    let mut scale = 1.0;
    let mut smaller = halve(photo);
    while smaller.width().min(smaller.height()) >= 64 {
        scale *= 2.0;
        // codes whose modules are under 2.5 px here were 5 px and under one scale up, and read
        // there: only bigger finder patterns are worth looking at
        for mut f in scan_scale(&smaller, threads, 2.5) {
            f.outline = f.outline.map(|(x, y)| (x * scale, y * scale));
            found.push(f);
        }
        smaller = halve(&smaller);
    }
    // (the finest scale's first: kept over the same code read coarser)
    distinct(found)
}

/// The photo at half the size, each pixel the mean of four.
fn halve(photo: &GrayImage) -> GrayImage {
    let (w, h) = (photo.width() / 2, photo.height() / 2);
    let px = photo.as_raw();
    let stride = photo.width() as usize;
    GrayImage::from_fn(w, h, |x, y| {
        let i = 2 * y as usize * stride + 2 * x as usize;
        let sum = u16::from(px[i])
            + u16::from(px[i + 1])
            + u16::from(px[i + stride])
            + u16::from(px[i + stride + 1]);
        image::Luma([((sum + 2) / 4) as u8])
    })
}

/// One pass of the scan at the photo's own scale; each code once.
fn scan_scale(photo: &GrayImage, threads: usize, min_module: f64) -> Vec<Found> {
    let min_total = (7.0 * min_module) as usize;
    let threads = threads.clamp(1, 16);
    let started = std::time::Instant::now();
    let bin = Binary::new(photo, threads);
    let band = bin.h.div_ceil(threads).max(1);
    let raw: Vec<Finder> = std::thread::scope(|s| {
        let bin = &bin;
        let handles: Vec<_> = (0..bin.h)
            .step_by(band)
            .map(|y0| s.spawn(move || scan_band(photo, bin, y0, (y0 + band).min(bin.h), min_total)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("scanning does not panic"))
            .collect()
    });
    let scanned = started.elapsed();
    let n_raw = raw.len();
    let merged = cluster(raw);
    let finders = on_threads(&merged, threads, |&f| {
        Some(refine(photo, square_up(&bin, f)))
    });
    let refined = started.elapsed();
    drop(bin);
    let candidates = triples(&finders);
    let found = on_threads(&candidates, threads, |&[a, b, c]| {
        // a decoder panic on one odd grid skips that candidate only
        let attempt =
            std::panic::AssertUnwindSafe(|| read(photo, &finders[a], &finders[b], &finders[c]));
        std::panic::catch_unwind(attempt).ok().flatten()
    });
    tracing::debug!(
        candidates = n_raw,
        finders = finders.len(),
        triples = candidates.len(),
        codes = found.len(),
        scan_ms = scanned.as_millis() as u64,
        refined_ms = refined.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "QR scan"
    );
    distinct(found)
}

/// `f` of every item on `threads` threads, in the items' order (`None`s left out). The items
/// are dealt out in turn, so a list whose costly items come together (candidates sorted best
/// first: the good ones are read to the end) is still shared evenly.
fn on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<R> {
    let (f, threads) = (&f, threads.max(1));
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mine = items.iter().enumerate().skip(t).step_by(threads);
                    mine.filter_map(|(i, item)| f(item).map(|r| (i, r)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a scan thread does not panic"))
            .collect()
    });
    out.sort_unstable_by_key(|&(i, _)| i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Every code once: a code read twice (two candidates of one code, or two scales) is kept
/// once; the same payload at two places a code's size apart or more is two codes (a
/// reflection, a code shown on another screen), both kept for the caller to refuse.
pub fn distinct(found: Vec<Found>) -> Vec<Found> {
    let size = |f: &Found| {
        let [a, b, _, d] = f.outline;
        ((b.0 - a.0).hypot(b.1 - a.1)).max((d.0 - a.0).hypot(d.1 - a.1))
    };
    let mut kept: Vec<Found> = Vec::with_capacity(found.len());
    let mut by_payload: std::collections::HashMap<Vec<u8>, Vec<usize>> =
        std::collections::HashMap::new();
    for f in found {
        let (cx, cy) = f.centre();
        let same = by_payload.entry(f.payload.clone()).or_default();
        let near = same.iter().any(|&i| {
            let (kx, ky) = kept[i].centre();
            (kx - cx).hypot(ky - cy) < size(&kept[i]).max(size(&f))
        });
        if !near {
            same.push(kept.len());
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threshold by its definition: each pixel against the mean of the window around it,
    /// clipped to the photo.
    fn threshold_by_definition(photo: &GrayImage) -> Vec<u8> {
        let (w, h) = (photo.width() as usize, photo.height() as usize);
        let r = WINDOW_RADIUS;
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let (mut sum, mut area) = (0u64, 0u64);
                for wy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    for wx in x.saturating_sub(r)..(x + r + 1).min(w) {
                        sum += u64::from(photo.get_pixel(wx as u32, wy as u32).0[0]);
                        area += 1;
                    }
                }
                let p = u64::from(photo.get_pixel(x as u32, y as u32).0[0]);
                out[y * w + x] = u8::from((p + u64::from(BIAS)) * area < sum);
            }
        }
        out
    }

    #[test]
    fn the_fast_threshold_is_the_window_mean_everywhere() {
        // narrower than a window, about one window, and wide; bands of 1 to 3 threads
        for (w, h) in [(7, 40), (25, 26), (90, 61)] {
            let photo = GrayImage::from_fn(w, h, |x, y| {
                let noise = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 7;
                image::Luma([((x * 3 + y * 5) % 97 + noise % 120) as u8])
            });
            let expected = threshold_by_definition(&photo);
            assert!(expected.contains(&1) && expected.contains(&0));
            for threads in 1..=3 {
                let bin = Binary::new(&photo, threads);
                assert!(bin.dark == expected, "{w}×{h} on {threads} threads");
            }
        }
    }
}
