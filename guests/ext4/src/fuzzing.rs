//! Entry points for the fuzz targets in `guests/ext4/fuzz` (feature
//! `fuzzing`) and for the regression tests of what they found.
//!
//! Every function takes arbitrary bytes and must return without panicking,
//! looping or allocating without bound; each panics only when the guest
//! breaks the contract the host relies on (a mapping list that is empty,
//! misses the asked offset or has gaps).
//!
//! Most parsers need a [`Volume`] to find their neighbours, so the targets
//! for one structure splice the fuzzed bytes into a small synthetic
//! filesystem ([`Fixture`]) at the place that structure lives, and then
//! exercise it through the same [`Filesystem`] calls the host makes:
//!
//! | target | fuzzed bytes |
//! |---|---|
//! | [`superblock`] | the superblock (parsed alone, then mounted in the fixture) |
//! | [`group_descriptors`] | the descriptor block of a 4-group filesystem |
//! | [`inode`] | one 256-byte inode |
//! | [`extent_tree`], [`block_map`] | `i_block` of a file, its nodes in the payload |
//! | [`dir_block`] | blocks of a linear directory |
//! | [`htree`] | blocks of an indexed directory (the root is block 0) |
//! | [`xattr`] | the in-inode xattr area and an xattr block |
//! | [`journal`] | a jbd2 journal, block 0 its superblock |
//! | [`image`] | a whole image, mounted from a memory device |
//!
//! The first byte of a fixture target's input chooses features and the
//! checksum policy ([`Fixture::new`]); the bytes after the structure fill
//! the payload blocks, where block pointers of the structure may lead.

use std::collections::HashSet;

use fshost_sdk::{Device, FileType, Filesystem, Ino, IomapFlags, Mapping, MountOptions, testing};

use crate::csum::Checksums;
use crate::disk::Disk;
use crate::features::{compat, incompat, ro_compat};
use crate::fs::Ext4;
use crate::inode::flags;
use crate::superblock::{PRIMARY_OFFSET, SUPERBLOCK_SIZE, Superblock};
use crate::volume::Volume;
use crate::{dir, journal};

/// Fixture geometry: 1 KiB blocks, 4 groups of 64 blocks, 32 inodes of 256
/// bytes per group (8 inode table blocks each, from block 3), payload from
/// block 64 to the end.
const BS: usize = 1024;
const BLOCKS: usize = 257;
const BLOCKS_PER_GROUP: u32 = 64;
const INODES_PER_GROUP: u32 = 32;
const GROUPS: u32 = 4;
const INODE_SIZE: usize = 256;
const GDT_BLOCK: usize = 2;
const FIRST_TABLE_BLOCK: usize = 3;
const TABLE_BLOCKS: usize = INODES_PER_GROUP as usize * INODE_SIZE / BS;
/// First payload block: fuzzed bytes after the structure land here.
pub const PAYLOAD_BLOCK: usize = 64;
/// The inode the inode-level targets write (the first non-reserved one).
const TARGET_INO: u32 = 12;
/// `i_extra_isize` of the inodes the fixture writes: room for the times.
const EXTRA_ISIZE: u16 = 32;

/// Bounds of one walk, so a target stays fast on any input.
const MAX_DIRS: usize = 64;
const MAX_ENTRIES: usize = 512;
const MAX_IOMAP_CALLS: usize = 64;

/// A synthetic filesystem image in memory with a parsed [`Superblock`]
/// whose features the fuzzer picks.
pub struct Fixture {
    image: Vec<u8>,
    verify: bool,
}

