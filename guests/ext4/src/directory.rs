//! A directory as a whole: where its records live (blocks, or inline in the
//! inode), listing them with resumable cookies, and finding a name.
//!
//! An htree directory lists in hash order, as the kernel's
//! `ext4_dx_readdir` does: a cookie is a hash position (the next entry's
//! major and minor hash, tagged with [`HASH_COOKIE`]), so a leaf split on a
//! read-write mount, which moves records to a new block at the end of the
//! directory but keeps every hash in its place, neither repeats nor skips
//! a name between two batches. Resuming costs a binary search of the
//! index (read once per directory and kept, [`Order`]) and the one or two
//! leaves that hold the position, wherever it is. Entries of one hash
//! position are never split across batches.
//!
//! Other directories (and an htree whose index is damaged, or casefolded,
//! whose hashes need Unicode tables) list in logical block order. Htree
//! index blocks are skipped (their fake records are unused anyway), holes
//! are skipped as the kernel's `ext4_readdir` does, and leaf checksums are
//! verified. A cookie is the byte position of the record after the one
//! returned, so it is never 0 and resuming re-reads one block and skips
//! what came before. For inline directories the position counts through
//! `i_block` (after the 4-byte parent number) and then the `system.data`
//! value.
//!
//! Lookup uses the htree when the directory has one (O(depth) reads) and
//! falls back to a linear scan when the index is malformed, like the
//! kernel. Every loop is bounded by the directory's size in blocks.

use fshost_sdk::bytes::le_u32;
use fshost_sdk::{Error, Result, ResultExt};

use crate::casefold::{self, Match};
use crate::dir::{self, Entry};
use crate::features::{compat, incompat};
use crate::htree::{self, Probe};
use crate::inline::Inline;
use crate::inode::{Inode, flags};
use crate::mapping;
use crate::volume::Volume;

/// Bytes of `i_block` before the inline records (the parent's number).
const INLINE_DOTDOT_SIZE: usize = 4;

/// A record as listing returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub ino: u32,
    pub name: Vec<u8>,
    pub file_type: u8,
    pub cookie: u64,
}

/// A record found by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub ino: u32,
    pub file_type: u8,
}

fn is_inline(dir: &Inode) -> bool {
    dir.has_flag(flags::INLINE_DATA)
}

fn is_dx(vol: &Volume, dir: &Inode) -> bool {
    vol.sb.features.compat(compat::DIR_INDEX) && dir.has_flag(flags::INDEX) && !is_inline(dir)
}

/// Number of blocks the directory file spans.
fn block_count(vol: &Volume, dir: &Inode) -> u64 {
    dir.size.div_ceil(vol.bs())
}

/// The parent number and the record areas (position, bytes) of an inline
/// directory.
type InlineAreas = (u32, [(u64, Vec<u8>); 2]);

fn inline_areas(vol: &Volume, dir: &Inode) -> Result<InlineAreas> {
    let inline = Inline::read(vol, dir)?;
    let parent = le_u32(&inline.head, 0)?;
    let head = inline.head.get(INLINE_DOTDOT_SIZE..).unwrap_or_default().to_vec();
    let tail_pos = head.len() as u64;
    Ok((parent, [(0, head), (tail_pos, inline.tail)]))
}

/// Parse one area of records, with the directory named in errors.
fn parse<'a>(vol: &Volume, dir: &Inode, data: &'a [u8], what: &dyn Fn() -> String) -> Result<Vec<Entry<'a>>> {
    dir::parse(data, vol.sb.block_size, vol.sb.inodes_count)
        .with_context(|| format!("directory {}: {}", dir.ino, what()))
}

