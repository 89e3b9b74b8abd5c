//! The FUSE adapter: the only module that knows fuser types. It translates
//! kernel requests into [`Volume`] calls and answers with errnos.
//!
//! On a read-write mount it also serves the write half (create, write,
//! rename, setattr, fallocate, fsync...), passes the caller's uid and gid,
//! counts the kernel's references (`Volume::looked_up`, FORGET) and, when
//! the session ends (unmount, SIGTERM), has the guest unmount cleanly
//! (`destroy`). Write-through: no writeback cache, so every write reaches
//! the host, and the device, before write(2) returns.
//!
//! Node ids: FUSE's root is node 1, so the guest's root inode and inode 1
//! swap node ids (a bijection); `st_ino`, and `d_ino` of "." and "..",
//! always show the guest's inode number. Directory offsets: 1 and 2 are "." and "..", a guest cookie `c`
//! is offset `c + 2` (cookies are validated to be below 2^62).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::FsError;
use crate::types::{Attr, AttrChanges, FallocateMode, FileKind, Ino, Timestamp, XattrFlags};
use crate::volume::{Caller, Seek, Volume};

/// Read-only, the image cannot change under us, so the kernel may cache
/// for long. Read-write, entries still live this long (every change of a
/// name goes through the kernel, which updates its dentries); attributes
/// live `RW_ATTR_TTL`.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// Attributes on a read-write mount. The kernel invalidates what its own
/// requests change (the fields a write, truncate, link, unlink, rename or
/// xattr change touches), and `Volume` answers GETATTR from its exact
/// cache without a guest call; a second bounds anything the kernel cannot
/// know. Measured (`ls -lR` of 792 entries): 0.92 s with 0, 0.05 s with
/// 24 h; the kernel differential (tests/ext4_write.rs) found no stale
/// attribute with either. Where fuser takes one time for entry and
/// attributes (CREATE, READDIRPLUS), the entry gets it too.
const RW_ATTR_TTL: Duration = Duration::from_secs(1);
/// Most steps up the parent map when checking that a directory is not
/// moved beneath itself (deeper than any real tree).
const MAX_DEPTH: usize = 1 << 16;
/// Largest read the kernel sends (max_pages) and readahead window.
const MAX_IO: u32 = 1 << 20;

/// A [`Volume`] served over FUSE.
pub struct FuseFs {
    volume: Volume,
    /// Directory inode -> its parent, learnt from lookups and listings,
    /// kept up to date by mkdir, rename and rmdir.
    parents: RwLock<HashMap<Ino, Ino>>,
    /// How long the kernel may keep attributes.
    attr_ttl: Duration,
    /// The kernel leaves the umask to us (FUSE_DONT_MASK granted, on
    /// read-write mounts): it is applied unless a default ACL applies.
    own_umask: bool,
}

impl FuseFs {
    pub fn new(volume: Volume) -> Self {
        let attr_ttl = if volume.writable() { RW_ATTR_TTL } else { TTL };
        FuseFs { volume, parents: RwLock::new(HashMap::new()), attr_ttl, own_umask: false }
    }

