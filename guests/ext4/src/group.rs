//! Block group descriptors: where each group's inode table is.
//!
//! Descriptors are 32 bytes, or `s_desc_size` (64+) with the 64bit feature.
//! They follow the superblock in one table, except that with meta_bg the
//! table is cut into one-block pieces stored at the start of each meta group
//! (`descriptor_loc` in the kernel). Their checksums (crc16 for gdt_csum,
//! crc32c for metadata_csum) are checked all at once at mount, as the
//! kernel's `ext4_check_descriptors` does ([`bad_checksums`]); like the
//! kernel on a read-only mount, a bad one is reported and tolerated. A
//! descriptor is then read when an inode of its group is first needed, and
//! its inode table checked to lie inside the filesystem.

use fshost_sdk::bytes::{le_u16, le_u32, slice};
use fshost_sdk::{Error, Result, ResultExt};

use crate::csum::{crc16, crc32c};
use crate::features::{incompat, ro_compat};
use crate::volume::Volume;

/// Offset of `bg_checksum` in a descriptor.
const CHECKSUM_OFFSET: usize = 0x1E;

/// What this guest needs from one group descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDesc {
    /// First block of the group's inode table.
    pub inode_table: u64,
    /// The group's block bitmap block.
    pub block_bitmap: u64,
    /// The group's inode bitmap block.
    pub inode_bitmap: u64,
    /// Free clusters in the group.
    pub free_clusters: u64,
    /// Free inodes in the group.
    pub free_inodes: u64,
    /// `bg_itable_unused`: inodes at the end of the table never used
    /// (meaningful only when descriptors carry checksums).
    pub itable_unused: u64,
}

/// The filesystem block holding descriptor block `nr` of the table.
fn descriptor_block(vol: &Volume, nr: u64) -> Result<u64> {
    let sb = &vol.sb;
    if !sb.features.incompat(incompat::META_BG) || nr < u64::from(sb.first_meta_bg) {
        return Ok(sb.sb_block + nr + 1);
    }
    let desc_per_block = u64::from(sb.block_size / u32::from(sb.desc_size));
    let group = desc_per_block
        .checked_mul(nr)
        .and_then(|g| u32::try_from(g).ok())
        .ok_or_else(|| Error::corrupted(format!("descriptor block {nr} out of range")))?;
    let mut has_super = u64::from(sb.group_has_super(group));
    if sb.block_size == 1024 && nr == 0 && sb.first_data_block == 0 {
        has_super += 1;
    }
    let first = u64::from(group) * u64::from(sb.blocks_per_group) + u64::from(sb.first_data_block);
    Ok(first + has_super)
}

/// Read and check the descriptor of `group`.
pub fn read(vol: &Volume, group: u32) -> Result<GroupDesc> {
    read_inner(vol, group).with_context(|| format!("group descriptor {group}"))
}

/// The byte offset of the (primary) descriptor of `group`.
pub fn location(vol: &Volume, group: u32) -> Result<u64> {
    let sb = &vol.sb;
    if group >= sb.group_count {
        return Err(Error::corrupted(format!("group out of range (groups: {})", sb.group_count)));
    }
    let desc_size = u64::from(sb.desc_size);
    let desc_per_block = vol.bs() / desc_size;
    let block = descriptor_block(vol, u64::from(group) / desc_per_block)?;
    block
        .checked_mul(vol.bs())
        .and_then(|o| o.checked_add(u64::from(group) % desc_per_block * desc_size))
        .ok_or_else(|| Error::corrupted(format!("descriptor block {block} out of range")))
}

/// The raw bytes of the descriptor of `group`.
pub fn raw(vol: &Volume, group: u32) -> Result<Vec<u8>> {
    vol.disk.read(location(vol, group)?, usize::from(vol.sb.desc_size))
}

