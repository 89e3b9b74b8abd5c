//! A mounted filesystem as the rest of the host sees it: a guest, the
//! device, and the caches in front of them. The FUSE adapter and the offline
//! commands both talk to a [`Volume`]; neither knows about wasmtime.
//!
//! On a read-only mount the image cannot change, so attributes, mappings
//! and xattr names never go stale and are cached until the caches are
//! full. On a read-write mount the host is the only writer: every change
//! goes through [`write`] (the write half), which updates or drops what
//! it changed where it changes it, so the caches stay exact.

mod acl;
mod bounded;
mod write;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::device::Device;
use crate::error::{FsError, GuestCode};
use crate::mapping::cache::MappingCache;
use crate::mapping::read::fill_from;
use crate::plugin::Plugin;
use crate::types::{Attr, DirEntry, FileKind, FsInfo, Ino, Mapping};

/// How far ahead the host asks the guest to map when it misses the cache.
const MAP_AHEAD: u64 = 8 << 20;
/// How many attributes, inodes' xattr names and mappings the host keeps
/// (mount options `attr_cache=N` and `map_cache=N`). The kernel keeps what
/// it was told for its TTLs, so these serve reads (which need the size),
/// ACL and xattr probes, and the kernel's own misses; they bound the
/// server's memory on a large tree (`cargo xtask bench`: peak RSS).
#[derive(Debug, Clone, Copy)]
pub struct CacheSizes {
    /// Most attributes kept, and most inodes whose xattr names are kept
    /// (most inodes have none and share one empty list).
    pub attrs: usize,
    /// Most mappings kept, an inode's first counting as two.
    pub mappings: usize,
}

impl Default for CacheSizes {
    fn default() -> Self {
        CacheSizes { attrs: 1 << 15, mappings: 1 << 15 }
    }
}
/// Most inodes remembered as having no xattrs on a read-only mount.
const NO_XATTR_INODES: usize = 1 << 20;
/// Most guest answers one SEEK_DATA/SEEK_HOLE may take (about a second of
/// guest calls). A guest returns whole extents, up to 8 MiB or more per
/// answer, so this is terabytes of a real file; a guest that answers a byte
/// at a time would otherwise keep a 1 TiB file's seek going for days.
const MAX_SEEK_GUEST_CALLS: u32 = 1 << 20;
/// Most entries [`Volume::read_whole_dir`] collects (4 Mi: a few hundred
/// MiB of host memory; real directories this large are rare, and an
/// answer that never ends must not exhaust the host).
pub const MAX_WHOLE_DIR_ENTRIES: usize = 1 << 22;
/// Most bytes of names [`Volume::read_whole_dir`] collects.
pub const MAX_WHOLE_DIR_NAME_BYTES: usize = 256 << 20;

pub use write::Caller;

/// A guest-backed filesystem, read-only or (with a writing guest) read-write.
pub struct Volume {
    plugin: Plugin,
    device: Arc<Device>,
    info: FsInfo,
    attrs: RwLock<bounded::Bounded<Ino, Attr>>,
    /// Each inode's xattr names, so a probe for a name it lacks (ls -l
    /// asks every file for security.selinux and system.posix_acl_access)
    /// is answered ENODATA without a guest call.
    xattr_names: RwLock<bounded::Bounded<Ino, Arc<[Vec<u8>]>>>,
    no_xattrs: Arc<[Vec<u8>]>,
    /// Set when the guest's listxattr answered `unsupported`: the
    /// filesystem has no extended attributes at all (FAT). Every listxattr
    /// is then empty and every getxattr EOPNOTSUPP, as on Linux's vfat.
    xattrs_unsupported: AtomicBool,
    /// Read-only mounts: the inodes whose listxattr was empty, most of a
    /// large tree, kept apart from `xattr_names` in far less memory (about
    /// 16 bytes each), so `ls -l` of a directory larger than that cache
    /// asks the guest once per inode, not at every probe.
    no_xattr_inodes: RwLock<bounded::Bounded<Ino, ()>>,
    /// Bumped by every change the write half makes to the attribute or
    /// xattr-name caches, under the lock of the cache it changes; an
    /// answer fetched before a change is not cached after it.
    generation: AtomicU64,
    mappings: MappingCache,
    /// Layout-only answers (iomap REPORT) for SEEK_DATA/SEEK_HOLE: a guest
    /// may answer them differently, as ext4 does for inline data.
    reports: MappingCache,
    /// Read-write mounts only: the write half's state.
    writes: write::State,
    /// The guest's restart count when the caches were last known good.
    restarts_seen: AtomicU64,
}

/// One entry of [`Volume::readdirplus`]: the entry, and its attributes or
/// why they could not be read.
pub type PlusEntry = (DirEntry, Result<Attr, FsError>);

/// Where `seek` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Data,
    Hole,
}

