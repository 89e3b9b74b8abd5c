//! Block-mapped (ext2/ext3) files: allocating and freeing through the
//! classic map of 12 direct pointers and single, double and triple
//! indirect blocks (kernel: fs/ext4/indirect.c).
//!
//! Indirect blocks carry no checksum. A new indirect block is written
//! zeroed before the pointer naming it; a block-mapped file has no
//! unwritten state, so new data blocks are zeroed on the device before they
//! join the map (the host then writes the data into `mapped` ranges, and a
//! write that never lands reads as zeros, never as stale blocks). Changed
//! indirect blocks are gathered during one call and written at its end,
//! before the inode.

use std::collections::HashMap;

use fshost_sdk::bytes::le_u32;
use fshost_sdk::{Error, ErrorCode, Result};

use super::RawInode;
use super::alloc;
use crate::fs::Ext4;

const DIRECT: u64 = 12;

/// Where logical block `lblk` lives: the `i_block` slot and the index in
/// each indirect level below it.
fn path(ppb: u64, lblk: u64) -> Result<(usize, Vec<u64>)> {
    if lblk < DIRECT {
        return Ok((lblk as usize, Vec::new()));
    }
    let mut n = lblk - DIRECT;
    if n < ppb {
        return Ok((12, vec![n]));
    }
    n -= ppb;
    if n < ppb * ppb {
        return Ok((13, vec![n / ppb, n % ppb]));
    }
    n -= ppb * ppb;
    if n < ppb * ppb * ppb {
        return Ok((14, vec![n / (ppb * ppb), n / ppb % ppb, n % ppb]));
    }
    Err(Error::new(ErrorCode::FileTooBig, format!("block {lblk} is past a block map's reach")))
}

/// `ext4_max_bitmap_size`: the largest block-mapped file, in bytes.
pub(super) fn max_size(block_bits: u32, huge_file: bool) -> u64 {
    let ppb = 1u64 << (block_bits - 2);
    let mut upper = if huge_file { (1u64 << 48) - 1 } else { ((1u64 << 32) - 1) >> (block_bits - 9) };
    let mut res = DIRECT + ppb + ppb * ppb + ppb * ppb * ppb;
    let meta = 1 + (1 + ppb) + (1 + ppb + ppb * ppb);
    if res + meta > upper {
        res = upper;
        upper -= DIRECT;
        let mut meta = 1;
        upper = upper.saturating_sub(ppb);
        if upper < ppb * ppb {
            meta += 1 + upper.div_ceil(ppb);
        } else {
            meta += 1 + ppb;
            upper -= ppb * ppb;
            meta += 1 + upper.div_ceil(ppb) + upper.div_ceil(ppb * ppb);
        }
        res -= meta;
    }
    (res << block_bits).min(i64::MAX as u64)
}

/// The indirect blocks one call changes, written at its end.
struct Edit<'a> {
    fs: &'a mut Ext4,
    ino: u32,
    dirty: HashMap<u64, Vec<u8>>,
    /// Blocks allocated in this call (data and indirect), to undo on error.
    fresh: Vec<u64>,
}

