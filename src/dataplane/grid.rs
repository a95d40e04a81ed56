//! The grid a show's frames are resampled to, and one frame on it (a [`Raster`]).
//!
//! A show's frames are mapped onto the scene rectangle through one grid (its cells are what
//! phones sample): the largest frame's resolution, capped at [`MAX_GRID_CELLS`]. A phone's
//! colour at an instant is its cell's colour in the frame showing then.

use image::imageops::FilterType;

use crate::playback::Show;

/// Cells in a show's grid at most (512 × 512): finer than any crowd.
pub const MAX_GRID_CELLS: u64 = 512 * 512;

/// The resolution frames are resampled to; a phone's colour is its cell's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub struct Grid {
    pub w: u32,
    pub h: u32,
}

impl Grid {
    /// The largest frame's size, scaled down (keeping its shape) to at most `MAX_GRID_CELLS`.
    pub fn for_show(show: &Show) -> Grid {
        let (w, h) = show
            .frames
            .iter()
            .map(|f| (f.width.max(1), f.height.max(1)))
            .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
            .unwrap_or((1, 1));
        let cells = u64::from(w) * u64::from(h);
        if cells <= MAX_GRID_CELLS {
            return Grid { w, h };
        }
        let scale = (MAX_GRID_CELLS as f64 / cells as f64).sqrt();
        Grid {
            w: ((f64::from(w) * scale) as u32).max(1),
            h: ((f64::from(h) * scale) as u32).max(1),
        }
    }

    pub fn cells(&self) -> usize {
        self.w as usize * self.h as usize
    }

    /// The cell of scene point (x, y) in a scene of `scene_w` × `scene_h` units.
    pub fn cell_of(&self, x: f32, y: f32, scene_w: f32, scene_h: f32) -> u32 {
        let cx = ((x / scene_w) * self.w as f32).clamp(0.0, (self.w - 1) as f32) as u32;
        let cy = ((y / scene_h) * self.h as f32).clamp(0.0, (self.h - 1) as f32) as u32;
        cy * self.w + cx
    }
}

/// One frame at grid resolution: a colour per cell, row by row.
#[derive(Debug)]
pub struct Raster {
    pub grid: Grid,
    pub rgb: Vec<[u8; 3]>,
}

impl Raster {
    /// Decodes image bytes and resizes them onto `grid` (transparent parts over black).
    pub fn from_image_bytes(bytes: &[u8], grid: Grid) -> Result<Raster, image::ImageError> {
        let img = image::load_from_memory(bytes)?.to_rgb8();
        let img = if img.dimensions() == (grid.w, grid.h) {
            img
        } else {
            image::imageops::resize(&img, grid.w, grid.h, FilterType::Triangle)
        };
        let rgb = img.pixels().map(|p| p.0).collect();
        Ok(Raster { grid, rgb })
    }

    /// Its memory, for the frame cache's budget.
    pub fn bytes(&self) -> u64 {
        (self.rgb.len() * 3) as u64
    }

    /// The colours as one byte string, three bytes a cell, row by row.
    pub fn to_rgb_bytes(&self) -> Vec<u8> {
        self.rgb.iter().flatten().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playback::ShowFrame;

    fn frame(w: u32, h: u32) -> ShowFrame {
        ShowFrame {
            frame_id: uuid::Uuid::new_v4(),
            sha256: String::new(),
            gridfs_id: String::new(),
            duration_ms: 1,
            width: w,
            height: h,
            clip: None,
        }
    }

    #[test]
    fn grid_is_the_largest_frame_capped() {
        let show = Show {
            frames: vec![frame(10, 10), frame(96, 48)],
            looped: false,
        };
        assert_eq!(Grid::for_show(&show), Grid { w: 96, h: 48 });
        let huge = Show {
            frames: vec![frame(4000, 2000)],
            looped: false,
        };
        let g = Grid::for_show(&huge);
        assert!(g.cells() as u64 <= MAX_GRID_CELLS);
        assert!((f64::from(g.w) / f64::from(g.h) - 2.0).abs() < 0.01);
    }

    #[test]
    fn cells_cover_the_scene_and_clamp_its_edges() {
        let g = Grid { w: 4, h: 2 };
        assert_eq!(g.cell_of(0.0, 0.0, 100.0, 50.0), 0);
        assert_eq!(g.cell_of(99.9, 49.9, 100.0, 50.0), 7);
        assert_eq!(g.cell_of(100.0, 50.0, 100.0, 50.0), 7);
        assert_eq!(g.cell_of(-5.0, 30.0, 100.0, 50.0), 4);
        assert_eq!(g.cell_of(30.0, 10.0, 100.0, 50.0), 1);
    }
}
