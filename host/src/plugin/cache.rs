//! The compiled-guest cache: a second mount of the same guest does not
//! compile it again.
//!
//! Entries are wasmtime-serialized components keyed by the SHA-256 of the
//! component bytes and by the engine's compatibility hash (wasmtime version
//! and every setting that affects code generation). Loading a serialized
//! component runs native code produced earlier, so the cache directory must
//! be owned by us and writable by nobody else; otherwise it is not used.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled guests are kept.
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// `$FSHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/fshost`, else
    /// `$HOME/.cache/fshost`; created 0700 if missing.
    pub fn default_location() -> Option<Self> {
        let dir = std::env::var_os("FSHOST_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("fshost")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fshost")))?;
        Self::at(dir)
    }

    /// A cache in `dir`, if it is (or can be made) private to this user.
    pub fn at(dir: PathBuf) -> Option<Self> {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::debug!("compile cache {} unavailable: {e}", dir.display());
            return None;
        }
        let meta = std::fs::metadata(&dir).ok()?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            tracing::warn!("compile cache {} is owned by uid {}, not us; not using it", dir.display(), meta.uid());
            return None;
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
        }
        Some(CompileCache { dir })
    }

    fn entry(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let digest = Sha256::digest(wasm);
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}-{:016x}.cwasm", compat.finish()))
    }

    /// The cached compilation of `wasm`, if present and loadable.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        let path = self.entry(engine, wasm);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store` below into a directory that
        // only this user can write (checked in `at`), from a component this
        // engine compiled; wasmtime also checks the engine compatibility.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("ignoring compiled guest cache entry {}: {e}", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keep the compilation of `wasm`. Failures only cost a recompile later.
    pub fn store(&self, engine: &Engine, wasm: &[u8], component: &Component) {
        let path = self.entry(engine, wasm);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::debug!("could not cache compiled guest at {}: {e}", path.display());
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
