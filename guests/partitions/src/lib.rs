//! # The partition-table volume guest
//!
//! A whole-disk image (a USB stick's, a VM's) holds a partition table
//! before any filesystem. This crate reads the two tables Linux reads most,
//! as its `block/partitions/msdos.c` and `efi.c` read them, so that what
//! fshost lists is what the kernel would create as /dev/sdaN:
//!
//! - [`mbr`]: the four primary slots, extended partitions and the chain of
//!   logical partitions in them (numbered from 5), with the kernel's checks
//!   on the third and fourth EBR slots, a visited set against loops and a
//!   bound on the chain;
//! - [`gpt`]: the protective (or hybrid) MBR, the primary header and its
//!   entry array, both CRC-checked, the backup header at the disk's last
//!   sector when the primary is damaged, at 512- and 4096-byte sectors.
//!
//! It runs as a wasm component in the host's sandbox (`glue.rs`, the world
//! `fshost:volume/volume-guest` of wit/volume/volume.wit) and natively in
//! its tests. Nothing here panics on any input: every on-disk number goes
//! through checked arithmetic and every slice through [`bytes`].
//!
//! What the kernel does and this guest does not (each a warning in the
//! table): Linux trusts a damaged GPT's backup only with the `gpt` boot
//! option, lists a looping logical chain's partitions again until it has
//! 256, and takes an entry whose end precedes its start as reaching the
//! disk's end. This guest uses the backup, lists each logical partition
//! once and skips such an entry. BSD, Solaris and other nested labels
//! inside MBR partitions are not read.

pub mod bytes;
pub mod gpt;
pub mod mbr;

#[cfg(target_arch = "wasm32")]
mod glue;

use std::fmt;

/// The byte space the table is read from.
pub trait Disk {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// The logical sector size the device reports (512 for image files).
    fn sector_size(&self) -> u32;
    /// `len` bytes at `offset`; the whole range must be inside.
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// A disk in memory, for tests and fuzzing.
#[derive(Debug, Clone)]
pub struct MemDisk {
    pub bytes: Vec<u8>,
    pub sector_size: u32,
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let start = usize::try_from(offset).map_err(|_| Error::io(format!("read at {offset}: past the end")))?;
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::io(format!("read of {len} bytes at {offset}: past the end")))
    }
}

/// Why a table could not be read; mirrors `error-code` in the WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// No table of a kind this guest reads (or no such volume).
    NotFound,
    /// A table that is there but broken beyond use.
    Corrupted,
    /// A read failed.
    Io,
    /// A request outside a volume.
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

/// What the table says a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    /// An MBR type byte.
    Mbr(u8),
    /// A GPT type GUID, as on disk.
    Gpt([u8; 16]),
}

/// The flags of `volume-flags` in the WIT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub bootable: bool,
    pub required: bool,
    pub read_only: bool,
    pub hidden: bool,
    pub no_automount: bool,
    pub container: bool,
}

/// One partition: a contiguous range of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The number Linux gives it (sdaN).
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes (> 0).
    pub length: u64,
    pub kind: PartType,
    /// GPT: the unique partition GUID.
    pub uuid: Option<[u8; 16]>,
    /// GPT: the name as UTF-8.
    pub name: Vec<u8>,
    pub flags: Flags,
    /// GPT attribute bits; MBR: the boot indicator byte.
    pub attributes: u64,
}

/// A parsed table: its partitions, and what was wrong but survived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// "mbr" or "gpt".
    pub format: &'static str,
    /// The sector size the table counts in.
    pub sector_size: u32,
    /// GPT disk GUID or MBR disk signature, as stored.
    pub disk_id: Vec<u8>,
    /// Sorted by number.
    pub partitions: Vec<Partition>,
    /// Damage survived and partitions dropped or cut, one line each (the
    /// component logs them as warnings).
    pub warnings: Vec<String>,
}

/// Most partitions a table may yield: Linux's DISK_MAX_PARTS (256, so
/// numbers 1..=255).
pub const MAX_PARTITIONS: u32 = 255;

/// The MBR's boot signature, 0x55 0xAA at bytes 510 and 511.
pub(crate) fn has_boot_signature(sector: &[u8]) -> bool {
    sector.get(510..512) == Some(&[0x55, 0xAA][..])
}

/// Which table the first sector announces, reading only it: "gpt" for a
/// protective or hybrid MBR, "mbr" for a DOS table, `None` for neither.
pub fn probe(disk: &dyn Disk) -> Result<Option<&'static str>> {
    if disk.size() < 512 {
        return Ok(None);
    }
    let sector = disk.read(0, 512)?;
    if !has_boot_signature(&sector) {
        return Ok(None);
    }
    if gpt::protective_mbr(&sector).is_some() {
        return Ok(Some("gpt"));
    }
    Ok(mbr::looks_like_mbr(&sector).then_some("mbr"))
}

/// Read the table: GPT when the first sector is a protective or hybrid
/// MBR (as Linux's efi.c, tried first), a DOS table otherwise. Partitions
/// are then fitted to the disk as Linux's `blk_add_partition` fits them:
/// one that starts past the end is dropped, one that runs past it is cut.
pub fn read_table(disk: &dyn Disk) -> Result<Table> {
    if disk.size() < 512 {
        return Err(Error::not_found(format!("no partition table: the device has {} bytes", disk.size())));
    }
    let sector = disk.read(0, 512)?;
    if !has_boot_signature(&sector) {
        return Err(Error::not_found("no partition table: no 0x55AA boot signature in sector 0"));
    }
    let mut table = match gpt::protective_mbr(&sector) {
        Some(_) => gpt::read(disk)?,
        None => mbr::read(disk, &sector)?,
    };
    fit_to_disk(&mut table, disk.size());
    Ok(table)
}

fn fit_to_disk(table: &mut Table, disk_size: u64) {
    let ss = u64::from(table.sector_size);
    let end = disk_size / ss * ss;
    let mut kept = Vec::with_capacity(table.partitions.len());
    for mut p in std::mem::take(&mut table.partitions) {
        if p.start >= end {
            table.warnings.push(format!(
                "partition {}: starts at byte {}, past the end of the disk ({end} bytes): left out",
                p.number, p.start
            ));
            continue;
        }
        if p.start.saturating_add(p.length) > end {
            let cut = end - p.start;
            table.warnings.push(format!(
                "partition {}: {} bytes from byte {} run past the end of the disk: cut to {cut} bytes",
                p.number, p.length, p.start
            ));
            p.length = cut;
        }
        kept.push(p);
    }
    kept.sort_by_key(|p| p.number);
    table.partitions = kept;
}

/// What `map` answers for a partition: the whole partition, one range of
/// the disk.
pub fn map(table: &Table, number: u32, offset: u64) -> Result<&Partition> {
    let p = table
        .partitions
        .iter()
        .find(|p| p.number == number)
        .ok_or_else(|| Error::not_found(format!("no partition {number}")))?;
    if offset >= p.length {
        return Err(Error::invalid(format!(
            "offset {offset} is past the end of partition {number} ({} bytes)",
            p.length
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests;
