//! Inline data (`inline_data`): files and directories whose bytes live in
//! the inode itself, the first 60 in `i_block` and the rest in the value of
//! the in-inode `system.data` attribute (read side: `crate::inline`).
//!
//! This writer never changes inline bytes in place: before a file's data
//! or size changes (a write, a truncate either way, fallocate, punch) or a
//! directory's entries change, the inode is converted to an ordinary
//! block-mapped one first, exactly as the kernel's `ext4_convert_inline_data`
//! and `ext4_convert_inline_dir` do when inline data outgrows its inode:
//! a block is allocated and holds the bytes (a directory's gets "." and
//! ".." and then the inline records, and its checksum tail), the
//! INLINE_DATA flag gives way to EXTENTS and an extent root (or an empty
//! block map without the extents feature), the `system.data` attribute
//! leaves the inode body, i_blocks and i_size follow. The normal path then
//! does the change. The host writes file data itself through mappings, and
//! an inline mapping gives it nowhere to write, so converting is also what
//! makes a write into an inline file possible at all.
//!
//! What stays inline: everything this writer does not change. Reading,
//! attributes (chmod, chown, times), xattrs (but a symlink's target leaves
//! inline data first: [`Ext4::convert_inline_symlink`]; the `system.data` entry is
//! kept in the body, where the kernel requires it, and its space counts
//! when other attributes are laid out: `write::xattr`), links, and a
//! directory's ".." (the 4-byte parent number at the start of `i_block`,
//! rewritten in place when a directory moves). Deleting an inline inode
//! frees no data blocks (`Ext4::truncate_blocks` leaves it alone).
//!
//! New files, directories and symlinks are created block-mapped even on an
//! inline_data filesystem: the kernel reads both kinds and e2fsck accepts
//! both, so the only difference a reader can see is a small directory's
//! size (one block instead of 60 bytes) and its i_blocks.

use fshost_sdk::{Error, FileType, Result};

use super::RawInode;
use super::dir;
use super::xattr::{self as xwrite, Attr};
use crate::features::incompat;
use crate::fs::Ext4;
use crate::inline::Inline;
use crate::inode::flags;
use crate::xattr::{self as reader, index};

/// The extent tree root of an inode without blocks: magic 0xF30A, no
/// entries, room for 4, depth 0 (as `ext4_ext_tree_init` writes it).
const EMPTY_EXTENT_ROOT: [u8; 12] = [0x0A, 0xF3, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0];
/// Bytes of an inline directory's `i_block` before its records: the
/// parent's inode number (there are no "." and ".." records).
const DOTDOT_SIZE: usize = 4;
/// Bytes before the in-inode xattr area's fields.
const GOOD_OLD_INODE: usize = 128;

/// Whether `raw` (a `system.data` entry) is the inline data attribute.
fn is_system_data(a: &Attr) -> bool {
    a.index == index::SYSTEM && a.name == b"data"
}

impl Ext4 {
    /// `raw` without its inline data: the INLINE_DATA flag cleared, the
    /// `system.data` attribute removed from the body (the others kept),
    /// `i_block` an empty extent root (or an empty block map without the
    /// extents feature). Nothing is written.
    fn strip_inline(&mut self, ino: u32, raw: &RawInode) -> Result<RawInode> {
        let inode = self.inode(u64::from(ino))?;
        let body: Vec<Attr> = xwrite::owned(u64::from(ino), reader::in_inode(&self.vol, &inode)?)?
            .into_iter()
            .filter(|a| !is_system_data(a))
            .collect();
        let area_start = GOOD_OLD_INODE + raw.extra_isize();
        let area_len = raw.bytes().len().saturating_sub(area_start);
        let area = xwrite::encode_ibody(&body, area_len)
            .ok_or_else(|| Error::corrupted(format!("inode {ino}: its xattrs do not fit its body")))?;
        let mut bytes = raw.bytes().to_vec();
        if area_len > 0 {
            bytes[area_start..].copy_from_slice(&area);
        }
        let mut out = RawInode::from_bytes(&self.vol.sb, bytes);
        let i_block = out.i_block_mut();
        i_block.fill(0);
        let mut f = out.flags() & !flags::INLINE_DATA;
        if self.vol.sb.features.incompat(incompat::EXTENTS) {
            out.i_block_mut()[..EMPTY_EXTENT_ROOT.len()].copy_from_slice(&EMPTY_EXTENT_ROOT);
            f |= flags::EXTENTS;
        }
        out.set_flags(f);
        Ok(out)
    }

    /// Convert regular file `ino`, if it has inline data, to a block-mapped
    /// file (`ext4_convert_inline_data`): its bytes up to i_size (zeros
    /// past what is stored) go to a new block 0, which the kernel
    /// allocates even for an empty file (SEEK_DATA then finds it).
    /// Returns the inode's raw bytes as now on disk.
    pub(crate) fn convert_inline_file(&mut self, ino: u32) -> Result<RawInode> {
        let raw = self.raw_inode(ino)?;
        if !raw.has_flag(flags::INLINE_DATA) {
            return Ok(raw);
        }
        let inode = self.inode(u64::from(ino))?;
        let bs = self.vol.bs();
        let inline = Inline::read(&self.vol, &inode)?;
        let stored = (inline.head.len() + inline.tail.len()) as u64;
        // Past the stored bytes the file reads as zeros (the kernel's
        // ext4_read_inline_folio): only the stored part needs a block.
        let len = raw.size().min(stored).min(bs) as usize;
        let mut data = inline.file_bytes(len);
        let mut new = self.strip_inline(ino, &raw)?;
        data.resize(bs as usize, 0);
        let pblk = self.map_block_alloc(ino, &mut new, 0)?;
        // The data first (ordered: to the device, not the journal), then
        // the inode that points at it.
        self.write_data_block(pblk, &data)?;
        self.put_inode(ino, &new)?;
        Ok(new)
    }

