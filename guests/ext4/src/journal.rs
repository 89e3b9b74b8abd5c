//! Replay of an ext3/ext4 journal (jbd2) in memory, for read-only mounts.
//!
//! An ext4 image whose superblock says `needs_recovery` was not unmounted
//! cleanly: its newest metadata may exist only in the journal, and reading
//! the filesystem blocks in place would show stale or half-updated inodes,
//! directories and bitmaps without any error. A read-only mount must not
//! write the journal back, so this module does what the kernel's
//! `fs/jbd2/recovery.c` does, but keeps the result in memory: [`replay`]
//! returns a [`Replay`], the newest committed contents of every block the
//! journal holds, and the caller reads filesystem blocks through it.
//!
//! What it guarantees, following the kernel:
//!
//! - The log is walked from `s_start`, expecting transaction `s_sequence`;
//!   it ends at the first block that lacks the jbd2 magic, carries another
//!   sequence or has an unknown type. Only transactions whose commit block
//!   was found are replayed; the newest copy of a block wins, and a copy
//!   that was escaped in the log gets its magic number back.
//! - A revoke record for block B in transaction T hides every copy of B
//!   logged in transactions up to and including T.
//! - Checksums are verified: compat v1 (crc32 of the whole transaction in
//!   the commit block) and csum v2/v3 (crc32c seeded with the journal UUID,
//!   on the superblock, descriptor and revoke tails, commit blocks and every
//!   data block through its tag). A data block whose tag checksum does not
//!   match is skipped and logged, as the kernel does. A bad commit checksum,
//!   or a bad descriptor or revoke tail, ends the replay *before* that
//!   transaction: the caller sees the filesystem as of the last good
//!   transaction, older but consistent, and the log says why. (For some of
//!   these the kernel refuses to mount; a read-only reader prefers the
//!   older consistent view.)
//! - The walk never visits more blocks than the log holds, so a crafted
//!   log that never ends cannot make it loop.
//!
//! What it refuses: a superblock that no jbd2 writes (bad magic, block size
//! or geometry, bad superblock checksum) and a revoke block whose count runs
//! past its end are `Corrupted`; a journal that needs recovery and uses an
//! unknown incompatible feature, or fast commits (logical ext4 records that
//! only ext4 itself can replay), is `Unsupported`. A clean journal
//! (`s_start == 0`) holds nothing to replay whatever its features say.
//!
//! jbd2 is big-endian throughout; every field is read through the
//! bounds-checked readers of [`fshost_sdk::bytes`].

use std::collections::BTreeMap;
use std::fmt;

use fshost_sdk::bytes::{be_u16, be_u32, be_u64, slice, u8_at};
use fshost_sdk::{Error, Result, ResultExt};

/// `h_magic` of every journal metadata block.
const MAGIC: u32 = 0xC03B_3998;

/// `h_blocktype` values.
const DESCRIPTOR_BLOCK: u32 = 1;
const COMMIT_BLOCK: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE_BLOCK: u32 = 5;

/// `journal_header_t`: magic, block type, sequence.
const HEADER_BYTES: usize = 12;

/// `journal_superblock_t` field offsets and its size (what its checksum covers).
const SB_BLOCKSIZE: usize = 0x0C;
const SB_MAXLEN: usize = 0x10;
const SB_FIRST: usize = 0x14;
const SB_SEQUENCE: usize = 0x18;
const SB_START: usize = 0x1C;
const SB_FEATURE_COMPAT: usize = 0x24;
const SB_FEATURE_INCOMPAT: usize = 0x28;
const SB_UUID: usize = 0x30;
const SB_CHECKSUM_TYPE: usize = 0x50;
const SB_CHECKSUM: usize = 0xFC;
const SB_BYTES: usize = 0x400;

/// Feature flags.
const COMPAT_CHECKSUM: u32 = 0x1;
const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;
/// Incompatible features this module replays. REVOKE and ASYNC_COMMIT need
/// nothing special: revoke blocks are honoured whatever the flag says (as in
/// the kernel), and async commit only changes what the writer waited for; a
/// bad commit checksum ends the replay either way.
const KNOWN_INCOMPAT: u32 = INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3;

/// `s_checksum_type` / `h_chksum_type` values and the v1 checksum size.
const CRC32_CHKSUM: u8 = 1;
const CRC32_CHKSUM_SIZE: u8 = 4;
const CRC32C_CHKSUM: u8 = 4;

