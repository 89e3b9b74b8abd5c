//! The hellofs on-disk records (README.md), parsed with bounds checks.

use fshost_sdk::bytes::{le_u16, le_u32, le_u64, slice};
use fshost_sdk::{Device, Error, Ino, Result};

/// The magic at byte 0.
pub const MAGIC: &[u8; 8] = b"FSHOSTH1";
/// Size of one inode record.
pub const INODE_SIZE: u64 = 64;
/// Size of one extent record.
pub const EXTENT_SIZE: u64 = 24;
/// Most extents or directory entries one inode may have.
const MAX_COUNT: u32 = 1 << 20;

/// The header, validated.
#[derive(Debug, Clone)]
pub struct Header {
    pub block_size: u32,
    pub inode_count: u32,
    pub label: Vec<u8>,
    pub inode_table: u64,
}

/// One inode record, as stored.
#[derive(Debug, Clone)]
pub struct Inode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub count: u32,
    pub payload: u64,
    pub rdev: u64,
}

/// One extent of a regular file.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub file_offset: u64,
    pub length: u64,
    pub device_offset: u64,
}

impl Header {
    /// Read and check the header at byte 0.
    pub fn read(device: &Device) -> Result<Self> {
        let raw = device.read(0, 56).map_err(|e| e.context("hellofs header"))?;
        if slice(&raw, 0, 8)? != MAGIC {
            return Err(Error::invalid("not a hellofs image (bad magic)"));
        }
        let block_size = le_u32(&raw, 8)?;
        if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(Error::corrupted(format!(
                "header: block size {block_size} is not a power of two in 512..=65536"
            )));
        }
        let inode_count = le_u32(&raw, 12)?;
        if inode_count == 0 {
            return Err(Error::corrupted("header: no inodes"));
        }
        let label = slice(&raw, 16, 32)?.iter().copied().take_while(|&b| b != 0).collect();
        let inode_table = le_u64(&raw, 48)?;
        let table_end = u64::from(inode_count)
            .checked_mul(INODE_SIZE)
            .and_then(|len| inode_table.checked_add(len))
            .filter(|&end| end <= device.size());
        if table_end.is_none() {
            return Err(Error::corrupted(format!(
                "header: inode table of {inode_count} inodes at byte {inode_table} does not fit the {}-byte device",
                device.size()
            )));
        }
        Ok(Header { block_size, inode_count, label, inode_table })
    }

    /// Read inode `ino` (1-based).
    pub fn read_inode(&self, device: &Device, ino: Ino) -> Result<Inode> {
        if ino == 0 || ino > u64::from(self.inode_count) {
            return Err(Error::not_found(format!("inode {ino} is outside 1..={}", self.inode_count)));
        }
        let at = self.inode_table + (ino - 1) * INODE_SIZE;
        let raw = device.read(at, INODE_SIZE as usize).map_err(|e| e.context(format!("inode {ino}")))?;
        Ok(Inode {
            mode: le_u32(&raw, 0)?,
            uid: le_u32(&raw, 4)?,
            gid: le_u32(&raw, 8)?,
            nlink: le_u32(&raw, 12)?,
            size: le_u64(&raw, 16)?,
            mtime: le_u64(&raw, 24)? as i64,
            mtime_ns: le_u32(&raw, 32)?,
            count: le_u32(&raw, 36)?,
            payload: le_u64(&raw, 40)?,
            rdev: le_u64(&raw, 48)?,
        })
    }
}

fn checked_count(inode: &Inode) -> Result<u32> {
    if inode.count > MAX_COUNT {
        return Err(Error::corrupted(format!("{} records is more than the {MAX_COUNT} allowed", inode.count)));
    }
    Ok(inode.count)
}

/// The extent table of a regular file, sorted and non-overlapping.
pub fn read_extents(device: &Device, inode: &Inode) -> Result<Vec<Extent>> {
    let count = checked_count(inode)?;
    let raw = device.read(inode.payload, count as usize * EXTENT_SIZE as usize)?;
    let mut out: Vec<Extent> = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let at = i * EXTENT_SIZE as usize;
        let e = Extent {
            file_offset: le_u64(&raw, at)?,
            length: le_u64(&raw, at + 8)?,
            device_offset: le_u64(&raw, at + 16)?,
        };
        let end = e.file_offset.checked_add(e.length);
        let after_previous = out.last().is_none_or(|p| p.file_offset + p.length <= e.file_offset);
        if e.length == 0 || end.is_none() || !after_previous {
            return Err(Error::corrupted(format!("extent {i} ({e:?}) is empty, overflows or overlaps")));
        }
        out.push(e);
    }
    Ok(out)
}

/// The entries of a directory: (inode, name).
pub fn read_dir(device: &Device, inode: &Inode) -> Result<Vec<(u32, Vec<u8>)>> {
    let count = checked_count(inode)?;
    let len = usize::try_from(inode.size)
        .ok()
        .filter(|&l| l <= 64 << 20)
        .ok_or_else(|| Error::corrupted(format!("directory of {} bytes", inode.size)))?;
    let raw = device.read(inode.payload, len)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut at = 0usize;
    for _ in 0..count {
        let ino = le_u32(&raw, at)?;
        let name_len = usize::from(le_u16(&raw, at + 4)?);
        let name = slice(&raw, at + 8, name_len)?;
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            return Err(Error::corrupted(format!("entry at byte {at} has an invalid name")));
        }
        out.push((ino, name.to_vec()));
        at += 8 + name_len;
    }
    Ok(out)
}
