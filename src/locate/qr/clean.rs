//! The fast read of a clean version-2 code: its format, unmasking, the Reed–Solomon check and a
//! byte-mode payload, for a grid whose every codeword read right.
//!
//! rqrr decodes any grid, errors corrected; but its syndromes raise the generator to a power
//! by 64 squarings for every term, which made it most of the cost of reading a photo of 1 000
//! codes. A sharp photo's codes are nearly all read without one wrong module, and checking
//! that takes a table lookup per term. [`payload`] answers only for such a grid (and a payload
//! that is one byte-mode segment, as every C3S code's is); anything else, `None`, goes to
//! rqrr as before. It never answers differently from rqrr: a grid whose codewords all check
//! has one reading.

/// Modules per side of a version-2 code.
const SIDE: usize = 25;
/// Codewords of a version-2 code (one block at every error-correction level).
const CODEWORDS: usize = 44;
/// Parity codewords of a version-2 block by the format's level bits (M, L, H, Q).
const PARITY: [usize; 4] = [16, 10, 28, 22];

/// Whether module (x, y) belongs to the fixed structure (finders, separators, format areas,
/// timing patterns, the alignment pattern), not to the data.
fn reserved(x: usize, y: usize) -> bool {
    let far = SIDE - 8;
    // the three finders with their separators and format areas
    (y < 9 && (x < 9 || x >= far))
        || (x < 9 && y >= far)
        || x == 6
        || y == 6
        || ((16..=20).contains(&x) && (16..=20).contains(&y))
}

/// Whether mask `mask` flips module (x, y) (ISO/IEC 18004, table 10: i is the row, j the
/// column).
fn masked(mask: u8, x: usize, y: usize) -> bool {
    let (i, j) = (y, x);
    match mask {
        0 => (i + j) % 2 == 0,
        1 => i % 2 == 0,
        2 => j % 3 == 0,
        3 => (i + j) % 3 == 0,
        4 => (i / 2 + j / 3) % 2 == 0,
        5 => (i * j) % 2 + (i * j) % 3 == 0,
        6 => ((i * j) % 2 + (i * j) % 3) % 2 == 0,
        _ => ((i + j) % 2 + (i * j) % 3) % 2 == 0,
    }
}

/// The 32 valid format words, by their 5 data bits: BCH(15, 5) with generator 0x537, then
/// the fixed mask 0x5412.
const FORMAT_WORDS: [u16; 32] = {
    let mut words = [0u16; 32];
    let mut data = 0;
    while data < 32 {
        let mut rem = (data as u16) << 10;
        let mut shift = 14;
        while shift >= 10 {
            if rem & (1 << shift) != 0 {
                rem ^= 0x537 << (shift - 10);
            }
            shift -= 1;
        }
        words[data] = (((data as u16) << 10) | rem) ^ 0x5412;
        data += 1;
    }
    words
};

/// The format's 5 data bits (level, mask) from its two copies: the nearest valid format word
/// to either copy, within 3 bits.
fn format(dark: &impl Fn(usize, usize) -> bool) -> Option<(usize, u8)> {
    let bit = |x: usize, y: usize| u16::from(dark(x, y));
    // copy 1, around the top-left finder, most significant bit first
    let xs = [8, 8, 8, 8, 8, 8, 8, 8, 7, 5, 4, 3, 2, 1, 0];
    let ys = [0, 1, 2, 3, 4, 5, 7, 8, 8, 8, 8, 8, 8, 8, 8];
    let first = (0..15)
        .rev()
        .fold(0u16, |f, i| (f << 1) | bit(xs[i], ys[i]));
    // copy 2, split between the bottom-left and top-right finders
    let mut second = 0u16;
    for i in 0..7 {
        second = (second << 1) | bit(8, SIDE - 1 - i);
    }
    for i in 0..8 {
        second = (second << 1) | bit(SIDE - 8 + i, 8);
    }
    let distance = |word: u16| {
        (word ^ first)
            .count_ones()
            .min((word ^ second).count_ones())
    };
    let best = (0..32u16).min_by_key(|&data| distance(FORMAT_WORDS[usize::from(data)]));
    let data = best?;
    (distance(FORMAT_WORDS[usize::from(data)]) <= 3)
        .then_some((usize::from(data >> 3), (data & 7) as u8))
}

/// GF(256) with the QR polynomial x⁸ + x⁴ + x³ + x² + 1: powers of 2 and their logarithms.
struct Field {
    exp: [u8; 255],
    log: [u8; 256],
}

static FIELD: std::sync::LazyLock<Field> = std::sync::LazyLock::new(|| {
    let mut field = Field {
        exp: [0; 255],
        log: [0; 256],
    };
    let mut x: u16 = 1;
    for i in 0..255 {
        field.exp[i] = x as u8;
        field.log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11D;
        }
    }
    field
});

/// Whether the block is a Reed–Solomon codeword: it vanishes at 2⁰, 2¹, … 2^(parity - 1).
fn checks(block: &[u8; CODEWORDS], parity: usize) -> bool {
    let f = &*FIELD;
    (0..parity).all(|i| {
        // Horner's rule at 2^i: s = s · 2^i + c
        block.iter().fold(0u8, |s, &c| {
            let times = if s == 0 {
                0
            } else {
                f.exp[(usize::from(f.log[usize::from(s)]) + i) % 255]
            };
            times ^ c
        }) == 0
    })
}

