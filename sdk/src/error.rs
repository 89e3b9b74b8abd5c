//! The one error type every guest returns: a code the host maps to an errno,
//! and a message the host logs (it never reaches the application).

use std::borrow::Cow;
use std::fmt;

/// Why an operation failed; mirrors `error-code` in the WIT contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// ENOENT.
    NotFound,
    /// ENOTDIR.
    NotDir,
    /// EISDIR.
    IsDir,
    /// EUCLEAN: on-disk structures are inconsistent.
    Corrupted,
    /// EIO: the device read failed.
    Io,
    /// EOPNOTSUPP: a feature this guest does not implement.
    Unsupported,
    /// EINVAL.
    Invalid,
    /// ENODATA: no such extended attribute.
    NoData,
    /// ENAMETOOLONG.
    NameTooLong,
    /// ENOMEM.
    NoMemory,
    /// EROFS.
    ReadOnly,
    /// EACCES: exists but cannot be read (e.g. encrypted content).
    Access,
    /// EEXIST: the name (or, for setxattr with `create`, the attribute) exists.
    Exists,
    /// ENOTEMPTY: the directory is not empty.
    NotEmpty,
    /// ENOSPC: no free block or inode, or no room for an xattr.
    NoSpace,
    /// EMLINK: the inode has the most links the format allows.
    TooManyLinks,
    /// EFBIG: beyond the format's largest file size.
    FileTooBig,
    /// EPERM: the inode's flags forbid it (immutable, append-only).
    NotPermitted,
    /// EBADMSG (EFSBADCRC): a checksum does not match.
    BadChecksum,
    /// ENOKEY: encrypted, and no key is present.
    NoKey,
}

/// An error with its code and a human message saying what failed and where
/// ("inode 12: extent header magic 0x0000, expected 0xf30a").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: Cow<'static, str>,
}

/// The result type of every SDK and guest operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into() }
    }

    /// On-disk structures are inconsistent; `message` says which and how.
    pub fn corrupted(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Corrupted, message)
    }

    /// A checksum does not match (the kernel's EFSBADCRC, EBADMSG).
    pub fn bad_checksum(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadChecksum, message)
    }

    /// The format uses something this guest does not implement.
    pub fn unsupported(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }

    /// No such entry or inode.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A malformed request.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// The device could not be read.
    pub fn io(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Io, message)
    }

    /// The code the host will turn into an errno.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with where it happened ("inode 12: ...").
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self { code: self.code, message: format!("{what}: {}", self.message).into() }
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, "")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{:?}", self.code)
        } else {
            write!(f, "{:?}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// Adds `.context(...)` to results, as `anyhow` does, keeping the code.
pub trait ResultExt<T> {
    /// Prefix the error's message with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// Prefix the error's message with what `f` returns (built only on error).
    fn with_context<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
    fn with_context<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_code_and_prefixes_message() {
        let e: Result<()> = Err(Error::corrupted("bad magic"));
        let e = e.context("inode 12").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Corrupted);
        assert_eq!(e.message(), "inode 12: bad magic");
        assert_eq!(e.to_string(), "Corrupted: inode 12: bad magic");
    }
}
