//! The write half of [`Plugin`]: one method per `writer` call and the
//! write flavour of `iomap-begin`, each answer validated in [`convert`]
//! before it leaves this module. Only read-write mounts reach them: the
//! instance was mounted read-write and agreed to `begin-write`.

use super::bindings::{guest, types as wit, writer};
use super::{Plugin, convert};
use crate::error::FsError;
use crate::types::{
    Attr, AttrChanges, FallocateMode, Ino, Mapping, NewInode, RenameFlags, Timestamp, Unlinked, XattrFlags,
};

/// The writer export of an instance that has one.
fn w<'a>(_: &'a guest::Guest, writer: Option<&'a writer::Guest>) -> Option<&'a writer::Guest> {
    writer
}

impl Plugin {
    /// Whether this plugin serves a read-write mount.
    pub fn writable(&self) -> bool {
        self.indices.writer.is_some()
    }

    /// Allocate for a write of [offset, offset + length) of `ino` and
    /// return validated mapped or unwritten mappings, the first
    /// containing `offset`.
    pub fn iomap_write(&self, ino: Ino, offset: u64, length: u64, direct: bool) -> Result<Vec<Mapping>, FsError> {
        let mut flags = wit::IomapFlags::WRITE;
        if direct {
            flags |= wit::IomapFlags::DIRECT;
        }
        let raw = self.call("iomap-begin", |g, s| g.call_iomap_begin(s, ino.0, offset, length, flags))?;
        let check = convert::MapCheck { ino, offset, device_size: self.device.size(), block_size: self.block_size() };
        convert::write_mappings(raw, &check, &self.limits)
    }

    /// The block size the guest reported at mount.
    pub fn block_size(&self) -> u64 {
        self.lock().info.as_ref().map_or(512, |i| u64::from(i.block_size))
    }

    /// The host wrote [offset, offset + written) of `ino`: convert, raise
    /// the size. Returns the size, checked against `old_size`.
    pub fn ioend(&self, ino: Ino, offset: u64, written: u64, old_size: u64, time: Timestamp) -> Result<u64, FsError> {
        let t = convert::wit_time(time);
        let size = self.call_live("ioend", w, |g, s| g.call_ioend(s, ino.0, offset, written, t))?;
        convert::ioend_size(ino, old_size, offset, written, size)
    }