    /// Reply with the entry of `a`, found or made in `parent`: the kernel
    /// now holds a reference.
    fn reply_entry(&self, reply: ReplyEntry, parent: Ino, result: Result<Attr, FsError>) {
        match result {
            Ok(a) => {
                self.note_parent(parent, &a);
                let mut fa = self.file_attr(&a);
                fa.ino = self.node(a.ino);
                self.volume.looked_up(a.ino);
                reply.entry_with_ttls(&self.attr_ttl, &TTL, &fa, Generation(u64::from(a.generation)))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The umask of a create request for `Volume::create`: 0 when the
    /// kernel applied it itself.
    fn umask(&self, umask: u32) -> u16 {
        if self.own_umask { (umask & 0o777) as u16 } else { 0 }
    }

    /// Whether directory `dir` is `target` or one of its ancestors, by the
    /// parent map (an unknown parent ends the walk).
    fn is_ancestor(&self, dir: Ino, target: Ino) -> bool {
        let mut at = target;
        for _ in 0..MAX_DEPTH {
            if at == dir {
                return true;
            }
            let up = self.parent_of(at);
            if up == at {
                return false;
            }
            at = up;
        }
        false
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
        // Read-write: the umask is ours to apply, since a parent's default
        // ACL replaces it (FUSE_POSIX_ACL leaves ACL inheritance to the
        // server, and without FUSE_DONT_MASK the kernel masks first).
        if self.volume.writable() && config.capabilities().contains(InitFlags::FUSE_DONT_MASK) {
            self.own_umask = config.add_capabilities(InitFlags::FUSE_DONT_MASK).is_ok();
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = self.ino(parent);
        let attr = match name.as_bytes() {
            b"." => self.volume.getattr(parent),
            b".." => self.volume.getattr(self.parent_of(parent)),
            n => self.volume.lookup(parent, n),
        };
        self.reply_entry(reply, parent, attr)
    }

    fn getattr(&self, _req: &Request, node: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.volume.getattr(self.ino(node)) {
            Ok(a) => reply.attr(&self.attr_ttl, &self.file_attr(&a)),
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
                    // An entry without a type (ext2 without `filetype`):
                    // the kernel's DT_UNKNOWN has no fuser form, so the
                    // inode's own type, as a caller's stat would find it.
                    let kind = e.kind.or_else(|| self.volume.getattr(e.ino).ok().map(|a| a.kind));
                    let kind = kind.unwrap_or(FileKind::Regular);
                    if reply.add(INodeNo(e.ino.0), offset_of(e.cookie), file_type(kind), OsStr::from_bytes(&e.name)) {
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
                    if reply.add(fa.ino, off + 1, name, &self.attr_ttl, &fa, Generation(u64::from(a.generation))) {
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
                    let ttl = &self.attr_ttl;
                    let full = match attr {
                        Ok(a) => {
                            self.note_parent(dir, &a);
                            let mut fa = self.file_attr(&a);
                            fa.ino = self.node(a.ino);
                            reply.add(fa.ino, offset_of(e.cookie), name, ttl, &fa, Generation(u64::from(a.generation)))
                        }
                        Err(_) => {
                            let fa = self.unreadable(self.node(e.ino), e.kind.unwrap_or(FileKind::Regular));
                            reply.add(fa.ino, offset_of(e.cookie), name, &Duration::ZERO, &fa, Generation(0))
                        }
                    };
                    if full {
                        break;
                    }
                    // Linked by the kernel (all but "." and ".."): a reference.
                    self.volume.looked_up(e.ino);
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

    /// On a filesystem without extended attributes (FAT) the answer is
    /// ENOSYS: the kernel then fails every later getxattr of the mount with
    /// EOPNOTSUPP itself (`fc->no_getxattr`), as vfat's, and takes POSIX ACLs
    /// as absent, so `ls -l` costs no round trip per file for
    /// security.selinux and system.posix_acl_access.
    fn getxattr(&self, _req: &Request, node: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.volume.getxattr(self.ino(node), name.as_bytes()) {
            Ok(value) => xattr_reply(reply, &value, size),
            Err(_) if !self.volume.has_xattrs() => reply.error(Errno::ENOSYS),
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
    // ---- The write half (read-write mounts; the kernel refuses these
    // with EROFS on a read-only mount before they reach us).

    /// FORGET, and each node of BATCH_FORGET (fuser's default
    /// `batch_forget` calls this; its `ForgetOne` is not public).
    fn forget(&self, _req: &Request, node: INodeNo, nlookup: u64) {
        self.volume.forget(self.ino(node), nlookup);
    }

    /// The session ends (unmounted, or SIGTERM made the helper unmount):
    /// a read-write guest unmounts cleanly and the device is flushed.
    fn destroy(&mut self) {
        if let Err(e) = self.volume.unmount() {
            tracing::error!("clean unmount failed: {e}; the filesystem may need a check (e2fsck)");
        } else if self.volume.writable() {
            tracing::info!("unmounted cleanly");
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let Some(kind) = kind_of_mode(mode) else { return reply.error(Errno::EINVAL) };
        let parent = self.ino(parent);
        let (perm, umask) = (perm(mode), self.umask(umask));
        let made = self.volume.create(caller(req), parent, name.as_bytes(), kind, perm, umask, decode_dev32(rdev));
        self.reply_entry(reply, parent, made)
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let parent = self.ino(parent);
        let (perm, umask) = (perm(mode), self.umask(umask));
        let made = self.volume.create(caller(req), parent, name.as_bytes(), FileKind::Directory, perm, umask, (0, 0));
        self.reply_entry(reply, parent, made)
    }

    /// CREATE (open with O_CREAT): the new file, opened with handle 0 (no
    /// per-open state; OPEN itself is never answered, see `open`).
    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let kind = kind_of_mode(mode).unwrap_or(FileKind::Regular);
        if kind != FileKind::Regular {
            return reply.error(Errno::EINVAL);
        }
        let parent = self.ino(parent);
        let (perm, umask) = (perm(mode), self.umask(umask));
        match self.volume.create(caller(req), parent, name.as_bytes(), kind, perm, umask, (0, 0)) {
            Ok(a) => {
                let mut fa = self.file_attr(&a);
                fa.ino = self.node(a.ino);
                self.volume.looked_up(a.ino);
                let generation = Generation(u64::from(a.generation));
                reply.created(&self.attr_ttl, &fa, generation, FileHandle(0), FopenFlags::empty())
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let parent = self.ino(parent);
        let made = self.volume.symlink(caller(req), parent, link_name.as_bytes(), target.as_os_str().as_bytes());
        self.reply_entry(reply, parent, made)
    }

    fn link(&self, _req: &Request, node: INodeNo, new_parent: INodeNo, new_name: &OsStr, reply: ReplyEntry) {
        let parent = self.ino(new_parent);
        let linked = self.volume.link(self.ino(node), parent, new_name.as_bytes());
        self.reply_entry(reply, parent, linked)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.volume.unlink(self.ino(parent), name.as_bytes()) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.volume.rmdir(self.ino(parent), name.as_bytes()) {
            Ok(gone) => {
                self.parents.write().unwrap_or_else(|p| p.into_inner()).remove(&gone);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // RENAME_WHITEOUT is for overlayfs on a filesystem that makes
        // whiteouts (character device 0:0); nothing here does.
        let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        if !known.contains(flags) {
            return reply.error(Errno::EINVAL);
        }
        let how = crate::types::RenameFlags {
            no_replace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        let (from, to) = (self.ino(parent), self.ino(new_parent));
        let beneath = |dir, target| self.is_ancestor(dir, target);
        match self.volume.rename((from, name.as_bytes()), (to, new_name.as_bytes()), how, beneath) {
            Ok(done) => {
                let mut parents = self.parents.write().unwrap_or_else(|p| p.into_inner());
                if let Some(gone) = done.replaced {
                    parents.remove(&gone.ino);
                }
                if done.moved.kind == FileKind::Directory {
                    parents.insert(done.moved.ino, to);
                }
                if let Some(other) = done.exchanged.filter(|o| o.kind == FileKind::Directory) {
                    parents.insert(other.ino, from);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        node: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let now = SystemTime::now();
        let time = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => request_time(t),
            TimeOrNow::Now => request_time(now),
        };
        let changes = AttrChanges {
            perm: mode.map(perm),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime: ctime.map(request_time),
        };
        match self.volume.setattr(self.ino(node), changes) {
            Ok(a) => reply.attr(&self.attr_ttl, &self.file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        node: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 || flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            return reply.error(Errno::EINVAL);
        }
        let how = XattrFlags { create: flags & libc::XATTR_CREATE != 0, replace: flags & libc::XATTR_REPLACE != 0 };
        match self.volume.setxattr(self.ino(node), name.as_bytes(), value, how) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, _req: &Request, node: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.volume.removexattr(self.ino(node), name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Buffered (write-through) and O_DIRECT writes take the same path.
    fn write(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let direct = flags.0 & libc::O_DIRECT != 0;
        match self.volume.write(self.ino(node), offset, data, direct) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some(mode) = FallocateMode::from_bits(mode) else { return reply.error(Errno::EOPNOTSUPP) };
        match self.volume.fallocate(self.ino(node), offset, length, mode) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Read-only: ENOSYS once, and the kernel answers fsync itself.
    fn fsync(&self, _req: &Request, node: INodeNo, _fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        if !self.volume.writable() {
            return reply.error(Errno::ENOSYS);
        }
        match self.volume.fsync(self.ino(node), datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(&self, req: &Request, node: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.fsync(req, node, fh, datasync, reply)
    }
}

/// The caller of a request, whose ids a new inode gets.
fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid() }
}

/// The permission bits of a mode.
fn perm(mode: u32) -> u16 {
    (mode & 0o7777) as u16
}

/// The type in a mode's S_IFMT bits.
fn kind_of_mode(mode: u32) -> Option<FileKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::Regular,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        _ => return None,
    })
}

/// The kernel's 32-bit `new_encode_dev` back into major and minor.
fn decode_dev32(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// A time from a fuser request, as the kernel sent it. fuser 0.18 decodes
/// a time before 1970 (tv_sec < 0, tv_nsec counted forward) as the epoch
/// minus |tv_sec| minus tv_nsec (`system_time_from_time`: "TODO:
/// 1_000_000_000 - nsec"), a second and a mirrored fraction off; the
/// mapping is one to one, so this gives back tv_sec and tv_nsec.
fn request_time(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanoseconds: d.subsec_nanos() },
        Err(e) => {
            let d = e.duration();
            Timestamp { seconds: i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s), nanoseconds: d.subsec_nanos() }
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
    fn dev32_decodes_what_it_encodes_and_request_times_are_the_kernels() {
        for dev in [(8, 1), (259, 300_000), (0xfff, 0xfffff)] {
            assert_eq!(decode_dev32(encode_dev32(dev)), dev);
        }
        // What fuser 0.18 makes of the kernel's (tv_sec, tv_nsec) in a
        // SETATTR (its `system_time_from_time`).
        let fuser = |secs: i64, nsecs: u32| {
            if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs as u64, nsecs)
            } else {
                UNIX_EPOCH - Duration::new(secs.unsigned_abs(), nsecs)
            }
        };
        for (secs, nsecs) in [(-1_289_607_900, 507_182_112), (-1, 0), (-1, 1), (0, 5), (1_700_000_000, 999_999_999)] {
            assert_eq!(request_time(fuser(secs, nsecs)), Timestamp { seconds: secs, nanoseconds: nsecs });
        }
    }

    #[test]
    fn times_before_the_epoch_keep_their_nanoseconds() {
        let t = system_time(Timestamp { seconds: -2, nanoseconds: 250_000_000 });
        assert_eq!(UNIX_EPOCH.duration_since(t).unwrap(), Duration::from_millis(1750));
    }
}
