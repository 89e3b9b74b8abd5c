//! The classic ext2/ext3 block map: 12 direct block pointers in `i_block`,
//! then one single-, one double- and one triple-indirect block.
//!
//! A zero pointer is a hole, and a zero indirect pointer makes its whole
//! subtree a hole, which the walk skips in one step. Physically contiguous
//! blocks are merged into runs of at most [`MAX_RUN`] blocks. A walk reads at
//! most [`MAX_READS`] indirect blocks: a crafted map whose indirect blocks
//! all point at one zero-filled block would otherwise take billions of
//! steps; past the budget the walk reports how far it got and the caller
//! asks again from there.

use fshost_sdk::bytes::le_u32;
use fshost_sdk::{Error, Result};

use crate::inode::Inode;
use crate::mapping::{Run, Runs};
use crate::volume::Volume;

/// Direct pointers in `i_block`.
const DIRECT: u64 = 12;
/// Longest run returned, in blocks.
const MAX_RUN: u64 = 1024;
/// Indirect blocks one walk may read.
const MAX_READS: usize = 2048;

/// The allocation of `[from, to)` of `inode`, at most `max` runs.
pub fn runs(vol: &Volume, inode: &Inode, from: u64, to: u64, max: usize) -> Result<Runs> {
    let per_block = vol.bs() / 4;
    let mut walk = Walk { vol, inode, from, to, max, per_block, out: Vec::new(), reads: 0, end: to };
    walk.all().map_err(|e| e.context(format!("inode {}: block map", inode.ino)))?;
    Ok(Runs { runs: walk.out, end: walk.end })
}

struct Walk<'a> {
    vol: &'a Volume,
    inode: &'a Inode,
    from: u64,
    to: u64,
    max: usize,
    per_block: u64,
    out: Vec<Run>,
    reads: usize,
    /// How far the answer is exact (lowered when the walk stops early).
    end: u64,
}

impl Walk<'_> {
    fn all(&mut self) -> Result<()> {
        for i in 0..DIRECT {
            if i >= self.to {
                return Ok(());
            }
            if i >= self.from && self.block(i, self.inode.block_word(i as usize)?)? {
                return Ok(());
            }
        }
        let mut base = DIRECT;
        let mut span = self.per_block;
        for (level, slot) in [(1u32, 12usize), (2, 13), (3, 14)] {
            if base >= self.to {
                return Ok(());
            }
            let ptr = self.inode.block_word(slot)?;
            if base + span > self.from && ptr != 0 && self.indirect(ptr, level, base)? {
                return Ok(());
            }
            base += span;
            span *= self.per_block;
        }
        Ok(())
    }

    /// Walk indirect block `ptr` at `level` (1: it holds data pointers)
    /// covering logical blocks from `base`. True when the walk is done.
    fn indirect(&mut self, ptr: u32, level: u32, base: u64) -> Result<bool> {
        if self.reads >= MAX_READS && base > self.from {
            self.stop_at(base);
            return Ok(true);
        }
        self.reads += 1;
        let ptr = u64::from(ptr);
        if !self.vol.sb.blocks_valid(ptr, 1) {
            return Err(Error::corrupted(format!("indirect block {ptr} outside the filesystem")));
        }
        let data = self.vol.disk.read_block(ptr)?;
        let child_span = self.per_block.pow(level - 1);
        let first = self.from.saturating_sub(base) / child_span;
        for i in first..self.per_block {
            let child_base = base + i * child_span;
            if child_base >= self.to {
                return Ok(true);
            }
            let p = le_u32(&data, (i * 4) as usize)?;
            if p == 0 {
                continue;
            }
            let done = if level == 1 { self.block(child_base, p)? } else { self.indirect(p, level - 1, child_base)? };
            if done {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Record data block `pblk` at logical `lblk`. True when the walk is done.
    fn block(&mut self, lblk: u64, pblk: u32) -> Result<bool> {
        if pblk == 0 {
            return Ok(false);
        }
        let pblk = u64::from(pblk);
        if !self.vol.sb.blocks_valid(pblk, 1) {
            return Err(Error::corrupted(format!("block {lblk} maps to {pblk}, outside the filesystem")));
        }
        if let Some(last) = self.out.last_mut()
            && last.end() == lblk
            && last.pblk + last.len == pblk
            && last.len < MAX_RUN
        {
            last.len += 1;
            return Ok(false);
        }
        if self.out.len() >= self.max {
            self.stop_at(lblk);
            return Ok(true);
        }
        self.out.push(Run { lblk, len: 1, pblk, unwritten: false });
        Ok(false)
    }

    fn stop_at(&mut self, lblk: u64) {
        self.end = self.end.min(lblk);
    }
}
