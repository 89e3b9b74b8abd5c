//! Little-endian fields of an on-disk structure, read without panicking: a
//! field past the end of the buffer reads as an error naming it.

use crate::{Error, Result};

/// `N` bytes at `at` of `buf`.
pub fn array<const N: usize>(buf: &[u8], at: usize, what: &str) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| Error::corrupted(format!("{what}: {N} bytes at {at} of a {}-byte buffer", buf.len())))
}

pub fn u8_at(buf: &[u8], at: usize, what: &str) -> Result<u8> {
    Ok(array::<1>(buf, at, what)?[0])
}

pub fn u16_at(buf: &[u8], at: usize, what: &str) -> Result<u16> {
    array(buf, at, what).map(u16::from_le_bytes)
}

pub fn u32_at(buf: &[u8], at: usize, what: &str) -> Result<u32> {
    array(buf, at, what).map(u32::from_le_bytes)
}

pub fn u64_at(buf: &[u8], at: usize, what: &str) -> Result<u64> {
    array(buf, at, what).map(u64::from_le_bytes)
}

/// `len` bytes at `at` of `buf`.
pub fn slice<'a>(buf: &'a [u8], at: usize, len: usize, what: &str) -> Result<&'a [u8]> {
    at.checked_add(len)
        .and_then(|end| buf.get(at..end))
        .ok_or_else(|| Error::corrupted(format!("{what}: {len} bytes at {at} of a {}-byte buffer", buf.len())))
}
