//! # The qcow2 volume guest
//!
//! A `.qcow2` file (QEMU's image format, docs/interop/qcow2.txt) holds a
//! virtual disk in clusters found through a two-level table. This crate
//! reads it so that the host can stack a partition table or a filesystem
//! on the virtual disk, reading the image file's bytes itself wherever a
//! cluster is stored plainly:
//!
//! - [`header`]: versions 2 and 3, the incompatible feature bits (an
//!   external data file, an unknown bit and encryption are refused, each
//!   with a message naming it), the header extensions, the backing file's
//!   name (reported, never opened: the host decides what backs the image);
//! - [`l2`]: L1 and L2 tables, standard and extended (subcluster) entries,
//!   each entry decoded into what a range of the disk reads as;
//! - [`compressed`]: deflate or zstd clusters, inflated into exactly one
//!   cluster;
//! - [`snapshot`]: internal snapshots, listed by id and name (the active
//!   image is what is read).
//!
//! Refcounts are not read: reading needs none. It runs as a wasm component
//! in the host's sandbox (`glue.rs`) and natively in its tests. Nothing
//! here panics on any input: every on-disk number goes through checked
//! arithmetic and every slice through [`bytes`].

pub mod bytes;
pub mod compressed;
pub mod header;
pub mod l2;
pub mod snapshot;

#[cfg(target_arch = "wasm32")]
mod glue;

use std::fmt;

pub use header::Header;
use l2::{L2Cache, Piece};
pub use snapshot::Snapshot;

/// The byte space the image is read from (the image file).
pub trait Disk {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// `len` bytes at `offset`; the whole range must be inside.
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// An image in memory, for tests and fuzzing.
#[derive(Debug, Clone)]
pub struct MemDisk(pub Vec<u8>);

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::io(format!("read of {len} bytes at {offset}: past the end")))
    }
}

/// Why the image could not be read; mirrors `error-code` in the WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Not a qcow2 image (or no such volume).
    NotFound,
    /// Structures that are there but broken.
    Corrupted,
    /// A read failed.
    Io,
    /// A feature this guest does not read (encryption, an external data
    /// file, an unknown version or feature bit).
    Unsupported,
    /// A request outside the disk.
    Invalid,
}

/// An error with its code and what failed where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn not_found(message: impl Into<String>) -> Self {
        Error { code: Code::NotFound, message: message.into() }
    }
    pub fn corrupted(message: impl Into<String>) -> Self {
        Error { code: Code::Corrupted, message: message.into() }
    }
    pub fn io(message: impl Into<String>) -> Self {
        Error { code: Code::Io, message: message.into() }
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error { code: Code::Unsupported, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error { code: Code::Invalid, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What backs one range of the virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The image file at this byte offset.
    Backing(u64),
    Zeros,
    /// Not in this image: the backing file's bytes at the same offset.
    Inherited,
    /// Bytes produced here (an inflated cluster).
    Data(Vec<u8>),
}

/// One contiguous range of the virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: Kind,
}

/// Most extents one `map` answer holds.
pub const MAX_EXTENTS: usize = 512;
/// Most produced bytes in one extent and in one answer (the host's limit
/// on a value is 1 MiB).
pub const MAX_DATA: usize = 1 << 20;
/// Most clusters one `map` call walks (it answers what it has by then).
const MAX_CLUSTERS_PER_MAP: u32 = 8192;

/// Whether `disk` holds a qcow2 image (its magic only).
pub fn probe(disk: &dyn Disk) -> Result<Option<&'static str>> {
    Ok(header::probe(disk)?.then_some("qcow2"))
}

/// An opened image: the header, its L1 table, the snapshot list, and
/// caches of L2 tables and of the last inflated cluster.
pub struct Image {
    pub header: Header,
    pub snapshots: Vec<Snapshot>,
    /// The virtual disk's length as a volume: the size, in whole sectors.
    pub length: u64,
    /// Damage survived (a broken snapshot table), one line each.
    pub warnings: Vec<String>,
    l1: Vec<u64>,
    l2: L2Cache,
    /// The last inflated cluster, by its L2 entry.
    inflated: Option<(u64, Vec<u8>)>,
}

impl Image {
    /// Read the header, the L1 table and the snapshot list.
    pub fn open(disk: &dyn Disk) -> Result<Image> {
        let header = header::read(disk)?;
        let l1 = l2::read_l1(disk, &header)?;
        let mut warnings = Vec::new();
        if header.corrupt {
            warnings.push("the image is marked corrupt by QEMU: reading it anyway".to_string());
        }
        let snapshots = snapshot::read(disk, &header).unwrap_or_else(|e| {
            warnings.push(format!("snapshot table not listed: {e}"));
            Vec::new()
        });
        let length = header.size / 512 * 512;
        if length != header.size {
            warnings.push(format!(
                "virtual size {} is not whole sectors: the last {} bytes are left out",
                header.size,
                header.size - length
            ));
        }
        let l2 = L2Cache::new(header.cluster_size());
        Ok(Image { header, snapshots, length, warnings, l1, l2, inflated: None })
    }

