//! The backing image or block device. The only module that reads it.
//!
//! Opened read-only unless the mount is read-write (`-o rw`); a block
//! device is opened with O_EXCL so the kernel refuses it while it is
//! mounted elsewhere (and refuses to mount it while we hold it), and an
//! image file is locked: exclusively (flock) when opened read-write, so a
//! second read-write fshost on it is refused, and shared when opened
//! read-only, so a writer and a reader of one image refuse each other
//! (a reader of an image being written would see it half-changed, and a
//! writer would change it under a reader's caches, which trust it never
//! changes). Every read is bounds-checked
//! against the size taken at open, and a window on a partition
//! ([`Device::window`]) against the window first.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::FsError;

nix::ioctl_read!(blk_getsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blk_sszget, libc::BLKSSZGET, libc::c_int);

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// O_EXCL on a block device fails with EBUSY while anything else
    /// holds it: a mounted filesystem, another fshost, a partition scanner.
    #[error("cannot open {path}: the block device is busy (mounted, or held open exclusively by another program)")]
    Busy { path: PathBuf },
    #[error("{path} is neither a regular file nor a block device")]
    NotADevice { path: PathBuf },
    /// A read-write open of an image file another process holds locked
    /// (a second read-write fshost on the same image).
    #[error(
        "cannot open {path} read-write: another program holds it locked (a read-write fshost mount of the same \
         image?); unmount that first, or mount read-only (without -o rw)"
    )]
    Locked { path: PathBuf },
    /// A read-only open of an image file a read-write fshost holds.
    #[error(
        "cannot open {path}: a read-write fshost mount holds it (reading an image while it is written would show \
         it half-changed); unmount that first"
    )]
    Writing { path: PathBuf },
    /// A read-write open of an image file that readers hold.
    #[error(
        "cannot open {path} read-write: another program reads it (a read-only fshost mount or command of the same \
         image?); end that first, or mount read-only (without -o rw)"
    )]
    Reading { path: PathBuf },
    #[error("cannot read the size of block device {path}: {source}")]
    Size { path: PathBuf, source: nix::Error },
}

/// A byte space computed from the devices below it (a qcow2 virtual disk,
/// `crate::stack`): a device made with [`Device::layered`] reads through it.
pub trait Layer: Send + Sync + std::fmt::Debug {
    /// Fill `buf` from byte `offset`; [`Device`] checked the range against
    /// the layer's size.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), FsError>;
}

/// An open backing device.
#[derive(Debug)]
pub struct Device {
    file: Arc<File>,
    /// Reads go here instead of `file` (a stacked image format).
    layer: Option<Arc<dyn Layer>>,
    /// Where this device starts in the file: 0, or a partition's start
    /// for a window ([`Device::window`]).
    base: u64,
    size: u64,
    sector_size: u32,
    read_only: bool,
    path: PathBuf,
}

