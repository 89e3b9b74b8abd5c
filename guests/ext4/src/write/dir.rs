//! Editing one directory block in memory: the writer's half of `dir.rs`.
//!
//! Every function takes a whole block (`&mut [u8]`, the filesystem block
//! size) and leaves it a valid chain of `ext4_dir_entry_2` records ending
//! exactly at the block end, or at the 12-byte checksum tail when the
//! filesystem has metadata_csum. The rules are the kernel's (fs/ext4/namei.c):
//! an entry goes into the first record whose slack (or, if unused, whose
//! whole length) holds `EXT4_DIR_REC_LEN(name_len)` (`ext4_find_dest_de`,
//! `ext4_insert_dentry`); a removed entry is merged into the record before
//! it, or, as the first of its block, marked unused (`ext4_generic_delete_entry`).
//! Records are parsed with `dir::parse` first, so a damaged block is an
//! error, never a panic or a write past the block.

use fshost_sdk::{Error, FileType, Result};

use crate::csum::crc32c;
use crate::dir::{self, Entry};

/// Size of the metadata_csum tail record.
pub const TAIL_SIZE: usize = 12;
const TAIL_FILE_TYPE: u8 = 0xDE;
/// Size of a record header (inode, rec_len, name_len, file_type).
const HEADER_SIZE: usize = 8;

/// `EXT4_DIR_REC_LEN(name_len)`: the space a record with this name needs.
pub fn rec_len(name_len: usize) -> usize {
    (name_len + HEADER_SIZE + 3) & !3
}

/// `ext4_rec_len_to_disk`: 64 KiB blocks fold lengths of 65536.
fn rec_len_to_disk(len: usize, block_size: usize) -> u16 {
    if block_size < 65536 {
        return len as u16;
    }
    if len == block_size {
        return if block_size == 65536 { 0xFFFF } else { 0 };
    }
    ((len & 65532) | ((len >> 16) & 3)) as u16
}

/// The directory-entry file type code of `kind` (`ext4_type_by_mode`).
pub fn type_code(kind: FileType) -> u8 {
    match kind {
        FileType::Regular => 1,
        FileType::Directory => 2,
        FileType::CharDevice => 3,
        FileType::BlockDevice => 4,
        FileType::Fifo => 5,
        FileType::Socket => 6,
        FileType::Symlink => 7,
        FileType::Unknown => 0,
    }
}

/// The geometry shared by every block of one filesystem.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub block_size: usize,
    /// metadata_csum: blocks end in a checksum tail.
    pub tail: bool,
    /// The filetype feature: records carry a type code (else 0).
    pub filetype: bool,
    /// For `dir::parse`'s bound on inode numbers.
    pub inodes_count: u32,
}

impl Layout {
    /// Where the records end (the tail, or the block end).
    fn records_end(&self) -> usize {
        if self.tail { self.block_size - TAIL_SIZE } else { self.block_size }
    }

    fn check(&self, block: &[u8]) -> Result<()> {
        if block.len() != self.block_size || self.block_size < 1024 {
            return Err(Error::corrupted(format!(
                "directory block of {} bytes, expected {}",
                block.len(),
                self.block_size
            )));
        }
        Ok(())
    }

    /// The live and unused records of `block` (without the tail).
    fn records<'a>(&self, block: &'a [u8]) -> Result<Vec<Entry<'a>>> {
        self.check(block)?;
        let end = self.records_end();
        dir::parse(block.get(..end).unwrap_or_default(), self.block_size as u32, self.inodes_count)
    }
}

/// Write one record header and name at `pos`.
fn put_record(block: &mut [u8], layout: &Layout, pos: usize, len: usize, ino: u32, name: &[u8], code: u8) {
    let code = if layout.filetype { code } else { 0 };
    block[pos..pos + 4].copy_from_slice(&ino.to_le_bytes());
    block[pos + 4..pos + 6].copy_from_slice(&rec_len_to_disk(len, layout.block_size).to_le_bytes());
    block[pos + 6] = name.len() as u8;
    block[pos + 7] = code;
    block[pos + HEADER_SIZE..pos + HEADER_SIZE + name.len()].copy_from_slice(name);
}

