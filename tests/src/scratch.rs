//! Scratch directories for tests: unique, named so a leftover is
//! recognisable (`fshost-tests-*` in the temp dir), removed on drop.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// A fresh directory that is removed, with everything under it, on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `$TMPDIR/fshost-tests-PURPOSE-XXXXXX` (mkdtemp, so unique
    /// across threads and processes).
    pub fn new(purpose: &str) -> anyhow::Result<ScratchDir> {
        let template = std::env::temp_dir().join(format!("fshost-tests-{purpose}-XXXXXX"));
        let template = CString::new(template.as_os_str().as_bytes()).context("temp dir path holds a NUL")?;
        let raw = template.into_raw();
        // SAFETY: `raw` is a NUL-terminated buffer we own; mkdtemp rewrites
        // the trailing XXXXXX in place and does not change its length.
        let made = unsafe { libc::mkdtemp(raw) };
        // SAFETY: `raw` came from CString::into_raw just above.
        let template = unsafe { CString::from_raw(raw) };
        if made.is_null() {
            return Err(io::Error::last_os_error()).with_context(|| format!("mkdtemp {template:?}"));
        }
        Ok(ScratchDir { path: PathBuf::from(OsString::from_vec(template.into_bytes())) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {err}", self.path.display());
        }
    }
}

/// `path` as a C string for libc calls.
pub fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds NUL"))
}
