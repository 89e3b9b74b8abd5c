//! The host's error for one filesystem operation, and the errno it becomes.
//!
//! Every failure a FUSE client or an offline command can see goes through
//! [`FsError`]: a guest's own answer (not found, corrupted, ...), a guest
//! that misbehaved (trap, deadline, invalid result), or a device error.

use crate::types::Ino;

/// What a guest said went wrong (the WIT `error-code`). Displayed in words,
/// as a user reads them in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestCode {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("the filesystem is damaged (structure needs cleaning)")]
    Corrupted,
    #[error("input/output error")]
    Io,
    #[error("not supported by this guest")]
    Unsupported,
    #[error("invalid argument")]
    Invalid,
    #[error("no such attribute")]
    NoData,
    #[error("file name too long")]
    NameTooLong,
    #[error("the guest ran out of memory")]
    NoMemory,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("permission denied")]
    Access,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("no space left on device")]
    NoSpace,
    #[error("too many links")]
    TooManyLinks,
    #[error("file too large")]
    FileTooBig,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("bad checksum (bad message)")]
    BadChecksum,
    #[error("required key not available")]
    NoKey,
}

/// Why one operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The guest answered with an error code.
    #[error("{op}: {code}")]
    Guest { op: &'static str, code: GuestCode },
    /// The guest trapped, ran out of time or memory, or could not be started.
    #[error("{op}: guest failed: {reason}")]
    GuestFailed { op: &'static str, reason: String },
    /// The guest returned something the host refuses to use.
    #[error("{op}: guest returned an invalid result: {reason}")]
    Invalid { op: &'static str, reason: String },
    /// Reading the backing device failed.
    #[error("device read of {len} bytes at byte {offset}: {source}")]
    Device { offset: u64, len: usize, source: std::io::Error },
    /// Writing or flushing the backing device failed.
    #[error("device write of {len} bytes at byte {offset}: {source}")]
    DeviceWrite { offset: u64, len: usize, source: std::io::Error },
    /// A read-write mount the guest refused (`writer.begin-write`): its
    /// sentence, cleaned and cut.
    #[error("the guest cannot write this filesystem: {0}; mount read-only (without -o rw)")]
    WriteRefused(String),
    /// The filesystem could not be mounted and will not be retried.
    #[error("the filesystem is in a failed state: {0}")]
    Failed(String),
    /// A request that makes no sense for this inode.
    #[error("inode {ino}: {what}")]
    Request { ino: Ino, what: &'static str, errno: i32 },
}

impl FsError {
    /// The errno a FUSE reply or an offline command reports.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Guest { code, .. } => match code {
                GuestCode::NotFound => libc::ENOENT,
                GuestCode::NotDir => libc::ENOTDIR,
                GuestCode::IsDir => libc::EISDIR,
                GuestCode::Corrupted => libc::EUCLEAN,
                GuestCode::Io => libc::EIO,
                GuestCode::Unsupported => libc::EOPNOTSUPP,
                GuestCode::Invalid => libc::EINVAL,
                GuestCode::NoData => libc::ENODATA,
                GuestCode::NameTooLong => libc::ENAMETOOLONG,
                GuestCode::NoMemory => libc::ENOMEM,
                GuestCode::ReadOnly => libc::EROFS,
                GuestCode::Access => libc::EACCES,
                GuestCode::Exists => libc::EEXIST,
                GuestCode::NotEmpty => libc::ENOTEMPTY,
                GuestCode::NoSpace => libc::ENOSPC,
                GuestCode::TooManyLinks => libc::EMLINK,
                GuestCode::FileTooBig => libc::EFBIG,
                GuestCode::NotPermitted => libc::EPERM,
                GuestCode::BadChecksum => libc::EBADMSG,
                GuestCode::NoKey => libc::ENOKEY,
            },
            FsError::Request { errno, .. } => *errno,
            FsError::WriteRefused(_) => libc::EROFS,
            FsError::GuestFailed { .. }
            | FsError::Invalid { .. }
            | FsError::Device { .. }
            | FsError::DeviceWrite { .. }
            | FsError::Failed(_) => libc::EIO,
        }
    }

    /// Whether the guest reported that the inode or name does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Guest { code: GuestCode::NotFound, .. })
    }
}
