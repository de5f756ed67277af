//! LEB128 varints and zigzag encoding, as used inside records.
//!
//! Invariants: an unsigned varint is at most [`MAX_VARINT_LEN`] (10) bytes, never
//! overflows 64 bits, and is minimally encoded (a multi-byte varint never ends in a
//! zero byte). Rejecting non-minimal forms keeps every value's encoding unique, so two
//! encoders that agree on the values produce byte-identical (and CRC-identical) batches.
//! Decoding never panics and never reads past the slice it is given.

/// Longest possible encoding of a 64-bit value: ceil(64 / 7).
pub const MAX_VARINT_LEN: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended before a byte without the continuation bit.
    Truncated,
    /// The value needs more than 64 bits (or more than 10 bytes).
    Overflow,
    /// A multi-byte encoding whose last byte is zero: a shorter form exists.
    NonMinimal,
}

impl VarintError {
    /// Short phrase that completes "<field> ..." in error messages.
    pub fn reason(self) -> &'static str {
        match self {
            VarintError::Truncated => "is a truncated varint",
            VarintError::Overflow => "is a varint that overflows 64 bits",
            VarintError::NonMinimal => "is a varint that is not minimally encoded",
        }
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded as a varint.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, zigzag_encode(value));
}

/// Reads an unsigned varint from `buf` at `*pos`, advancing `*pos` past it on success.
/// On error `*pos` is left unchanged.
pub fn read_uvarint(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..MAX_VARINT_LEN {
        let Some(&byte) = buf.get(start.saturating_add(i)) else {
            return Err(VarintError::Truncated);
        };
        // The 10th byte carries only bit 63; anything above that (including a
        // continuation bit asking for an 11th byte) cannot fit in a u64.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(VarintError::NonMinimal);
            }
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    // Unreachable in practice: the 10th byte either ends the varint or is rejected above.
    Err(VarintError::Overflow)
}

/// Reads a zigzag-encoded signed varint.
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i64, VarintError> {
    read_uvarint(buf, pos).map(zigzag_decode)
}

/// Maps signed to unsigned so small magnitudes get short encodings: 0,-1,1,-2 -> 0,1,2,3.
pub fn zigzag_encode(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag_encode`].
pub fn zigzag_decode(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_uvarint(&mut out, value);
        out
    }

    fn dec(buf: &[u8]) -> Result<(u64, usize), VarintError> {
        let mut pos = 0;
        read_uvarint(buf, &mut pos).map(|v| (v, pos))
    }

    #[test]
    fn known_encodings() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(
            enc(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn round_trips_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            1 << 63,
            u64::MAX,
        ] {
            let bytes = enc(v);
            assert!(bytes.len() <= MAX_VARINT_LEN);
            assert_eq!(dec(&bytes), Ok((v, bytes.len())));
        }
    }

    #[test]
    fn zigzag_edges() {
        assert_eq!(zigzag_encode(0), 0);
        assert_eq!(zigzag_encode(-1), 1);
        assert_eq!(zigzag_encode(1), 2);
        assert_eq!(zigzag_encode(-2), 3);
        assert_eq!(zigzag_encode(i64::MAX), u64::MAX - 1);
        assert_eq!(zigzag_encode(i64::MIN), u64::MAX);
        for v in [0, -1, 1, i64::MIN, i64::MAX, -300, 300] {
            assert_eq!(zigzag_decode(zigzag_encode(v)), v);
        }
    }

    #[test]
    fn rejects_truncated() {
        assert_eq!(dec(&[]), Err(VarintError::Truncated));
        assert_eq!(dec(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(dec(&[0xff, 0xff]), Err(VarintError::Truncated));
    }

    #[test]
    fn rejects_overflow() {
        // 10th byte = 2 would set bit 64.
        let mut bytes = vec![0xff; 9];
        bytes.push(0x02);
        assert_eq!(dec(&bytes), Err(VarintError::Overflow));
        // 11-byte encoding.
        let mut bytes = vec![0x80; 10];
        bytes.push(0x01);
        assert_eq!(dec(&bytes), Err(VarintError::Overflow));
    }

    #[test]
    fn rejects_non_minimal() {
        assert_eq!(dec(&[0x80, 0x00]), Err(VarintError::NonMinimal));
        assert_eq!(dec(&[0x81, 0x80, 0x00]), Err(VarintError::NonMinimal));
    }

    #[test]
    fn error_leaves_position_unchanged() {
        let mut pos = 1;
        assert!(read_uvarint(&[0x00, 0x80], &mut pos).is_err());
        assert_eq!(pos, 1);
    }

    #[test]
    fn reads_at_offset_and_ignores_trailing_bytes() {
        let mut pos = 1;
        assert_eq!(read_uvarint(&[0xaa, 0xac, 0x02, 0x07], &mut pos), Ok(300));
        assert_eq!(pos, 3);
        assert_eq!(read_varint(&[0x03], &mut 0), Ok(-2));
    }
}
