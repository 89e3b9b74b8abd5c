//! Writing the jbd2 journal, as the kernel's ext4 does in ordered mode
//! (behind the `journal` mount option until its crash tests have had a
//! long run: see tests/crash.rs).
//!
//! Why: without a journal every writer call changes metadata blocks in
//! place, so a crash between two of them leaves a half-done rename or
//! truncate that only e2fsck can repair. With it, the metadata blocks a
//! set of calls changes are collected in memory (a running transaction,
//! held by [`crate::disk::Disk`], which reads see), then written to the
//! journal, committed, and only then written home ("checkpointed"); a
//! crash at any point leaves either the old state or, after the journal is
//! replayed (by the kernel, e2fsck, or this guest's read side), the new one.
//!
//! A commit, as `jbd2_journal_commit_transaction` writes it:
//! 1. the journal superblock names the log start and this transaction's id
//!    (it was empty), then descriptor blocks (one tag per logged block:
//!    64-bit block numbers with INCOMPAT_64BIT, the per-block checksums and
//!    descriptor tail of csum v2/v3, ESCAPE for a block that begins with
//!    the jbd2 magic) each followed by the blocks it describes;
//! 2. a device flush: those blocks, and the file data the host wrote into
//!    newly allocated blocks before this commit (ordered mode), are durable;
//! 3. the commit block (crc32 of the transaction with compat checksum v1,
//!    crc32c of the block with v2/v3), and a flush;
//! 4. the checkpoint: every block written home, a flush, and the journal
//!    superblock marked empty with the next transaction id, and a flush.
//!
//! Simplifications, each keeping replay exact:
//! - The checkpoint follows each commit synchronously, so the log holds at
//!   most one transaction, always starting at `s_first`. Hence no revoke
//!   records: a block logged by a transaction is home before any later
//!   transaction can free and reuse it, and replay never sees an older
//!   transaction. Within a transaction, blocks it frees are not handed out
//!   again until it commits (`State::freed`, the allocator skips them), so
//!   file data written by the host never lands in a block the committed or
//!   the older state still uses as metadata.
//! - A transaction is committed at fsync, syncfs, unmount, and between two
//!   writer calls once it holds a quarter of the log; never in the middle
//!   of a call (a call's changes are atomic).
//! - Fast commits and external journals are refused.

use std::collections::BTreeMap;

use fshost_sdk::bytes::be_u32;
use fshost_sdk::{Error, FileType, Result, ResultExt};

use crate::disk::Disk;
use crate::features::{incompat, ro_compat};
use crate::fs::Ext4;
// The on-disk format constants are the replay's: one definition of jbd2.
use crate::journal::{
    COMMIT_BLOCK, COMMIT_CHKSUM, COMMIT_CHKSUM_SIZE, COMMIT_CHKSUM_TYPE, COMPAT_CHECKSUM, CRC32_CHKSUM,
    CRC32_CHKSUM_SIZE, CRC32C_CHKSUM, DESCRIPTOR_BLOCK, FLAG_ESCAPE, FLAG_LAST_TAG, FLAG_SAME_UUID, HEADER_BYTES,
    INCOMPAT_64BIT, INCOMPAT_ASYNC_COMMIT, INCOMPAT_CSUM_V2, INCOMPAT_CSUM_V3, INCOMPAT_FAST_COMMIT, INCOMPAT_REVOKE,
    MAGIC, SB_BLOCKSIZE, SB_BYTES, SB_CHECKSUM, SB_CHECKSUM_TYPE, SB_FEATURE_COMPAT, SB_FEATURE_INCOMPAT, SB_FIRST,
    SB_MAXLEN, SB_SEQUENCE, SB_START, SB_UUID, SUPERBLOCK_V1, SUPERBLOCK_V2, TAIL_BYTES, UUID_BYTES, crc32_be,
    crc32c_raw, crc32c_zeroed,
};
use crate::mapping::{self, Run};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    None,
    V1,
    V2(u32),
    V3(u32),
}

/// The internal journal, opened for writing.
#[derive(Debug)]
pub(crate) struct Journal {
    bs: usize,
    /// The journal inode's blocks, whole.
    runs: Vec<Run>,
    /// The log: journal blocks `first..end`.
    first: u64,
    end: u64,
    /// The next transaction's id.
    sequence: u32,
    block64: bool,
    checksum: Checksum,
    uuid: [u8; UUID_BYTES],
    /// The journal superblock's bytes (the first 1024 of journal block 0).
    sb: Vec<u8>,
}

