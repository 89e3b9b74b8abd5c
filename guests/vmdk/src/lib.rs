//! # The VMDK volume guest
//!
//! A `.vmdk` (VMware's virtual disk) in one file: a *monolithic sparse*
//! extent (a header, an embedded descriptor, a grain directory pointing at
//! grain tables pointing at grains) or a *streamOptimized* one (the same,
//! with each grain deflated behind a marker and the directory found
//! through a footer at the file's end). This crate reads both as QEMU's
//! block/vmdk.c reads them:
//!
//! - [`sparse`]: the header (or the footer that takes its place), the
//!   grain directory and tables, and `map` (a grain stored plainly, a
//!   compressed grain inflated, zeros for one never written or zeroed).
//!
//! Refused, with a message naming it: a descriptor naming a parent (a
//! delta disk), flat or split extents in other files (a descriptor-only
//! .vmdk), a compression other than deflate. Nothing here panics on any
//! input.

pub mod bytes;
pub mod sparse;

#[cfg(target_arch = "wasm32")]
mod glue;

use std::fmt;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The image file at this byte offset.
    Backing(u64),
    Zeros,
    /// Bytes produced here (an inflated grain).
    Data(Vec<u8>),
}

/// One contiguous range of the virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: Kind,
}

/// Most extents, and most produced bytes, one `map` answer holds.
pub const MAX_EXTENTS: usize = 512;
pub const MAX_DATA: usize = 1 << 20;

/// Whether `disk` starts with a sparse extent's magic ("KDMV").
pub fn probe(disk: &dyn Disk) -> Result<Option<&'static str>> {
    if disk.size() < 512 {
        return Ok(None);
    }
    Ok((disk.read(0, 4)? == sparse::MAGIC).then_some("vmdk"))
}

pub use sparse::Image;

#[cfg(test)]
mod tests;