/// A read whose mapping the guest found damaged (or failing its checksum)
/// fails with EIO, as a read of such a file does on the kernel's ext4: its
/// `read_folio` cannot tell why the folio did not come up to date.
/// (SEEK_DATA/SEEK_HOLE and stat keep the guest's EUCLEAN or EBADMSG, as
/// the kernel's do.)
fn damaged_data(ino: Ino, pos: u64, e: FsError) -> FsError {
    match e {
        FsError::Guest { code: GuestCode::Corrupted | GuestCode::BadChecksum, .. } => {
            tracing::debug!("inode {ino}: read at {pos}: {e}; EIO, as the kernel's read");
            FsError::Guest { op: "read", code: GuestCode::Io }
        }
        e => e,
    }
}

/// The VFS's rule for a name in a prefix namespace (`xattr_resolve_name`
/// with ext4's user, trusted and security handlers): something after the
/// prefix, else EINVAL. FUSE passes every name through, so the host
/// applies it.
fn check_xattr_name(ino: Ino, name: &[u8]) -> Result<(), FsError> {
    const PREFIXES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    if PREFIXES.contains(&name) {
        return Err(FsError::Request {
            ino,
            what: "an xattr name with nothing after its namespace",
            errno: libc::EINVAL,
        });
    }
    Ok(())
}

fn not_regular(attr: &Attr) -> FsError {
    let errno = if attr.kind == FileKind::Directory { libc::EISDIR } else { libc::EINVAL };
    FsError::Request { ino: attr.ino, what: "not a regular file", errno }
}

impl Volume {
    /// Mount `plugin` (starts the guest and reads its filesystem info).
    pub fn mount(plugin: Plugin, device: Arc<Device>) -> Result<Self, FsError> {
        let info = plugin.mount()?;
        let sizes = CacheSizes::default();
        Ok(Volume {
            plugin,
            device,
            info,
            attrs: RwLock::new(bounded::Bounded::new(sizes.attrs)),
            xattr_names: RwLock::new(bounded::Bounded::new(sizes.attrs)),
            no_xattrs: Arc::new([]),
            xattrs_unsupported: AtomicBool::new(false),
            no_xattr_inodes: RwLock::new(bounded::Bounded::new(NO_XATTR_INODES)),
            generation: AtomicU64::new(0),
            restarts_seen: AtomicU64::new(0),
            mappings: MappingCache::new(sizes.mappings),
            reports: MappingCache::new(1 << 16),
            writes: write::State::default(),
        })
    }

    /// Resize the caches (emptying them): the mount options' sizes.
    pub fn set_cache_sizes(&mut self, sizes: CacheSizes) {
        self.attrs = RwLock::new(bounded::Bounded::new(sizes.attrs));
        self.xattr_names = RwLock::new(bounded::Bounded::new(sizes.attrs));
        self.mappings = MappingCache::new(sizes.mappings);
    }

    /// What the guest reported at mount.
    pub fn info(&self) -> &FsInfo {
        &self.info
    }

    /// The root directory's inode.
    pub fn root(&self) -> Ino {
        self.info.root
    }

    /// Current filesystem-wide counters.
    pub fn statfs(&self) -> Result<FsInfo, FsError> {
        self.plugin.statfs()
    }

    /// The generation to note before a guest call whose answer goes into
    /// the attribute or xattr-name cache.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Cache `attr`, fetched when the generation was `seen`, unless the
    /// write half changed a cache since.
    fn remember(&self, attr: &Attr, seen: u64) {
        let mut attrs = self.attrs.write().unwrap_or_else(|p| p.into_inner());
        if self.generation() != seen {
            return;
        }
        attrs.insert(attr.ino, attr.clone());
    }

    /// On a read-write mount, drop every cache once the guest has been
    /// restarted after a failure: the failed call may have changed part of
    /// what it meant to (a link count, a size) before it trapped, and the
    /// fresh instance reads the device as it is. (A read-only mount's
    /// image does not change, so its caches stay.)
    fn check_restarts(&self) {
        if !self.writable() {
            return;
        }
        let now = self.plugin.restarts();
        if self.restarts_seen.swap(now, Ordering::AcqRel) == now {
            return;
        }
        tracing::debug!("the guest was restarted: the read-write mount's caches are dropped");
        {
            let mut attrs = self.attrs.write().unwrap_or_else(|p| p.into_inner());
            attrs.clear();
            self.xattr_names.write().unwrap_or_else(|p| p.into_inner()).clear();
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.mappings.clear();
        self.reports.clear();
    }

    /// Attributes of `ino` (cached).
    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        self.check_restarts();
        if let Some(a) = self.attrs.read().unwrap_or_else(|p| p.into_inner()).get(&ino) {
            return Ok(a.clone());
        }
        let seen = self.generation();
        let attr = self.plugin.getattr(ino)?;
        self.remember(&attr, seen);
        Ok(attr)
    }

