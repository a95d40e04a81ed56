//! Test images made on the spot, in every accepted format, and some that must be refused.

use std::io::{Cursor, Write};

use image::{Delay, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// A small image with a gradient, so every pixel differs.
pub fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 3) as u8])
    })
}

pub fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format)
        .expect("encode test image");
    out
}

pub fn png(w: u32, h: u32) -> Vec<u8> {
    encode(&gradient(w, h), ImageFormat::Png)
}

/// An animated GIF whose frames are solid red, green, blue ... with the given delays.
pub fn animated_gif(delays_ms: &[u32]) -> Vec<u8> {
    let colours = [
        [255, 0, 0, 255],
        [0, 255, 0, 255],
        [0, 0, 255, 255],
        [255, 255, 0, 255],
    ];
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        for (i, &d) in delays_ms.iter().enumerate() {
            let img = RgbaImage::from_pixel(6, 4, Rgba(colours[i % colours.len()]));
            enc.encode_frame(Frame::from_parts(
                img,
                0,
                0,
                Delay::from_numer_denom_ms(d, 1),
            ))
            .expect("encode gif frame");
        }
    }
    out
}

/// A decompression bomb: a valid, small PNG whose header announces 30000 × 30000 pixels.
pub fn png_bomb() -> Vec<u8> {
    let (w, h) = (30_000u32, 30_000u32);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; 1 + (w as usize).div_ceil(8)]; // filter byte + 1-bit pixels
    for _ in 0..h {
        zlib.write_all(&row).unwrap();
    }
    let idat = zlib.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // 1-bit greyscale, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat), (b"IEND", &[])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    png
}

/// A PNG of `w` × `h` with the given colours, row by row.
pub fn png_of(w: u32, h: u32, colours: &[[u8; 3]]) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| Rgb(colours[(y * w + x) as usize]));
    encode(&img, ImageFormat::Png)
}
