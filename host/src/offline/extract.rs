//! `cp-out`: copy a file or a subtree out of the image onto the host.
//!
//! On a damaged image the copy goes on past what it cannot read, as rsync
//! does: each object that fails (an unreadable inode, directory, symlink or
//! file content, a directory cycle) is reported on stderr with its path and
//! reason and left out, everything else is copied, and the command exits
//! non-zero at the end. A regular file whose content cannot be read in full
//! is removed rather than left short, so every file copied is whole.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{display, os, resolve};
use crate::types::{Attr, FileKind, Ino, Timestamp};
use crate::volume::{Seek, Volume};

/// What a copy did.
#[derive(Debug, Default)]
pub struct Extracted {
    /// Objects copied (files, directories, links, fifos).
    pub copied: u64,
    /// Objects left out, each already reported on stderr.
    pub failed: u64,
}

/// Directories nested deeper than this are not entered (a crafted image
/// could nest without end; Linux's own paths stop far sooner).
const MAX_DEPTH: usize = 4096;

/// Extract `path` (a file or a whole subtree) to `dest`, which must not
/// exist. Regular files keep their holes; directories, symlinks, fifos and
/// hard links are recreated; device nodes and sockets are skipped with a
/// warning; set-id bits are dropped (the image is untrusted), the sticky
/// bit is kept (it only limits who may delete in a directory); times are
/// kept. A directory met under a second name (a cycle) is not entered.
///
/// Fails at once only when nothing can be copied: `dest` exists, or `path`
/// cannot be resolved. Every later failure costs one object (see the
/// module docs) and is counted in the result.
pub fn cp_out(vol: &Volume, path: &[u8], dest: &Path) -> anyhow::Result<Extracted> {
    if dest.symlink_metadata().is_ok() {
        bail!("{} already exists; cp-out only creates new files", dest.display());
    }
    let attr = resolve(vol, path, false)?;
    let mut copy = Copy { vol, links: HashMap::new(), done: Extracted::default() };
    copy.object(&attr, display(path), dest, 0);
    Ok(copy.done)
}

struct Copy<'a> {
    vol: &'a Volume,
    /// Inodes copied so far that have (or are) other names: hard-linked
    /// files, and every directory (to refuse cycles).
    links: HashMap<Ino, PathBuf>,
    done: Extracted,
}

impl Copy<'_> {
    /// Copy one object; report it if it fails.
    fn object(&mut self, attr: &Attr, what: String, dest: &Path, depth: usize) {
        match self.try_object(attr, &what, dest, depth) {
            Ok(()) => self.done.copied += 1,
            Err(e) => self.report(&what, &e),
        }
    }

    fn report(&mut self, what: &str, e: &anyhow::Error) {
        self.done.failed += 1;
        let e = crate::report::message(e);
        // The error usually starts with the path already.
        if e.starts_with(what) {
            eprintln!("fshost: cp-out: {e}");
        } else {
            eprintln!("fshost: cp-out: {what}: {e}");
        }
    }

    fn try_object(&mut self, attr: &Attr, what: &str, dest: &Path, depth: usize) -> anyhow::Result<()> {
        if attr.kind == FileKind::Directory {
            if depth > MAX_DEPTH {
                bail!("{what}: directory nesting deeper than {MAX_DEPTH}");
            }
            // A directory has one name. A second one is a cycle (a directory
            // inside itself) or a DAG whose paths multiply; both would make
            // the copy endless, so refuse.
            if let Some(first) = self.links.insert(attr.ino, dest.to_owned()) {
                bail!(
                    "{what}: directory inode {} is also {}: a directory has one name (a cycle or a corrupted entry)",
                    attr.ino,
                    first.display()
                );
            }
        } else if attr.nlink > 1
            && let Some(first) = self.links.get(&attr.ino)
        {
            return std::fs::hard_link(first, dest).with_context(|| format!("linking {}", dest.display()));
        }
        let perm = std::fs::Permissions::from_mode(u32::from(attr.perm) & 0o1777);
        match attr.kind {
            FileKind::Directory => {
                std::fs::create_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
                // A directory that cannot be listed stays, empty, and is
                // reported; its entries that can be read are copied.
                let listed = self.vol.read_whole_dir(attr.ino).map_err(|e| os(e, what));
                for e in listed.as_deref().unwrap_or_default() {
                    let child_what = format!("{what}/{}", String::from_utf8_lossy(&e.name));
                    let child_dest = dest.join(OsStr::from_bytes(&e.name));
                    match self.vol.getattr(e.ino) {
                        Ok(child) => self.object(&child, child_what, &child_dest, depth + 1),
                        Err(err) => self.report(&child_what.clone(), &os(err, child_what)),
                    }
                }
                std::fs::set_permissions(dest, perm)?;
                set_times(dest, attr)?;
                listed.map(drop)
            }
            FileKind::Regular => {
                let file = std::fs::File::create_new(dest).with_context(|| format!("creating {}", dest.display()))?;
                if let Err(e) = write_sparse(self.vol, attr, what, &file) {
                    drop(file);
                    let _ = std::fs::remove_file(dest);
                    return Err(e);
                }
                file.set_permissions(perm)?;
                self.remember_links(attr, dest);
                set_times(dest, attr)
            }
            FileKind::Symlink => {
                let target = self.vol.readlink(attr.ino).map_err(|e| os(e, what))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), dest)
                    .with_context(|| format!("creating symlink {}", dest.display()))?;
                self.remember_links(attr, dest);
                Ok(())
            }
            FileKind::Fifo => {
                nix::unistd::mkfifo(dest, nix::sys::stat::Mode::from_bits_truncate(u32::from(attr.perm) & 0o777))
                    .with_context(|| format!("creating fifo {}", dest.display()))?;
                self.remember_links(attr, dest);
                set_times(dest, attr)
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                tracing::warn!("{what}: skipping a device node or socket");
                Ok(())
            }
        }
    }

    /// A hard-linked non-directory copied whole: its other names link to it.
    fn remember_links(&mut self, attr: &Attr, dest: &Path) {
        if attr.nlink > 1 {
            self.links.insert(attr.ino, dest.to_owned());
        }
    }
}

/// Write the data ranges of `attr` into `file`, leaving holes as holes.
fn write_sparse(vol: &Volume, attr: &Attr, what: &str, file: &std::fs::File) -> anyhow::Result<()> {
    let mut pos = 0u64;
    while pos < attr.size {
        let data = match vol.seek(attr.ino, pos, Seek::Data) {
            Ok(d) => d,
            Err(e) if e.errno() == libc::ENXIO => break,
            Err(e) => return Err(os(e, what)),
        };
        let hole = vol.seek(attr.ino, data, Seek::Hole).map_err(|e| os(e, what))?;
        let mut at = data;
        while at < hole {
            let want = (hole - at).min(1 << 20) as u32;
            let chunk = vol.read(attr.ino, at, want).map_err(|e| os(e, format!("{what} at byte {at}")))?;
            if chunk.is_empty() {
                bail!("{what}: short read at byte {at}");
            }
            file.write_all_at(&chunk, at)?;
            at += chunk.len() as u64;
        }
        pos = hole;
    }
    file.set_len(attr.size)?;
    Ok(())
}

fn set_times(dest: &Path, attr: &Attr) -> anyhow::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let spec = |t: Timestamp| TimeSpec::new(t.seconds, i64::from(t.nanoseconds));
    utimensat(nix::fcntl::AT_FDCWD, dest, &spec(attr.atime), &spec(attr.mtime), UtimensatFlags::NoFollowSymlink)
        .with_context(|| format!("setting times of {}", dest.display()))
}
