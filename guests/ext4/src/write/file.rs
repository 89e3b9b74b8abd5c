//! File data calls: `iomap_begin` for a write, `ioend`, `fallocate` and
//! `setattr`.
//!
//! A write allocates the holes of its block-rounded range as unwritten
//! extents (as fuse4fs and the kernel's iomap path do) and answers the
//! extents covering it; the host writes the data (zeroing the rest of
//! unwritten blocks), then `ioend` converts the blocks it touched to
//! written and raises i_size. A write that never reaches `ioend` leaves
//! unwritten blocks, which read as zeros. Sizes are limited as the kernel's
//! `ext4_max_size` limits them for extent files.

use fshost_sdk::{
    Attr, AttrChanges, Error, ErrorCode, FallocateFlags, FileType, Filesystem, Ino, Mapping, MappingKind, Result,
    Timestamp,
};

use super::RawInode;
use super::extents::{self, Ext, MAX_BLOCKS};
use crate::features::ro_compat;
use crate::fs::Ext4;
use crate::inode::flags;

/// Most blocks one `iomap_begin` allocates (the host asks again for more).
const MAX_ALLOC: u64 = 32768;
/// Most mappings one answer holds.
const MAX_MAPPINGS: usize = 256;
/// The kernel's page size on the machines fshost runs on (x86-64, arm64
/// with 4 KiB pages): where `ext4_punch_hole` stops past the size.
const PAGE_SIZE: u64 = 4096;

fn ino32(ino: Ino) -> Result<u32> {
    u32::try_from(ino).map_err(|_| Error::not_found(format!("inode {ino} out of range")))
}

/// The largest file `raw` may become, in bytes: `ext4_max_size` for
/// extent-mapped files, `ext4_max_bitmap_size` for block-mapped ones.
pub(super) fn max_size(fs: &Ext4, raw: &RawInode) -> u64 {
    let bits = fs.vol.sb.block_size.trailing_zeros();
    let huge = fs.vol.sb.features.ro_compat(ro_compat::HUGE_FILE);
    if !raw.has_flag(flags::EXTENTS) {
        return super::blockmap::max_size(bits, huge);
    }
    let res = MAX_BLOCKS << bits;
    if huge {
        res
    } else {
        let upper = (((1u64 << 32) - 1) >> (bits - 9)) << bits;
        res.min(upper)
    }
}

/// Inode `ino` checked to be a regular file this writer may change: its
/// number and raw bytes.
fn regular(fs: &mut Ext4, ino: Ino, data: bool) -> Result<(u32, RawInode)> {
    fs.writable()?;
    let inode = fs.inode(ino)?;
    match inode.kind()? {
        FileType::Regular => {}
        FileType::Directory => return Err(Error::new(ErrorCode::IsDir, format!("inode {ino} is a directory"))),
        other => return Err(Error::invalid(format!("inode {ino} is a {other:?}, not a regular file"))),
    }
    let n = ino32(ino)?;
    let raw = fs.raw_inode(n)?;
    if data {
        if raw.has_flag(flags::IMMUTABLE) {
            return Err(Error::new(ErrorCode::NotPermitted, format!("inode {ino} is immutable")));
        }
        if raw.has_flag(flags::ENCRYPT) || raw.has_flag(flags::VERITY) {
            return Err(Error::unsupported(format!("inode {ino} is encrypted or verity-protected")));
        }
        if raw.has_flag(flags::INLINE_DATA) {
            // Data or size changes go through blocks (write::inline).
            return Ok((n, fs.convert_inline_file(n)?));
        }
    }
    Ok((n, raw))
}

/// Set i_size, turning large_file on when a size needs it, as
/// `ext4_do_update_inode` does.
fn set_size(fs: &mut Ext4, raw: &mut RawInode, size: u64) -> Result<()> {
    if size > max_size(fs, raw) {
        return Err(Error::new(ErrorCode::FileTooBig, format!("size {size} past the largest file")));
    }
    if size > 0x7FFF_FFFF && !fs.vol.sb.features.ro_compat(ro_compat::LARGE_FILE) {
        if fs.vol.sb.rev_level == 0 {
            return Err(Error::new(ErrorCode::FileTooBig, "a revision 0 filesystem has no large_file"));
        }
        super::alloc::update_sb(fs, |b| {
            let f = u32::from_le_bytes([b[0x64], b[0x65], b[0x66], b[0x67]]) | ro_compat::LARGE_FILE;
            b[0x64..0x68].copy_from_slice(&f.to_le_bytes());
        })?;
    }
    raw.set_size(size);
    Ok(())
}

fn mapping(e: &Ext, bs: u64) -> Mapping {
    let kind = if e.unwritten { MappingKind::Unwritten(e.pblk * bs) } else { MappingKind::Mapped(e.pblk * bs) };
    Mapping { offset: u64::from(e.lblk) * bs, length: u64::from(e.len) * bs, kind }
}