/// The directory's allocated blocks from `from` on, in order: holes are
/// skipped a whole run at a time, so a directory whose size claims far
/// more blocks than it has costs one map lookup per allocated run.
fn allocated_blocks<'a>(vol: &'a Volume, dir: &'a Inode, from: u64) -> impl Iterator<Item = Result<u64>> + 'a {
    let end = block_count(vol, dir);
    let mut next = from;
    std::iter::from_fn(move || {
        if next >= end {
            return None;
        }
        let found = mapping::runs(vol, dir, next, end, 1).map(|r| match r.runs.first() {
            Some(run) => Some(run.lblk.max(next)),
            None if r.end < end => Some(r.end),
            None => None,
        });
        match found {
            Ok(Some(blk)) => {
                next = blk + 1;
                Some(Ok(blk))
            }
            Ok(None) => {
                next = end;
                None
            }
            Err(e) => {
                next = end;
                Some(Err(e))
            }
        }
    })
}

/// Leaf block `blk` of a block directory; `None` for holes, htree index
/// blocks, and blocks whose checksum fails (skipped with a warning, as the
/// kernel's `ext4_readdir` skips them).
fn leaf_block(vol: &Volume, dir: &Inode, blk: u64) -> Result<Option<Vec<u8>>> {
    let Some(data) = mapping::read_dir_block(vol, dir, blk)? else {
        return Ok(None);
    };
    if is_dx(vol, dir)
        && (blk == 0 || (dir::first_rec_len(&data, vol.sb.block_size)? == data.len() && le_u32(&data, 0)? == 0))
    {
        return Ok(None);
    }
    if vol.csum.metadata
        && let Err(e) = dir::verify_leaf(&data, dir.csum_seed)
    {
        fshost_sdk::warn!("directory {} block {blk}: {}; skipping the block, as the kernel does", dir.ino, e.message());
        return Ok(None);
    }
    Ok(Some(data))
}

/// The good records of one area of `dir` (a block, or an inline area), as
/// the kernel reads them: up to the first bad record, whose problem is
/// logged; the rest of the area is skipped. `Err` carries the records
/// before a bad one, for callers that must stop there (inline areas).
fn records<'a>(
    vol: &Volume,
    dir: &Inode,
    data: &'a [u8],
    what: &dyn Fn() -> String,
) -> std::result::Result<Vec<Entry<'a>>, Vec<Entry<'a>>> {
    match dir::parse_lenient(data, vol.sb.block_size, vol.sb.inodes_count) {
        (entries, None) => Ok(entries),
        (entries, Some(bad)) => {
            let why = bad.message();
            fshost_sdk::warn!("directory {} {}: {why}; skipping the rest of it, as the kernel does", dir.ino, what());
            Err(entries)
        }
    }
}

/// How a directory lists: in block order, or in hash order through its
/// index. Decided from the directory's blocks alone, so every batch of one
/// listing uses the same cookies; kept per directory between batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Blocks,
    Hashes(htree::Leaves),
}

/// How `dir` lists: in hash order when it has a sound index whose hashes
/// the guest can compute (not casefolded); a damaged index is listed in
/// block order, as the kernel's `ext4_readdir` falls back to its linear
/// walk (`ERR_BAD_DX_DIR`).
pub fn order(vol: &Volume, dir: &Inode) -> Order {
    let folded = vol.sb.features.incompat(incompat::CASEFOLD) && dir.has_flag(flags::CASEFOLD);
    if !is_dx(vol, dir) || folded {
        return Order::Blocks;
    }
    match htree::leaves(vol, dir) {
        Ok(Ok(leaves)) => Order::Hashes(leaves),
        Ok(Err(why)) | Err(why) => {
            fshost_sdk::warn!("directory {}: listing its blocks in order: its index is unusable ({why})", dir.ino);
            Order::Blocks
        }
    }
}

/// The tag of hash-position cookies (bit 61: cookies stay below the
/// contract's 2^62, and block positions never reach it).
pub const HASH_COOKIE: u64 = 1 << 61;

/// An entry's position in hash order: major hash (whose low bit is always
/// clear) above the minor hash's top 29 bits; 60 bits, so the cookie after
/// it, `HASH_COOKIE | (key + 1)`, stays below 2^62.
fn hash_key(hash: u32, minor: u32) -> u64 {
    (u64::from(hash >> 1) << 29) | u64::from(minor >> 3)
}

/// The major hash of a position made by [`hash_key`].
fn key_hash(key: u64) -> u32 {
    ((key >> 29) << 1) as u32
}