impl Journal {
    /// Open the internal journal of `fs` (already recovered: empty).
    pub(crate) fn open(fs: &Ext4) -> Result<Self> {
        let vol = &fs.vol;
        if vol.sb.journal_inum == 0 {
            return Err(Error::unsupported("the journal is on an external device, which this guest does not write"));
        }
        let inode = crate::inode::read(vol, vol.sb.journal_inum).context("journal inode")?;
        if !inode.in_use() || inode.kind()? != FileType::Regular {
            return Err(Error::corrupted("the journal inode is not a file"));
        }
        let bs = vol.bs();
        let blocks = inode.size / bs;
        let mut runs: Vec<Run> = Vec::new();
        let mut at = 0;
        while at < blocks {
            let got = mapping::runs(vol, &inode, at, blocks, 256)?;
            let Some(last) = got.runs.last() else { break };
            let next = last.end();
            for run in got.runs {
                if run.lblk != runs.last().map_or(0, Run::end) || run.unwritten {
                    return Err(Error::corrupted(format!("the journal inode has a hole at block {}", run.lblk)));
                }
                runs.push(run);
            }
            if next <= at {
                break;
            }
            at = next;
        }
        let mapped = runs.last().map_or(0, Run::end);
        let bsu = bs as usize;
        let block0 = runs.first().ok_or_else(|| Error::corrupted("the journal inode has no blocks"))?;
        let sb = vol.disk.read(block0.pblk * bs, SB_BYTES)?;
        if be_u32(&sb, 0)? != MAGIC {
            return Err(Error::corrupted("the journal superblock has no jbd2 magic"));
        }
        let version = be_u32(&sb, 4)?;
        if version != SUPERBLOCK_V1 && version != SUPERBLOCK_V2 {
            return Err(Error::corrupted(format!("journal superblock type {version}")));
        }
        if be_u32(&sb, SB_BLOCKSIZE)? as usize != bsu {
            return Err(Error::unsupported("the journal's block size differs from the filesystem's"));
        }
        let end = u64::from(be_u32(&sb, SB_MAXLEN)?);
        let first = u64::from(be_u32(&sb, SB_FIRST)?);
        if end > mapped || first == 0 || first + 8 > end {
            return Err(Error::corrupted(format!(
                "journal geometry first {first} maxlen {end} ({mapped} blocks mapped)"
            )));
        }
        if be_u32(&sb, SB_START)? != 0 {
            return Err(Error::corrupted("the journal is not empty after recovery"));
        }
        let (mut compat, mut incompat) = if version == SUPERBLOCK_V2 {
            (be_u32(&sb, SB_FEATURE_COMPAT)?, be_u32(&sb, SB_FEATURE_INCOMPAT)?)
        } else {
            (0, 0)
        };
        let mut sb = sb;
        // As the kernel's ext4 sets them at mount (mkfs leaves none):
        // checksum v3 with metadata_csum, 64-bit block numbers with 64bit.
        let features = vol.sb.features;
        if version == SUPERBLOCK_V2 {
            if features.ro_compat(ro_compat::METADATA_CSUM) {
                compat &= !COMPAT_CHECKSUM;
                incompat = (incompat & !INCOMPAT_CSUM_V2) | INCOMPAT_CSUM_V3;
                sb[SB_CHECKSUM_TYPE] = CRC32C_CHKSUM;
            }
            if features.incompat(incompat::BIT64) {
                incompat |= INCOMPAT_64BIT;
            }
            sb[SB_FEATURE_COMPAT..SB_FEATURE_COMPAT + 4].copy_from_slice(&compat.to_be_bytes());
            sb[SB_FEATURE_INCOMPAT..SB_FEATURE_INCOMPAT + 4].copy_from_slice(&incompat.to_be_bytes());
        }
        if incompat & INCOMPAT_FAST_COMMIT != 0 {
            return Err(Error::unsupported("the journal has fast commits, which this guest does not write"));
        }
        let known = INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3;
        if incompat & !known != 0 {
            return Err(Error::unsupported(format!("the journal has unknown features {:#x}", incompat & !known)));
        }
        let mut uuid = [0u8; UUID_BYTES];
        uuid.copy_from_slice(&sb[SB_UUID..SB_UUID + UUID_BYTES]);
        let checksum = if incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0 {
            if sb[SB_CHECKSUM_TYPE] != CRC32C_CHKSUM {
                return Err(Error::corrupted("journal checksum type is not crc32c"));
            }
            let seed = crc32c_raw(!0, &uuid);
            if incompat & INCOMPAT_CSUM_V3 != 0 { Checksum::V3(seed) } else { Checksum::V2(seed) }
        } else if compat & COMPAT_CHECKSUM != 0 {
            Checksum::V1
        } else {
            Checksum::None
        };
        let mut journal = Journal {
            bs: bsu,
            runs,
            first,
            end,
            sequence: be_u32(&sb, SB_SEQUENCE)?,
            block64: incompat & INCOMPAT_64BIT != 0,
            checksum,
            uuid,
            sb,
        };
        let sequence = journal.sequence;
        journal.write_sb(&vol.disk, 0, sequence)?;
        vol.disk.device().flush()?;
        Ok(journal)
    }

