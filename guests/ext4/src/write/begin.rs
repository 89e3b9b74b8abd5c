//! Opening for writing and closing: the feature gate, journal recovery onto
//! the device, the superblock's "in use" mark, fsync and unmount.
//!
//! What this writer handles, and so accepts: ext2, ext3 and ext4 with
//! extent-mapped or block-mapped files, flex_bg, 64bit, meta_bg,
//! huge_file, large_file, dir_nlink, extra_isize, metadata_csum (and
//! csum_seed) or gdt_csum, uninit groups, sparse_super and sparse_super2,
//! largedir, dir_index, ext_attr, inline_data (converted to blocks when
//! changed: write/inline.rs), and a journal (left empty and writes
//! straight to their blocks, or with `-o journal` written as jbd2 does:
//! write/journal.rs). Refused with their names: the features it
//! does not write yet (see [`unsupported`]).
//!
//! A journal that needs recovery is replayed onto the device first (the
//! blocks the read-only mount served from memory are written in place,
//! then the journal is marked empty with the next transaction id, then
//! needs_recovery cleared), as the kernel does before a read-write mount.

use fshost_sdk::bytes::be_u32;
use fshost_sdk::{Error, FileType, Result, ResultExt};

use super::{State, alloc};
use crate::features::{compat, incompat, ro_compat};
use crate::fs::Ext4;
use crate::superblock::PRIMARY_OFFSET;
use crate::{group, inode, mapping};

/// `s_state` bits.
const VALID_FS: u16 = 0x1;
const ERROR_FS: u16 = 0x2;

/// The names of the features in use that this writer cannot write.
pub(super) fn unsupported(fs: &Ext4) -> Vec<&'static str> {
    let f = fs.vol.sb.features;
    let mut out = Vec::new();
    const COMPAT: [(u32, &str); 1] = [(0x1000, "orphan_file")];
    const RO_COMPAT: [(u32, &str); 9] = [
        (0x80, "snapshot"),
        (0x100, "quota"),
        (0x200, "bigalloc"),
        (0x800, "replica"),
        (0x1000, "read-only"),
        (0x2000, "project"),
        (0x4000, "shared_blocks"),
        (0x8000, "verity"),
        (0x10000, "orphan_present"),
    ];
    const RO_KNOWN: u32 = ro_compat::SPARSE_SUPER
        | ro_compat::LARGE_FILE
        | ro_compat::BTREE_DIR
        | ro_compat::HUGE_FILE
        | ro_compat::GDT_CSUM
        | 0x20 // dir_nlink
        | 0x40 // extra_isize
        | ro_compat::METADATA_CSUM;
    const INCOMPAT: [(u32, &str); 4] = [
        (incompat::MMP, "mmp"),
        (incompat::EA_INODE, "ea_inode"),
        (incompat::ENCRYPT, "encrypt"),
        (incompat::CASEFOLD, "casefold"),
    ];
    for (bit, name) in COMPAT {
        if f.compat(bit) {
            out.push(name);
        }
    }
    for (bit, name) in RO_COMPAT {
        if f.ro_compat(bit) {
            out.push(name);
        }
    }
    let known = RO_KNOWN | RO_COMPAT.iter().map(|(b, _)| b).fold(0, |a, b| a | b);
    if f.ro_compat & !known != 0 {
        out.push("unknown read-only-compatible features");
    }
    for (bit, name) in INCOMPAT {
        if f.incompat(bit) {
            out.push(name);
        }
    }
    out
}

