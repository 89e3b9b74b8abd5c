//! The `Filesystem` the host calls: mount (superblock, journal replay, root
//! check) and each operation, translating between the contract's types and
//! the parsers. Requests are checked here (inode ranges, name syntax, file
//! types) before any parser sees them.
//!
//! Mount options (`-o`):
//! - `sb=N`: read the superblock at N KiB (a backup, e.g. `sb=32768` on a
//!   4 KiB-block filesystem), and the group descriptors after it, as the
//!   kernel's `sb=` does.
//! - `norecovery` (or `noload`): do not replay a journal that needs
//!   recovery; mount the stale on-disk state and log a warning.
//! - `nocsum`: do not verify metadata checksums (for salvaging images whose
//!   checksums are wrong but whose structures are fine).
//! - `journal`: a read-write mount journals its metadata as jbd2 does
//!   (write/journal.rs; opt-in while new).
//! - `inode_readahead_blks=N`: inode-table blocks read at once around an
//!   inode (a power of two, 0 for none; default 32, as the kernel's).
//! - `block_cache=N`: metadata blocks the guest keeps (default 1024), and
//!   `inode_cache=N`: parsed inodes kept (default 8192); the guest's memory
//!   grows with both.

use std::rc::Rc;

use fshost_sdk::{
    Attr, AttrChanges, Device, DirEntry, Error, ErrorCode, FallocateFlags, FileType, Filesystem, FsInfo, Ino,
    IomapFlags, Mapping, MountOptions, NewInode, RenameFlags, Result, ResultExt, Timestamp, Unlinked, XattrFlags,
};

use crate::disk::Disk;
use crate::features::{compat, incompat};
use crate::inode::{self, Inode, ROOT_INO, flags};
use crate::names::DirMemo;
use crate::superblock::{PRIMARY_OFFSET, SUPERBLOCK_SIZE, Superblock};
use crate::volume::Volume;
use crate::{acl, directory, group, iomap, journal, mapping, nokey, statfs, symlink, xattr};
use fshost_sdk::lru::Lru;

/// Metadata blocks the device keeps cached (option `block_cache`): 4 MiB
/// of 4 KiB blocks. The host's page cache holds the image, so a miss costs
/// a host call, not a disk read; 4096 blocks kept the walk's CPU the same
/// and raised the guest's memory by 36 MiB (the bench's cold walk).
const BLOCK_CACHE: usize = 1024;
/// Parsed inodes kept (option `inode_cache`).
pub(crate) const INODE_CACHE: usize = 8192;
/// Inode-table blocks read at once (option `inode_readahead_blks`; the
/// kernel's default).
const INODE_READAHEAD: u32 = 32;
/// Directories whose name index is kept (each at most
/// `NameIndex::MAX_ENTRIES` names).
pub(crate) const NAME_INDEXES: usize = 8;
/// The longest name ext4 stores.
const NAME_MAX: usize = 255;

/// A mounted ext2/ext3/ext4 filesystem.
pub struct Ext4 {
    pub(crate) vol: Volume,
    pub(crate) inodes: Lru<u32, Rc<Inode>>,
    /// What is kept per directory: name indexes of unindexed directories,
    /// the index of an htree for listing (names.rs). The writer drops a
    /// directory's when it writes its inode.
    pub(crate) names: Lru<u32, Rc<DirMemo>>,
    /// statfs counters, computed on first use (they read every descriptor).
    pub(crate) counts: Option<statfs::Counts>,
    /// Set by a successful `begin_write` (write/mod.rs), `None` read-only.
    pub(crate) write: Option<crate::write::State>,
}

impl Ext4 {
    /// An `Ext4` over a volume built by hand, without the mount-time checks
    /// (the fuzz fixture's way in).
    #[cfg(all(not(target_arch = "wasm32"), any(test, feature = "fuzzing")))]
    pub(crate) fn from_volume(vol: Volume) -> Self {
        Ext4 { vol, inodes: Lru::new(INODE_CACHE), names: Lru::new(NAME_INDEXES), counts: None, write: None }
    }

