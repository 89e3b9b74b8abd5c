//! [`RawInode`]: an inode's on-disk bytes with typed getters and setters
//! that encode as the kernel's `ext4_do_update_inode` does (ids split in
//! two halves, `i_size_high`, `i_blocks` with the huge_file rules,
//! timestamps with their `_extra` words), and reading and writing it in
//! the inode table with its checksum.

use fshost_sdk::bytes::{le_u16, le_u32};
use fshost_sdk::{Error, ErrorCode, FileType, Result, Timestamp};

use crate::features::{incompat, ro_compat};
use crate::fs::Ext4;
use crate::inode::flags;
use crate::superblock::Superblock;
use crate::{group, inode};

const GOOD_OLD: usize = 128;
/// The extent tree root written into a new inode's `i_block`: magic
/// 0xF30A, 0 entries, room for 4, depth 0.
const EMPTY_EXTENT_ROOT: [u8; 12] = [0x0A, 0xF3, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0];

/// An inode's raw bytes (`s_inode_size` long) and the superblock facts
/// its encodings depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawInode {
    bytes: Vec<u8>,
    huge_file: bool,
    bit64: bool,
    /// log2 of the block size.
    block_bits: u32,
}

/// The S_IFMT bits of a file type.
pub(crate) fn mode_bits(kind: FileType) -> Result<u16> {
    Ok(match kind {
        FileType::Regular => 0o100000,
        FileType::Directory => 0o040000,
        FileType::Symlink => 0o120000,
        FileType::CharDevice => 0o020000,
        FileType::BlockDevice => 0o060000,
        FileType::Fifo => 0o010000,
        FileType::Socket => 0o140000,
        FileType::Unknown => return Err(Error::invalid("an inode cannot have file type unknown")),
    })
}

impl RawInode {
    /// Wrap `bytes` read from a filesystem with superblock `sb`.
    pub(crate) fn from_bytes(sb: &Superblock, bytes: Vec<u8>) -> Self {
        RawInode {
            bytes,
            huge_file: sb.features.ro_compat(ro_compat::HUGE_FILE),
            bit64: sb.features.incompat(incompat::BIT64),
            block_bits: sb.block_size.trailing_zeros(),
        }
    }

    /// A fresh inode as the kernel's `ext4_new_inode` fills one: type and
    /// permissions, owner, all four times set to `time`, `i_extra_isize`
    /// (32, or the superblock's `s_want_extra_isize` when larger),
    /// `generation`, and for directories, regular files and symlinks on a
    /// filesystem with `extents` the EXTENTS flag and an empty extent root
    /// (a fast symlink clears both and stores its target in `i_block`).
    /// Link count 0: the caller sets it.
    pub(crate) fn new_for(
        sb: &Superblock,
        kind: FileType,
        perm: u16,
        uid: u32,
        gid: u32,
        time: Timestamp,
        generation: u32,
    ) -> Result<Self> {
        let size = usize::from(sb.inode_size);
        let mut raw = RawInode::from_bytes(sb, vec![0; size]);
        if size > GOOD_OLD {
            let want = usize::from(sb.want_extra_isize).max(32).min(size - GOOD_OLD) as u16 & !3;
            raw.put16(0x80, want);
        }
        raw.set_mode(mode_bits(kind)? | (perm & 0o7777));
        raw.set_uid(uid);
        raw.set_gid(gid);
        raw.set_atime(time);
        raw.set_mtime(time);
        raw.set_ctime(time);
        raw.set_crtime(time);
        raw.set_generation(generation);
        if sb.features.incompat(incompat::EXTENTS)
            && matches!(kind, FileType::Regular | FileType::Directory | FileType::Symlink)
        {
            raw.set_flags(flags::EXTENTS);
            raw.i_block_mut()[..12].copy_from_slice(&EMPTY_EXTENT_ROOT);
        }
        Ok(raw)
    }