pub(crate) fn begin_write(fs: &mut Ext4) -> std::result::Result<(), String> {
    if fs.write.is_some() {
        return Ok(());
    }
    let missing = unsupported(fs);
    if !missing.is_empty() {
        return Err(format!("the ext4 guest cannot write these features yet: {}", missing.join(", ")));
    }
    let sb = &fs.vol.sb;
    if sb.sb_block != PRIMARY_OFFSET / fs.vol.bs() {
        return Err("a filesystem mounted from a backup superblock (sb=) cannot be written".into());
    }
    if sb.features.ro_compat(ro_compat::METADATA_CSUM) && !fs.vol.csum.metadata {
        return Err("the nocsum option is for reading damaged images only; it cannot be used to write".into());
    }
    if !sb.creator_linux {
        return Err("the filesystem was made by another OS (its inode layout differs); cannot write".into());
    }
    if sb.state & ERROR_FS != 0 {
        return Err("the filesystem has errors recorded; run e2fsck before writing to it".into());
    }
    // The kernel refuses a read-write mount when a descriptor checksum is bad.
    fs.vol.csum.group_desc = has_desc_csum(fs);
    let bad = group::bad_checksums(&fs.vol);
    fs.vol.csum.group_desc = false;
    match bad {
        Ok(bad) if bad.is_empty() => {}
        Ok(bad) => return Err(format!("group descriptor {} has a bad checksum ({}); run e2fsck", bad[0].0, bad[0].1)),
        Err(e) => return Err(format!("cannot read the group descriptors: {e}")),
    }
    // Clean (or a journalled filesystem the kernel left, which keeps
    // VALID_FS on disk while mounted): the orphan list is a crash's. Not
    // clean: this guest's own session, restarted after a trap, whose host
    // still holds its orphans open (or a crash of this writer: e2fsck's).
    let mut was_clean = fs.vol.sb.state & VALID_FS != 0;
    let needed_recovery = fs.vol.sb.features.incompat(incompat::RECOVER);
    if needed_recovery {
        recover(fs).map_err(|e| format!("cannot recover the journal onto the device: {e}"))?;
    }
    alloc::sync_sb_counts(fs).map_err(|e| format!("cannot count the free blocks and inodes: {e}"))?;
    // The `journal` option on a journaled filesystem: metadata goes through
    // jbd2 transactions (write/journal.rs) and, as the kernel marks it,
    // the superblock keeps VALID_FS and says needs_recovery while mounted.
    let journal = if fs.vol.disk.journal_requested && fs.vol.sb.features.compat(compat::HAS_JOURNAL) {
        if fs.vol.sb.journal_inum == 0 {
            return Err(
                "the journal is on an external device, which this guest cannot write; mount without -o journal".into(),
            );
        }
        // needs_recovery is also this guest's own mark while it writes (a
        // restart after a trap finds it): the orphan list is left to the
        // unmount, as the host may hold those files open.
        was_clean &= !needed_recovery;
        Some(super::journal::Journal::open(fs).map_err(|e| format!("cannot open the journal for writing: {e}"))?)
    } else {
        None
    };
    let journaled = journal.is_some();
    let mark = alloc::update_sb(fs, |b| {
        let mut state = u16::from_le_bytes([b[0x3A], b[0x3B]]);
        if journaled {
            let f = u32::from_le_bytes([b[0x60], b[0x61], b[0x62], b[0x63]]) | incompat::RECOVER;
            b[0x60..0x64].copy_from_slice(&f.to_le_bytes());
        } else {
            state &= !VALID_FS;
        }
        b[0x3A..0x3C].copy_from_slice(&state.to_le_bytes());
        let count = u16::from_le_bytes([b[0x34], b[0x35]]).saturating_add(1);
        b[0x34..0x36].copy_from_slice(&count.to_le_bytes());
    });
    mark.and_then(|()| fs.vol.disk.device().flush()).map_err(|e| format!("cannot mark the filesystem in use: {e}"))?;
    fs.write = Some(State { journal, ..State::default() });
    if journaled {
        fs.vol.disk.start_transactions();
    }
    if was_clean
        && fs.vol.sb.last_orphan != 0
        && let Err(e) = orphan_cleanup(fs)
    {
        fs.write = None;
        return Err(format!("cannot process the orphan list left by the last use: {e}; run e2fsck"));
    }
    Ok(())
}

/// `ext4_orphan_cleanup`: the orphan list a crash left (files deleted or
/// being truncated while open). Inodes still linked lose the blocks past
/// their size; the others are freed (write/namei.rs). Only on a
/// filesystem found clean: a not-clean one is this writer's own session
/// restarted after a trap, whose orphans the host still holds open.
fn orphan_cleanup(fs: &mut Ext4) -> Result<()> {
    let mut at = fs.vol.sb.last_orphan;
    let mut seen = 0u32;
    while at != 0 {
        seen += 1;
        if seen > fs.vol.sb.inodes_count || !fs.vol.sb.valid_inum(at) {
            return Err(Error::corrupted(format!("the orphan list is damaged at inode {at}")));
        }
        let mut raw = fs.raw_inode(at)?;
        if raw.links() != 0 && matches!(raw.kind(), Some(FileType::Regular)) {
            let from = u32::try_from(raw.size().div_ceil(fs.vol.bs())).unwrap_or(u32::MAX);
            fs.truncate_blocks(at, &mut raw, from)?;
            fs.put_inode(at, &raw)?;
        }
        at = raw.dtime();
    }
    fs.free_orphans()
}

