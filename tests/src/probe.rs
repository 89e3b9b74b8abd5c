//! What a mounted tree shows object by object, failures included, for
//! comparing two views of a damaged image.
//!
//! [`crate::snapshot`] compares healthy trees; on a damaged image what
//! matters is also what fails, and how: a name `find` cannot stat leaves
//! no line there, and a file that fails half way has no hash. [`take`]
//! walks a tree with plain system calls and records, for every directory,
//! the names readdir returns with their d_type and the errno that ends a
//! listing early; for every name, lstat's fields or its errno; for every
//! regular file, how many bytes sequential 4 KiB reads return before the
//! first one fails, their sha256 and that read's errno. The same code runs
//! on both sides (inside user-mode Linux for the kernel's view), so the
//! records compare field by field.
//!
//! Bounded for hostile trees: at most [`MAX_DEPTH`] levels,
//! [`MAX_ENTRIES`] names and [`MAX_READ`] bytes per file.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// Directory levels walked below the root.
pub const MAX_DEPTH: usize = 8;
/// Names recorded in one walk.
pub const MAX_ENTRIES: usize = 20_000;
/// Bytes read from one file.
pub const MAX_READ: u64 = 16 << 20;

/// One view: `path\tfield` → value, paths relative to the root (`.` for
/// the root), bytes escaped as `escape_ascii` shows them. Fields: `type`
/// (d_type from readdir), `listing` (`ok` or the errno that ended it),
/// `stat` (lstat's fields or errno), `read` (bytes, sha256, errno),
/// `lookup` (lstat of a name asked for by path), `statfs` (the root's).
pub type Probe = BTreeMap<String, String>;

/// Walks the tree at `root`, then stats each of `lookups` (paths relative
/// to `root`, listed or not: a name readdir does not show may still be
/// found by a lookup).
pub fn take(root: &Path, lookups: &[Vec<u8>]) -> Probe {
    let mut probe = Probe::new();
    probe.insert(key(".", "stat"), stat(root));
    probe.insert(key(".", "statfs"), statfs(root));
    walk(root, ".", 0, &mut probe);
    for name in lookups {
        let path = root.join(std::ffi::OsStr::from_bytes(name));
        probe.insert(key(&name.escape_ascii().to_string(), "lookup"), stat(&path));
    }
    probe
}

fn key(path: &str, field: &str) -> String {
    format!("{path}\t{field}")
}

fn errno(e: &io::Error) -> String {
    match e.raw_os_error() {
        // SAFETY: strerror returns a pointer to a static, NUL-terminated
        // message for any errno value.
        Some(n) => format!("errno {n} ({})", unsafe { std::ffi::CStr::from_ptr(libc::strerror(n)) }.to_string_lossy()),
        None => format!("error {e}"),
    }
}

fn walk(dir: &Path, shown: &str, depth: usize, probe: &mut Probe) {
    let mut names: Vec<(Vec<u8>, String)> = Vec::new();
    let listing = match fs::read_dir(dir) {
        Err(e) => errno(&e),
        Ok(entries) => {
            let mut end = "ok".to_string();
            for entry in entries {
                match entry {
                    Ok(entry) => {
                        let kind = match entry.file_type() {
                            Ok(t) if t.is_dir() => "dir",
                            Ok(t) if t.is_file() => "file",
                            Ok(t) if t.is_symlink() => "symlink",
                            Ok(t) if t.is_block_device() || t.is_char_device() => "device",
                            Ok(_) => "other",
                            Err(_) => "unknown",
                        };
                        names.push((entry.file_name().as_bytes().to_vec(), kind.to_string()));
                    }
                    Err(e) => {
                        end = errno(&e);
                        break;
                    }
                }
            }
            end
        }
    };
    probe.insert(key(shown, "listing"), listing);
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (name, kind) in names {
        if probe.len() > 4 * MAX_ENTRIES {
            probe.insert(key(shown, "truncated"), "too many entries".into());
            return;
        }
        let count = seen.entry(name.clone()).or_default();
        *count += 1;
        let escaped = name.escape_ascii().to_string();
        let mut child = if shown == "." { escaped } else { format!("{shown}/{escaped}") };
        if *count > 1 {
            // Two entries of one name: the second is recorded apart
            // (lookups find the first).
            child = format!("{child}#{count}");
            probe.insert(key(&child, "type"), kind);
            continue;
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(&name));
        probe.insert(key(&child, "type"), kind);
        let meta = fs::symlink_metadata(&path);
        probe.insert(key(&child, "stat"), stat(&path));
        match meta {
            Ok(m) if m.is_dir() && depth < MAX_DEPTH => walk(&path, &child, depth + 1, probe),
            Ok(m) if m.is_file() => {
                probe.insert(key(&child, "read"), read(&path));
            }
            _ => {}
        }
    }
}

/// lstat's fields but the inode number and st_blksize, or the errno.
fn stat(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(e) => errno(&e),
        Ok(m) => format!(
            "mode {:o} nlink {} uid {} gid {} size {} blocks {} atime {}.{:09} mtime {}.{:09} ctime {}.{:09}",
            m.mode(),
            m.nlink(),
            m.uid(),
            m.gid(),
            m.size(),
            m.blocks(),
            m.atime(),
            m.atime_nsec(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ),
    }
}

/// statvfs's sizes and counts (f_bsize, f_blocks, f_bfree, f_bavail,
/// f_files, f_ffree, f_namemax), or the errno.
fn statfs(path: &Path) -> String {
    let Ok(c) = crate::scratch::c_path(path) else { return "path holds NUL".into() };
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return errno(&io::Error::last_os_error());
    }
    format!(
        "bsize {} blocks {} bfree {} bavail {} files {} ffree {} namemax {}",
        st.f_bsize, st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, st.f_namemax
    )
}

/// Sequential 4 KiB reads up to the end, the first failure or
/// [`MAX_READ`]: `N bytes sha256 H` and then `, then errno E`.
fn read(path: &Path) -> String {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("open: {}", errno(&e)),
    };
    let mut hash = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 4096];
    let mut end = String::new();
    while total < MAX_READ {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                end = format!(", then {}", errno(&e));
                break;
            }
        }
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{total} bytes sha256 {digest}{end}")
}

/// Writes `probe` to `path`, one `path\tfield\tvalue` line each.
pub fn write(probe: &Probe, path: &Path) -> anyhow::Result<()> {
    let text: String = probe.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Reads what [`write`] wrote.
pub fn read_file(path: &Path) -> anyhow::Result<Probe> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut probe = Probe::new();
    for line in text.lines() {
        let Some((k, v)) = line.rsplit_once('\t') else { bail!("bad probe line {line:?}") };
        probe.insert(k.to_string(), v.to_string());
    }
    Ok(probe)
}

/// One field that differs between two probes, kernel first; `None` where
/// a side has no such field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `path field`.
    pub key: String,
    pub kernel: Option<String>,
    pub fshost: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        write!(f, "{}: kernel {} | fshost {}", self.key, side(&self.kernel), side(&self.fshost))
    }
}

/// Every field that differs.
pub fn diff(kernel: &Probe, fshost: &Probe) -> Vec<Difference> {
    let mut keys: Vec<&String> = kernel.keys().chain(fshost.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| kernel.get(*k) != fshost.get(*k))
        .map(|k| Difference {
            key: k.replace('\t', " "),
            kernel: kernel.get(k).cloned(),
            fshost: fshost.get(k).cloned(),
        })
        .collect()
}
