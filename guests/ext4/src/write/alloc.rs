//! Block and inode allocation: bitmaps, group descriptors and the
//! superblock's free counts, each written with its checksum before the call
//! returns.
//!
//! As the kernel does (`ext4_init_block_bitmap`, `ext4_new_inode`), a group
//! still marked BLOCK_UNINIT gets its block bitmap computed (its own
//! superblock backup, descriptor blocks, bitmaps and inode table, and the
//! bits past the group's end) when first used, and an INODE_UNINIT group
//! starts from an empty inode bitmap and a raised `bg_itable_unused`
//! boundary. The superblock's free counts are kept exact on every change
//! (the kernel updates them lazily; e2fsck compares them), and the statfs
//! counters the guest caches follow.
//!
//! The reserved blocks (`s_r_blocks_count`) and the kernel's reserve for
//! extent-tree growth (`ext4_calculate_resv_clusters`) are kept back from
//! every allocation: the host passes no uid yet, so nobody gets them
//! (root and `s_def_resuid` could under the kernel).

use fshost_sdk::bytes::{le_u16, le_u32};
use fshost_sdk::{Error, ErrorCode, Result, ResultExt};

use crate::csum::crc32c;
use crate::features::{incompat, ro_compat};
use crate::fs::Ext4;
use crate::superblock::{PRIMARY_OFFSET, SUPERBLOCK_SIZE, Superblock};
use crate::volume::Volume;
use crate::{group, statfs};

/// `bg_flags` bits.
const INODE_UNINIT: u16 = 0x1;
const BLOCK_UNINIT: u16 = 0x2;
/// Longest run one allocation returns (an initialised extent's limit).
pub(super) const MAX_RUN: u64 = 32768;

/// Whether descriptors carry checksums and the UNINIT flags mean anything
/// (`ext4_has_group_desc_csum`).
fn has_group_desc_csum(sb: &Superblock) -> bool {
    sb.features.ro_compat(ro_compat::METADATA_CSUM) || sb.features.ro_compat(ro_compat::GDT_CSUM)
}

fn metadata_csum(sb: &Superblock) -> bool {
    sb.features.ro_compat(ro_compat::METADATA_CSUM)
}

/// One group descriptor being changed, as raw bytes.
struct Desc {
    group: u32,
    offset: u64,
    raw: Vec<u8>,
}

