//! Run a guest natively against an image file: no wasm, no FUSE. Guest
//! authors unit-test their parser with the same trait the host will call.
//!
//! ```no_run
//! # use fshost_sdk::{testing, Filesystem, MountOptions};
//! # fn demo<F: Filesystem>() -> fshost_sdk::Result<()> {
//! let device = testing::open_image("disk.img")?;
//! let mut fs = F::mount(device, &MountOptions { read_only: true, ..Default::default() })?;
//! let info = fs.info()?;
//! let root = fs.getattr(info.root)?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::device::{BlockIo, Device};
use crate::error::{Error, Result};

/// A [`BlockIo`] over an image file.
pub struct FileIo {
    file: File,
    size: u64,
    writable: bool,
}

impl BlockIo for FileIo {
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        512
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(format!("read {} bytes at {offset}: {e}", buf.len())))
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::new(crate::ErrorCode::ReadOnly, "image opened read-only"));
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io(format!("write {} bytes at {offset}: {e}", data.len())))
    }
    fn flush(&self) -> Result<()> {
        if self.writable {
            self.file.sync_data().map_err(|e| Error::io(format!("fdatasync: {e}")))?;
        }
        Ok(())
    }
}

/// A [`Device`] reading the image file at `path`.
pub fn open_image(path: impl AsRef<Path>) -> Result<Device> {
    let path = path.as_ref();
    open(path, false)
}

/// A [`Device`] reading and writing the image file at `path` (for native
/// tests of a guest's writer; check the image with the format's fsck).
pub fn open_image_rw(path: impl AsRef<Path>) -> Result<Device> {
    open(path.as_ref(), true)
}

fn open(path: &Path, writable: bool) -> Result<Device> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| Error::io(format!("open {}: {e}", path.display())))?;
    let size = file.metadata().map_err(|e| Error::io(format!("stat {}: {e}", path.display())))?.len();
    Ok(Device::new(Box::new(FileIo { file, size, writable })))
}

/// A [`Device`] over bytes in memory (for tests that build tiny images).
pub fn memory_device(bytes: Vec<u8>) -> Device {
    struct Mem(Vec<u8>);
    impl BlockIo for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn sector_size(&self) -> u32 {
            512
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            let start = usize::try_from(offset).map_err(|_| Error::io("offset too large"))?;
            let src = start
                .checked_add(buf.len())
                .and_then(|end| self.0.get(start..end))
                .ok_or_else(|| Error::io("read past end"))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }
    Device::new(Box::new(Mem(bytes)))
}
