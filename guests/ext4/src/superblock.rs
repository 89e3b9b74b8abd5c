//! The superblock: the geometry every other structure is located by.
//!
//! It is 1024 bytes at byte 1024 of the device (or at `sb=N` KiB for a
//! backup copy). Parsing checks everything later code relies on, as the
//! kernel's `ext4_fill_super` does: magic, block and inode sizes, group
//! geometry, counts that fit the device, the checksum, and INCOMPAT features.
//! Past this boundary the numbers are trusted to be in range (sizes are
//! powers of two, group counts fit, the descriptor size is sane).

use fshost_sdk::bytes::{le_u16, le_u32, slice, u8_at};
use fshost_sdk::{Error, Result};

use crate::csum::{Checksums, crc32c};
use crate::features::{Features, compat, incompat, ro_compat};

/// Size of the on-disk superblock.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// Where the primary superblock lives, in bytes.
pub const PRIMARY_OFFSET: u64 = 1024;

const MAGIC: u16 = 0xEF53;
const GOOD_OLD_REV: u32 = 0;
const GOOD_OLD_INODE_SIZE: u16 = 128;
const GOOD_OLD_FIRST_INO: u32 = 11;
const OS_LINUX: u32 = 0;
const CHECKSUM_TYPE_CRC32C: u8 = 1;
const FLAGS_SIGNED_HASH: u32 = 0x1;
const FLAGS_UNSIGNED_HASH: u32 = 0x2;
const ENCODING_UTF8_12_1: u16 = 1;

/// The parsed, validated superblock.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub free_blocks_count: u64,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    /// Block size in bytes (1 KiB .. 64 KiB).
    pub block_size: u32,
    /// Cluster size in bytes (the block size unless bigalloc).
    pub cluster_size: u64,
    /// Blocks per cluster (1 without bigalloc).
    pub cluster_ratio: u64,
    /// `s_reserved_gdt_blocks`: descriptor blocks kept for online resize.
    pub reserved_gdt_blocks: u16,
    /// `s_overhead_clusters`, 0 when not recorded.
    pub overhead_clusters: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    /// Whether `s_creator_os` is Linux (the checksummed inode layout).
    pub creator_linux: bool,
    pub inode_size: u16,
    /// The first inode number not reserved by the filesystem.
    pub first_ino: u32,
    pub features: Features,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub journal_inum: u32,
    pub journal_dev: u32,
    pub hash_seed: [u32; 4],
    /// 3 when dx hashes treat name bytes as unsigned (added to the version).
    pub hash_unsigned: u8,
    /// `s_def_hash_version`: the hash of directories without an index.
    pub def_hash_version: u8,
    /// Group descriptor size: 32, or `s_desc_size` with 64bit.
    pub desc_size: u16,
    pub first_meta_bg: u32,
    pub backup_bgs: [u32; 2],
    pub group_count: u32,
    /// The filesystem block holding this superblock (1 or 0 for the primary).
    pub sb_block: u64,
    /// The checksum seed `s_csum_seed` (whether or not checksums are on).
    pub csum_seed: u32,
    /// `s_state`: VALID_FS (1, cleanly unmounted), ERROR_FS (2).
    pub state: u16,
    /// `s_last_orphan`: the head of the orphan inode list, 0 if empty.
    pub last_orphan: u32,
    /// `s_want_extra_isize`: the `i_extra_isize` new inodes should get.
    pub want_extra_isize: u16,
    /// `s_rev_level` (0: GOOD_OLD, 128-byte inodes, no feature words in use).
    pub rev_level: u32,
}

impl Superblock {
    /// Parse the superblock read from byte `offset` of a `device_size`-byte
    /// device, verifying its checksum when `verify_csum` and metadata_csum.
    pub fn parse(buf: &[u8], offset: u64, device_size: u64, verify_csum: bool) -> Result<Self> {
        Self::parse_inner(buf, offset, device_size, verify_csum).map_err(|e| e.context("superblock"))
    }

