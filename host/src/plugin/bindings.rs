//! The generated bindings for `wit/fshost.wit`. Nothing outside `plugin`
//! names these types; `convert` turns them into `crate::types`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "filesystem-guest",
});

pub use exports::fshost::plugin::filesystem as guest;
pub use fshost::plugin::{block_device, log, types};
