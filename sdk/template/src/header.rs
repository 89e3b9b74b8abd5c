//! The on-disk format: a text header in the first 512 bytes naming the
//! files, then each file's bytes at the next 512-byte boundary (README.md).
//!
//! Parsing is the only place that trusts nothing: every number is checked
//! against the device before the rest of the guest uses it.

use fshost_sdk::{Error, Result};

/// Size of the header, and the alignment of each file's data.
pub const BLOCK: u64 = 512;

/// The first line of every image.
pub const MAGIC: &[u8] = b"fshost-starter v1";

/// One file named in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file's name, as bytes.
    pub name: Vec<u8>,
    /// Size in bytes.
    pub size: u64,
    /// Device byte offset of the first byte (a multiple of [`BLOCK`]).
    pub offset: u64,
}

/// Parse the header block `head` of a device of `device_size` bytes.
pub fn parse(head: &[u8], device_size: u64) -> Result<Vec<Entry>> {
    let text = head.split(|&b| b == 0).next().unwrap_or_default();
    let mut lines = text.split(|&b| b == b'\n');
    if lines.next() != Some(MAGIC) {
        return Err(Error::unsupported("not a starter image (no `fshost-starter v1` header)"));
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut next = BLOCK;
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let line_no = n + 2;
        let (size, name) = line
            .iter()
            .position(|&b| b == b' ')
            .map(|space| line.split_at(space))
            .ok_or_else(|| Error::corrupted(format!("header line {line_no}: no space between size and name")))?;
        let name = name.get(1..).unwrap_or_default();
        let size: u64 = std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::corrupted(format!("header line {line_no}: size is not a decimal number")))?;
        if name.is_empty() || name.len() > 255 || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(Error::corrupted(format!("header line {line_no}: invalid name")));
        }
        if entries.iter().any(|e| e.name == name) {
            return Err(Error::corrupted(format!("header line {line_no}: duplicate name")));
        }
        let end = next.checked_add(size).filter(|&end| end <= device_size);
        let Some(end) = end else {
            return Err(Error::corrupted(format!(
                "header line {line_no}: {size} bytes at {next} pass the device's end"
            )));
        };
        entries.push(Entry { name: name.to_vec(), size, offset: next });
        next = end.div_ceil(BLOCK).saturating_mul(BLOCK);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_follow_the_header_block_by_block() {
        let head = b"fshost-starter v1\n6 hello.txt\n0 empty\n3 a b\n\0garbage";
        let entries = parse(head, 512 + 512 + 3).unwrap();
        let offsets: Vec<(&[u8], u64, u64)> = entries.iter().map(|e| (&e.name[..], e.size, e.offset)).collect();
        assert_eq!(offsets, [(&b"hello.txt"[..], 6, 512), (b"empty", 0, 1024), (b"a b", 3, 1024)]);
    }

    #[test]
    fn bad_headers_are_errors() {
        let bad: [&[u8]; 6] = [
            b"something else\n",
            b"fshost-starter v1\nsix hello\n",
            b"fshost-starter v1\n6\n",
            b"fshost-starter v1\n6 a/b\n",
            b"fshost-starter v1\n1 a\n1 a\n",
            b"fshost-starter v1\n100000 big\n",
        ];
        for head in bad {
            assert!(parse(head, 4096).is_err(), "{:?}", String::from_utf8_lossy(head));
        }
    }
}