impl Fixture {
    /// An empty fixture. Bits of `options`: 0 metadata_csum, 1 verify
    /// checksums, 2 64bit (64-byte descriptors), 3 inline_data, 4 largedir,
    /// 5 ea_inode, 6 huge_file, 7 casefold.
    pub fn new(options: u8) -> Self {
        let bit = |n: u8| options & (1 << n) != 0;
        let mut image = vec![0u8; BLOCKS * BS];
        let mut incompat_bits = incompat::FILETYPE | incompat::EXTENTS | incompat::FLEX_BG;
        let mut ro = ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE;
        if bit(0) {
            ro |= ro_compat::METADATA_CSUM;
        }
        for (n, flag) in [(2, incompat::BIT64), (3, incompat::INLINE_DATA), (4, incompat::LARGEDIR)] {
            if bit(n) {
                incompat_bits |= flag;
            }
        }
        if bit(5) {
            incompat_bits |= incompat::EA_INODE;
        }
        if bit(6) {
            ro |= ro_compat::HUGE_FILE;
        }
        if bit(7) {
            incompat_bits |= incompat::CASEFOLD;
        }
        let sb = &mut image[BS..2 * BS];
        let mut put = |at: usize, bytes: &[u8]| sb[at..at + bytes.len()].copy_from_slice(bytes);
        put(0x0, &(INODES_PER_GROUP * GROUPS).to_le_bytes());
        put(0x4, &(BLOCKS as u32).to_le_bytes());
        put(0x14, &1u32.to_le_bytes()); // s_first_data_block
        put(0x20, &BLOCKS_PER_GROUP.to_le_bytes());
        put(0x24, &BLOCKS_PER_GROUP.to_le_bytes());
        put(0x28, &INODES_PER_GROUP.to_le_bytes());
        put(0x38, &0xEF53u16.to_le_bytes());
        put(0x4C, &1u32.to_le_bytes()); // s_rev_level: dynamic
        put(0x54, &11u32.to_le_bytes()); // s_first_ino
        put(0x58, &(INODE_SIZE as u16).to_le_bytes());
        put(0x5C, &compat::DIR_INDEX.to_le_bytes());
        put(0x60, &incompat_bits.to_le_bytes());
        put(0x64, &ro.to_le_bytes());
        put(0x68, b"fshost-fuzz-uuid");
        put(0xEC, &0x1234_5678u32.to_le_bytes()); // hash seed
        put(0xFE, &64u16.to_le_bytes()); // s_desc_size
        put(0x175, &[1]); // crc32c
        put(0x27C, &1u16.to_le_bytes()); // utf8-12.1
        let mut fixture = Self { image, verify: bit(1) };
        for group in 0..GROUPS as usize {
            let table = (FIRST_TABLE_BLOCK + group * TABLE_BLOCKS) as u32;
            fixture.set_descriptor(group, table);
        }
        fixture
    }

    fn desc_size(&self) -> usize {
        let incompat_bits = u32::from_le_bytes([
            self.image[BS + 0x60],
            self.image[BS + 0x61],
            self.image[BS + 0x62],
            self.image[BS + 0x63],
        ]);
        if incompat_bits & incompat::BIT64 != 0 { 64 } else { 32 }
    }

    fn set_descriptor(&mut self, group: usize, inode_table: u32) {
        let at = GDT_BLOCK * BS + group * self.desc_size();
        self.image[at + 8..at + 12].copy_from_slice(&inode_table.to_le_bytes());
    }

    /// Overwrite the bytes from `block` on with `data` (clipped to the image).
    pub fn write(&mut self, block: usize, data: &[u8]) {
        let start = block * BS;
        let end = (start + data.len()).min(self.image.len());
        if start < end {
            self.image[start..end].copy_from_slice(&data[..end - start]);
        }
    }

    /// Write the raw inode `raw` (padded or cut to 256 bytes) as inode `ino`.
    pub fn write_inode(&mut self, ino: u32, raw: &[u8]) {
        let index = (ino - 1) as usize;
        let group = index / INODES_PER_GROUP as usize;
        let at = (FIRST_TABLE_BLOCK + group * TABLE_BLOCKS) * BS + index % INODES_PER_GROUP as usize * INODE_SIZE;
        let len = raw.len().min(INODE_SIZE);
        self.image[at..at + INODE_SIZE].fill(0);
        self.image[at..at + len].copy_from_slice(&raw[..len]);
    }