    /// Create `name` in `parent` (not a symlink). `live` says whether the
    /// kernel still holds an inode number.
    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        new: &NewInode,
        live: impl Fn(Ino) -> bool,
    ) -> Result<Attr, FsError> {
        let n = convert::new_inode(new);
        let a = self.call_live("create", w, |g, s| g.call_create(s, parent.0, name, n))?;
        convert::created("create", a, parent, new, None, live)
    }

    /// Create symlink `name` in `parent` pointing to `target`.
    pub fn symlink(
        &self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        new: &NewInode,
        live: impl Fn(Ino) -> bool,
    ) -> Result<Attr, FsError> {
        let n = convert::new_inode(new);
        let a = self.call_live("symlink", w, |g, s| g.call_symlink(s, parent.0, name, target, n))?;
        convert::created("symlink", a, parent, new, Some(target.len()), live)
    }

    /// Give `ino` the name `name` in `parent`.
    pub fn link(&self, ino: Ino, parent: Ino, name: &[u8], time: Timestamp) -> Result<Attr, FsError> {
        let t = convert::wit_time(time);
        let a = self.call_live("link", w, |g, s| g.call_link(s, ino.0, parent.0, name, t))?;
        convert::attr("link", a, Some(ino))
    }

    /// Remove the non-directory `name` from `parent`.
    pub fn unlink(&self, parent: Ino, name: &[u8], time: Timestamp) -> Result<Unlinked, FsError> {
        let t = convert::wit_time(time);
        let u = self.call_live("unlink", w, |g, s| g.call_unlink(s, parent.0, name, t))?;
        convert::unlinked("unlink", u, parent)
    }

    /// Remove the empty directory `name` from `parent`; its inode.
    pub fn rmdir(&self, parent: Ino, name: &[u8], time: Timestamp) -> Result<Ino, FsError> {
        let t = convert::wit_time(time);
        let ino = self.call_live("rmdir", w, |g, s| g.call_rmdir(s, parent.0, name, t))?;
        let u = convert::unlinked("rmdir", wit::Unlinked { ino, nlink: 0 }, parent)?;
        Ok(u.ino)
    }

    /// Move `name` in `parent` to `new_name` in `new_parent`; the inode
    /// replaced, if any.
    pub fn rename(
        &self,
        (parent, name): (Ino, &[u8]),
        (new_parent, new_name): (Ino, &[u8]),
        flags: RenameFlags,
        time: Timestamp,
    ) -> Result<Option<Unlinked>, FsError> {
        let (f, t) = (convert::rename_flags(flags), convert::wit_time(time));
        let replaced =
            self.call_live("rename", w, |g, s| g.call_rename(s, parent.0, name, new_parent.0, new_name, f, t))?;
        replaced.map(|u| convert::unlinked("rename", u, new_parent)).transpose()
    }

    /// Change attributes of `ino`; all of them afterwards.
    pub fn setattr(&self, ino: Ino, changes: &AttrChanges) -> Result<Attr, FsError> {
        let c = convert::attr_changes(changes);
        let a = self.call_live("setattr", w, |g, s| g.call_setattr(s, ino.0, c))?;
        convert::changed(a, ino, changes)
    }

    /// Set xattr `name` of `ino`.
    pub fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        time: Timestamp,
    ) -> Result<(), FsError> {
        let (f, t) = (convert::xattr_flags(flags), convert::wit_time(time));
        self.call_live("setxattr", w, |g, s| g.call_setxattr(s, ino.0, name, value, f, t))
    }

    /// Remove xattr `name` of `ino`.
    pub fn removexattr(&self, ino: Ino, name: &[u8], time: Timestamp) -> Result<(), FsError> {
        let t = convert::wit_time(time);
        self.call_live("removexattr", w, |g, s| g.call_removexattr(s, ino.0, name, t))
    }

    /// fallocate(2) on `ino`, which was `old_size` bytes long; its
    /// attributes afterwards, the size checked against what `mode` makes it.
    pub fn fallocate(
        &self,
        ino: Ino,
        (offset, length): (u64, u64),
        mode: FallocateMode,
        old_size: u64,
        time: Timestamp,
    ) -> Result<Attr, FsError> {
        let Some(expect) = convert::size_after_fallocate(old_size, offset, length, mode) else {
            return Err(FsError::Request { ino, what: "fallocate past the largest size", errno: libc::EFBIG });
        };
        let (f, t) = (convert::fallocate_flags(mode), convert::wit_time(time));
        let a = self.call_live("fallocate", w, |g, s| g.call_fallocate(s, ino.0, offset, length, f, t))?;
        convert::fallocated(a, ino, expect)
    }

    /// Make `ino`'s metadata durable.
    pub fn fsync(&self, ino: Ino, datasync: bool) -> Result<(), FsError> {
        self.call_live("fsync", w, |g, s| g.call_fsync(s, ino.0, datasync))
    }

    /// Make everything durable.
    pub fn syncfs(&self) -> Result<(), FsError> {
        self.call_live("syncfs", w, |g, s| g.call_syncfs(s))
    }

    /// The kernel forgot `ino`.
    pub fn evict(&self, ino: Ino) -> Result<(), FsError> {
        self.call_live("evict", w, |g, s| g.call_evict(s, ino.0))
    }

    /// Clean unmount: the guest writes everything and marks the
    /// filesystem clean.
    pub fn unmount(&self) -> Result<(), FsError> {
        self.call_live("unmount", w, |g, s| g.call_unmount(s))
    }
}