fn has_desc_csum(fs: &Ext4) -> bool {
    let f = fs.vol.sb.features;
    f.ro_compat(ro_compat::METADATA_CSUM) || f.ro_compat(ro_compat::GDT_CSUM)
}

/// Write the replayed journal onto the device and mark the journal empty.
fn recover(fs: &mut Ext4) -> Result<()> {
    if !fs.vol.sb.features.compat(compat::HAS_JOURNAL) || fs.vol.sb.journal_inum == 0 {
        return Err(Error::unsupported("needs_recovery without an internal journal"));
    }
    let Some(next_sequence) = fs.vol.disk.replayed_sequence() else {
        return Err(Error::unsupported(
            "the journal needs recovery but was not replayed (norecovery); mount without it to write",
        ));
    };
    // Nothing committed in the log (a crash before a commit block): the
    // journal is only marked empty.
    let replay = fs.vol.disk.take_overlay().unwrap_or_default();
    let bs = fs.vol.bs();
    let device = fs.vol.disk.device();
    for (block, data) in replay.blocks() {
        let at = block.checked_mul(bs).ok_or_else(|| Error::corrupted(format!("journal names block {block}")))?;
        device.write(at, data).with_context(|| format!("replaying block {block}"))?;
    }
    device.flush()?;
    let journal = inode::read(&fs.vol, fs.vol.sb.journal_inum).context("journal inode")?;
    if journal.kind()? != FileType::Regular {
        return Err(Error::corrupted("journal inode is not a regular file"));
    }
    let run = mapping::run_at(&fs.vol, &journal, 0)?.ok_or_else(|| Error::corrupted("journal block 0 is a hole"))?;
    let at = run.pblk * bs;
    let mut jsb = fs.vol.disk.read(at, 1024)?;
    // A journal already empty keeps its sequence (the replay found none).
    if be_u32(&jsb, 0x1C)? != 0 {
        jsb[0x18..0x1C].copy_from_slice(&next_sequence.to_be_bytes());
    }
    jsb[0x1C..0x20].copy_from_slice(&0u32.to_be_bytes());
    // csum v2 / v3: crc32c of the superblock with s_checksum zeroed.
    if be_u32(&jsb, 4)? == 4 && be_u32(&jsb, 0x28)? & (0x8 | 0x10) != 0 {
        jsb[0xFC..0x100].fill(0);
        let c = crate::csum::crc32c(!0, &jsb);
        jsb[0xFC..0x100].copy_from_slice(&c.to_be_bytes());
    }
    fs.vol.disk.device().write(at, &jsb)?;
    fs.vol.disk.device().flush()?;
    alloc::update_sb(fs, |b| {
        let f = u32::from_le_bytes([b[0x60], b[0x61], b[0x62], b[0x63]]) & !incompat::RECOVER;
        b[0x60..0x64].copy_from_slice(&f.to_le_bytes());
    })?;
    fs.inodes = fshost_sdk::lru::Lru::new(crate::fs::INODE_CACHE);
    fs.names = fshost_sdk::lru::Lru::new(crate::fs::NAME_INDEXES);
    fs.counts = None;
    fs.vol.disk.device().flush()
}

/// Clean unmount: mark the filesystem valid again and flush.
pub(crate) fn unmount(fs: &mut Ext4) -> Result<()> {
    if fs.write.is_none() {
        return Ok(());
    }
    // The last transaction committed and checkpointed, the journal empty.
    super::sync(fs)?;
    fs.vol.disk.stop_transactions();
    alloc::update_sb(fs, |b| {
        let state = u16::from_le_bytes([b[0x3A], b[0x3B]]);
        if state & ERROR_FS == 0 {
            b[0x3A..0x3C].copy_from_slice(&(state | VALID_FS).to_le_bytes());
        }
        let f = u32::from_le_bytes([b[0x60], b[0x61], b[0x62], b[0x63]]) & !incompat::RECOVER;
        b[0x60..0x64].copy_from_slice(&f.to_le_bytes());
    })?;
    fs.vol.disk.device().flush()?;
    fs.write = None;
    Ok(())
}
