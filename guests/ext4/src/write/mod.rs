//! Writing: the half of the guest behind the contract's `writer` interface.
//!
//! Every metadata write goes through [`crate::disk::Disk::write`]. By
//! default it goes straight to the device, in an order that leaves the
//! image consistent when the call returns, and the superblock says "not
//! clean" while the filesystem is in use, so a crash between calls sends
//! the image to e2fsck, as a crash of ext2 would. With the `journal` mount
//! option on a journaled filesystem, writes collect in a jbd2 transaction
//! committed to the journal and then checkpointed (`journal`), so a crash
//! leaves what the journal replays.
//!
//! Files, allocation and the filesystem's state:
//! - `raw`: [`RawInode`], the on-disk inode bytes with typed fields and the
//!   kernel's encodings (split ids, sizes, i_blocks, timestamps).
//! - `alloc`: block and inode bitmaps, group descriptors, the superblock's
//!   counters, with their checksums (crc32c, or crc16 for gdt_csum).
//! - `extents`: the extent tree as a sorted list, read whole and written
//!   back leaf by leaf (unchanged leaves kept, full ones split, small
//!   neighbours merged, index levels rebuilt).
//! - `blockmap`: ext2/ext3 block-mapped files through indirect blocks.
//! - `begin`: begin_write (feature gate, journal recovery onto the
//!   device, the orphan list a crash left, "not clean" or needs_recovery),
//!   unmount.
//! - `journal`: jbd2 transactions written and checkpointed (`-o journal`).
//! - `file`: iomap_begin for writes, ioend, fallocate, setattr.
//! - `inline`: inline_data files and directories, converted to blocks
//!   before their data or entries change (`ext4_convert_inline_data`).
//!
//! Names and attributes (H-B's half), after fs/ext4/namei.c and xattr.c:
//! - `dir`: one directory block edited in memory (insert, remove,
//!   retarget, pack, the dirent checksum tail).
//! - `htree`: adding a name to an indexed directory (leaf and index node
//!   splits, a new level), making a one-block directory indexed.
//! - `namei`: create, symlink, link, unlink, rmdir, rename, evict, and the
//!   orphan list.
//! - `xattr`: setxattr/removexattr in the inode and in (shared) blocks,
//!   POSIX ACLs to the on-disk format.
//!
//! The API the namespace half builds on (all `impl Ext4`, crate-visible):
//! [`Ext4::alloc_inode`], [`Ext4::free_inode`], [`Ext4::raw_inode`],
//! [`Ext4::put_inode`], [`Ext4::map_block_alloc`], [`Ext4::truncate_blocks`],
//! [`Ext4::write_block`], and [`RawInode`]. Typical use, creating a file:
//! `let ino = fs.alloc_inode(parent, false)?; let mut raw = RawInode::new_for(&fs.vol.sb, kind, perm, uid, gid,
//! time, fs.new_generation()); raw.set_links(1); fs.put_inode(ino, &raw)?;` then the directory entry.

// The inode allocation API and parts of RawInode are for the namespace
// half (create, unlink, ...), which lands after this foundation.
#![allow(dead_code)]

mod alloc;
mod begin;
mod blockmap;
mod dir;
mod extents;
mod file;
mod htree;
mod inline;
mod journal;
mod namei;
mod raw;
mod xattr;

use fshost_sdk::{Attr, AttrChanges, Error, ErrorCode, FallocateFlags, Ino, Mapping, Result, Timestamp};

#[allow(unused_imports)]
pub(crate) use raw::{RawInode, mode_bits};

// The trait methods fs.rs delegates to.
pub(crate) use begin::{begin_write, unmount};

/// `iomap_begin` with the write flag: allocate the holes of the range
/// (unwritten) and map it.
pub(crate) fn iomap_write(fs: &mut Ext4, ino: Ino, offset: u64, length: u64) -> Result<Vec<Mapping>> {
    boundary(fs)?;
    file::iomap_write(fs, ino, offset, length)
}

/// The write completed: unwritten to written, the size (write/file.rs).
pub(crate) fn ioend(fs: &mut Ext4, ino: Ino, offset: u64, written: u64, time: Timestamp) -> Result<u64> {
    boundary(fs)?;
    file::ioend(fs, ino, offset, written, time)
}

/// fallocate's modes (write/file.rs).
pub(crate) fn fallocate(
    fs: &mut Ext4,
    ino: Ino,
    offset: u64,
    length: u64,
    mode: FallocateFlags,
    time: Timestamp,
) -> Result<Attr> {
    boundary(fs)?;
    file::fallocate(fs, ino, offset, length, mode, time)
}

/// setattr: size, mode, owner, times (write/file.rs).
pub(crate) fn setattr(fs: &mut Ext4, ino: Ino, changes: &AttrChanges) -> Result<Attr> {
    boundary(fs)?;
    file::setattr(fs, ino, changes)
}

use crate::fs::Ext4;

/// What a filesystem opened for writing keeps between calls.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// A counter for new inodes' generation numbers (mixed with the inode
    /// number; the kernel uses a random number).
    pub(crate) generation: u32,
    /// The journal, when metadata is journaled (the `journal` option).
    pub(crate) journal: Option<journal::Journal>,
    /// Blocks the running transaction freed (start to end): not handed out
    /// again until it commits (write/journal.rs).
    pub(crate) freed: std::collections::BTreeMap<u64, u64>,
    /// How many blocks `freed` holds.
    pub(crate) freed_blocks: u64,
}

