//! Inodes: locating one in its group's inode table, checking it, and turning
//! it into what stat(2) shows.
//!
//! An inode is 128 bytes (ext2/ext3 classic) or `s_inode_size` bytes, of
//! which `128 + i_extra_isize` are fields and the rest holds in-inode extended
//! attributes. Fields past 128 exist only when `i_extra_isize` covers them
//! (`EXT4_FITS_IN_INODE`). Every field is decoded as the kernel's
//! `__ext4_iget` does: 32-bit ids from the split halves, `i_blocks` with the
//! huge_file rules, `i_size_high` for regular files (and all with largedir),
//! device numbers in the old or new encoding.

use fshost_sdk::bytes::{le_u16, le_u32, slice};
use fshost_sdk::{Attr, Error, ErrorCode, FileType, InodeFlags, Result, Timestamp, encode_rdev};

use crate::features::{incompat, ro_compat};
use crate::group;
use crate::time;
use crate::volume::Volume;

/// Inode numbers with a fixed meaning.
pub const ROOT_INO: u32 = 2;

/// The classic inode size; the extended fields start here.
const GOOD_OLD_INODE_SIZE: usize = 128;
/// Offsets of the checksum halves.
const CHECKSUM_LO: usize = 0x7C;
const CHECKSUM_HI: usize = 0x82;

/// `i_flags` bits.
pub mod flags {
    pub const SYNC: u32 = 0x8;
    pub const IMMUTABLE: u32 = 0x10;
    pub const APPEND: u32 = 0x20;
    pub const NODUMP: u32 = 0x40;
    pub const NOATIME: u32 = 0x80;
    pub const ENCRYPT: u32 = 0x800;
    pub const INDEX: u32 = 0x1000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const VERITY: u32 = 0x100000;
    pub const EA_INODE: u32 = 0x200000;
    pub const INLINE_DATA: u32 = 0x1000_0000;
    pub const CASEFOLD: u32 = 0x4000_0000;
}

/// One parsed inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    /// Space used, in 512-byte units.
    pub blocks: u64,
    pub flags: u32,
    pub generation: u32,
    /// Block of the external xattr block, 0 if none.
    pub file_acl: u64,
    /// `i_block`: extent root, block pointers, inline data or symlink target.
    pub block: [u8; 60],
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    /// The per-inode checksum seed (inode number and generation folded in).
    pub csum_seed: u32,
    /// The in-inode xattr area after `i_extra_isize` (empty if no room).
    pub xattr_area: Vec<u8>,
}

impl Inode {
    /// Whether flag bit `bit` of `i_flags` is set.
    pub fn has_flag(&self, bit: u32) -> bool {
        self.flags & bit != 0
    }

    /// The file type from `i_mode`, or `Corrupted`.
    pub fn kind(&self) -> Result<FileType> {
        FileType::from_mode(u32::from(self.mode)).ok_or_else(|| {
            Error::corrupted(format!("inode {}: mode {:#o} has no valid file type", self.ino, self.mode))
        })
    }

    /// Whether the inode is a live one (not deleted or never used).
    pub fn in_use(&self) -> bool {
        self.links != 0
    }

    /// `i_block[n]` as a little-endian u32.
    pub fn block_word(&self, n: usize) -> Result<u32> {
        le_u32(&self.block, n * 4)
    }

    /// The device number the kernel gives char/block devices: the old 16-bit
    /// encoding in `i_block[0]` when non-zero, else the new one in `i_block[1]`.
    fn rdev(&self) -> Result<u64> {
        let old = self.block_word(0)?;
        let (major, minor) = if old != 0 {
            let old = old & 0xFFFF;
            ((old >> 8) & 0xFF, old & 0xFF)
        } else {
            let new = self.block_word(1)?;
            ((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))
        };
        Ok(encode_rdev(major, minor))
    }

    /// What stat(2) shows for this inode.
    pub fn attr(&self) -> Result<Attr> {
        let kind = self.kind()?;
        let rdev = match kind {
            FileType::CharDevice | FileType::BlockDevice => self.rdev()?,
            _ => 0,
        };
        let f = |bit| self.has_flag(bit);
        Ok(Attr {
            ino: u64::from(self.ino),
            kind,
            perm: self.mode & 0o7777,
            nlink: u32::from(self.links),
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            // ext4_file_getattr: a regular file with inline data reports
            // its bytes too, so tools do not take it for entirely sparse.
            blocks: if kind == FileType::Regular && self.has_flag(flags::INLINE_DATA) {
                self.blocks.saturating_add(self.size.div_ceil(512))
            } else {
                self.blocks
            },
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.crtime,
            rdev,
            generation: self.generation,
            flags: InodeFlags {
                immutable: f(flags::IMMUTABLE),
                append: f(flags::APPEND),
                no_dump: f(flags::NODUMP),
                no_atime: f(flags::NOATIME),
                sync: f(flags::SYNC),
                encrypted: f(flags::ENCRYPT),
                verity: f(flags::VERITY),
                casefold: f(flags::CASEFOLD),
            },
        })
    }
}

