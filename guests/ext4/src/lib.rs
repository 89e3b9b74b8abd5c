//! # fshost-guest-ext4: a read-only ext2/ext3/ext4 parser for fshost
//!
//! This guest runs inside the host's WebAssembly sandbox. It parses ext4
//! metadata from the block device the host lends it and answers the host's
//! questions (attributes, directory entries, symlink targets, extended
//! attributes, and which device bytes hold a file range); it never reads
//! file data on the host's behalf. It reads what the Linux kernel reads on
//! an unmodified image, and treats every byte of it as hostile: malformed
//! structures become `Corrupted` errors naming the object, never a panic or
//! a loop.
//!
//! Code map, bottom up (each file is named for the structure it parses):
//! - `superblock`, `features`, `group`: geometry and feature gates.
//! - `csum`: crc32c / crc16 and the verification policy.
//! - `disk`: block reads with the replayed `journal` laid over the device.
//! - `volume`: the fixed context every parser gets.
//! - `inode`, `time`: inodes and their timestamps.
//! - `extent`, `blockmap`, `mapping`: file block to disk block maps.
//! - `inline`: inline data; `symlink`: link targets.
//! - `dir`, `htree`, `hash`, `casefold`, `directory`, `names`: directories.
//! - `xattr`, `acl`: extended attributes and POSIX ACLs.
//! - `nokey`: encrypted names and targets as fscrypt shows them without the key.
//! - `iomap`: mapping answers; `fs`: the `Filesystem` implementation, the
//!   inode cache (`fshost_sdk::lru`) and mount options.
//! - `write`: the writer (allocation, extent trees, file data calls,
//!   begin-write and unmount; see its module docs).

mod acl;
mod blockmap;
mod casefold;
mod csum;
mod dir;
mod directory;
mod disk;
mod extent;
mod features;
mod fs;
#[cfg(all(not(target_arch = "wasm32"), any(test, feature = "fuzzing")))]
pub mod fuzzing;
mod group;
mod hash;
mod htree;
mod inline;
mod inode;
mod iomap;
mod journal;
mod mapping;
mod names;
mod nokey;
mod statfs;
mod superblock;
mod symlink;
mod time;
mod volume;
mod write;
mod xattr;

pub use fs::Ext4;

fshost_sdk::export!(Ext4);