    /// The statfs counters as the kernel computes them; if the group
    /// descriptors cannot be read, the superblock's own counters.
    fn counts(&mut self) -> statfs::Counts {
        if let Some(c) = self.counts {
            return c;
        }
        let sb = &self.vol.sb;
        let journal_blocks = if sb.features.compat(compat::HAS_JOURNAL) && sb.journal_inum != 0 {
            let inum = u64::from(sb.journal_inum);
            let bs = self.vol.bs();
            self.inode(inum).map(|j| j.size / bs).unwrap_or(0)
        } else {
            0
        };
        let counts = statfs::counts(&self.vol, journal_blocks).unwrap_or_else(|e| {
            fshost_sdk::warn!("ext4: statfs from the superblock only: {e}");
            let sb = &self.vol.sb;
            statfs::Counts {
                total_blocks: sb.blocks_count,
                free_blocks: sb.free_blocks_count,
                available_blocks: sb.free_blocks_count.saturating_sub(sb.r_blocks_count),
                free_inodes: u64::from(sb.free_inodes_count),
            }
        });
        self.counts = Some(counts);
        counts
    }

    /// Inode `ino` if it is live; cached.
    pub(crate) fn inode(&mut self, ino: Ino) -> Result<Rc<Inode>> {
        let ino = u32::try_from(ino).map_err(|_| Error::not_found(format!("inode {ino} out of range")))?;
        if let Some(inode) = self.inodes.get(&ino) {
            return Ok(inode);
        }
        if !self.vol.sb.valid_inum(ino) {
            return Err(Error::not_found(format!("inode {ino} is reserved or out of range")));
        }
        let inode = inode::read(&self.vol, ino)?;
        // An orphan (unlinked while open, write/namei.rs) stays readable until evicted.
        let orphan = !inode.in_use() && self.write.is_some() && self.is_orphan(ino)?;
        if !inode.in_use() && !orphan {
            return Err(Error::not_found(format!("inode {ino} is deleted")));
        }
        let inode = Rc::new(inode);
        self.inodes.insert(ino, inode.clone());
        Ok(inode)
    }

    /// Inode `ino` if it is a directory this guest can read.
    pub(crate) fn dir(&mut self, ino: Ino) -> Result<Rc<Inode>> {
        let dir = self.inode(ino)?;
        if dir.kind()? != FileType::Directory {
            return Err(Error::new(ErrorCode::NotDir, format!("inode {ino} is not a directory")));
        }
        Ok(dir)
    }

    /// What is kept about directory `dir`, made empty on first use.
    fn memo(&mut self, dir: &Inode) -> Rc<DirMemo> {
        if let Some(known) = self.names.get(&dir.ino) {
            return known;
        }
        let memo = Rc::new(DirMemo::default());
        self.names.insert(dir.ino, memo.clone());
        memo
    }

    /// The inode of the entry of encrypted directory `dir` that `wanted`
    /// names, by scanning the listing (long no-key names hold a digest, not
    /// the name, so no index can find them).
    fn find_encrypted(&mut self, dir: &Inode, wanted: &nokey::Wanted) -> Result<Option<u32>> {
        let mut cookie = 0;
        loop {
            let memo = self.memo(dir);
            let batch = directory::list(&self.vol, dir, memo.order(&self.vol, dir), cookie, 1024)?;
            let Some(last) = batch.last() else { return Ok(None) };
            if last.cookie <= cookie {
                return Err(Error::corrupted(format!("directory {}: listing does not advance", dir.ino)));
            }
            cookie = last.cookie;
            if let Some(e) = batch.iter().find(|e| wanted.matches(&e.name)) {
                return Ok(Some(e.ino));
            }
        }
    }

