//! Logical-to-physical block runs: what the extent tree and the classic
//! indirect block map both answer, and the block reads built on them.
//!
//! A [`Runs`] value describes one window of a file exactly: its allocated
//! runs in order, and the end of the window (the gaps between runs, up to
//! that end, are holes). Both maps guarantee the runs are sorted, do not
//! overlap, have non-zero length and point inside the filesystem.

use fshost_sdk::{Error, Result};

use crate::inode::{Inode, flags};
use crate::volume::Volume;
use crate::{blockmap, extent};

/// One allocated run of file blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First logical block.
    pub lblk: u64,
    /// Length in blocks (> 0).
    pub len: u64,
    /// First physical block.
    pub pblk: u64,
    /// Allocated but never written (reads as zeros).
    pub unwritten: bool,
}

impl Run {
    /// One past the last logical block.
    pub fn end(&self) -> u64 {
        self.lblk + self.len
    }
}

/// The allocation of the logical blocks `[from, end)` of a file: `runs` (the
/// first may start before `from`), and holes between them up to `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runs {
    pub runs: Vec<Run>,
    pub end: u64,
}

/// The allocation of `[from, to)` of `inode`, at most `max` runs; the
/// answer's `end` may stop short of `to` (at the last run when `max` is hit).
pub fn runs(vol: &Volume, inode: &Inode, from: u64, to: u64, max: usize) -> Result<Runs> {
    if inode.has_flag(flags::INLINE_DATA) {
        return Err(Error::corrupted(format!("inode {}: inline data has no block map", inode.ino)));
    }
    if inode.has_flag(flags::EXTENTS) {
        extent::runs(vol, inode, from, to, max)
    } else {
        blockmap::runs(vol, inode, from, to, max)
    }
}

/// The run holding logical block `lblk`, if it is allocated.
pub fn run_at(vol: &Volume, inode: &Inode, lblk: u64) -> Result<Option<Run>> {
    let r = runs(vol, inode, lblk, lblk.saturating_add(1), 1)?;
    Ok(r.runs.into_iter().find(|run| run.lblk <= lblk && lblk < run.end()))
}

/// Logical block `lblk` of `inode` read through the disk (so journal-replayed
/// blocks win): `None` for a hole, zeros for an unwritten block.
pub fn read_block(vol: &Volume, inode: &Inode, lblk: u64) -> Result<Option<Vec<u8>>> {
    match run_at(vol, inode, lblk)? {
        None => Ok(None),
        Some(run) if run.unwritten => Ok(Some(vec![0; vol.sb.block_size as usize])),
        Some(run) => vol.disk.read_block(run.pblk + (lblk - run.lblk)).map(Some),
    }
}

/// Logical block `lblk` of directory `dir` as the kernel's `ext4_bread`
/// reads it: `None` for a hole, and the block's bytes on disk even when its
/// extent is unwritten (`ext4_getblk` zeroes only blocks it allocates; the
/// kernel lists what an unwritten directory block holds).
pub fn read_dir_block(vol: &Volume, dir: &Inode, lblk: u64) -> Result<Option<Vec<u8>>> {
    match run_at(vol, dir, lblk)? {
        None => Ok(None),
        Some(run) => vol.disk.read_block(run.pblk + (lblk - run.lblk)).map(Some),
    }
}
