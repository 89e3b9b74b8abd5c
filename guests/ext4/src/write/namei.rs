//! The namespace calls: create, symlink, link, unlink, rmdir, rename,
//! evict, and the orphan list, after the kernel's fs/ext4/namei.c and
//! orphan.c.
//!
//! Each call checks what the format itself limits (name length, ".", "..",
//! link counts, empty directories, file types) and writes in the order the
//! kernel's does: a new inode before the entry naming it, a new entry
//! before the old one goes (rename), the entry removed before its inode
//! loses the link. An inode whose last link goes while the host may still
//! have it open joins the superblock's orphan list (`s_last_orphan`,
//! chained through `i_dtime`) and is freed by [`Ext4::evict`], or at a clean
//! unmount by [`Ext4::free_orphans`].
//!
//! Directories: linear ones get entries in the first block with room and a
//! new block when none has (the first block full with dir_index: the
//! directory becomes indexed, `make_indexed_dir`); indexed ones go through
//! `write::htree`. Entries are removed from the leaf an htree probe (or a
//! scan) finds. An inline directory is converted to a block first
//! (`write::inline`); encrypted and casefolded directories are refused
//! with `Unsupported`.

use std::rc::Rc;

use fshost_sdk::{
    Attr, Error, ErrorCode, FileType, Filesystem, Ino, NewInode, RenameFlags, Result, Timestamp, Unlinked,
};

use super::RawInode;
use super::alloc;
use super::dir::{self, Layout};
use super::htree::{self, Blocks, Ctx};
use crate::directory;
use crate::features::{compat, incompat, ro_compat};

/// `EXT4_FEATURE_RO_COMPAT_DIR_NLINK`.
const DIR_NLINK: u32 = 0x0020;
use crate::fs::Ext4;
use crate::inode::{Inode, flags};
use crate::mapping;

/// `EXT4_LINK_MAX`.
const LINK_MAX: u16 = 65000;
/// `s_last_orphan` in the superblock.
const SB_LAST_ORPHAN: usize = 0xE8;

/// A name the format can hold: 1..=255 bytes, no '/', no NUL, not "." or "..".
fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::invalid("name is empty or contains '/' or NUL"));
    }
    if name == b"." || name == b".." {
        return Err(Error::invalid("'.' and '..' cannot be created or removed"));
    }
    if name.len() > 255 {
        return Err(Error::new(ErrorCode::NameTooLong, format!("name of {} bytes (ext4 allows 255)", name.len())));
    }
    Ok(())
}

/// `EXT4_FL_INHERITED` masked by `ext4_mask_flags`: the parent's flags a
/// new inode of `kind` takes (casefold is never set here: such parents are
/// refused).
fn inherited_flags(parent: u32, kind: FileType) -> u32 {
    const SECRM: u32 = 0x1;
    const UNRM: u32 = 0x2;
    const COMPR: u32 = 0x4;
    const NOCOMPR: u32 = 0x400;
    const JOURNAL_DATA: u32 = 0x4000;
    const NOTAIL: u32 = 0x8000;
    const DIRSYNC: u32 = 0x10000;
    const TOPDIR: u32 = 0x20000;
    const PROJINHERIT: u32 = 0x2000_0000;
    let inherited = SECRM
        | UNRM
        | COMPR
        | flags::SYNC
        | flags::NODUMP
        | flags::NOATIME
        | NOCOMPR
        | JOURNAL_DATA
        | NOTAIL
        | DIRSYNC
        | PROJINHERIT;
    let mask = match kind {
        FileType::Directory => u32::MAX,
        FileType::Regular => !(DIRSYNC | TOPDIR | flags::CASEFOLD | PROJINHERIT),
        _ => flags::NODUMP | flags::NOATIME,
    };
    parent & inherited & mask
}

fn lossy(name: &[u8]) -> String {
    name.escape_ascii().to_string()
}

/// A directory's blocks for `write::htree`, read and written through its
/// block map; appending allocates a block and grows the size on disk.
struct DirIo<'a> {
    fs: &'a mut Ext4,
    ino: u32,
    blocks: u32,
}

impl DirIo<'_> {
    fn new(fs: &mut Ext4, ino: u32) -> Result<DirIo<'_>> {
        let dir = fs.inode(u64::from(ino))?;
        let blocks = u32::try_from(dir.size / fs.vol.bs())
            .map_err(|_| Error::corrupted(format!("directory {ino}: size {}", dir.size)))?;
        Ok(DirIo { fs, ino, blocks })
    }

    fn pblk(&mut self, lblk: u32) -> Result<u64> {
        let dir = self.fs.inode(u64::from(self.ino))?;
        match mapping::run_at(&self.fs.vol, &dir, u64::from(lblk))? {
            Some(run) => Ok(run.pblk + (u64::from(lblk) - run.lblk)),
            None => Err(Error::corrupted(format!("directory {}: block {lblk} is a hole", self.ino))),
        }
    }
}