/// Read inode `ino` whatever its link count (for the journal and EA
/// inodes); `NotFound` for numbers outside the filesystem or unused slots.
pub fn read(vol: &Volume, ino: u32) -> Result<Inode> {
    let sb = &vol.sb;
    if ino == 0 || ino > sb.inodes_count {
        return Err(Error::not_found(format!("inode {ino} out of range (1..={})", sb.inodes_count)));
    }
    let group = (ino - 1) / sb.inodes_per_group;
    let index = (ino - 1) % sb.inodes_per_group;
    let desc = group::read(vol, group)?;
    let offset = desc
        .inode_table
        .checked_mul(vol.bs())
        .and_then(|o| o.checked_add(u64::from(index) * u64::from(sb.inode_size)))
        .ok_or_else(|| Error::corrupted(format!("inode {ino}: inode table offset overflows")))?;
    readahead(vol, &desc, offset / vol.bs());
    let raw = vol.disk.read(offset, usize::from(sb.inode_size))?;
    // Damage reports name the inode and where it lies, as e2fsck would.
    let (block, within) = (offset / vol.bs(), offset % vol.bs());
    parse(vol, ino, raw).map_err(|e| {
        if e.code() == ErrorCode::NotFound { e } else { e.context(format!("inode {ino} (block {block} + {within})")) }
    })
}

/// Bring the inode-table blocks around `block` into the device's cache with
/// one read, as the kernel's `__ext4_get_inode_loc` reads ahead
/// `inode_readahead_blks` blocks: the aligned run holding `block`, cut at
/// the start of the table and at its last used inode (`bg_itable_unused`,
/// when descriptors carry checksums). Listing a directory then costs one
/// device read per run instead of one per inode-table block.
fn readahead(vol: &Volume, desc: &group::GroupDesc, block: u64) {
    let ra = u64::from(vol.inode_readahead);
    if ra <= 1 || !ra.is_power_of_two() || vol.disk.device().is_cached(block.saturating_mul(vol.bs())) {
        return;
    }
    let sb = &vol.sb;
    let per_block = (vol.bs() / u64::from(sb.inode_size)).max(1);
    let mut used = u64::from(sb.inodes_per_group);
    if sb.features.ro_compat(ro_compat::GDT_CSUM) || sb.features.ro_compat(ro_compat::METADATA_CSUM) {
        used = used.saturating_sub(desc.itable_unused);
    }
    let table_end = desc.inode_table.saturating_add(used.div_ceil(per_block));
    let start = (block & !(ra - 1)).max(desc.inode_table);
    let end = start.saturating_add(ra).min(table_end).max(block + 1);
    // Into the device's cache: blocks `Disk` holds in memory (replayed or
    // written) still take precedence when read.
    if let (Some(offset), Some(len)) = (start.checked_mul(vol.bs()), (end - start).checked_mul(vol.bs())) {
        vol.disk.device().prefetch(offset, len);
    }
}

