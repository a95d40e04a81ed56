//! Frame uploads: what is accepted, how it is checked and how an animation becomes frames.
//!
//! Everything here is pure and CPU-bound; callers run it in `spawn_blocking`. A file is
//! refused before any pixel buffer is allocated when its header announces more pixels than
//! allowed, so a decompression bomb costs nothing but its header.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

/// Bounds on what an upload may decode to.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_pixels: u64,
    pub max_animation_frames: usize,
    /// Pixels all of an animation's frames may decode to, together.
    pub max_animation_pixels: u64,
}

/// An accepted image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    Png,
    Jpeg,
    Gif,
    Webp,
}

impl FrameFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            FrameFormat::Png => "image/png",
            FrameFormat::Jpeg => "image/jpeg",
            FrameFormat::Gif => "image/gif",
            FrameFormat::Webp => "image/webp",
        }
    }

    fn from_image(format: ImageFormat) -> Option<Self> {
        match format {
            ImageFormat::Png => Some(FrameFormat::Png),
            ImageFormat::Jpeg => Some(FrameFormat::Jpeg),
            ImageFormat::Gif => Some(FrameFormat::Gif),
            ImageFormat::WebP => Some(FrameFormat::Webp),
            _ => None,
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            FrameFormat::Png => ImageFormat::Png,
            FrameFormat::Jpeg => ImageFormat::Jpeg,
            FrameFormat::Gif => ImageFormat::Gif,
            FrameFormat::Webp => ImageFormat::WebP,
        }
    }
}

/// One frame ready to store: its bytes and what the `frame` row says of them.
#[derive(Debug, Clone)]
pub struct PreparedFrame {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    pub sha256: [u8; 32],
    /// The animation's own delay for this frame; none for a still image.
    pub delay_ms: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("the body is empty")]
    Empty,
    #[error("this is not a PNG, JPEG, GIF or WebP image")]
    UnsupportedFormat,
    #[error("the body is {actual} but was sent as {declared}")]
    ContentTypeMismatch {
        declared: String,
        actual: &'static str,
    },
    #[error("the image is {width}×{height} pixels; at most {limit} pixels are allowed")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the animation has more than {limit} frames")]
    TooManyFrames { limit: usize },
    #[error("the animation's frames decode to more than {limit} pixels together")]
    AnimationTooLarge { limit: u64 },
    #[error("the image cannot be decoded: {0}")]
    Undecodable(String),
}

/// GIF delays under 20 ms are shown as 100 ms by browsers; keep to what people have seen.
const MIN_ANIMATION_DELAY_MS: u32 = 20;
const DEFAULT_ANIMATION_DELAY_MS: u32 = 100;

/// Checks an upload and turns it into frames. A still image keeps its original bytes (so it
/// round-trips byte-identical); an animated GIF or WebP becomes one PNG per animation frame,
/// each the full composited canvas, with the animation's delays.
pub fn prepare_upload(
    bytes: Vec<u8>,
    declared_type: Option<&str>,
    limits: UploadLimits,
) -> Result<Vec<PreparedFrame>, FrameError> {
    if bytes.is_empty() {
        return Err(FrameError::Empty);
    }
    let format = image::guess_format(&bytes)
        .ok()
        .and_then(FrameFormat::from_image)
        .ok_or(FrameError::UnsupportedFormat)?;
    if let Some(declared) = declared_type {
        let declared = declared.split(';').next().unwrap_or_default().trim();
        let is_image_type = declared.starts_with("image/");
        let same = declared == format.content_type()
            || (format == FrameFormat::Jpeg && declared == "image/jpg");
        if is_image_type && !same {
            return Err(FrameError::ContentTypeMismatch {
                declared: declared.to_owned(),
                actual: format.content_type(),
            });
        }
    }

    let (width, height) = ImageReader::with_format(Cursor::new(&bytes), format.image_format())
        .into_dimensions()
        .map_err(|e| FrameError::Undecodable(e.to_string()))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(FrameError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }

    let animated = match format {
        FrameFormat::Gif => split_animation(
            GifDecoder::new(Cursor::new(&bytes)).map_err(undecodable)?,
            limits,
        )?,
        FrameFormat::Webp => {
            let decoder = WebPDecoder::new(Cursor::new(&bytes)).map_err(undecodable)?;
            if decoder.has_animation() {
                split_animation(decoder, limits)?
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    if animated.len() > 1 {
        return Ok(animated);
    }
    let delay_ms = animated.first().and_then(|f| f.delay_ms);

    // A still image: decode it once, fully, to be sure it is whole, then keep the original.
    let mut reader = ImageReader::with_format(Cursor::new(&bytes), format.image_format());
    reader.limits(decode_limits(width, height));
    reader.decode().map_err(undecodable)?;
    Ok(vec![PreparedFrame {
        sha256: Sha256::digest(&bytes).into(),
        content_type: format.content_type(),
        width,
        height,
        delay_ms: delay_ms.filter(|_| format == FrameFormat::Gif),
        bytes,
    }])
}

/// What decoding `bytes` may hold in memory at once, in MiB, from its header alone (no
/// pixel is decoded): an animation holds its canvas, the previous canvas and the frame being
/// composited (RGBA8), a still image its 16-bit RGBA buffer; 16 MiB of slack either way.
/// `None` when the header cannot be read (the decode itself then says why).
pub fn decode_memory_mib(bytes: &[u8]) -> Option<u64> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let format = reader.format()?;
    let (w, h) = reader.into_dimensions().ok()?;
    let per_pixel = match format {
        ImageFormat::Gif | ImageFormat::WebP => 12,
        _ => 8,
    };
    let bytes = u64::from(w)
        .saturating_mul(u64::from(h))
        .saturating_mul(per_pixel);
    Some((bytes >> 20).saturating_add(16))
}

fn undecodable(e: image::ImageError) -> FrameError {
    FrameError::Undecodable(e.to_string())
}

/// The allocation budget for one image of this size: its RGBA16 buffer and some slack.
fn decode_limits(width: u32, height: u32) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (16 << 20));
    limits
}