impl Desc {
    fn load(vol: &Volume, group: u32) -> Result<Self> {
        let offset = group::location(vol, group)?;
        let raw = vol.disk.read(offset, usize::from(vol.sb.desc_size))?;
        Ok(Desc { group, offset, raw })
    }
    fn big(&self) -> bool {
        self.raw.len() >= 64
    }
    fn u16_at(&self, at: usize) -> u64 {
        u64::from(le_u16(&self.raw, at).unwrap_or(0))
    }
    fn u32_at(&self, at: usize) -> u64 {
        u64::from(le_u32(&self.raw, at).unwrap_or(0))
    }
    fn put16(&mut self, at: usize, v: u16) {
        if let Some(d) = self.raw.get_mut(at..at + 2) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    /// A 32-bit field split lo16 at `lo`, hi16 at `hi` (64-byte descriptors).
    fn split16(&self, lo: usize, hi: usize) -> u64 {
        self.u16_at(lo) | if self.big() { self.u16_at(hi) << 16 } else { 0 }
    }
    fn set_split16(&mut self, lo: usize, hi: usize, v: u64) {
        self.put16(lo, v as u16);
        if self.big() {
            self.put16(hi, (v >> 16) as u16);
        }
    }
    /// A block number split lo32 at `lo`, hi32 at `hi`.
    fn block(&self, lo: usize, hi: usize) -> u64 {
        self.u32_at(lo) | if self.big() { self.u32_at(hi) << 32 } else { 0 }
    }
    fn block_bitmap(&self) -> u64 {
        self.block(0x0, 0x20)
    }
    fn inode_bitmap(&self) -> u64 {
        self.block(0x4, 0x24)
    }
    fn inode_table(&self) -> u64 {
        self.block(0x8, 0x28)
    }
    fn free_blocks(&self) -> u64 {
        self.split16(0xC, 0x2C)
    }
    fn set_free_blocks(&mut self, v: u64) {
        self.set_split16(0xC, 0x2C, v)
    }
    fn free_inodes(&self) -> u64 {
        self.split16(0xE, 0x2E)
    }
    fn set_free_inodes(&mut self, v: u64) {
        self.set_split16(0xE, 0x2E, v)
    }
    fn used_dirs(&self) -> u64 {
        self.split16(0x10, 0x30)
    }
    fn set_used_dirs(&mut self, v: u64) {
        self.set_split16(0x10, 0x30, v)
    }
    fn flags(&self) -> u16 {
        self.u16_at(0x12) as u16
    }
    fn set_flags(&mut self, f: u16) {
        self.put16(0x12, f)
    }
    fn itable_unused(&self) -> u64 {
        self.split16(0x1C, 0x32)
    }
    fn set_itable_unused(&mut self, v: u64) {
        self.set_split16(0x1C, 0x32, v)
    }
    fn block_bitmap_csum(&self) -> u32 {
        self.split16(0x18, 0x38) as u32
    }
    fn inode_bitmap_csum(&self) -> u32 {
        self.split16(0x1A, 0x3A) as u32
    }
    fn set_block_bitmap_csum(&mut self, c: u32) {
        self.set_split16(0x18, 0x38, u64::from(c))
    }
    fn set_inode_bitmap_csum(&mut self, c: u32) {
        self.set_split16(0x1A, 0x3A, u64::from(c))
    }

    /// Checksum and write the descriptor (`ext4_group_desc_csum_set`).
    fn store(&mut self, vol: &Volume) -> Result<()> {
        if has_group_desc_csum(&vol.sb) {
            let c = group::checksum(vol, self.group, &self.raw)?;
            self.put16(0x1E, c);
        }
        vol.disk.write(self.offset, &self.raw)
    }
}

/// Read the primary superblock, change it with `f`, checksum, write, and
/// keep the parsed copy in step.
pub(super) fn update_sb(fs: &mut Ext4, f: impl FnOnce(&mut [u8])) -> Result<()> {
    let mut buf = fs.vol.disk.read(PRIMARY_OFFSET, SUPERBLOCK_SIZE)?;
    f(&mut buf);
    if metadata_csum(&fs.vol.sb) {
        let c = crc32c(!0, &buf[..0x3FC]);
        buf[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
    }
    fs.vol.disk.write(PRIMARY_OFFSET, &buf)?;
    let size = fs.vol.disk.device().size();
    fs.vol.sb = Superblock::parse(&buf, PRIMARY_OFFSET, size, false).context("superblock just written")?;
    Ok(())
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Change the superblock's free block count by `delta` (and the cached
/// statfs counters).
fn sb_free_blocks(fs: &mut Ext4, delta: i64) -> Result<()> {
    let now = fs.vol.sb.free_blocks_count;
    let new = now
        .checked_add_signed(delta)
        .ok_or_else(|| Error::corrupted(format!("superblock free blocks {now} cannot change by {delta}")))?;
    let bit64 = fs.vol.sb.features.incompat(incompat::BIT64);
    update_sb(fs, |b| {
        put_u32(b, 0xC, new as u32);
        if bit64 {
            put_u32(b, 0x158, (new >> 32) as u32);
        }
    })?;
    if let Some(c) = fs.counts.as_mut() {
        c.free_blocks = c.free_blocks.saturating_add_signed(delta);
        c.available_blocks = c.available_blocks.saturating_add_signed(delta);
    }
    Ok(())
}

fn sb_free_inodes(fs: &mut Ext4, delta: i64) -> Result<()> {
    let now = u64::from(fs.vol.sb.free_inodes_count);
    let new = now
        .checked_add_signed(delta)
        .filter(|&n| n <= u64::from(fs.vol.sb.inodes_count))
        .ok_or_else(|| Error::corrupted(format!("superblock free inodes {now} cannot change by {delta}")))?;
    update_sb(fs, |b| put_u32(b, 0x10, new as u32))?;
    if let Some(c) = fs.counts.as_mut() {
        c.free_inodes = c.free_inodes.saturating_add_signed(delta);
    }
    Ok(())
}

/// Set the superblock's free block and inode counts to the sums of the
/// group descriptors, as the kernel's counters start at mount
/// (`ext4_count_free_clusters`): the superblock copy is only updated
/// lazily, and a crash leaves it stale.
pub(super) fn sync_sb_counts(fs: &mut Ext4) -> Result<()> {
    let (mut blocks, mut inodes) = (0u64, 0u64);
    for g in 0..fs.vol.sb.group_count {
        let d = group::read(&fs.vol, g)?;
        blocks = blocks.saturating_add(d.free_clusters);
        inodes = inodes.saturating_add(d.free_inodes);
    }
    let sb = &fs.vol.sb;
    if blocks > sb.blocks_count || inodes > u64::from(sb.inodes_count) {
        return Err(Error::corrupted(format!("descriptors count {blocks} free blocks and {inodes} free inodes")));
    }
    if blocks == sb.free_blocks_count && inodes == u64::from(sb.free_inodes_count) {
        return Ok(());
    }
    let bit64 = sb.features.incompat(incompat::BIT64);
    update_sb(fs, |b| {
        put_u32(b, 0xC, blocks as u32);
        if bit64 {
            put_u32(b, 0x158, (blocks >> 32) as u32);
        }
        put_u32(b, 0x10, inodes as u32);
    })
}

/// Blocks any allocation may still take: free minus the reserves.
pub(super) fn available_blocks(sb: &Superblock) -> u64 {
    let resv = if sb.features.incompat(incompat::EXTENTS) { (sb.blocks_count / 50).min(4096) } else { 0 };
    sb.free_blocks_count.saturating_sub(sb.r_blocks_count).saturating_sub(resv)
}

/// First block of group `g`.
fn group_first(sb: &Superblock, g: u32) -> u64 {
    u64::from(sb.first_data_block) + u64::from(g) * u64::from(sb.blocks_per_group)
}

/// Blocks in group `g` (the last one may be short).
fn group_blocks(sb: &Superblock, g: u32) -> u64 {
    let first = group_first(sb, g);
    sb.blocks_count.saturating_sub(first).min(u64::from(sb.blocks_per_group))
}

/// `ext4_num_base_meta_blocks`: the superblock backup and descriptor
/// blocks (reserved ones included) at the start of group `g`.
fn base_meta_blocks(vol: &Volume, g: u32) -> u64 {
    let sb = &vol.sb;
    let has_super = u64::from(sb.group_has_super(g));
    let per_block = (sb.block_size / u32::from(sb.desc_size)).max(1);
    let meta_bg = sb.features.incompat(incompat::META_BG);
    if !meta_bg || g / per_block < sb.first_meta_bg {
        if has_super == 0 {
            return 0;
        }
        has_super + statfs::num_gdb(vol, g) + u64::from(sb.reserved_gdt_blocks)
    } else {
        has_super + statfs::num_gdb(vol, g)
    }
}

fn test_bit(map: &[u8], bit: u64) -> bool {
    map.get((bit / 8) as usize).is_some_and(|b| b & (1 << (bit % 8)) != 0)
}

fn set_bit(map: &mut [u8], bit: u64, on: bool) {
    if let Some(b) = map.get_mut((bit / 8) as usize) {
        if on {
            *b |= 1 << (bit % 8);
        } else {
            *b &= !(1 << (bit % 8));
        }
    }
}

/// The first clear bit in `[from, to)`.
fn find_clear(map: &[u8], from: u64, to: u64) -> Option<u64> {
    let mut bit = from;
    while bit < to {
        if bit.is_multiple_of(8) && map.get((bit / 8) as usize) == Some(&0xFF) {
            bit += 8;
            continue;
        }
        if !test_bit(map, bit) {
            return Some(bit);
        }
        bit += 1;
    }
    None
}

/// The block bitmap a BLOCK_UNINIT group has (`ext4_init_block_bitmap`).
fn init_block_bitmap(vol: &Volume, desc: &Desc) -> Vec<u8> {
    let sb = &vol.sb;
    let g = desc.group;
    let bs = vol.bs();
    let mut map = vec![0u8; bs as usize];
    for bit in 0..base_meta_blocks(vol, g) {
        set_bit(&mut map, bit, true);
    }
    let first = group_first(sb, g);
    let n = group_blocks(sb, g);
    let itb = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(bs);
    let mut own = vec![desc.block_bitmap(), desc.inode_bitmap()];
    own.extend((0..itb).map(|i| desc.inode_table() + i));
    for b in own {
        if b >= first && b < first + n {
            set_bit(&mut map, b - first, true);
        }
    }
    for bit in n..bs * 8 {
        set_bit(&mut map, bit, true);
    }
    map
}

/// The block bitmap of `desc`'s group, checked (computed when the group is
/// BLOCK_UNINIT); true when it was computed.
fn load_block_bitmap(vol: &Volume, desc: &Desc) -> Result<(Vec<u8>, bool)> {
    let sb = &vol.sb;
    if has_group_desc_csum(sb) && desc.flags() & BLOCK_UNINIT != 0 {
        return Ok((init_block_bitmap(vol, desc), true));
    }
    let at = desc.block_bitmap();
    if !sb.blocks_valid(at, 1) {
        return Err(Error::corrupted(format!("group {}: block bitmap {at} outside the filesystem", desc.group)));
    }
    let map = vol.disk.read_block(at)?;
    if metadata_csum(sb) {
        let c = bitmap_csum(vol, &map, u64::from(sb.blocks_per_group / sb.cluster_ratio.max(1) as u32) / 8);
        let stored = desc.block_bitmap_csum();
        let c = if desc.big() { c } else { c & 0xFFFF };
        if c != stored {
            return Err(Error::corrupted(format!(
                "group {}: block bitmap checksum {stored:#x} does not match computed {c:#x}",
                desc.group
            )));
        }
    }
    Ok((map, false))
}

fn bitmap_csum(vol: &Volume, map: &[u8], bytes: u64) -> u32 {
    crc32c(vol.csum.seed, map.get(..bytes as usize).unwrap_or(map))
}

/// Write the block bitmap of `desc`'s group and set its checksum in `desc`.
fn store_block_bitmap(vol: &Volume, desc: &mut Desc, map: &[u8]) -> Result<()> {
    let sb = &vol.sb;
    let at = desc.block_bitmap();
    if !sb.blocks_valid(at, 1) {
        return Err(Error::corrupted(format!("group {}: block bitmap {at} outside the filesystem", desc.group)));
    }
    vol.disk.write(at * vol.bs(), map)?;
    if metadata_csum(sb) {
        desc.set_block_bitmap_csum(bitmap_csum(vol, map, u64::from(sb.blocks_per_group) / 8));
    }
    Ok(())
}

fn load_inode_bitmap(vol: &Volume, desc: &Desc) -> Result<Vec<u8>> {
    let sb = &vol.sb;
    let ipg = u64::from(sb.inodes_per_group);
    if has_group_desc_csum(sb) && desc.flags() & INODE_UNINIT != 0 {
        let mut map = vec![0u8; vol.bs() as usize];
        for bit in ipg..vol.bs() * 8 {
            set_bit(&mut map, bit, true);
        }
        return Ok(map);
    }
    let at = desc.inode_bitmap();
    if !sb.blocks_valid(at, 1) {
        return Err(Error::corrupted(format!("group {}: inode bitmap {at} outside the filesystem", desc.group)));
    }
    let map = vol.disk.read_block(at)?;
    if metadata_csum(sb) {
        let c = bitmap_csum(vol, &map, ipg / 8);
        let c = if desc.big() { c } else { c & 0xFFFF };
        let stored = desc.inode_bitmap_csum();
        if c != stored {
            return Err(Error::corrupted(format!(
                "group {}: inode bitmap checksum {stored:#x} does not match computed {c:#x}",
                desc.group
            )));
        }
    }
    Ok(map)
}

fn store_inode_bitmap(vol: &Volume, desc: &mut Desc, map: &[u8]) -> Result<()> {
    let sb = &vol.sb;
    let at = desc.inode_bitmap();
    if !sb.blocks_valid(at, 1) {
        return Err(Error::corrupted(format!("group {}: inode bitmap {at} outside the filesystem", desc.group)));
    }
    vol.disk.write(at * vol.bs(), map)?;
    if metadata_csum(sb) {
        desc.set_inode_bitmap_csum(bitmap_csum(vol, map, u64::from(sb.inodes_per_group) / 8));
    }
    Ok(())
}

/// The group block `b` is in.
pub(super) fn group_of_block(sb: &Superblock, b: u64) -> u32 {
    let g = b.saturating_sub(u64::from(sb.first_data_block)) / u64::from(sb.blocks_per_group);
    u32::try_from(g).unwrap_or(u32::MAX).min(sb.group_count.saturating_sub(1))
}

/// The first block of the group holding inode `ino`: the goal for a file
/// with no blocks yet.
pub(super) fn inode_goal(sb: &Superblock, ino: u32) -> u64 {
    let g = ino.saturating_sub(1) / sb.inodes_per_group.max(1);
    group_first(sb, g.min(sb.group_count.saturating_sub(1)))
}

/// Allocate a run of up to `max` free blocks (at least one), as close after
/// `goal` as possible. `NoSpace` when none is left outside the reserves.
pub(super) fn alloc_blocks(fs: &mut Ext4, goal: u64, max: u64) -> Result<(u64, u64)> {
    let want = max.min(available_blocks(&fs.vol.sb)).min(MAX_RUN);
    if want == 0 {
        return Err(Error::new(ErrorCode::NoSpace, "ext4: no free blocks left (reserved blocks kept back)"));
    }
    let count = fs.vol.sb.group_count;
    let goal = goal.clamp(u64::from(fs.vol.sb.first_data_block), fs.vol.sb.blocks_count.saturating_sub(1));
    let start = group_of_block(&fs.vol.sb, goal);
    let goal_bit = goal - group_first(&fs.vol.sb, start);
    for i in 0..=count {
        let g = (start + i % count.max(1)) % count;
        let mut desc = Desc::load(&fs.vol, g)?;
        if desc.free_blocks() == 0 {
            continue;
        }
        let nbits = group_blocks(&fs.vol.sb, g);
        let (from, to) = match i {
            0 => (goal_bit, nbits),
            i if i == count => (0, goal_bit.min(nbits)),
            _ => (0, nbits),
        };
        let (mut map, computed) = load_block_bitmap(&fs.vol, &desc).with_context(|| format!("group {g}"))?;
        let first = group_first(&fs.vol.sb, g);
        // Blocks the running transaction freed wait for its commit.
        let mut from = from;
        let found = loop {
            let Some(bit) = find_clear(&map, from, to) else { break None };
            if let Some(end) = freed_until(fs, first + bit) {
                from = end - first;
                continue;
            }
            let mut len = 1;
            while len < want
                && bit + len < nbits
                && !test_bit(&map, bit + len)
                && freed_until(fs, first + bit + len).is_none()
            {
                len += 1;
            }
            break Some((bit, len));
        };
        let Some((bit, len)) = found else { continue };
        check_not_metadata(&fs.vol, &desc, first + bit, len)?;
        if len > desc.free_blocks() {
            return Err(Error::corrupted(format!(
                "group {g}: bitmap has {len} free blocks at {bit}, descriptor counts {}",
                desc.free_blocks()
            )));
        }
        for b in bit..bit + len {
            set_bit(&mut map, b, true);
        }
        if computed {
            desc.set_flags(desc.flags() & !BLOCK_UNINIT);
        }
        store_block_bitmap(&fs.vol, &mut desc, &map)?;
        desc.set_free_blocks(desc.free_blocks() - len);
        desc.store(&fs.vol)?;
        sb_free_blocks(fs, -(len as i64))?;
        return Ok((first + bit, len));
    }
    Err(Error::new(ErrorCode::NoSpace, "ext4: no free block found in any group"))
}

/// Refuse to hand out the group's own superblock copy, descriptors,
/// bitmaps or inode table, whatever the bitmap says.
fn check_not_metadata(vol: &Volume, desc: &Desc, pblk: u64, len: u64) -> Result<()> {
    let sb = &vol.sb;
    let first = group_first(sb, desc.group);
    let itb = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(vol.bs());
    let zones = [
        (first, base_meta_blocks(vol, desc.group)),
        (desc.block_bitmap(), 1),
        (desc.inode_bitmap(), 1),
        (desc.inode_table(), itb),
    ];
    for (z, zlen) in zones {
        if zlen > 0 && pblk < z + zlen && z < pblk + len {
            return Err(Error::corrupted(format!(
                "group {}: the block bitmap marks metadata blocks {z}+{zlen} free",
                desc.group
            )));
        }
    }
    Ok(())
}

/// Free blocks `pblk..pblk+len` (each must be in use).
pub(super) fn free_blocks(fs: &mut Ext4, pblk: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    if !fs.vol.sb.blocks_valid(pblk, len) {
        return Err(Error::corrupted(format!("freeing blocks {pblk}+{len} outside the filesystem")));
    }
    let mut at = pblk;
    let end = pblk + len;
    while at < end {
        let g = group_of_block(&fs.vol.sb, at);
        let first = group_first(&fs.vol.sb, g);
        let stop = end.min(first + group_blocks(&fs.vol.sb, g));
        let mut desc = Desc::load(&fs.vol, g)?;
        let (mut map, computed) = load_block_bitmap(&fs.vol, &desc).with_context(|| format!("group {g}"))?;
        if computed {
            return Err(Error::corrupted(format!("freeing blocks {at}..{stop} of never-used group {g}")));
        }
        if let Some(b) = (at..stop).find(|&b| !test_bit(&map, b - first)) {
            return Err(Error::corrupted(format!("freeing block {b}, which is already free")));
        }
        for b in at..stop {
            set_bit(&mut map, b - first, false);
        }
        let n = stop - at;
        store_block_bitmap(&fs.vol, &mut desc, &map)?;
        desc.set_free_blocks(desc.free_blocks() + n);
        desc.store(&fs.vol)?;
        sb_free_blocks(fs, n as i64)?;
        at = stop;
    }
    if fs.vol.disk.journaling()
        && let Some(w) = fs.write.as_mut()
    {
        w.freed.insert(pblk, end);
        w.freed_blocks += len;
    }
    Ok(())
}

/// When block `b` was freed by the running transaction: the end of the
/// freed range holding it (write/journal.rs: not reused before the commit).
fn freed_until(fs: &Ext4, b: u64) -> Option<u64> {
    let freed = &fs.write.as_ref()?.freed;
    freed.range(..=b).next_back().map(|(_, &end)| end).filter(|&end| b < end)
}

/// Pick the group for a new inode (a simplified `find_group_orlov` /
/// `find_group_other`).
fn inode_group(fs: &Ext4, parent: u32, is_dir: bool) -> Result<u32> {
    let sb = &fs.vol.sb;
    let count = sb.group_count;
    let pg = (parent.saturating_sub(1) / sb.inodes_per_group).min(count - 1);
    let descs: Vec<group::GroupDesc> = (0..count).map(|g| group::read(&fs.vol, g)).collect::<Result<_>>()?;
    let free = |g: u32| descs[g as usize].free_inodes;
    if is_dir {
        let avg_inodes = u64::from(sb.free_inodes_count) / u64::from(count);
        let avg_blocks = sb.free_blocks_count / u64::from(count);
        // Top-level directories spread (Orlov); others stay near.
        let start = if parent == crate::inode::ROOT_INO { parent.wrapping_mul(0x9E37_79B9) % count } else { pg };
        let start =
            if parent == crate::inode::ROOT_INO { (start + sb.free_inodes_count % count) % count } else { start };
        for i in 0..count {
            let g = (start + i) % count;
            let d = &descs[g as usize];
            if d.free_inodes > 0 && d.free_inodes >= avg_inodes && d.free_clusters >= avg_blocks {
                return Ok(g);
            }
        }
    } else {
        for i in 0..count {
            let g = (pg + i) % count;
            if free(g) > 0 && descs[g as usize].free_clusters > 0 {
                return Ok(g);
            }
        }
    }
    (0..count)
        .map(|i| (pg + i) % count)
        .find(|&g| free(g) > 0)
        .ok_or_else(|| Error::new(ErrorCode::NoSpace, "ext4: no free inodes"))
}

pub(super) fn alloc_inode(fs: &mut Ext4, parent: u32, is_dir: bool) -> Result<u32> {
    if fs.vol.sb.free_inodes_count == 0 {
        return Err(Error::new(ErrorCode::NoSpace, "ext4: no free inodes"));
    }
    let count = fs.vol.sb.group_count;
    let first = inode_group(fs, parent, is_dir)?;
    let ipg = u64::from(fs.vol.sb.inodes_per_group);
    for i in 0..count {
        let g = (first + i) % count;
        let mut desc = Desc::load(&fs.vol, g)?;
        if desc.free_inodes() == 0 {
            continue;
        }
        let mut map = load_inode_bitmap(&fs.vol, &desc).with_context(|| format!("group {g}"))?;
        let from = if g == 0 { u64::from(fs.vol.sb.first_ino.saturating_sub(1)) } else { 0 };
        let Some(bit) = find_clear(&map, from, ipg) else { continue };
        let ino = u64::from(g) * ipg + bit + 1;
        let ino = u32::try_from(ino).map_err(|_| Error::corrupted(format!("inode number {ino} overflows")))?;
        let gdt_csum = has_group_desc_csum(&fs.vol.sb);
        // ext4_new_inode: a group whose block bitmap was never written gets it now.
        if gdt_csum && desc.flags() & BLOCK_UNINIT != 0 {
            let (bmap, _) = load_block_bitmap(&fs.vol, &desc)?;
            store_block_bitmap(&fs.vol, &mut desc, &bmap)?;
            desc.set_flags(desc.flags() & !BLOCK_UNINIT);
        }
        set_bit(&mut map, bit, true);
        let was_uninit = desc.flags() & INODE_UNINIT != 0;
        store_inode_bitmap(&fs.vol, &mut desc, &map)?;
        desc.set_free_inodes(desc.free_inodes() - 1);
        if is_dir {
            desc.set_used_dirs(desc.used_dirs() + 1);
        }
        if gdt_csum {
            let used = if was_uninit { 0 } else { ipg.saturating_sub(desc.itable_unused()) };
            if bit + 1 > used {
                desc.set_itable_unused(ipg - (bit + 1));
            }
            desc.set_flags(desc.flags() & !INODE_UNINIT);
        }
        desc.store(&fs.vol)?;
        sb_free_inodes(fs, -1)?;
        fs.inodes.remove(&ino);
        return Ok(ino);
    }
    Err(Error::new(ErrorCode::NoSpace, "ext4: no free inodes (descriptors disagree with bitmaps)"))
}

pub(super) fn free_inode(fs: &mut Ext4, ino: u32, is_dir: bool) -> Result<()> {
    let sb = &fs.vol.sb;
    if ino < sb.first_ino || ino > sb.inodes_count {
        return Err(Error::invalid(format!("freeing reserved or out-of-range inode {ino}")));
    }
    let g = (ino - 1) / sb.inodes_per_group;
    let bit = u64::from((ino - 1) % sb.inodes_per_group);
    let mut desc = Desc::load(&fs.vol, g)?;
    if has_group_desc_csum(sb) && desc.flags() & INODE_UNINIT != 0 {
        return Err(Error::corrupted(format!("freeing inode {ino} of never-used group {g}")));
    }
    let mut map = load_inode_bitmap(&fs.vol, &desc).with_context(|| format!("group {g}"))?;
    if !test_bit(&map, bit) {
        return Err(Error::corrupted(format!("freeing inode {ino}, which is already free")));
    }
    set_bit(&mut map, bit, false);
    store_inode_bitmap(&fs.vol, &mut desc, &map)?;
    desc.set_free_inodes(desc.free_inodes() + 1);
    if is_dir {
        desc.set_used_dirs(desc.used_dirs().saturating_sub(1));
    }
    desc.store(&fs.vol)?;
    sb_free_inodes(fs, 1)?;
    fs.inodes.remove(&ino);
    fs.names.remove(&ino);
    Ok(())
}
