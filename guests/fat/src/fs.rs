//! The `Filesystem` the host calls: mount (boot sector, root directory),
//! inode numbers, attributes as the kernel's vfat shows them, directory
//! listings and lookups, and file mappings.
//!
//! Inode numbers are positions on disk, so they survive guest restarts: the
//! root is 1 and every other entry is the byte offset of its short
//! directory entry on the device divided by 32 (the kernel's `i_pos`), which
//! is never 1 because entries live after the boot sector.
//!
//! Mount options (`-o`), with the kernel's defaults for a mount by root
//! with umask 022: `uid=N`, `gid=N` (0), `umask=O`, `fmask=O`, `dmask=O`
//! (octal, 022), `tz=UTC` or `time_offset=MINUTES` (timestamps are taken as
//! UTC unless an offset is given, as the kernel does when the system time
//! zone is UTC).

use std::rc::Rc;

use fshost_sdk::{
    Attr, Device, DirEntry, Error, ErrorCode, FileType, Filesystem, FsInfo, Ino, InodeFlags, IomapFlags, Mapping,
    MappingKind, MountOptions, Result, ResultExt, Timestamp,
};

use crate::boot::{FatType, Geometry, RootDir};
use crate::dir::{ENTRY_SIZE, ShortEntry, attr};
use crate::fat::{Fat, FileChain, Run};
use crate::listing::{self, Listing};
use crate::time;
use fshost_sdk::lru::Lru;

/// The root directory's inode number (the kernel's `MSDOS_ROOT_INO`).
pub const ROOT_INO: Ino = 1;
/// statfs's f_namelen as vfat reports it: 255 UTF-16 units of up to 6
/// bytes each (FAT_LFN_LEN * NLS_MAX_CHARSET_SIZE). Real names stop at
/// 765 bytes of UTF-8.
const NAME_MAX: u32 = 1530;
/// Directories larger than this are refused as corrupted: FAT allows
/// 65536 entries (2 MiB) per directory.
const DIR_MAX_BYTES: u64 = 4 << 20;
/// Mappings returned by one iomap-begin answer.
const MAX_MAPPINGS: usize = 256;
/// Volumes with more clusters than this take their free count from a
/// valid FSInfo sector instead of scanning the FAT at mount (the kernel
/// scans at the first statfs; a 256 MiB FAT would not fit the host's
/// per-call deadline).
const COUNT_FREE_MAX: u32 = 16 << 20;
/// Device blocks cached (FAT windows, directory clusters).
const BLOCK_CACHE: usize = 1024;

/// Ownership, permission masks and time zone, from mount options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Options {
    uid: u32,
    gid: u32,
    fmask: u16,
    dmask: u16,
    /// Seconds added to on-disk (local) times to get UTC.
    tz_offset: i64,
}

impl Options {
    fn parse(options: &MountOptions) -> Result<Options> {
        let number = |name: &str, radix: u32| -> Result<Option<u32>> {
            options
                .get(name)
                .map(|v| {
                    u32::from_str_radix(v, radix)
                        .map_err(|_| Error::invalid(format!("mount option {name}={v} is not a number")))
                })
                .transpose()
        };
        let mask = |name: &str| -> Result<Option<u16>> {
            number(name, 8)?
                .map(|m| u16::try_from(m).ok().filter(|m| *m <= 0o777))
                .map(|m| m.ok_or_else(|| Error::invalid(format!("mount option {name} is not a permission mask"))))
                .transpose()
        };
        let umask = mask("umask")?.unwrap_or(0o022);
        let tz_offset = match (options.get("tz"), options.get("time_offset")) {
            (Some("UTC"), _) | (None, None) => 0,
            (Some(tz), _) => return Err(Error::invalid(format!("mount option tz={tz}: only tz=UTC exists"))),
            (None, Some(m)) => {
                let minutes: i64 = m
                    .parse()
                    .ok()
                    .filter(|m: &i64| m.abs() <= 24 * 60)
                    .ok_or_else(|| Error::invalid(format!("mount option time_offset={m} is not minutes")))?;
                -minutes * 60
            }
        };
        Ok(Options {
            uid: number("uid", 10)?.unwrap_or(0),
            gid: number("gid", 10)?.unwrap_or(0),
            fmask: mask("fmask")?.unwrap_or(umask),
            dmask: mask("dmask")?.unwrap_or(umask),
            tz_offset,
        })
    }
}