/// Decodes every animation frame (one canvas at a time) and encodes each as PNG.
fn split_animation<'a>(
    mut decoder: impl AnimationDecoder<'a> + ImageDecoder,
    limits: UploadLimits,
) -> Result<Vec<PreparedFrame>, FrameError> {
    let (width, height) = decoder.dimensions();
    decoder
        .set_limits(decode_limits(width, height))
        .map_err(undecodable)?;
    let canvas_pixels = u64::from(width) * u64::from(height);
    let mut decoded = 0u64;
    let mut out = Vec::new();
    for frame in decoder.into_frames() {
        if out.len() == limits.max_animation_frames {
            return Err(FrameError::TooManyFrames {
                limit: limits.max_animation_frames,
            });
        }
        // one canvas at a time: what a frame decodes to is counted as it comes
        decoded += canvas_pixels;
        if decoded > limits.max_animation_pixels {
            return Err(FrameError::AnimationTooLarge {
                limit: limits.max_animation_pixels,
            });
        }
        let frame = frame.map_err(undecodable)?;
        let (num, den) = frame.delay().numer_denom_ms();
        let delay = num.checked_div(den).unwrap_or(0);
        let delay_ms = if delay < MIN_ANIMATION_DELAY_MS {
            DEFAULT_ANIMATION_DELAY_MS
        } else {
            delay
        };
        let canvas = frame.into_buffer();
        let mut png = Vec::new();
        canvas
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .map_err(undecodable)?;
        out.push(PreparedFrame {
            sha256: Sha256::digest(&png).into(),
            content_type: FrameFormat::Png.content_type(),
            width: canvas.width(),
            height: canvas.height(),
            delay_ms: Some(delay_ms),
            bytes: png,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Delay, Frame, Rgba, RgbaImage};

    const LIMITS: UploadLimits = UploadLimits {
        max_pixels: 1_000_000,
        max_animation_frames: 10,
        max_animation_pixels: 1_000_000_000,
    };

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbaImage::from_pixel(w, h, Rgba([1, 2, 3, 255]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    fn gif(delays_ms: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
            for (i, &d) in delays_ms.iter().enumerate() {
                let img = RgbaImage::from_pixel(4, 3, Rgba([i as u8 * 50, 0, 0, 255]));
                enc.encode_frame(Frame::from_parts(
                    img,
                    0,
                    0,
                    Delay::from_numer_denom_ms(d, 1),
                ))
                .unwrap();
            }
        }
        out
    }

    #[test]
    fn still_png_keeps_its_bytes() {
        let bytes = png(5, 4);
        let frames = prepare_upload(bytes.clone(), Some("image/png"), LIMITS).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].bytes, bytes);
        assert_eq!((frames[0].width, frames[0].height), (5, 4));
        assert_eq!(frames[0].delay_ms, None);
    }

    #[test]
    fn animated_gif_splits_with_delays() {
        let frames = prepare_upload(gif(&[50, 200, 5]), None, LIMITS).unwrap();
        let delays: Vec<_> = frames.iter().map(|f| f.delay_ms.unwrap()).collect();
        assert_eq!(delays, [50, 200, DEFAULT_ANIMATION_DELAY_MS]);
        assert!(frames.iter().all(|f| f.content_type == "image/png"));
    }

    #[test]
    fn too_many_animation_frames_is_refused() {
        let limits = UploadLimits {
            max_animation_frames: 2,
            ..LIMITS
        };
        assert_eq!(
            prepare_upload(gif(&[50, 50, 50]), None, limits).unwrap_err(),
            FrameError::TooManyFrames { limit: 2 }
        );
        // the pixels of every frame count together, whatever the frame count allows
        let one = image::load_from_memory(&gif(&[50])).unwrap();
        let (w, h) = (one.width(), one.height());
        let limits = UploadLimits {
            max_animation_pixels: 2 * u64::from(w) * u64::from(h),
            ..LIMITS
        };
        assert!(prepare_upload(gif(&[50, 50]), None, limits).is_ok());
        assert_eq!(
            prepare_upload(gif(&[50, 50, 50]), None, limits).unwrap_err(),
            FrameError::AnimationTooLarge {
                limit: limits.max_animation_pixels
            }
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            prepare_upload(Vec::new(), None, LIMITS).unwrap_err(),
            FrameError::Empty
        );
        assert_eq!(
            prepare_upload(b"hello world".to_vec(), Some("image/png"), LIMITS).unwrap_err(),
            FrameError::UnsupportedFormat
        );
        assert!(matches!(
            prepare_upload(png(2, 2), Some("image/jpeg"), LIMITS).unwrap_err(),
            FrameError::ContentTypeMismatch { .. }
        ));
        assert!(matches!(
            prepare_upload(png(1001, 1000), None, LIMITS).unwrap_err(),
            FrameError::TooManyPixels { .. }
        ));
        let mut truncated = png(300, 300);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            prepare_upload(truncated, None, LIMITS).unwrap_err(),
            FrameError::Undecodable(_)
        ));
    }
}
