//! # fshost-sdk: write a filesystem guest for fshost
//!
//! fshost mounts untrusted disk images by running the filesystem parser as a
//! WebAssembly component (a *guest*) inside a sandbox. The guest parses
//! metadata and answers one data question, "which device bytes hold this
//! range of this file?" ([`Filesystem::iomap_begin`]); the host does all
//! file data IO itself, after checking every number the guest returned.
//! This crate hides the WIT bindings (`wit/fshost.wit`, package
//! `fshost:plugin`): implement [`Filesystem`], call [`export!`], build a
//! `cdylib` for `wasm32-wasip2`.
//!
//! ## A complete guest
//!
//! A filesystem whose root directory holds one file, `disk`, which is the
//! whole device:
//!
//! ```
//! use fshost_sdk::{
//!     Attr, Device, DirEntry, ErrorCode, FileType, Filesystem, FsInfo, Ino, IomapFlags, Mapping, MappingKind,
//!     MountOptions, Result, Timestamp,
//! };
//!
//! const ROOT: Ino = 1;
//! const DISK: Ino = 2;
//!
//! pub struct WholeDisk {
//!     size: u64,
//! }
//!
//! impl WholeDisk {
//!     fn attr(&self, ino: Ino) -> Result<Attr> {
//!         let (kind, perm, size) = match ino {
//!             ROOT => (FileType::Directory, 0o555, 0),
//!             DISK => (FileType::Regular, 0o444, self.size),
//!             _ => return Err(ErrorCode::NotFound.into()),
//!         };
//!         let t = Timestamp::default();
//!         Ok(Attr {
//!             ino, kind, perm, nlink: 1, uid: 0, gid: 0, size, blocks: size.div_ceil(512),
//!             atime: t, mtime: t, ctime: t, crtime: None, rdev: 0, generation: 0, flags: Default::default(),
//!         })
//!     }
//! }
//!
//! impl Filesystem for WholeDisk {
//!     fn mount(device: Device, _options: &MountOptions) -> Result<Self> {
//!         Ok(WholeDisk { size: device.size() })
//!     }
//!     fn info(&mut self) -> Result<FsInfo> {
//!         let blocks = self.size / 512;
//!         Ok(FsInfo { root: ROOT, block_size: 512, name_max: 255, total_blocks: blocks, fs_type: "wholedisk".into(), ..Default::default() })
//!     }
//!     fn getattr(&mut self, ino: Ino) -> Result<Attr> {
//!         self.attr(ino)
//!     }
//!     fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
//!         match (parent, name) {
//!             (ROOT, b"disk") => self.attr(DISK),
//!             (ROOT, _) => Err(ErrorCode::NotFound.into()),
//!             _ => Err(ErrorCode::NotDir.into()),
//!         }
//!     }
//!     fn readdir(&mut self, ino: Ino, cookie: u64, _max: u32) -> Result<Vec<DirEntry>> {
//!         match (ino, cookie) {
//!             (ROOT, 0) => Ok(vec![DirEntry { ino: DISK, kind: FileType::Regular, name: b"disk".to_vec(), cookie: 1 }]),
//!             (ROOT, _) => Ok(Vec::new()),
//!             _ => Err(ErrorCode::NotDir.into()),
//!         }
//!     }
//!     fn readlink(&mut self, _ino: Ino) -> Result<Vec<u8>> {
//!         Err(ErrorCode::Invalid.into())
//!     }
//!     // The file's bytes are the device's: one mapping covers all of it.
//!     fn iomap_begin(&mut self, ino: Ino, _offset: u64, _length: u64, _flags: IomapFlags) -> Result<Vec<Mapping>> {
//!         if ino != DISK {
//!             return Err(ErrorCode::IsDir.into());
//!         }
//!         Ok(vec![Mapping { offset: 0, length: self.size, kind: MappingKind::Mapped(0) }])
//!     }
//! }
//!
//! // On wasm32 this exports the component's `filesystem` interface; on
//! // other targets it expands to nothing, so native tests build.
//! fshost_sdk::export!(WholeDisk);
//! # fn main() -> Result<()> {
//! #     let mut fs = WholeDisk::mount(fshost_sdk::testing::memory_device(vec![7; 4096]), &MountOptions::default())?;
//! #     assert_eq!(fs.lookup(ROOT, b"disk")?.size, 4096);
//! #     Ok(())
//! # }
//! ```
//!
//! Its `Cargo.toml` makes the crate a `cdylib`; `cargo build --release
//! --target wasm32-wasip2` then writes the component to
//! `target/wasm32-wasip2/release/NAME.wasm`, ready for
//! `fshost ls --plugin path/to/NAME.wasm IMAGE`. `cargo xtask new-plugin
//! NAME DIR` in the fshost repository starts such a crate from a template
//! (sdk/template: a small format with a header and several files), with
//! the SDK dependency and the build set up.
//!
//! ## What the host expects
//!
//! - **Inode numbers are stable**: read them from disk. The host restarts
//!   a guest after a trap and calls `mount` again; the kernel still holds
//!   the old numbers.
//! - **Errors, not panics**: a panic costs the operation (EIO) and the
//!   instance. Read on-disk structures with [`bytes`], which turns short
//!   buffers into [`ErrorCode::Corrupted`], and say what and where
//!   ([`ResultExt::context`]).
//! - **Mappings** are sorted, contiguous, start with the one containing the
//!   asked offset, stay inside the device and are aligned to
//!   [`FsInfo::block_size`] (a file's last mapping may end at the device's
//!   end). Whole extents are welcome; the host caches them.
//! - **Cookies** are stable per directory, never 0, below 2^62.
//! - **Names are bytes**: 1..=1024 of them (FUSE's limit; most formats stop at 255), no '/' or NUL.
//!
//! ## Testing your guest natively
//!
//! The same trait runs natively, without wasm or FUSE: [`testing`] gives a
//! [`Device`] over an image file ([`testing::open_image`]) or over bytes
//! ([`testing::memory_device`]), so `cargo test` exercises the parser
//! against real images, e.g. ones `mkfs` made:
//!
//! ```no_run
//! use fshost_sdk::{Filesystem, MountOptions, testing};
//!
//! fn walk_root<F: Filesystem>() -> fshost_sdk::Result<()> {
//!     let device = testing::open_image("tests/images/small.img")?;
//!     let mut fs = F::mount(device, &MountOptions { read_only: true, ..Default::default() })?;
//!     let root = fs.info()?.root;
//!     for entry in fs.readdir(root, 0, 100)? {
//!         let attr = fs.getattr(entry.ino)?;
//!         println!("{} {} bytes", String::from_utf8_lossy(&entry.name), attr.size);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Then test the component itself through the real host:
//! `fshost ls|cat|stat --plugin target/wasm32-wasip2/release/NAME.wasm IMAGE`.
//!
//! ## Logging
//!
//! [`log::log`] and the [`warn!`] macro send messages to the host's log
//! (`fshost -v` shows them); natively, warnings and errors go to stderr.