    /// The filesystem block holding journal block `n`.
    fn pblk(&self, n: u64) -> Result<u64> {
        let i = self.runs.partition_point(|r| r.end() <= n);
        match self.runs.get(i) {
            Some(r) if r.lblk <= n => Ok(r.pblk + (n - r.lblk)),
            _ => Err(Error::corrupted(format!("journal block {n} is not mapped"))),
        }
    }

    /// `journal_tag_bytes()`.
    fn tag_bytes(&self) -> usize {
        match (self.checksum, self.block64) {
            (Checksum::V3(_), _) => 16,
            (Checksum::V2(_), true) => 14,
            (Checksum::V2(_), false) => 10,
            (_, true) => 12,
            (_, false) => 8,
        }
    }

    fn tail_bytes(&self) -> usize {
        if matches!(self.checksum, Checksum::V2(_) | Checksum::V3(_)) { TAIL_BYTES } else { 0 }
    }

    /// Tags that fit one descriptor block (the first is followed by the UUID).
    fn tags_per_descriptor(&self) -> usize {
        (self.bs - HEADER_BYTES - self.tail_bytes() - UUID_BYTES) / self.tag_bytes()
    }

    /// Log blocks a transaction of `n` filesystem blocks takes.
    fn log_blocks(&self, n: usize) -> u64 {
        (n + n.div_ceil(self.tags_per_descriptor()) + 1) as u64
    }

    /// The most blocks a running transaction should hold before it is
    /// committed at the next writer call: a quarter of the log.
    pub(crate) fn soft_limit(&self) -> usize {
        ((self.end - self.first) / 4) as usize
    }

    /// Write the journal superblock with log start `start` (0: empty) and
    /// sequence `sequence`.
    fn write_sb(&mut self, disk: &Disk, start: u32, sequence: u32) -> Result<()> {
        self.sb[SB_SEQUENCE..SB_SEQUENCE + 4].copy_from_slice(&sequence.to_be_bytes());
        self.sb[SB_START..SB_START + 4].copy_from_slice(&start.to_be_bytes());
        if matches!(self.checksum, Checksum::V2(_) | Checksum::V3(_)) {
            let c = crc32c_zeroed(!0, &self.sb, SB_CHECKSUM)?;
            self.sb[SB_CHECKSUM..SB_CHECKSUM + 4].copy_from_slice(&c.to_be_bytes());
        }
        disk.device().write(self.pblk(0)? * self.bs as u64, &self.sb)
    }