/// Commit block (`commit_header`) field offsets.
const COMMIT_CHKSUM_TYPE: usize = 12;
const COMMIT_CHKSUM_SIZE: usize = 13;
const COMMIT_CHKSUM: usize = 16;

/// Block tag flags.
const FLAG_ESCAPE: u32 = 0x1;
const FLAG_SAME_UUID: u32 = 0x2;
const FLAG_LAST_TAG: u32 = 0x8;
/// The UUID that follows a tag not marked SAME_UUID.
const UUID_BYTES: usize = 16;

/// `jbd2_journal_block_tail`: the crc32c at the end of descriptor and revoke
/// blocks when csum v2/v3 is on.
const TAIL_BYTES: usize = 4;
/// `jbd2_journal_revoke_header_t`: header plus `r_count`.
const REVOKE_HEADER_BYTES: usize = 16;
const REVOKE_COUNT: usize = 12;

/// The blocks a journal replay yields: filesystem block number to the newest
/// committed contents of that block (one filesystem block each).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Replay {
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl Replay {
    /// The replayed contents of filesystem block `fs_block`, or `None` when
    /// the journal holds no committed copy of it (read it in place).
    pub fn block(&self, fs_block: u64) -> Option<&[u8]> {
        self.blocks.get(&fs_block).map(Vec::as_slice)
    }

    /// How many filesystem blocks the replay overrides.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the replay overrides nothing (a clean journal).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay").field("blocks", &self.blocks.keys().collect::<Vec<_>>()).finish()
    }
}

/// Replay the journal whose logical block `n` (0-based, block 0 is the
/// journal superblock) `read_journal_block(n)` returns, `journal_blocks`
/// long, for a filesystem of `block_size`-byte blocks.
///
/// A clean journal gives an empty [`Replay`]. Errors are `Corrupted` for
/// structures no jbd2 writes, `Unsupported` for features this module does
/// not replay, and whatever `read_journal_block` returned.
pub fn replay(
    block_size: u32,
    read_journal_block: &mut dyn FnMut(u64) -> Result<Vec<u8>>,
    journal_blocks: u64,
) -> Result<Replay> {
    let block_size = checked_block_size(block_size)?;
    if journal_blocks == 0 {
        return Err(Error::corrupted("journal: the journal inode has no blocks"));
    }
    let mut log = Log { read: read_journal_block, block_size };
    let superblock = log.read(0)?;
    let Some(journal) = Journal::parse(block_size, &superblock, journal_blocks).context("journal superblock")? else {
        return Ok(Replay::default());
    };
    let scan = scan(&journal, &mut log)?;
    replay_blocks(&journal, &mut log, &scan)
}

/// The filesystem block size as a `usize`, if it is one jbd2 can have.
fn checked_block_size(block_size: u32) -> Result<usize> {
    if !(1024..=65536).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(Error::corrupted(format!(
            "journal: block size {block_size} is not a power of two from 1024 to 65536"
        )));
    }
    usize::try_from(block_size).map_err(|_| Error::corrupted(format!("journal: block size {block_size} too large")))
}

/// Reads journal blocks, checking each is one block long.
struct Log<'a> {
    read: &'a mut dyn FnMut(u64) -> Result<Vec<u8>>,
    block_size: usize,
}

impl Log<'_> {
    fn read(&mut self, n: u64) -> Result<Vec<u8>> {
        let block = (self.read)(n).with_context(|| format!("journal block {n}"))?;
        if block.len() != self.block_size {
            return Err(Error::io(format!(
                "journal block {n}: read {} bytes, expected {}",
                block.len(),
                self.block_size
            )));
        }
        Ok(block)
    }
}

/// Which checksums the journal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    None,
    /// COMPAT_CHECKSUM: crc32 (big-endian) of each transaction's descriptor
    /// and data blocks, stored in its commit block.
    V1,
    /// CSUM_V2: crc32c per block; 16-bit data block checksums in the tags.
    V2 { seed: u32 },
    /// CSUM_V3: crc32c per block; 32-bit data block checksums in the tags.
    V3 { seed: u32 },
}