#![deny(missing_docs)]

pub mod bytes;
pub mod checksum;
pub mod device;
mod error;
pub mod log;
pub mod lru;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

// The plumbing `export!` expands to; public only so the macro can name it
// from the guest's crate, hidden from the docs (`__private`).
#[cfg(target_arch = "wasm32")]
#[allow(missing_docs)]
mod glue;

pub use device::{BlockIo, Device};
pub use error::{Error, ErrorCode, Result, ResultExt};
pub use types::*;

/// A filesystem parser, and optionally writer. One value lives per guest instance,
/// created by [`Filesystem::mount`]; every other call gets `&mut self`.
///
/// Inode numbers must be stable (read from disk), because the host may
/// restart the guest and mount again at any time.
pub trait Filesystem: Sized + 'static {
    /// Read the superblock from `device`, check the format and its features
    /// (refuse unknown incompatible ones with [`ErrorCode::Unsupported`]).
    fn mount(device: Device, options: &MountOptions) -> Result<Self>;

    /// Filesystem-wide facts and counters (answered for mount and statfs).
    fn info(&mut self) -> Result<FsInfo>;

    /// Attributes of `ino`.
    fn getattr(&mut self, ino: Ino) -> Result<Attr>;

    /// Find `name` in directory `parent`.
    fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr>;

    /// Up to `max` entries of directory `ino` after `cookie` (0: from the
    /// start), without "." and "..". An empty list ends the listing.
    fn readdir(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>>;

    /// As [`Filesystem::readdir`], with attributes. The default calls
    /// `getattr` for each entry.
    fn readdirplus(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<(DirEntry, Attr)>> {
        let entries = self.readdir(ino, cookie, max)?;
        entries
            .into_iter()
            .map(|e| {
                let attr = self.getattr(e.ino)?;
                Ok((e, attr))
            })
            .collect()
    }

    /// The target of symlink `ino`.
    fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>>;

    /// Names of the extended attributes of `ino` (default: none).
    fn listxattr(&mut self, _ino: Ino) -> Result<Vec<Vec<u8>>> {
        Ok(Vec::new())
    }

    /// Value of extended attribute `name` of `ino` (default: none).
    fn getxattr(&mut self, _ino: Ino, _name: &[u8]) -> Result<Vec<u8>> {
        Err(ErrorCode::NoData.into())
    }

    /// Map [offset, offset + length) of regular file `ino`: sorted,
    /// contiguous mappings, the first containing `offset`. Whole extents are
    /// welcome (the host caches them); stopping short is fine (it asks again).
    fn iomap_begin(&mut self, ino: Ino, offset: u64, length: u64, flags: IomapFlags) -> Result<Vec<Mapping>>;

    // ---- The write half (contract 0.2.0, interface `writer`). Every method
    // has a default that refuses, so a read-only guest implements none of
    // them; the host calls them only after `begin_write` succeeded. With
    // `flags.write`, `iomap_begin` allocates (holes become unwritten) and
    // returns only mapped or unwritten mappings.

    /// The user asked for a read-write mount: check every feature in use is
    /// one this guest writes, mark the filesystem in use on the device, or
    /// refuse with one sentence naming what cannot be written.
    fn begin_write(&mut self) -> std::result::Result<(), String> {
        Err("this guest cannot write".to_string())
    }

    /// Create `name` in `parent` (regular file, directory, fifo, socket,
    /// device); `Exists` if taken.
    fn create(&mut self, _parent: Ino, _name: &[u8], _new: &NewInode) -> Result<Attr> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Create symlink `name` in `parent` to `target`.
    fn symlink(&mut self, _parent: Ino, _name: &[u8], _target: &[u8], _new: &NewInode) -> Result<Attr> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Give `ino` (not a directory) the name `name` in `parent`.
    fn link(&mut self, _ino: Ino, _parent: Ino, _name: &[u8], _time: Timestamp) -> Result<Attr> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Remove the non-directory entry `name` of `parent`.
    fn unlink(&mut self, _parent: Ino, _name: &[u8], _time: Timestamp) -> Result<Unlinked> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Remove the empty directory `name` of `parent`; its inode.
    fn rmdir(&mut self, _parent: Ino, _name: &[u8], _time: Timestamp) -> Result<Ino> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Move `name` of `parent` to `new_name` of `new_parent`; the replaced
    /// inode, if any.
    fn rename(
        &mut self,
        _parent: Ino,
        _name: &[u8],
        _new_parent: Ino,
        _new_name: &[u8],
        _flags: RenameFlags,
        _time: Timestamp,
    ) -> Result<Option<Unlinked>> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Change attributes; all of them afterwards.
    fn setattr(&mut self, _ino: Ino, _changes: &AttrChanges) -> Result<Attr> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Set extended attribute `name` to `value`.
    fn setxattr(&mut self, _ino: Ino, _name: &[u8], _value: &[u8], _flags: XattrFlags, _time: Timestamp) -> Result<()> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Remove extended attribute `name`.
    fn removexattr(&mut self, _ino: Ino, _name: &[u8], _time: Timestamp) -> Result<()> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// The host wrote [offset, offset + written) into write mappings:
    /// convert the unwritten blocks it touches, raise the size, set mtime
    /// and ctime. Returns the size.
    fn ioend(&mut self, _ino: Ino, _offset: u64, _written: u64, _time: Timestamp) -> Result<u64> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// fallocate(2); the attributes afterwards.
    fn fallocate(
        &mut self,
        _ino: Ino,
        _offset: u64,
        _length: u64,
        _mode: FallocateFlags,
        _time: Timestamp,
    ) -> Result<Attr> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Make `ino`'s metadata durable (then [`Device::flush`]).
    fn fsync(&mut self, _ino: Ino, _datasync: bool) -> Result<()> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Make everything durable.
    fn syncfs(&mut self) -> Result<()> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// No reference to `ino` is left: free it if it is an orphan.
    fn evict(&mut self, _ino: Ino) -> Result<()> {
        Err(ErrorCode::ReadOnly.into())
    }

    /// Clean unmount: free orphans, write everything, mark clean, flush.
    fn unmount(&mut self) -> Result<()> {
        Err(ErrorCode::ReadOnly.into())
    }
}

/// Export a [`Filesystem`] implementation as the guest's `filesystem`
/// interface. Use once, at the crate root of a `cdylib` built for
/// `wasm32-wasip2`. Expands to nothing on other targets, so the crate's
/// native unit tests still build.
#[macro_export]
macro_rules! export {
    ($fs:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static FSHOST_STATE: ::std::cell::RefCell<::std::option::Option<$fs>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            struct FshostExport;
            impl $crate::__private::Export for FshostExport {
                type Fs = $fs;
                fn state() -> &'static ::std::thread::LocalKey<::std::cell::RefCell<::std::option::Option<$fs>>> {
                    &FSHOST_STATE
                }
            }
            $crate::__private::export_glue!(FshostExport);
        };
    };
}

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    pub use crate::export_glue;
    pub use crate::glue::*;
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "writable-guest",
        pub_export_macro: true,
        export_macro_name: "__fshost_export_world",
        default_bindings_module: "fshost_sdk::__private::bindings",
    });
}