/// Parse and check the raw bytes of inode `ino`.
fn parse(vol: &Volume, ino: u32, raw: Vec<u8>) -> Result<Inode> {
    let sb = &vol.sb;
    if raw.iter().all(|&b| b == 0) {
        return Err(Error::not_found(format!("inode {ino} is not in use")));
    }
    let inode_size = raw.len();
    let extra_isize = if inode_size > GOOD_OLD_INODE_SIZE { usize::from(le_u16(&raw, 0x80)?) } else { 0 };
    if GOOD_OLD_INODE_SIZE + extra_isize > inode_size || extra_isize % 4 != 0 {
        return Err(Error::corrupted(format!("bad extra_isize {extra_isize} (inode size {inode_size})")));
    }
    // A field at `offset` of `len` bytes exists when the extra area covers it.
    let fits = |offset: usize, len: usize| offset + len <= GOOD_OLD_INODE_SIZE + extra_isize;
    let generation = le_u32(&raw, 0x64)?;
    let csum_seed = vol.csum.inode_seed(ino, generation);
    if vol.csum.metadata && sb.creator_linux {
        verify(&raw, csum_seed, fits(CHECKSUM_HI, 2))?;
    }

    let mode = le_u16(&raw, 0x0)?;
    let flags = le_u32(&raw, 0x20)?;
    let is_reg = mode & 0o170000 == 0o100000;
    let size_lo = u64::from(le_u32(&raw, 0x4)?);
    let size = if is_reg || sb.features.incompat(incompat::LARGEDIR) {
        size_lo | u64::from(le_u32(&raw, 0x6C)?) << 32
    } else {
        size_lo
    };
    if size > i64::MAX as u64 {
        return Err(Error::corrupted(format!("bad i_size {size}")));
    }
    let blocks_lo = u64::from(le_u32(&raw, 0x1C)?);
    let blocks = if sb.features.ro_compat(ro_compat::HUGE_FILE) {
        let b = blocks_lo | u64::from(le_u16(&raw, 0x74)?) << 32;
        if flags & flags::HUGE_FILE != 0 { b << (sb.block_size.trailing_zeros() - 9) } else { b }
    } else {
        blocks_lo
    };
    let file_acl_hi = if sb.features.incompat(incompat::BIT64) { u64::from(le_u16(&raw, 0x76)?) } else { 0 };
    let file_acl = u64::from(le_u32(&raw, 0x68)?) | file_acl_hi << 32;
    if file_acl != 0 && !sb.blocks_valid(file_acl, 1) {
        return Err(Error::corrupted(format!("bad extended attribute block {file_acl}")));
    }
    if flags & flags::INLINE_DATA != 0 && flags & flags::EXTENTS != 0 {
        return Err(Error::corrupted("both inline data and extents flags set"));
    }
    let extra = |offset: usize| -> Result<Option<u32>> {
        if fits(offset, 4) { le_u32(&raw, offset).map(Some) } else { Ok(None) }
    };
    let crtime = match extra(0x90)? {
        Some(base) => Some(time::decode(base, extra(0x94)?)),
        None => None,
    };
    let mut block = [0u8; 60];
    block.copy_from_slice(slice(&raw, 0x28, 60)?);
    let xattr_start = GOOD_OLD_INODE_SIZE + extra_isize;
    let xattr_area = raw.get(xattr_start..).unwrap_or_default().to_vec();

    Ok(Inode {
        ino,
        mode,
        uid: u32::from(le_u16(&raw, 0x2)?) | u32::from(le_u16(&raw, 0x78)?) << 16,
        gid: u32::from(le_u16(&raw, 0x18)?) | u32::from(le_u16(&raw, 0x7A)?) << 16,
        size,
        links: le_u16(&raw, 0x1A)?,
        blocks,
        flags,
        generation,
        file_acl,
        block,
        atime: time::decode(le_u32(&raw, 0x8)?, extra(0x8C)?),
        mtime: time::decode(le_u32(&raw, 0x10)?, extra(0x88)?),
        ctime: time::decode(le_u32(&raw, 0xC)?, extra(0x84)?),
        crtime,
        csum_seed,
        xattr_area,
    })
}

/// `ext4_inode_csum_verify`: crc32c over the inode with both checksum
/// fields zeroed; only the low 16 bits when there is no room for the high.
/// One pass over a copy with the fields zeroed (one host call for the
/// whole inode rather than one per piece around the fields).
fn verify(raw: &[u8], seed: u32, has_hi: bool) -> Result<()> {
    let mut stored = u32::from(le_u16(raw, CHECKSUM_LO)?);
    let mut zeroed = raw.to_vec();
    slice_mut(&mut zeroed, CHECKSUM_LO)?.fill(0);
    if has_hi {
        stored |= u32::from(le_u16(raw, CHECKSUM_HI)?) << 16;
        slice_mut(&mut zeroed, CHECKSUM_HI)?.fill(0);
    }
    let c = crate::csum::crc32c(seed, &zeroed);
    let computed = if has_hi { c } else { c & 0xFFFF };
    if stored != computed {
        return Err(Error::bad_checksum(format!("checksum {stored:#010x} does not match computed {computed:#010x}")));
    }
    Ok(())
}

/// The two bytes of a checksum half at `at`, or `Corrupted` past the end.
fn slice_mut(raw: &mut [u8], at: usize) -> Result<&mut [u8]> {
    let len = raw.len();
    raw.get_mut(at..at + 2).ok_or_else(|| Error::corrupted(format!("inode of {len} bytes has no checksum at {at}")))
}