/// A journal superblock that needs recovery, checked: `first <= start <
/// end <= journal_blocks`, `first >= 1`, and everything fits in `u32`.
#[derive(Debug)]
struct Journal {
    block_size: usize,
    /// The log is blocks `first..end` of the journal (`s_first..s_maxlen`).
    first: u64,
    end: u64,
    /// Where the oldest transaction still needed starts, and its sequence.
    start: u64,
    sequence: u32,
    /// Block numbers in tags and revoke records are 64-bit.
    block64: bool,
    checksum: Checksum,
}

/// One block tag of a descriptor block.
#[derive(Debug, Clone, Copy)]
struct BlockTag {
    fs_block: u64,
    flags: u32,
    /// The data block's checksum (csum v2: low 16 bits; v3: all 32).
    checksum: u32,
}

/// A logged copy of a filesystem block.
#[derive(Debug, Clone, Copy)]
struct Logged {
    tag: BlockTag,
    /// Where the copy lives in the journal.
    log_block: u64,
}

/// A transaction whose commit block was found.
#[derive(Debug)]
struct Committed {
    sequence: u32,
    blocks: Vec<Logged>,
}

/// What the scan of the log found: the committed transactions in log order,
/// and for each revoked block the newest transaction that revoked it.
#[derive(Debug, Default)]
struct Scan {
    transactions: Vec<Committed>,
    revoked: BTreeMap<u64, u32>,
}