    /// Look `name` up in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr, FsError> {
        let seen = self.generation();
        let attr = self.plugin.lookup(parent, name)?;
        self.remember(&attr, seen);
        Ok(attr)
    }

    /// Up to `max` entries of `dir` after guest cookie `cookie`.
    pub fn readdir(&self, dir: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>, FsError> {
        self.plugin.readdir(dir, cookie, max)
    }

    /// As [`Volume::readdir`], with each entry's attributes (which are
    /// cached) or the error that getting them gave.
    ///
    /// A guest's readdirplus answers a whole batch or fails it, so one entry
    /// whose inode cannot be read (a damaged inode) would hide its
    /// neighbours. When the batch fails, the same batch is listed without
    /// attributes (`readdir` needs no inode) and each entry's attributes
    /// are asked for alone: the damaged entry costs its attributes only, as
    /// on the kernel's ext4, which lists every name and fails the damaged
    /// one's lookup. Fails when the listing itself fails, or when the batch
    /// failed because the guest misbehaved (trap, deadline, invalid answer).
    pub fn readdirplus(&self, dir: Ino, cookie: u64, max: u32) -> Result<Vec<PlusEntry>, FsError> {
        let seen = self.generation();
        let batch = match self.plugin.readdirplus(dir, cookie, max) {
            Ok(entries) => {
                for (_, attr) in &entries {
                    self.remember(attr, seen);
                }
                return Ok(entries.into_iter().map(|(e, a)| (e, Ok(a))).collect());
            }
            // Only an answer the guest gave: a guest that trapped or answered
            // nonsense costs the operation, as everywhere (malicious_guest.rs).
            Err(batch @ FsError::Guest { .. }) => batch,
            Err(e) => return Err(e),
        };
        let entries = self.readdir(dir, cookie, max).inspect_err(|_| {
            tracing::debug!("directory {dir}: readdirplus failed ({batch}), and readdir too");
        })?;
        tracing::debug!("directory {dir}: readdirplus failed ({batch}); attributes entry by entry");
        Ok(entries
            .into_iter()
            .map(|e| {
                let attr = self.getattr(e.ino);
                (e, attr)
            })
            .collect())
    }

    /// Every entry of `dir`, in the guest's order. Fails (EIO) when the
    /// listing loops (a batch resumes from a cookie it resumed from before) or grows past
    /// [`MAX_WHOLE_DIR_ENTRIES`] entries or [`MAX_WHOLE_DIR_NAME_BYTES`]
    /// bytes of names, so a guest cannot make it run or grow forever.
    pub fn read_whole_dir(&self, dir: Ino) -> Result<Vec<DirEntry>, FsError> {
        let refuse = |reason: String| FsError::Invalid { op: "readdir", reason: format!("directory {dir}: {reason}") };
        let mut all: Vec<DirEntry> = Vec::new();
        let mut cookies = HashSet::new();
        let mut name_bytes = 0usize;
        let mut cookie = 0;
        loop {
            let batch = self.readdir(dir, cookie, 1024)?;
            let Some(last) = batch.last() else { break };
            cookie = last.cookie;
            // Only the cookies a listing resumes from must not repeat:
            // entries of one hash position share theirs (ext4's htree).
            if !cookies.insert(cookie) {
                return Err(refuse(format!("cookie {cookie} came back: the listing loops")));
            }
            name_bytes += batch.iter().map(|e| e.name.len()).sum::<usize>();
            all.extend(batch);
            if all.len() > MAX_WHOLE_DIR_ENTRIES || name_bytes > MAX_WHOLE_DIR_NAME_BYTES {
                return Err(refuse(format!(
                    "{} entries with {name_bytes} bytes of names and no end yet (the most kept is \
                     {MAX_WHOLE_DIR_ENTRIES} entries, {MAX_WHOLE_DIR_NAME_BYTES} bytes)",
                    all.len()
                )));
            }
        }
        Ok(all)
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>, FsError> {
        self.plugin.readlink(ino)
    }

    /// Whether the filesystem may hold extended attributes: false once the
    /// guest's listxattr said it has none (the contract's `unsupported`).
    pub fn has_xattrs(&self) -> bool {
        !self.xattrs_unsupported.load(Ordering::Acquire)
    }

    /// Extended attribute names of `ino`.
    pub fn listxattr(&self, ino: Ino) -> Result<Arc<[Vec<u8>]>, FsError> {
        self.check_restarts();
        if let Some(names) = self.xattr_names.read().unwrap_or_else(|p| p.into_inner()).get(&ino) {
            return Ok(names.clone());
        }
        let read_only = !self.writable();
        if !self.has_xattrs()
            || (read_only && self.no_xattr_inodes.read().unwrap_or_else(|p| p.into_inner()).get(&ino).is_some())
        {
            return Ok(self.no_xattrs.clone());
        }
        let seen = self.generation();
        let listed = match self.plugin.listxattr(ino) {
            Err(FsError::Guest { code: GuestCode::Unsupported, .. }) => {
                tracing::debug!("the guest has no extended attributes: getxattr is EOPNOTSUPP from now on");
                self.xattrs_unsupported.store(true, Ordering::Release);
                return Ok(self.no_xattrs.clone());
            }
            listed => listed?,
        };
        if listed.is_empty() && read_only {
            self.no_xattr_inodes.write().unwrap_or_else(|p| p.into_inner()).insert(ino, ());
            return Ok(self.no_xattrs.clone());
        }
        let names: Arc<[Vec<u8>]> = if listed.is_empty() { self.no_xattrs.clone() } else { listed.into() };
        let mut cache = self.xattr_names.write().unwrap_or_else(|p| p.into_inner());
        if self.generation() != seen {
            return Ok(names);
        }
        cache.insert(ino, names.clone());
        Ok(names)
    }

    /// Extended attribute `name` of `ino`. A name its `listxattr` does not
    /// hold is ENODATA without asking the guest for it (the contract: the
    /// names listxattr returns are the attributes getxattr answers; the
    /// image changes only through the write half, which drops an inode's
    /// names whenever it may change them).
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>, FsError> {
        check_xattr_name(ino, name)?;
        let listed = self.listxattr(ino);
        if !self.has_xattrs() {
            return Err(FsError::Guest { op: "getxattr", code: GuestCode::Unsupported });
        }
        match listed {
            Ok(names) if !names.iter().any(|n| n.as_slice() == name) => {
                Err(FsError::Guest { op: "getxattr", code: crate::error::GuestCode::NoData })
            }
            // Listed, or the list itself failed: the guest answers.
            _ => self.plugin.getxattr(ino, name),
        }
    }

    /// The mapping of `ino` containing `pos`: from the cache, or from the
    /// guest (which then fills the cache). The flag says the guest was asked.
    fn mapping(&self, ino: Ino, pos: u64, report: bool) -> Result<(Mapping, bool), FsError> {
        self.check_restarts();
        let cache = if report { &self.reports } else { &self.mappings };
        if let Some(m) = cache.get(ino, pos) {
            return Ok((m, false));
        }
        let seen = cache.generation();
        let maps = self.plugin.iomap_begin(ino, pos, MAP_AHEAD, report)?;
        cache.insert(ino, &maps, seen);
        // Validated: the first mapping contains `pos`.
        let first = maps.into_iter().next();
        let first = first.ok_or_else(|| FsError::Invalid { op: "iomap-begin", reason: "no mapping".into() })?;
        Ok((first, true))
    }

    /// Up to `size` bytes of regular file `ino` at `offset` (fewer at EOF).
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let attr = self.getattr(ino)?;
        if attr.kind != FileKind::Regular {
            return Err(not_regular(&attr));
        }
        let end = offset.saturating_add(u64::from(size)).min(attr.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let (m, _) = self.mapping(ino, pos, false).map_err(|e| damaged_data(ino, pos, e))?;
            let at = (pos - offset) as usize;
            pos += fill_from(&self.device, &m, pos, &mut buf[at..])? as u64;
        }
        Ok(buf)
    }

    /// SEEK_DATA / SEEK_HOLE from `offset`, as lseek(2) defines them:
    /// unwritten ranges are holes; past the last data, SEEK_DATA is ENXIO
    /// and SEEK_HOLE is the file size.
    pub fn seek(&self, ino: Ino, offset: u64, whence: Seek) -> Result<u64, FsError> {
        let attr = self.getattr(ino)?;
        if attr.kind != FileKind::Regular {
            return Err(not_regular(&attr));
        }
        let enxio = FsError::Request { ino, what: "seek past the end", errno: libc::ENXIO };
        if offset >= attr.size {
            return Err(enxio);
        }
        let mut pos = offset;
        let mut guest_calls = 0;
        while pos < attr.size {
            if guest_calls >= MAX_SEEK_GUEST_CALLS {
                return Err(FsError::Invalid {
                    op: "iomap-begin",
                    reason: format!(
                        "inode {ino}: seek from {offset} still at {pos} of {} after {guest_calls} answers \
                         (the guest maps the file in too many pieces)",
                        attr.size
                    ),
                });
            }
            let (m, asked) = self.mapping(ino, pos, true)?;
            guest_calls += u32::from(asked);
            if m.is_data() == (whence == Seek::Data) {
                return Ok(pos);
            }
            pos = m.end();
        }
        match whence {
            Seek::Data => Err(enxio),
            Seek::Hole => Ok(attr.size),
        }
    }
}
