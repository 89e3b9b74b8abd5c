//! The generated bindings for `wit/fshost.wit`. Nothing outside `plugin`
//! names these types; `convert` turns them into `crate::types`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "filesystem-guest",
});

pub use exports::fshost::plugin::filesystem as guest;
// `self::`: the generated module `fshost` shares its name with this crate,
// which rustdoc (doctests) also has in scope.
pub use self::fshost::plugin::{block_device, log, types};
