//! # fshost-guest-fat: a read-only FAT12/16/32 + VFAT parser for fshost
//!
//! This guest runs inside the host's WebAssembly sandbox and answers the
//! host's questions about a FAT volume: attributes, directory entries (long
//! names included) and which device bytes hold a file range. It shows what
//! Linux's vfat driver shows with its default options (`shortname=mixed`,
//! codepage 437) plus `utf8`: the same names, modes, link counts, sizes and
//! times, so the two can be compared entry by entry. Every byte read from
//! the image is hostile: malformed structures become `Corrupted` errors
//! naming the object, never a panic or an unbounded loop.
//!
//! Code map, bottom up (each file is named for what it parses):
//! - `boot`: the boot sector / BPB and the volume's geometry.
//! - `fat`: the allocation table, cluster chains as runs.
//! - `dir`: 32-byte short entries and short-name display; `lfn`: long-name
//!   slots and UTF-16; `time`: timestamps.
//! - `listing`: a directory's entries as vfat lists and looks them up.
//! - `fs`: the `Filesystem` implementation, inode numbers, attributes,
//!   mappings, mount options and LRU caches (`fshost_sdk::lru`).

mod boot;
mod dir;
mod fat;
mod fs;
mod lfn;
mod listing;
mod time;

pub use fs::FatFs;

fshost_sdk::export!(FatFs);
