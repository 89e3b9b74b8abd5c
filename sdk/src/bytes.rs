//! Bounds-checked little- and big-endian field readers for on-disk structures.
//!
//! Every read of a field from disk bytes goes through here, so a structure
//! shorter than its format says becomes a `Corrupted` error, never a panic.

use crate::error::{Error, Result};

/// `len` bytes of `buf` at `offset`, or a `Corrupted` error.
pub fn slice(buf: &[u8], offset: usize, len: usize) -> Result<&[u8]> {
    offset.checked_add(len).and_then(|end| buf.get(offset..end)).ok_or_else(|| {
        Error::corrupted(format!("field at byte {offset} ({len} bytes) past the end of a {}-byte structure", buf.len()))
    })
}

fn array<const N: usize>(buf: &[u8], offset: usize) -> Result<[u8; N]> {
    let s = slice(buf, offset, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(s);
    Ok(out)
}

/// The byte at `offset`.
pub fn u8_at(buf: &[u8], offset: usize) -> Result<u8> {
    Ok(array::<1>(buf, offset)?[0])
}

/// A little-endian u16 at `offset`.
pub fn le_u16(buf: &[u8], offset: usize) -> Result<u16> {
    array(buf, offset).map(u16::from_le_bytes)
}

/// A little-endian u32 at `offset`.
pub fn le_u32(buf: &[u8], offset: usize) -> Result<u32> {
    array(buf, offset).map(u32::from_le_bytes)
}

/// A little-endian u64 at `offset`.
pub fn le_u64(buf: &[u8], offset: usize) -> Result<u64> {
    array(buf, offset).map(u64::from_le_bytes)
}

/// A big-endian u16 at `offset` (journals and some formats are big-endian).
pub fn be_u16(buf: &[u8], offset: usize) -> Result<u16> {
    array(buf, offset).map(u16::from_be_bytes)
}

/// A big-endian u32 at `offset`.
pub fn be_u32(buf: &[u8], offset: usize) -> Result<u32> {
    array(buf, offset).map(u32::from_be_bytes)
}

/// A big-endian u64 at `offset`.
pub fn be_u64(buf: &[u8], offset: usize) -> Result<u64> {
    array(buf, offset).map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn reads_in_bounds_and_refuses_out_of_bounds() {
        let buf = [0x01, 0x02, 0x03, 0x04, 0x05];
        assert_eq!(le_u16(&buf, 0).unwrap(), 0x0201);
        assert_eq!(be_u16(&buf, 0).unwrap(), 0x0102);
        assert_eq!(le_u32(&buf, 1).unwrap(), 0x0504_0302);
        assert_eq!(le_u32(&buf, 2).unwrap_err().code(), ErrorCode::Corrupted);
        assert_eq!(slice(&buf, usize::MAX, 2).unwrap_err().code(), ErrorCode::Corrupted);
        assert_eq!(u8_at(&buf, 5).unwrap_err().code(), ErrorCode::Corrupted);
    }
}
