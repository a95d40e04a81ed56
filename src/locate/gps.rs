//! GPS locating: a scene geo-referenced by three or more (lat, lon) ↔ scene points, and a
//! phone's browser position mapped through it.
//!
//! Positions are first projected to metres on a plane tangent at the reference points'
//! centroid (equirectangular: exact enough over a stadium), then an affine map to scene units
//! is fitted by least squares, which absorbs the scene's rotation, scale and shear.

use serde::{Deserialize, Serialize};

use super::solve;
use utoipa::ToSchema;

/// One reference point: where a scene point is on Earth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
    pub x: f64,
    pub y: f64,
}

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// The fitted map from (lat, lon) to scene (x, y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoReference {
    lat0: f64,
    lon0: f64,
    /// x = a·e + b·n + c, y = d·e + f·n + g (e, n: metres east and north of the centroid)
    coef: [f64; 6],
    /// Largest distance, in scene units, between a reference point and where the fit puts it.
    pub residual: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeoError {
    #[error("at least 3 reference points are needed, {0} given")]
    TooFew(usize),
    #[error("a reference point is not a valid latitude/longitude")]
    BadCoordinate,
    #[error("the reference points are (nearly) on one line; spread them over the scene")]
    Degenerate,
}

impl GeoReference {
    pub fn fit(points: &[GeoPoint]) -> Result<GeoReference, GeoError> {
        if points.len() < 3 {
            return Err(GeoError::TooFew(points.len()));
        }
        if points.iter().any(|p| {
            !(p.lat.is_finite() && p.lon.is_finite() && p.x.is_finite() && p.y.is_finite())
                || p.lat.abs() > 90.0
                || p.lon.abs() > 180.0
        }) {
            return Err(GeoError::BadCoordinate);
        }
        let n = points.len() as f64;
        let lat0 = points.iter().map(|p| p.lat).sum::<f64>() / n;
        let lon0 = points.iter().map(|p| p.lon).sum::<f64>() / n;
        let mut r = GeoReference {
            lat0,
            lon0,
            coef: [0.0; 6],
            residual: 0.0,
        };
        let en: Vec<(f64, f64)> = points.iter().map(|p| r.metres(p.lat, p.lon)).collect();
        // normal equations of [e n 1] · [a b c]ᵀ = x (and the same for y)
        let mut m = [[0.0f64; 3]; 3];
        let (mut bx, mut by) = ([0.0f64; 3], [0.0f64; 3]);
        for (p, &(e, nn)) in points.iter().zip(&en) {
            let row = [e, nn, 1.0];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] += row[i] * row[j];
                }
                bx[i] += row[i] * p.x;
                by[i] += row[i] * p.y;
            }
        }
        let sx = solve(m, bx).ok_or(GeoError::Degenerate)?;
        let sy = solve(m, by).ok_or(GeoError::Degenerate)?;
        r.coef = [sx[0], sx[1], sx[2], sy[0], sy[1], sy[2]];
        r.residual = points
            .iter()
            .map(|p| {
                let (x, y) = r.to_scene(p.lat, p.lon);
                ((x - p.x).powi(2) + (y - p.y).powi(2)).sqrt()
            })
            .fold(0.0, f64::max);
        Ok(r)
    }

    fn metres(&self, lat: f64, lon: f64) -> (f64, f64) {
        let east = (lon - self.lon0).to_radians() * EARTH_RADIUS_M * self.lat0.to_radians().cos();
        let north = (lat - self.lat0).to_radians() * EARTH_RADIUS_M;
        (east, north)
    }

    pub fn to_scene(&self, lat: f64, lon: f64) -> (f64, f64) {
        let (e, n) = self.metres(lat, lon);
        let c = self.coef;
        (c[0] * e + c[1] * n + c[2], c[3] * e + c[4] * n + c[5])
    }

    /// Scene units per metre (the map's mean scale), to compare GPS accuracy with the scene.
    pub fn units_per_metre(&self) -> f64 {
        let c = self.coef;
        ((c[0] * c[4] - c[1] * c[3]).abs()).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 100 m × 60 m pitch, its corners at known coordinates, 1 scene unit = 1 m.
    fn pitch() -> Vec<GeoPoint> {
        let (lat0, lon0) = (55.7158f64, 37.5537f64);
        let dlat = |m: f64| m / 111_195.0;
        let dlon = |m: f64| m / (111_195.0 * lat0.to_radians().cos());
        vec![
            GeoPoint {
                lat: lat0,
                lon: lon0,
                x: 0.0,
                y: 0.0,
            },
            GeoPoint {
                lat: lat0,
                lon: lon0 + dlon(100.0),
                x: 100.0,
                y: 0.0,
            },
            GeoPoint {
                lat: lat0 - dlat(60.0),
                lon: lon0,
                x: 0.0,
                y: 60.0,
            },
            GeoPoint {
                lat: lat0 - dlat(60.0),
                lon: lon0 + dlon(100.0),
                x: 100.0,
                y: 60.0,
            },
        ]
    }

    #[test]
    fn maps_known_points_and_between_them() {
        let r = GeoReference::fit(&pitch()).unwrap();
        assert!(r.residual < 0.05, "{}", r.residual);
        let p = pitch();
        let (x, y) = r.to_scene((p[0].lat + p[3].lat) / 2.0, (p[0].lon + p[3].lon) / 2.0);
        assert!(
            (x - 50.0).abs() < 0.05 && (y - 30.0).abs() < 0.05,
            "{x} {y}"
        );
        assert!((r.units_per_metre() - 1.0).abs() < 0.01);
    }

    #[test]
    fn refuses_too_few_bad_and_collinear_points() {
        let p = pitch();
        assert_eq!(GeoReference::fit(&p[..2]), Err(GeoError::TooFew(2)));
        let mut bad = p.clone();
        bad[0].lat = 95.0;
        assert_eq!(GeoReference::fit(&bad), Err(GeoError::BadCoordinate));
        let line: Vec<_> = (0..3)
            .map(|i| GeoPoint {
                lat: 55.0,
                lon: 37.0 + f64::from(i) * 1e-4,
                x: f64::from(i),
                y: 0.0,
            })
            .collect();
        assert_eq!(GeoReference::fit(&line), Err(GeoError::Degenerate));
    }
}
