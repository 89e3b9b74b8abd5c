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
pub(crate) const MAGIC: u32 = 0xC03B_3998;

/// `h_blocktype` values.
pub(crate) const DESCRIPTOR_BLOCK: u32 = 1;
pub(crate) const COMMIT_BLOCK: u32 = 2;
pub(crate) const SUPERBLOCK_V1: u32 = 3;
pub(crate) const SUPERBLOCK_V2: u32 = 4;
const REVOKE_BLOCK: u32 = 5;

/// `journal_header_t`: magic, block type, sequence.
pub(crate) const HEADER_BYTES: usize = 12;

/// `journal_superblock_t` field offsets and its size (what its checksum covers).
pub(crate) const SB_BLOCKSIZE: usize = 0x0C;
pub(crate) const SB_MAXLEN: usize = 0x10;
pub(crate) const SB_FIRST: usize = 0x14;
pub(crate) const SB_SEQUENCE: usize = 0x18;
pub(crate) const SB_START: usize = 0x1C;
pub(crate) const SB_FEATURE_COMPAT: usize = 0x24;
pub(crate) const SB_FEATURE_INCOMPAT: usize = 0x28;
pub(crate) const SB_UUID: usize = 0x30;
pub(crate) const SB_CHECKSUM_TYPE: usize = 0x50;
pub(crate) const SB_CHECKSUM: usize = 0xFC;
pub(crate) const SB_BYTES: usize = 0x400;

/// Feature flags.
pub(crate) const COMPAT_CHECKSUM: u32 = 0x1;
pub(crate) const INCOMPAT_REVOKE: u32 = 0x1;
pub(crate) const INCOMPAT_64BIT: u32 = 0x2;
pub(crate) const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
pub(crate) const INCOMPAT_CSUM_V2: u32 = 0x8;
pub(crate) const INCOMPAT_CSUM_V3: u32 = 0x10;
pub(crate) const INCOMPAT_FAST_COMMIT: u32 = 0x20;
/// Incompatible features this module replays. REVOKE and ASYNC_COMMIT need
/// nothing special: revoke blocks are honoured whatever the flag says (as in
/// the kernel), and async commit only changes what the writer waited for; a
/// bad commit checksum ends the replay either way.
const KNOWN_INCOMPAT: u32 =
    INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3;

/// `s_checksum_type` / `h_chksum_type` values and the v1 checksum size.
pub(crate) const CRC32_CHKSUM: u8 = 1;
pub(crate) const CRC32_CHKSUM_SIZE: u8 = 4;
pub(crate) const CRC32C_CHKSUM: u8 = 4;

/// Commit block (`commit_header`) field offsets.
pub(crate) const COMMIT_CHKSUM_TYPE: usize = 12;
pub(crate) const COMMIT_CHKSUM_SIZE: usize = 13;
pub(crate) const COMMIT_CHKSUM: usize = 16;

/// Block tag flags.
pub(crate) const FLAG_ESCAPE: u32 = 0x1;
pub(crate) const FLAG_SAME_UUID: u32 = 0x2;
pub(crate) const FLAG_LAST_TAG: u32 = 0x8;
/// The UUID that follows a tag not marked SAME_UUID.
pub(crate) const UUID_BYTES: usize = 16;

/// `jbd2_journal_block_tail`: the crc32c at the end of descriptor and revoke
/// blocks when csum v2/v3 is on.
pub(crate) const TAIL_BYTES: usize = 4;
/// `jbd2_journal_revoke_header_t`: header plus `r_count`.
const REVOKE_HEADER_BYTES: usize = 16;
const REVOKE_COUNT: usize = 12;

/// The blocks a journal replay yields: filesystem block number to the newest
/// committed contents of that block (one filesystem block each).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Replay {
    blocks: BTreeMap<u64, Vec<u8>>,
    /// The transaction id a journal emptied after this replay starts from
    /// (`++info.end_transaction` in the kernel's recovery).
    pub next_sequence: u32,
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

    /// Every replayed block, by filesystem block number.
    pub fn blocks(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.blocks.iter().map(|(&b, d)| (b, d.as_slice()))
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
    V2 {
        seed: u32,
    },
    /// CSUM_V3: crc32c per block; 32-bit data block checksums in the tags.
    V3 {
        seed: u32,
    },
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
    /// The id of the first transaction not found (where the log ends).
    end: u32,
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
    found.end = sequence;
    Ok(found)
}

/// Pass three: the newest unrevoked, checksum-clean copy of every logged
/// block. Walking the transactions newest first and keeping the first copy
/// found gives what replaying them oldest first would, reading each block
/// once.
fn replay_blocks(journal: &Journal, log: &mut Log<'_>, scan: &Scan) -> Result<Replay> {
    let mut replay = Replay { next_sequence: scan.end.wrapping_add(1), ..Replay::default() };
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
pub(crate) fn crc32c_raw(state: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!state, data)
}

/// [`crc32c_raw`] of `block` with the four bytes at `at` read as zero (how
/// jbd2 checksums a block that holds its own checksum).
pub(crate) fn crc32c_zeroed(state: u32, block: &[u8], at: usize) -> Result<u32> {
    let after = at.checked_add(4).ok_or_else(|| Error::corrupted("checksum offset overflows"))?;
    let before = slice(block, 0, at)?;
    let rest = block.get(after..).ok_or_else(|| {
        Error::corrupted(format!("checksum at byte {at} past the end of a {}-byte block", block.len()))
    })?;
    Ok(crc32c_raw(crc32c_raw(crc32c_raw(state, before), &[0; 4]), rest))
}