/// Set a record's length without touching the rest.
fn set_rec_len(block: &mut [u8], layout: &Layout, pos: usize, len: usize) {
    block[pos + 4..pos + 6].copy_from_slice(&rec_len_to_disk(len, layout.block_size).to_le_bytes());
}

/// `ext4_initialize_dirent_tail`: the fake record at the block end.
fn put_tail(block: &mut [u8], layout: &Layout) {
    if !layout.tail {
        return;
    }
    let at = layout.block_size - TAIL_SIZE;
    block[at..].fill(0);
    block[at + 4..at + 6].copy_from_slice(&(TAIL_SIZE as u16).to_le_bytes());
    block[at + 7] = TAIL_FILE_TYPE;
}

/// A block holding one unused record spanning it (and the tail): what
/// `ext4_append` callers lay down before adding an entry.
pub fn empty_block(layout: &Layout) -> Vec<u8> {
    let mut block = vec![0; layout.block_size];
    let end = layout.records_end();
    set_rec_len(&mut block, layout, 0, end);
    put_tail(&mut block, layout);
    block
}

/// The first block of a new directory: "." and ".." (`ext4_init_dirblock`).
pub fn first_block(layout: &Layout, ino: u32, parent: u32) -> Vec<u8> {
    let mut block = vec![0; layout.block_size];
    let dot = rec_len(1);
    put_record(&mut block, layout, 0, dot, ino, b".", 2);
    put_record(&mut block, layout, dot, layout.records_end() - dot, parent, b"..", 2);
    put_tail(&mut block, layout);
    block
}

/// Whether `name` has a live record in `block`; its inode and type code.
pub fn find(block: &[u8], layout: &Layout, name: &[u8]) -> Result<Option<(u32, u8)>> {
    Ok(layout.records(block)?.iter().find(|e| e.ino != 0 && e.name == name).map(|e| (e.ino, e.file_type)))
}

/// Add the record (`ino`, `name`, type `code`) to `block` where the kernel
/// would put it. `Ok(false)`: no room (the block is unchanged).
pub fn insert(block: &mut [u8], layout: &Layout, ino: u32, name: &[u8], code: u8) -> Result<bool> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::invalid(format!("directory entry name of {} bytes", name.len())));
    }
    let need = rec_len(name.len());
    let slot = layout.records(block)?.iter().find_map(|e| {
        let used = if e.ino != 0 { rec_len(e.name.len()) } else { 0 };
        (e.rec_len - used >= need).then_some((e.offset, e.rec_len, used))
    });
    let Some((pos, len, used)) = slot else { return Ok(false) };
    if used == 0 {
        put_record(block, layout, pos, len, ino, name, code);
    } else {
        set_rec_len(block, layout, pos, used);
        put_record(block, layout, pos + used, len - used, ino, name, code);
    }
    Ok(true)
}

/// Remove the live record named `name` from `block`; its inode and type
/// code, or `None` when the block has no such record (unchanged).
pub fn remove(block: &mut [u8], layout: &Layout, name: &[u8]) -> Result<Option<(u32, u8)>> {
    let records = layout.records(block)?;
    let Some(i) = records.iter().position(|e| e.ino != 0 && e.name == name) else { return Ok(None) };
    let gone = records[i];
    let found = (gone.ino, gone.file_type);
    let prev = i.checked_sub(1).map(|p| (records[p].offset, records[p].rec_len));
    let (pos, len) = (gone.offset, gone.rec_len);
    match prev {
        Some((ppos, plen)) => {
            set_rec_len(block, layout, ppos, plen + len);
            block[pos..pos + len].fill(0);
        }
        None => {
            block[pos..pos + 4].fill(0);
            block[pos + 6..pos + len].fill(0);
        }
    }
    Ok(Some(found))
}

/// Point the live record `name` at `ino` with type `code` (`ext4_setent`).
/// `false` when there is no such record.
pub fn retarget(block: &mut [u8], layout: &Layout, name: &[u8], ino: u32, code: u8) -> Result<bool> {
    let Some(pos) = layout.records(block)?.iter().find(|e| e.ino != 0 && e.name == name).map(|e| e.offset) else {
        return Ok(false);
    };
    block[pos..pos + 4].copy_from_slice(&ino.to_le_bytes());
    block[pos + 7] = if layout.filetype { code } else { 0 };
    Ok(true)
}