pub(super) fn iomap_write(fs: &mut Ext4, ino: Ino, offset: u64, length: u64) -> Result<Vec<Mapping>> {
    let (n, mut raw) = regular(fs, ino, true)?;
    if raw.has_flag(flags::APPEND) && offset < raw.size() {
        return Err(Error::new(ErrorCode::NotPermitted, format!("inode {ino} is append-only")));
    }
    let bs = fs.vol.bs();
    let first = offset / bs;
    if offset >= max_size(fs, &raw) {
        return Err(Error::new(ErrorCode::FileTooBig, format!("offset {offset} past the largest file")));
    }
    let end = offset.saturating_add(length.max(1)).div_ceil(bs).min(first + MAX_ALLOC).min(MAX_BLOCKS);
    if !raw.has_flag(flags::EXTENTS) {
        let end = end.min(max_size(fs, &raw).div_ceil(bs));
        let before = raw.clone();
        super::blockmap::fill(fs, n, &mut raw, first, end)?;
        if raw != before {
            fs.put_inode(n, &raw)?;
        }
        let inode = fs.inode(ino)?;
        let runs = crate::mapping::runs(&fs.vol, &inode, first, end, MAX_MAPPINGS)?;
        let mut out: Vec<Mapping> = Vec::new();
        for r in runs.runs {
            if r.lblk > out.last().map_or(first, |m| (m.offset + m.length) / bs) {
                break;
            }
            out.push(Mapping { offset: r.lblk * bs, length: r.len * bs, kind: MappingKind::Mapped(r.pblk * bs) });
        }
        if out.is_empty() {
            return Err(Error::new(ErrorCode::NoSpace, format!("inode {ino}: no block for offset {offset}")));
        }
        return Ok(out);
    }
    let tree = extents::read(fs, n, &raw)?;
    let mut exts = tree.exts.clone();
    let fresh = extents::fill_holes(fs, n, &mut exts, first, end, false)?;
    let exts = if fresh.is_empty() {
        exts
    } else {
        extents::normalize(&mut exts);
        let answer = exts.clone();
        let added: u64 = fresh.iter().map(|e| u64::from(e.len)).sum();
        let result = raw.add_blocks(added as i64).and_then(|()| extents::write(fs, n, &mut raw, exts, tree));
        if let Err(e) = result.and_then(|()| fs.put_inode(n, &raw)) {
            extents::free_fresh(fs, &fresh);
            return Err(e);
        }
        answer
    };
    let mut out = Vec::new();
    let mut at = first;
    for e in exts.iter().filter(|e| e.end() > first && u64::from(e.lblk) < end) {
        if u64::from(e.lblk) > at || out.len() >= MAX_MAPPINGS {
            break;
        }
        out.push(mapping(e, bs));
        at = e.end();
    }
    if out.is_empty() {
        return Err(Error::new(ErrorCode::NoSpace, format!("inode {ino}: no block for offset {offset}")));
    }
    Ok(out)
}

pub(crate) fn ioend(fs: &mut Ext4, ino: Ino, offset: u64, written: u64, time: Timestamp) -> Result<u64> {
    let (n, mut raw) = regular(fs, ino, true)?;
    let end = offset.checked_add(written).ok_or_else(|| Error::invalid("ioend range overflows"))?;
    if end > max_size(fs, &raw) {
        return Err(Error::new(ErrorCode::FileTooBig, format!("write to {end} past the largest file")));
    }
    if written > 0 && raw.has_flag(flags::EXTENTS) {
        let bs = fs.vol.bs();
        let (from, to) = (offset / bs, end.div_ceil(bs));
        let tree = extents::read(fs, n, &raw)?;
        if let Some((hole, _)) = extents::holes(&tree.exts, from, to).first() {
            return Err(Error::invalid(format!("inode {ino}: ioend covers block {hole}, which no write mapped")));
        }
        let mut exts = tree.exts.clone();
        if extents::set_kind(&mut exts, from, to, false) {
            extents::write(fs, n, &mut raw, exts, tree)?;
        }
    }
    if end > raw.size() {
        set_size(fs, &mut raw, end)?;
    }
    raw.set_mtime(time);
    raw.set_ctime(time);
    fs.put_inode(n, &raw)?;
    Ok(raw.size())
}

