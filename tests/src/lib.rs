//! Shared machinery for fshost's behaviour tests: where the built binary and
//! guests are, mounts that clean up after themselves, and image builders.
//!
//! The tests drive the real `fshost` binary (built by `cargo xtask test`
//! before `cargo test` runs) against real guests compiled to wasm, on images
//! made by real tools (mkfs.ext4, debugfs) or by a guest's own image writer.

pub mod capture;
pub mod compare;
pub mod fsck;
pub mod fshost;
pub mod fsx;
pub mod kernel;
pub mod pattern;
pub mod probe;
pub mod scratch;
pub mod snapshot;
pub mod stress;
pub mod tree;
pub mod uml;
pub mod workload;
