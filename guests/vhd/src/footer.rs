//! The VHD footer: 512 bytes at the end of every VHD, copied to the start
//! of dynamic ones. It says the disk's type and size; QEMU's rule for
//! which size counts (the CHS geometry or the "current size") is followed
//! so that the disk is as long as `qemu-img convert` makes it.

use crate::bytes::{array, u8_at, u16_at, u32_at, u64_at};
use crate::{Disk, Error, Result};

pub const COOKIE: [u8; 8] = *b"conectix";
pub const FOOTER: usize = 512;
pub const FIXED: u32 = 2;
pub const DYNAMIC: u32 = 3;
pub const DIFFERENCING: u32 = 4;
/// QEMU's VHD_MAX_SECTORS: 2040 GiB.
const MAX_SECTORS: u64 = 0xff00_0000;
/// The largest CHS geometry (65535 cylinders, 16 heads, 255 sectors).
const MAX_GEOMETRY: u64 = 65535 * 16 * 255;

/// A parsed, checked footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub disk_type: u32,
    /// The dynamic header's offset (dynamic and differencing disks).
    pub data_offset: u64,
    /// The disk's length in bytes, whole sectors.
    pub length: u64,
    pub creator: [u8; 4],
}

/// Where the footer is: byte 0 (a dynamic disk's copy) or the last
/// sector (any disk); `None` if neither holds the cookie.
pub fn find(disk: &dyn Disk) -> Result<Option<u64>> {
    let size = disk.size();
    if size < FOOTER as u64 {
        return Ok(None);
    }
    if disk.read(0, 8)? == COOKIE {
        return Ok(Some(0));
    }
    let last = size - FOOTER as u64;
    Ok((disk.read(last, 8)? == COOKIE).then_some(last))
}

/// The footer and where it was read (as QEMU: the copy at byte 0 first).
pub fn read(disk: &dyn Disk) -> Result<(Footer, u64)> {
    let Some(at) = find(disk)? else {
        return Err(Error::not_found("not a VHD: no \"conectix\" footer at the file's start or end"));
    };
    let buf = disk.read(at, FOOTER)?;
    let stored = u32_at(&buf, 64, "checksum")?;
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, b)| s.wrapping_add(u32::from(*b)));
    if !sum != stored {
        return Err(Error::corrupted(format!("footer checksum {stored:#010x}, computed {:#010x}", !sum)));
    }
    let disk_type = u32_at(&buf, 60, "disk type")?;
    let creator = array::<4>(&buf, 28, "creator application")?;
    let current_size = u64_at(&buf, 48, "current size")?;
    let cyls = u64::from(u16_at(&buf, 56, "cylinders")?);
    let heads = u64::from(u8_at(&buf, 58, "heads")?);
    let secs = u64::from(u8_at(&buf, 59, "sectors per track")?);
    // QEMU (block/vpc.c): Virtual PC and QEMU's own images are as long as
    // their CHS geometry; others (Hyper-V, disk2vhd, "qem2"), and any at
    // the largest geometry, as their current size.
    let chs = cyls * heads * secs;
    let uses_chs = &creator == b"vpc " || &creator == b"qemu";
    let sectors = if !uses_chs || chs == MAX_GEOMETRY { current_size / 512 } else { chs };
    if sectors > MAX_SECTORS {
        return Err(Error::corrupted(format!("a disk of {sectors} sectors, more than VHD's 2040 GiB")));
    }
    let data_offset = u64_at(&buf, 16, "data offset")?;
    Ok((Footer { disk_type, data_offset, length: sectors * 512, creator }, at))
}
