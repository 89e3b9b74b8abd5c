//! statfs as the kernel's `ext4_statfs` computes it, so `df` on an fshost
//! mount agrees with `df` on a kernel mount of the same image.
//!
//! - total blocks exclude the metadata overhead (`s_overhead_clusters`, or
//!   `ext4_calculate_overhead`: blocks before the first data block, each
//!   group's superblock backup, descriptor and reserved-descriptor blocks,
//!   bitmaps and inode table, and the internal journal);
//! - free blocks and inodes are the sums over the group descriptors (the
//!   kernel's percpu counters start from those, not from the superblock,
//!   which is only updated lazily);
//! - available blocks also keep back the reserved blocks and the kernel's
//!   reserve for delayed allocation (`ext4_calculate_resv_clusters`).

use std::collections::HashSet;

use fshost_sdk::Result;

use crate::features::{incompat, ro_compat};
use crate::group;
use crate::volume::Volume;

/// Filesystem-wide block and inode counters, in blocks and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total_blocks: u64,
    pub free_blocks: u64,
    pub available_blocks: u64,
    pub free_inodes: u64,
}

/// Compute the counters; `journal_blocks` is the internal journal's length.
pub fn counts(vol: &Volume, journal_blocks: u64) -> Result<Counts> {
    let sb = &vol.sb;
    let ratio = sb.cluster_ratio.max(1);
    let mut free_clusters = 0u64;
    let mut free_inodes = 0u64;
    let mut descs = Vec::with_capacity(sb.group_count as usize);
    for g in 0..sb.group_count {
        let d = group::read(vol, g)?;
        free_clusters = free_clusters.saturating_add(d.free_clusters);
        free_inodes = free_inodes.saturating_add(d.free_inodes);
        descs.push(d);
    }
    let overhead_clusters = if sb.overhead_clusters != 0 {
        u64::from(sb.overhead_clusters)
    } else {
        let mut o = u64::from(sb.first_data_block) / ratio;
        for g in 0..sb.group_count {
            o = o.saturating_add(group_overhead(vol, g, &descs));
        }
        o.saturating_add(journal_blocks.div_ceil(ratio))
    };
    let total_blocks = sb.blocks_count.saturating_sub(overhead_clusters.saturating_mul(ratio));
    let free_blocks = free_clusters.saturating_mul(ratio);
    let resv_clusters =
        if sb.features.incompat(incompat::EXTENTS) { ((sb.blocks_count / ratio) / 50).min(4096) } else { 0 };
    let keep = sb.r_blocks_count.saturating_add(resv_clusters.saturating_mul(ratio));
    Ok(Counts { total_blocks, free_blocks, available_blocks: free_blocks.saturating_sub(keep), free_inodes })
}

/// `ext4_bg_num_gdb`: descriptor blocks stored in group `g`.
pub fn num_gdb(vol: &Volume, g: u32) -> u64 {
    let sb = &vol.sb;
    let per_block = (sb.block_size / u32::from(sb.desc_size)).max(1);
    let meta_bg = sb.features.incompat(incompat::META_BG);
    if !meta_bg || g / per_block < sb.first_meta_bg {
        if !sb.group_has_super(g) {
            return 0;
        }
        return if meta_bg { u64::from(sb.first_meta_bg) } else { u64::from(sb.group_count.div_ceil(per_block)) };
    }
    let first = g / per_block * per_block;
    u64::from(g == first || g == first + 1 || g == first + per_block - 1)
}

/// `count_overhead`: clusters of group `g` used by filesystem metadata.
fn group_overhead(vol: &Volume, g: u32, descs: &[group::GroupDesc]) -> u64 {
    let sb = &vol.sb;
    let itb = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(vol.bs());
    let has_super = sb.group_has_super(g);
    if !sb.features.ro_compat(ro_compat::BIGALLOC) {
        let reserved = if has_super { u64::from(sb.reserved_gdt_blocks) } else { 0 };
        return u64::from(has_super) + num_gdb(vol, g) + reserved + itb + 2;
    }
    // With bigalloc, count the clusters of this group that any metadata
    // block of any group falls in (as the kernel's bitmap does).
    let ratio = sb.cluster_ratio.max(1);
    let first = u64::from(sb.first_data_block) + u64::from(g) * u64::from(sb.blocks_per_group);
    let last = first + u64::from(sb.blocks_per_group) - 1;
    let mut clusters: HashSet<u64> = HashSet::new();
    let mut count = 0u64;
    for d in descs {
        for b in [d.block_bitmap, d.inode_bitmap] {
            if (first..=last).contains(&b) {
                clusters.insert((b - first) / ratio);
                count += 1;
            }
        }
        if d.inode_table >= first && d.inode_table.saturating_add(itb) <= last {
            for b in d.inode_table..d.inode_table + itb {
                clusters.insert((b - first) / ratio);
                count += 1;
            }
        }
    }
    let mut s = 0u64;
    if has_super {
        // The kernel marks bit `s` here, a block index, not a cluster.
        clusters.insert(s);
        s += 1;
        count += 1;
    }
    let gdb = num_gdb(vol, g).min(u64::from(sb.blocks_per_group).saturating_sub(s));
    count += gdb;
    for _ in 0..gdb {
        clusters.insert(s / ratio);
        s += 1;
    }
    if count == 0 { 0 } else { clusters.len() as u64 }
}
