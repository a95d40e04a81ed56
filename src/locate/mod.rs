//! Locating phones (DESIGN.md, "Scene coordinates and locating"): every method produces an
//! observation (pixel, position, method, confidence, observer, time), and a pixel's location is
//! resolved from them. One file per method.

pub mod flash;
pub mod gps;
pub mod homography;
pub mod qr;
pub mod seat;
pub mod sound;

use serde::Serialize;
use utoipa::ToSchema;

use crate::scene::LocationMethod;

/// Observations below this confidence are recorded but do not move the pixel.
pub const MIN_CONFIDENCE: f32 = 0.5;

/// A position for a pixel, from one method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub x: f64,
    pub y: f64,
    pub method: LocationMethod,
    pub confidence: f32,
}

/// The pixel's current location, as far as resolving is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Current {
    pub x: f64,
    pub y: f64,
    pub method: LocationMethod,
}

/// A new confident observation far from where the pixel was: shown to the observer, never
/// averaged away.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Contradiction {
    /// Where the pixel was, and by which method.
    pub previous_x: f64,
    pub previous_y: f64,
    pub previous_method: LocationMethod,
    /// How far the new observation is from it, in scene units.
    pub distance: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The observation becomes the pixel's location (the newest confident one wins).
    Place {
        contradiction: Option<Contradiction>,
    },
    /// Recorded only: not confident enough to move the pixel.
    Record,
}

/// Decides what a new observation does. `tolerance` is the distance (scene units) within which
/// two observations agree.
pub fn resolve(current: Option<Current>, new: &Observation, tolerance: f64) -> Decision {
    if new.confidence < MIN_CONFIDENCE {
        return Decision::Record;
    }
    let contradiction = current.and_then(|c| {
        let distance = ((c.x - new.x).powi(2) + (c.y - new.y).powi(2)).sqrt();
        (distance > tolerance).then_some(Contradiction {
            previous_x: c.x,
            previous_y: c.y,
            previous_method: c.method,
            distance,
        })
    });
    Decision::Place { contradiction }
}

/// Two observations agree within this share of the scene's diagonal.
pub const AGREEMENT_SHARE: f64 = 0.05;

pub fn tolerance(width: f64, height: f64) -> f64 {
    (width * width + height * height).sqrt() * AGREEMENT_SHARE
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting; none when `a` is
/// (numerically) singular. Shared by the GPS and photo fits.
pub(crate) fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-300);
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < scale * 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..N {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (cell, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *cell -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; N];
    for row in (0..N).rev() {
        let s: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(x: f64, y: f64, confidence: f32) -> Observation {
        Observation {
            x,
            y,
            method: LocationMethod::Seat,
            confidence,
        }
    }

    #[test]
    fn newest_confident_wins_and_far_ones_are_flagged() {
        let here = Some(Current {
            x: 10.0,
            y: 10.0,
            method: LocationMethod::Qr,
        });
        assert_eq!(
            resolve(here, &obs(10.5, 10.0, 0.9), 1.0),
            Decision::Place {
                contradiction: None
            }
        );
        let Decision::Place {
            contradiction: Some(c),
        } = resolve(here, &obs(20.0, 10.0, 0.9), 1.0)
        else {
            panic!("a far observation is a contradiction");
        };
        assert_eq!(c.previous_method, LocationMethod::Qr);
        assert!((c.distance - 10.0).abs() < 1e-9);
        assert_eq!(resolve(here, &obs(20.0, 10.0, 0.2), 1.0), Decision::Record);
        assert_eq!(
            resolve(None, &obs(1.0, 1.0, 0.5), 1.0),
            Decision::Place {
                contradiction: None
            }
        );
        assert!((tolerance(30.0, 40.0) - 2.5).abs() < 1e-9);
    }
}
