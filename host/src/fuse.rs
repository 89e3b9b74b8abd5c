//! The FUSE adapter: the only module that knows fuser types. It translates
//! kernel requests into [`Volume`] calls and answers with errnos.
//!
//! Node ids: FUSE's root is node 1, so the guest's root inode and inode 1
//! swap node ids (a bijection); `st_ino`, and `d_ino` of "." and "..",
//! always show the guest's inode number. Directory offsets: 1 and 2 are "." and "..", a guest cookie `c`
//! is offset `c + 2` (cookies are validated to be below 2^62).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags, KernelConfig, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use crate::error::FsError;
use crate::types::{Attr, FileKind, Ino, Timestamp};
use crate::volume::{Seek, Volume};

/// The image cannot change under us, so the kernel may cache for long.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest read the kernel sends (max_pages) and readahead window.
const MAX_IO: u32 = 1 << 20;

/// A [`Volume`] served over FUSE.
pub struct FuseFs {
    volume: Volume,
    /// Directory inode -> its parent, learnt from lookups and listings.
    parents: RwLock<HashMap<Ino, Ino>>,
}

impl FuseFs {
    pub fn new(volume: Volume) -> Self {
        FuseFs { volume, parents: RwLock::new(HashMap::new()) }
    }

    fn ino(&self, node: INodeNo) -> Ino {
        let root = self.volume.root();
        match node.0 {
            1 => root,
            n if n == root.0 => Ino(1),
            n => Ino(n),
        }
    }