/// The name `dir` lists for record `e` (at byte `pos`), or `None` for the
/// records listing leaves out: unused, "." and "..", and names the host
/// refuses ([`fshost_sdk::valid_name`]).
fn listed_name<'a>(dir: &Inode, e: &Entry<'a>, pos: u64) -> Option<&'a [u8]> {
    if e.ino == 0 || e.is_dot() {
        return None;
    }
    // A name holding a NUL reaches programs cut at the NUL, as the kernel's
    // getdents delivers it (its lookup then fails, as the record's bytes
    // are longer): show it cut the same way. Encrypted names are
    // ciphertext; the caller shows them as no-key names, always valid.
    let encrypted = dir.has_flag(flags::ENCRYPT);
    let name = match e.name.iter().position(|&b| b == 0) {
        Some(nul) if !encrypted => {
            fshost_sdk::warn!("directory {}: the name of the record at {pos} holds a NUL; cut there", dir.ino);
            e.name.get(..nul).unwrap_or_default()
        }
        _ => e.name,
    };
    if !encrypted && !fshost_sdk::valid_name(name) {
        // No path can name it and the host refuses it (FUSE refuses an
        // empty name or one with '/' too). Skip the one record so the rest
        // of the directory still lists.
        fshost_sdk::warn!("directory {}: skipping the record at {pos}: its name is empty or holds '/'", dir.ino);
        return None;
    }
    Some(name)
}

/// Up to `max` records of `dir` after position `cookie`, without "." and
/// "..", nor records whose names the host refuses, in the order `order`
/// says ([`order`] of this directory).
pub fn list(vol: &Volume, dir: &Inode, order: &Order, cookie: u64, max: usize) -> Result<Vec<Listed>> {
    match order {
        Order::Hashes(leaves) if cookie == 0 || cookie & HASH_COOKIE != 0 => {
            list_hashed(vol, dir, leaves, cookie & !HASH_COOKIE, max)
        }
        // A block position given to a directory that gained an index since
        // (a read-write mount): go on in block order, as before.
        Order::Hashes(_) => list_blocks(vol, dir, cookie, max),
        Order::Blocks if cookie & HASH_COOKIE != 0 => {
            // Its index was sound for the batch before: only a writer can
            // have removed it, and the writer only adds indexes.
            fshost_sdk::warn!("directory {}: a hash position for a directory without an index; listing ends", dir.ino);
            Ok(Vec::new())
        }
        Order::Blocks => list_blocks(vol, dir, cookie, max),
    }
}

/// One record met by [`list_hashed`]: its hash position, where it is, the
/// name listed and its target.
struct Hashed {
    key: u64,
    leaf: usize,
    offset: usize,
    name: Vec<u8>,
    ino: u32,
    file_type: u8,
}

/// The range of hash positions leaf `i` holds: from its index entry's hash
/// to the next leaf's, that hash included when the next leaf continues a
/// collision (its entry's low bit set).
fn leaf_range(leaves: &[(u32, u32)], i: usize) -> (u64, u64) {
    let lo = leaves.get(i).map_or(0, |&(h, _)| hash_key(h & !1, 0));
    let hi = match leaves.get(i + 1) {
        Some(&(h, _)) if h & 1 != 0 => hash_key(h & !1, u32::MAX),
        Some(&(h, _)) => hash_key(h, 0).saturating_sub(1),
        None => hash_key(u32::MAX, u32::MAX),
    };
    (lo, hi.max(lo))
}

