//! The flash code: what every phone of a flash session shows, slot by slot, on the synced
//! clock (docs/flash.md says why it is made this way).
//!
//! A session is [`SLOTS`] slots of one symbol period each; in every slot a phone's screen is
//! either lit (full white) or dark (black):
//! ```text
//! slot  0        1..=7             8..=61                        62
//!       guard    preamble          9 groups of 6 slots            guard
//!       dark     Barker-7 (same    each exactly 3 lit of 6       dark
//!                for every phone)  (one of C(6,3) = 20 patterns)
//! ```
//! - The **preamble** is the same on every phone, so the decoder finds the symbol clock in the
//!   video by adding up thousands of blobs; Barker-7 has the lowest side lobes of any 7-long
//!   sequence, so the clock it gives is not off by a slot.
//! - Each **data group** lights exactly 3 of its 6 slots, so every group is its own threshold:
//!   the decoder ranks a group's 6 brightnesses and takes the 3 brightest as lit, whatever the
//!   phone's brightness, the ambient light or a slow change of the camera's exposure. A single
//!   misread slot leaves 4 or 2 slots alike, which shows as no gap between the 3rd and 4th
//!   brightest: that group, and the blob, is unreadable, never read as another code.
//! - The 9 groups carry a code word `c < 20⁹ ≈ 5.1 × 10¹¹` (base-20 digits, least significant
//!   first). A session issues each phone a code drawn at random from that space, so a misread
//!   that does produce a valid-looking word names an issued phone only with probability
//!   (phones in the session) / 20⁹: 2 × 10⁻⁷ for 100 000 phones.

use rand::Rng;

/// Slots in a session: guard, preamble, data, guard.
pub const SLOTS: usize = 1 + PREAMBLE.len() + DATA_SLOTS + 1;
/// Barker-7, lit = true. Shown by every phone in slots 1 to 7.
pub const PREAMBLE: [bool; 7] = [true, true, true, false, false, true, false];
/// The first preamble slot.
pub const PREAMBLE_AT: usize = 1;
/// The first data slot.
pub const DATA_AT: usize = PREAMBLE_AT + PREAMBLE.len();
/// Groups of the code word, slots per group and lit slots per group.
pub const GROUPS: usize = 9;
pub const GROUP_SLOTS: usize = 6;
pub const GROUP_LIT: usize = 3;
pub const DATA_SLOTS: usize = GROUPS * GROUP_SLOTS;
/// Patterns of one group: C(6, 3).
pub const PATTERNS: u64 = 20;
/// Code words: 20⁹.
pub const CODE_SPACE: u64 = PATTERNS.pow(GROUPS as u32);

/// The 20 patterns of a group, in lexicographic order of their lit slots (bit i: slot i lit).
pub fn patterns() -> [u8; PATTERNS as usize] {
    let mut out = [0u8; PATTERNS as usize];
    let mut n = 0;
    for bits in 0u8..64 {
        if bits.count_ones() as usize == GROUP_LIT {
            out[n] = bits;
            n += 1;
        }
    }
    out
}

/// A code word drawn at random from the whole space.
pub fn random_code(rng: &mut impl Rng) -> u64 {
    rng.gen_range(0..CODE_SPACE)
}

/// Every slot a phone with code word `code` shows (true: lit). `code` must be below
/// [`CODE_SPACE`].
pub fn slots(code: u64) -> [bool; SLOTS] {
    assert!(code < CODE_SPACE, "a code word is below 20^9");
    let patterns = patterns();
    let mut out = [false; SLOTS];
    out[PREAMBLE_AT..DATA_AT].copy_from_slice(&PREAMBLE);
    let mut rest = code;
    for g in 0..GROUPS {
        let bits = patterns[(rest % PATTERNS) as usize];
        rest /= PATTERNS;
        for i in 0..GROUP_SLOTS {
            out[DATA_AT + g * GROUP_SLOTS + i] = bits & (1 << i) != 0;
        }
    }
    out
}

/// The slots as the protocol sends them: '1' lit, '0' dark.
pub fn slots_text(code: u64) -> String {
    slots(code)
        .iter()
        .map(|&lit| if lit { '1' } else { '0' })
        .collect()
}

/// Why a blob's brightnesses are not a code word.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// A group has no clear gap between its 3rd and 4th brightest slots (a misread slot, a
    /// phone hidden for part of the clip, a light that is not a phone).
    #[error("group {group} has no clear 3-of-6 pattern (gap {gap:.2})")]
    Unclear { group: usize, gap: f32 },
}