    fn node(&self, ino: Ino) -> INodeNo {
        let root = self.volume.root();
        if ino == root {
            INodeNo(1)
        } else if ino.0 == 1 {
            INodeNo(root.0)
        } else {
            INodeNo(ino.0)
        }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino.0),
            size: a.size,
            blocks: a.blocks,
            atime: system_time(a.atime),
            mtime: system_time(a.mtime),
            ctime: system_time(a.ctime),
            crtime: a.crtime.map_or(UNIX_EPOCH, system_time),
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: encode_dev32(a.rdev),
            blksize: self.volume.info().block_size,
            flags: 0,
        }
    }

    /// What READDIRPLUS carries for an entry whose attributes cannot be
    /// read (a damaged inode): its node id, and its type from the directory
    /// entry, so getdents shows the kernel's d_ino and d_type; nothing else
    /// is known. fuser 0.18 writes the attribute's inode as both nodeid and
    /// d_ino, so the "nodeid 0: not filled" form of fs/fuse/readdir.c
    /// (`fuse_direntplus_link`) would show d_ino 0. Sent with zero entry
    /// and attribute timeouts instead: the kernel links the dentry already
    /// expired, so any use of the name (stat, open) revalidates it with a
    /// LOOKUP, which fails with the guest's errno as on the kernel's ext4,
    /// and nothing of these placeholder attributes is ever shown.
    fn unreadable(&self, node: INodeNo, kind: FileKind) -> FileAttr {
        FileAttr {
            ino: node,
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: file_type(kind),
            perm: 0,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: self.volume.info().block_size,
            flags: 0,
        }
    }

    fn note_parent(&self, parent: Ino, child: &Attr) {
        if child.kind == FileKind::Directory {
            self.parents.write().unwrap_or_else(|p| p.into_inner()).insert(child.ino, parent);
        }
    }

    fn parent_of(&self, dir: Ino) -> Ino {
        if dir == self.volume.root() {
            return dir;
        }
        self.parents.read().unwrap_or_else(|p| p.into_inner()).get(&dir).copied().unwrap_or(dir)
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanoseconds));
    let whole = if t.seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.seconds as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.seconds.unsigned_abs()))
    };
    whole.and_then(|w| w.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// FUSE carries rdev as the kernel's 32-bit `new_encode_dev`.
fn encode_dev32((major, minor): (u32, u32)) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

fn errno(e: &FsError) -> Errno {
    match e {
        FsError::Guest { .. } | FsError::Request { .. } => tracing::debug!("{e}"),
        _ => tracing::warn!("{e}"),
    }
    Errno::from_i32(e.errno())
}

/// Directory offset of guest cookie `c`, and back.
fn offset_of(cookie: u64) -> u64 {
    cookie + 2
}
fn cookie_of(offset: u64) -> u64 {
    offset.saturating_sub(2)
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_write(MAX_IO);
        // READDIRPLUS for every batch, not READDIRPLUS_AUTO: with AUTO the
        // kernel gives only a directory's first page attributes and then
        // sends a LOOKUP per later name (twice the requests of a cold walk).
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_SPLICE_READ
            // The kernel keeps each inode's POSIX ACLs (and their absence)
            // after one GETXATTR, and checks access with them as its own
            // ext4 does; without it every ACL probe is a round trip.
            | InitFlags::FUSE_POSIX_ACL;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = self.ino(parent);
        let attr = match name.as_bytes() {
            b"." => self.volume.getattr(parent),
            b".." => self.volume.getattr(self.parent_of(parent)),
            n => self.volume.lookup(parent, n),
        };
        match attr {
            Ok(a) => {
                self.note_parent(parent, &a);
                let mut fa = self.file_attr(&a);
                fa.ino = self.node(a.ino);
                reply.entry(&TTL, &fa, Generation(u64::from(a.generation)))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, node: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.volume.getattr(self.ino(node)) {
            Ok(a) => reply.attr(&TTL, &self.file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, node: INodeNo, reply: ReplyData) {
        match self.volume.readlink(self.ino(node)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Zero-message opens: answering ENOSYS once makes the kernel stop
    /// sending OPEN and RELEASE and treat every open as FOPEN_KEEP_CACHE
    /// (fs/fuse/file.c, `fuse_file_open`). The mount is read-only, so the
    /// VFS refuses writable opens (EROFS) before they would reach us. Two
    /// round trips fewer per file: `tar` of 120k files is 240k requests.
    fn open(&self, _req: &Request, _node: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.volume.read(self.ino(node), offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Nothing to flush on a read-only mount: ENOSYS once and the kernel
    /// stops sending FLUSH on every close (`fc->no_flush`).
    fn flush(
        &self,
        _req: &Request,
        _node: INodeNo,
        _fh: FileHandle,
        _owner: fuser::LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// As [`FuseFs::open`]: no OPENDIR/RELEASEDIR, and the kernel then
    /// treats every directory as FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, so a
    /// warm listing never reaches us.
    fn opendir(&self, _req: &Request, _node: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(&self, _req: &Request, node: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let dir = self.ino(node);
        if offset == 0 && reply.add(INodeNo(dir.0), 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 && reply.add(INodeNo(self.parent_of(dir).0), 2, FileType::Directory, "..") {
            return reply.ok();
        }
        match self.volume.readdir(dir, cookie_of(offset), 256) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(INodeNo(e.ino.0), offset_of(e.cookie), file_type(e.kind), OsStr::from_bytes(&e.name)) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(&self, _req: &Request, node: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let dir = self.ino(node);
        for (off, name, target) in [(0, ".", dir), (1, "..", self.parent_of(dir))] {
            if offset > off {
                continue;
            }
            match self.volume.getattr(target) {
                Ok(a) => {
                    // The kernel links no dentry for "." and "..", so their
                    // node id is only shown as d_ino: use the real inode.
                    let fa = self.file_attr(&a);
                    if reply.add(fa.ino, off + 1, name, &TTL, &fa, Generation(u64::from(a.generation))) {
                        return reply.ok();
                    }
                }
                Err(e) => return reply.error(errno(&e)),
            }
        }
        match self.volume.readdirplus(dir, cookie_of(offset), 128) {
            Ok(entries) => {
                for (e, attr) in entries {
                    let name = OsStr::from_bytes(&e.name);
                    let full = match attr {
                        Ok(a) => {
                            self.note_parent(dir, &a);
                            let mut fa = self.file_attr(&a);
                            fa.ino = self.node(a.ino);
                            reply.add(fa.ino, offset_of(e.cookie), name, &TTL, &fa, Generation(u64::from(a.generation)))
                        }
                        Err(_) => {
                            let fa = self.unreadable(self.node(e.ino), e.kind);
                            reply.add(fa.ino, offset_of(e.cookie), name, &Duration::ZERO, &fa, Generation(0))
                        }
                    };
                    if full {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _node: INodeNo, reply: ReplyStatfs) {
        match self.volume.statfs() {
            Ok(i) => reply.statfs(
                i.total_blocks,
                i.free_blocks,
                i.available_blocks,
                i.total_inodes,
                i.free_inodes,
                i.block_size,
                i.name_max,
                i.block_size,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, node: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.volume.getxattr(self.ino(node), name.as_bytes()) {
            Ok(value) => xattr_reply(reply, &value, size),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, node: INodeNo, size: u32, reply: ReplyXattr) {
        match self.volume.listxattr(self.ino(node)) {
            Ok(names) => {
                let mut list = Vec::new();
                for n in names.iter() {
                    list.extend_from_slice(n);
                    list.push(0);
                }
                xattr_reply(reply, &list, size)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(&self, _req: &Request, node: INodeNo, _fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let whence = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else { return reply.error(Errno::ENXIO) };
        match self.volume.seek(self.ino(node), offset, whence) {
            Ok(pos) => reply.offset(pos as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, bytes: &[u8], size: u32) {
    if size == 0 {
        reply.size(bytes.len() as u32)
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev32_matches_the_kernel_new_encode_dev() {
        // include/linux/kdev_t.h: new_encode_dev(dev) =
        // (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
        assert_eq!(encode_dev32((8, 1)), 0x801);
        // minor 300000 = 0x493e0: 0xe0 | 0x10300 | 0x4930_0000.
        assert_eq!(encode_dev32((259, 300_000)), 0x4931_03e0);
    }

    #[test]
    fn times_before_the_epoch_keep_their_nanoseconds() {
        let t = system_time(Timestamp { seconds: -2, nanoseconds: 250_000_000 });
        assert_eq!(UNIX_EPOCH.duration_since(t).unwrap(), Duration::from_millis(1750));
    }
}