    /// Convert directory `ino`, if it is inline, to a one-block directory
    /// (`ext4_convert_inline_dir`): "." and "..", then the live inline
    /// records, packed, with the checksum tail.
    pub(crate) fn convert_inline_dir(&mut self, ino: u32) -> Result<()> {
        let raw = self.raw_inode(ino)?;
        if !raw.has_flag(flags::INLINE_DATA) {
            return Ok(());
        }
        if raw.kind() != Some(FileType::Directory) {
            return Err(Error::invalid(format!("inode {ino} is not a directory")));
        }
        let inode = self.inode(u64::from(ino))?;
        let inline = Inline::read(&self.vol, &inode)?;
        let parent = u32::from_le_bytes([inline.head[0], inline.head[1], inline.head[2], inline.head[3]]);
        let mut records = vec![(ino, b".".to_vec(), 2u8), (parent, b"..".to_vec(), 2u8)];
        let (bsize, count) = (self.vol.sb.block_size, self.vol.sb.inodes_count);
        for (what, area) in [("i_block", &inline.head[DOTDOT_SIZE..]), ("system.data", &inline.tail[..])] {
            let entries = crate::dir::parse(area, bsize, count)
                .map_err(|e| e.context(format!("directory {ino}: inline records in {what}")))?;
            records.extend(entries.iter().filter(|e| e.ino != 0).map(|e| (e.ino, e.name.to_vec(), e.file_type)));
        }
        let layout = self.dir_layout();
        let mut block = vec![0; layout.block_size];
        if !dir::pack(&mut block, &layout, &records) {
            return Err(Error::unsupported(format!("directory {ino}: its inline records do not fit one block")));
        }
        let mut new = self.strip_inline(ino, &raw)?;
        dir::set_csum(&mut block, &layout, self.vol.csum.inode_seed(ino, new.generation()))?;
        let pblk = self.map_block_alloc(ino, &mut new, 0)?;
        self.write_block(pblk, &block)?;
        new.set_size(self.vol.bs());
        self.put_inode(ino, &new)
    }

    /// Move symlink `ino`'s target, if it is inline data, out of it: into
    /// `i_block` (a fast symlink) when under 60 bytes, else into a block,
    /// as this writer makes symlinks. Done before an xattr is set on one:
    /// e2fsck 1.47 does not count the xattr block of an inline-data
    /// symlink (pass 1 skips its blocks), so an image where the kernel put
    /// one fails `e2fsck -fn`, and `e2fsck -y` would free a block in use.
    /// `true` when it converted.
    pub(crate) fn convert_inline_symlink(&mut self, ino: u32) -> Result<bool> {
        let raw = self.raw_inode(ino)?;
        if !raw.has_flag(flags::INLINE_DATA) || raw.kind() != Some(FileType::Symlink) {
            return Ok(false);
        }
        let bs = self.vol.bs() as usize;
        let len = usize::try_from(raw.size()).ok().filter(|&l| l > 0 && l < bs);
        let Some(len) = len else {
            return Err(Error::corrupted(format!("symlink {ino}: inline target of {} bytes", raw.size())));
        };
        let inode = self.inode(u64::from(ino))?;
        let target = Inline::read(&self.vol, &inode)?.file_bytes(len);
        let mut new = self.strip_inline(ino, &raw)?;
        if len < 60 {
            new.set_flags(new.flags() & !flags::EXTENTS);
            let area = new.i_block_mut();
            area.fill(0);
            area[..len].copy_from_slice(&target);
        } else {
            let mut block = target;
            block.resize(bs, 0);
            let pblk = self.map_block_alloc(ino, &mut new, 0)?;
            self.write_block(pblk, &block)?;
        }
        self.put_inode(ino, &new)?;
        Ok(true)
    }

    /// Point inline directory `ino`'s ".." (the parent number at the start
    /// of `i_block`) at `parent`. `false` when `ino` is not inline.
    pub(crate) fn set_inline_dotdot(&mut self, ino: u32, parent: u32) -> Result<bool> {
        let mut raw = self.raw_inode(ino)?;
        if !raw.has_flag(flags::INLINE_DATA) {
            return Ok(false);
        }
        raw.i_block_mut()[..DOTDOT_SIZE].copy_from_slice(&parent.to_le_bytes());
        self.put_inode(ino, &raw)?;
        Ok(true)
    }

    /// Whether inline directory `dir` holds no live record
    /// (`empty_inline_dir`); `None` when it is not inline.
    pub(crate) fn inline_dir_is_empty(&mut self, dir: &crate::inode::Inode) -> Result<Option<bool>> {
        if !dir.has_flag(flags::INLINE_DATA) {
            return Ok(None);
        }
        let inline = Inline::read(&self.vol, dir)?;
        let (bsize, count) = (self.vol.sb.block_size, self.vol.sb.inodes_count);
        for area in [&inline.head[DOTDOT_SIZE..], &inline.tail[..]] {
            let entries = crate::dir::parse(area, bsize, count)
                .map_err(|e| e.context(format!("directory {}: inline records", dir.ino)))?;
            if entries.iter().any(|e| e.ino != 0) {
                return Ok(Some(false));
            }
        }
        Ok(Some(true))
    }
}