    /// The image as an [`Ext4`], checksums verified as the options said
    /// (descriptors never: the fixture does not compute their checksums).
    /// `None` when the (possibly fuzzed) superblock does not parse.
    pub fn open(self) -> Option<Ext4> {
        let device = testing::memory_device(self.image);
        let raw = device.read(PRIMARY_OFFSET, SUPERBLOCK_SIZE).ok()?;
        let sb = Superblock::parse(&raw, PRIMARY_OFFSET, device.size(), false).ok()?;
        device.set_cache(sb.block_size, 64);
        let csum = Checksums { group_desc: false, ..sb.checksums(self.verify) };
        let disk = Disk::new(device, sb.block_size);
        Some(Ext4::from_volume(Volume { disk, sb, csum, inode_readahead: 32 }))
    }
}

/// A raw inode: `mode`, `i_flags`, `i_size`, `i_block` and the extra size.
fn raw_inode(mode: u16, iflags: u32, size: u64, block: &[u8]) -> Vec<u8> {
    let mut raw = vec![0u8; INODE_SIZE];
    raw[0x0..0x2].copy_from_slice(&mode.to_le_bytes());
    raw[0x4..0x8].copy_from_slice(&(size as u32).to_le_bytes());
    raw[0x1A..0x1C].copy_from_slice(&1u16.to_le_bytes());
    raw[0x20..0x24].copy_from_slice(&iflags.to_le_bytes());
    let len = block.len().min(60);
    raw[0x28..0x28 + len].copy_from_slice(&block[..len]);
    raw[0x6C..0x70].copy_from_slice(&((size >> 32) as u32).to_le_bytes());
    raw[0x80..0x82].copy_from_slice(&EXTRA_ISIZE.to_le_bytes());
    raw
}

/// An extent root (depth 0) mapping file blocks `0..len` to the payload.
fn extent_root_over_payload(len: u16) -> Vec<u8> {
    let mut root = vec![0u8; 60];
    root[0..2].copy_from_slice(&0xF30Au16.to_le_bytes());
    root[2..4].copy_from_slice(&1u16.to_le_bytes());
    root[4..6].copy_from_slice(&4u16.to_le_bytes());
    root[16..18].copy_from_slice(&len.to_le_bytes());
    root[20..24].copy_from_slice(&(PAYLOAD_BLOCK as u32).to_le_bytes());
    root
}

/// Split `data` into the option byte and the rest.
fn options(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&o, rest)) => (o, rest),
        None => (0, &[]),
    }
}

/// Split `data` at `n` (or its end).
fn split(data: &[u8], n: usize) -> (&[u8], &[u8]) {
    data.split_at(n.min(data.len()))
}

/// Parse `data` as a superblock at the primary offset, then mount the
/// fixture with it in place and walk what it reaches.
pub fn superblock(data: &[u8]) {
    for verify in [false, true] {
        for device_size in [data.len() as u64 * 64, u64::MAX] {
            if let Ok(sb) = Superblock::parse(data, PRIMARY_OFFSET, device_size, verify) {
                let _ = sb.checksums(verify);
                let _ = sb.label();
                for group in [0, 1, 3, 9, 25, 49, sb.group_count.saturating_sub(1)] {
                    let _ = sb.group_has_super(group);
                }
            }
        }
    }
    let mut fixture = Fixture::new(0);
    fixture.write(1, split(data, SUPERBLOCK_SIZE).0);
    for nocsum in [true, false] {
        let options = if nocsum { vec![("nocsum".into(), String::new())] } else { Vec::new() };
        let device = testing::memory_device(fixture.image.clone());
        if let Ok(mut fs) = Ext4::mount(device, &MountOptions { read_only: true, options }) {
            walk(&mut fs, &[2]);
        }
    }
}

/// The group descriptor block of the fixture; the payload after it.
pub fn group_descriptors(data: &[u8]) {
    let (opts, rest) = options(data);
    let (gdt, payload) = split(rest, BS);
    let mut fixture = Fixture::new(opts);
    fixture.write(GDT_BLOCK, gdt);
    fixture.write(PAYLOAD_BLOCK, payload);
    if let Some(mut fs) = fixture.open() {
        let firsts: Vec<Ino> = (0..u64::from(GROUPS)).map(|g| g * u64::from(INODES_PER_GROUP) + 1).collect();
        walk(&mut fs, &[2, 12, 33, 65, 97, 128]);
        walk(&mut fs, &firsts);
    }
}