/// Hash-order listing from position `start` (a [`hash_key`], 0 for the
/// start): the leaves from the one that holds the position, read until the
/// entries known to come first (every entry of the leaves read, as the
/// leaves after hold later positions only) fill the batch; those are
/// sorted and the first `max` returned, never splitting one hash position
/// (unless it alone holds more than `max`, which only a crafted directory
/// has: its first `max` are listed).
///
/// A record whose hash lies outside its leaf's range (damage: the kernel
/// never places one there) is listed at the nearest end of the range, so
/// it is listed once and the positions of a listing never go back.
fn list_hashed(vol: &Volume, dir: &Inode, leaves: &htree::Leaves, start: u64, max: usize) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let seed = vol.sb.hash_seed;
    if start == 0 {
        // The kernel's htree readdir emits the index root's first two
        // records whatever their names ("." and "..", unless damaged).
        if let Some(data) = mapping::read_dir_block(vol, dir, 0)? {
            let entries = records(vol, dir, &data, &|| "block 0".into()).unwrap_or_else(|good| good);
            for e in entries.iter().take(2) {
                if let Some(name) = listed_name(dir, e, e.offset as u64) {
                    out.push(Listed {
                        ino: e.ino,
                        name: name.to_vec(),
                        file_type: e.file_type,
                        cookie: HASH_COOKIE | 1,
                    });
                }
            }
        }
        out.truncate(max);
    }
    let want = max.saturating_sub(out.len());
    if want == 0 {
        return Ok(out);
    }
    let all = &leaves.leaves;
    let start_hash = key_hash(start);
    let first = all.partition_point(|&(h, _)| h <= start_hash).saturating_sub(1);
    let mut found: Vec<Hashed> = Vec::new();
    // Entries at positions below this are all in `found`.
    let mut known_below = 0u64;
    for (i, &(_, blk)) in all.iter().enumerate().skip(first) {
        let (lo, hi) = leaf_range(all, i);
        let blk = u64::from(blk);
        if hi >= start
            && let Some(data) = leaf_block(vol, dir, blk)?
        {
            let entries = records(vol, dir, &data, &|| format!("block {blk}")).unwrap_or_else(|good| good);
            for e in entries.iter().filter(|e| e.ino != 0 && !e.is_dot()) {
                // The hash of the record's bytes (an encrypted name's
                // ciphertext, as the kernel's readdir hashes it).
                let Some((hash, minor)) = crate::hash::dx_hash_pair(leaves.hash_version, e.name, &seed) else {
                    continue;
                };
                let key = hash_key(hash, minor).clamp(lo, hi);
                if key < start {
                    continue;
                }
                let Some(name) = listed_name(dir, e, blk * vol.bs() + e.offset as u64) else { continue };
                found.push(Hashed {
                    key,
                    leaf: i,
                    offset: e.offset,
                    name: name.to_vec(),
                    ino: e.ino,
                    file_type: e.file_type,
                });
            }
        }
        known_below = if i + 1 < all.len() { leaf_range(all, i + 1).0 } else { u64::MAX };
        if found.iter().filter(|h| h.key < known_below).count() >= want {
            break;
        }
    }
    found.retain(|h| h.key < known_below);
    found.sort_by_key(|h| (h.key, h.leaf, h.offset));
    if let Some(edge) = found.get(want).map(|h| h.key) {
        // Cut before the hash position the batch would split.
        let keep = found.partition_point(|h| h.key < edge);
        if keep == 0 {
            fshost_sdk::warn!(
                "directory {}: more than {want} entries share one hash position; the rest are not listed",
                dir.ino
            );
            found.truncate(want);
        } else {
            found.truncate(keep);
        }
    }
    out.extend(found.into_iter().map(|h| Listed {
        ino: h.ino,
        name: h.name,
        file_type: h.file_type,
        cookie: HASH_COOKIE | (h.key + 1),
    }));
    Ok(out)
}