    /// The bytes (for checksumming and writing).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn get16(&self, at: usize) -> u16 {
        le_u16(&self.bytes, at).unwrap_or(0)
    }
    fn get32(&self, at: usize) -> u32 {
        le_u32(&self.bytes, at).unwrap_or(0)
    }
    fn put16(&mut self, at: usize, v: u16) {
        if let Some(d) = self.bytes.get_mut(at..at + 2) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    fn put32(&mut self, at: usize, v: u32) {
        if let Some(d) = self.bytes.get_mut(at..at + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// `i_extra_isize` (0 for 128-byte inodes).
    pub(crate) fn extra_isize(&self) -> usize {
        if self.bytes.len() > GOOD_OLD { usize::from(self.get16(0x80)) } else { 0 }
    }

    /// Whether the field at `offset` of `len` bytes exists in this inode
    /// (`EXT4_FITS_IN_INODE`).
    pub(crate) fn fits(&self, offset: usize, len: usize) -> bool {
        self.bytes.len() > GOOD_OLD && offset + len <= GOOD_OLD + self.extra_isize() && offset + len <= self.bytes.len()
    }

    pub(crate) fn mode(&self) -> u16 {
        self.get16(0x0)
    }
    pub(crate) fn set_mode(&mut self, mode: u16) {
        self.put16(0x0, mode)
    }
    /// The file type from the mode, if valid.
    pub(crate) fn kind(&self) -> Option<FileType> {
        FileType::from_mode(u32::from(self.mode()))
    }

    #[allow(dead_code)] // RawInode API; the writer itself does not read it back
    pub(crate) fn uid(&self) -> u32 {
        u32::from(self.get16(0x2)) | u32::from(self.get16(0x78)) << 16
    }
    pub(crate) fn set_uid(&mut self, uid: u32) {
        self.put16(0x2, uid as u16);
        self.put16(0x78, (uid >> 16) as u16);
    }
    #[allow(dead_code)] // RawInode API; the writer itself does not read it back
    pub(crate) fn gid(&self) -> u32 {
        u32::from(self.get16(0x18)) | u32::from(self.get16(0x7A)) << 16
    }
    pub(crate) fn set_gid(&mut self, gid: u32) {
        self.put16(0x18, gid as u16);
        self.put16(0x7A, (gid >> 16) as u16);
    }

    pub(crate) fn links(&self) -> u16 {
        self.get16(0x1A)
    }
    pub(crate) fn set_links(&mut self, links: u16) {
        self.put16(0x1A, links)
    }

    /// `i_size_lo | i_size_high << 32` (the high half counts for every
    /// type here; the kernel writes it for all).
    pub(crate) fn size(&self) -> u64 {
        u64::from(self.get32(0x4)) | u64::from(self.get32(0x6C)) << 32
    }
    pub(crate) fn set_size(&mut self, size: u64) {
        self.put32(0x4, size as u32);
        self.put32(0x6C, (size >> 32) as u32);
    }

    pub(crate) fn flags(&self) -> u32 {
        self.get32(0x20)
    }
    pub(crate) fn set_flags(&mut self, f: u32) {
        self.put32(0x20, f)
    }
    pub(crate) fn has_flag(&self, bit: u32) -> bool {
        self.flags() & bit != 0
    }

    pub(crate) fn generation(&self) -> u32 {
        self.get32(0x64)
    }
    pub(crate) fn set_generation(&mut self, g: u32) {
        self.put32(0x64, g)
    }

    /// `i_dtime` (also the next inode of the orphan list).
    pub(crate) fn dtime(&self) -> u32 {
        self.get32(0x14)
    }
    pub(crate) fn set_dtime(&mut self, t: u32) {
        self.put32(0x14, t)
    }

    /// The external xattr block (`i_file_acl`, high half with 64bit).
    pub(crate) fn file_acl(&self) -> u64 {
        let hi = if self.bit64 { u64::from(self.get16(0x76)) } else { 0 };
        u64::from(self.get32(0x68)) | hi << 32
    }
    pub(crate) fn set_file_acl(&mut self, block: u64) {
        self.put32(0x68, block as u32);
        if self.bit64 {
            self.put16(0x76, (block >> 32) as u16);
        }
    }

    /// Space used in 512-byte units (`ext4_inode_blocks`).
    pub(crate) fn blocks(&self) -> u64 {
        let lo = u64::from(self.get32(0x1C));
        if !self.huge_file {
            return lo;
        }
        let b = lo | u64::from(self.get16(0x74)) << 32;
        if self.has_flag(flags::HUGE_FILE) { b << (self.block_bits - 9) } else { b }
    }

    /// Set the space used, in 512-byte units (`ext4_inode_blocks_set`):
    /// `FileTooBig` past what the format can record.
    pub(crate) fn set_blocks(&mut self, sectors: u64) -> Result<()> {
        let f = self.flags();
        if sectors <= u64::from(u32::MAX) {
            self.put32(0x1C, sectors as u32);
            self.put16(0x74, 0);
            self.set_flags(f & !flags::HUGE_FILE);
            return Ok(());
        }
        if !self.huge_file {
            return Err(Error::new(ErrorCode::FileTooBig, "i_blocks past 2^32 sectors without huge_file"));
        }
        if sectors < (1u64 << 48) {
            self.put32(0x1C, sectors as u32);
            self.put16(0x74, (sectors >> 32) as u16);
            self.set_flags(f & !flags::HUGE_FILE);
            return Ok(());
        }
        let units = sectors >> (self.block_bits - 9);
        if units >= (1u64 << 48) {
            return Err(Error::new(ErrorCode::FileTooBig, "i_blocks past 2^48 blocks"));
        }
        self.put32(0x1C, units as u32);
        self.put16(0x74, (units >> 32) as u16);
        self.set_flags(f | flags::HUGE_FILE);
        Ok(())
    }

    /// Add (or with a negative `delta`, remove) `blocks` filesystem blocks
    /// to i_blocks.
    pub(crate) fn add_blocks(&mut self, blocks: i64) -> Result<()> {
        let per = 1i64 << (self.block_bits - 9);
        let delta = blocks.checked_mul(per).ok_or_else(|| Error::corrupted("i_blocks delta overflows"))?;
        let now = self.blocks();
        let new = now
            .checked_add_signed(delta)
            .ok_or_else(|| Error::corrupted(format!("i_blocks {now} cannot change by {delta}")))?;
        self.set_blocks(new)
    }

    /// The 60-byte `i_block` area (extent root, block pointers, symlink
    /// target, device number).
    pub(crate) fn i_block(&self) -> &[u8] {
        &self.bytes[0x28..0x28 + 60]
    }
    pub(crate) fn i_block_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[0x28..0x28 + 60]
    }

    fn time(&self, base: usize, extra: usize) -> Timestamp {
        let extra = if self.fits(extra, 4) { Some(self.get32(extra)) } else { None };
        crate::time::decode(self.get32(base), extra)
    }

    /// `EXT4_INODE_SET_XTIME`: the low 32 bits of the seconds, and in the
    /// `_extra` word the epoch bits and nanoseconds; without an `_extra`
    /// word, the seconds clamped to the signed 32-bit range.
    fn set_time(&mut self, base: usize, extra: usize, t: Timestamp) {
        if self.fits(extra, 4) {
            // Representable: -2^31 .. 2^34 - 2^31 (epoch bits 0..3).
            let secs = t.seconds.clamp(-(1i64 << 31), (1i64 << 34) - (1i64 << 31) - 1);
            let epoch = ((secs - i64::from(secs as i32)) >> 32) as u32 & 3;
            self.put32(base, secs as u32);
            self.put32(extra, epoch | (t.nanoseconds.min(999_999_999) << 2));
        } else {
            let secs = t.seconds.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
            self.put32(base, secs as i32 as u32);
        }
    }

    #[allow(dead_code)] // RawInode API; the writer itself does not read it back
    pub(crate) fn atime(&self) -> Timestamp {
        self.time(0x8, 0x8C)
    }
    pub(crate) fn set_atime(&mut self, t: Timestamp) {
        self.set_time(0x8, 0x8C, t)
    }
    pub(crate) fn ctime(&self) -> Timestamp {
        self.time(0xC, 0x84)
    }
    pub(crate) fn set_ctime(&mut self, t: Timestamp) {
        self.set_time(0xC, 0x84, t)
    }
    #[allow(dead_code)] // RawInode API; the writer itself does not read it back
    pub(crate) fn mtime(&self) -> Timestamp {
        self.time(0x10, 0x88)
    }
    pub(crate) fn set_mtime(&mut self, t: Timestamp) {
        self.set_time(0x10, 0x88, t)
    }
    /// Creation time, where the inode has room for it.
    #[allow(dead_code)] // RawInode API; the writer itself does not read it back
    pub(crate) fn crtime(&self) -> Option<Timestamp> {
        if self.fits(0x90, 4) { Some(self.time(0x90, 0x94)) } else { None }
    }
    pub(crate) fn set_crtime(&mut self, t: Timestamp) {
        if self.fits(0x90, 4) {
            self.set_time(0x90, 0x94, t)
        }
    }

    /// Set the checksum (`ext4_inode_csum_set`) with per-inode seed `seed`.
    fn set_checksum(&mut self, seed: u32) {
        let has_hi = self.fits(0x82, 2);
        self.put16(0x7C, 0);
        if has_hi {
            self.put16(0x82, 0);
        }
        let c = crate::csum::crc32c(seed, &self.bytes);
        self.put16(0x7C, c as u16);
        if has_hi {
            self.put16(0x82, (c >> 16) as u16);
        }
    }
}

/// The byte offset of inode `ino` in its inode table.
fn location(fs: &Ext4, ino: u32) -> Result<u64> {
    let sb = &fs.vol.sb;
    if ino == 0 || ino > sb.inodes_count {
        return Err(Error::not_found(format!("inode {ino} out of range (1..={})", sb.inodes_count)));
    }
    let group = (ino - 1) / sb.inodes_per_group;
    let index = (ino - 1) % sb.inodes_per_group;
    let desc = group::read(&fs.vol, group)?;
    desc.inode_table
        .checked_mul(fs.vol.bs())
        .and_then(|o| o.checked_add(u64::from(index) * u64::from(sb.inode_size)))
        .ok_or_else(|| Error::corrupted(format!("inode {ino}: inode table offset overflows")))
}

/// Read inode `ino`'s bytes; an in-use inode is parsed (and so checked,
/// checksum included) first.
pub(super) fn read(fs: &mut Ext4, ino: u32) -> Result<RawInode> {
    let offset = location(fs, ino)?;
    let bytes = fs.vol.disk.read(offset, usize::from(fs.vol.sb.inode_size))?;
    if bytes.iter().any(|&b| b != 0) && le_u16(&bytes, 0x1A)? != 0 {
        inode::read(&fs.vol, ino)?;
    }
    Ok(RawInode::from_bytes(&fs.vol.sb, bytes))
}

/// Checksum and write `raw` as inode `ino`; forget cached parses of it.
pub(super) fn write(fs: &mut Ext4, ino: u32, raw: &RawInode) -> Result<()> {
    if raw.bytes.len() != usize::from(fs.vol.sb.inode_size) {
        return Err(Error::invalid(format!("inode {ino}: {} bytes to write", raw.bytes.len())));
    }
    let offset = location(fs, ino)?;
    let mut out = raw.clone();
    if fs.vol.sb.features.ro_compat(ro_compat::METADATA_CSUM) {
        out.set_checksum(fs.vol.csum.inode_seed(ino, out.generation()));
    }
    fs.vol.disk.write(offset, &out.bytes)?;
    fs.inodes.remove(&ino);
    fs.names.remove(&ino);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(size: usize, extra: u16) -> RawInode {
        let mut r = RawInode { bytes: vec![0; size], huge_file: true, bit64: true, block_bits: 12 };
        if size > GOOD_OLD {
            r.put16(0x80, extra);
        }
        r
    }

    #[test]
    fn times_round_trip_through_the_kernel_decoding() {
        let mut r = raw(256, 32);
        for secs in [0i64, -1, -(1 << 31), (1 << 31) - 1, 1 << 31, (1 << 32) + 5, (1 << 34) - (1 << 31) - 1] {
            let t = Timestamp { seconds: secs, nanoseconds: 123_456_789 };
            r.set_mtime(t);
            assert_eq!(r.mtime(), t, "{secs}");
        }
        let mut small = raw(128, 0);
        small.set_mtime(Timestamp { seconds: 1 << 40, nanoseconds: 5 });
        assert_eq!(small.mtime(), Timestamp { seconds: i64::from(i32::MAX), nanoseconds: 0 });
    }

    #[test]
    fn i_blocks_follow_huge_file_rules() {
        let mut r = raw(256, 32);
        r.set_blocks(8).unwrap();
        assert_eq!(r.blocks(), 8);
        r.set_blocks(1 << 40).unwrap();
        assert_eq!(r.blocks(), 1 << 40);
        assert!(!r.has_flag(flags::HUGE_FILE));
        r.set_blocks(1 << 50).unwrap();
        assert!(r.has_flag(flags::HUGE_FILE));
        assert_eq!(r.blocks(), 1 << 50);
        r.huge_file = false;
        assert_eq!(r.set_blocks(1 << 33).unwrap_err().code(), ErrorCode::FileTooBig);
    }
}