/// The kernel's `crc32_be(crc, data)`: MSB-first CRC-32 (polynomial
/// 0x04C11DB7) with no inversion in or out, used by v1 journal checksums.
pub(crate) fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use fshost_sdk::ErrorCode;

    /// Block size of the synthetic journals: the smallest jbd2 allows.
    const BS: usize = 1024;
    const MAGIC_BYTES: [u8; 4] = MAGIC.to_be_bytes();

    /// Lays out a journal block by block as the jbd2 on-disk format says,
    /// independently of the parser (only the crc functions are shared; they
    /// are pinned by `crc_functions_match_published_check_values` and by the
    /// real-image tests).
    struct Builder {
        blocks: Vec<Vec<u8>>,
        version: u32,
        compat: u32,
        incompat: u32,
        first: u32,
        start: u32,
        sequence: u32,
        next: u32,
        uuid: [u8; 16],
        crc32_sum: u32,
    }

    impl Builder {
        /// A v2 journal of `maxlen` blocks, log `1..maxlen`, head at 1, first transaction 7.
        fn new(maxlen: u32, incompat: u32) -> Self {
            Self {
                blocks: vec![vec![0; BS]; maxlen as usize],
                version: SUPERBLOCK_V2,
                compat: 0,
                incompat,
                first: 1,
                start: 1,
                sequence: 7,
                next: 1,
                uuid: *b"fshost-journal-1",
                crc32_sum: !0,
            }
        }

        fn head(mut self, start: u32, sequence: u32) -> Self {
            self.start = start;
            self.next = start;
            self.sequence = sequence;
            self
        }

        fn csum(&self) -> bool {
            self.incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0
        }

        fn seed(&self) -> u32 {
            crc32c_raw(!0, &self.uuid)
        }

        fn block64(&self) -> bool {
            self.incompat & INCOMPAT_64BIT != 0
        }

        /// Tag sizes from the format: tag3 is 16 bytes; the classic tag is 8,
        /// +4 with 64-bit block numbers, +2 with csum v2.
        fn tag_bytes(&self) -> usize {
            if self.incompat & INCOMPAT_CSUM_V3 != 0 {
                return 16;
            }
            let v2 = if self.incompat & INCOMPAT_CSUM_V2 != 0 { 2 } else { 0 };
            8 + v2 + if self.block64() { 4 } else { 0 }
        }

        fn put(&mut self, block: Vec<u8>) -> u32 {
            let at = self.next;
            self.blocks[at as usize] = block;
            self.next = if at + 1 >= self.blocks.len() as u32 { self.first } else { at + 1 };
            at
        }

        fn header(blocktype: u32, sequence: u32) -> Vec<u8> {
            let mut block = vec![0; BS];
            block[0..4].copy_from_slice(&MAGIC_BYTES);
            block[4..8].copy_from_slice(&blocktype.to_be_bytes());
            block[8..12].copy_from_slice(&sequence.to_be_bytes());
            block
        }

        fn seal_tail(&self, block: &mut [u8]) {
            if self.csum() {
                block[BS - 4..].fill(0);
                let crc = crc32c_raw(self.seed(), block);
                block[BS - 4..].copy_from_slice(&crc.to_be_bytes());
            }
        }

        /// A descriptor block for `writes` and their data blocks; returns
        /// where the descriptor and each data block went.
        fn descriptor(&mut self, sequence: u32, writes: &[(u64, Vec<u8>)]) -> (u32, Vec<u32>) {
            let mut descriptor = Self::header(DESCRIPTOR_BLOCK, sequence);
            let size = self.tag_bytes();
            let mut offset = HEADER_BYTES;
            let mut logged = Vec::new();
            for (i, (fs_block, contents)) in writes.iter().enumerate() {
                let mut data = contents.clone();
                let mut flags = 0u32;
                if data[0..4] == MAGIC_BYTES {
                    data[0..4].fill(0);
                    flags |= FLAG_ESCAPE;
                }
                if i > 0 {
                    flags |= FLAG_SAME_UUID;
                }
                if i + 1 == writes.len() {
                    flags |= FLAG_LAST_TAG;
                }
                let crc = crc32c_raw(crc32c_raw(self.seed(), &sequence.to_be_bytes()), &data);
                let tag = &mut descriptor[offset..offset + size];
                tag[0..4].copy_from_slice(&(*fs_block as u32).to_be_bytes());
                let high = ((*fs_block >> 32) as u32).to_be_bytes();
                if self.incompat & INCOMPAT_CSUM_V3 != 0 {
                    tag[4..8].copy_from_slice(&flags.to_be_bytes());
                    tag[8..12].copy_from_slice(&high);
                    tag[12..16].copy_from_slice(&crc.to_be_bytes());
                } else {
                    if self.incompat & INCOMPAT_CSUM_V2 != 0 {
                        tag[4..6].copy_from_slice(&(crc as u16).to_be_bytes());
                    }
                    tag[6..8].copy_from_slice(&(flags as u16).to_be_bytes());
                    if self.block64() {
                        tag[8..12].copy_from_slice(&high);
                    }
                }
                offset += size;
                if flags & FLAG_SAME_UUID == 0 {
                    descriptor[offset..offset + 16].copy_from_slice(&self.uuid);
                    offset += 16;
                }
                logged.push(data);
            }
            self.seal_tail(&mut descriptor);
            self.crc32_sum = crc32_be(self.crc32_sum, &descriptor);
            let at = self.put(descriptor);
            let data_at = logged
                .into_iter()
                .map(|data| {
                    self.crc32_sum = crc32_be(self.crc32_sum, &data);
                    self.put(data)
                })
                .collect();
            (at, data_at)
        }

        fn revoke(&mut self, sequence: u32, fs_blocks: &[u64]) -> u32 {
            let mut block = Self::header(REVOKE_BLOCK, sequence);
            let mut offset = REVOKE_HEADER_BYTES;
            for &fs_block in fs_blocks {
                if self.block64() {
                    block[offset..offset + 8].copy_from_slice(&fs_block.to_be_bytes());
                    offset += 8;
                } else {
                    block[offset..offset + 4].copy_from_slice(&(fs_block as u32).to_be_bytes());
                    offset += 4;
                }
            }
            block[12..16].copy_from_slice(&(offset as u32).to_be_bytes());
            self.seal_tail(&mut block);
            self.put(block)
        }

        fn commit(&mut self, sequence: u32) -> u32 {
            let mut block = Self::header(COMMIT_BLOCK, sequence);
            if self.compat & COMPAT_CHECKSUM != 0 {
                block[12] = CRC32_CHKSUM;
                block[13] = CRC32_CHKSUM_SIZE;
                block[16..20].copy_from_slice(&self.crc32_sum.to_be_bytes());
            }
            self.crc32_sum = !0;
            if self.csum() {
                let crc = crc32c_raw(self.seed(), &block);
                block[16..20].copy_from_slice(&crc.to_be_bytes());
            }
            self.put(block)
        }

        /// A whole committed transaction.
        fn transaction(&mut self, sequence: u32, writes: &[(u64, Vec<u8>)], revokes: &[u64]) {
            if !writes.is_empty() {
                self.descriptor(sequence, writes);
            }
            if !revokes.is_empty() {
                self.revoke(sequence, revokes);
            }
            self.commit(sequence);
        }

        fn superblock(&self) -> Vec<u8> {
            let mut sb = Self::header(self.version, 0);
            let fields = [
                (SB_BLOCKSIZE, BS as u32),
                (SB_MAXLEN, self.blocks.len() as u32),
                (SB_FIRST, self.first),
                (SB_SEQUENCE, self.sequence),
                (SB_START, self.start),
                (SB_FEATURE_COMPAT, self.compat),
                (SB_FEATURE_INCOMPAT, self.incompat),
            ];
            for (offset, value) in fields {
                sb[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
            }
            sb[SB_UUID..SB_UUID + 16].copy_from_slice(&self.uuid);
            if self.csum() {
                sb[SB_CHECKSUM_TYPE] = CRC32C_CHKSUM;
                let crc = crc32c_raw(!0, &sb[..SB_BYTES]);
                sb[SB_CHECKSUM..SB_CHECKSUM + 4].copy_from_slice(&crc.to_be_bytes());
            }
            sb
        }

        fn build(&self) -> Vec<Vec<u8>> {
            let mut blocks = self.blocks.clone();
            blocks[0] = self.superblock();
            blocks
        }
    }

    fn replay_of(blocks: &[Vec<u8>]) -> Result<Replay> {
        let mut read = |n: u64| blocks.get(n as usize).cloned().ok_or_else(|| Error::io(format!("no block {n}")));
        replay(BS as u32, &mut read, blocks.len() as u64)
    }

    fn filled(byte: u8) -> Vec<u8> {
        vec![byte; BS]
    }

    fn block_numbers(replay: &Replay) -> Vec<u64> {
        replay.blocks.keys().copied().collect()
    }

    fn flip(blocks: &mut [Vec<u8>], block: u32, byte: usize) {
        blocks[block as usize][byte] ^= 0x5A;
    }

    #[test]
    fn crc_functions_match_published_check_values() {
        // CRC-32C("123456789") = 0xE3069283; jbd2 keeps the register uninverted.
        assert_eq!(crc32c_raw(!0, b"123456789"), !0xE306_9283);
        // Chaining the register is the same as one pass.
        assert_eq!(crc32c_raw(crc32c_raw(!0, b"1234"), b"56789"), crc32c_raw(!0, b"123456789"));
        // CRC-32/BZIP2("123456789") = 0xFC891918 is crc32_be seeded with !0, inverted.
        assert_eq!(!crc32_be(!0, b"123456789"), 0xFC89_1918);
    }

    #[test]
    fn clean_journal_replays_nothing() {
        let mut journal = Builder::new(16, INCOMPAT_REVOKE);
        journal.transaction(7, &[(100, filled(1))], &[]);
        journal.start = 0;
        let replay = replay_of(&journal.build()).unwrap();
        assert!(replay.is_empty());
        assert_eq!(replay.len(), 0);
    }

    #[test]
    fn committed_transaction_replays_its_blocks() {
        let mut journal = Builder::new(16, 0);
        journal.transaction(7, &[(100, filled(1)), (5, filled(2))], &[]);
        let replay = replay_of(&journal.build()).unwrap();
        assert_eq!(block_numbers(&replay), [5, 100]);
        assert_eq!(replay.block(100), Some(&filled(1)[..]));
        assert_eq!(replay.block(5), Some(&filled(2)[..]));
        assert_eq!(replay.block(6), None);
    }

    #[test]
    fn uncommitted_and_out_of_sequence_transactions_are_ignored() {
        let mut journal = Builder::new(16, 0);
        journal.transaction(7, &[(100, filled(1))], &[]);
        // Transaction 8 has no commit block yet.
        journal.descriptor(8, &[(101, filled(2))]);
        assert_eq!(block_numbers(&replay_of(&journal.build()).unwrap()), [100]);

        // A complete transaction with the wrong sequence ends the log too.
        let mut journal = Builder::new(16, 0);
        journal.transaction(7, &[(100, filled(1))], &[]);
        journal.transaction(9, &[(102, filled(3))], &[]);
        assert_eq!(block_numbers(&replay_of(&journal.build()).unwrap()), [100]);
    }

    #[test]
    fn newest_committed_copy_wins() {
        let mut journal = Builder::new(16, 0);
        journal.transaction(7, &[(100, filled(1)), (101, filled(1))], &[]);
        journal.transaction(8, &[(100, filled(2))], &[]);
        let replay = replay_of(&journal.build()).unwrap();
        assert_eq!(replay.block(100), Some(&filled(2)[..]));
        assert_eq!(replay.block(101), Some(&filled(1)[..]));
    }

    #[test]
    fn escaped_block_gets_its_magic_back() {
        let mut contents = filled(9);
        contents[0..4].copy_from_slice(&MAGIC_BYTES);
        let mut journal = Builder::new(16, 0);
        let (_, data_at) = journal.descriptor(7, &[(100, contents.clone())]);
        journal.commit(7);
        let blocks = journal.build();
        // The log holds the escaped copy, first word zeroed.
        assert_eq!(blocks[data_at[0] as usize][0..4], [0; 4]);
        assert_eq!(replay_of(&blocks).unwrap().block(100), Some(&contents[..]));
    }

    #[test]
    fn revoke_hides_copies_up_to_its_transaction_only() {
        let mut journal = Builder::new(32, INCOMPAT_REVOKE);
        journal.transaction(7, &[(100, filled(1)), (101, filled(1)), (102, filled(1))], &[]);
        // Transaction 8 revokes 100 and 101; transaction 9 writes 100 again.
        journal.transaction(8, &[(103, filled(2))], &[100, 101]);
        journal.transaction(9, &[(100, filled(3))], &[]);
        let replay = replay_of(&journal.build()).unwrap();
        assert_eq!(block_numbers(&replay), [100, 102, 103]);
        assert_eq!(replay.block(100), Some(&filled(3)[..]));

        // A revoke in an uncommitted transaction revokes nothing.
        let mut journal = Builder::new(32, INCOMPAT_REVOKE);
        journal.transaction(7, &[(100, filled(1))], &[]);
        journal.revoke(8, &[100]);
        assert_eq!(block_numbers(&replay_of(&journal.build()).unwrap()), [100]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut journal = Builder::new(32, INCOMPAT_REVOKE).head(1, u32::MAX);
        journal.transaction(u32::MAX, &[(100, filled(1)), (101, filled(1))], &[]);
        journal.transaction(0, &[(102, filled(2))], &[100]);
        let replay = replay_of(&journal.build()).unwrap();
        assert_eq!(block_numbers(&replay), [101, 102]);
    }

    #[test]
    fn log_wraps_around_the_end() {
        // Log is blocks 1..8; the head is at 5, so transaction 7 takes 5, 6, 7
        // and its commit wraps to 1; transaction 8 takes 2, 3, 4. Block 5 then
        // holds transaction 7's descriptor, which ends the log.
        let mut journal = Builder::new(8, 0).head(5, 7);
        journal.transaction(7, &[(100, filled(1)), (101, filled(2))], &[]);
        assert_eq!(journal.next, 2);
        journal.transaction(8, &[(102, filled(3))], &[]);
        assert_eq!(journal.next, 5);
        let replay = replay_of(&journal.build()).unwrap();
        assert_eq!(block_numbers(&replay), [100, 101, 102]);
        assert_eq!(replay.block(101), Some(&filled(2)[..]));
    }

    #[test]
    fn sixty_four_bit_tags_and_revoke_records() {
        let mut journal = Builder::new(16, INCOMPAT_64BIT | INCOMPAT_REVOKE);
        journal.transaction(7, &[(0x1_0000_0005, filled(1)), (0x2_0000_0005, filled(2))], &[]);
        journal.transaction(8, &[], &[0x2_0000_0005]);
        let replay = replay_of(&journal.build()).unwrap();
        assert_eq!(block_numbers(&replay), [0x1_0000_0005]);
    }

    #[test]
    fn version_one_superblock() {
        let mut journal = Builder::new(16, 0);
        journal.version = SUPERBLOCK_V1;
        journal.transaction(7, &[(100, filled(1))], &[]);
        assert_eq!(block_numbers(&replay_of(&journal.build()).unwrap()), [100]);
    }

    #[test]
    fn csum_v3_and_v2_journals_replay() {
        for incompat in
            [INCOMPAT_CSUM_V3, INCOMPAT_CSUM_V3 | INCOMPAT_64BIT, INCOMPAT_CSUM_V2, INCOMPAT_CSUM_V2 | INCOMPAT_64BIT]
        {
            let mut journal = Builder::new(32, incompat | INCOMPAT_REVOKE);
            let mut escaped = filled(4);
            escaped[0..4].copy_from_slice(&MAGIC_BYTES);
            journal.transaction(7, &[(100, filled(1)), (101, filled(2)), (102, escaped.clone())], &[]);
            journal.transaction(8, &[(103, filled(3))], &[101]);
            let replay = replay_of(&journal.build()).unwrap();
            assert_eq!(block_numbers(&replay), [100, 102, 103], "incompat {incompat:#x}");
            assert_eq!(replay.block(102), Some(&escaped[..]));
        }
    }

    /// Two checksummed transactions and a third, with where each block went.
    fn three_checksummed(incompat: u32) -> (Builder, Vec<u32>, Vec<u32>, u32, u32) {
        let mut journal = Builder::new(32, incompat | INCOMPAT_REVOKE);
        let (_, first_data) = journal.descriptor(7, &[(100, filled(1)), (101, filled(1))]);
        journal.commit(7);
        let (descriptor, second_data) = journal.descriptor(8, &[(102, filled(2)), (103, filled(2))]);
        let revoke = journal.revoke(8, &[100]);
        journal.commit(8);
        journal.transaction(9, &[(104, filled(3))], &[]);
        (journal, first_data, second_data, descriptor, revoke)
    }

    #[test]
    fn csum_data_block_mismatch_skips_only_that_block() {
        for incompat in [INCOMPAT_CSUM_V3, INCOMPAT_CSUM_V2] {
            let (journal, first_data, _, _, _) = three_checksummed(incompat);
            let mut blocks = journal.build();
            assert_eq!(block_numbers(&replay_of(&blocks).unwrap()), [101, 102, 103, 104]);
            flip(&mut blocks, first_data[1], 500);
            // 101's only copy is bad: skipped; everything else still replays.
            assert_eq!(block_numbers(&replay_of(&blocks).unwrap()), [102, 103, 104], "incompat {incompat:#x}");
        }
    }

    #[test]
    fn csum_bad_commit_ends_replay_before_that_transaction() {
        let (journal, _, second_data, _, _) = three_checksummed(INCOMPAT_CSUM_V3);
        let mut blocks = journal.build();
        // Transaction 8's commit directly follows its revoke block.
        let commit = second_data[1] + 2;
        assert_eq!(blocks[commit as usize][4..8], COMMIT_BLOCK.to_be_bytes());
        flip(&mut blocks, commit, 300);
        // Transaction 8 (with its revoke of 100) and 9 are not replayed.
        assert_eq!(block_numbers(&replay_of(&blocks).unwrap()), [100, 101]);
    }

    #[test]
    fn csum_bad_descriptor_or_revoke_tail_ends_replay_before_that_transaction() {
        let (journal, _, _, descriptor, revoke) = three_checksummed(INCOMPAT_CSUM_V3);
        for bad in [descriptor, revoke] {
            let mut blocks = journal.build();
            flip(&mut blocks, bad, 900);
            assert_eq!(block_numbers(&replay_of(&blocks).unwrap()), [100, 101], "bad block {bad}");
        }
    }

    #[test]
    fn csum_bad_superblock_is_corrupted() {
        let (journal, ..) = three_checksummed(INCOMPAT_CSUM_V3);
        let mut blocks = journal.build();
        flip(&mut blocks, 0, 0x200);
        let err = replay_of(&blocks).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Corrupted);
        assert!(err.message().starts_with("journal superblock: checksum"), "{err}");
    }

    #[test]
    fn compat_v1_checksum_covers_the_whole_transaction() {
        let mut journal = Builder::new(32, INCOMPAT_ASYNC_COMMIT);
        journal.compat = COMPAT_CHECKSUM;
        journal.transaction(7, &[(100, filled(1))], &[]);
        let (_, data) = journal.descriptor(8, &[(101, filled(2))]);
        journal.commit(8);
        journal.transaction(9, &[(102, filled(3))], &[]);
        let mut blocks = journal.build();
        assert_eq!(block_numbers(&replay_of(&blocks).unwrap()), [100, 101, 102]);
        // A torn data block in transaction 8 fails its commit's crc32: the
        // replay ends after transaction 7 (async commit or not).
        flip(&mut blocks, data[0], 7);
        assert_eq!(block_numbers(&replay_of(&blocks).unwrap()), [100]);
    }

    #[test]
    fn compat_v1_commit_without_checksum_is_accepted() {
        let mut journal = Builder::new(32, 0);
        journal.transaction(7, &[(100, filled(1))], &[]);
        journal.compat = COMPAT_CHECKSUM;
        // The commit block carries type 0, size 0, checksum 0, which the kernel accepts.
        assert_eq!(block_numbers(&replay_of(&journal.build()).unwrap()), [100]);
    }

    #[test]
    fn unknown_incompat_and_fast_commit_are_unsupported_unless_clean() {
        for incompat in [0x100, INCOMPAT_FAST_COMMIT] {
            let mut journal = Builder::new(16, incompat);
            journal.transaction(7, &[(100, filled(1))], &[]);
            let err = replay_of(&journal.build()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Unsupported, "{err}");
            journal.start = 0;
            assert!(replay_of(&journal.build()).unwrap().is_empty());
        }
    }

    #[test]
    fn malformed_superblocks_are_corrupted() {
        let mut journal = Builder::new(16, 0);
        journal.transaction(7, &[(100, filled(1))], &[]);
        type Spoil = fn(&mut Builder, &mut Vec<Vec<u8>>);
        let cases: [(&str, Spoil); 8] = [
            ("magic", |_, b| b[0][0] = 0),
            ("block type", |_, b| b[0][7] = 2),
            ("block size", |_, b| b[0][SB_BLOCKSIZE + 2] = 0x10),
            ("s_maxlen", |_, b| b.truncate(8)),
            ("s_first", |j, b| {
                j.first = 0;
                b[0] = j.superblock();
            }),
            ("s_start", |j, b| {
                j.start = 16;
                b[0] = j.superblock();
            }),
            ("checksum v2 and v3", |j, b| {
                j.incompat = INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3;
                b[0] = j.superblock();
            }),
            ("checksum type", |j, b| {
                j.incompat = INCOMPAT_CSUM_V3;
                b[0] = j.superblock();
                b[0][SB_CHECKSUM_TYPE] = 1;
            }),
        ];
        for (what, spoil) in cases {
            let mut journal = Builder { blocks: journal.blocks.clone(), ..Builder::new(16, 0) };
            let mut blocks = journal.build();
            spoil(&mut journal, &mut blocks);
            let err = replay_of(&blocks).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Corrupted, "{what}: {err}");
            assert!(err.message().starts_with("journal superblock: "), "{what}: {err}");
        }
        let blocks = journal.build();
        let mut read = |n: u64| Ok(blocks[n as usize].clone());
        let err = replay(1000, &mut read, 16).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Corrupted, "{err}");
        let err = replay(2048, &mut read, 16).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Io, "{err}");
        assert!(err.message().contains("read 1024 bytes, expected 2048"), "{err}");
        assert_eq!(replay(1024, &mut read, 0).unwrap_err().code(), ErrorCode::Corrupted);
    }

    #[test]
    fn revoke_count_past_its_block_is_corrupted() {
        let mut journal = Builder::new(16, INCOMPAT_REVOKE);
        journal.transaction(7, &[(100, filled(1))], &[]);
        let revoke = journal.revoke(8, &[100]);
        journal.commit(8);
        let mut blocks = journal.build();
        blocks[revoke as usize][12..16].copy_from_slice(&(BS as u32 + 1).to_be_bytes());
        let err = replay_of(&blocks).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Corrupted);
        assert!(err.message().starts_with(&format!("journal block {revoke}: revoke block r_count")), "{err}");
    }

    #[test]
    fn read_errors_carry_the_journal_block() {
        let mut journal = Builder::new(16, 0);
        journal.transaction(7, &[(100, filled(1))], &[]);
        let blocks = journal.build();
        let mut read = |n: u64| if n == 2 { Err(Error::io("device gone")) } else { Ok(blocks[n as usize].clone()) };
        let err = replay(BS as u32, &mut read, 16).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Io);
        assert_eq!(err.message(), "journal block 2: device gone");
    }

    #[test]
    fn a_log_that_never_ends_is_bounded() {
        // Every log block is a revoke block of transaction 7, so the kernel's
        // walk would go round forever; ours stops after one lap.
        let mut journal = Builder::new(64, INCOMPAT_REVOKE);
        for _ in 1..64 {
            journal.revoke(7, &[1, 2, 3]);
        }
        let mut reads = 0;
        let blocks = journal.build();
        let mut read = |n: u64| {
            reads += 1;
            Ok(blocks[n as usize].clone())
        };
        assert!(replay(BS as u32, &mut read, 64).unwrap().is_empty());
        assert_eq!(reads, 64);

        // A descriptor claiming more data blocks (20) than the log holds (7
        // blocks) cannot be followed by its commit block: nothing replays.
        let mut journal = Builder::new(8, 0);
        let mut descriptor = Builder::header(DESCRIPTOR_BLOCK, 7);
        // Tag 0 at byte 12 is followed by the UUID; tags 1..20 share it.
        for i in 1..20 {
            let at = HEADER_BYTES + 8 + UUID_BYTES + (i - 1) * 8;
            let flags = if i == 19 { FLAG_SAME_UUID | FLAG_LAST_TAG } else { FLAG_SAME_UUID };
            descriptor[at + 6..at + 8].copy_from_slice(&(flags as u16).to_be_bytes());
        }
        journal.put(descriptor);
        assert!(replay_of(&journal.build()).unwrap().is_empty());
    }

    /// Random damage to valid journals of every flavour must give `Ok` or
    /// `Err`, never a panic or a block of the wrong size.
    #[test]
    fn damaged_journals_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let flavours = [
            (0, 0),
            (COMPAT_CHECKSUM, INCOMPAT_64BIT),
            (0, INCOMPAT_CSUM_V2),
            (0, INCOMPAT_CSUM_V3 | INCOMPAT_64BIT | INCOMPAT_REVOKE),
        ];
        for (compat, incompat) in flavours {
            let mut journal = Builder::new(12, incompat).head(7, 40);
            journal.compat = compat;
            journal.transaction(40, &[(1, filled(1)), (2, filled(2))], &[3]);
            journal.transaction(41, &[(3, filled(3))], &[1]);
            journal.transaction(42, &[(4, filled(4))], &[]);
            let clean = journal.build();
            for _ in 0..3000 {
                let mut blocks = clean.clone();
                for _ in 0..1 + random(4) {
                    let block = random(blocks.len());
                    // Mostly headers, tags and superblock fields, where the structure is.
                    let byte = if random(4) == 0 { random(BS) } else { random(64) };
                    blocks[block][byte] = random(256) as u8;
                }
                if let Ok(replay) = replay_of(&blocks) {
                    assert!(replay.blocks.values().all(|b| b.len() == BS));
                }
            }
        }
    }

    /// Tests against the real tools. Journals written by debugfs (its
    /// `journal_open/journal_write/journal_close` commands, which leave the
    /// image needing recovery) and by the kernel (a loop mount copied while
    /// still mounted); replayed by us and, as the oracle, for real by e2fsck
    /// on a copy. debugfs and e2fsck work on files; the kernel tests need
    /// root for loop devices and mount, and say SKIPPED without it.
    mod oracle {
        use super::*;
        use std::fs;
        use std::path::{Path, PathBuf};
        use std::process::Command;
        use std::sync::Mutex;

        const FS_BS: usize = 4096;

        /// Loop devices are found and attached one test at a time.
        static LOOP_DEVICES: Mutex<()> = Mutex::new(());

        fn is_root() -> bool {
            fs::read_to_string("/proc/self/status").is_ok_and(|status| {
                status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
            })
        }

        /// A directory under the system temp dir, removed on drop.
        struct Scratch(PathBuf);

        impl Scratch {
            fn new(name: &str) -> Self {
                let dir = std::env::temp_dir().join(format!("fshost-journal-{name}-{}", std::process::id()));
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).unwrap();
                Self(dir)
            }

            fn path(&self, name: &str) -> PathBuf {
                self.0.join(name)
            }
        }

        impl Drop for Scratch {
            fn drop(&mut self) {
                let _ = fs::remove_dir_all(&self.0);
            }
        }

        /// An image attached to a loop device and mounted; unmounted and
        /// detached on drop, whatever happened in between.
        struct Mounted {
            dir: PathBuf,
            device: String,
            mounted: bool,
        }

        impl Mounted {
            fn new(img: &Path, dir: &Path, options: &str) -> Self {
                fs::create_dir_all(dir).unwrap();
                let device = String::from_utf8(run("losetup", &["--find", "--show", path(img)])).unwrap();
                let mut mounted = Self { dir: dir.to_owned(), device: device.trim().to_owned(), mounted: false };
                run("mount", &["-t", "ext4", "-o", options, &mounted.device, path(dir)]);
                mounted.mounted = true;
                mounted
            }
        }

        impl Drop for Mounted {
            fn drop(&mut self) {
                if self.mounted {
                    let _ = Command::new("umount").arg(&self.dir).status();
                }
                let _ = Command::new("losetup").args(["-d", &self.device]).status();
            }
        }

        fn path(path: &Path) -> &str {
            path.to_str().unwrap()
        }

        /// Run a tool, which must succeed; its standard output.
        fn run(program: &str, args: &[&str]) -> Vec<u8> {
            let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
            assert!(
                out.status.success(),
                "{program} {args:?}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }

        fn mkfs(img: &Path, extra: &[&str]) {
            let mut args = vec!["-q", "-F", "-b", "4096"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&[path(img), "64M"]);
            run("mkfs.ext4", &args);
        }

        /// The journal's logical blocks, read by debugfs through inode 8.
        fn journal_of(img: &Path) -> Vec<u8> {
            run("debugfs", &["-R", "cat <8>", path(img)])
        }

        fn read_journal(journal: &[u8]) -> impl FnMut(u64) -> Result<Vec<u8>> + '_ {
            |n: u64| {
                let start = n as usize * FS_BS;
                journal.get(start..start + FS_BS).map(<[u8]>::to_vec).ok_or_else(|| Error::io("past the journal"))
            }
        }

        fn replay_image(img: &Path) -> Result<Replay> {
            let journal = journal_of(img);
            replay(FS_BS as u32, &mut read_journal(&journal), (journal.len() / FS_BS) as u64)
        }

        /// What the log of an image holds, to check a test exercised what it meant to.
        fn scan_image(img: &Path) -> (Journal, Scan) {
            let journal = journal_of(img);
            let mut read = read_journal(&journal);
            let mut log = Log { read: &mut read, block_size: FS_BS };
            let superblock = log.read(0).unwrap();
            let parsed = Journal::parse(FS_BS, &superblock, (journal.len() / FS_BS) as u64).unwrap().unwrap();
            let scan = scan(&parsed, &mut log).unwrap();
            (parsed, scan)
        }

        /// The filesystem block holding journal block `n`.
        fn journal_block_on_disk(img: &Path, n: u64) -> u64 {
            let out = run("debugfs", &["-R", &format!("bmap <8> {n}"), path(img)]);
            String::from_utf8(out).unwrap().trim().parse().unwrap()
        }

        fn fs_block(image: &[u8], n: u64) -> &[u8] {
            &image[n as usize * FS_BS..(n as usize + 1) * FS_BS]
        }

        /// `img` after e2fsck replayed its journal for real, on a copy.
        /// `journal_only` keeps e2fsck from repairing anything else, so
        /// every block it changes comes from the journal.
        fn replayed_by_e2fsck(img: &Path) -> Vec<u8> {
            let copy = img.with_extension("e2fsck");
            fs::copy(img, &copy).unwrap();
            let out = Command::new("e2fsck").args(["-fy", "-E", "journal_only", path(&copy)]).output().unwrap();
            // 0: nothing to fix; 1: fixed (a journal checksum error counts).
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "e2fsck: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let replayed = fs::read(&copy).unwrap();
            fs::remove_file(&copy).unwrap();
            replayed
        }

        /// Our replay against e2fsck's: every block we replay reads the same
        /// in e2fsck's result, and every block e2fsck changed is one we
        /// replay, apart from what e2fsck updates after replaying: the ext4
        /// superblock (bytes 1024..2048 of block 0) and the journal's own
        /// superblock, which it marks clean.
        fn assert_same_as_e2fsck(img: &Path, replay: &Replay) {
            let before = fs::read(img).unwrap();
            let after = replayed_by_e2fsck(img);
            assert_eq!(before.len(), after.len());
            for (&n, ours) in &replay.blocks {
                let theirs = fs_block(&after, n);
                if n == 0 {
                    assert!(ours[..1024] == theirs[..1024] && ours[2048..] == theirs[2048..], "block 0 differs");
                } else {
                    assert!(ours[..] == theirs[..], "block {n}: our replay differs from e2fsck's");
                }
            }
            let journal_superblock = journal_block_on_disk(img, 0);
            for n in 1..(before.len() / FS_BS) as u64 {
                if fs_block(&before, n) != fs_block(&after, n) && n != journal_superblock {
                    assert!(replay.blocks.contains_key(&n), "e2fsck replayed block {n}, we did not");
                }
            }
        }

        /// `count` distinct 4 KiB blocks labelled `label`; block `escaped`,
        /// if any, starts with the jbd2 magic, so jbd2 must escape it.
        fn blocks(label: u8, count: usize, escaped: Option<usize>) -> Vec<Vec<u8>> {
            (0..count)
                .map(|i| {
                    let mut block: Vec<u8> = (0..FS_BS).map(|b| (b as u8).wrapping_mul(31) ^ label).collect();
                    block[4] = label;
                    block[5] = i as u8;
                    if escaped == Some(i) {
                        block[0..4].copy_from_slice(&MAGIC.to_be_bytes());
                    }
                    block
                })
                .collect()
        }

        /// A fresh image with four debugfs transactions in its journal:
        /// 1 writes A0..A2 to 6000..6002 (A2 starts with the jbd2 magic);
        /// 2 writes B0 to 6100 and revokes 6001; 3 writes C0 to 6000;
        /// 4 writes D0 to 6200 but is never committed.
        struct DebugfsJournal {
            scratch: Scratch,
            a: Vec<Vec<u8>>,
            b: Vec<Vec<u8>>,
            c: Vec<Vec<u8>>,
        }

        impl DebugfsJournal {
            fn new(name: &str, checksums: bool) -> Self {
                let scratch = Scratch::new(name);
                let (a, b, c, d) =
                    (blocks(0xA, 3, Some(2)), blocks(0xB, 1, None), blocks(0xC, 1, None), blocks(0xD, 1, None));
                for (file, contents) in [("a", &a), ("b", &b), ("c", &c), ("d", &d)] {
                    fs::write(scratch.path(file), contents.concat()).unwrap();
                }
                let img = scratch.path("img");
                mkfs(&img, &[]);
                // One journal_open/close per transaction: debugfs 1.47 loses a
                // commit block when one session writes several.
                let open = if checksums { "jo -c" } else { "jo" };
                let dir = path(&scratch.0);
                let script = format!(
                    "{open}\njw -b 6000,6001,6002 {dir}/a\njc\njo\njw -b 6100 -r 6001 {dir}/b\njc\n\
                     jo\njw -b 6000 {dir}/c\njc\njo\njw -b 6200 -c {dir}/d\njc\n"
                );
                fs::write(scratch.path("script"), script).unwrap();
                run("debugfs", &["-w", "-f", path(&scratch.path("script")), path(&img)]);
                Self { scratch, a, b, c }
            }

            fn img(&self) -> PathBuf {
                self.scratch.path("img")
            }

            /// Flip a byte of journal block `n` in the image.
            fn damage_journal_block(&self, n: u64) {
                let img = self.img();
                let mut image = fs::read(&img).unwrap();
                let at = journal_block_on_disk(&img, n) as usize * FS_BS + 300;
                image[at] ^= 0xFF;
                fs::write(&img, image).unwrap();
            }
        }

        fn assert_blocks(replay: &Replay, expected: &[(u64, &Vec<u8>)]) {
            assert_eq!(block_numbers(replay), expected.iter().map(|&(n, _)| n).collect::<Vec<_>>());
            for &(n, contents) in expected {
                assert!(replay.block(n) == Some(&contents[..]), "block {n} has the wrong contents");
            }
        }

        fn debugfs_journal_replays_what_was_written(checksums: bool) {
            let journal = DebugfsJournal::new(if checksums { "debugfs-csum" } else { "debugfs" }, checksums);
            let (parsed, scan) = scan_image(&journal.img());
            let expected_checksum = if checksums { "V3" } else { "None" };
            assert!(format!("{:?}", parsed.checksum).starts_with(expected_checksum), "{:?}", parsed.checksum);
            assert_eq!(scan.transactions.len(), 3);
            let replay = replay_image(&journal.img()).unwrap();
            assert_blocks(&replay, &[(6000, &journal.c[0]), (6002, &journal.a[2]), (6100, &journal.b[0])]);
            assert_same_as_e2fsck(&journal.img(), &replay);
        }

        #[test]
        fn debugfs_journal_without_checksums() {
            debugfs_journal_replays_what_was_written(false);
        }

        #[test]
        fn debugfs_journal_with_csum_v3() {
            debugfs_journal_replays_what_was_written(true);
        }

        #[test]
        fn debugfs_csum_v3_bad_data_block_is_skipped_like_e2fsck() {
            let journal = DebugfsJournal::new("debugfs-bad-data", true);
            let (_, scan) = scan_image(&journal.img());
            let copy_of_6002 = scan.transactions[0].blocks.iter().find(|l| l.tag.fs_block == 6002).unwrap();
            journal.damage_journal_block(copy_of_6002.log_block);
            let replay = replay_image(&journal.img()).unwrap();
            assert_blocks(&replay, &[(6000, &journal.c[0]), (6100, &journal.b[0])]);
            assert_same_as_e2fsck(&journal.img(), &replay);
        }

        #[test]
        fn debugfs_csum_v3_bad_commit_ends_replay_like_e2fsck() {
            let journal = DebugfsJournal::new("debugfs-bad-commit", true);
            let (_, scan) = scan_image(&journal.img());
            // Transaction 2 is a descriptor, B0, the revoke block, the commit.
            let commit = scan.transactions[1].blocks[0].log_block + 2;
            let log = journal_of(&journal.img());
            let header = &log[commit as usize * FS_BS..][..12];
            assert_eq!(header[4..8], COMMIT_BLOCK.to_be_bytes());
            assert_eq!(header[8..12], scan.transactions[1].sequence.to_be_bytes());
            journal.damage_journal_block(commit);
            let replay = replay_image(&journal.img()).unwrap();
            assert_blocks(&replay, &[(6000, &journal.a[0]), (6001, &journal.a[1]), (6002, &journal.a[2])]);
            assert_same_as_e2fsck(&journal.img(), &replay);
        }

        /// Mount a fresh image (made with `mkfs_options`) with `options`;
        /// then, round after round (at most 64), let `work` change it, sync,
        /// and copy the image while it is still mounted, until `enough`
        /// accepts the copy. The copy needs recovery; returns its path.
        fn kernel_journal(
            scratch: &Scratch,
            mkfs_options: &[&str],
            options: &str,
            mut work: impl FnMut(&Path, u32),
            enough: impl Fn(&Path) -> bool,
        ) -> PathBuf {
            let img = scratch.path("live.img");
            let copy = scratch.path("crashed.img");
            mkfs(&img, mkfs_options);
            let _serial = LOOP_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
            let mounted = Mounted::new(&img, &scratch.path("mnt"), options);
            for round in 0..64 {
                work(&mounted.dir, round);
                // syncfs of this filesystem alone (and its loop device):
                // a global sync(2) waits on every filesystem of the
                // machine, one stuck elsewhere included.
                run("sync", &["-f", mounted.dir.to_str().expect("a UTF-8 scratch path")]);
                fs::copy(&img, &copy).unwrap();
                if enough(&copy) {
                    return copy;
                }
            }
            panic!("the kernel never left the journal as this test needs it");
        }

        #[test]
        fn kernel_journal_matches_e2fsck() {
            if !is_root() {
                eprintln!("SKIPPED kernel_journal_matches_e2fsck: needs root to mount a loop device");
                return;
            }
            let scratch = Scratch::new("kernel");
            let crashed = kernel_journal(
                &scratch,
                &[],
                "rw",
                |mnt, _| {
                    // Directory blocks freed by the rm are revoked in the journal.
                    for round in 0..3 {
                        let dir = mnt.join(format!("d{round}"));
                        fs::create_dir(&dir).unwrap();
                        for i in 0..300 {
                            fs::write(dir.join(format!("a-rather-long-file-name-{i:04}")), format!("{round} {i}"))
                                .unwrap();
                        }
                        run("sync", &["-f", mnt.to_str().expect("a UTF-8 scratch path")]);
                        if round < 2 {
                            fs::remove_dir_all(&dir).unwrap();
                        }
                    }
                    fs::write(mnt.join("big"), vec![7u8; 1 << 20]).unwrap();
                },
                |_| true,
            );
            let (parsed, scan) = scan_image(&crashed);
            assert!(matches!(parsed.checksum, Checksum::V3 { .. }), "{:?}", parsed.checksum);
            assert!(
                !scan.transactions.is_empty() && !scan.revoked.is_empty(),
                "{} transactions",
                scan.transactions.len()
            );
            let replay = replay_image(&crashed).unwrap();
            assert!(replay.len() > 10, "{replay:?}");
            assert_same_as_e2fsck(&crashed, &replay);
        }

        #[test]
        fn kernel_data_journal_wraps_and_escapes_like_e2fsck() {
            if !is_root() {
                eprintln!(
                    "SKIPPED kernel_data_journal_wraps_and_escapes_like_e2fsck: needs root to mount a loop device"
                );
                return;
            }
            let scratch = Scratch::new("kernel-data");
            // data=journal puts file data through the 4 MiB journal: 256 KiB
            // rounds go round the log, checkpointed now and then, until the
            // live log crosses its end. Blocks that start with the jbd2
            // magic are escaped.
            let wrapped = |copy: &Path| {
                let (parsed, scan) = scan_image(copy);
                scan.transactions.iter().flat_map(|t| t.blocks.iter()).any(|l| l.log_block < parsed.start)
            };
            let crashed = kernel_journal(
                &scratch,
                &[],
                "data=journal",
                |mnt, round| {
                    let contents: Vec<u8> = (0..64u32)
                        .flat_map(|i| {
                            let mut block = vec![round as u8; FS_BS];
                            if i % 2 == 0 {
                                block[0..4].copy_from_slice(&MAGIC.to_be_bytes());
                            }
                            block[4..8].copy_from_slice(&i.to_be_bytes());
                            block
                        })
                        .collect();
                    fs::write(mnt.join(format!("f{round}")), contents).unwrap();
                },
                wrapped,
            );
            let (parsed, scan) = scan_image(&crashed);
            let logged = || scan.transactions.iter().flat_map(|t| t.blocks.iter());
            assert!(logged().any(|l| l.log_block < parsed.start), "the live log does not wrap");
            assert!(logged().any(|l| l.tag.flags & FLAG_ESCAPE != 0), "no escaped block in the log");
            let replay = replay_image(&crashed).unwrap();
            let escaped = logged().find(|l| l.tag.flags & FLAG_ESCAPE != 0).unwrap();
            assert_eq!(replay.block(escaped.tag.fs_block).unwrap()[0..4], MAGIC.to_be_bytes());
            assert_same_as_e2fsck(&crashed, &replay);
        }

        #[test]
        fn kernel_v1_checksum_async_commit_journal_matches_e2fsck() {
            if !is_root() {
                eprintln!(
                    "SKIPPED kernel_v1_checksum_async_commit_journal_matches_e2fsck: needs root to mount a loop device"
                );
                return;
            }
            let scratch = Scratch::new("kernel-v1");
            let options = "journal_checksum,journal_async_commit,data=writeback";
            let crashed = kernel_journal(
                &scratch,
                &["-O", "^metadata_csum"],
                options,
                |mnt, _| {
                    for i in 0..200 {
                        fs::write(mnt.join(format!("f{i}")), [1u8; 100]).unwrap();
                        if i % 50 == 0 {
                            run("sync", &["-f", mnt.to_str().expect("a UTF-8 scratch path")]);
                        }
                    }
                },
                |_| true,
            );
            let (parsed, scan) = scan_image(&crashed);
            assert_eq!(parsed.checksum, Checksum::V1);
            assert!(scan.transactions.len() > 1, "{} transactions", scan.transactions.len());
            let replay = replay_image(&crashed).unwrap();
            assert!(!replay.is_empty());
            assert_same_as_e2fsck(&crashed, &replay);
        }
    }
}
