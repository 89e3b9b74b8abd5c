//! Finding and running the `fshost` binary and the built guests.

use std::path::PathBuf;

/// The workspace's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// The `fshost` binary: `$FSHOST_BIN`, or the release build in target/.
pub fn fshost_bin() -> PathBuf {
    std::env::var_os("FSHOST_BIN").map(PathBuf::from).unwrap_or_else(|| target_dir().join("release/fshost"))
}

/// A built guest component by name ("hello", "ext4"): target/guests/NAME.wasm,
/// where `cargo xtask build` puts them.
pub fn guest(name: &str) -> PathBuf {
    target_dir().join("guests").join(format!("{name}.wasm"))
}