impl Edit<'_> {
    fn block(&mut self, b: u64) -> Result<&mut Vec<u8>> {
        if !self.dirty.contains_key(&b) {
            if !self.fs.vol.sb.blocks_valid(b, 1) {
                return Err(Error::corrupted(format!("inode {}: indirect block {b} outside the filesystem", self.ino)));
            }
            let data = self.fs.vol.disk.read_block(b)?;
            self.dirty.insert(b, data);
        }
        self.dirty.get_mut(&b).ok_or_else(|| Error::corrupted("indirect block cache"))
    }

    fn ptr(&mut self, b: u64, i: u64) -> Result<u32> {
        le_u32(self.block(b)?, (i * 4) as usize)
    }

    fn set_ptr(&mut self, b: u64, i: u64, v: u32) -> Result<()> {
        let at = (i * 4) as usize;
        self.block(b)?[at..at + 4].copy_from_slice(&v.to_le_bytes());
        Ok(())
    }

    /// A new zeroed indirect block near `goal`.
    fn new_indirect(&mut self, raw: &mut RawInode, goal: u64) -> Result<u32> {
        let (b, _) = alloc::alloc_blocks(self.fs, goal, 1)?;
        self.fresh.push(b);
        raw.add_blocks(1)?;
        self.dirty.insert(b, vec![0; self.fs.vol.bs() as usize]);
        u32::try_from(b).map_err(|_| Error::corrupted(format!("block {b} does not fit a block map")))
    }

    /// The block mapped at `lblk`, 0 for a hole.
    fn get(&mut self, raw: &RawInode, lblk: u64) -> Result<u64> {
        let ppb = self.fs.vol.bs() / 4;
        let (slot, idx) = path(ppb, lblk)?;
        let mut p = le_u32(raw.i_block(), slot * 4)?;
        for &i in &idx {
            if p == 0 {
                return Ok(0);
            }
            p = self.ptr(u64::from(p), i)?;
        }
        Ok(u64::from(p))
    }

    /// Map `lblk` to `pblk`, creating indirect blocks on the way.
    fn set(&mut self, raw: &mut RawInode, lblk: u64, pblk: u64) -> Result<()> {
        let ppb = self.fs.vol.bs() / 4;
        let (slot, idx) = path(ppb, lblk)?;
        let pblk32 = u32::try_from(pblk).map_err(|_| Error::corrupted(format!("block {pblk} too large")))?;
        if idx.is_empty() {
            raw.i_block_mut()[slot * 4..slot * 4 + 4].copy_from_slice(&pblk32.to_le_bytes());
            return Ok(());
        }
        let mut p = le_u32(raw.i_block(), slot * 4)?;
        if p == 0 {
            p = self.new_indirect(raw, pblk.saturating_sub(1))?;
            raw.i_block_mut()[slot * 4..slot * 4 + 4].copy_from_slice(&p.to_le_bytes());
        }
        for (level, &i) in idx.iter().enumerate() {
            let b = u64::from(p);
            if level + 1 == idx.len() {
                return self.set_ptr(b, i, pblk32);
            }
            let mut child = self.ptr(b, i)?;
            if child == 0 {
                child = self.new_indirect(raw, pblk.saturating_sub(1))?;
                self.set_ptr(b, i, child)?;
            }
            p = child;
        }
        Ok(())
    }

    /// Write the changed indirect blocks (new ones are among them).
    fn flush(&mut self) -> Result<()> {
        let bs = self.fs.vol.bs();
        for (b, data) in self.dirty.drain() {
            self.fs.vol.disk.write(b * bs, &data)?;
        }
        Ok(())
    }

    fn undo(&mut self) {
        for b in std::mem::take(&mut self.fresh) {
            let _ = alloc::free_blocks(self.fs, b, 1);
        }
    }
}

/// Allocate and zero the holes of `[from, to)`, mapping them. Stops early
/// (having mapped `from`) when space runs out. Updates i_blocks in `raw`;
/// the caller writes the inode.
pub(super) fn fill(fs: &mut Ext4, ino: u32, raw: &mut RawInode, from: u64, to: u64) -> Result<()> {
    let bs = fs.vol.bs();
    let mut edit = Edit { fs, ino, dirty: HashMap::new(), fresh: Vec::new() };
    let result = (|| -> Result<()> {
        let mut lblk = from;
        let mut goal = alloc::inode_goal(&edit.fs.vol.sb, ino);
        if let Some(b) = (0..from.min(DIRECT)).rev().find_map(|l| edit.get(raw, l).ok().filter(|&b| b != 0)) {
            goal = b + 1;
        }
        while lblk < to {
            let have = edit.get(raw, lblk)?;
            if have != 0 {
                goal = have + 1;
                lblk += 1;
                continue;
            }
            let mut hole = 1;
            while lblk + hole < to && hole < alloc::MAX_RUN && edit.get(raw, lblk + hole)? == 0 {
                hole += 1;
            }
            let (pblk, got) = match alloc::alloc_blocks(edit.fs, goal, hole) {
                Ok(r) => r,
                Err(e) if lblk > from && e.code() == ErrorCode::NoSpace => return Ok(()),
                Err(e) => return Err(e),
            };
            edit.fresh.extend(pblk..pblk + got);
            // Zeros before the map names them (1 MiB per write).
            let mut done = 0;
            while done < got {
                let n = (got - done).min((1 << 20) / bs);
                edit.fs.vol.disk.device().write((pblk + done) * bs, &vec![0; (n * bs) as usize])?;
                done += n;
            }
            raw.add_blocks(got as i64)?;
            for i in 0..got {
                edit.set(raw, lblk + i, pblk + i)?;
            }
            goal = pblk + got;
            lblk += got;
        }
        Ok(())
    })();
    match result.and_then(|()| edit.flush()) {
        Ok(()) => Ok(()),
        Err(e) => {
            edit.undo();
            Err(e)
        }
    }
}