/// Block-order listing: records at byte positions from `cookie` on.
fn list_blocks(vol: &Volume, dir: &Inode, cookie: u64, max: usize) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let take = |entries: Vec<Entry<'_>>, base: u64, out: &mut Vec<Listed>| -> bool {
        for e in entries {
            let pos = base + e.offset as u64;
            if pos < cookie {
                continue;
            }
            let Some(name) = listed_name(dir, &e, pos) else { continue };
            if out.len() >= max {
                return false;
            }
            out.push(Listed {
                ino: e.ino,
                name: name.to_vec(),
                file_type: e.file_type,
                cookie: pos + e.rec_len as u64,
            });
        }
        true
    };
    if is_inline(dir) {
        let (_, areas) = inline_areas(vol, dir)?;
        for (base, data) in &areas {
            // The kernel's ext4_read_inline_dir ends the listing at a bad record.
            let (entries, last) = match records(vol, dir, data, &|| format!("inline records at {base}")) {
                Ok(entries) => (entries, false),
                Err(entries) => (entries, true),
            };
            if !take(entries, *base, &mut out) || last {
                break;
            }
        }
        return Ok(out);
    }
    let bs = vol.bs();
    for blk in allocated_blocks(vol, dir, cookie / bs) {
        let blk = blk?;
        let (data, root) = match leaf_block(vol, dir, blk)? {
            Some(data) => (data, false),
            // The kernel's htree readdir emits the index root's first two
            // records whatever their names ("." and "..", unless damaged).
            None if blk == 0 && is_dx(vol, dir) => match mapping::read_dir_block(vol, dir, 0)? {
                Some(data) => (data, true),
                None => continue,
            },
            None => continue,
        };
        let mut entries = records(vol, dir, &data, &|| format!("block {blk}")).unwrap_or_else(|good| good);
        if root {
            entries.truncate(2);
        }
        if !take(entries, blk * bs, &mut out) || out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// The hash version the kernel's readdir computes for each entry of `dir`
/// (`ext4_htree_fill_tree`: the index root's, or `s_def_hash_version` for
/// a directory of one block or inline), with the unsigned adjustment;
/// `None` when the kernel lists `dir` linearly, without hashes.
pub fn readdir_hash_version(vol: &Volume, dir: &Inode) -> Option<u8> {
    let one_block = dir.size.checked_div(vol.bs()) == Some(1);
    if !vol.sb.features.compat(compat::DIR_INDEX) {
        return None;
    }
    let version = if dir.has_flag(flags::INDEX) && !is_inline(dir) {
        htree::root_hash_version(vol, dir)?
    } else if one_block || is_inline(dir) {
        vol.sb.def_hash_version
    } else {
        return None;
    };
    Some(if version <= crate::hash::TEA { version + vol.sb.hash_unsigned } else { version })
}

/// The inode number of `dir`'s parent (its ".." record).
pub fn parent(vol: &Volume, dir: &Inode) -> Result<u32> {
    if is_inline(dir) {
        return Ok(inline_areas(vol, dir)?.0);
    }
    let data = mapping::read_dir_block(vol, dir, 0)?
        .ok_or_else(|| Error::corrupted(format!("directory {}: first block is a hole", dir.ino)))?;
    records(vol, dir, &data, &|| "block 0".into())
        .unwrap_or_else(|good| good)
        .iter()
        .take(2)
        .find(|e| e.name == b"..")
        .map(|e| e.ino)
        .ok_or_else(|| Error::corrupted(format!("directory {}: no '..' entry", dir.ino)))
}

/// Find `name` in `dir`. `Unsupported` when the directory is casefolded and
/// the answer needs Unicode tables (see casefold.rs).
pub fn find(vol: &Volume, dir: &Inode, name: &[u8]) -> Result<Option<Found>> {
    let folded = vol.sb.features.incompat(incompat::CASEFOLD) && dir.has_flag(flags::CASEFOLD);
    let mut search = Search { name, folded, unsure: false };
    let found = if is_inline(dir) {
        let (_, areas) = inline_areas(vol, dir)?;
        let mut found = None;
        for (base, data) in &areas {
            let (entries, last) = match records(vol, dir, data, &|| format!("inline records at {base}")) {
                Ok(entries) => (entries, false),
                Err(entries) => (entries, true),
            };
            found = search.scan(&entries);
            if found.is_some() || last {
                break;
            }
        }
        found
    } else {
        let key = if folded { casefold::hash_key(name) } else { Some(name.to_vec()) };
        match key {
            Some(key) if is_dx(vol, dir) => match htree::probe(vol, dir, &key)? {
                // A damaged leaf (hole, checksum, bad record) fails the
                // kernel's lookup; listing skips only the damage, so search
                // the way listing reads and find every name it lists.
                Probe::Found(cursor) => match search.htree(vol, dir, cursor) {
                    Ok(found) => found,
                    Err(e) => {
                        fshost_sdk::warn!("{e}; searching directory {} linearly", dir.ino);
                        search.linear(vol, dir)?
                    }
                },
                Probe::Bad(why) => {
                    fshost_sdk::warn!("directory {}: bad htree index ({why}), searching linearly", dir.ino);
                    search.linear(vol, dir)?
                }
            },
            _ => search.linear(vol, dir)?,
        }
    };
    if found.is_none() && search.unsure {
        fshost_sdk::warn!("directory {}: casefolded lookup needs Unicode folding tables", dir.ino);
        return Err(Error::unsupported(format!(
            "directory {}: case-insensitive lookup of a non-ASCII name is not implemented",
            dir.ino
        )));
    }
    Ok(found)
}

/// Whether lookups in `dir` scan its blocks in order, comparing bytes: a
/// block-based directory without an htree and without casefolding.
pub fn is_linear(vol: &Volume, dir: &Inode) -> bool {
    let folded = vol.sb.features.incompat(incompat::CASEFOLD) && dir.has_flag(flags::CASEFOLD);
    !folded && !is_inline(dir) && !is_dx(vol, dir)
}

/// Call `f` with the name and target of every live record of `dir`, in the
/// order a linear lookup meets them, while it returns true. `Ok(true)` when
/// every record was seen; bad blocks and records are skipped as listing
/// skips them, so every listed name is found; read failures are errors.
pub fn for_each_record(vol: &Volume, dir: &Inode, f: &mut dyn FnMut(&[u8], Found) -> bool) -> Result<bool> {
    for blk in allocated_blocks(vol, dir, 0) {
        let blk = blk?;
        let Some(data) = leaf_block(vol, dir, blk)? else { continue };
        let entries = records(vol, dir, &data, &|| format!("block {blk}")).unwrap_or_else(|good| good);
        for e in entries.iter().filter(|e| e.ino != 0) {
            if !f(e.name, Found { ino: e.ino, file_type: e.file_type }) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

struct Search<'a> {
    name: &'a [u8],
    folded: bool,
    /// A casefolded comparison could not be decided.
    unsure: bool,
}

impl Search<'_> {
    fn scan(&mut self, entries: &[Entry<'_>]) -> Option<Found> {
        for e in entries.iter().filter(|e| e.ino != 0) {
            let m = if self.folded {
                casefold::compare(e.name, self.name)
            } else if e.name == self.name {
                Match::Yes
            } else {
                Match::No
            };
            match m {
                Match::Yes => return Some(Found { ino: e.ino, file_type: e.file_type }),
                Match::Unsure => self.unsure = true,
                Match::No => {}
            }
        }
        None
    }

    fn linear(&mut self, vol: &Volume, dir: &Inode) -> Result<Option<Found>> {
        for blk in allocated_blocks(vol, dir, 0) {
            let blk = blk?;
            let Some(data) = leaf_block(vol, dir, blk)? else { continue };
            let entries = records(vol, dir, &data, &|| format!("block {blk}")).unwrap_or_else(|good| good);
            if let Some(found) = self.scan(&entries) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn htree(&mut self, vol: &Volume, dir: &Inode, mut cursor: htree::Cursor) -> Result<Option<Found>> {
        for _ in 0..block_count(vol, dir) {
            let blk = u64::from(cursor.leaf());
            let data = mapping::read_dir_block(vol, dir, blk)?
                .ok_or_else(|| Error::corrupted(format!("directory {}: htree leaf block {blk} is a hole", dir.ino)))?;
            if vol.csum.metadata {
                dir::verify_leaf(&data, dir.csum_seed).with_context(|| format!("directory {} block {blk}", dir.ino))?;
            }
            let entries = parse(vol, dir, &data, &|| format!("block {blk}"))?;
            if let Some(found) = self.scan(&entries) {
                return Ok(Some(found));
            }
            if !cursor.advance(vol, dir)? {
                return Ok(None);
            }
        }
        Err(Error::corrupted(format!("directory {}: htree leaf chain longer than the directory", dir.ino)))
    }
}
