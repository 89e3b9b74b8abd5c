//! Directory entry blocks: the records `ext4_dir_entry_2` packed into each
//! directory block (or into the inline-data areas of a small directory).
//!
//! A record is inode (0: unused), record length, name length, file type and
//! the name; record lengths chain the records to the block end. Every record
//! is checked as the kernel's `__ext4_check_dir_entry` does before its name
//! is looked at, so the chain always advances and stays inside the buffer.
//! With metadata_csum each leaf block ends in a 12-byte fake record holding
//! the block's crc32c ([`verify_leaf`]).

use fshost_sdk::bytes::{le_u16, le_u32, slice, u8_at};
use fshost_sdk::{Error, FileType, Result};

use crate::csum::crc32c;

/// Size of a record without its name.
const HEADER_SIZE: usize = 8;
/// `ext4_dir_rec_len(1)`: the smallest valid record.
const MIN_REC_LEN: usize = 12;
/// The checksum tail record: its size and its file type marker.
const TAIL_SIZE: usize = 12;
const TAIL_FILE_TYPE: u8 = 0xDE;

/// One directory record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Byte offset of the record in its buffer.
    pub offset: usize,
    pub rec_len: usize,
    /// 0 for an unused record.
    pub ino: u32,
    pub name: &'a [u8],
    pub file_type: u8,
}

impl Entry<'_> {
    /// Whether this is "." or "..".
    pub fn is_dot(&self) -> bool {
        self.name == b"." || self.name == b".."
    }
}

/// The file type recorded in a record (filetype feature), if valid.
pub fn file_type(code: u8) -> Option<FileType> {
    Some(match code {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::CharDevice,
        4 => FileType::BlockDevice,
        5 => FileType::Fifo,
        6 => FileType::Socket,
        7 => FileType::Symlink,
        _ => return None,
    })
}

/// `ext4_rec_len_from_disk`: 64 KiB blocks store lengths in a folded form.
fn rec_len_from_disk(raw: u16, block_size: u32) -> usize {
    if block_size < 65536 {
        return usize::from(raw);
    }
    if raw == 0xFFFF || raw == 0 {
        return block_size as usize;
    }
    usize::from(raw & 0xFFFC) | (usize::from(raw & 3) << 16)
}

/// The first record's length in `buf` (to recognise htree index nodes).
pub fn first_rec_len(buf: &[u8], block_size: u32) -> Result<usize> {
    Ok(rec_len_from_disk(le_u16(buf, 4)?, block_size))
}

/// Parse every record of `buf`, which holds whole records, checking each.
/// `inodes_count` bounds the inode numbers.
pub fn parse(buf: &[u8], block_size: u32, inodes_count: u32) -> Result<Vec<Entry<'_>>> {
    match parse_lenient(buf, block_size, inodes_count) {
        (entries, None) => Ok(entries),
        (_, Some(bad)) => Err(bad),
    }
}

/// Parse the records of `buf` up to the first bad one, as the kernel's
/// `ext4_readdir` walks a block: the records before a bad one are good,
/// the rest of the buffer is skipped. The error, if any, names the offset.
pub fn parse_lenient(buf: &[u8], block_size: u32, inodes_count: u32) -> (Vec<Entry<'_>>, Option<Error>) {
    let size = buf.len();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        match record(buf, pos, block_size, inodes_count) {
            Ok(entry) => {
                pos += entry.rec_len;
                out.push(entry);
            }
            Err(bad) => return (out, Some(bad)),
        }
    }
    (out, None)
}