/// The block at `lblk`, allocating (zeroed by the caller's write) if it is
/// a hole; for directories on ext2/ext3.
pub(super) fn map_block_alloc(fs: &mut Ext4, ino: u32, raw: &mut RawInode, lblk: u32) -> Result<u64> {
    let mut edit = Edit { fs, ino, dirty: HashMap::new(), fresh: Vec::new() };
    let have = edit.get(raw, u64::from(lblk))?;
    if have != 0 {
        return Ok(have);
    }
    let goal = match lblk.checked_sub(1) {
        Some(prev) => edit.get(raw, u64::from(prev))?.checked_add(1).filter(|&g| g > 1),
        None => None,
    }
    .unwrap_or_else(|| alloc::inode_goal(&edit.fs.vol.sb, ino));
    let result = (|| -> Result<u64> {
        let (pblk, _) = alloc::alloc_blocks(edit.fs, goal, 1)?;
        edit.fresh.push(pblk);
        raw.add_blocks(1)?;
        edit.set(raw, u64::from(lblk), pblk)?;
        edit.flush()?;
        Ok(pblk)
    })();
    if result.is_err() {
        edit.undo();
    }
    result
}

/// Free every block at or past `from`, and the indirect blocks left empty.
pub(crate) fn truncate(fs: &mut Ext4, ino: u32, raw: &mut RawInode, from: u32) -> Result<()> {
    remove(fs, ino, raw, u64::from(from), u64::MAX)
}

/// Free the blocks mapped in `[from, to)` and the indirect blocks left
/// empty (`ext4_ind_remove_space`), taking them off i_blocks in `raw`.
pub(super) fn remove(fs: &mut Ext4, ino: u32, raw: &mut RawInode, from: u64, to: u64) -> Result<()> {
    let ppb = fs.vol.bs() / 4;
    let mut freed: Vec<u64> = Vec::new();
    let mut edit = Edit { fs, ino, dirty: HashMap::new(), fresh: Vec::new() };
    for slot in from.min(DIRECT)..to.min(DIRECT) {
        let p = le_u32(raw.i_block(), slot as usize * 4)?;
        if p != 0 {
            freed.push(u64::from(p));
            raw.i_block_mut()[slot as usize * 4..slot as usize * 4 + 4].fill(0);
        }
    }
    let mut base = DIRECT;
    let mut span = ppb;
    for (level, slot) in [(1u32, 12usize), (2, 13), (3, 14)] {
        let p = le_u32(raw.i_block(), slot * 4)?;
        let overlaps = base < to && from < base + span;
        if p != 0 && overlaps && free_tree(&mut edit, u64::from(p), level, base, (from, to), &mut freed)? {
            freed.push(u64::from(p));
            raw.i_block_mut()[slot * 4..slot * 4 + 4].fill(0);
        }
        base += span;
        span *= ppb;
    }
    edit.flush()?;
    let fs = edit.fs;
    freed.sort_unstable();
    let n = freed.len() as i64;
    let mut i = 0;
    while i < freed.len() {
        let mut j = i + 1;
        while j < freed.len() && freed[j] == freed[j - 1] + 1 {
            j += 1;
        }
        alloc::free_blocks(fs, freed[i], (j - i) as u64)?;
        i = j;
    }
    raw.add_blocks(-n)
}

/// Free what indirect block `b` (at `level`, covering logical blocks from
/// `base`) maps inside `range`; true when it maps nothing afterwards (the
/// caller frees `b` itself).
fn free_tree(edit: &mut Edit, b: u64, level: u32, base: u64, range: (u64, u64), freed: &mut Vec<u64>) -> Result<bool> {
    if freed.len() > 1 << 28 {
        return Err(Error::corrupted(format!("inode {}: block map too large", edit.ino)));
    }
    let (from, to) = range;
    let ppb = edit.fs.vol.bs() / 4;
    let child_span = ppb.pow(level - 1);
    let mut left = false;
    for i in 0..ppb {
        let p = edit.ptr(b, i)?;
        if p == 0 {
            continue;
        }
        let child_base = base + i * child_span;
        let child_end = child_base + child_span;
        if child_end <= from || child_base >= to {
            left = true;
            continue;
        }
        let gone = if level == 1 { true } else { free_tree(edit, u64::from(p), level - 1, child_base, range, freed)? };
        if gone {
            freed.push(u64::from(p));
            edit.set_ptr(b, i, 0)?;
        } else {
            left = true;
        }
    }
    if !left {
        // Freed whole: no need to write it back.
        edit.dirty.remove(&b);
    }
    Ok(!left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cover_each_level() {
        assert_eq!(path(256, 11).unwrap(), (11, vec![]));
        assert_eq!(path(256, 12).unwrap(), (12, vec![0]));
        assert_eq!(path(256, 12 + 256).unwrap(), (13, vec![0, 0]));
        assert_eq!(path(256, 12 + 256 + 257).unwrap(), (13, vec![1, 1]));
        assert_eq!(path(256, 12 + 256 + 65536).unwrap(), (14, vec![0, 0, 0]));
        assert!(path(256, 12 + 256 + 65536 + (1 << 24)).is_err());
    }
}
