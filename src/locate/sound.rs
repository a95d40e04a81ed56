//! Locating by sound (docs/sound.md): beacons at known places chirp at instants the server
//! schedules; a phone reports, for each beacon it heard, the delay from the chirp's emission to
//! its arrival on the phone's clock. Each delay is the distance over the speed of sound plus
//! one offset common to the phone's reports (its microphone's latency, where its capture
//! started, its clock's error), unknown and different on every phone model. So only the
//! differences between beacons carry the position: with ≥ 4 beacons, three unknowns (x, y and
//! the offset) are fitted by least squares, and what the fit leaves over (the residual) says
//! how far to trust it.
//!
//! Positions here are in metres on the scene's axes; the caller converts with the scene's
//! scale (metres per scene unit).

/// A beacon where the solver sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beacon {
    pub index: u8,
    pub x_m: f64,
    pub y_m: f64,
}

/// What a phone heard of one beacon: the delay from its emission, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub beacon: u8,
    pub delay_ms: f64,
}

/// A position fitted to a phone's arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub x_m: f64,
    pub y_m: f64,
    /// The phone's common offset (microphone latency and the rest), ms.
    pub offset_ms: f64,
    /// Root mean square of what the fit leaves unexplained, ms.
    pub residual_ms: f64,
    /// How far the position may be off, one standard deviation, m: the geometry of the beacons
    /// heard times the timing error (the residual, or [`TIMING_FLOOR_MS`] if that is larger).
    pub uncertainty_m: f64,
    /// The beacons the fit used (one whose delay disagrees with all the others may be left
    /// out when ≥ 5 were heard).
    pub beacons_used: usize,
}

/// When a fit is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// A fit leaving more than this (RMS, ms) is refused: some delay was not the direct sound.
    pub max_residual_ms: f64,
    /// A fit whose position is this uncertain (m, one standard deviation) is refused.
    pub max_uncertainty_m: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_residual_ms: 1.0,
            max_uncertainty_m: 0.75,
        }
    }
}

/// Why a phone's arrivals give no position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("{heard} beacon(s) heard; locating by sound needs at least {MIN_BEACONS}")]
    TooFew { heard: usize },
    #[error("beacon {0} was reported twice, or is not a beacon of the session")]
    UnknownBeacon(u8),
    #[error("a delay is not a finite number of milliseconds within the session's period")]
    BadDelay,
    #[error(
        "the delays do not fit one position (residual {residual_ms:.2} ms, at most {limit_ms:.2})"
    )]
    Residual { residual_ms: f64, limit_ms: f64 },
    #[error(
        "the beacons heard fix the position only to {uncertainty_m:.1} m (at most {limit_m:.1})"
    )]
    Uncertain { uncertainty_m: f64, limit_m: f64 },
}

/// Where a phone may be (m): the scene. The search covers it and the beacons, with a margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

/// Three unknowns, and one more beacon to tell a fit from an exact solution.
pub const MIN_BEACONS: usize = 4;

/// The least timing error a fit is trusted to have (ms): the beacons' clocks agree to about
/// this (docs/clock-sync.md), so a fit through four delays that happens to be exact is not
/// taken for better than that.
pub const TIMING_FLOOR_MS: f64 = 0.35;

/// The speed of sound in dry air at `celsius` (m/s): 331.3 · √(1 + T / 273.15), 343.2 at 20 °C.
pub fn speed_of_sound(celsius: f64) -> f64 {
    331.3 * (1.0 + celsius / 273.15).sqrt()
}

