//! The binary chunk a phone receives: its colours over a window of server time.
//!
//! ```text
//! offset size  field
//! 0      1     kind = 1 (colours)
//! 1      4     show version, u32 little-endian
//! 5      8     window start, server time in ms since the Unix epoch, i64 LE
//! 13     4     window length in ms, u32 LE: the colours hold until start + length
//! 17     ...   entries, each: dt (LEB128 varint, ms since the previous entry; the first is
//!              from the window start and is always 0), then r, g, b (one byte each)
//! ```
//! An entry is 4 bytes when colours change less than 128 ms apart (any show at 8 fps or
//! faster), 5 bytes up to 16 s apart. A window always starts with an entry, so a phone that
//! lost the previous chunk still knows its colour.

pub const KIND_COLOURS: u8 = 1;
pub const HEADER_BYTES: usize = 17;

/// Appends a chunk's header to `out`; entries follow with [`push_entry`].
#[inline]
pub fn push_header(out: &mut Vec<u8>, version: u32, start_ms: i64, length_ms: u32) {
    let mut header = [0u8; HEADER_BYTES];
    header[0] = KIND_COLOURS;
    header[1..5].copy_from_slice(&version.to_le_bytes());
    header[5..13].copy_from_slice(&start_ms.to_le_bytes());
    header[13..17].copy_from_slice(&length_ms.to_le_bytes());
    out.extend_from_slice(&header);
}

#[inline]
pub fn push_entry(out: &mut Vec<u8>, dt_ms: u32, rgb: [u8; 3]) {
    if dt_ms < 0x80 {
        // the common case (frames under 128 ms): one 4-byte write
        out.extend_from_slice(&[dt_ms as u8, rgb[0], rgb[1], rgb[2]]);
        return;
    }
    let mut v = dt_ms;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&rgb);
}

/// A decoded chunk (for tests, the load generator and tools; phones decode in JS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub version: u32,
    pub start_ms: i64,
    pub length_ms: u32,
    /// (instant in server ms, colour)
    pub entries: Vec<(i64, [u8; 3])>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk shorter than its header")]
    Short,
    #[error("unknown chunk kind {0}")]
    Kind(u8),
    #[error("truncated entry")]
    Truncated,
}

pub fn decode(bytes: &[u8]) -> Result<Chunk, ChunkError> {
    if bytes.len() < HEADER_BYTES {
        return Err(ChunkError::Short);
    }
    if bytes[0] != KIND_COLOURS {
        return Err(ChunkError::Kind(bytes[0]));
    }
    let version = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let start_ms = i64::from_le_bytes(bytes[5..13].try_into().expect("8 bytes"));
    let length_ms = u32::from_le_bytes(bytes[13..17].try_into().expect("4 bytes"));
    let mut entries = Vec::new();
    let mut at = start_ms;
    let mut rest = &bytes[HEADER_BYTES..];
    while !rest.is_empty() {
        let mut dt: u64 = 0;
        let mut shift = 0;
        loop {
            let (&b, tail) = rest.split_first().ok_or(ChunkError::Truncated)?;
            rest = tail;
            dt |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift > 35 {
                return Err(ChunkError::Truncated);
            }
        }
        if rest.len() < 3 {
            return Err(ChunkError::Truncated);
        }
        at += dt as i64;
        entries.push((at, [rest[0], rest[1], rest[2]]));
        rest = &rest[3..];
    }
    Ok(Chunk {
        version,
        start_ms,
        length_ms,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_sizes() {
        let mut out = Vec::new();
        push_header(&mut out, 7, 1_700_000_000_123, 500);
        push_entry(&mut out, 0, [1, 2, 3]);
        push_entry(&mut out, 33, [4, 5, 6]);
        push_entry(&mut out, 200, [7, 8, 9]);
        assert_eq!(out.len(), HEADER_BYTES + 4 + 4 + 5);
        let c = decode(&out).unwrap();
        assert_eq!(c.version, 7);
        assert_eq!(c.length_ms, 500);
        assert_eq!(
            c.entries,
            [
                (1_700_000_000_123, [1, 2, 3]),
                (1_700_000_000_156, [4, 5, 6]),
                (1_700_000_000_356, [7, 8, 9])
            ]
        );
    }

    #[test]
    fn bad_chunks_are_errors_not_panics() {
        assert_eq!(decode(&[1, 2]), Err(ChunkError::Short));
        let mut out = Vec::new();
        push_header(&mut out, 1, 0, 10);
        out.extend_from_slice(&[0x80, 0x80]);
        assert_eq!(decode(&out), Err(ChunkError::Truncated));
        out[0] = 9;
        assert_eq!(decode(&out), Err(ChunkError::Kind(9)));
    }
}