    fn parse_inner(buf: &[u8], offset: u64, device_size: u64, verify_csum: bool) -> Result<Self> {
        let magic = le_u16(buf, 0x38)?;
        if magic != MAGIC {
            return Err(Error::corrupted(format!("bad magic {magic:#06x}, expected {MAGIC:#06x} (not ext2/3/4)")));
        }
        let features =
            Features { compat: le_u32(buf, 0x5C)?, incompat: le_u32(buf, 0x60)?, ro_compat: le_u32(buf, 0x64)? };
        let rev_level = le_u32(buf, 0x4C)?;

        let log_block_size = le_u32(buf, 0x18)?;
        if log_block_size > 6 {
            return Err(Error::corrupted(format!("invalid log block size {log_block_size}")));
        }
        let block_size = 1024u32 << log_block_size;
        let bigalloc = features.ro_compat(ro_compat::BIGALLOC);
        let log_cluster_size = if bigalloc { le_u32(buf, 0x1C)? } else { log_block_size };
        if log_cluster_size < log_block_size || log_cluster_size > 30 {
            return Err(Error::corrupted(format!(
                "cluster size log {log_cluster_size} invalid for block size log {log_block_size}"
            )));
        }
        let cluster_size = 1024u64 << log_cluster_size;
        let cluster_ratio = 1u64 << (log_cluster_size - log_block_size);

        let bit64 = features.incompat(incompat::BIT64);
        let hi = |off: usize| -> Result<u64> { if bit64 { Ok(u64::from(le_u32(buf, off)?)) } else { Ok(0) } };
        let blocks_count = u64::from(le_u32(buf, 0x4)?) | hi(0x150)? << 32;
        let r_blocks_count = u64::from(le_u32(buf, 0x8)?) | hi(0x154)? << 32;
        let free_blocks_count = u64::from(le_u32(buf, 0xC)?) | hi(0x158)? << 32;
        let inodes_count = le_u32(buf, 0x0)?;
        let free_inodes_count = le_u32(buf, 0x10)?;
        let first_data_block = le_u32(buf, 0x14)?;
        let clusters_per_group = le_u32(buf, 0x24)?;
        let blocks_per_group = le_u32(buf, 0x20)?;
        let inodes_per_group = le_u32(buf, 0x28)?;

        let bits_per_block = u64::from(block_size) * 8;
        if blocks_per_group == 0 || u64::from(blocks_per_group) > bits_per_block * cluster_ratio {
            return Err(Error::corrupted(format!("invalid blocks per group {blocks_per_group}")));
        }
        if bigalloc && u64::from(clusters_per_group) * cluster_ratio != u64::from(blocks_per_group) {
            return Err(Error::corrupted(format!(
                "blocks per group {blocks_per_group} != clusters per group {clusters_per_group} * {cluster_ratio}"
            )));
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > bits_per_block {
            return Err(Error::corrupted(format!("invalid inodes per group {inodes_per_group}")));
        }
        if u64::from(first_data_block) >= blocks_count {
            return Err(Error::corrupted(format!(
                "first data block {first_data_block} beyond block count {blocks_count}"
            )));
        }
        if bigalloc && first_data_block != 0 {
            return Err(Error::corrupted("bigalloc with a first data block other than 0"));
        }
        let device_blocks = device_size / u64::from(block_size);
        if blocks_count > device_blocks {
            return Err(Error::corrupted(format!(
                "block count {blocks_count} exceeds the device's {device_blocks} blocks of {block_size} bytes"
            )));
        }

        let (inode_size, first_ino) = if rev_level == GOOD_OLD_REV {
            (GOOD_OLD_INODE_SIZE, GOOD_OLD_FIRST_INO)
        } else {
            (le_u16(buf, 0x58)?, le_u32(buf, 0x54)?)
        };
        if inode_size < GOOD_OLD_INODE_SIZE || !inode_size.is_power_of_two() || u32::from(inode_size) > block_size {
            return Err(Error::corrupted(format!("invalid inode size {inode_size}")));
        }
        if first_ino < GOOD_OLD_FIRST_INO {
            return Err(Error::corrupted(format!("invalid first inode {first_ino}")));
        }

        let desc_size = if bit64 {
            let size = le_u16(buf, 0xFE)?;
            if !(64..=1024).contains(&size) || !size.is_power_of_two() {
                return Err(Error::corrupted(format!("invalid group descriptor size {size}")));
            }
            size
        } else {
            32
        };

        let group_count = (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        let group_count =
            u32::try_from(group_count).map_err(|_| Error::corrupted(format!("group count {group_count} too large")))?;
        if u64::from(group_count) * u64::from(inodes_per_group) != u64::from(inodes_count) {
            return Err(Error::corrupted(format!(
                "inode count {inodes_count} != {group_count} groups * {inodes_per_group} inodes per group"
            )));
        }
        let first_meta_bg = le_u32(buf, 0x104)?;
        if features.incompat(incompat::META_BG) {
            let desc_per_block = block_size / u32::from(desc_size);
            let desc_blocks = group_count.div_ceil(desc_per_block);
            if first_meta_bg > desc_blocks {
                return Err(Error::corrupted(format!("first meta block group {first_meta_bg} too large")));
            }
        }

        features.check_incompat()?;

        let metadata_csum = features.ro_compat(ro_compat::METADATA_CSUM);
        if metadata_csum && u8_at(buf, 0x175)? != CHECKSUM_TYPE_CRC32C {
            return Err(Error::unsupported(format!("unknown checksum algorithm {}", u8_at(buf, 0x175)?)));
        }
        if metadata_csum && verify_csum {
            let stored = le_u32(buf, 0x3FC)?;
            let computed = crc32c(!0, slice(buf, 0, 0x3FC)?);
            if stored != computed {
                return Err(Error::corrupted(format!(
                    "checksum {stored:#010x} does not match computed {computed:#010x}"
                )));
            }
        }
        if features.incompat(incompat::CASEFOLD) {
            let encoding = le_u16(buf, 0x27C)?;
            if encoding != ENCODING_UTF8_12_1 {
                return Err(Error::unsupported(format!("unknown casefold encoding {encoding}")));
            }
        }

        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(slice(buf, 0x68, 16)?);
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(slice(buf, 0x78, 16)?);
        let csum_seed = if features.incompat(incompat::CSUM_SEED) { le_u32(buf, 0x270)? } else { crc32c(!0, &uuid) };
        let flags = le_u32(buf, 0x160)?;
        // Neither flag: the kernel picks the signedness of `char` on the
        // machine that mounts it first; on x86 and most others that is signed.
        let hash_unsigned = if flags & FLAGS_SIGNED_HASH == 0 && flags & FLAGS_UNSIGNED_HASH != 0 { 3 } else { 0 };

        Ok(Superblock {
            inodes_count,
            blocks_count,
            r_blocks_count,
            free_blocks_count,
            free_inodes_count,
            first_data_block,
            block_size,
            cluster_size,
            cluster_ratio,
            reserved_gdt_blocks: le_u16(buf, 0xCE)?,
            overhead_clusters: le_u32(buf, 0x248)?,
            blocks_per_group,
            inodes_per_group,
            creator_linux: le_u32(buf, 0x48)? == OS_LINUX,
            inode_size,
            first_ino,
            features,
            uuid,
            volume_name,
            journal_inum: le_u32(buf, 0xE0)?,
            journal_dev: le_u32(buf, 0xE4)?,
            hash_seed: [le_u32(buf, 0xEC)?, le_u32(buf, 0xF0)?, le_u32(buf, 0xF4)?, le_u32(buf, 0xF8)?],
            hash_unsigned,
            def_hash_version: u8_at(buf, 0xFC)?,
            desc_size,
            first_meta_bg,
            backup_bgs: [le_u32(buf, 0x24C)?, le_u32(buf, 0x250)?],
            group_count,
            sb_block: offset / u64::from(block_size),
            csum_seed,
            state: le_u16(buf, 0x3A)?,
            last_orphan: le_u32(buf, 0xE8)?,
            want_extra_isize: if rev_level == GOOD_OLD_REV { 0 } else { le_u16(buf, 0x15E)? },
            rev_level,
        })
    }

    /// The checksum policy for this mount (`nocsum` turns verification off).
    pub fn checksums(&self, verify: bool) -> Checksums {
        let metadata = self.features.ro_compat(ro_compat::METADATA_CSUM);
        let gdt = self.features.ro_compat(ro_compat::GDT_CSUM);
        Checksums { metadata: verify && metadata, group_desc: verify && (metadata || gdt), seed: self.csum_seed }
    }

    /// Whether group `group` holds a superblock backup (and so a GDT copy),
    /// per sparse_super / sparse_super2, as `ext4_bg_has_super`.
    pub fn group_has_super(&self, group: u32) -> bool {
        if group == 0 {
            return true;
        }
        if self.features.compat(compat::SPARSE_SUPER2) {
            return self.backup_bgs.contains(&group);
        }
        if group <= 1 || !self.features.ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if group & 1 == 0 {
            return false;
        }
        [3u32, 5, 7].iter().any(|&base| is_power_of(group, base))
    }

    /// Whether a directory record may name `ino` (`ext4_valid_inum`): the
    /// root, or a non-reserved inode in range.
    pub fn valid_inum(&self, ino: u32) -> bool {
        ino == crate::inode::ROOT_INO || (ino >= self.first_ino && ino <= self.inodes_count)
    }

    /// The label: `s_volume_name` up to the first NUL.
    pub fn label(&self) -> Vec<u8> {
        self.volume_name.iter().copied().take_while(|&b| b != 0).collect()
    }

    /// Whether `pblk..pblk+len` lies inside the filesystem's data area.
    pub fn blocks_valid(&self, pblk: u64, len: u64) -> bool {
        pblk > u64::from(self.first_data_block) && pblk.checked_add(len).is_some_and(|end| end <= self.blocks_count)
    }
}

fn is_power_of(mut n: u32, base: u32) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups_are_powers_of_3_5_7() {
        let with: Vec<u32> =
            (0..100).filter(|&g| is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)).collect();
        assert_eq!(with, vec![1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }
}