/// Fits a position to the arrivals. `beacons` are the session's; `max_delay_ms` bounds a
/// delay (the session's period); `area` is where the phone may be (none: around the beacons).
pub fn solve(
    beacons: &[Beacon],
    arrivals: &[Arrival],
    speed_m_s: f64,
    max_delay_ms: f64,
    area: Option<Area>,
    limits: &Limits,
) -> Result<Fit, Refusal> {
    let mut heard: Vec<(Beacon, f64)> = Vec::with_capacity(arrivals.len());
    for a in arrivals {
        if !a.delay_ms.is_finite() || a.delay_ms.abs() > max_delay_ms {
            return Err(Refusal::BadDelay);
        }
        let Some(b) = beacons.iter().find(|b| b.index == a.beacon) else {
            return Err(Refusal::UnknownBeacon(a.beacon));
        };
        if heard.iter().any(|(h, _)| h.index == a.beacon) {
            return Err(Refusal::UnknownBeacon(a.beacon));
        }
        heard.push((*b, a.delay_ms));
    }
    if heard.len() < MIN_BEACONS {
        return Err(Refusal::TooFew { heard: heard.len() });
    }
    let secs_per_m = 1000.0 / speed_m_s;
    let mut best = fit(&heard, secs_per_m, area);
    // one delay that is not the direct sound (a reflection, a noise peak) spoils a fit
    // through all of them; with one to spare, the fit without it may be clean
    if best.residual_ms > limits.max_residual_ms && heard.len() > MIN_BEACONS {
        for skip in 0..heard.len() {
            let mut rest = heard.clone();
            rest.remove(skip);
            let candidate = fit(&rest, secs_per_m, area);
            if candidate.residual_ms < best.residual_ms {
                best = candidate;
            }
        }
    }
    if best.residual_ms > limits.max_residual_ms {
        return Err(Refusal::Residual {
            residual_ms: best.residual_ms,
            limit_ms: limits.max_residual_ms,
        });
    }
    // an infinite uncertainty (beacons in a line) is refused too
    if best.uncertainty_m.is_nan() || best.uncertainty_m > limits.max_uncertainty_m {
        return Err(Refusal::Uncertain {
            uncertainty_m: best.uncertainty_m,
            limit_m: limits.max_uncertainty_m,
        });
    }
    Ok(best)
}

/// The least-squares fit through every (beacon, delay): a coarse search over the area around
/// the beacons for the basin, then Gauss-Newton from there.
fn fit(heard: &[(Beacon, f64)], ms_per_m: f64, area: Option<Area>) -> Fit {
    let (mut x0, mut x1, mut y0, mut y1) = match area {
        Some(a) => (a.x0, a.x1, a.y0, a.y1),
        None => (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
    };
    for (b, _) in heard {
        x0 = x0.min(b.x_m);
        x1 = x1.max(b.x_m);
        y0 = y0.min(b.y_m);
        y1 = y1.max(b.y_m);
    }
    let margin = 0.1 * (x1 - x0).max(y1 - y0).max(1.0);
    let (x0, x1, y0, y1) = (x0 - margin, x1 + margin, y0 - margin, y1 + margin);
    const STEPS: usize = 48;
    let mut start = (0.0, 0.0, f64::MAX);
    for i in 0..=STEPS {
        for j in 0..=STEPS {
            let x = x0 + (x1 - x0) * i as f64 / STEPS as f64;
            let y = y0 + (y1 - y0) * j as f64 / STEPS as f64;
            let cost = cost(heard, ms_per_m, x, y).0;
            if cost < start.2 {
                start = (x, y, cost);
            }
        }
    }
    let (mut x, mut y) = (start.0, start.1);
    for _ in 0..30 {
        let Some((dx, dy)) = gauss_newton_step(heard, ms_per_m, x, y) else {
            break;
        };
        x += dx;
        y += dy;
        if dx.hypot(dy) < 1e-6 {
            break;
        }
    }
    // a fit that ran off the searched area has followed a direction the delays do not pin
    // down (or the phone is not where phones may be): worth nothing
    let ran_off = !(x0..=x1).contains(&x) || !(y0..=y1).contains(&y);
    let (sum_sq, offset_ms) = cost(heard, ms_per_m, x, y);
    let n = heard.len() as f64;
    // three fitted unknowns: the RMS over the degrees of freedom left
    let residual_ms = (sum_sq / (n - 3.0).max(1.0)).sqrt();
    let sigma_ms = residual_ms.max(TIMING_FLOOR_MS);
    Fit {
        x_m: x,
        y_m: y,
        offset_ms,
        residual_ms,
        uncertainty_m: if ran_off {
            f64::INFINITY
        } else {
            position_sd(heard, ms_per_m, x, y, sigma_ms)
        },
        beacons_used: heard.len(),
    }
}

/// The sum of squared residuals at (x, y) with the best offset there, and that offset.
fn cost(heard: &[(Beacon, f64)], ms_per_m: f64, x: f64, y: f64) -> (f64, f64) {
    let n = heard.len() as f64;
    let left = |(b, delay): &(Beacon, f64)| delay - (x - b.x_m).hypot(y - b.y_m) * ms_per_m;
    let offset = heard.iter().map(left).sum::<f64>() / n;
    let sum_sq = heard.iter().map(|h| (left(h) - offset).powi(2)).sum();
    (sum_sq, offset)
}

/// Rows of the Jacobian of the model (delay = distance · ms_per_m + offset) in (x, y, offset).
fn jacobian(heard: &[(Beacon, f64)], ms_per_m: f64, x: f64, y: f64) -> Vec<[f64; 3]> {
    heard
        .iter()
        .map(|(b, _)| {
            let d = (x - b.x_m).hypot(y - b.y_m).max(1e-6);
            [ms_per_m * (x - b.x_m) / d, ms_per_m * (y - b.y_m) / d, 1.0]
        })
        .collect()
}

fn normal_matrix(rows: &[[f64; 3]]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for r in rows {
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += r[i] * r[j];
            }
        }
    }
    m
}