impl Journal {
    /// Check the superblock; `None` when the journal is clean.
    fn parse(block_size: usize, sb: &[u8], journal_blocks: u64) -> Result<Option<Self>> {
        let magic = be_u32(sb, 0)?;
        if magic != MAGIC {
            return Err(Error::corrupted(format!("magic {magic:#010x}, expected {MAGIC:#010x}")));
        }
        let version = be_u32(sb, 4)?;
        if version != SUPERBLOCK_V1 && version != SUPERBLOCK_V2 {
            return Err(Error::corrupted(format!("block type {version}, expected 3 or 4 (superblock v1 or v2)")));
        }
        let sb_block_size = be_u32(sb, SB_BLOCKSIZE)?;
        if usize::try_from(sb_block_size).ok() != Some(block_size) {
            return Err(Error::corrupted(format!(
                "journal block size {sb_block_size}, but the filesystem's is {block_size}"
            )));
        }
        let maxlen = u64::from(be_u32(sb, SB_MAXLEN)?);
        if maxlen > journal_blocks {
            return Err(Error::corrupted(format!(
                "s_maxlen {maxlen} blocks, but the journal inode has only {journal_blocks}"
            )));
        }
        let first = u64::from(be_u32(sb, SB_FIRST)?);
        if first == 0 || first >= maxlen {
            return Err(Error::corrupted(format!("log start s_first {first} outside the journal (1..{maxlen})")));
        }

        // Version 1 superblocks have no feature fields (the kernel ignores them).
        let (compat, incompat) = if version == SUPERBLOCK_V2 {
            (be_u32(sb, SB_FEATURE_COMPAT)?, be_u32(sb, SB_FEATURE_INCOMPAT)?)
        } else {
            (0, 0)
        };
        let v2 = incompat & INCOMPAT_CSUM_V2 != 0;
        let v3 = incompat & INCOMPAT_CSUM_V3 != 0;
        if v2 && v3 {
            return Err(Error::corrupted("both checksum v2 and v3 features are set"));
        }
        if (v2 || v3) && compat & COMPAT_CHECKSUM != 0 {
            return Err(Error::corrupted("both checksum v1 and v2/v3 features are set"));
        }
        let checksum = if v2 || v3 {
            let kind = u8_at(sb, SB_CHECKSUM_TYPE)?;
            if kind != CRC32C_CHKSUM {
                return Err(Error::corrupted(format!("checksum type {kind}, expected {CRC32C_CHKSUM} (crc32c)")));
            }
            let provided = be_u32(sb, SB_CHECKSUM)?;
            let computed = crc32c_zeroed(!0, slice(sb, 0, SB_BYTES)?, SB_CHECKSUM)?;
            if provided != computed {
                return Err(Error::corrupted(format!("checksum {provided:#010x}, computed {computed:#010x}")));
            }
            let seed = crc32c_raw(!0, slice(sb, SB_UUID, UUID_BYTES)?);
            if v3 { Checksum::V3 { seed } } else { Checksum::V2 { seed } }
        } else if compat & COMPAT_CHECKSUM != 0 {
            Checksum::V1
        } else {
            Checksum::None
        };

        let start = u64::from(be_u32(sb, SB_START)?);
        if start == 0 {
            return Ok(None);
        }
        if incompat & INCOMPAT_FAST_COMMIT != 0 {
            return Err(Error::unsupported(
                "the journal needs recovery and has fast commits, which only ext4 itself can replay",
            ));
        }
        let unknown = incompat & !KNOWN_INCOMPAT;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "the journal needs recovery and has unknown incompatible features {unknown:#x}"
            )));
        }
        if start < first || start >= maxlen {
            return Err(Error::corrupted(format!("log head s_start {start} outside the log ({first}..{maxlen})")));
        }
        Ok(Some(Self {
            block_size,
            first,
            end: maxlen,
            start,
            sequence: be_u32(sb, SB_SEQUENCE)?,
            block64: incompat & INCOMPAT_64BIT != 0,
            checksum,
        }))
    }

    /// How many blocks the circular log holds.
    fn log_len(&self) -> u64 {
        self.end.saturating_sub(self.first)
    }

    /// The log block after `pos`, wrapping from the end of the log to its start.
    fn next(&self, pos: u64) -> u64 {
        match pos.checked_add(1) {
            Some(next) if next < self.end => next,
            _ => self.first,
        }
    }

    /// Bytes at the end of descriptor and revoke blocks held by the tail checksum.
    fn tail_bytes(&self) -> usize {
        match self.checksum {
            Checksum::V2 { .. } | Checksum::V3 { .. } => TAIL_BYTES,
            Checksum::None | Checksum::V1 => 0,
        }
    }

    /// The size of one block tag (`journal_tag_bytes()` in the kernel):
    /// `journal_block_tag3_t` with csum v3, else `journal_block_tag_t`
    /// without `t_blocknr_high` unless 64-bit, plus two bytes with csum v2.
    fn tag_bytes(&self) -> usize {
        match (self.checksum, self.block64) {
            (Checksum::V3 { .. }, _) => 16,
            (Checksum::V2 { .. }, true) => 14,
            (Checksum::V2 { .. }, false) => 10,
            (_, true) => 12,
            (_, false) => 8,
        }
    }

    /// Whether a descriptor or revoke block's tail checksum matches (always,
    /// without csum v2/v3).
    fn tail_ok(&self, block: &[u8]) -> Result<bool> {
        let (Checksum::V2 { seed } | Checksum::V3 { seed }) = self.checksum else {
            return Ok(true);
        };
        let at = self.block_size.saturating_sub(TAIL_BYTES);
        Ok(be_u32(block, at)? == crc32c_zeroed(seed, block, at)?)
    }

    /// Whether a commit block's checksum matches. `crc32_sum` is the v1
    /// running checksum of the transaction's descriptor and data blocks.
    fn commit_ok(&self, block: &[u8], crc32_sum: u32) -> Result<bool> {
        let found = be_u32(block, COMMIT_CHKSUM)?;
        match self.checksum {
            Checksum::None => Ok(true),
            Checksum::V1 => {
                let kind = u8_at(block, COMMIT_CHKSUM_TYPE)?;
                let size = u8_at(block, COMMIT_CHKSUM_SIZE)?;
                // A matching crc32, or no checksum written at all (as the kernel accepts).
                Ok((found == crc32_sum && kind == CRC32_CHKSUM && size == CRC32_CHKSUM_SIZE)
                    || (kind == 0 && size == 0 && found == 0))
            }
            Checksum::V2 { seed } | Checksum::V3 { seed } => Ok(found == crc32c_zeroed(seed, block, COMMIT_CHKSUM)?),
        }
    }

    /// Whether a logged data block (as it sits in the journal, still
    /// escaped) matches its tag's checksum in transaction `sequence`.
    fn data_ok(&self, tag: &BlockTag, sequence: u32, data: &[u8]) -> bool {
        let (Checksum::V2 { seed } | Checksum::V3 { seed }) = self.checksum else {
            return true;
        };
        let computed = crc32c_raw(crc32c_raw(seed, &sequence.to_be_bytes()), data);
        match self.checksum {
            Checksum::V2 { .. } => computed & 0xFFFF == tag.checksum,
            _ => computed == tag.checksum,
        }
    }

    /// The block tags of a descriptor block. Tags fill the block after the
    /// header and before the tail; the one marked LAST_TAG ends the list,
    /// and so does the end of the space (the kernel reads no partial tag).
    fn tags(&self, block: &[u8]) -> Result<Vec<BlockTag>> {
        let end = self.block_size.saturating_sub(self.tail_bytes());
        let size = self.tag_bytes();
        let mut tags = Vec::new();
        let mut offset = HEADER_BYTES;
        // Each pass moves `offset` on by at least `size`, so this runs at
        // most block_size / 8 times.
        while offset.checked_add(size).is_some_and(|tag_end| tag_end <= end) {
            let low = be_u32(block, offset)?;
            let (flags, checksum) = match self.checksum {
                // journal_block_tag3_t: blocknr, flags (32-bit), blocknr_high, checksum.
                Checksum::V3 { .. } => (be_u32(block, offset + 4)?, be_u32(block, offset + 12)?),
                // journal_block_tag_t: blocknr, checksum (16-bit), flags (16-bit), blocknr_high.
                Checksum::V2 { .. } => (u32::from(be_u16(block, offset + 6)?), u32::from(be_u16(block, offset + 4)?)),
                Checksum::None | Checksum::V1 => (u32::from(be_u16(block, offset + 6)?), 0),
            };
            let high = if self.block64 { be_u32(block, offset + 8)? } else { 0 };
            tags.push(BlockTag { fs_block: (u64::from(high) << 32) | u64::from(low), flags, checksum });
            offset += size;
            if flags & FLAG_SAME_UUID == 0 {
                offset += UUID_BYTES;
            }
            if flags & FLAG_LAST_TAG != 0 {
                break;
            }
        }
        Ok(tags)
    }

    /// The block numbers a revoke block revokes. `r_count` is the number of
    /// bytes in use, header included.
    fn revokes(&self, block: &[u8]) -> Result<Vec<u64>> {
        let count = be_u32(block, REVOKE_COUNT)?;
        let space = self.block_size.saturating_sub(self.tail_bytes());
        let used = usize::try_from(count).ok().filter(|&used| used <= space).ok_or_else(|| {
            Error::corrupted(format!("revoke block r_count {count} past the end of its {space}-byte record area"))
        })?;
        let record = if self.block64 { 8 } else { 4 };
        let mut blocks = Vec::new();
        let mut offset = REVOKE_HEADER_BYTES;
        while offset.checked_add(record).is_some_and(|end| end <= used) {
            blocks.push(if self.block64 { be_u64(block, offset)? } else { u64::from(be_u32(block, offset)?) });
            offset += record;
        }
        Ok(blocks)
    }
}

