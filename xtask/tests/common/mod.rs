//! What xtask's integration tests share: where the build lives, scratch
//! directories, and running a command that must succeed.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::Output;

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A directory under the system temp dir, removed on drop (after a lazy
/// unmount of `mnt` inside it, should a test have left one).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fshost-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mnt = self.0.join("mnt");
        if mnt.exists() {
            let _ = std::process::Command::new("umount").arg("-l").arg(&mnt).output();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The stdout of a command that must have succeeded; its whole output in
/// the panic otherwise.
pub fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