impl Blocks for DirIo<'_> {
    fn read(&mut self, lblk: u32) -> Result<Vec<u8>> {
        if lblk >= self.blocks {
            return Err(Error::corrupted(format!("directory {}: block {lblk} past its end", self.ino)));
        }
        let pblk = self.pblk(lblk)?;
        self.fs.vol.disk.read_block(pblk)
    }

    fn write(&mut self, lblk: u32, data: &[u8]) -> Result<()> {
        let pblk = self.pblk(lblk)?;
        self.fs.write_block(pblk, data)
    }

    fn append(&mut self) -> Result<u32> {
        let lblk = self.blocks;
        let mut raw = self.fs.raw_inode(self.ino)?;
        let pblk = self.fs.map_block_alloc(self.ino, &mut raw, lblk)?;
        let size = (u64::from(lblk) + 1) * self.fs.vol.bs();
        raw.set_size(size);
        // A new block holds no records until written: lay an empty one.
        let layout = self.fs.dir_layout();
        let mut empty = dir::empty_block(&layout);
        let seed = self.fs.vol.csum.inode_seed(self.ino, raw.generation());
        dir::set_csum(&mut empty, &layout, seed)?;
        self.fs.write_block(pblk, &empty)?;
        self.fs.put_inode(self.ino, &raw)?;
        self.blocks = lblk + 1;
        Ok(lblk)
    }

    fn count(&self) -> u32 {
        self.blocks
    }
}

impl Ext4 {
    /// The record geometry of this filesystem's directory blocks.
    pub(crate) fn dir_layout(&self) -> Layout {
        let sb = &self.vol.sb;
        Layout {
            block_size: sb.block_size as usize,
            tail: sb.features.ro_compat(ro_compat::METADATA_CSUM),
            filetype: sb.features.incompat(incompat::FILETYPE),
            inodes_count: sb.inodes_count,
        }
    }

    fn is_dx(&self, dir: &Inode) -> bool {
        self.vol.sb.features.compat(compat::DIR_INDEX) && dir.has_flag(flags::INDEX)
    }

    fn dx_ctx(&self, dir: &Inode) -> Ctx {
        let sb = &self.vol.sb;
        Ctx {
            layout: self.dir_layout(),
            seed: dir.csum_seed,
            hash_seed: sb.hash_seed,
            hash_unsigned: sb.hash_unsigned,
            max_levels: if sb.features.incompat(incompat::LARGEDIR) { 3 } else { 2 },
        }
    }

    /// Directory `ino`, if this writer can change it: never an immutable
    /// one, and when a name is `removing` from it, not an append-only one
    /// (the kernel's `may_create` and `may_delete`).
    fn writable_dir(&mut self, ino: Ino, removing: bool) -> Result<Rc<Inode>> {
        self.writable()?;
        let mut dir = self.dir(ino)?;
        for (bit, what) in [(flags::ENCRYPT, "encrypted"), (flags::CASEFOLD, "casefolded")] {
            if dir.has_flag(bit) {
                return Err(Error::unsupported(format!("directory {ino} is {what}: ext4 guest cannot change it")));
            }
        }
        if dir.has_flag(flags::INLINE_DATA) && !dir.has_flag(flags::IMMUTABLE) {
            // Entries are changed in blocks only (write::inline).
            self.convert_inline_dir(dir.ino)?;
            dir = self.dir(ino)?;
        }
        if dir.has_flag(flags::IMMUTABLE) || (removing && dir.has_flag(flags::APPEND)) {
            return Err(Error::new(ErrorCode::NotPermitted, format!("directory {ino} is immutable or append-only")));
        }
        Ok(dir)
    }