/// Pass one and two of the kernel's recovery in one walk: find the committed
/// transactions, their logged blocks and their revoke records.
fn scan(journal: &Journal, log: &mut Log<'_>) -> Result<Scan> {
    let mut found = Scan::default();
    let mut pos = journal.start;
    let mut sequence = journal.sequence;
    // The transaction being read, until its commit block turns up.
    let mut logged: Vec<Logged> = Vec::new();
    let mut revoked: Vec<u64> = Vec::new();
    let mut crc32_sum = !0u32;
    // Log blocks consumed so far; a log that comes back to its own start
    // without ending cannot hold a complete transaction any more.
    let mut used: u64 = 0;
    let log_len = journal.log_len();

    while used < log_len {
        let here = pos;
        let block = log.read(here)?;
        used += 1;
        pos = journal.next(pos);

        if be_u32(&block, 0)? != MAGIC {
            break;
        }
        let blocktype = be_u32(&block, 4)?;
        if be_u32(&block, 8)? != sequence {
            break;
        }
        match blocktype {
            DESCRIPTOR_BLOCK => {
                if !journal.tail_ok(&block)? {
                    fshost_sdk::warn!(
                        "journal block {here}: descriptor checksum mismatch in transaction {sequence}; replay ends before it"
                    );
                    break;
                }
                let tags = journal.tags(&block).with_context(|| format!("journal block {here}: descriptor"))?;
                if journal.checksum == Checksum::V1 {
                    crc32_sum = crc32_be(crc32_sum, &block);
                }
                for tag in tags {
                    if used >= log_len {
                        // The descriptor describes more blocks than the log holds.
                        break;
                    }
                    if journal.checksum == Checksum::V1 {
                        crc32_sum = crc32_be(crc32_sum, &log.read(pos)?);
                    }
                    logged.push(Logged { tag, log_block: pos });
                    used += 1;
                    pos = journal.next(pos);
                }
            }
            COMMIT_BLOCK => {
                if !journal.commit_ok(&block, crc32_sum).with_context(|| format!("journal block {here}"))? {
                    fshost_sdk::warn!(
                        "journal block {here}: commit checksum mismatch in transaction {sequence}; replay ends before it"
                    );
                    break;
                }
                crc32_sum = !0;
                for fs_block in revoked.drain(..) {
                    found
                        .revoked
                        .entry(fs_block)
                        .and_modify(|newest| {
                            if tid_gt(sequence, *newest) {
                                *newest = sequence;
                            }
                        })
                        .or_insert(sequence);
                }
                found.transactions.push(Committed { sequence, blocks: std::mem::take(&mut logged) });
                sequence = sequence.wrapping_add(1);
            }
            REVOKE_BLOCK => {
                if !journal.tail_ok(&block)? {
                    fshost_sdk::warn!(
                        "journal block {here}: revoke block checksum mismatch in transaction {sequence}; replay ends before it"
                    );
                    break;
                }
                revoked.extend(journal.revokes(&block).with_context(|| format!("journal block {here}"))?);
            }
            // Anything else with the right magic and sequence ends the log, as in the kernel.
            _ => break,
        }
    }
    Ok(found)
}

