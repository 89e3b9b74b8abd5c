//! # The VHD volume guest
//!
//! A `.vhd` file (Microsoft's Virtual Hard Disk, version 1: Virtual PC,
//! Hyper-V, QEMU's `vpc` driver) holds a virtual disk either whole
//! (*fixed*: the disk's bytes, then a 512-byte footer) or in blocks found
//! through a table (*dynamic*: a footer copy, a dynamic header, the block
//! allocation table, and blocks each led by a sector bitmap). This crate
//! reads both as QEMU's block/vpc.c reads them, so that the host can stack
//! a partition table or a filesystem on the virtual disk and read the
//! blocks' bytes from the file itself:
//!
//! - [`footer`]: the footer (at the file's start for dynamic disks, its
//!   end for fixed ones), its checksum, the disk's size (the CHS geometry
//!   or the current size, by QEMU's rule on the creator application);
//! - [`dynamic`]: the dynamic header and the block allocation table;
//!   `map` answers whole blocks (unallocated ones read as zeros).
//!
//! Differencing disks (type 4, with a parent) are refused: QEMU cannot
//! make them, so nothing here could be tested against it. Nothing here
//! panics on any input.

pub mod bytes;
pub mod dynamic;
pub mod footer;

#[cfg(target_arch = "wasm32")]
mod glue;

use std::fmt;

pub use footer::Footer;

/// The byte space the image is read from (the image file).
pub trait Disk {
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
    NotFound,
    Corrupted,
    Io,
    Unsupported,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The image file at this byte offset.
    Backing(u64),
    Zeros,
}

/// One contiguous range of the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: Kind,
}

/// Most extents one `map` answer holds.
pub const MAX_EXTENTS: usize = 512;

/// Whether `disk` holds a VHD: the footer's cookie at its start (dynamic)
/// or in its last sector (fixed).
pub fn probe(disk: &dyn Disk) -> Result<Option<&'static str>> {
    Ok(footer::find(disk)?.map(|_| "vhd"))
}

/// An opened image.
pub enum Image {
    /// The disk's bytes are the file's first `length` bytes.
    Fixed {
        length: u64,
    },
    Dynamic {
        length: u64,
        table: dynamic::Table,
    },
}

impl Image {
    pub fn open(disk: &dyn Disk) -> Result<Image> {
        let (footer, at) = footer::read(disk)?;
        let length = footer.length;
        match footer.disk_type {
            footer::FIXED => {
                // The footer follows the disk.
                if length > at {
                    return Err(Error::corrupted(format!(
                        "fixed disk of {length} bytes in a file whose footer is at byte {at}"
                    )));
                }
                Ok(Image::Fixed { length })
            }
            footer::DYNAMIC => Ok(Image::Dynamic { length, table: dynamic::Table::read(disk, &footer)? }),
            footer::DIFFERENCING => {
                Err(Error::unsupported("a differencing VHD (a disk based on a parent VHD): not read"))
            }
            t => Err(Error::unsupported(format!("VHD disk type {t}: not fixed (2) or dynamic (3)"))),
        }
    }

    /// The virtual disk's length in bytes (whole sectors).
    pub fn length(&self) -> u64 {
        match self {
            Image::Fixed { length } | Image::Dynamic { length, .. } => *length,
        }
    }

    /// Extents from the one holding `offset`, covering up to `length`
    /// bytes in whole blocks.
    pub fn map(&self, disk: &dyn Disk, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let disk_length = self.length();
        if offset >= disk_length {
            return Err(Error::invalid(format!("offset {offset} is past the disk's end ({disk_length} bytes)")));
        }
        match self {
            Image::Fixed { length } => Ok(vec![Extent { offset: 0, length: *length, kind: Kind::Backing(0) }]),
            Image::Dynamic { table, .. } => table.map(disk, offset, length, disk_length),
        }
    }
}

#[cfg(test)]
mod tests;