    /// Extents of the virtual disk from the one holding `offset`, covering
    /// up to `length` bytes (whole clusters or subclusters; fewer when an
    /// answer would grow past [`MAX_EXTENTS`] or [`MAX_DATA`]).
    pub fn map(&mut self, disk: &dyn Disk, offset: u64, length: u64) -> Result<Vec<Extent>> {
        if offset >= self.length {
            return Err(Error::invalid(format!("offset {offset} is past the disk's end ({} bytes)", self.length)));
        }
        let wanted_end = offset.saturating_add(length.max(1)).min(self.length);
        let cluster_bits = self.header.cluster_bits;
        let mut out: Vec<Extent> = Vec::new();
        let mut data_bytes = 0usize;
        let mut pos = offset >> cluster_bits << cluster_bits;
        let mut walked = 0u32;
        'walk: while pos < wanted_end && walked < MAX_CLUSTERS_PER_MAP {
            walked += 1;
            let pieces = l2::pieces(disk, &self.header, &self.l1, &mut self.l2, pos)?;
            let mut next = pos;
            for piece in pieces {
                let end = piece.offset.saturating_add(piece.length).min(self.length);
                next = piece.offset.saturating_add(piece.length);
                if end <= offset {
                    continue;
                }
                if piece.offset >= self.length {
                    break 'walk;
                }
                let length = end - piece.offset;
                let kind = match piece.kind {
                    Piece::Backing(at) => {
                        let fits = at.checked_add(length).is_some_and(|e| e <= disk.size());
                        if !fits {
                            return Err(Error::corrupted(format!(
                                "data of disk bytes {}..{end} at file offset {at}: past the end of the file ({} bytes)",
                                piece.offset,
                                disk.size()
                            )));
                        }
                        Kind::Backing(at)
                    }
                    Piece::Zeros => Kind::Zeros,
                    Piece::Unallocated if self.header.backing.is_some() => Kind::Inherited,
                    Piece::Unallocated => Kind::Zeros,
                    Piece::Compressed { entry, at, size } => {
                        // Slices of at most MAX_DATA bytes of the inflated cluster.
                        let cluster = self.inflate(disk, entry, at, size, piece.offset)?;
                        let mut from = 0usize;
                        while (from as u64) < length {
                            let to = (from + MAX_DATA).min(length as usize);
                            let start = piece.offset + from as u64;
                            let slice_end = piece.offset + to as u64;
                            from = to;
                            if slice_end <= offset {
                                continue;
                            }
                            if !out.is_empty() && data_bytes + (slice_end - start) as usize > MAX_DATA {
                                break 'walk;
                            }
                            let bytes = cluster.get((start - piece.offset) as usize..to).unwrap_or_default();
                            data_bytes += bytes.len();
                            out.push(Extent {
                                offset: start,
                                length: slice_end - start,
                                kind: Kind::Data(bytes.to_vec()),
                            });
                            if out.len() >= MAX_EXTENTS {
                                break 'walk;
                            }
                        }
                        continue;
                    }
                };
                push(&mut out, Extent { offset: piece.offset, length, kind });
                if out.len() >= MAX_EXTENTS {
                    break 'walk;
                }
            }
            if next <= pos {
                break;
            }
            pos = next;
        }
        if out.is_empty() {
            return Err(Error::corrupted(format!("no extent holds disk offset {offset}")));
        }
        Ok(out)
    }

    /// The inflated cluster an L2 `entry` describes (cached: a read of a
    /// compressed cluster comes in several calls).
    fn inflate(&mut self, disk: &dyn Disk, entry: u64, at: u64, size: u64, disk_offset: u64) -> Result<&[u8]> {
        if self.inflated.as_ref().is_none_or(|(e, _)| *e != entry) {
            let what = format!("compressed cluster of disk byte {disk_offset} at file offset {at}");
            if at >= disk.size() {
                return Err(Error::corrupted(format!("{what}: past the end of the file")));
            }
            // The last compressed cluster may end inside its last sector,
            // where the file ends (QEMU reads the rest as zeros).
            let len = size.min(disk.size() - at) as usize;
            let input = disk.read(at, len)?;
            let cluster_size = self.header.cluster_size() as usize;
            let bytes = compressed::inflate(self.header.compression, &input, cluster_size, &what)?;
            self.inflated = Some((entry, bytes));
        }
        Ok(self.inflated.as_ref().map(|(_, b)| b.as_slice()).unwrap_or_default())
    }
}

/// Append `e`, merged with the last extent when it continues it.
fn push(out: &mut Vec<Extent>, e: Extent) {
    if let Some(last) = out.last_mut() {
        let continues = match (&last.kind, &e.kind) {
            (Kind::Backing(a), Kind::Backing(b)) => a.checked_add(last.length) == Some(*b),
            (Kind::Zeros, Kind::Zeros) | (Kind::Inherited, Kind::Inherited) => true,
            _ => false,
        };
        if continues && last.offset + last.length == e.offset {
            last.length += e.length;
            return;
        }
    }
    out.push(e);
}

#[cfg(test)]
mod tests;