    fn header(&self, block: &mut [u8], kind: u32, sequence: u32) {
        block[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        block[4..8].copy_from_slice(&kind.to_be_bytes());
        block[8..12].copy_from_slice(&sequence.to_be_bytes());
    }

    /// Commit the running transaction of `disk` and checkpoint it (see the
    /// module docs). With nothing to commit, only flushes the device.
    pub(crate) fn commit(&mut self, disk: &Disk) -> Result<()> {
        let blocks = disk.running_blocks();
        let device = disk.device();
        if blocks.is_empty() {
            return device.flush();
        }
        let bs = self.bs as u64;
        if self.log_blocks(blocks.len()) > self.end - self.first {
            // One call changed more blocks than the log holds: written in
            // place, as without a journal (ordered: data first).
            fshost_sdk::warn!(
                "ext4: a transaction of {} blocks does not fit the {}-block journal; written in place",
                blocks.len(),
                self.end - self.first
            );
            device.flush()?;
            checkpoint(disk, &blocks)?;
            return Ok(());
        }
        let tid = self.sequence;
        self.write_sb(disk, self.first as u32, tid)?;
        let mut pos = self.first;
        let mut crc = !0u32;
        let list: Vec<(&u64, &Vec<u8>)> = blocks.iter().collect();
        for chunk in list.chunks(self.tags_per_descriptor()) {
            let mut desc = vec![0u8; self.bs];
            self.header(&mut desc, DESCRIPTOR_BLOCK, tid);
            let mut off = HEADER_BYTES;
            let mut copies = Vec::with_capacity(chunk.len());
            for (i, &(&fs_block, data)) in chunk.iter().enumerate() {
                let mut copy = data.clone();
                let mut flags = 0u32;
                if copy.get(..4) == Some(&MAGIC.to_be_bytes()[..]) {
                    copy[..4].fill(0);
                    flags |= FLAG_ESCAPE;
                }
                if i > 0 {
                    flags |= FLAG_SAME_UUID;
                }
                if i + 1 == chunk.len() {
                    flags |= FLAG_LAST_TAG;
                }
                let low = fs_block as u32;
                let high = (fs_block >> 32) as u32;
                if high != 0 && !self.block64 {
                    return Err(Error::corrupted(format!("block {fs_block} needs a 64-bit journal")));
                }
                let sum = match self.checksum {
                    Checksum::V2(seed) | Checksum::V3(seed) => crc32c_raw(crc32c_raw(seed, &tid.to_be_bytes()), &copy),
                    _ => 0,
                };
                let tag = &mut desc[off..off + self.tag_bytes()];
                tag[0..4].copy_from_slice(&low.to_be_bytes());
                if let Checksum::V3(_) = self.checksum {
                    tag[4..8].copy_from_slice(&flags.to_be_bytes());
                    tag[8..12].copy_from_slice(&high.to_be_bytes());
                    tag[12..16].copy_from_slice(&sum.to_be_bytes());
                } else {
                    tag[4..6].copy_from_slice(&(sum as u16).to_be_bytes());
                    tag[6..8].copy_from_slice(&(flags as u16).to_be_bytes());
                    if self.block64 {
                        tag[8..12].copy_from_slice(&high.to_be_bytes());
                    }
                }
                off += self.tag_bytes();
                if i == 0 {
                    desc[off..off + UUID_BYTES].copy_from_slice(&self.uuid);
                    off += UUID_BYTES;
                }
                copies.push(copy);
            }
            if let Checksum::V2(seed) | Checksum::V3(seed) = self.checksum {
                let at = self.bs - TAIL_BYTES;
                let c = crc32c_zeroed(seed, &desc, at)?;
                desc[at..].copy_from_slice(&c.to_be_bytes());
            }
            if self.checksum == Checksum::V1 {
                crc = crc32_be(crc, &desc);
            }
            device.write(self.pblk(pos)? * bs, &desc)?;
            pos += 1;
            for copy in copies {
                if self.checksum == Checksum::V1 {
                    crc = crc32_be(crc, &copy);
                }
                device.write(self.pblk(pos)? * bs, &copy)?;
                pos += 1;
            }
        }
        // The log and the ordered data before the commit block.
        device.flush()?;
        let mut commit = vec![0u8; self.bs];
        self.header(&mut commit, COMMIT_BLOCK, tid);
        match self.checksum {
            Checksum::V1 => {
                commit[COMMIT_CHKSUM_TYPE] = CRC32_CHKSUM;
                commit[COMMIT_CHKSUM_SIZE] = CRC32_CHKSUM_SIZE;
                commit[COMMIT_CHKSUM..COMMIT_CHKSUM + 4].copy_from_slice(&crc.to_be_bytes());
            }
            Checksum::V2(seed) | Checksum::V3(seed) => {
                let c = crc32c_raw(seed, &commit);
                commit[COMMIT_CHKSUM..COMMIT_CHKSUM + 4].copy_from_slice(&c.to_be_bytes());
            }
            Checksum::None => {}
        }
        device.write(self.pblk(pos)? * bs, &commit)?;
        device.flush()?;
        checkpoint(disk, &blocks)?;
        self.sequence = tid.wrapping_add(1);
        self.write_sb(disk, 0, self.sequence)?;
        device.flush()
    }
}

/// Write `blocks` home and flush; the running transaction is then empty.
fn checkpoint(disk: &Disk, blocks: &BTreeMap<u64, Vec<u8>>) -> Result<()> {
    let bs = disk.block_size();
    for (&block, data) in blocks {
        disk.device().write(block * bs, data).with_context(|| format!("checkpoint of block {block}"))?;
    }
    disk.device().flush()?;
    disk.clear_running();
    Ok(())
}
