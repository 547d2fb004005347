//! Zig-zag variable-length integers, as Kafka's record format uses them.
//!
//! Decoding is bounded: a varint is at most 5 bytes and a varlong at most 10, and a
//! truncated or over-long encoding is an error, never a panic.

use crate::error::{Error, Result};

/// Appends `value` as a zig-zag varint (Kafka `varint`, 32-bit).
pub(crate) fn put_varint(buf: &mut Vec<u8>, value: i32) {
    put_unsigned(buf, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// Appends `value` as a zig-zag varlong (Kafka `varlong`, 64-bit).
pub(crate) fn put_varlong(buf: &mut Vec<u8>, value: i64) {
    put_unsigned(buf, ((value << 1) ^ (value >> 63)) as u64);
}

/// Number of bytes `put_varint(value)` writes.
pub(crate) fn varint_len(value: i32) -> usize {
    unsigned_len(((value << 1) ^ (value >> 31)) as u32 as u64)
}

/// Number of bytes `put_varlong(value)` writes.
pub(crate) fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

fn put_unsigned(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn unsigned_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads a zig-zag varint from the front of `input`, advancing it.
pub(crate) fn get_varint(input: &mut &[u8]) -> Result<i32> {
    let raw = get_unsigned(input, 5)?;
    let raw = u32::try_from(raw).map_err(|_| Error::malformed("varint overflows 32 bits"))?;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zig-zag varlong from the front of `input`, advancing it.
pub(crate) fn get_varlong(input: &mut &[u8]) -> Result<i64> {
    let raw = get_unsigned(input, 10)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// Reads an unsigned LEB128 value of at most `max_bytes` bytes (5 or 10).
///
/// One pass over the bytes with the error paths out of line: records are walked on the
/// produce path, so this runs a handful of times per record.
#[inline]
fn get_unsigned(input: &mut &[u8], max_bytes: usize) -> Result<u64> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().take(max_bytes).enumerate() {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte of a varlong holds bit 63 only.
        if i == 9 && bits > 1 {
            return Err(overflow());
        }
        value |= bits << (7 * i);
        if byte < 0x80 {
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(unterminated(input.len() < max_bytes))
}

#[cold]
fn overflow() -> Error {
    Error::malformed("varint overflows 64 bits")
}

#[cold]
fn unterminated(truncated: bool) -> Error {
    if truncated {
        Error::malformed("truncated varint")
    } else {
        Error::malformed("varint longer than its type allows")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings_match_kafka() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 0);
        put_varint(&mut buf, -1);
        put_varint(&mut buf, 1);
        put_varint(&mut buf, 64);
        assert_eq!(buf, [0x00, 0x01, 0x02, 0x80, 0x01]);
    }

    #[test]
    fn truncated_and_overlong_are_errors() {
        assert!(get_varint(&mut &[0x80u8][..]).is_err());
        assert!(get_varint(&mut &[0xffu8, 0xff, 0xff, 0xff, 0xff, 0x01][..]).is_err());
        assert!(get_varlong(&mut &[0xffu8; 11][..]).is_err());
    }

    proptest! {
        #[test]
        fn varint_roundtrips(v: i32) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_len(v));
            let mut input = &buf[..];
            prop_assert_eq!(get_varint(&mut input).unwrap(), v);
            prop_assert!(input.is_empty());
        }

        #[test]
        fn varlong_roundtrips(v: i64) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            let mut input = &buf[..];
            prop_assert_eq!(get_varlong(&mut input).unwrap(), v);
            prop_assert!(input.is_empty());
        }

        #[test]
        fn decoding_garbage_never_panics(bytes: Vec<u8>) {
            let mut input = &bytes[..];
            let _ = get_varlong(&mut input);
            let mut input = &bytes[..];
            let _ = get_varint(&mut input);
        }
    }
}