/// Whether `block` holds no live record but "." and ".." (`ext4_empty_dir`).
pub fn is_empty(block: &[u8], layout: &Layout) -> Result<bool> {
    Ok(layout.records(block)?.iter().all(|e| e.ino == 0 || e.is_dot()))
}

/// The live records of `block` as (inode, name, type code).
pub fn live(block: &[u8], layout: &Layout) -> Result<Vec<(u32, Vec<u8>, u8)>> {
    Ok(layout.records(block)?.iter().filter(|e| e.ino != 0).map(|e| (e.ino, e.name.to_vec(), e.file_type)).collect())
}

/// A live record: inode, name, type code.
pub type Record = (u32, Vec<u8>, u8);

/// As [`live`], each with its record length on disk, slack included (the
/// size `dx_make_map` gives `do_split`).
pub fn live_sized(block: &[u8], layout: &Layout) -> Result<Vec<(Record, usize)>> {
    Ok(layout
        .records(block)?
        .iter()
        .filter(|e| e.ino != 0)
        .map(|e| ((e.ino, e.name.to_vec(), e.file_type), e.rec_len))
        .collect())
}

/// Lay `records` (inode, name, type code) into `block` from its start,
/// packed, the last one spanning to the tail; an empty list leaves one
/// unused record. `false` when they do not fit.
pub fn pack(block: &mut [u8], layout: &Layout, records: &[(u32, Vec<u8>, u8)]) -> bool {
    let end = layout.records_end();
    let total: usize = records.iter().map(|r| rec_len(r.1.len())).sum();
    if total > end || block.len() != layout.block_size {
        return false;
    }
    block.fill(0);
    if records.is_empty() {
        set_rec_len(block, layout, 0, end);
    }
    let mut pos = 0;
    for (i, (ino, name, code)) in records.iter().enumerate() {
        let len = if i + 1 == records.len() { end - pos } else { rec_len(name.len()) };
        put_record(block, layout, pos, len, *ino, name, *code);
        pos += len;
    }
    put_tail(block, layout);
    true
}