fn read_inner(vol: &Volume, group: u32) -> Result<GroupDesc> {
    let sb = &vol.sb;
    let raw = raw(vol, group)?;
    // Verified here only when mount did not check them all (the fuzz
    // fixture's volumes); a mount checks once and clears `group_desc`.
    if vol.csum.group_desc {
        verify(vol, group, &raw)?;
    }
    let big = sb.desc_size >= 64;
    let hi = if big { u64::from(le_u32(&raw, 0x28)?) } else { 0 };
    let inode_table = u64::from(le_u32(&raw, 0x8)?) | hi << 32;
    let table_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(vol.bs());
    if !sb.blocks_valid(inode_table, table_blocks) {
        return Err(Error::corrupted(format!(
            "inode table at block {inode_table} ({table_blocks} blocks) outside the filesystem"
        )));
    }
    let wide = |lo: u64, hi_off: usize, shift: u32| -> Result<u64> {
        Ok(if big { lo | u64::from(le_u16(&raw, hi_off)?) << shift } else { lo })
    };
    Ok(GroupDesc {
        inode_table,
        block_bitmap: u64::from(le_u32(&raw, 0x0)?) | hi_at(&raw, big, 0x20)? << 32,
        inode_bitmap: u64::from(le_u32(&raw, 0x4)?) | hi_at(&raw, big, 0x24)? << 32,
        free_clusters: wide(u64::from(le_u16(&raw, 0xC)?), 0x2C, 16)?,
        free_inodes: wide(u64::from(le_u16(&raw, 0xE)?), 0x2E, 16)?,
        itable_unused: wide(u64::from(le_u16(&raw, 0x1C)?), 0x32, 16)?,
    })
}

/// The high 32 bits of a 64-bit descriptor field, 0 for 32-byte descriptors.
fn hi_at(raw: &[u8], big: bool, offset: usize) -> Result<u64> {
    if big { Ok(u64::from(le_u32(raw, offset)?)) } else { Ok(0) }
}

/// The groups whose descriptor checksum does not match, each with why, as
/// `ext4_check_descriptors` finds them at mount (the kernel then refuses a
/// read-write mount and goes on with a read-only one). Fails only when a
/// descriptor cannot be read at all.
pub fn bad_checksums(vol: &Volume) -> Result<Vec<(u32, Error)>> {
    let mut bad = Vec::new();
    if !vol.csum.group_desc {
        return Ok(bad);
    }
    for group in 0..vol.sb.group_count {
        let raw = raw(vol, group).with_context(|| format!("group descriptor {group}"))?;
        if let Err(e) = verify(vol, group, &raw) {
            bad.push((group, e));
        }
    }
    Ok(bad)
}

/// `ext4_group_desc_csum`: the checksum descriptor `raw` of `group` must
/// carry (crc32c with metadata_csum, else gdt_csum's crc16).
pub fn checksum(vol: &Volume, group: u32, raw: &[u8]) -> Result<u16> {
    let sb = &vol.sb;
    let le_group = group.to_le_bytes();
    let rest = raw.get(CHECKSUM_OFFSET + 2..).unwrap_or_default();
    Ok(if sb.features.ro_compat(ro_compat::METADATA_CSUM) {
        let c = crc32c(vol.csum.seed, &le_group);
        let c = crc32c(c, slice(raw, 0, CHECKSUM_OFFSET)?);
        let c = crc32c(c, &[0, 0]);
        (crc32c(c, rest) & 0xFFFF) as u16
    } else {
        let c = crc16(0xFFFF, &sb.uuid);
        let c = crc16(c, &le_group);
        let c = crc16(c, slice(raw, 0, CHECKSUM_OFFSET)?);
        if sb.features.incompat(incompat::BIT64) { crc16(c, rest) } else { c }
    })
}

/// `ext4_group_desc_csum_verify`.
fn verify(vol: &Volume, group: u32, raw: &[u8]) -> Result<()> {
    let stored = le_u16(raw, CHECKSUM_OFFSET)?;
    let computed = checksum(vol, group, raw)?;
    if stored != computed {
        return Err(Error::corrupted(format!("checksum {stored:#06x} does not match computed {computed:#06x}")));
    }
    Ok(())
}