/// One raw inode (256 bytes) as inode 12; the payload after it.
pub fn inode(data: &[u8]) {
    let (opts, rest) = options(data);
    let (raw, payload) = split(rest, INODE_SIZE);
    let mut fixture = Fixture::new(opts);
    fixture.write_inode(TARGET_INO, raw);
    fixture.write(PAYLOAD_BLOCK, payload);
    explore(fixture);
}

/// A file's `i_block` (60 bytes) with the extents flag; the payload after it
/// holds the tree's deeper nodes.
pub fn extent_tree(data: &[u8]) {
    file_with_map(data, flags::EXTENTS);
}

/// A file's `i_block` (60 bytes) as ext2/3 block pointers; the payload
/// after it holds the indirect blocks.
pub fn block_map(data: &[u8]) {
    file_with_map(data, 0);
}

fn file_with_map(data: &[u8], iflags: u32) {
    let (opts, rest) = options(data);
    let (block, payload) = split(rest, 60);
    let mut fixture = Fixture::new(opts);
    fixture.write_inode(TARGET_INO, &raw_inode(0o100644, iflags, 1 << 40, block));
    fixture.write(PAYLOAD_BLOCK, payload);
    explore(fixture);
}

/// The blocks of a linear directory (parsed alone first, at each block size).
pub fn dir_block(data: &[u8]) {
    let (opts, rest) = options(data);
    for block_size in [1024, 4096, 65536] {
        if let Ok(entries) = dir::parse(rest, block_size, 1 << 20) {
            for e in entries.iter().filter(|e| !e.is_dot()) {
                std::hint::black_box(dir::file_type(e.file_type));
            }
        }
        let _ = dir::verify_leaf(rest, 0);
        let _ = dir::first_rec_len(rest, block_size);
    }
    directory(opts, rest, 0);
}

/// The blocks of an htree-indexed directory: block 0 is the dx root.
pub fn htree(data: &[u8]) {
    let (opts, rest) = options(data);
    directory(opts, rest, flags::INDEX);
}

fn directory(opts: u8, blocks: &[u8], iflags: u32) {
    let count = blocks.len().div_ceil(BS).clamp(1, BLOCKS - PAYLOAD_BLOCK);
    let mut fixture = Fixture::new(opts);
    let root = extent_root_over_payload(count as u16);
    fixture.write_inode(TARGET_INO, &raw_inode(0o40755, iflags | flags::EXTENTS, (count * BS) as u64, &root));
    fixture.write(PAYLOAD_BLOCK, blocks);
    explore(fixture);
}

/// The in-inode xattr area (the 96 bytes after the extra fields) of a
/// regular file, then the xattr block it names (the first payload block).
pub fn xattr(data: &[u8]) {
    let (opts, rest) = options(data);
    let start = 128 + usize::from(EXTRA_ISIZE);
    let (ibody, block) = split(rest, INODE_SIZE - start);
    let mut raw = raw_inode(0o100644, 0, 100, &[]);
    raw[start..start + ibody.len()].copy_from_slice(ibody);
    raw[0x68..0x6C].copy_from_slice(&(PAYLOAD_BLOCK as u32).to_le_bytes());
    let mut fixture = Fixture::new(opts);
    fixture.write_inode(TARGET_INO, &raw);
    fixture.write(PAYLOAD_BLOCK, block);
    explore(fixture);
}

/// A jbd2 journal: the first byte picks the block size (1, 2 or 4 KiB) and
/// whether the journal is as long as its superblock's `s_maxlen` says
/// (blocks past the input read as zeros) or as the input, whose blocks
/// follow, block 0 the journal superblock.
pub fn journal(data: &[u8]) {
    let (opts, rest) = options(data);
    let block_size = 1024usize << (opts % 3);
    let blocks: Vec<&[u8]> = rest.chunks(block_size).collect();
    let maxlen = rest.get(0x10..0x14).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let claimed = if opts & 0x80 != 0 { blocks.len() as u64 } else { u64::from(maxlen).min(1 << 16) };
    let mut read = |n: u64| -> fshost_sdk::Result<Vec<u8>> {
        let mut block = usize::try_from(n).ok().and_then(|n| blocks.get(n)).map_or_else(Vec::new, |b| b.to_vec());
        block.resize(block_size, 0);
        Ok(block)
    };
    if let Ok(replay) = journal::replay(block_size as u32, &mut read, claimed) {
        let _ = (replay.len(), replay.is_empty(), replay.block(0));
    }
}