    /// Attributes of the inode a directory record names.
    fn entry_attr(&mut self, dir: Ino, ino: u32) -> Result<Attr> {
        if !self.vol.sb.valid_inum(ino) {
            return Err(Error::corrupted(format!("directory {dir}: entry names reserved inode {ino}")));
        }
        // An entry naming an unused inode is damage, not absence: the
        // kernel's ext4_lookup says "deleted inode referenced" (EUCLEAN).
        self.getattr(u64::from(ino)).map_err(|e| {
            if e.code() == ErrorCode::NotFound {
                Error::corrupted(format!("directory {dir}: entry names unused inode {ino}"))
            } else {
                e
            }
        })
    }
}

/// Mount: superblock, geometry, journal, root directory.
fn mount(device: Device, options: &MountOptions) -> Result<Ext4> {
    let verify = !options.has("nocsum");
    let sb_offset = match options.get("sb") {
        None => PRIMARY_OFFSET,
        Some(n) => n
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1024))
            .ok_or_else(|| Error::invalid(format!("mount option sb={n} is not a block number")))?,
    };
    let read_sb = |disk: &Disk| -> Result<Superblock> {
        let raw = disk.read(sb_offset, SUPERBLOCK_SIZE).context("superblock")?;
        Superblock::parse(&raw, sb_offset, disk.device().size(), verify)
    };
    let (block_cache, inode_cache, inode_readahead) = cache_options(options)?;
    let probe = Disk::new(device, 1024);
    let sb = read_sb(&probe)?;
    let device = probe.into_device();
    device.set_cache(sb.block_size, block_cache);
    let mut disk = Disk::new(device, sb.block_size);
    disk.journal_requested = options.has("journal");
    let csum = sb.checksums(verify);
    let mut vol = Volume { disk, sb, csum, inode_readahead };

    if vol.sb.features.compat(compat::HAS_JOURNAL) && vol.sb.features.incompat(incompat::RECOVER) {
        if options.has("norecovery") || options.has("noload") {
            fshost_sdk::warn!("ext4: journal needs recovery but norecovery is set: mounting the stale on-disk state");
        } else {
            let replay = replay_journal(&vol)?;
            fshost_sdk::debug!("ext4: replayed {} blocks from the journal", replay.len());
            vol.disk.set_overlay(replay);
            vol.sb = read_sb(&vol.disk).context("after journal replay")?;
            vol.csum = vol.sb.checksums(verify);
        }
    }

    // The kernel checks every descriptor at mount and, on a read-only
    // mount, only reports those whose checksum is bad; so does this guest
    // (read-only). A read-write mount, when there is one, must refuse them.
    for (group, why) in group::bad_checksums(&vol)? {
        fshost_sdk::warn!("ext4: group descriptor {group}: {why} (tolerated on a read-only mount, as the kernel does)");
    }
    vol.csum.group_desc = false;

    let mut fs = Ext4 { vol, inodes: Lru::new(inode_cache), names: Lru::new(NAME_INDEXES), counts: None, write: None };
    let root = fs.inode(u64::from(ROOT_INO)).context("root directory")?;
    if root.kind()? != FileType::Directory {
        return Err(Error::corrupted("root inode is not a directory"));
    }
    Ok(fs)
}

/// The sizes the mount options give: blocks cached, inodes cached,
/// inode-table readahead.
fn cache_options(options: &MountOptions) -> Result<(usize, usize, u32)> {
    let count = |name: &str, default: usize| -> Result<usize> {
        options.get(name).map_or(Ok(default), |n| {
            n.parse::<usize>().map_err(|_| Error::invalid(format!("mount option {name}={n} is not a number")))
        })
    };
    let readahead = u32::try_from(count("inode_readahead_blks", INODE_READAHEAD as usize)?)
        .ok()
        .filter(|&n| n == 0 || (n.is_power_of_two() && n <= 1 << 30))
        .ok_or_else(|| Error::invalid("mount option inode_readahead_blks must be 0 or a power of two"))?;
    Ok((count("block_cache", BLOCK_CACHE)?, count("inode_cache", INODE_CACHE)?, readahead))
}

