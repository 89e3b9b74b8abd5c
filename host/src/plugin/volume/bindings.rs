//! The generated bindings for `wit/volume/volume.wit`. Nothing outside
//! `plugin::volume` names these types; `convert` turns them into the
//! validated values of `plugin::volume`.

wasmtime::component::bindgen!({
    path: "../wit/volume",
    world: "volume-guest",
});

// `self::`: the generated module `fshost` shares its name with this crate.
pub use self::fshost::volume::{block_device, log, types};
