//! The write half of [`Volume`] (read-write mounts): namespace and
//! attribute changes, the data path of a write, fallocate, sync, the
//! kernel's references and the clean unmount.
//!
//! What is the host's, as the contract says (the kernel's VFS rules): the
//! new inode's owner (the caller's uid; the gid of a setgid directory,
//! else the caller's; a directory made in a setgid directory is setgid
//! too), its mode (the umask, or the parent's default ACL instead, with
//! the ACLs it inherits: `acl.rs`), the mode an access ACL sets and the
//! ACL a chmod rewrites, the times (now), and the data. With
//! `default_permissions` the kernel makes every permission check and the
//! set-id clearing of chmod, chown and write (it sends them as a SETATTR
//! of the mode).
//!
//! The data path of a write: `iomap-begin` with the write flag (the guest
//! allocates; holes become unwritten) → mappings validated in
//! `plugin::convert` → the host writes the data into them, with the parts
//! of unwritten blocks the data does not cover written as zeros in the
//! same pwrite → `ioend` (the guest converts and raises the size) → the
//! inode's attributes and mappings dropped from the caches. Bytes past the
//! end of a file in its last block are kept zero: the host zeroes the rest
//! of the block in which the smaller size ends, if that block is mapped,
//! before the size grows and once it has shrunk, so a later size increase
//! never shows what was on disk. Zeroing that would destroy the file's own
//! bytes (a shrink, the partial blocks of punch-hole and zero-range) waits
//! for the guest's success: a guest that refuses leaves the file as it was.
//!
//! Every change holds one lock from its first guest call to its last cache
//! update, so the caches are exact when it returns; readers do not take
//! it (an answer they fetched before a change is not cached after it: the
//! generations in `Volume` and `MappingCache`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Volume;
use super::acl::{self, Acl};
use crate::error::FsError;
use crate::types::{
    Attr, AttrChanges, FallocateMode, FileKind, Ino, Mapping, MappingKind, NewInode, RenameFlags, Timestamp, Unlinked,
    XattrFlags,
};

/// Who asks for a change (the FUSE request's uid and gid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// The write half's own state.
#[derive(Default)]
pub(super) struct State {
    /// Held by every change from its first guest call to its last cache
    /// update.
    change: Mutex<()>,
    /// How many references (lookups) the kernel holds on each inode.
    refs: Mutex<HashMap<Ino, u64>>,
}

/// What a rename did, for the FUSE adapter's directory-parent map.
#[derive(Debug, Clone)]
pub struct Renamed {
    /// The inode that was moved.
    pub moved: Attr,
    /// With RENAME_EXCHANGE: the inode moved the other way.
    pub exchanged: Option<Attr>,
    /// The inode the new name named before, if it was replaced.
    pub replaced: Option<Unlinked>,
}

/// The time now, as the guest stores it.
fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanoseconds: d.subsec_nanos() }
}

/// Guest calls one FUSE write may make before it is answered short.
const MAX_GUEST_CALLS_PER_WRITE: usize = 64;

fn request(ino: Ino, what: &'static str, errno: i32) -> FsError {
    FsError::Request { ino, what, errno }
}

fn check_name(parent: Ino, name: &[u8]) -> Result<(), FsError> {
    crate::plugin::check_name(name).map_err(|_| request(parent, "an invalid name", libc::EINVAL))
}

/// `pos` rounded down and up to a multiple of `bs` (a power of two).
fn floor(pos: u64, bs: u64) -> u64 {
    pos & !(bs - 1)
}
fn ceil(pos: u64, bs: u64) -> u64 {
    pos.checked_add(bs - 1).map_or(!(bs - 1), |p| p & !(bs - 1))
}

impl Volume {
    /// Whether this volume is mounted read-write.
    pub fn writable(&self) -> bool {
        self.plugin.writable()
    }

