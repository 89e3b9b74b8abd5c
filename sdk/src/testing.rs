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
}

/// A [`Device`] reading the image file at `path`.
pub fn open_image(path: impl AsRef<Path>) -> Result<Device> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(format!("open {}: {e}", path.display())))?;
    let size = file.metadata().map_err(|e| Error::io(format!("stat {}: {e}", path.display())))?.len();
    Ok(Device::new(Box::new(FileIo { file, size })))
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
