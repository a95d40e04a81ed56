//! An observer's crowd photo as the finder reads it: its brightness, nothing else, decoded
//! within the limits (its size is read from the header and refused before any decoding).
//!
//! (Decoding a JPEG's Y plane alone with zune-jpeg was measured: 0.21 s for a 24 MP photo,
//! the same as the full decode turned grey, so the one `image` path stays.)

use std::io::Cursor;

use image::GrayImage;

/// Why a photo cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("a photo is a JPEG or PNG image")]
    NotAPhoto,
    #[error("the photo is {width}×{height}; at most {max} pixels are taken")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    #[error("the photo cannot be decoded: {0}")]
    Undecodable(String),
}

/// The photo's brightness, refused before decoding when it is larger than `max_pixels`.
pub fn decode_gray(bytes: &[u8], max_pixels: u64) -> Result<GrayImage, PhotoError> {
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Jpeg | image::ImageFormat::Png))
        .ok_or(PhotoError::NotAPhoto)?;
    let (width, height) = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| PhotoError::Undecodable(e.to_string()))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(PhotoError::TooManyPixels {
            width,
            height,
            max: max_pixels,
        });
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 4 + (64 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| PhotoError::Undecodable(e.to_string()))?;
    Ok(img.to_luma8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(img: &image::RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(img)
            .unwrap();
        out
    }

    #[test]
    fn a_jpeg_reads_as_its_brightness() {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 200 - (x + y) as u8])
        });
        let bytes = jpeg(&img);
        let gray = decode_gray(&bytes, 1 << 20).unwrap();
        assert_eq!(gray.dimensions(), (64, 48));
        // within JPEG's loss of the grey of the picture encoded
        let expected = image::DynamicImage::ImageRgb8(img).to_luma8();
        let worst = gray
            .pixels()
            .zip(expected.pixels())
            .map(|(a, b)| (i16::from(a[0]) - i16::from(b[0])).abs())
            .max()
            .unwrap();
        assert!(worst <= 6, "the grey differs from the picture's by {worst}");
    }

    #[test]
    fn too_big_or_not_a_photo_is_refused_before_decoding() {
        let bytes = jpeg(&image::RgbImage::new(100, 100));
        assert!(matches!(
            decode_gray(&bytes, 9_999),
            Err(PhotoError::TooManyPixels {
                width: 100,
                height: 100,
                ..
            })
        ));
        assert!(matches!(
            decode_gray(b"GIF89a....", 1 << 20),
            Err(PhotoError::NotAPhoto)
        ));
        let mut garbage = vec![0xFF, 0xD8, 0xFF, 0xE0];
        garbage.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        assert!(matches!(
            decode_gray(&garbage, 1 << 20),
            Err(PhotoError::Undecodable(_))
        ));
    }
}