    fn change(&self) -> std::sync::MutexGuard<'_, ()> {
        let guard = self.writes.change.lock().unwrap_or_else(|p| p.into_inner());
        self.check_restarts();
        guard
    }

    /// Drop the cached attributes of `ino`.
    fn forget_attr(&self, ino: Ino) {
        let mut attrs = self.attrs.write().unwrap_or_else(|p| p.into_inner());
        attrs.remove(&ino);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Cache `attr`, which a change just answered.
    fn set_attr(&self, attr: &Attr) {
        let mut attrs = self.attrs.write().unwrap_or_else(|p| p.into_inner());
        attrs.insert(attr.ino, attr.clone());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Drop the cached xattr names of `ino`.
    fn forget_xattrs(&self, ino: Ino) {
        let mut names = self.xattr_names.write().unwrap_or_else(|p| p.into_inner());
        names.remove(&ino);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Drop the cached mappings of `ino`.
    fn forget_layout(&self, ino: Ino) {
        self.mappings.forget(ino);
        self.reports.forget(ino);
    }

    /// Drop everything cached about `ino` (a change failed half-way, or
    /// the inode number may now name another inode).
    fn forget_all(&self, ino: Ino) {
        self.forget_attr(ino);
        self.forget_xattrs(ino);
        self.forget_layout(ino);
    }

    // ---- The kernel's references.

    /// The kernel took a reference on `ino` (an entry reply). Counted on
    /// read-write mounts only.
    pub fn looked_up(&self, ino: Ino) {
        if self.writable() {
            *self.writes.refs.lock().unwrap_or_else(|p| p.into_inner()).entry(ino).or_insert(0) += 1;
        }
    }

    /// The kernel dropped `n` references on `ino` (FORGET). At none left,
    /// the guest is told (`evict`: an orphan can be freed) and the host
    /// forgets the inode, whose number may be reused.
    pub fn forget(&self, ino: Ino, n: u64) {
        if !self.writable() {
            return;
        }
        {
            let mut refs = self.writes.refs.lock().unwrap_or_else(|p| p.into_inner());
            let Some(count) = refs.get_mut(&ino) else { return };
            *count = count.saturating_sub(n);
            if *count > 0 {
                return;
            }
            refs.remove(&ino);
        }
        let _change = self.change();
        // A lookup may have come in between: then the kernel holds it again.
        if self.is_live(ino) {
            return;
        }
        if let Err(e) = self.plugin.evict(ino) {
            tracing::warn!("inode {ino}: evict: {e}");
        }
        self.forget_all(ino);
    }

    /// Whether the kernel holds a reference on `ino`.
    fn is_live(&self, ino: Ino) -> bool {
        ino == self.root() || self.writes.refs.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&ino)
    }

    // ---- Namespace.

    /// The new inode's fields: the caller's uid; the parent's gid when the
    /// parent is setgid (and then a directory is setgid too), else the
    /// caller's gid; the permission bits asked (the umask applied).
    fn new_inode(&self, caller: Caller, parent: &Attr, kind: FileKind, perm: u16, rdev: (u32, u32)) -> NewInode {
        let setgid_dir = parent.perm & libc::S_ISGID as u16 != 0;
        let gid = if setgid_dir { parent.gid } else { caller.gid };
        let mut perm = perm & 0o7777;
        if kind == FileKind::Directory && setgid_dir {
            perm |= libc::S_ISGID as u16;
        }
        let rdev = if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) { rdev } else { (0, 0) };
        NewInode { kind, perm, uid: caller.uid, gid, rdev, time: now() }
    }

    fn parent_dir(&self, parent: Ino) -> Result<Attr, FsError> {
        let attr = self.getattr(parent)?;
        if attr.kind != FileKind::Directory {
            return Err(request(parent, "not a directory", libc::ENOTDIR));
        }
        Ok(attr)
    }

    /// Create `name` in `parent`: a regular file, directory, device, fifo
    /// or socket with permission bits `perm`, from which `umask` is taken
    /// unless the parent has a default ACL (which masks them instead and is
    /// inherited: the access ACL of the new inode, and a new directory's
    /// default ACL). `umask` is 0 when the kernel applied it already.
    #[allow(clippy::too_many_arguments)] // The fields of mknod(2), and who asks.
    pub fn create(
        &self,
        caller: Caller,
        parent: Ino,
        name: &[u8],
        kind: FileKind,
        perm: u16,
        umask: u16,
        rdev: (u32, u32),
    ) -> Result<Attr, FsError> {
        check_name(parent, name)?;
        if kind == FileKind::Symlink {
            return Err(request(parent, "a symlink without a target", libc::EINVAL));
        }
        let _change = self.change();
        let dir = self.parent_dir(parent)?;
        let default = match self.getxattr(parent, acl::DEFAULT) {
            Ok(bytes) => Acl::parse(&bytes).map(|a| (a, bytes)),
            Err(e) if matches!(e.errno(), libc::ENODATA | libc::EOPNOTSUPP) => None,
            Err(e) => return Err(e),
        };
        let (perm, access) = match &default {
            Some((acl, _)) => acl.create(perm),
            None => (perm & !umask, None),
        };
        let new = self.new_inode(caller, &dir, kind, perm, rdev);
        let made = self.plugin.create(parent, name, &new, |ino| self.is_live(ino));
        let attr = self.created(parent, made)?;
        let time = new.time;
        let inherit = || -> Result<(), FsError> {
            if let Some(access) = access {
                self.plugin.setxattr(attr.ino, acl::ACCESS, &access.to_bytes(), XattrFlags::default(), time)?;
            }
            if let (FileKind::Directory, Some((_, bytes))) = (kind, &default) {
                self.plugin.setxattr(attr.ino, acl::DEFAULT, bytes, XattrFlags::default(), time)?;
            }
            Ok(())
        };
        if let Err(e) = inherit() {
            // The mode already carries the ACL's mask as its group bits: a
            // file left without its ACL would grant the owning group what
            // only the ACL's named entries were to get. Take it back.
            let undone = if kind == FileKind::Directory {
                self.plugin.rmdir(parent, name, time).map(|_| ())
            } else {
                self.plugin.unlink(parent, name, time).map(|_| ())
            };
            if let Err(undo) = undone {
                tracing::warn!(
                    "inode {}: its inherited ACL could not be stored ({e}), nor the entry removed: {undo}",
                    attr.ino
                );
            }
            self.forget_attr(parent);
            self.forget_all(attr.ino);
            return Err(e);
        }
        Ok(attr)
    }

    /// Create symlink `name` in `parent` to `target`.
    pub fn symlink(&self, caller: Caller, parent: Ino, name: &[u8], target: &[u8]) -> Result<Attr, FsError> {
        check_name(parent, name)?;
        if target.is_empty() || target.contains(&0) {
            return Err(request(parent, "an empty symlink target", libc::ENOENT));
        }
        let _change = self.change();
        let dir = self.parent_dir(parent)?;
        let new = self.new_inode(caller, &dir, FileKind::Symlink, 0o777, (0, 0));
        let made = self.plugin.symlink(parent, name, target, &new, |ino| self.is_live(ino));
        self.created(parent, made)
    }

    /// The caches after a create: the parent changed (times, links), the
    /// new inode's number may have named an inode freed before.
    fn created(&self, parent: Ino, made: Result<Attr, FsError>) -> Result<Attr, FsError> {
        self.forget_attr(parent);
        let attr = made?;
        self.forget_all(attr.ino);
        self.set_attr(&attr);
        Ok(attr)
    }

    /// Give `ino` the name `name` in `parent`.
    pub fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Result<Attr, FsError> {
        check_name(parent, name)?;
        let _change = self.change();
        let result = self.plugin.link(ino, parent, name, now());
        self.forget_attr(parent);
        self.forget_attr(ino);
        let attr = result?;
        self.set_attr(&attr);
        Ok(attr)
    }

    /// Remove the non-directory `name` from `parent`.
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<Unlinked, FsError> {
        check_name(parent, name)?;
        let _change = self.change();
        let result = self.plugin.unlink(parent, name, now());
        self.forget_attr(parent);
        let gone = result?;
        self.forget_attr(gone.ino);
        Ok(gone)
    }

    /// Remove the empty directory `name` from `parent`; its inode.
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<Ino, FsError> {
        check_name(parent, name)?;
        let _change = self.change();
        let result = self.plugin.rmdir(parent, name, now());
        self.forget_attr(parent);
        let gone = result?;
        self.forget_attr(gone);
        Ok(gone)
    }

    /// Move `name` in `parent` to `new_name` in `new_parent`. `beneath`
    /// says whether directory `dir` is `new_parent` or one of its
    /// ancestors (moving a directory beneath itself is EINVAL, the host's
    /// check; the kernel's VFS makes it too).
    pub fn rename(
        &self,
        (parent, name): (Ino, &[u8]),
        (new_parent, new_name): (Ino, &[u8]),
        flags: RenameFlags,
        beneath: impl Fn(Ino, Ino) -> bool,
    ) -> Result<Renamed, FsError> {
        check_name(parent, name)?;
        check_name(new_parent, new_name)?;
        if flags.exchange && flags.no_replace {
            return Err(request(parent, "RENAME_EXCHANGE with RENAME_NOREPLACE", libc::EINVAL));
        }
        let _change = self.change();
        let moved = self.plugin.lookup(parent, name)?;
        let exchanged = if flags.exchange { Some(self.plugin.lookup(new_parent, new_name)?) } else { None };
        if parent == new_parent && name == new_name {
            // The same entry: nothing to do (rename(2) succeeds).
            return Ok(Renamed { moved, exchanged: None, replaced: None });
        }
        if moved.kind == FileKind::Directory && beneath(moved.ino, new_parent) {
            return Err(request(moved.ino, "a directory moved beneath itself", libc::EINVAL));
        }
        if let Some(other) = &exchanged
            && other.kind == FileKind::Directory
            && beneath(other.ino, parent)
        {
            return Err(request(other.ino, "a directory moved beneath itself", libc::EINVAL));
        }
        let result = self.plugin.rename((parent, name), (new_parent, new_name), flags, now());
        self.forget_attr(parent);
        self.forget_attr(new_parent);
        self.forget_attr(moved.ino);
        if let Some(other) = &exchanged {
            self.forget_attr(other.ino);
        }
        let replaced = result?;
        if let Some(gone) = replaced {
            self.forget_attr(gone.ino);
        }
        Ok(Renamed { moved, exchanged, replaced })
    }

    // ---- Attributes and xattrs.

    /// Change attributes of `ino`. A change without a ctime gets now; a
    /// size change zeroes the rest of the block the smaller size ends in
    /// (if mapped): before the guest's call when the size grows, after it
    /// when it shrinks.
    pub fn setattr(&self, ino: Ino, mut changes: AttrChanges) -> Result<Attr, FsError> {
        let _change = self.change();
        let before = self.getattr(ino)?;
        if changes.ctime.is_none() {
            changes.ctime = Some(now());
        }
        if let Some(size) = changes.size {
            match before.kind {
                FileKind::Regular => {}
                FileKind::Directory => return Err(request(ino, "truncate of a directory", libc::EISDIR)),
                _ => return Err(request(ino, "truncate of a special file", libc::EINVAL)),
            }
            if i64::try_from(size).is_err() {
                return Err(request(ino, "a size past the largest file", libc::EFBIG));
            }
            // Growing: the rest of the old last block, before (past the
            // end of the file, so harmless if the guest refuses).
            if size > before.size {
                self.zero_tail_of_block(ino, before.size)?;
            }
        }
        // A chmod rewrites an access ACL (owner, mask or group, other).
        let access = match changes.perm {
            Some(_) if self.listxattr(ino)?.iter().any(|n| n.as_slice() == acl::ACCESS) => {
                Acl::parse(&self.plugin.getxattr(ino, acl::ACCESS)?)
            }
            _ => None,
        };
        let result = self.plugin.setattr(ino, &changes);
        if changes.size.is_some() {
            self.forget_layout(ino);
        }
        if changes.perm.is_some() {
            self.forget_xattrs(ino);
        }
        let attr = match result {
            Ok(attr) => attr,
            Err(e) => {
                self.forget_attr(ino);
                return Err(e);
            }
        };
        self.set_attr(&attr);
        // Shrunk: the rest of the new last block, once the guest agreed (had
        // it refused, those bytes would still be the file's).
        if let Some(size) = changes.size.filter(|&s| s < before.size) {
            self.zero_tail_of_block(ino, size)?;
        }
        if let (Some(access), Some(ctime)) = (access, changes.ctime) {
            let rewritten = access.chmod(attr.perm).to_bytes();
            self.plugin.setxattr(ino, acl::ACCESS, &rewritten, XattrFlags::default(), ctime)?;
        }
        Ok(attr)
    }

    /// Set xattr `name` of `ino`. An access ACL sets the mode's rwx bits,
    /// and one the mode says all of is removed instead of stored, as the
    /// kernel's ext4 does (`posix_acl_update_mode`).
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<(), FsError> {
        super::check_xattr_name(ino, name)?;
        let _change = self.change();
        let time = now();
        let access = if name == acl::ACCESS { Acl::parse(value) } else { None };
        let result = match &access {
            Some(acl) => self.set_access_acl(ino, acl, value, flags, time),
            None => self.plugin.setxattr(ino, name, value, flags, time),
        };
        self.forget_xattrs(ino);
        // ctime; an access ACL changes the mode.
        self.forget_attr(ino);
        result
    }

    /// Set access ACL `acl` (`value` as given) of `ino` and the mode it
    /// implies.
    fn set_access_acl(
        &self,
        ino: Ino,
        acl: &Acl,
        value: &[u8],
        flags: XattrFlags,
        time: Timestamp,
    ) -> Result<(), FsError> {
        let before = self.getattr(ino)?;
        let (perm, store) = acl.mode(before.perm);
        if store {
            self.plugin.setxattr(ino, acl::ACCESS, value, flags, time)?;
        } else {
            match self.plugin.removexattr(ino, acl::ACCESS, time) {
                Err(e) if e.errno() == libc::ENODATA && !flags.replace => {}
                other => other?,
            }
        }
        if perm != before.perm {
            let changes = AttrChanges { perm: Some(perm), ctime: Some(time), ..AttrChanges::default() };
            self.plugin.setattr(ino, &changes)?;
        }
        Ok(())
    }

    /// Remove xattr `name` of `ino`.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<(), FsError> {
        super::check_xattr_name(ino, name)?;
        let _change = self.change();
        let result = self.plugin.removexattr(ino, name, now());
        self.forget_xattrs(ino);
        self.forget_attr(ino);
        result
    }

    // ---- Data.

    /// Write `data` at `offset` of regular file `ino`; how many bytes were
    /// written (fewer than asked when the guest could allocate only part,
    /// e.g. ENOSPC after the first mapping).
    pub fn write(&self, ino: Ino, offset: u64, data: &[u8], direct: bool) -> Result<u32, FsError> {
        let Ok(len) = u32::try_from(data.len()) else {
            return Err(request(ino, "a write larger than 4 GiB", libc::EINVAL));
        };
        if len == 0 {
            return Ok(0);
        }
        let end = offset.checked_add(u64::from(len)).filter(|&e| i64::try_from(e).is_ok());
        let Some(end) = end else { return Err(request(ino, "a write past the largest file", libc::EFBIG)) };
        let _change = self.change();
        let before = self.getattr(ino)?;
        if before.kind != FileKind::Regular {
            return Err(super::not_regular(&before));
        }
        if offset > before.size {
            self.zero_tail_of_block(ino, before.size)?;
        }
        let written = self.write_data(ino, offset, end, data, direct);
        // Whatever happened, the guest may have allocated.
        self.forget_layout(ino);
        let done = match written {
            // All of it, or as far as the guest calls allowed (a short
            // write the caller continues).
            Ok(upto) => upto - offset,
            // A short write, when the guest refused the rest itself (no
            // space): what is on the device is ended; a misbehaving guest
            // or a failed device write costs the whole write.
            Err((done, FsError::Guest { .. })) if done > offset => done - offset,
            Err((_, e)) => {
                self.forget_attr(ino);
                return Err(e);
            }
        };
        let result = self.plugin.ioend(ino, offset, done, before.size, now());
        // Again: a reader may have cached the unwritten blocks since.
        self.forget_layout(ino);
        self.forget_attr(ino);
        result?;
        // `done` <= len, a u32.
        Ok(done as u32)
    }

    /// Put [offset, end) of `data` into the mappings the guest allocates
    /// for it; where it got to (`end`, or short of it after
    /// `MAX_GUEST_CALLS_PER_WRITE` calls: a guest that maps one small block
    /// per call, each just inside the deadline, must not hold the change
    /// lock for minutes). On failure, where it stopped: all before was
    /// written.
    fn write_data(&self, ino: Ino, offset: u64, end: u64, data: &[u8], direct: bool) -> Result<u64, (u64, FsError)> {
        let bs = self.plugin.block_size();
        let mut pos = offset;
        let mut calls = 0;
        while pos < end {
            if calls == MAX_GUEST_CALLS_PER_WRITE {
                // Each call moved `pos` by at least a block (the first
                // mapping contains it), so this is a short write, not none.
                return Ok(pos);
            }
            calls += 1;
            let maps = self.plugin.iomap_write(ino, pos, end - pos, direct).map_err(|e| (pos, e))?;
            for m in maps {
                if pos >= end {
                    break;
                }
                // Validated: contiguous, the first containing `pos`.
                let upto = m.end().min(end);
                let piece = &data[(pos - offset) as usize..(upto - offset) as usize];
                self.write_piece(&m, pos, piece, bs).map_err(|e| (pos, e))?;
                pos = upto;
            }
        }
        Ok(end)
    }

    /// Write `piece`, file bytes from `pos`, into mapping `m` (mapped or
    /// unwritten, containing them). In an unwritten mapping the rest of
    /// each block the piece touches is written as zeros, in one pwrite.
    fn write_piece(&self, m: &Mapping, pos: u64, piece: &[u8], bs: u64) -> Result<(), FsError> {
        let within = pos - m.offset.0;
        match &m.kind {
            MappingKind::Mapped(dev) => self.device.write_all_at(dev.0 + within, piece),
            MappingKind::Unwritten(dev) => {
                let end = pos + piece.len() as u64;
                let head = floor(pos, bs).max(m.offset.0);
                let tail = ceil(end, bs).min(m.end());
                let mut buf = vec![0u8; (tail - head) as usize];
                let at = (pos - head) as usize;
                buf[at..at + piece.len()].copy_from_slice(piece);
                self.device.write_all_at(dev.0 + (head - m.offset.0), &buf)
            }
            // `write_mappings` refused holes and inline mappings.
            MappingKind::Hole | MappingKind::Inline(_) => {
                Err(FsError::Invalid { op: "iomap-begin", reason: "a write mapping without blocks".into() })
            }
        }
    }

    /// Zero [pos, end of its block) of `ino` where that block is mapped
    /// (unwritten blocks and holes read as zeros already).
    fn zero_tail_of_block(&self, ino: Ino, pos: u64) -> Result<(), FsError> {
        let bs = self.plugin.block_size();
        if pos.is_multiple_of(bs) {
            return Ok(());
        }
        self.zero_mapped(ino, pos, ceil(pos, bs))
    }

    /// Zero the mapped parts of [from, to) of `ino`, which lies inside one
    /// block: asks the guest (not the cache) for the block's mapping.
    fn zero_mapped(&self, ino: Ino, from: u64, to: u64) -> Result<(), FsError> {
        // The host writes these bytes on its own authority, before (or
        // without) the guest's say: never into a file whose flags forbid
        // changes (the guest would refuse the operation), nor into
        // encrypted or verity data, whose bytes on the device are not the
        // file's bytes.
        let flags = self.getattr(ino)?.flags;
        if flags.immutable || flags.append {
            return Err(request(ino, "immutable or append-only", libc::EPERM));
        }
        if flags.encrypted || flags.verity {
            return Err(request(ino, "encrypted or verity data is not the host's to zero", libc::EOPNOTSUPP));
        }
        let bs = self.plugin.block_size();
        let block = floor(from, bs);
        let maps = self.plugin.iomap_begin(ino, block, bs, false)?;
        let mut pos = from;
        for m in maps {
            if pos >= to {
                break;
            }
            // The mappings are validated (sorted, contiguous, the first
            // containing `block`), but `from` may lie past a short one: a
            // mapping that ends at the device's end need not fill a block.
            if m.end() <= pos {
                continue;
            }
            let start = pos.max(m.offset.0);
            let upto = m.end().min(to);
            if let MappingKind::Mapped(dev) = m.kind {
                let zeros = vec![0u8; (upto - start) as usize];
                self.device.write_all_at(dev.0 + (start - m.offset.0), &zeros)?;
            }
            pos = upto;
        }
        Ok(())
    }

    /// fallocate(2) on regular file `ino`. Punch-hole and zero-range zero
    /// the partial blocks at both ends (where mapped) after the guest's
    /// answer; a mode that raises the size zeroes the rest of the old last
    /// block first.
    pub fn fallocate(&self, ino: Ino, offset: u64, length: u64, mode: FallocateMode) -> Result<Attr, FsError> {
        let end = offset.checked_add(length).filter(|&e| i64::try_from(e).is_ok() && length > 0);
        let Some(end) = end else { return Err(request(ino, "an empty or too large fallocate", libc::EINVAL)) };
        let _change = self.change();
        let before = self.getattr(ino)?;
        if before.kind != FileKind::Regular {
            return Err(super::not_regular(&before));
        }
        let grows = !mode.keep_size && !mode.punch_hole && !mode.collapse_range && end > before.size;
        if grows || mode.insert_range {
            self.zero_tail_of_block(ino, before.size)?;
        }
        let result = self.plugin.fallocate(ino, (offset, length), mode, before.size, now());
        self.forget_layout(ino);
        let attr = match result {
            Ok(attr) => attr,
            Err(e) => {
                self.forget_attr(ino);
                return Err(e);
            }
        };
        self.set_attr(&attr);
        // The partial blocks at both ends, once the guest has freed or
        // unwritten the whole ones: had it refused (a format it cannot
        // punch, no space), those bytes would still be the file's.
        if mode.punch_hole || mode.zero_range {
            let bs = self.plugin.block_size();
            let head_end = ceil(offset, bs).min(end);
            if !offset.is_multiple_of(bs) {
                self.zero_mapped(ino, offset, head_end)?;
            }
            let tail_start = floor(end, bs).max(head_end);
            if !end.is_multiple_of(bs) && tail_start < end {
                self.zero_mapped(ino, tail_start, end)?;
            }
        }
        Ok(attr)
    }

    // ---- Durability and the end.

    /// fsync/fdatasync of `ino`: the host's data is on the device already
    /// (pwrite before `ioend`); the guest writes its metadata and flushes.
    pub fn fsync(&self, ino: Ino, datasync: bool) -> Result<(), FsError> {
        let _change = self.change();
        self.plugin.fsync(ino, datasync)
    }

    /// Clean unmount: the guest frees orphans, writes everything and marks
    /// the filesystem clean; then the device is flushed.
    pub fn unmount(&self) -> Result<(), FsError> {
        if !self.writable() {
            return Ok(());
        }
        let _change = self.change();
        let result = self.plugin.unmount();
        self.device.flush()?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_blocks() {
        assert_eq!((floor(0, 4096), ceil(0, 4096)), (0, 0));
        assert_eq!((floor(4095, 4096), ceil(4095, 4096)), (0, 4096));
        assert_eq!((floor(4096, 4096), ceil(4096, 4096)), (4096, 4096));
        assert_eq!((floor(4097, 1024), ceil(4097, 1024)), (4096, 5120));
        assert_eq!(ceil(u64::MAX, 4096), !4095);
    }
}