/// Commit the running transaction (fsync, syncfs): metadata and the data
/// written before it are durable when this returns. Without a journal, a
/// device flush.
pub(crate) fn sync(fs: &mut Ext4) -> Result<()> {
    match fs.write.as_mut().and_then(|w| w.journal.as_mut()) {
        Some(journal) => {
            journal.commit(&fs.vol.disk)?;
            if let Some(w) = fs.write.as_mut() {
                w.freed.clear();
                w.freed_blocks = 0;
            }
            Ok(())
        }
        None => fs.vol.disk.device().flush(),
    }
}

/// Between two writer calls: commit the running transaction once it holds
/// a quarter of the log, or once the blocks it freed (which wait for its
/// commit) are half of those still free (a call's changes are never split,
/// so the allocator cannot commit to get them back).
pub(crate) fn boundary(fs: &mut Ext4) -> Result<()> {
    let Some(w) = fs.write.as_ref() else { return Ok(()) };
    let Some(limit) = w.journal.as_ref().map(journal::Journal::soft_limit) else { return Ok(()) };
    if fs.vol.disk.running_len() >= limit || 2 * w.freed_blocks >= alloc::available_blocks(&fs.vol.sb).max(1) {
        sync(fs)
    } else {
        Ok(())
    }
}

impl Ext4 {
    /// Fail with `ReadOnly` unless `begin_write` succeeded in this instance.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.write.is_none() {
            return Err(Error::new(ErrorCode::ReadOnly, "ext4: not opened for writing (begin-write first)"));
        }
        Ok(())
    }

    /// A generation number for a new inode.
    pub(crate) fn new_generation(&mut self) -> u32 {
        let state = self.write.get_or_insert_with(State::default);
        state.generation = state.generation.wrapping_add(0x9E37_79B9);
        state.generation
    }

    /// Allocate an inode near `parent` (directories spread across groups,
    /// files in the parent's group when possible): marks the inode bitmap,
    /// the group's counts (free inodes, used directories, itable_unused,
    /// INODE_UNINIT cleared) and the superblock's, with all checksums.
    /// Returns the inode number; its on-disk bytes are NOT initialised
    /// (write a [`RawInode::new_for`] with [`Ext4::put_inode`]).
    /// `NoSpace` when no inode is free.
    pub(crate) fn alloc_inode(&mut self, parent: u32, is_dir: bool) -> Result<u32> {
        self.writable()?;
        alloc::alloc_inode(self, parent, is_dir)
    }

    /// Free inode `ino` (bitmap, counts, checksums). Its blocks (and xattr
    /// block) must already be freed and its on-disk bytes written as the
    /// kernel leaves a deleted inode (links 0, dtime set).
    pub(crate) fn free_inode(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        self.writable()?;
        alloc::free_inode(self, ino, is_dir)
    }

    /// The raw on-disk bytes of inode `ino` (`inode_size` long), for
    /// modification; checked against its checksum when metadata_csum is on
    /// and the inode is in use.
    pub(crate) fn raw_inode(&mut self, ino: u32) -> Result<RawInode> {
        raw::read(self, ino)
    }

    /// Write a raw inode back: sets its checksum (metadata_csum), writes the
    /// inode-table bytes, and drops the parsed inode (and the directory
    /// name index) cached for `ino`, so the next read sees it.
    pub(crate) fn put_inode(&mut self, ino: u32, raw: &RawInode) -> Result<()> {
        self.writable()?;
        raw::write(self, ino, raw)
    }

    /// Ensure logical block `lblk` of inode `ino` (extent-mapped) is
    /// allocated and initialised (a written extent), allocating next to the
    /// file's other blocks; updates `raw`'s i_blocks and extent tree (the
    /// caller then calls [`Ext4::put_inode`]). Returns the physical block,
    /// whose contents the caller writes whole (directories, slow symlinks).
    /// A block that was unwritten becomes written: the caller must write it.
    pub(crate) fn map_block_alloc(&mut self, ino: u32, raw: &mut RawInode, lblk: u32) -> Result<u64> {
        self.writable()?;
        extents::map_block_alloc(self, ino, raw, lblk)
    }

    /// Free every block of the file at or past logical block `from` (the
    /// extent tree shrinks, i_blocks is updated in `raw`; the caller then
    /// calls [`Ext4::put_inode`]). `from = 0` frees them all (delete).
    pub(crate) fn truncate_blocks(&mut self, ino: u32, raw: &mut RawInode, from: u32) -> Result<()> {
        self.writable()?;
        if raw.has_flag(crate::inode::flags::INLINE_DATA) {
            // Inline data holds no blocks (its `i_block` is data, not a map).
            return Ok(());
        }
        extents::truncate_blocks(self, ino, raw, from)
    }

    /// Write a whole block of a regular file's data (ordered data: straight
    /// to the device, where the host reads and writes file data, never
    /// through the journal), before the metadata that makes it reachable.
    pub(crate) fn write_data_block(&mut self, pblk: u64, data: &[u8]) -> Result<()> {
        self.writable()?;
        if data.len() as u64 != self.vol.bs() || !self.vol.sb.blocks_valid(pblk, 1) {
            return Err(Error::invalid(format!("write of {} bytes to block {pblk}", data.len())));
        }
        self.vol.disk.device().write(pblk * self.vol.bs(), data)
    }

    /// Write a whole metadata block (bytes already carrying their checksum).
    pub(crate) fn write_block(&mut self, pblk: u64, data: &[u8]) -> Result<()> {
        self.writable()?;
        if data.len() as u64 != self.vol.bs() || !self.vol.sb.blocks_valid(pblk, 1) {
            return Err(Error::invalid(format!("write of {} bytes to block {pblk}", data.len())));
        }
        self.vol.disk.write(pblk * self.vol.bs(), data)
    }
}
