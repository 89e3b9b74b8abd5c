//! # fshost-sdk: write a filesystem guest for fshost
//!
//! fshost mounts untrusted disk images by running the filesystem parser as a
//! WebAssembly component (a *guest*) inside a sandbox. The guest parses
//! metadata and answers one data question, "which device bytes hold this
//! range of this file?" ([`Filesystem::iomap_begin`]); the host does all
//! file data IO itself. This crate hides the WIT bindings: implement
//! [`Filesystem`], call [`export!`], build for `wasm32-wasip2`.
//!
//! ```ignore
//! use fshost_sdk::*;
//!
//! struct MyFs { device: Device }
//!
//! impl Filesystem for MyFs {
//!     fn mount(device: Device, _options: &MountOptions) -> Result<Self> {
//!         Ok(MyFs { device })
//!     }
//!     fn info(&mut self) -> Result<FsInfo> { todo!() }
//!     fn getattr(&mut self, ino: Ino) -> Result<Attr> { todo!() }
//!     fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> { todo!() }
//!     fn readdir(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>> { todo!() }
//!     fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> { todo!() }
//!     fn iomap_begin(&mut self, ino: Ino, offset: u64, length: u64, flags: IomapFlags)
//!         -> Result<Vec<Mapping>> { todo!() }
//! }
//!
//! fshost_sdk::export!(MyFs);
//! ```
//!
//! The on-disk helpers in [`bytes`] turn short buffers into `Corrupted`
//! errors instead of panics; [`Device`] caches metadata blocks; [`testing`]
//! runs the same trait natively against an image file.

pub mod bytes;
pub mod device;
mod error;
pub mod log;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

#[cfg(target_arch = "wasm32")]
mod glue;

pub use device::{BlockIo, Device};
pub use error::{Error, ErrorCode, Result, ResultExt};
pub use types::*;

/// A read-only filesystem parser. One value lives per guest instance,
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
        world: "filesystem-guest",
        pub_export_macro: true,
        export_macro_name: "__fshost_export_world",
        default_bindings_module: "fshost_sdk::__private::bindings",
    });
}