/// Replay the internal journal into memory.
fn replay_journal(vol: &Volume) -> Result<journal::Replay> {
    let sb = &vol.sb;
    if sb.journal_inum == 0 {
        return Err(Error::unsupported(
            "ext4: the journal is on an external device and needs recovery; mount with -o norecovery",
        ));
    }
    if sb.journal_dev != 0 {
        return Err(Error::corrupted("superblock names both a journal inode and a journal device"));
    }
    let journal = inode::read(vol, sb.journal_inum).context("journal inode")?;
    if !journal.in_use() || journal.kind()? != FileType::Regular {
        return Err(Error::corrupted(format!("journal inode {} is deleted or not a file", sb.journal_inum)));
    }
    let blocks = journal.size / vol.bs();
    let mut read = |n: u64| -> Result<Vec<u8>> {
        mapping::read_block(vol, &journal, n)?
            .ok_or_else(|| Error::corrupted(format!("journal inode: block {n} is a hole")))
    };
    journal::replay(sb.block_size, &mut read, blocks)
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::invalid("name is empty or contains '/' or NUL"));
    }
    if name.len() > NAME_MAX {
        return Err(Error::new(ErrorCode::NameTooLong, format!("name of {} bytes", name.len())));
    }
    Ok(())
}

impl Filesystem for Ext4 {
    fn mount(device: Device, options: &MountOptions) -> Result<Self> {
        mount(device, options)
    }

    fn info(&mut self) -> Result<FsInfo> {
        let counts = self.counts();
        let sb = &self.vol.sb;
        Ok(FsInfo {
            root: u64::from(ROOT_INO),
            block_size: sb.block_size,
            name_max: NAME_MAX as u32,
            total_blocks: counts.total_blocks,
            free_blocks: counts.free_blocks,
            available_blocks: counts.available_blocks,
            total_inodes: u64::from(sb.inodes_count),
            free_inodes: counts.free_inodes,
            fs_type: sb.features.fs_type().into(),
            label: sb.label(),
            uuid: sb.uuid.to_vec(),
        })
    }

    fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        let inode = self.inode(ino)?;
        let mut attr = inode.attr()?;
        if attr.kind == FileType::Symlink && attr.size > self.vol.bs() {
            // A target is at most one block. The kernel shows such an
            // i_size as is (and a target cut at the block); the contract's
            // size is the target's length, so the inode is reported damaged.
            return Err(Error::corrupted(format!("symlink {ino}: size {} is more than a block", attr.size)));
        }
        if attr.kind == FileType::Symlink && inode.has_flag(flags::ENCRYPT) {
            // fscrypt_symlink_getattr: the size of the target shown.
            attr.size = symlink::encrypted_target(&self.vol, &inode)?.len() as u64;
        }
        Ok(attr)
    }

    fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
        check_name(name)?;
        let dir = self.dir(parent)?;
        if name == b"." {
            return dir.attr();
        }
        if name == b".." {
            let up = directory::parent(&self.vol, &dir)?;
            return self.entry_attr(parent, up);
        }
        let cipher;
        let name = if dir.has_flag(flags::ENCRYPT) {
            let missing = || {
                Error::not_found(format!(
                    "no entry {:?} in encrypted directory {parent}",
                    name.escape_ascii().to_string()
                ))
            };
            match nokey::Wanted::decode(name).ok_or_else(missing)? {
                nokey::Wanted::Whole(whole) => {
                    cipher = whole;
                    cipher.as_slice()
                }
                long => {
                    let found = self.find_encrypted(&dir, &long)?.ok_or_else(missing)?;
                    return self.entry_attr(parent, found);
                }
            }
        } else {
            name
        };
        let memo = self.memo(&dir);
        let indexed = memo.names(&self.vol, &dir).map(|index| index.get(name));
        let found = match indexed {
            Some(found) => found,
            None => directory::find(&self.vol, &dir, name)?,
        };
        match found {
            Some(found) => self.entry_attr(parent, found.ino),
            None => {
                Err(Error::not_found(format!("no entry {:?} in directory {parent}", String::from_utf8_lossy(name))))
            }
        }
    }

    fn readdir(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>> {
        let dir = self.dir(ino)?;
        let memo = self.memo(&dir);
        let mut listed = directory::list(&self.vol, &dir, memo.order(&self.vol, &dir), cookie, max as usize)?;
        if dir.has_flag(flags::ENCRYPT) {
            // No key: the kernel shows each name as its no-key name, with
            // the hashes its readdir computed (zeros when it lists linearly).
            let version = directory::readdir_hash_version(&self.vol, &dir);
            let seed = self.vol.sb.hash_seed;
            listed.retain_mut(|e| {
                let (hash, minor) =
                    version.and_then(|v| crate::hash::dx_hash_pair(v, &e.name, &seed)).unwrap_or((0, 0));
                match nokey::encode(&e.name, hash, minor) {
                    Ok(name) => {
                        e.name = name;
                        true
                    }
                    Err(why) => {
                        fshost_sdk::warn!("encrypted directory {ino}: skipping an entry: {why}");
                        false
                    }
                }
            });
        }
        let typed = self.vol.sb.features.incompat(incompat::FILETYPE);
        Ok(listed
            .into_iter()
            .map(|e| {
                // Without the filetype feature (or with a type code it does
                // not know) the kernel reports DT_UNKNOWN; the contract has
                // no "unknown" type, so the inode answers. An inode that
                // cannot be read must not hide the name (the kernel lists
                // it and fails only its lookup): it is listed as a regular
                // file, and its lookup fails with the inode's error.
                let kind = match crate::dir::file_type(e.file_type).filter(|_| typed) {
                    Some(kind) => kind,
                    None => match self.inode(u64::from(e.ino)).and_then(|i| i.kind()) {
                        Ok(kind) => kind,
                        Err(why) => {
                            fshost_sdk::warn!(
                                "directory {ino}: listing {:?} as a regular file: {why}",
                                e.name.escape_ascii().to_string()
                            );
                            FileType::Regular
                        }
                    },
                };
                DirEntry { ino: u64::from(e.ino), kind, name: e.name, cookie: e.cookie }
            })
            .collect())
    }

    fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.kind()? != FileType::Symlink {
            return Err(Error::invalid(format!("inode {ino} is not a symlink")));
        }
        if inode.has_flag(flags::ENCRYPT) {
            return symlink::encrypted_target(&self.vol, &inode);
        }
        symlink::target(&self.vol, &inode)
    }

    fn listxattr(&mut self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        let inode = self.inode(ino)?;
        Ok(xattr::all(&self.vol, &inode)?
            .iter()
            .filter(|x| !(x.index == xattr::index::SYSTEM && x.name == b"data"))
            .filter_map(|x| x.full_name())
            .collect())
    }

    fn getxattr(&mut self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        let (index, short) = xattr::split_name(name).ok_or_else(|| {
            Error::unsupported(format!("xattr namespace of {:?} not supported", String::from_utf8_lossy(name)))
        })?;
        let all = xattr::all(&self.vol, &inode)?;
        let found = all.iter().find(|x| x.index == index && x.name == short).ok_or(ErrorCode::NoData)?;
        let value = xattr::value(&self.vol, found)?;
        if index == xattr::index::POSIX_ACL_ACCESS || index == xattr::index::POSIX_ACL_DEFAULT {
            return acl::to_xattr(&value)
                .with_context(|| format!("inode {ino}: {}", String::from_utf8_lossy(name)))?
                .ok_or_else(|| ErrorCode::NoData.into());
        }
        Ok(value)
    }

    fn iomap_begin(&mut self, ino: Ino, offset: u64, length: u64, op: IomapFlags) -> Result<Vec<Mapping>> {
        if op.write {
            return crate::write::iomap_write(self, ino, offset, length);
        }
        let inode = self.inode(ino)?;
        match inode.kind()? {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::new(ErrorCode::IsDir, format!("inode {ino} is a directory"))),
            other => return Err(Error::invalid(format!("inode {ino} is a {other:?}, not a regular file"))),
        }
        if inode.has_flag(flags::ENCRYPT) {
            return Err(Error::new(ErrorCode::NoKey, format!("file {ino} is encrypted (no key)")));
        }
        iomap::map(&self.vol, &inode, offset, length, op.report)
    }

    // ---- The namespace and xattrs (write/namei.rs, write/xattr.rs).

    fn create(&mut self, parent: Ino, name: &[u8], new: &NewInode) -> Result<Attr> {
        crate::write::boundary(self)?;
        self.namei_create(parent, name, new)
    }

    fn symlink(&mut self, parent: Ino, name: &[u8], target: &[u8], new: &NewInode) -> Result<Attr> {
        crate::write::boundary(self)?;
        self.namei_symlink(parent, name, target, new)
    }

    fn link(&mut self, ino: Ino, parent: Ino, name: &[u8], time: Timestamp) -> Result<Attr> {
        crate::write::boundary(self)?;
        self.namei_link(ino, parent, name, time)
    }

    fn unlink(&mut self, parent: Ino, name: &[u8], time: Timestamp) -> Result<Unlinked> {
        crate::write::boundary(self)?;
        self.namei_unlink(parent, name, time)
    }

    fn rmdir(&mut self, parent: Ino, name: &[u8], time: Timestamp) -> Result<Ino> {
        crate::write::boundary(self)?;
        self.namei_rmdir(parent, name, time)
    }

    fn rename(
        &mut self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: RenameFlags,
        time: Timestamp,
    ) -> Result<Option<Unlinked>> {
        crate::write::boundary(self)?;
        self.namei_rename(parent, name, new_parent, new_name, flags, time)
    }

    fn setxattr(&mut self, ino: Ino, name: &[u8], value: &[u8], flags: XattrFlags, time: Timestamp) -> Result<()> {
        crate::write::boundary(self)?;
        self.xattr_set(ino, name, Some(value), flags, time)
    }

    fn removexattr(&mut self, ino: Ino, name: &[u8], time: Timestamp) -> Result<()> {
        // As the VFS asks ext4: a removal is a replace with no value.
        crate::write::boundary(self)?;
        self.xattr_set(ino, name, None, XattrFlags { create: false, replace: true }, time)
    }

    fn evict(&mut self, ino: Ino) -> Result<()> {
        crate::write::boundary(self)?;
        self.namei_evict(ino)
    }

    // ---- The write half (write/: begin, file data, attributes, sync).

    fn begin_write(&mut self) -> std::result::Result<(), String> {
        crate::write::begin_write(self)
    }

    fn ioend(&mut self, ino: Ino, offset: u64, written: u64, time: Timestamp) -> Result<u64> {
        crate::write::ioend(self, ino, offset, written, time)
    }

    fn fallocate(&mut self, ino: Ino, offset: u64, length: u64, mode: FallocateFlags, time: Timestamp) -> Result<Attr> {
        crate::write::fallocate(self, ino, offset, length, mode, time)
    }

    fn setattr(&mut self, ino: Ino, changes: &AttrChanges) -> Result<Attr> {
        crate::write::setattr(self, ino, changes)
    }

    fn fsync(&mut self, ino: Ino, _datasync: bool) -> Result<()> {
        self.writable()?;
        self.inode(ino)?;
        crate::write::sync(self)
    }

    fn syncfs(&mut self) -> Result<()> {
        self.writable()?;
        crate::write::sync(self)
    }

    fn unmount(&mut self) -> Result<()> {
        if self.write.is_some() {
            // Orphans the host never evicted are freed now (write/namei.rs).
            self.free_orphans()?;
        }
        crate::write::unmount(self)
    }
}