/// A code word read from a blob.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Read {
    pub code: u64,
    /// The smallest gap between a group's 3rd and 4th brightest slots, in units of the
    /// blob's lit − dark contrast: how sure the read is (1: perfect).
    pub margin: f32,
}

/// Reads a code word from the brightness of each data slot (`DATA_SLOTS` values, any scale):
/// in each group the 3 brightest are lit. `contrast` is the blob's lit − dark difference
/// (from its preamble); a group whose gap is below `min_gap` × contrast is unclear.
pub fn read(values: &[f32], contrast: f32, min_gap: f32) -> Result<Read, ReadError> {
    assert_eq!(values.len(), DATA_SLOTS, "one value per data slot");
    let patterns = patterns();
    let mut code = 0u64;
    let mut margin = f32::INFINITY;
    let contrast = contrast.max(f32::MIN_POSITIVE);
    for g in (0..GROUPS).rev() {
        let group = &values[g * GROUP_SLOTS..(g + 1) * GROUP_SLOTS];
        let mut order = [0usize, 1, 2, 3, 4, 5];
        order.sort_by(|&a, &b| group[b].total_cmp(&group[a]));
        let gap = (group[order[GROUP_LIT - 1]] - group[order[GROUP_LIT]]) / contrast;
        // (a NaN gap, from a slot no frame saw, is unclear too)
        if gap.is_nan() || gap < min_gap {
            return Err(ReadError::Unclear { group: g, gap });
        }
        margin = margin.min(gap);
        let bits = order[..GROUP_LIT].iter().fold(0u8, |b, &i| b | (1 << i));
        let digit = patterns
            .iter()
            .position(|&p| p == bits)
            .expect("3 of 6 is a pattern") as u64;
        code = code * PATTERNS + digit;
    }
    Ok(Read { code, margin })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn values(code: u64) -> Vec<f32> {
        slots(code)[DATA_AT..DATA_AT + DATA_SLOTS]
            .iter()
            .map(|&lit| if lit { 1.0 } else { 0.0 })
            .collect()
    }

    #[test]
    fn the_layout_adds_up() {
        assert_eq!(SLOTS, 63);
        assert_eq!(patterns().len(), 20);
        assert!(patterns().iter().all(|p| p.count_ones() == 3 && *p < 64));
        assert_eq!(CODE_SPACE, 512_000_000_000);
        let s = slots(0);
        assert!(!s[0] && !s[SLOTS - 1], "guards are dark");
        assert_eq!(&s[PREAMBLE_AT..DATA_AT], &PREAMBLE);
    }

    #[test]
    fn every_group_pattern_and_random_code_words_read_back_as_themselves() {
        // every digit in every group: the code is positional, so this covers every pattern
        // in every place
        for g in 0..GROUPS as u32 {
            for d in 0..PATTERNS {
                let code = d * PATTERNS.pow(g);
                assert_eq!(read(&values(code), 1.0, 0.5).unwrap().code, code);
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..20_000 {
            let code = random_code(&mut rng);
            let r = read(&values(code), 1.0, 0.5).unwrap();
            assert_eq!((r.code, r.margin), (code, 1.0));
            // any gain and offset: a group is its own threshold
            let dim: Vec<f32> = values(code).iter().map(|v| 40.0 + 7.0 * v).collect();
            assert_eq!(read(&dim, 7.0, 0.5).unwrap().code, code);
        }
        for (i, c) in slots_text(CODE_SPACE - 1).chars().enumerate() {
            assert_eq!(c == '1', slots(CODE_SPACE - 1)[i]);
        }
    }

    #[test]
    fn a_single_misread_slot_is_caught_never_read_as_another_code() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for _ in 0..500 {
            let code = random_code(&mut rng);
            for slot in 0..DATA_SLOTS {
                let mut v = values(code);
                v[slot] = 1.0 - v[slot];
                assert!(
                    matches!(read(&v, 1.0, 0.25), Err(ReadError::Unclear { group, .. }) if group == slot / GROUP_SLOTS),
                    "code {code}, slot {slot} flipped"
                );
            }
        }
    }

    #[test]
    fn a_slow_drift_of_the_exposure_does_not_matter() {
        let code = 123_456_789_012;
        // the camera brightens by 60 % over the clip
        let v: Vec<f32> = values(code)
            .iter()
            .enumerate()
            .map(|(i, v)| (20.0 + 100.0 * v) * (1.0 + 0.6 * i as f32 / DATA_SLOTS as f32))
            .collect();
        assert_eq!(read(&v, 100.0, 0.25).unwrap().code, code);
    }
}
