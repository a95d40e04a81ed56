//! The photo → scene map: a homography fitted to an observer's reference points (photo point
//! ↔ scene point). Four points determine it; more are fitted by least squares. Points are
//! normalised first (Hartley) so the fit is well conditioned for 12-megapixel coordinates.

use serde::Deserialize;

use super::solve;
use utoipa::ToSchema;

/// One reference point: a pixel of the photo and the scene point it shows.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, ToSchema)]
pub struct RefPoint {
    pub px: f64,
    pub py: f64,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HomographyError {
    #[error("at least 4 reference points are needed, {0} given")]
    TooFew(usize),
    #[error("a reference point is not a number")]
    NotANumber,
    #[error("the reference points are degenerate (three on a line, or repeated); spread them out")]
    Degenerate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    h: [f64; 9],
}

/// Translation and scale that move points to their centroid at mean distance √2.
fn normaliser(points: impl Iterator<Item = (f64, f64)> + Clone) -> Option<[f64; 3]> {
    let n = points.clone().count() as f64;
    let (cx, cy) = points
        .clone()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let mean = points
        .map(|(x, y)| ((x - cx).powi(2) + (y - cy).powi(2)).sqrt())
        .sum::<f64>()
        / n;
    (mean > 1e-12).then(|| [std::f64::consts::SQRT_2 / mean, cx, cy])
}

impl Homography {
    pub fn fit(points: &[RefPoint]) -> Result<Homography, HomographyError> {
        if points.len() < 4 {
            return Err(HomographyError::TooFew(points.len()));
        }
        if points
            .iter()
            .any(|p| !(p.px.is_finite() && p.py.is_finite() && p.x.is_finite() && p.y.is_finite()))
        {
            return Err(HomographyError::NotANumber);
        }
        if has_collinear_triple(points) {
            return Err(HomographyError::Degenerate);
        }
        let np =
            normaliser(points.iter().map(|p| (p.px, p.py))).ok_or(HomographyError::Degenerate)?;
        let ns =
            normaliser(points.iter().map(|p| (p.x, p.y))).ok_or(HomographyError::Degenerate)?;
        // normal equations of the 8-unknown DLT with h33 = 1
        let mut a = [[0.0f64; 8]; 8];
        let mut b = [0.0f64; 8];
        for p in points {
            let (u, v) = ((p.px - np[1]) * np[0], (p.py - np[2]) * np[0]);
            let (x, y) = ((p.x - ns[1]) * ns[0], (p.y - ns[2]) * ns[0]);
            let rows = [
                ([u, v, 1.0, 0.0, 0.0, 0.0, -u * x, -v * x], x),
                ([0.0, 0.0, 0.0, u, v, 1.0, -u * y, -v * y], y),
            ];
            for (row, rhs) in rows {
                for i in 0..8 {
                    for j in 0..8 {
                        a[i][j] += row[i] * row[j];
                    }
                    b[i] += row[i] * rhs;
                }
            }
        }
        let s = solve(a, b).ok_or(HomographyError::Degenerate)?;
        let hn = [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], 1.0];
        // undo the normalisations: H = Ns⁻¹ · Hn · Np
        let tp = [
            np[0],
            0.0,
            -np[0] * np[1],
            0.0,
            np[0],
            -np[0] * np[2],
            0.0,
            0.0,
            1.0,
        ];
        let ts_inv = [
            1.0 / ns[0],
            0.0,
            ns[1],
            0.0,
            1.0 / ns[0],
            ns[2],
            0.0,
            0.0,
            1.0,
        ];
        let h = mul(&ts_inv, &mul(&hn, &tp));
        if h.iter().any(|v| !v.is_finite()) || h[8].abs() < 1e-15 {
            return Err(HomographyError::Degenerate);
        }
        Ok(Homography { h })
    }

    /// The scene point a photo pixel shows; none at the horizon line.
    pub fn map(&self, px: f64, py: f64) -> Option<(f64, f64)> {
        let h = &self.h;
        let w = h[6] * px + h[7] * py + h[8];
        if w.abs() < 1e-12 {
            return None;
        }
        Some((
            (h[0] * px + h[1] * py + h[2]) / w,
            (h[3] * px + h[4] * py + h[5]) / w,
        ))
    }
}

fn mul(a: &[f64; 9], b: &[f64; 9]) -> [f64; 9] {
    let mut out = [0.0; 9];
    for r in 0..3 {
        for c in 0..3 {
            out[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
        }
    }
    out
}

/// Whether any three photo points (or any three scene points) are on a line.
fn has_collinear_triple(points: &[RefPoint]) -> bool {
    let n = points.len().min(12);
    let line = |a: (f64, f64), b: (f64, f64), c: (f64, f64)| {
        let cross = (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0);
        let scale = ((b.0 - a.0).hypot(b.1 - a.1)) * ((c.0 - a.0).hypot(c.1 - a.1));
        scale == 0.0 || cross.abs() < 1e-6 * scale
    };
    // with more than four points, one bad triple is tolerable only if the others pin it down;
    // keep it simple and strict for four, lenient (all triples on a line) beyond
    let mut bad = 0;
    let mut total = 0;
    for i in 0..n {
        for j in i + 1..n {
            for k in j + 1..n {
                total += 1;
                let (p, q, r) = (points[i], points[j], points[k]);
                if line((p.px, p.py), (q.px, q.py), (r.px, r.py))
                    || line((p.x, p.y), (q.x, q.y), (r.x, r.y))
                {
                    bad += 1;
                }
            }
        }
    }
    if n == 4 {
        bad > 0
    } else {
        bad == total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(px: f64, py: f64) -> (f64, f64) {
        // a known perspective map
        let w = 0.0002 * px + 0.0001 * py + 1.0;
        (
            (0.05 * px + 0.01 * py + 3.0) / w,
            (-0.01 * px + 0.04 * py + 7.0) / w,
        )
    }

    fn refs(pixels: &[(f64, f64)]) -> Vec<RefPoint> {
        pixels
            .iter()
            .map(|&(px, py)| {
                let (x, y) = project(px, py);
                RefPoint { px, py, x, y }
            })
            .collect()
    }

    #[test]
    fn recovers_a_perspective_map_from_four_and_more_points() {
        for pts in [
            refs(&[(0.0, 0.0), (4000.0, 0.0), (4000.0, 3000.0), (0.0, 3000.0)]),
            refs(&[
                (10.0, 20.0),
                (3900.0, 50.0),
                (3800.0, 2900.0),
                (100.0, 2950.0),
                (2000.0, 1500.0),
                (500.0, 2500.0),
            ]),
        ] {
            let h = Homography::fit(&pts).unwrap();
            for (px, py) in [(1234.0, 987.0), (3999.0, 5.0), (17.0, 2999.0)] {
                let (x, y) = h.map(px, py).unwrap();
                let (ex, ey) = project(px, py);
                assert!(
                    (x - ex).abs() < 1e-6 && (y - ey).abs() < 1e-6,
                    "{x},{y} vs {ex},{ey}"
                );
            }
        }
    }

    #[test]
    fn refuses_too_few_and_degenerate_points() {
        let four = refs(&[(0.0, 0.0), (100.0, 0.0), (200.0, 0.0), (0.0, 100.0)]);
        assert_eq!(Homography::fit(&four[..3]), Err(HomographyError::TooFew(3)));
        assert_eq!(Homography::fit(&four), Err(HomographyError::Degenerate));
        let mut nan = refs(&[(0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)]);
        nan[0].px = f64::NAN;
        assert_eq!(Homography::fit(&nan), Err(HomographyError::NotANumber));
    }
}