/// The record at `pos`, checked as `__ext4_check_dir_entry` checks it.
fn record(buf: &[u8], pos: usize, block_size: u32, inodes_count: u32) -> Result<Entry<'_>> {
    let size = buf.len();
    let header = |pos| -> Result<(u32, usize, usize)> {
        Ok((le_u32(buf, pos)?, rec_len_from_disk(le_u16(buf, pos + 4)?, block_size), usize::from(u8_at(buf, pos + 6)?)))
    };
    let (ino, rec_len, name_len) = header(pos)
        .map_err(|_| Error::corrupted(format!("bad entry at offset {pos}: header runs past the end ({size} bytes)")))?;
    let problem = if rec_len < MIN_REC_LEN {
        Some("rec_len is smaller than minimal")
    } else if !rec_len.is_multiple_of(4) {
        Some("rec_len is not a multiple of 4")
    } else if rec_len < (HEADER_SIZE + name_len + 3) & !3 {
        Some("rec_len is too small for name_len")
    } else if pos + rec_len > size {
        Some("directory entry overrun")
    } else if pos + rec_len > size - MIN_REC_LEN && pos + rec_len != size {
        Some("directory entry too close to block end")
    } else if ino > inodes_count {
        Some("inode out of bounds")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(Error::corrupted(format!(
            "bad entry at offset {pos}: {problem} (inode {ino}, rec_len {rec_len}, name_len {name_len})"
        )));
    }
    Ok(Entry {
        offset: pos,
        rec_len,
        ino,
        name: slice(buf, pos + HEADER_SIZE, name_len)?,
        file_type: u8_at(buf, pos + 7)?,
    })
}

/// Check the crc32c tail of a leaf block (`ext4_dirblock_csum_verify`).
pub fn verify_leaf(block: &[u8], seed: u32) -> Result<()> {
    let at = block.len().checked_sub(TAIL_SIZE).ok_or_else(|| Error::corrupted("block too small"))?;
    let is_tail = le_u32(block, at)? == 0
        && le_u16(block, at + 4)? == TAIL_SIZE as u16
        && u8_at(block, at + 6)? == 0
        && u8_at(block, at + 7)? == TAIL_FILE_TYPE;
    if !is_tail {
        return Err(Error::bad_checksum("no checksum tail at the end of the directory block"));
    }
    let stored = le_u32(block, at + 8)?;
    let computed = crc32c(seed, slice(block, 0, at)?);
    if stored != computed {
        return Err(Error::bad_checksum(format!("checksum {stored:#010x} does not match computed {computed:#010x}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ino: u32, rec_len: u16, name: &[u8]) -> Vec<u8> {
        let mut r = ino.to_le_bytes().to_vec();
        r.extend(rec_len.to_le_bytes());
        r.push(name.len() as u8);
        r.push(1);
        r.extend(name);
        r.resize(usize::from(rec_len), 0);
        r
    }

    #[test]
    fn parses_a_chain_and_refuses_bad_records() {
        let mut block = record(11, 12, b"a");
        block.extend(record(12, 20, b"hello"));
        let entries = parse(&block, 1024, 100).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name, b"hello");
        assert_eq!(entries[1].offset, 12);

        assert!(parse(&[0u8; 12], 1024, 100).is_err(), "rec_len 0 must not loop");
        let overrun = record(11, 16, b"a");
        assert!(parse(&overrun[..12], 1024, 100).is_err());
        let out_of_range = record(101, 12, b"a");
        assert!(parse(&out_of_range, 1024, 100).is_err());
        let long_name = record(11, 12, b"abcdefgh");
        assert!(parse(&long_name[..12], 1024, 100).is_err());
    }

    #[test]
    fn lenient_parsing_keeps_the_records_before_a_bad_one() {
        let mut block = record(11, 12, b"a");
        block.extend(record(12, 12, b"b"));
        block.extend(record(13, 40, b"c"));
        block[28..30].copy_from_slice(&5u16.to_le_bytes());
        let (entries, bad) = parse_lenient(&block, 1024, 100);
        assert_eq!(entries.iter().map(|e| e.name).collect::<Vec<_>>(), [&b"a"[..], b"b"]);
        let bad = bad.expect("the third record is bad");
        assert!(bad.message().contains("offset 24"), "{bad}");
        let (entries, bad) = parse_lenient(&[0u8; 6], 1024, 100);
        assert!(entries.is_empty() && bad.is_some(), "a truncated header is an error, not a panic");
    }

    #[test]
    fn folds_record_lengths_of_64k_blocks() {
        assert_eq!(rec_len_from_disk(0, 65536), 65536);
        assert_eq!(rec_len_from_disk(0xFFFF, 65536), 65536);
        assert_eq!(rec_len_from_disk(12, 65536), 12);
        assert_eq!(rec_len_from_disk(12, 4096), 12);
    }
}