/// Pass three: the newest unrevoked, checksum-clean copy of every logged
/// block. Walking the transactions newest first and keeping the first copy
/// found gives what replaying them oldest first would, reading each block
/// once.
fn replay_blocks(journal: &Journal, log: &mut Log<'_>, scan: &Scan) -> Result<Replay> {
    let mut replay = Replay::default();
    for transaction in scan.transactions.iter().rev() {
        for logged in transaction.blocks.iter().rev() {
            let fs_block = logged.tag.fs_block;
            if replay.blocks.contains_key(&fs_block) {
                continue;
            }
            if scan.revoked.get(&fs_block).is_some_and(|&revoked_in| !tid_gt(transaction.sequence, revoked_in)) {
                continue;
            }
            let mut data = log.read(logged.log_block)?;
            if !journal.data_ok(&logged.tag, transaction.sequence, &data) {
                fshost_sdk::warn!(
                    "journal block {}: checksum mismatch in the copy of block {fs_block} (transaction {}); not replayed",
                    logged.log_block,
                    transaction.sequence
                );
                continue;
            }
            if logged.tag.flags & FLAG_ESCAPE != 0
                && let Some(first) = data.get_mut(..4)
            {
                first.copy_from_slice(&MAGIC.to_be_bytes());
            }
            replay.blocks.insert(fs_block, data);
        }
    }
    Ok(replay)
}

/// Transaction ids wrap: `a` is newer than `b` if it is less than half the
/// id space ahead (the kernel's `tid_gt`).
fn tid_gt(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() > 0
}

/// The crc32c register carried on from `state` over `data`, with no
/// inversion in or out: the kernel's `jbd2_chksum(j, state, data)`. (The
/// `crc32c` crate computes the standard CRC, inverting on the way in and out.)
fn crc32c_raw(state: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!state, data)
}

/// [`crc32c_raw`] of `block` with the four bytes at `at` read as zero (how
/// jbd2 checksums a block that holds its own checksum).
fn crc32c_zeroed(state: u32, block: &[u8], at: usize) -> Result<u32> {
    let after = at.checked_add(4).ok_or_else(|| Error::corrupted("checksum offset overflows"))?;
    let before = slice(block, 0, at)?;
    let rest = block
        .get(after..)
        .ok_or_else(|| Error::corrupted(format!("checksum at byte {at} past the end of a {}-byte block", block.len())))?;
    Ok(crc32c_raw(crc32c_raw(crc32c_raw(state, before), &[0; 4]), rest))
}

/// The kernel's `crc32_be(crc, data)`: MSB-first CRC-32 (polynomial
/// 0x04C11DB7) with no inversion in or out, used by v1 journal checksums.
fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        let index = ((crc >> 24) ^ u32::from(byte)) & 0xFF;
        crc = (crc << 8) ^ CRC32_BE_TABLE[index as usize];
    }
    crc
}

const CRC32_BE_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};