/// A parsed directory and where its entries live on the device.
struct DirInfo {
    listing: Listing,
    layout: Layout,
    /// st_size as the kernel reports it.
    size: u64,
}

enum Layout {
    /// Contiguous bytes from here (the FAT12/16 root).
    Fixed(u64),
    /// A cluster chain.
    Runs(Vec<Run>),
}

/// What an inode number names.
enum Node {
    Root,
    Entry(ShortEntry),
}

/// A mounted FAT volume.
pub struct FatFs {
    dev: Device,
    geo: Geometry,
    opts: Options,
    /// fs-info's block size: the cluster size when the data area is
    /// cluster-aligned on the device (the host checks mapping alignment
    /// against device offset 0), else the sector size.
    block_size: u32,
    dirs: Lru<Ino, Rc<DirInfo>>,
    files: Lru<Ino, Rc<FileChain>>,
    free: Option<u64>,
}

impl FatFs {
    fn fat32(&self) -> bool {
        self.geo.fat_type == FatType::Fat32
    }

    fn cluster_size(&self) -> u64 {
        u64::from(self.geo.cluster_size)
    }

    /// The node `ino` names: the root or a live short entry.
    fn node(&self, ino: Ino) -> Result<Node> {
        if ino == ROOT_INO {
            return Ok(Node::Root);
        }
        let gone = || Error::not_found(format!("inode {ino} names no directory entry"));
        let pos = ino.checked_mul(ENTRY_SIZE as u64).ok_or_else(gone)?;
        let in_root = match self.geo.root {
            RootDir::Fixed { start, entries } => pos >= start && pos < start + u64::from(entries) * 32,
            RootDir::Chain(_) => false,
        };
        let in_data = pos >= self.geo.data_start && pos < self.geo.data_end();
        if !in_root && !in_data {
            return Err(gone());
        }
        let raw = self.dev.read(pos, ENTRY_SIZE).with_context(|| format!("inode {ino}"))?;
        let e = ShortEntry::parse(&raw)?;
        if e.is_free() || e.attr & attr::VOLUME != 0 || e.is_dot() {
            return Err(gone());
        }
        Ok(Node::Entry(e))
    }

    /// The chain of a directory starting at `start`, to its end.
    fn dir_chain(&self, start: u32, what: &dyn std::fmt::Display) -> Result<Vec<Run>> {
        Fat::new(&self.dev, &self.geo).dir_runs(start, what)
    }

    /// Directory `ino`, parsed and cached.
    fn dir(&mut self, ino: Ino) -> Result<Rc<DirInfo>> {
        if let Some(d) = self.dirs.get(&ino) {
            return Ok(d);
        }
        let what = format!("directory {ino}");
        let (layout, size) = match self.node(ino)? {
            Node::Root => match self.geo.root {
                RootDir::Fixed { start, entries } => (Layout::Fixed(start), u64::from(entries) * 32),
                RootDir::Chain(c) => {
                    let runs = self.dir_chain(c, &what)?;
                    let size = runs_bytes(&runs, self.cluster_size());
                    (Layout::Runs(runs), size)
                }
            },
            Node::Entry(e) if e.is_dir() => match e.start(self.fat32()) {
                // The kernel gives a directory without clusters size 0.
                0 => (Layout::Runs(Vec::new()), 0),
                c => {
                    let runs = self.dir_chain(c, &what)?;
                    let size = runs_bytes(&runs, self.cluster_size());
                    (Layout::Runs(runs), size)
                }
            },
            Node::Entry(_) => return Err(Error::new(ErrorCode::NotDir, format!("inode {ino} is not a directory"))),
        };
        if size > DIR_MAX_BYTES {
            return Err(Error::corrupted(format!("{what}: {size} bytes, more than FAT allows")));
        }
        let raw = match &layout {
            Layout::Fixed(start) => self.dev.read(*start, size as usize).context(&what)?,
            Layout::Runs(runs) => {
                let mut raw = Vec::with_capacity(size as usize);
                for run in runs {
                    let at = self.geo.cluster_offset(run.cluster)?;
                    let len = u64::from(run.len) * self.cluster_size();
                    raw.extend_from_slice(&self.dev.read(at, len as usize).context(&what)?);
                }
                raw
            }
        };
        let listing = listing::parse(&raw).context(&what)?;
        if ino != ROOT_INO && listing.subdirs < 2 {
            // As the kernel's fat_validate_dir, which fails with EIO.
            return Err(Error::io(format!(
                "{what}: corrupted directory ({} directory entries; \".\" and \"..\" make at least 2)",
                listing.subdirs
            )));
        }
        let info = Rc::new(DirInfo { listing, layout, size });
        self.dirs.insert(ino, info.clone());
        Ok(info)
    }

