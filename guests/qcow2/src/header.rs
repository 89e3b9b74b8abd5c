//! The qcow2 header (docs/interop/qcow2.txt in QEMU): versions 2 and 3,
//! the incompatible feature bits, the header extensions and the backing
//! file's name, all inside the first cluster.
//!
//! Every number is checked here, once; [`Header`] is trusted past this
//! module: the cluster size is a power of two from 512 bytes to 2 MiB, the
//! L1 table lies inside the file and covers the virtual size.

use crate::bytes::{slice, u8_at, u32_at, u64_at};
use crate::{Disk, Error, Result};

/// "QFI\xfb".
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// The v2 header's length; v3 says its own (at least 104).
const V2_LENGTH: usize = 72;
/// QEMU's QCOW_MAX_L1_SIZE: an L1 table of at most 32 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's limit on a backing file name (1023 bytes).
const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bits (v3).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (RFC 1951), the default.
    Deflate,
    /// Zstandard frames (compression_type 1).
    Zstd,
}

/// A parsed, checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    /// log2 of the cluster size: 9..=21.
    pub cluster_bits: u32,
    /// The virtual disk's size in bytes.
    pub size: u64,
    /// Entries in the L1 table; enough for `size`.
    pub l1_size: u32,
    /// Where the L1 table is: cluster-aligned, inside the file.
    pub l1_offset: u64,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    /// The backing file's name, as stored.
    pub backing: Option<Vec<u8>>,
    /// The backing file's format ("raw", "qcow2"), as stored.
    pub backing_format: Option<Vec<u8>>,
    pub compression: Compression,
    /// L2 entries are 128 bits with a subcluster bitmap.
    pub extended_l2: bool,
    /// The image was not closed cleanly (refcounts may be stale; reading
    /// does not use them).
    pub dirty: bool,
    /// QEMU found the metadata inconsistent and marked the image.
    pub corrupt: bool,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2 entries.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2 { 16 } else { 8 }
    }

    /// Entries per L2 table (one cluster).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }
}

/// Whether `disk` starts with the qcow2 magic.
pub fn probe(disk: &dyn Disk) -> Result<bool> {
    if disk.size() < 4 {
        return Ok(false);
    }
    Ok(disk.read(0, 4)? == MAGIC)
}