    /// The inode `name` names in `dir`, if any.
    fn find_entry(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<directory::Found>> {
        directory::find(&self.vol, dir, name)
    }

    /// A leaf block of `dir`, checked before it is changed.
    fn read_leaf(&mut self, dir: &Inode, lblk: u32) -> Result<Vec<u8>> {
        let data = mapping::read_dir_block(&self.vol, dir, u64::from(lblk))?
            .ok_or_else(|| Error::corrupted(format!("directory {}: block {lblk} is a hole", dir.ino)))?;
        if self.vol.csum.metadata {
            crate::dir::verify_leaf(&data, dir.csum_seed)
                .map_err(|e| e.context(format!("directory {} block {lblk}", dir.ino)))?;
        }
        Ok(data)
    }

    fn write_leaf(&mut self, dir: &Inode, lblk: u32, mut data: Vec<u8>) -> Result<()> {
        dir::set_csum(&mut data, &self.dir_layout(), dir.csum_seed)?;
        let pblk = DirIo::new(self, dir.ino)?.pblk(lblk)?;
        self.write_block(pblk, &data)
    }

    /// The block of `dir` holding the live record `name`.
    fn locate(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<u32>> {
        let layout = self.dir_layout();
        let candidates: Vec<u32> = if self.is_dx(dir) {
            let mut out = Vec::new();
            match crate::htree::probe(&self.vol, dir, name)? {
                crate::htree::Probe::Found(mut cursor) => loop {
                    out.push(cursor.leaf());
                    if out.len() as u64 > dir.size / self.vol.bs() || !cursor.advance(&self.vol, dir)? {
                        break;
                    }
                },
                crate::htree::Probe::Bad(why) => {
                    return Err(why.context(format!("directory {}: htree index", dir.ino)));
                }
            }
            out
        } else {
            (0..(dir.size / self.vol.bs()) as u32).collect()
        };
        for lblk in candidates {
            let Some(data) = mapping::read_dir_block(&self.vol, dir, u64::from(lblk))? else { continue };
            if dir::find(&data, &layout, name)?.is_some() {
                return Ok(Some(lblk));
            }
        }
        Ok(None)
    }

    /// Add the record (`ino`, `name`, `kind`) to directory `dir_ino`.
    fn add_entry(&mut self, dir_ino: u32, name: &[u8], ino: u32, kind: FileType) -> Result<()> {
        let dir = self.inode(u64::from(dir_ino))?;
        let layout = self.dir_layout();
        let code = dir::type_code(kind);
        if self.is_dx(&dir) {
            let ctx = self.dx_ctx(&dir);
            return htree::add(&mut DirIo::new(self, dir_ino)?, &ctx, ino, name, code);
        }
        let blocks = u32::try_from(dir.size / self.vol.bs()).unwrap_or(u32::MAX);
        for lblk in 0..blocks {
            let mut data = self.read_leaf(&dir, lblk)?;
            if dir::insert(&mut data, &layout, ino, name, code)? {
                return self.write_leaf(&dir, lblk, data);
            }
            if blocks == 1 && self.vol.sb.features.compat(compat::DIR_INDEX) {
                let ctx = self.dx_ctx(&dir);
                let version = self.vol.sb.def_hash_version;
                htree::make_indexed(&mut DirIo::new(self, dir_ino)?, &ctx, version, ino, name, code)?;
                let mut raw = self.raw_inode(dir_ino)?;
                raw.set_flags(raw.flags() | flags::INDEX);
                return self.put_inode(dir_ino, &raw);
            }
        }
        let lblk = DirIo::new(self, dir_ino)?.append()?;
        let dir = self.inode(u64::from(dir_ino))?;
        let mut data = self.read_leaf(&dir, lblk)?;
        if !dir::insert(&mut data, &layout, ino, name, code)? {
            return Err(Error::corrupted(format!("directory {dir_ino}: a new block has no room")));
        }
        self.write_leaf(&dir, lblk, data)
    }

    /// Remove the live record `name` from `dir`.
    fn remove_entry(&mut self, dir: &Inode, name: &[u8]) -> Result<()> {
        let lblk = self
            .locate(dir, name)?
            .ok_or_else(|| Error::not_found(format!("no entry {:?} in directory {}", lossy(name), dir.ino)))?;
        let mut data = self.read_leaf(dir, lblk)?;
        dir::remove(&mut data, &self.dir_layout(), name)?;
        self.write_leaf(dir, lblk, data)
    }

    /// Point the record `name` of `dir` at `ino` (`ext4_setent`).
    fn retarget_entry(&mut self, dir: &Inode, name: &[u8], ino: u32, kind: FileType) -> Result<()> {
        let lblk = self
            .locate(dir, name)?
            .ok_or_else(|| Error::not_found(format!("no entry {:?} in directory {}", lossy(name), dir.ino)))?;
        let mut data = self.read_leaf(dir, lblk)?;
        dir::retarget(&mut data, &self.dir_layout(), name, ino, dir::type_code(kind))?;
        self.write_leaf(dir, lblk, data)
    }

    /// Whether directory `dir` holds nothing but "." and ".." (`ext4_empty_dir`).
    fn dir_is_empty(&mut self, dir: &Inode) -> Result<bool> {
        if let Some(empty) = self.inline_dir_is_empty(dir)? {
            return Ok(empty);
        }
        let layout = self.dir_layout();
        let dx = self.is_dx(dir);
        for lblk in 0..dir.size / self.vol.bs() {
            let Some(data) = mapping::read_dir_block(&self.vol, dir, lblk)? else { continue };
            if dx && lblk > 0 && crate::dir::first_rec_len(&data, self.vol.sb.block_size)? == data.len() {
                continue; // an index node: one unused record spanning it
            }
            let plain = Layout { tail: layout.tail && !(dx && lblk == 0), ..layout };
            if !dir::is_empty(&data, &plain)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Set a directory's mtime and ctime and change its link count by
    /// `links` (`ext4_inc_count`/`ext4_dec_count` with dir_nlink).
    fn touch_dir(&mut self, dir_ino: u32, time: Timestamp, links: i32) -> Result<()> {
        let dir = self.inode(u64::from(dir_ino))?;
        let dx = self.is_dx(&dir);
        let mut raw = self.raw_inode(dir_ino)?;
        raw.set_mtime(time);
        raw.set_ctime(time);
        if !self.vol.sb.features.compat(compat::DIR_INDEX) && raw.has_flag(flags::INDEX) {
            // `ext4_update_dx_flag`: without dir_index the index is not kept.
            raw.set_flags(raw.flags() & !flags::INDEX);
        }
        let n = raw.links();
        if links > 0 {
            let up = n.saturating_add(1);
            raw.set_links(if dx && (up > LINK_MAX || up == 2) { 1 } else { up });
        } else if links < 0 && n > 2 {
            raw.set_links(n - 1);
        }
        self.put_inode(dir_ino, &raw)
    }

    /// `EXT4_DIR_LINK_MAX`: a directory that cannot take another subdirectory.
    fn dir_link_max(&self, dir: &Inode) -> bool {
        dir.links >= LINK_MAX && !(self.vol.sb.features.ro_compat(DIR_NLINK) && self.is_dx(dir))
    }

    /// Put `ino` (link count just dropped to 0) on the orphan list.
    fn orphan_add(&mut self, ino: u32, raw: &mut RawInode) -> Result<()> {
        raw.set_dtime(self.vol.sb.last_orphan);
        self.put_inode(ino, raw)?;
        alloc::update_sb(self, |b| b[SB_LAST_ORPHAN..SB_LAST_ORPHAN + 4].copy_from_slice(&ino.to_le_bytes()))
    }

    /// Whether `ino` is on the orphan list.
    pub(crate) fn is_orphan(&mut self, ino: u32) -> Result<bool> {
        let mut at = self.vol.sb.last_orphan;
        for _ in 0..self.vol.sb.inodes_count {
            if at == ino {
                return Ok(true);
            }
            if at == 0 || !self.vol.sb.valid_inum(at) {
                return Ok(false);
            }
            at = self.raw_inode(at)?.dtime();
        }
        Err(Error::corrupted("the orphan list loops"))
    }

    /// Take `ino` off the orphan list, if it is on it (`raw` is written by the caller).
    fn orphan_del(&mut self, ino: u32, raw: &mut RawInode) -> Result<()> {
        let next = raw.dtime();
        raw.set_dtime(0);
        if self.vol.sb.last_orphan == ino {
            return alloc::update_sb(self, |b| {
                b[SB_LAST_ORPHAN..SB_LAST_ORPHAN + 4].copy_from_slice(&next.to_le_bytes())
            });
        }
        let mut at = self.vol.sb.last_orphan;
        for _ in 0..self.vol.sb.inodes_count {
            if at == 0 || !self.vol.sb.valid_inum(at) {
                return Ok(());
            }
            let mut prev = self.raw_inode(at)?;
            if prev.dtime() == ino {
                prev.set_dtime(next);
                return self.put_inode(at, &prev);
            }
            at = prev.dtime();
        }
        Err(Error::corrupted("the orphan list loops"))
    }

    /// A new inode of `kind` for `new` (owner, mode, times), on disk with
    /// `links` links, not yet named.
    fn new_inode(&mut self, parent: u32, new: &NewInode, links: u16) -> Result<(u32, RawInode)> {
        let is_dir = new.kind == FileType::Directory;
        let ino = self.alloc_inode(parent, is_dir)?;
        let generation = self.new_generation();
        let mut raw = RawInode::new_for(&self.vol.sb, new.kind, new.perm, new.uid, new.gid, new.time, generation)?;
        raw.set_links(links);
        let parent_flags = self.inode(u64::from(parent))?.flags;
        raw.set_flags(raw.flags() | inherited_flags(parent_flags, new.kind));
        if matches!(new.kind, FileType::CharDevice | FileType::BlockDevice) {
            let rdev = new.rdev;
            let major = (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32;
            let minor = ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32;
            let words: [u32; 3] = if major < 256 && minor < 256 {
                [(major << 8) | minor, 0, 0]
            } else {
                [0, (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12), 0]
            };
            for (i, w) in words.iter().enumerate() {
                raw.i_block_mut()[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
        Ok((ino, raw))
    }

    /// Undo a new inode whose entry could not be added.
    fn drop_new_inode(&mut self, ino: u32, mut raw: RawInode, is_dir: bool) -> Result<()> {
        self.truncate_blocks(ino, &mut raw, 0)?;
        raw.set_links(0);
        raw.set_dtime(raw.ctime().seconds as u32);
        self.put_inode(ino, &raw)?;
        self.free_inode(ino, is_dir)
    }

    /// Check `parent` can take `name` (a directory this writer changes,
    /// the name free).
    fn prepare_add(&mut self, parent: Ino, name: &[u8]) -> Result<Rc<Inode>> {
        check_name(name)?;
        let dir = self.writable_dir(parent, false)?;
        if self.find_entry(&dir, name)?.is_some() {
            return Err(Error::new(ErrorCode::Exists, format!("{:?} exists in directory {parent}", lossy(name))));
        }
        Ok(dir)
    }

    /// `create`: a regular file, directory, fifo, socket or device.
    pub(crate) fn namei_create(&mut self, parent: Ino, name: &[u8], new: &NewInode) -> Result<Attr> {
        let dir = self.prepare_add(parent, name)?;
        let is_dir = new.kind == FileType::Directory;
        match new.kind {
            FileType::Symlink | FileType::Unknown => {
                return Err(Error::invalid(format!("create of a {:?}: use symlink", new.kind)));
            }
            FileType::Directory if self.dir_link_max(&dir) => {
                return Err(Error::new(ErrorCode::TooManyLinks, format!("directory {parent} has too many links")));
            }
            _ => {}
        }
        let (ino, mut raw) = self.new_inode(dir.ino, new, if is_dir { 2 } else { 1 })?;
        if is_dir {
            let made = (|| -> Result<()> {
                let pblk = self.map_block_alloc(ino, &mut raw, 0)?;
                raw.set_size(self.vol.bs());
                let layout = self.dir_layout();
                let mut block = dir::first_block(&layout, ino, dir.ino);
                dir::set_csum(&mut block, &layout, self.vol.csum.inode_seed(ino, raw.generation()))?;
                self.write_block(pblk, &block)
            })();
            if let Err(e) = made {
                self.drop_new_inode(ino, raw, true)?;
                return Err(e);
            }
        }
        self.put_inode(ino, &raw)?;
        if let Err(e) = self.add_entry(dir.ino, name, ino, new.kind) {
            self.drop_new_inode(ino, raw, is_dir)?;
            return Err(e);
        }
        self.touch_dir(dir.ino, new.time, i32::from(is_dir))?;
        self.getattr(u64::from(ino))
    }

    /// `symlink`: targets under 60 bytes in `i_block`, longer ones in a block.
    pub(crate) fn namei_symlink(&mut self, parent: Ino, name: &[u8], target: &[u8], new: &NewInode) -> Result<Attr> {
        let dir = self.prepare_add(parent, name)?;
        let bs = self.vol.bs() as usize;
        if target.is_empty() || target.contains(&0) {
            return Err(Error::invalid("symlink target is empty or holds NUL"));
        }
        if target.len() + 1 > bs {
            return Err(Error::new(ErrorCode::NameTooLong, format!("symlink target of {} bytes", target.len())));
        }
        let new = NewInode { kind: FileType::Symlink, ..*new };
        let (ino, mut raw) = self.new_inode(dir.ino, &new, 1)?;
        raw.set_size(target.len() as u64);
        if target.len() < 60 {
            raw.set_flags(raw.flags() & !flags::EXTENTS);
            let area = raw.i_block_mut();
            area.fill(0);
            area[..target.len()].copy_from_slice(target);
        } else {
            let made = (|| -> Result<()> {
                let pblk = self.map_block_alloc(ino, &mut raw, 0)?;
                let mut block = vec![0; bs];
                block[..target.len()].copy_from_slice(target);
                self.write_block(pblk, &block)
            })();
            if let Err(e) = made {
                self.drop_new_inode(ino, raw, false)?;
                return Err(e);
            }
        }
        self.put_inode(ino, &raw)?;
        if let Err(e) = self.add_entry(dir.ino, name, ino, FileType::Symlink) {
            self.drop_new_inode(ino, raw, false)?;
            return Err(e);
        }
        self.touch_dir(dir.ino, new.time, 0)?;
        self.getattr(u64::from(ino))
    }

    /// `link`: another name for a non-directory.
    pub(crate) fn namei_link(&mut self, ino: Ino, parent: Ino, name: &[u8], time: Timestamp) -> Result<Attr> {
        let dir = self.prepare_add(parent, name)?;
        let target = self.inode(ino)?;
        let kind = target.kind()?;
        if kind == FileType::Directory {
            return Err(Error::new(ErrorCode::NotPermitted, format!("inode {ino} is a directory: no hard links")));
        }
        if target.has_flag(flags::IMMUTABLE) || target.has_flag(flags::APPEND) {
            return Err(Error::new(ErrorCode::NotPermitted, format!("inode {ino} is immutable or append-only")));
        }
        if target.links >= LINK_MAX {
            return Err(Error::new(ErrorCode::TooManyLinks, format!("inode {ino} has {} links", target.links)));
        }
        let ino = target.ino;
        self.add_entry(dir.ino, name, ino, kind)?;
        let mut raw = self.raw_inode(ino)?;
        if raw.links() == 0 {
            // An O_TMPFILE (or unlinked) inode gets a name again.
            self.orphan_del(ino, &mut raw)?;
        }
        raw.set_links(raw.links() + 1);
        raw.set_ctime(time);
        self.put_inode(ino, &raw)?;
        self.touch_dir(dir.ino, time, 0)?;
        self.getattr(u64::from(ino))
    }

    /// Drop one link of `ino` (its entry is gone); to the orphan list at 0.
    /// Directories lose all of theirs (`clear_nlink`).
    fn drop_link(&mut self, ino: u32, time: Timestamp) -> Result<Unlinked> {
        let mut raw = self.raw_inode(ino)?;
        let is_dir = raw.kind() == Some(FileType::Directory);
        let links = if is_dir { 0 } else { raw.links().saturating_sub(1) };
        raw.set_links(links);
        raw.set_ctime(time);
        if links == 0 {
            self.orphan_add(ino, &mut raw)?;
        } else {
            self.put_inode(ino, &raw)?;
        }
        Ok(Unlinked { ino: u64::from(ino), nlink: u32::from(links) })
    }

    /// `unlink`: remove a non-directory's entry.
    pub(crate) fn namei_unlink(&mut self, parent: Ino, name: &[u8], time: Timestamp) -> Result<Unlinked> {
        check_name(name)?;
        let dir = self.writable_dir(parent, true)?;
        let found = self
            .find_entry(&dir, name)?
            .ok_or_else(|| Error::not_found(format!("no entry {:?} in directory {parent}", lossy(name))))?;
        let child = self.inode(u64::from(found.ino))?;
        if child.kind()? == FileType::Directory {
            return Err(Error::new(ErrorCode::IsDir, format!("{:?} is a directory", lossy(name))));
        }
        if child.has_flag(flags::IMMUTABLE) || child.has_flag(flags::APPEND) {
            return Err(Error::new(
                ErrorCode::NotPermitted,
                format!("inode {} is immutable or append-only", child.ino),
            ));
        }
        self.remove_entry(&dir, name)?;
        self.touch_dir(dir.ino, time, 0)?;
        self.drop_link(child.ino, time)
    }

    /// `rmdir`: remove an empty directory.
    pub(crate) fn namei_rmdir(&mut self, parent: Ino, name: &[u8], time: Timestamp) -> Result<Ino> {
        check_name(name)?;
        let dir = self.writable_dir(parent, true)?;
        let found = self
            .find_entry(&dir, name)?
            .ok_or_else(|| Error::not_found(format!("no entry {:?} in directory {parent}", lossy(name))))?;
        let child = self.inode(u64::from(found.ino))?;
        if child.kind()? != FileType::Directory {
            return Err(Error::new(ErrorCode::NotDir, format!("{:?} is not a directory", lossy(name))));
        }
        if !self.dir_is_empty(&child)? {
            return Err(Error::new(ErrorCode::NotEmpty, format!("directory {} is not empty", child.ino)));
        }
        self.remove_entry(&dir, name)?;
        self.drop_link(child.ino, time)?;
        self.touch_dir(dir.ino, time, -1)?;
        Ok(u64::from(child.ino))
    }

    /// Rewrite the ".." record of directory `ino` to `parent`.
    fn set_dotdot(&mut self, ino: u32, parent: u32) -> Result<()> {
        if self.set_inline_dotdot(ino, parent)? {
            return Ok(());
        }
        let dir = self.inode(u64::from(ino))?;
        let dx = self.is_dx(&dir);
        let layout = self.dir_layout();
        let plain = Layout { tail: layout.tail && !dx, ..layout };
        let mut data = mapping::read_dir_block(&self.vol, &dir, 0)?
            .ok_or_else(|| Error::corrupted(format!("directory {ino}: block 0 is a hole")))?;
        if !dx && self.vol.csum.metadata {
            crate::dir::verify_leaf(&data, dir.csum_seed)?;
        }
        // "..": the second record (an htree root's spans the index).
        let end = if plain.tail { data.len() - dir::TAIL_SIZE } else { data.len() };
        let records = crate::dir::parse(data.get(..end).unwrap_or_default(), self.vol.sb.block_size, u32::MAX)?;
        let at = match records.as_slice() {
            [_, dd, ..] if dd.name == b".." => dd.offset,
            _ => return Err(Error::corrupted(format!("directory {ino}: no '..' record"))),
        };
        data[at..at + 4].copy_from_slice(&parent.to_le_bytes());
        if dx {
            // The root's checksum is the index's (dx_tail): rewrite it.
            let ctx = self.dx_ctx(&dir);
            htree::restamp_root(&mut data, &ctx)?;
            let pblk = DirIo::new(self, ino)?.pblk(0)?;
            return self.write_block(pblk, &data);
        }
        self.write_leaf(&dir, 0, data)
    }

    /// `rename`, with RENAME_NOREPLACE and RENAME_EXCHANGE.
    pub(crate) fn namei_rename(
        &mut self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: RenameFlags,
        time: Timestamp,
    ) -> Result<Option<Unlinked>> {
        check_name(name)?;
        check_name(new_name)?;
        if flags.exchange && flags.no_replace {
            return Err(Error::invalid("rename: exchange and no-replace together"));
        }
        let old_dir = self.writable_dir(parent, true)?;
        let new_dir = self.writable_dir(new_parent, false)?;
        let src = self
            .find_entry(&old_dir, name)?
            .ok_or_else(|| Error::not_found(format!("no entry {:?} in directory {parent}", lossy(name))))?;
        let dst = self.find_entry(&new_dir, new_name)?;
        if dst.is_some() && !flags.no_replace && new_dir.has_flag(flags::APPEND) {
            return Err(Error::new(ErrorCode::NotPermitted, format!("directory {new_parent} is append-only")));
        }
        let src_inode = self.inode(u64::from(src.ino))?;
        let src_kind = src_inode.kind()?;
        let src_is_dir = src_kind == FileType::Directory;
        let same_dir = old_dir.ino == new_dir.ino;
        if flags.exchange {
            let dst = dst.ok_or_else(|| {
                Error::not_found(format!("rename exchange: no entry {:?} in directory {new_parent}", lossy(new_name)))
            })?;
            let dst_inode = self.inode(u64::from(dst.ino))?;
            let dst_kind = dst_inode.kind()?;
            let dst_is_dir = dst_kind == FileType::Directory;
            if !same_dir && src_is_dir != dst_is_dir {
                let gaining = if src_is_dir { &new_dir } else { &old_dir };
                if self.dir_link_max(gaining) {
                    return Err(Error::new(
                        ErrorCode::TooManyLinks,
                        format!("directory {} is full of links", gaining.ino),
                    ));
                }
            }
            self.retarget_entry(&new_dir, new_name, src.ino, src_kind)?;
            self.retarget_entry(&old_dir, name, dst.ino, dst_kind)?;
            if !same_dir {
                if src_is_dir {
                    self.set_dotdot(src.ino, new_dir.ino)?;
                }
                if dst_is_dir {
                    self.set_dotdot(dst.ino, old_dir.ino)?;
                }
            }
            for ino in [src.ino, dst.ino] {
                let mut raw = self.raw_inode(ino)?;
                raw.set_ctime(time);
                self.put_inode(ino, &raw)?;
            }
            let (old_links, new_links) = match (same_dir, src_is_dir, dst_is_dir) {
                (false, true, false) => (-1, 1),
                (false, false, true) => (1, -1),
                _ => (0, 0),
            };
            self.touch_dir(old_dir.ino, time, old_links)?;
            if !same_dir {
                self.touch_dir(new_dir.ino, time, new_links)?;
            }
            return Ok(None);
        }
        let mut replaced = None;
        if let Some(dst) = dst {
            if flags.no_replace {
                return Err(Error::new(
                    ErrorCode::Exists,
                    format!("{:?} exists in directory {new_parent}", lossy(new_name)),
                ));
            }
            if dst.ino == src.ino {
                // Two links to one inode: POSIX says do nothing.
                return Ok(None);
            }
            let dst_inode = self.inode(u64::from(dst.ino))?;
            let dst_is_dir = dst_inode.kind()? == FileType::Directory;
            match (src_is_dir, dst_is_dir) {
                (true, false) => {
                    return Err(Error::new(ErrorCode::NotDir, format!("{:?} is not a directory", lossy(new_name))));
                }
                (false, true) => {
                    return Err(Error::new(ErrorCode::IsDir, format!("{:?} is a directory", lossy(new_name))));
                }
                (true, true) if !self.dir_is_empty(&dst_inode)? => {
                    return Err(Error::new(ErrorCode::NotEmpty, format!("directory {} is not empty", dst.ino)));
                }
                _ => {}
            }
            if dst_inode.has_flag(flags::IMMUTABLE) || dst_inode.has_flag(flags::APPEND) {
                return Err(Error::new(
                    ErrorCode::NotPermitted,
                    format!("inode {} is immutable or append-only", dst.ino),
                ));
            }
            self.retarget_entry(&new_dir, new_name, src.ino, src_kind)?;
            replaced = Some(dst.ino);
        } else {
            if src_is_dir && !same_dir && self.dir_link_max(&new_dir) {
                return Err(Error::new(ErrorCode::TooManyLinks, format!("directory {new_parent} has too many links")));
            }
            self.add_entry(new_dir.ino, new_name, src.ino, src_kind)?;
        }
        let old_dir = self.inode(u64::from(old_dir.ino))?;
        self.remove_entry(&old_dir, name)?;
        let mut raw = self.raw_inode(src.ino)?;
        raw.set_ctime(time);
        self.put_inode(src.ino, &raw)?;
        if src_is_dir && !same_dir {
            self.set_dotdot(src.ino, new_dir.ino)?;
        }
        let replaced = match replaced {
            Some(ino) => Some(self.drop_link(ino, time)?),
            None => None,
        };
        // Link counts: a moved directory's ".." leaves the old parent and
        // joins the new one; a replaced directory's ".." leaves the new one.
        let (mut old_links, mut new_links) = (0, 0);
        if src_is_dir {
            old_links -= 1;
            if replaced.is_none() {
                new_links += 1;
            }
        }
        if same_dir {
            self.touch_dir(old_dir.ino, time, old_links + new_links)?;
        } else {
            self.touch_dir(old_dir.ino, time, old_links)?;
            self.touch_dir(new_dir.ino, time, new_links)?;
        }
        Ok(replaced)
    }

    /// `evict`: free `ino` if it is an orphan (no links left).
    pub(crate) fn namei_evict(&mut self, ino: Ino) -> Result<()> {
        self.writable()?;
        let ino32 = u32::try_from(ino).map_err(|_| Error::not_found(format!("inode {ino} out of range")))?;
        if !self.vol.sb.valid_inum(ino32) {
            return Err(Error::not_found(format!("inode {ino} is reserved or out of range")));
        }
        let mut raw = self.raw_inode(ino32)?;
        // Only an orphan is freed: an inode with links, or one already
        // freed (off the list), is left alone.
        if raw.links() != 0 || raw.mode() == 0 || !self.is_orphan(ino32)? {
            return Ok(());
        }
        self.free_orphan(ino32, &mut raw)
    }

    /// Free orphan `ino`: its blocks, its xattr block, the inode.
    fn free_orphan(&mut self, ino: u32, raw: &mut RawInode) -> Result<()> {
        let is_dir = raw.kind() == Some(FileType::Directory);
        self.orphan_del(ino, raw)?;
        let fast_symlink = raw.kind() == Some(FileType::Symlink) && !raw.has_flag(flags::EXTENTS) && raw.size() < 60;
        let special = matches!(
            raw.kind(),
            Some(FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket)
        );
        if !fast_symlink && !special {
            self.truncate_blocks(ino, raw, 0)?;
        }
        self.release_xattr_block(ino, raw)?;
        raw.set_size(0);
        raw.set_dtime(raw.ctime().seconds as u32);
        self.put_inode(ino, raw)?;
        self.free_inode(ino, is_dir)
    }

    /// Free every inode on the orphan list (a clean unmount's first step).
    pub(crate) fn free_orphans(&mut self) -> Result<()> {
        for _ in 0..self.vol.sb.inodes_count {
            let head = self.vol.sb.last_orphan;
            if head == 0 {
                return Ok(());
            }
            if !self.vol.sb.valid_inum(head) {
                return Err(Error::corrupted(format!("orphan list names inode {head}")));
            }
            let mut raw = self.raw_inode(head)?;
            if raw.links() != 0 {
                // Not an orphan after all: just unlink it from the list.
                self.orphan_del(head, &mut raw)?;
                self.put_inode(head, &raw)?;
                continue;
            }
            self.free_orphan(head, &mut raw)?;
        }
        Err(Error::corrupted("the orphan list loops"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_format_refuses() {
        assert_eq!(check_name(b"").unwrap_err().code(), ErrorCode::Invalid);
        assert_eq!(check_name(b".").unwrap_err().code(), ErrorCode::Invalid);
        assert_eq!(check_name(b"..").unwrap_err().code(), ErrorCode::Invalid);
        assert_eq!(check_name(b"a/b").unwrap_err().code(), ErrorCode::Invalid);
        assert_eq!(check_name(&[b'a'; 256]).unwrap_err().code(), ErrorCode::NameTooLong);
        assert!(check_name(&[b'a'; 255]).is_ok());
        assert!(check_name(b"...").is_ok());
    }
}