/// The payload of a version-2 grid (`dark(x, y)`) whose codewords all read right and whose
/// data is one byte-mode segment; `None` for anything else.
pub fn payload(dark: impl Fn(usize, usize) -> bool) -> Option<Vec<u8>> {
    let (level, mask) = format(&dark)?;
    let parity = PARITY[level];
    // the data modules in their reading order: column pairs from the right, up then down,
    // skipping the vertical timing pattern
    let mut block = [0u8; CODEWORDS];
    let mut bits = 0;
    let mut x = SIDE - 1;
    let mut upward = true;
    'columns: loop {
        for step in 0..SIDE {
            let y = if upward { SIDE - 1 - step } else { step };
            for xx in [x, x - 1] {
                if reserved(xx, y) {
                    continue;
                }
                if bits == CODEWORDS * 8 {
                    break 'columns;
                }
                let bit = dark(xx, y) != masked(mask, xx, y);
                block[bits / 8] |= u8::from(bit) << (7 - bits % 8);
                bits += 1;
            }
        }
        upward = !upward;
        if x < 3 {
            break;
        }
        x -= 2;
        if x == 6 {
            x = 5;
        }
    }
    if bits != CODEWORDS * 8 || !checks(&block, parity) {
        return None;
    }
    // mode (4 bits), count (8 bits in versions 1–9), the bytes, then the end or a terminator
    let data = &block[..CODEWORDS - parity];
    let bit_at = |k: usize| (data[k / 8] >> (7 - k % 8)) & 1;
    let take = |from: usize, n: usize| {
        (from..from + n).fold(0usize, |v, k| (v << 1) | usize::from(bit_at(k)))
    };
    let available = data.len() * 8;
    if take(0, 4) != 0b0100 {
        return None;
    }
    let count = take(4, 8);
    let end = 12 + 8 * count;
    if end > available {
        return None;
    }
    let rest = (available - end).min(4);
    if rest > 0 && take(end, rest) != 0 {
        // another segment follows: rqrr reads those
        return None;
    }
    Some((0..count).map(|i| take(12 + 8 * i, 8) as u8).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-2 code of `bytes` at `level`, as a grid of dark modules.
    fn code(bytes: &[u8], level: qrcode::EcLevel) -> (Vec<bool>, usize) {
        let code = qrcode::QrCode::with_version(bytes, qrcode::Version::Normal(2), level)
            .expect("fits version 2");
        let width = code.width();
        assert_eq!(width, SIDE);
        let dark = code
            .to_colors()
            .into_iter()
            .map(|c| c == qrcode::Color::Dark)
            .collect();
        (dark, width)
    }

    fn rqrr_read(grid: &[bool]) -> Option<(Vec<u8>, u16)> {
        let grid = rqrr::Grid::new(rqrr::SimpleGrid::from_func(SIDE, |x, y| grid[y * SIDE + x]));
        let mut out = Vec::new();
        let meta = grid.decode_to(&mut out).ok()?;
        Some((out, meta.mask))
    }

    #[test]
    fn a_clean_code_reads_as_rqrr_reads_it_at_every_mask_and_level() {
        let mut masks = [false; 8];
        let levels = [
            (qrcode::EcLevel::L, 32),
            (qrcode::EcLevel::M, 26),
            (qrcode::EcLevel::Q, 20),
            (qrcode::EcLevel::H, 14),
        ];
        for n in 0..400u32 {
            let (level, max) = levels[n as usize % 4];
            let len = 1 + (n as usize * 7) % max;
            // bytes of 0xA0..0xE0: byte mode (no digits or letters of a shorter mode, no
            // Shift JIS lead byte of kanji mode)
            let bytes: Vec<u8> = (0..len as u32)
                .map(|i| {
                    let noise = (n.wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) >> 8;
                    0xA0 + (noise % 64) as u8
                })
                .collect();
            let (grid, _) = code(&bytes, level);
            let (expected, mask) = rqrr_read(&grid).expect("rqrr reads a clean code");
            masks[mask as usize] = true;
            assert_eq!(expected, bytes);
            assert_eq!(payload(|x, y| grid[y * SIDE + x]), Some(bytes), "code {n}");
        }
        assert_eq!(masks, [true; 8], "every mask was tried");
    }

    #[test]
    fn a_code_with_one_wrong_module_is_left_to_rqrr() {
        let bytes = b"twenty-six bytes of token!";
        let (mut grid, _) = code(bytes, qrcode::EcLevel::M);
        // a data module near the bottom-right corner (the first codeword)
        grid[24 * SIDE + 24] = !grid[24 * SIDE + 24];
        assert_eq!(payload(|x, y| grid[y * SIDE + x]), None);
        // which rqrr corrects
        assert_eq!(rqrr_read(&grid).map(|(p, _)| p), Some(bytes.to_vec()));
        // and a grid of noise is no code at all
        let noise = |x: usize, y: usize| (x * 7 + y * 13) % 5 < 2;
        assert_eq!(payload(noise), None);
    }

    #[test]
    fn a_segment_other_than_bytes_is_left_to_rqrr() {
        // digits only: numeric mode
        let (grid, _) = code(b"0123456789", qrcode::EcLevel::M);
        assert_eq!(payload(|x, y| grid[y * SIDE + x]), None);
    }
}