pub(crate) fn fallocate(
    fs: &mut Ext4,
    ino: Ino,
    offset: u64,
    length: u64,
    mode: FallocateFlags,
    time: Timestamp,
) -> Result<Attr> {
    if mode.collapse_range || mode.insert_range {
        return Err(Error::unsupported("ext4 guest: collapse-range and insert-range are not supported"));
    }
    if mode.punch_hole && mode.zero_range {
        return Err(Error::invalid("punch-hole and zero-range together"));
    }
    let (n, mut raw) = regular(fs, ino, true)?;
    if !raw.has_flag(flags::EXTENTS) && !mode.punch_hole {
        // As the kernel: only punch-hole works without extents.
        return Err(Error::unsupported(format!("inode {ino}: fallocate on a block-mapped file")));
    }
    let end = offset.checked_add(length).filter(|_| length > 0).ok_or_else(|| Error::invalid("bad fallocate range"))?;
    if raw.has_flag(flags::APPEND) && (mode.punch_hole || mode.zero_range) {
        return Err(Error::new(ErrorCode::NotPermitted, format!("inode {ino} is append-only")));
    }
    let bs = fs.vol.bs();
    if mode.punch_hole {
        // ext4_punch_hole: nothing past the size, and a hole reaching past
        // it ends at the end of the page holding the last byte — it is
        // extended there, not only cut: punching [3526, 7622) of a
        // 6,147-byte file frees the block at 4096 on the kernel's ext4.
        let size = raw.size();
        if offset >= size {
            return fs.getattr(ino);
        }
        let end = if end > size { size.div_ceil(PAGE_SIZE) * PAGE_SIZE } else { end };
        let (from, to) = (offset.div_ceil(bs), (end / bs).min(MAX_BLOCKS));
        if from < to && !raw.has_flag(flags::EXTENTS) {
            super::blockmap::remove(fs, n, &mut raw, from, to)?;
        } else if from < to {
            let tree = extents::read(fs, n, &raw)?;
            let mut exts = tree.exts.clone();
            let removed = extents::remove_range(&mut exts, from, to);
            if !removed.is_empty() {
                extents::write(fs, n, &mut raw, exts, tree)?;
                extents::free_removed(fs, &mut raw, &removed)?;
            }
        }
        raw.set_mtime(time);
        raw.set_ctime(time);
        fs.put_inode(n, &raw)?;
        return fs.getattr(ino);
    }
    if end > max_size(fs, &raw) {
        return Err(Error::new(ErrorCode::FileTooBig, format!("fallocate to {end} past the largest file")));
    }
    let (from, to) = (offset / bs, end.div_ceil(bs));
    let tree = extents::read(fs, n, &raw)?;
    let need: u64 = extents::holes(&tree.exts, from, to).iter().map(|h| h.1).sum();
    if need > super::alloc::available_blocks(&fs.vol.sb) {
        return Err(Error::new(ErrorCode::NoSpace, format!("fallocate needs {need} blocks")));
    }
    let mut exts = tree.exts.clone();
    let mut fresh = Vec::new();
    if need > 0 {
        fresh = extents::fill_holes(fs, n, &mut exts, from, to, false)?;
        let added: u64 = fresh.iter().map(|e| u64::from(e.len)).sum();
        if added < need {
            extents::free_fresh(fs, &fresh);
            return Err(Error::new(ErrorCode::NoSpace, format!("fallocate needs {need} blocks")));
        }
    }
    let result = (|| -> Result<()> {
        let added: u64 = fresh.iter().map(|e| u64::from(e.len)).sum();
        raw.add_blocks(added as i64)?;
        let mut changed = !fresh.is_empty();
        if mode.zero_range {
            changed |= extents::set_kind(&mut exts, offset.div_ceil(bs), end / bs, true);
        }
        if changed {
            extents::write(fs, n, &mut raw, exts, tree)?;
        }
        raw.set_ctime(time);
        if !mode.keep_size && end > raw.size() {
            set_size(fs, &mut raw, end)?;
            raw.set_mtime(time);
        } else if mode.zero_range {
            raw.set_mtime(time);
        }
        fs.put_inode(n, &raw)
    })();
    if let Err(e) = result {
        extents::free_fresh(fs, &fresh);
        return Err(e);
    }
    fs.getattr(ino)
}

pub(crate) fn setattr(fs: &mut Ext4, ino: Ino, c: &AttrChanges) -> Result<Attr> {
    fs.writable()?;
    let n = ino32(ino)?;
    let kind = fs.inode(ino)?.kind()?;
    let mut raw = fs.raw_inode(n)?;
    if let Some(size) = c.size {
        match kind {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::new(ErrorCode::IsDir, format!("inode {ino} is a directory"))),
            _ => return Err(Error::invalid(format!("inode {ino}: size of a {kind:?}"))),
        }
        let (_, checked) = regular(fs, ino, true)?;
        raw = checked;
        if raw.has_flag(flags::APPEND) && size < raw.size() {
            return Err(Error::new(ErrorCode::NotPermitted, format!("inode {ino} is append-only")));
        }
        if size > max_size(fs, &raw) {
            return Err(Error::new(ErrorCode::FileTooBig, format!("size {size} past the largest file")));
        }
        let bs = fs.vol.bs();
        // ext4_setattr truncates whenever the size does not grow, so
        // blocks preallocated past the end (keep-size) go too.
        if size <= raw.size() {
            let from = u32::try_from(size.div_ceil(bs)).unwrap_or(u32::MAX);
            fs.truncate_blocks(n, &mut raw, from)?;
        }
        set_size(fs, &mut raw, size)?;
    }
    if let Some(perm) = c.perm {
        raw.set_mode((raw.mode() & 0o170000) | (perm & 0o7777));
    }
    if let Some(uid) = c.uid {
        raw.set_uid(uid);
    }
    if let Some(gid) = c.gid {
        raw.set_gid(gid);
    }
    if let Some(t) = c.atime {
        raw.set_atime(t);
    }
    if let Some(t) = c.mtime {
        raw.set_mtime(t);
    }
    if let Some(t) = c.ctime {
        raw.set_ctime(t);
    }
    fs.put_inode(n, &raw)?;
    fs.getattr(ino)
}