/// Make the tail's checksum match the block (`ext4_dirblock_csum_set`);
/// `seed` is the directory inode's checksum seed. Lays the tail down if
/// the block lacks one but has room (a record ending exactly there).
pub fn set_csum(block: &mut [u8], layout: &Layout, seed: u32) -> Result<()> {
    if !layout.tail {
        return Ok(());
    }
    layout.check(block)?;
    let at = layout.block_size - TAIL_SIZE;
    let is_tail = block[at..at + 4] == [0; 4]
        && block[at + 4..at + 6] == (TAIL_SIZE as u16).to_le_bytes()
        && block[at + 6] == 0
        && block[at + 7] == TAIL_FILE_TYPE;
    if !is_tail {
        return Err(Error::corrupted("directory block has no checksum tail"));
    }
    let c = crc32c(seed, &block[..at]);
    block[at + 8..].copy_from_slice(&c.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(tail: bool) -> Layout {
        Layout { block_size: 1024, tail, filetype: true, inodes_count: 1000 }
    }

    fn names(block: &[u8], l: &Layout) -> Vec<Vec<u8>> {
        live(block, l).unwrap().into_iter().map(|r| r.1).collect()
    }

    #[test]
    fn a_new_directory_block_parses_and_verifies() {
        for tail in [false, true] {
            let l = layout(tail);
            let mut b = first_block(&l, 12, 2);
            set_csum(&mut b, &l, 77).unwrap();
            assert_eq!(names(&b, &l), [b".".to_vec(), b"..".to_vec()]);
            assert!(is_empty(&b, &l).unwrap());
            // The whole block parses with the reader, tail included.
            let all = dir::parse(&b, 1024, 1000).unwrap();
            assert_eq!(all.last().unwrap().offset + all.last().unwrap().rec_len, 1024);
            if tail {
                dir::verify_leaf(&b, 77).unwrap();
            }
        }
    }

    #[test]
    fn insert_splits_slack_and_reuses_unused_records() {
        let l = layout(true);
        let mut b = first_block(&l, 12, 2);
        assert!(insert(&mut b, &l, 20, b"alpha", 1).unwrap());
        assert!(insert(&mut b, &l, 21, b"beta", 2).unwrap());
        assert_eq!(find(&b, &l, b"beta").unwrap(), Some((21, 2)));
        let recs = dir::parse(&b[..1012], 1024, 1000).unwrap();
        assert_eq!(recs[1].rec_len, rec_len(2), ".. is cut to its own size");
        assert_eq!(recs[2].offset, 24);
        // Removing the middle record merges it into "..".
        assert_eq!(remove(&mut b, &l, b"alpha").unwrap(), Some((20, 1)));
        assert_eq!(names(&b, &l), [&b"."[..], b"..", b"beta"]);
        assert_eq!(remove(&mut b, &l, b"alpha").unwrap(), None);
        // And the space is reused for a name of the same size.
        assert!(insert(&mut b, &l, 22, b"gamma", 1).unwrap());
        assert_eq!(dir::parse(&b[..1012], 1024, 1000).unwrap()[2].offset, 24);
        set_csum(&mut b, &l, 5).unwrap();
        dir::verify_leaf(&b, 5).unwrap();
    }

    #[test]
    fn the_first_record_is_zeroed_not_merged() {
        let l = layout(false);
        let mut b = empty_block(&l);
        assert!(insert(&mut b, &l, 30, b"x", 1).unwrap());
        assert!(insert(&mut b, &l, 31, b"y", 1).unwrap());
        assert_eq!(remove(&mut b, &l, b"x").unwrap(), Some((30, 1)));
        let recs = dir::parse(&b, 1024, 1000).unwrap();
        assert_eq!((recs[0].ino, recs[0].rec_len, recs[0].name), (0, 12, &b""[..]));
        // The unused first record is filled again.
        assert!(insert(&mut b, &l, 32, b"z", 1).unwrap());
        assert_eq!(names(&b, &l), [&b"z"[..], b"y"]);
    }

    #[test]
    fn a_full_block_refuses_and_stays_unchanged() {
        let l = layout(true);
        let mut b = empty_block(&l);
        let mut n = 0u32;
        while insert(&mut b, &l, 100 + n, format!("name{n:04}").as_bytes(), 1).unwrap() {
            n += 1;
        }
        // 8-byte names take 16-byte records: (1024 - 12) / 16 of them.
        assert_eq!(n as usize, (1024 - TAIL_SIZE) / 16);
        let before = b.clone();
        assert!(!insert(&mut b, &l, 999, b"more", 1).unwrap());
        assert_eq!(b, before);
        assert!(insert(&mut b, &l, 1, b"", 1).is_err());
        assert!(insert(&mut b, &l, 1, &[b'a'; 256], 1).is_err());
    }

    #[test]
    fn pack_and_retarget() {
        let l = layout(true);
        let mut b = vec![0; 1024];
        let recs = vec![(40, b"one".to_vec(), 1), (41, b"two".to_vec(), 7)];
        assert!(pack(&mut b, &l, &recs));
        assert_eq!(live(&b, &l).unwrap(), recs);
        assert!(retarget(&mut b, &l, b"two", 50, 1).unwrap());
        assert_eq!(find(&b, &l, b"two").unwrap(), Some((50, 1)));
        assert!(!retarget(&mut b, &l, b"three", 50, 1).unwrap());
        assert!(pack(&mut b, &l, &[]));
        assert!(live(&b, &l).unwrap().is_empty());
        let too_many: Vec<_> = (0..100).map(|i| (i + 1, vec![b'n'; 20], 1)).collect();
        assert!(!pack(&mut b, &l, &too_many));
    }

    #[test]
    fn damaged_blocks_are_errors() {
        let l = layout(false);
        let mut b = vec![0; 1024];
        assert!(insert(&mut b, &l, 1, b"a", 1).is_err(), "rec_len 0");
        assert!(remove(&mut b, &l, b"a").is_err());
        let mut short = vec![0; 100];
        assert!(insert(&mut short, &l, 1, b"a", 1).is_err());
    }
}