/// Read and check the header.
pub fn read(disk: &dyn Disk) -> Result<Header> {
    let file_size = disk.size();
    if file_size < V2_LENGTH as u64 {
        return Err(Error::not_found(format!("not a qcow2 image: {file_size} bytes, less than a header")));
    }
    let first = disk.read(0, V2_LENGTH)?;
    if first.get(..4) != Some(&MAGIC[..]) {
        return Err(Error::not_found("not a qcow2 image: no QFI\\xfb magic"));
    }
    let version = u32_at(&first, 4, "version")?;
    if version != 2 && version != 3 {
        return Err(Error::unsupported(format!("qcow2 version {version}: this guest reads versions 2 and 3")));
    }
    let cluster_bits = u32_at(&first, 20, "cluster_bits")?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(Error::corrupted(format!("cluster_bits {cluster_bits}: not from 9 to 21")));
    }
    let cluster_size = 1u64 << cluster_bits;
    let crypt_method = u32_at(&first, 32, "crypt_method")?;
    match crypt_method {
        0 => {}
        1 => return Err(Error::unsupported("the image is encrypted (qcow2 AES, crypt_method 1): not read")),
        2 => return Err(Error::unsupported("the image is encrypted (LUKS, crypt_method 2): not read")),
        m => return Err(Error::unsupported(format!("the image is encrypted (unknown crypt_method {m}): not read"))),
    }
    // The header and its extensions live in the first cluster.
    let first_cluster = disk.read(0, usize::try_from(cluster_size.min(file_size)).unwrap_or(V2_LENGTH))?;
    let buf = first_cluster.as_slice();
    let (mut incompat, mut header_length, mut compression_type) = (0u64, V2_LENGTH, 0u8);
    if version == 3 {
        incompat = u64_at(buf, 72, "incompatible_features")?;
        let length = u32_at(buf, 100, "header_length")?;
        if length < 104 || u64::from(length) > cluster_size || !length.is_multiple_of(8) {
            return Err(Error::corrupted(format!("header_length {length}")));
        }
        header_length = length as usize;
        if header_length > 104 {
            compression_type = u8_at(buf, 104, "compression_type")?;
        }
    }
    let unknown = incompat & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(Error::unsupported(format!(
            "incompatible feature bits {unknown:#x} that this guest does not know"
        )));
    }
    if incompat & INCOMPAT_DATA_FILE != 0 {
        return Err(Error::unsupported("the image keeps its data in an external data file: not read"));
    }
    let compression = match (incompat & INCOMPAT_COMPRESSION != 0, compression_type) {
        (_, 0) => Compression::Deflate,
        (true, 1) => Compression::Zstd,
        (false, t) => {
            return Err(Error::corrupted(format!(
                "compression_type {t} without the compression-type incompatible bit"
            )));
        }
        (true, t) => return Err(Error::unsupported(format!("compression_type {t}: not deflate (0) or zstd (1)"))),
    };
    let extended_l2 = incompat & INCOMPAT_EXTL2 != 0;
    if extended_l2 && cluster_bits < 14 {
        return Err(Error::corrupted(format!(
            "extended L2 entries with {cluster_size}-byte clusters (subclusters of less than 512 bytes)"
        )));
    }

    let size = u64_at(buf, 24, "size")?;
    let l1_size = u32_at(buf, 36, "l1_size")?;
    let l1_offset = u64_at(buf, 40, "l1_table_offset")?;
    let entry_bits = if extended_l2 { 4 } else { 3 };
    // Bytes one L1 entry covers: a cluster of L2 entries, each a cluster.
    let l1_span_bits = cluster_bits + (cluster_bits - entry_bits);
    let needed = size.div_ceil(1u64 << l1_span_bits);
    if u64::from(l1_size) < needed {
        return Err(Error::corrupted(format!("L1 table of {l1_size} entries for a {size}-byte disk (needs {needed})")));
    }
    let l1_bytes = u64::from(l1_size) * 8;
    if l1_bytes > MAX_L1_BYTES {
        return Err(Error::corrupted(format!("L1 table of {l1_size} entries, more than QEMU's 32 MiB")));
    }
    if l1_size > 0
        && (!l1_offset.is_multiple_of(cluster_size) || l1_offset.checked_add(l1_bytes).is_none_or(|e| e > file_size))
    {
        return Err(Error::corrupted(format!(
            "L1 table of {l1_bytes} bytes at {l1_offset}: unaligned or past the end of the file ({file_size} bytes)"
        )));
    }
    let nb_snapshots = u32_at(buf, 60, "nb_snapshots")?;
    let snapshots_offset = u64_at(buf, 64, "snapshots_offset")?;

    let backing_offset = u64_at(buf, 8, "backing_file_offset")?;
    let backing_size = u32_at(buf, 16, "backing_file_size")?;
    let backing = if backing_offset == 0 {
        None
    } else {
        if backing_size == 0 || backing_size > MAX_BACKING_NAME {
            return Err(Error::corrupted(format!("backing file name of {backing_size} bytes")));
        }
        let at = usize::try_from(backing_offset).map_err(|_| Error::corrupted("backing_file_offset"))?;
        let name = slice(buf, at, backing_size as usize, "backing file name (in the first cluster)")?;
        Some(name.to_vec())
    };

    // Header extensions: from the header's end to the backing name (or
    // the cluster's end), each a type, a length and padded data.
    let ext_end = match backing_offset {
        0 => buf.len(),
        at => usize::try_from(at).unwrap_or(usize::MAX).min(buf.len()),
    };
    let mut at = header_length;
    let mut backing_format = None;
    while at.checked_add(8).is_some_and(|e| e <= ext_end) {
        let kind = u32_at(buf, at, "header extension type")?;
        if kind == EXT_END {
            break;
        }
        let len = u32_at(buf, at + 4, "header extension length")? as usize;
        let data_at = at + 8;
        let data = slice(&buf[..ext_end], data_at, len, "header extension")?;
        if kind == EXT_BACKING_FORMAT {
            backing_format = Some(data.to_vec());
        }
        at = data_at + len.div_ceil(8) * 8;
    }

    Ok(Header {
        version,
        cluster_bits,
        size,
        l1_size,
        l1_offset,
        nb_snapshots,
        snapshots_offset,
        backing,
        backing_format,
        compression,
        extended_l2,
        dirty: incompat & INCOMPAT_DIRTY != 0,
        corrupt: incompat & INCOMPAT_CORRUPT != 0,
    })
}