/// A whole image: mount it (with and without checksums) and walk it all.
pub fn image(data: &[u8]) {
    for nocsum in [false, true] {
        let options = if nocsum { vec![("nocsum".into(), String::new())] } else { Vec::new() };
        let device: Device = testing::memory_device(data.to_vec());
        if let Ok(mut fs) = Ext4::mount(device, &MountOptions { read_only: true, options }) {
            walk(&mut fs, &[2]);
        }
    }
}

/// Open the fixture and walk from its root and from the fuzzed inode.
fn explore(fixture: Fixture) {
    if let Some(mut fs) = fixture.open() {
        walk(&mut fs, &[Ino::from(TARGET_INO), 2]);
    }
}

/// Every call the host makes, from `starts` down through directories,
/// bounded. Errors are fine; panics and contract violations are not.
pub fn walk(fs: &mut Ext4, starts: &[Ino]) {
    let _ = fs.info();
    let mut stack = starts.to_vec();
    let mut seen = HashSet::new();
    let mut entries_seen = 0;
    while let Some(ino) = stack.pop() {
        if !seen.insert(ino) || seen.len() > MAX_DIRS {
            continue;
        }
        let Ok(attr) = fs.getattr(ino) else { continue };
        if let Ok(names) = fs.listxattr(ino) {
            for name in names.iter().take(16) {
                let _ = fs.getxattr(ino, name);
            }
        }
        let _ = fs.getxattr(ino, b"system.posix_acl_access");
        match attr.kind {
            FileType::Directory => {
                let _ = fs.lookup(ino, b"..");
                let _ = fs.lookup(ino, b"lost+found");
                let mut cookie = 0;
                while entries_seen < MAX_ENTRIES {
                    let Ok(entries) = fs.readdir(ino, cookie, 32) else { break };
                    let Some(last) = entries.last() else { break };
                    cookie = last.cookie;
                    entries_seen += entries.len();
                    for e in entries {
                        let _ = fs.lookup(ino, &e.name);
                        stack.push(e.ino);
                    }
                }
                let _ = fs.readdirplus(ino, 0, 8);
            }
            FileType::Regular => {
                map_file(fs, ino, attr.size, false);
                map_file(fs, ino, attr.size, true);
            }
            FileType::Symlink => {
                let _ = fs.readlink(ino);
            }
            _ => {}
        }
    }
}

/// Map `ino` front to back (bounded), checking each answer as the host does.
fn map_file(fs: &mut Ext4, ino: Ino, size: u64, report: bool) {
    let flags = IomapFlags { report, ..IomapFlags::default() };
    let mut pos = 0;
    for _ in 0..MAX_IOMAP_CALLS {
        if pos >= size {
            return;
        }
        let Ok(maps) = fs.iomap_begin(ino, pos, size - pos, flags) else { return };
        pos = check_mappings(&maps, pos);
    }
}

/// Panic unless `maps` is non-empty, starts at or before `pos` and covers
/// it, and is contiguous without empty entries; the end it reaches.
fn check_mappings(maps: &[Mapping], pos: u64) -> u64 {
    let first = maps.first().unwrap_or_else(|| panic!("empty mapping list at {pos}"));
    assert!(first.offset <= pos, "first mapping {first:?} starts after {pos}");
    let mut end = first.offset;
    for m in maps {
        assert!(m.length > 0, "empty mapping {m:?}");
        assert_eq!(m.offset, end, "mappings not contiguous at {m:?}");
        end = m.offset.checked_add(m.length).unwrap_or_else(|| panic!("mapping {m:?} overflows"));
        if let fshost_sdk::MappingKind::Inline(bytes) = &m.kind {
            assert_eq!(bytes.len() as u64, m.length, "inline mapping {m:?} of the wrong length");
        }
    }
    assert!(end > pos, "mappings end at {end}, before {pos}");
    end
}
