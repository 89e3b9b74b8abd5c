//! The generated bindings for `wit/fshost.wit`. Nothing outside `plugin`
//! names these types; `convert` turns them into `crate::types`.
//!
//! Bound to the world `writable-guest`, whose imports are those of
//! `filesystem-guest`: the host links every guest the same way and loads
//! each export on its own (`GuestIndices`), so a guest without `writer`
//! (the read-only world) instantiates too and only read-write mounts
//! need the second export.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "writable-guest",
});

pub use exports::fshost::plugin::{filesystem as guest, writer};
// `self::`: the generated module `fshost` shares its name with this crate,
// which rustdoc (doctests) also has in scope.
pub use self::fshost::plugin::{block_device, checksum, log, types};