    /// The inode number of the entry at slot `index` of directory `d`.
    fn entry_ino(&self, d: &DirInfo, index: u32) -> Result<Ino> {
        let byte = u64::from(index) * ENTRY_SIZE as u64;
        let pos = match &d.layout {
            Layout::Fixed(start) => start + byte,
            Layout::Runs(runs) => {
                let cs = self.cluster_size();
                let ci = byte / cs;
                let run = runs
                    .iter()
                    .find(|r| u64::from(r.index) <= ci && ci < u64::from(r.index) + u64::from(r.len))
                    .ok_or_else(|| Error::corrupted(format!("directory slot {index} outside its clusters")))?;
                let cluster = run.cluster + (ci - u64::from(run.index)) as u32;
                self.geo.cluster_offset(cluster)? + byte % cs
            }
        };
        Ok(pos / ENTRY_SIZE as u64)
    }

    fn perm(&self, e: Option<&ShortEntry>) -> u16 {
        let dir = e.is_none_or(|e| e.is_dir());
        let mut mode = 0o777;
        if let Some(e) = e
            && e.attr & attr::READ_ONLY != 0
            && !dir
        {
            mode &= !0o222;
        }
        mode & !(if dir { self.opts.dmask } else { self.opts.fmask })
    }

    fn blocks(&self, size: u64) -> u64 {
        size.div_ceil(self.cluster_size()) * self.cluster_size() / 512
    }

    fn attr(&mut self, ino: Ino) -> Result<Attr> {
        let node = self.node(ino)?;
        let (kind, nlink, size, entry) = match node {
            Node::Root => {
                let d = self.dir(ino)?;
                (FileType::Directory, d.listing.subdirs.saturating_add(2), d.size, None)
            }
            Node::Entry(e) if e.is_dir() => {
                let d = self.dir(ino)?;
                (FileType::Directory, d.listing.subdirs, d.size, Some(e))
            }
            Node::Entry(e) => (FileType::Regular, 1, u64::from(e.size), Some(e)),
        };
        let tz = self.opts.tz_offset;
        let (mtime, atime, crtime) = match &entry {
            None => (Timestamp::default(), Timestamp::default(), None),
            Some(e) => (
                time::to_unix(e.time, e.date, 0, tz),
                time::to_unix(0, e.adate, 0, tz),
                Some(time::to_unix(e.ctime, e.cdate, e.ctime_cs, tz)),
            ),
        };
        Ok(Attr {
            ino,
            kind,
            perm: self.perm(entry.as_ref()),
            nlink,
            uid: self.opts.uid,
            gid: self.opts.gid,
            size,
            blocks: self.blocks(size),
            atime,
            mtime,
            ctime: mtime,
            crtime,
            rdev: 0,
            generation: 0,
            flags: InodeFlags::default(),
        })
    }

    /// The free-cluster count of a valid FSInfo sector (both signatures,
    /// a count that is set and not above the cluster count).
    fn fsinfo_free(&self) -> Option<u64> {
        let raw = self.dev.read(self.geo.fsinfo?, 512).ok()?;
        let le = |at: usize| fshost_sdk::bytes::le_u32(&raw, at).ok();
        let valid = le(0)? == 0x4161_5252 && le(484)? == 0x6141_7272;
        let free = le(488)?;
        (valid && free <= self.geo.clusters).then_some(u64::from(free))
    }