fn invert(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if !det.is_normal() {
        return None;
    }
    let c = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let mut inv = [[0.0; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = c(j, i) / det; // the adjugate is the transposed cofactor matrix
        }
    }
    Some(inv)
}

/// One Gauss-Newton step in (x, y); the offset is solved along with them and dropped.
fn gauss_newton_step(heard: &[(Beacon, f64)], ms_per_m: f64, x: f64, y: f64) -> Option<(f64, f64)> {
    let (_, offset) = cost(heard, ms_per_m, x, y);
    let rows = jacobian(heard, ms_per_m, x, y);
    let inv = invert(&normal_matrix(&rows))?;
    let mut g = [0.0; 3];
    for (r, (b, delay)) in rows.iter().zip(heard) {
        let left = delay - (x - b.x_m).hypot(y - b.y_m) * ms_per_m - offset;
        for i in 0..3 {
            g[i] += r[i] * left;
        }
    }
    let step = |i: usize| inv[i][0] * g[0] + inv[i][1] * g[1] + inv[i][2] * g[2];
    let (dx, dy) = (step(0), step(1));
    (dx.is_finite() && dy.is_finite()).then_some((dx, dy))
}

/// One standard deviation of the position (m) for a timing error of `sigma_ms` per delay.
fn position_sd(heard: &[(Beacon, f64)], ms_per_m: f64, x: f64, y: f64, sigma_ms: f64) -> f64 {
    match invert(&normal_matrix(&jacobian(heard, ms_per_m, x, y))) {
        // a variance below zero is a matrix too near singular to invert in floating point
        Some(cov) if cov[0][0] >= 0.0 && cov[1][1] >= 0.0 => {
            sigma_ms * (cov[0][0] + cov[1][1]).sqrt()
        }
        Some(_) => f64::INFINITY,
        None => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: f64 = 343.0;

    fn beacons(n: usize) -> Vec<Beacon> {
        let places = [
            (-2.0, -2.0),
            (102.0, -2.0),
            (102.0, 62.0),
            (-2.0, 62.0),
            (50.0, -2.0),
            (50.0, 62.0),
        ];
        places[..n]
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| Beacon {
                index: i as u8,
                x_m: x,
                y_m: y,
            })
            .collect()
    }

    /// What a phone at (x, y) with `offset_ms` hears, each delay off by `errors_ms[i]`.
    fn heard(bs: &[Beacon], x: f64, y: f64, offset_ms: f64, errors_ms: &[f64]) -> Vec<Arrival> {
        bs.iter()
            .zip(errors_ms.iter().chain(std::iter::repeat(&0.0)))
            .map(|(b, e)| Arrival {
                beacon: b.index,
                delay_ms: (x - b.x_m).hypot(y - b.y_m) / C * 1000.0 + offset_ms + e,
            })
            .collect()
    }

    #[test]
    fn exact_delays_give_the_place_whatever_the_common_offset() {
        for &(x, y, offset) in &[(10.0, 10.0, 5.0), (80.0, 45.0, 60.0), (50.0, 30.0, -300.0)] {
            for n in [4, 6] {
                let bs = beacons(n);
                let fit = solve(
                    &bs,
                    &heard(&bs, x, y, offset, &[]),
                    C,
                    5000.0,
                    None,
                    &Limits::default(),
                )
                .unwrap();
                assert!(
                    (fit.x_m - x).abs() < 1e-3 && (fit.y_m - y).abs() < 1e-3,
                    "{fit:?}"
                );
                assert!((fit.offset_ms - offset).abs() < 1e-3, "{fit:?}");
                assert!(fit.residual_ms < 1e-6);
            }
        }
    }

    #[test]
    fn small_timing_errors_move_the_place_a_little() {
        let bs = beacons(6);
        let arrivals = heard(&bs, 30.0, 20.0, 12.0, &[0.3, -0.2, 0.25, -0.3, 0.1, 0.0]);
        let fit = solve(&bs, &arrivals, C, 5000.0, None, &Limits::default()).unwrap();
        let err = (fit.x_m - 30.0).hypot(fit.y_m - 20.0);
        assert!(err < 0.3, "{err} {fit:?}");
        assert!(fit.residual_ms > 0.05 && fit.residual_ms < 0.5, "{fit:?}");
    }

    #[test]
    fn one_reflection_among_six_is_left_out_and_the_place_kept() {
        let bs = beacons(6);
        // beacon 2's delay is a reflection, 25 ms late
        let arrivals = heard(&bs, 70.0, 15.0, 30.0, &[0.0, 0.0, 25.0, 0.0, 0.0, 0.0]);
        let fit = solve(&bs, &arrivals, C, 5000.0, None, &Limits::default()).unwrap();
        assert_eq!(fit.beacons_used, 5);
        assert!((fit.x_m - 70.0).hypot(fit.y_m - 15.0) < 0.01, "{fit:?}");
    }

    #[test]
    fn bad_fits_and_bad_input_are_refused() {
        let bs = beacons(4);
        let limits = Limits::default();
        let four = heard(&bs, 20.0, 20.0, 10.0, &[]);
        assert_eq!(
            solve(&bs, &four[..3], C, 5000.0, None, &limits),
            Err(Refusal::TooFew { heard: 3 })
        );
        let mut nan = four.clone();
        nan[1].delay_ms = f64::NAN;
        assert_eq!(
            solve(&bs, &nan, C, 5000.0, None, &limits),
            Err(Refusal::BadDelay)
        );
        let mut far = four.clone();
        far[1].delay_ms = 9000.0;
        assert_eq!(
            solve(&bs, &far, C, 5000.0, None, &limits),
            Err(Refusal::BadDelay)
        );
        let mut twice = four.clone();
        twice[1].beacon = 0;
        assert_eq!(
            solve(&bs, &twice, C, 5000.0, None, &limits),
            Err(Refusal::UnknownBeacon(0))
        );
        let mut stranger = four.clone();
        stranger[1].beacon = 7;
        assert_eq!(
            solve(&bs, &stranger, C, 5000.0, None, &limits),
            Err(Refusal::UnknownBeacon(7))
        );
        // six delays that fit no position: refused, not placed somewhere
        let bs6 = beacons(6);
        let wild = heard(
            &bs6,
            50.0,
            30.0,
            0.0,
            &[0.0, 40.0, -30.0, 15.0, 60.0, -20.0],
        );
        assert!(matches!(
            solve(&bs6, &wild, C, 5000.0, None, &limits),
            Err(Refusal::Residual { .. })
        ));
        // four beacons a metre apart, the phone 60 m off: the direction is known, the
        // distance hardly at all
        let huddle: Vec<Beacon> = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| Beacon {
                index: i as u8,
                x_m: x,
                y_m: y,
            })
            .collect();
        let from_afar = heard(&huddle, 60.0, 20.0, 5.0, &[0.1, -0.1, 0.05, 0.0]);
        let scene = Area {
            x0: 0.0,
            y0: 0.0,
            x1: 100.0,
            y1: 60.0,
        };
        let afar = solve(&huddle, &from_afar, C, 5000.0, Some(scene), &limits);
        assert!(matches!(afar, Err(Refusal::Uncertain { .. })), "{afar:?}");
    }

    #[test]
    fn sound_is_faster_when_warmer() {
        assert!((speed_of_sound(20.0) - 343.2).abs() < 0.1);
        assert!(speed_of_sound(35.0) > speed_of_sound(0.0));
    }
}
