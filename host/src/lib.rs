//! fshost: a trusted host that mounts filesystem images through untrusted
//! WebAssembly guests. See ARCHITECTURE.md at the repository root for the
//! map; in short:
//!
//! - [`plugin`] owns wasmtime: loads, limits, calls and validates guests;
//! - [`device`] owns the backing image or block device;
//! - [`mapping`] caches validated mappings and reads file data itself;
//! - [`volume`] combines them into the filesystem both front ends use;
//! - [`partitions`] turns one partition of a whole disk into the device, as
//!   a volume guest (`plugin::volume`) reads the table; [`disk`] finds the
//!   filesystems on a whole disk given without `--partition`;
//! - [`fuse`] is the FUSE adapter, [`offline`] the FUSE-free commands;
//! - [`cli`] and [`mount`] are the edges.

pub mod cli;
pub mod detect;
pub mod device;
pub mod disk;
pub mod docs;
pub mod error;
pub mod fuse;
pub mod fuse_conf;
pub mod mapping;
pub mod mount;
pub mod mount_helper;
pub mod offline;
pub mod partitions;
pub mod plugin;
pub mod report;
pub mod sandbox;
pub mod serve;
pub mod stack;
pub mod types;
pub mod volume;