    /// The clusters holding regular file `ino`'s bytes, as far as its
    /// chain holds, cached.
    fn file_chain(&mut self, ino: Ino) -> Result<Rc<FileChain>> {
        if let Some(r) = self.files.get(&ino) {
            return Ok(r);
        }
        let e = match self.node(ino)? {
            Node::Entry(e) if !e.is_dir() => e,
            _ => return Err(Error::new(ErrorCode::IsDir, format!("inode {ino} is a directory"))),
        };
        let what = format!("file {ino}");
        // At most 2^32 / 512: fits.
        let need = u64::from(e.size).div_ceil(self.cluster_size()) as u32;
        let start = e.start(self.fat32());
        // A file with a size but no first cluster reads as zeros in the
        // kernel (no block maps); it maps as one hole here.
        let chain = if need == 0 || start == 0 {
            FileChain::empty()
        } else {
            Fat::new(&self.dev, &self.geo).file_chain(start, need, &what)
        };
        if let Some(err) = &chain.broken {
            fshost_sdk::warn!("fat: {err}; the clusters before the break still read");
        }
        let chain = Rc::new(chain);
        self.files.insert(ino, chain.clone());
        Ok(chain)
    }
}

fn runs_bytes(runs: &[Run], cluster_size: u64) -> u64 {
    runs.iter().map(|r| u64::from(r.len) * cluster_size).sum()
}

/// Mount: boot sector, options, root directory.
fn mount(device: Device, options: &MountOptions) -> Result<FatFs> {
    let boot = device.read(0, 512).context("boot sector")?;
    let geo = Geometry::parse(&boot)?;
    let opts = Options::parse(options)?;
    device.set_cache(geo.sector_size.max(4096), BLOCK_CACHE);
    let block_size = if geo.data_start % u64::from(geo.cluster_size) == 0 { geo.cluster_size } else { geo.sector_size };
    let mut fs = FatFs { dev: device, geo, opts, block_size, dirs: Lru::new(64), files: Lru::new(256), free: None };
    fs.dir(ROOT_INO).context("root directory")?;
    Ok(fs)
}

impl Filesystem for FatFs {
    fn mount(device: Device, options: &MountOptions) -> Result<Self> {
        mount(device, options)
    }

    fn info(&mut self) -> Result<FsInfo> {
        let free = match self.free {
            Some(f) => f,
            None => {
                let f = match self.fsinfo_free() {
                    Some(f) if self.geo.clusters > COUNT_FREE_MAX => f,
                    _ => Fat::new(&self.dev, &self.geo).count_free().context("counting free clusters")?,
                };
                self.free = Some(f);
                f
            }
        };
        let per_cluster = u64::from(self.geo.cluster_size / self.block_size);
        let root = self.dir(ROOT_INO)?;
        let label = root.listing.label.clone().or_else(|| self.geo.label.clone()).unwrap_or_default();
        Ok(FsInfo {
            root: ROOT_INO,
            block_size: self.block_size,
            name_max: NAME_MAX,
            total_blocks: u64::from(self.geo.clusters) * per_cluster,
            free_blocks: free * per_cluster,
            available_blocks: free * per_cluster,
            total_inodes: 0,
            free_inodes: 0,
            fs_type: "vfat".into(),
            label,
            uuid: self.geo.serial.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default(),
        })
    }

    fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        self.attr(ino)
    }

    fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            return Err(Error::invalid("name is empty or contains '/' or NUL"));
        }
        let d = self.dir(parent)?;
        let found = d
            .listing
            .find(name)
            .ok_or_else(|| Error::not_found(format!("directory {parent}: no entry {}", name.escape_ascii())))?;
        let ino = self.entry_ino(&d, found.index)?;
        self.attr(ino)
    }

    fn readdir(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>> {
        let d = self.dir(ino)?;
        d.listing
            .after(cookie)
            .iter()
            .take(max as usize)
            .map(|e| {
                Ok(DirEntry {
                    ino: self.entry_ino(&d, e.index)?,
                    kind: if e.entry.is_dir() { FileType::Directory } else { FileType::Regular },
                    name: e.name.clone(),
                    cookie: u64::from(e.index) + 1,
                })
            })
            .collect()
    }

    /// As readdir, with attributes. An entry whose attributes cannot be
    /// read (a subdirectory whose chain is broken or loops, or without "."
    /// and "..") fails the batch with its error: the host then lists the
    /// batch without attributes and asks for each entry's alone, so that
    /// entry costs its attributes only. Its name is listed and its stat
    /// fails, as in the kernel.
    fn readdirplus(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<(DirEntry, Attr)>> {
        let batch = self.readdir(ino, cookie, max)?;
        batch
            .into_iter()
            .map(|e| {
                let attr = self.attr(e.ino)?;
                Ok((e, attr))
            })
            .collect()
    }

    /// FAT has no extended attributes, which the contract says with
    /// `unsupported`: the host then lists none and fails every getxattr
    /// with EOPNOTSUPP, as Linux's vfat does.
    fn listxattr(&mut self, _ino: Ino) -> Result<Vec<Vec<u8>>> {
        Err(Error::unsupported("FAT has no extended attributes"))
    }

    fn getxattr(&mut self, _ino: Ino, _name: &[u8]) -> Result<Vec<u8>> {
        Err(Error::unsupported("FAT has no extended attributes"))
    }

    fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        self.node(ino)?;
        Err(Error::invalid(format!("inode {ino}: FAT has no symbolic links")))
    }

    fn iomap_begin(&mut self, ino: Ino, offset: u64, length: u64, _flags: IomapFlags) -> Result<Vec<Mapping>> {
        let chain = self.file_chain(ino)?;
        let cs = self.cluster_size();
        let ci = offset / cs;
        let Some(at) = chain.chain_index(ci) else {
            return match &chain.broken {
                // From the break on, as the kernel: EIO.
                Some(err) if ci < u64::from(chain.need) => Err(err.clone()),
                // Past the clusters the size needs (the host reads nothing
                // there), or a file without clusters.
                _ => Ok(vec![Mapping { offset, length: length.max(1), kind: MappingKind::Hole }]),
            };
        };
        let want_end = offset.saturating_add(length);
        // (file cluster, device cluster, clusters): whole runs from the one
        // holding `ci` on; where a loop repeats, from `ci` on, piece by
        // piece (a piece ends where its run or the loop does).
        let mut pieces: Vec<(u64, u32, u64)> = Vec::new();
        let (mut file_cluster, mut at) = (ci, at);
        while pieces.len() < MAX_MAPPINGS && file_cluster < u64::from(chain.need) {
            if !pieces.is_empty() && file_cluster * cs >= want_end {
                break;
            }
            let k = chain.runs.partition_point(|r| u64::from(r.index) + u64::from(r.len) <= at);
            let Some(run) = chain.runs.get(k) else { break };
            let mut skip = at.saturating_sub(u64::from(run.index)); // < run.len
            if at == file_cluster {
                // Before any repeat: the whole run.
                file_cluster -= skip;
                skip = 0;
            }
            let len = (u64::from(run.len) - skip).min(u64::from(chain.need) - file_cluster);
            pieces.push((file_cluster, run.cluster + skip as u32, len));
            file_cluster += len;
            match chain.chain_index(file_cluster) {
                Some(next) => at = next,
                None => break,
            }
        }
        let device_end = self.dev.size();
        let mut out = Vec::new();
        for &(file_cluster, cluster, clusters) in &pieces {
            let file_at = file_cluster * cs;
            if !out.is_empty() && file_at >= want_end {
                break;
            }
            let dev_at = self.geo.cluster_offset(cluster)?;
            let mut len = clusters * cs;
            if dev_at >= device_end {
                if out.is_empty() {
                    return Err(Error::io(format!(
                        "file {ino}: cluster {cluster} is past the end of the {device_end}-byte device (truncated image?)"
                    )));
                }
                break;
            }
            let truncated = dev_at + len > device_end;
            if truncated {
                len = device_end - dev_at; // the last mapping may end at the device's end
            }
            out.push(Mapping { offset: file_at, length: len, kind: MappingKind::Mapped(dev_at) });
            if truncated {
                break;
            }
        }
        match out.first() {
            Some(m) if m.offset + m.length > offset => Ok(out),
            _ => Err(Error::io(format!(
                "file {ino}: byte {offset} lies past the end of the {device_end}-byte device (truncated image?)"
            ))),
        }
    }
}