impl Device {
    /// Open `path` (an image file or a block device).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, OpenError> {
        let open_err = |source| OpenError::Open { path: path.to_owned(), source };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let is_block = meta.file_type().is_block_device();
        if !is_block && !meta.is_file() {
            return Err(OpenError::NotADevice { path: path.to_owned() });
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        let mut flags = libc::O_CLOEXEC | libc::O_NOCTTY;
        if is_block {
            flags |= libc::O_EXCL;
        }
        opts.custom_flags(flags);
        let file = opts.open(path).map_err(|source| match source.raw_os_error() {
            Some(libc::EBUSY) if is_block => OpenError::Busy { path: path.to_owned() },
            _ => open_err(source),
        })?;
        if !is_block {
            // One writer per image, and no readers while it writes: an
            // exclusive lock for a writer, a shared one for a reader, held
            // as long as the file is open (the kernel drops it when the
            // process ends).
            if read_only {
                match file.try_lock_shared() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Writing { path: path.to_owned() }),
                    // A filesystem without flock (some network ones): a
                    // reader goes on unlocked rather than not at all.
                    Err(std::fs::TryLockError::Error(e)) => {
                        tracing::debug!("{}: no shared lock ({e}); read unlocked", path.display())
                    }
                }
            } else {
                file.try_lock().map_err(|e| match e {
                    // Who holds it: a shared lock is still to be had when
                    // only readers do (the file's drop releases it).
                    std::fs::TryLockError::WouldBlock => match file.try_lock_shared() {
                        Ok(()) => OpenError::Reading { path: path.to_owned() },
                        Err(_) => OpenError::Locked { path: path.to_owned() },
                    },
                    std::fs::TryLockError::Error(source) => open_err(source),
                })?;
            }
        }
        let (size, sector_size) = if is_block {
            let mut size = 0u64;
            let mut ssz: libc::c_int = 0;
            // SAFETY: both ioctls write one integer of the given type to the pointer.
            unsafe {
                blk_getsize64(std::os::fd::AsRawFd::as_raw_fd(&file), &mut size)
                    .map_err(|source| OpenError::Size { path: path.to_owned(), source })?;
                blk_sszget(std::os::fd::AsRawFd::as_raw_fd(&file), &mut ssz)
                    .map_err(|source| OpenError::Size { path: path.to_owned(), source })?;
            }
            (size, u32::try_from(ssz).unwrap_or(512).max(512))
        } else {
            (meta.len(), 512)
        };
        Ok(Device { file: Arc::new(file), layer: None, base: 0, size, sector_size, read_only, path: path.to_owned() })
    }

    /// The `length` bytes from byte `start` of this device, as a device of
    /// its own with sectors of `sector_size` bytes (a partition): reads are
    /// bounds-checked against the window, then against this device. `None`
    /// unless the window lies inside this device and is aligned to both
    /// sector sizes.
    pub fn window(&self, start: u64, length: u64, sector_size: u32) -> Option<Device> {
        let align = u64::from(sector_size.max(self.sector_size));
        let fits =
            self.contains(start, length) && start.is_multiple_of(align) && length.is_multiple_of(align) && length > 0;
        fits.then(|| Device {
            file: self.file.clone(),
            layer: self.layer.clone(),
            base: self.base + start,
            size: length,
            sector_size: sector_size.max(self.sector_size),
            read_only: self.read_only,
            path: self.path.clone(),
        })
    }

    /// A read-only device of `size` bytes whose reads `layer` serves (it
    /// reads this device, or others, itself); named after this one.
    pub fn layered(&self, layer: Arc<dyn Layer>, size: u64, sector_size: u32) -> Device {
        Device {
            file: self.file.clone(),
            layer: Some(layer),
            base: 0,
            size,
            sector_size: sector_size.max(512),
            read_only: true,
            path: self.path.clone(),
        }
    }

    /// A device another process opened with [`Device::open`] and handed
    /// over with its size and sector size (`fshost serve`: the privileged
    /// front end opens, the confined server, which can open nothing, reads).
    pub fn from_fd(fd: OwnedFd, path: PathBuf, size: u64, sector_size: u32, read_only: bool) -> Device {
        let file = Arc::new(File::from(fd));
        Device { file, layer: None, base: 0, size, sector_size: sector_size.max(512), read_only, path }
    }

    /// The open file, to hand to a server process ([`Device::from_fd`]).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Where this device starts in the opened file (non-zero for a window).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Logical sector size in bytes.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether [offset, offset + len) lies inside the device.
    pub fn contains(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size)
    }

    /// Fill `buf` from byte `offset`; the whole range must be inside.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let err = |source| FsError::Device { offset, len: buf.len(), source };
        if !self.contains(offset, buf.len() as u64) {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "range is past the end of the device",
            )));
        }
        if let Some(layer) = &self.layer {
            return layer.read_exact_at(self.base + offset, buf);
        }
        let len = buf.len();
        // `contains` held: offset + len <= size, and base + size is inside
        // the file's device (checked when the window was made).
        self.file.read_exact_at(buf, self.base + offset).map_err(|source| FsError::Device { offset, len, source })
    }
}

impl Device {
    /// Write `data` at byte `offset`; the whole range must be inside and
    /// the device open for writing (a read-write mount of a file or block
    /// device, or a window on one).
    pub fn write_all_at(&self, offset: u64, data: &[u8]) -> Result<(), FsError> {
        let err = |source| FsError::DeviceWrite { offset, len: data.len(), source };
        if self.read_only {
            return Err(err(std::io::Error::from_raw_os_error(libc::EROFS)));
        }
        if !self.contains(offset, data.len() as u64) {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "range is past the end of the device",
            )));
        }
        // As for reads: base + size lies inside the file.
        self.file.write_all_at(data, self.base + offset).map_err(err)
    }

    /// Make every write so far durable (fdatasync). Nothing to do on a
    /// read-only device.
    pub fn flush(&self) -> Result<(), FsError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| FsError::DeviceWrite { offset: 0, len: 0, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reads_its_own_bytes_and_nothing_past_them() {
        let path = std::env::temp_dir().join(format!("fshost-window-{}", std::process::id()));
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i / 512) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let disk = Device::open(&path, true).unwrap();
        std::fs::remove_file(&path).unwrap();
        let part = disk.window(2048, 4096, 512).unwrap();
        assert_eq!((part.size(), part.base(), part.sector_size()), (4096, 2048, 512));
        let mut buf = [0u8; 512];
        part.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(buf, [4; 512]);
        part.read_exact_at(3584, &mut buf).unwrap();
        assert_eq!(buf, [11; 512]);
        assert!(part.read_exact_at(3585, &mut buf).is_err(), "past the window, though inside the file");
        // A window of a window adds up; windows outside or unaligned are refused.
        let inner = part.window(1024, 1024, 512).unwrap();
        inner.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(buf, [6; 512]);
        assert!(disk.window(4096, 8192, 512).is_none());
        assert!(disk.window(u64::MAX - 511, 512, 512).is_none());
        assert!(disk.window(100, 512, 512).is_none());
        assert!(disk.window(512, 4096, 4096).is_none());
        assert!(disk.window(0, 0, 512).is_none());
        assert_eq!(disk.window(4096, 4096, 4096).unwrap().sector_size(), 4096);
    }
}
