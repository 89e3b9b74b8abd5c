//! A dynamic VHD's header and block allocation table (BAT): each entry is
//! the sector where a block's sector bitmap starts, its data right after;
//! 0xFFFFFFFF is a block never written, which reads as zeros. As QEMU, the
//! bitmap is not consulted for reading a dynamic disk's allocated block.

use crate::bytes::{u32_at, u64_at};
use crate::footer::Footer;
use crate::{Disk, Error, Extent, Kind, MAX_EXTENTS, Result};

const COOKIE: [u8; 8] = *b"cxsparse";
const HEADER: usize = 1024;
const UNALLOCATED: u32 = u32::MAX;
/// Largest block size read (QEMU makes 2 MiB blocks; the format allows
/// any power of two).
const MAX_BLOCK: u32 = 256 << 20;

/// The dynamic header's geometry and the BAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub block_size: u64,
    /// Bytes of sector bitmap before each block's data.
    pub bitmap: u64,
    pub bat: Vec<u32>,
}

impl Table {
    pub fn read(disk: &dyn Disk, footer: &Footer) -> Result<Table> {
        let at = footer.data_offset;
        if at.checked_add(HEADER as u64).is_none_or(|e| e > disk.size()) {
            return Err(Error::corrupted(format!("dynamic header at {at}: past the end of the file")));
        }
        let h = disk.read(at, HEADER)?;
        if h.get(..8) != Some(&COOKIE[..]) {
            return Err(Error::corrupted(format!("no \"cxsparse\" dynamic header at {at}")));
        }
        let bat_at = u64_at(&h, 16, "table offset")?;
        let entries = u32_at(&h, 28, "max table entries")?;
        let block_size = u32_at(&h, 32, "block size")?;
        if !block_size.is_power_of_two() || !(512..=MAX_BLOCK).contains(&block_size) {
            return Err(Error::corrupted(format!("block size {block_size}")));
        }
        let block_size = u64::from(block_size);
        if u64::from(entries).saturating_mul(block_size) < footer.length {
            return Err(Error::corrupted(format!(
                "{entries} table entries of {block_size}-byte blocks for a {}-byte disk",
                footer.length
            )));
        }
        // Only the entries the disk uses are read.
        let used = footer.length.div_ceil(block_size);
        let bat_bytes = used * 4;
        if bat_at.checked_add(bat_bytes).is_none_or(|e| e > disk.size()) {
            return Err(Error::corrupted(format!(
                "block table of {bat_bytes} bytes at {bat_at}: past the end of the file"
            )));
        }
        let raw = disk.read(bat_at, bat_bytes as usize)?;
        let bat = raw.chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().unwrap_or([0xff; 4]))).collect();
        let bitmap = (block_size / 512).div_ceil(8).next_multiple_of(512);
        Ok(Table { block_size, bitmap, bat })
    }

    pub fn map(&self, disk: &dyn Disk, offset: u64, length: u64, disk_length: u64) -> Result<Vec<Extent>> {
        let mut out: Vec<Extent> = Vec::new();
        let end = offset.saturating_add(length.max(1)).min(disk_length);
        let mut pos = offset / self.block_size * self.block_size;
        while pos < end && out.len() < MAX_EXTENTS {
            let index = pos / self.block_size;
            let entry = usize::try_from(index).ok().and_then(|i| self.bat.get(i)).copied().unwrap_or(UNALLOCATED);
            let len = self.block_size.min(disk_length - pos);
            let kind = if entry == UNALLOCATED {
                Kind::Zeros
            } else {
                let data = (u64::from(entry) * 512).checked_add(self.bitmap);
                match data.filter(|d| d.checked_add(len).is_some_and(|e| e <= disk.size())) {
                    Some(d) => Kind::Backing(d),
                    None => {
                        return Err(Error::corrupted(format!(
                            "block {index} at sector {entry}: past the end of the file"
                        )));
                    }
                }
            };
            push(&mut out, Extent { offset: pos, length: len, kind });
            pos += len;
        }
        Ok(out)
    }
}

/// Append `e`, merged with the last extent when it continues it.
fn push(out: &mut Vec<Extent>, e: Extent) {
    if let Some(last) = out.last_mut() {
        let continues = match (last.kind, e.kind) {
            (Kind::Backing(a), Kind::Backing(b)) => a.checked_add(last.length) == Some(b),
            (Kind::Zeros, Kind::Zeros) => true,
            _ => false,
        };
        if continues {
            last.length += e.length;
            return;
        }
    }
    out.push(e);
}
