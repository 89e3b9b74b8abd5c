//! A textual snapshot of a mounted tree, taken with ordinary tools, and the
//! difference between two snapshots.
//!
//! The kernel-differential tests for formats this machine's kernel cannot
//! mount (FAT: the host kernel has no vfat) mount the image inside another
//! kernel (user-mode Linux, see [`crate::uml`]) and cannot walk both trees
//! side by side as [`crate::compare`] does. Instead each side runs the same
//! shell script ([`SCRIPT`]) over its mount: GNU `find` lists every entry,
//! `stat` prints what lstat returns, `sha256sum` hashes every regular file,
//! `stat -f` prints statvfs. Same commands, same format, so the two outputs
//! compare field by field; nothing in them was computed by fshost's code.
//!
//! What a snapshot cannot show: d_ino/d_type from readdir (find lstat()s),
//! xattrs (FAT has none), SEEK_DATA layout (FAT has no holes).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};

/// The snapshot script: `sh SCRIPT ROOT OUT [NAMES]` writes `OUT/entries`,
/// `OUT/hashes`, `OUT/statfs`, with NAMES (a file of NUL-separated paths
/// that need not be listed anywhere: other cases, trailing dots) the
/// lookups that found something in `OUT/lookups`, and finally `OUT/done`. NUL separates fields
/// that hold names, so any byte but NUL and '/' survives. Times are printed
/// in UTC with nanoseconds (`%x` etc. under TZ=UTC).
///
/// A file that cannot be read on one side has no hash there (sha256sum
/// goes on with the others), which the diff reports.
pub const SCRIPT: &str = r#"export TZ=UTC LC_ALL=C
cd "$1" || exit 1
find . -print0 | xargs -0 stat --printf '%n\0%F|%a|%h|%u|%g|%s|%b|%o|%x|%y|%z|%i\0' > "$2/entries"
find . -type f -print0 | xargs -0 -r sha256sum -z > "$2/hashes" 2> "$2/hash-errors"
stat -f --printf '%S|%b|%f|%a|%c|%d|%l\n' . > "$2/statfs" || exit 1
if [ -n "$3" ]; then
  xargs -0 stat --printf '%n\0%F|%a|%h|%s|%y\0' < "$3" > "$2/lookups" 2> /dev/null
fi
: > "$2/done"
"#;

/// Which lstat fields a comparison leaves out, and why (see each test).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignore {
    /// st_ino: the kernel's FAT driver numbers inodes with iunique(), in
    /// the order it meets them; fshost's guest uses disk positions.
    pub inode_numbers: bool,
    /// st_blksize, and statfs's block size and counts (compared as bytes
    /// instead): for images where fshost's block size must differ from
    /// the kernel's (see the test that sets it).
    pub block_size: bool,
}

/// One entry's lstat fields, as `stat` printed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub mode: String,
    pub nlink: String,
    pub uid: String,
    pub gid: String,
    pub size: String,
    pub blocks: String,
    pub blksize: String,
    pub atime: String,
    pub mtime: String,
    pub ctime: String,
    pub ino: String,
}

/// A parsed snapshot: entries and content hashes by path (bytes, from the
/// mount root, `.` for the root), and the statfs line.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<Vec<u8>, Entry>,
    pub hashes: BTreeMap<Vec<u8>, String>,
    pub statfs: String,
    /// Extra names looked up, and what stat showed for those found.
    pub lookups: BTreeMap<Vec<u8>, String>,
}

/// One difference between two snapshots, kernel first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    pub what: String,
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.path, self.what, self.detail)
    }
}

/// Runs [`SCRIPT`] over the tree at `root` (on this machine), writing into
/// `out`, with the lookups listed in `names`, and parses the result.
pub fn take(root: &Path, out: &Path, names: Option<&Path>) -> anyhow::Result<Snapshot> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("snapshot")
        .arg(root)
        .arg(out)
        .arg(names.map(Path::as_os_str).unwrap_or_default())
        .status()
        .context("running the snapshot script")?;
    ensure!(status.success(), "the snapshot script failed on {}: {status}", root.display());
    read(out)
}

/// Parses the files [`SCRIPT`] wrote into `out`.
pub fn read(out: &Path) -> anyhow::Result<Snapshot> {
    ensure!(out.join("done").exists(), "the snapshot in {} is incomplete (no `done`)", out.display());
    let entries = std::fs::read(out.join("entries")).context("reading entries")?;
    let hashes = std::fs::read(out.join("hashes")).context("reading hashes")?;
    let statfs = std::fs::read_to_string(out.join("statfs")).context("reading statfs")?;
    let mut snapshot = Snapshot { statfs: statfs.trim().to_string(), ..Default::default() };
    let mut fields = entries.split(|&b| b == 0);
    while let Some(name) = fields.next() {
        if name.is_empty() {
            break; // the trailing NUL
        }
        let Some(stat) = fields.next() else { bail!("entry {} without fields", name.escape_ascii()) };
        let stat = String::from_utf8(stat.to_vec()).context("stat fields are not UTF-8")?;
        let f: Vec<&str> = stat.split('|').collect();
        let [kind, mode, nlink, uid, gid, size, blocks, blksize, atime, mtime, ctime, ino] = f[..] else {
            bail!("entry {}: {} fields in {stat:?}", name.escape_ascii(), f.len());
        };
        let entry = Entry {
            kind: kind.into(),
            mode: mode.into(),
            nlink: nlink.into(),
            uid: uid.into(),
            gid: gid.into(),
            size: size.into(),
            blocks: blocks.into(),
            blksize: blksize.into(),
            atime: atime.into(),
            mtime: mtime.into(),
            ctime: ctime.into(),
            ino: ino.into(),
        };
        ensure!(snapshot.entries.insert(relative(name), entry).is_none(), "{} listed twice", name.escape_ascii());
    }
    for record in hashes.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        // "HASH  NAME" (two spaces; sha256sum -z does not escape names).
        ensure!(record.len() > 66 && &record[64..66] == b"  ", "bad sha256sum record {}", record.escape_ascii());
        let hash = String::from_utf8_lossy(&record[..64]).into_owned();
        snapshot.hashes.insert(relative(&record[66..]), hash);
    }
    if let Ok(lookups) = std::fs::read(out.join("lookups")) {
        let mut fields = lookups.split(|&b| b == 0);
        while let (Some(name), Some(stat)) = (fields.next(), fields.next()) {
            snapshot.lookups.insert(name.to_vec(), String::from_utf8_lossy(stat).into_owned());
        }
    }
    Ok(snapshot)
}

/// Writes `names` NUL-separated to `path`, for [`SCRIPT`]'s lookups.
pub fn write_names(path: &Path, names: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    for name in names {
        ensure!(!name.contains(&0), "a name with NUL");
        bytes.extend_from_slice(name);
        bytes.push(0);
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `./a/b` → `a/b`; `.` stays `.`.
fn relative(name: &[u8]) -> Vec<u8> {
    name.strip_prefix(b"./").unwrap_or(name).to_vec()
}

/// Every difference between the kernel's snapshot and fshost's.
pub fn diff(kernel: &Snapshot, fshost: &Snapshot, ignore: Ignore) -> Vec<Difference> {
    let mut diffs = Vec::new();
    let mut differ = |path: &[u8], what: &str, detail: String| {
        diffs.push(Difference { path: path.escape_ascii().to_string(), what: what.to_string(), detail });
    };
    let statfs = |s: &str| {
        if ignore.block_size { statfs_in_bytes(s) } else { s.to_string() }
    };
    if statfs(&kernel.statfs) != statfs(&fshost.statfs) {
        let what = "statfs (bsize|blocks|bfree|bavail|files|ffree|namelen)";
        differ(b"/", what, format!("{} vs {}", kernel.statfs, fshost.statfs));
    }
    for path in kernel.entries.keys().filter(|p| !fshost.entries.contains_key(*p)) {
        differ(path, "entry", "only in the kernel's view".into());
    }
    for path in fshost.entries.keys().filter(|p| !kernel.entries.contains_key(*p)) {
        differ(path, "entry", "only in fshost's view".into());
    }
    for (path, k) in &kernel.entries {
        let Some(f) = fshost.entries.get(path) else { continue };
        let fields = [
            ("type", &k.kind, &f.kind),
            ("mode", &k.mode, &f.mode),
            ("nlink", &k.nlink, &f.nlink),
            ("uid", &k.uid, &f.uid),
            ("gid", &k.gid, &f.gid),
            ("size", &k.size, &f.size),
            ("blocks", &k.blocks, &f.blocks),
            ("blksize", &k.blksize, if ignore.block_size { &k.blksize } else { &f.blksize }),
            ("atime", &k.atime, &f.atime),
            ("mtime", &k.mtime, &f.mtime),
            ("ctime", &k.ctime, &f.ctime),
        ];
        for (what, kv, fv) in fields {
            if kv != fv {
                differ(path, what, format!("{kv} vs {fv}"));
            }
        }
        if !ignore.inode_numbers && k.ino != f.ino {
            differ(path, "ino", format!("{} vs {}", k.ino, f.ino));
        }
    }
    for (path, k) in &kernel.hashes {
        match fshost.hashes.get(path) {
            Some(f) if f == k => {}
            Some(f) => differ(path, "content sha256", format!("{k} vs {f}")),
            None if fshost.entries.contains_key(path) => differ(path, "content", "unreadable in fshost's view".into()),
            None => {}
        }
    }
    for (name, k) in &kernel.lookups {
        match fshost.lookups.get(name) {
            Some(f) if f == k => {}
            Some(f) => differ(name, "lookup (type|mode|nlink|size|mtime)", format!("{k} vs {f}")),
            None => differ(name, "lookup", "found only in the kernel's view".into()),
        }
    }
    for name in fshost.lookups.keys().filter(|n| !kernel.lookups.contains_key(*n)) {
        differ(name, "lookup", "found only in fshost's view".into());
    }
    for path in fshost.hashes.keys().filter(|p| !kernel.hashes.contains_key(*p)) {
        if kernel.entries.contains_key(path) {
            differ(path, "content", "unreadable in the kernel's view".into());
        }
    }
    diffs
}

/// A statfs line with the block counts multiplied out to bytes and the
/// block size dropped: `bytes|free bytes|available bytes|files|ffree[|namelen]`.
fn statfs_in_bytes(line: &str) -> String {
    let f: Vec<&str> = line.split('|').collect();
    let [bsize, blocks, bfree, bavail, rest @ ..] = &f[..] else { return line.to_string() };
    let bytes = |n: &str| -> String {
        match (bsize.parse::<u128>(), n.parse::<u128>()) {
            (Ok(b), Ok(n)) => (b * n).to_string(),
            _ => format!("{bsize}*{n}"),
        }
    };
    let mut out = vec![bytes(blocks), bytes(bfree), bytes(bavail)];
    out.extend(rest.iter().map(|s| s.to_string()));
    out.join("|")
}

/// Inode numbers within one snapshot: every entry has its own (FAT has no
/// hard links), so a guest that hands out one number twice is caught even
/// where numbers are not compared across the two views.
pub fn duplicate_inode_numbers(snapshot: &Snapshot) -> Vec<String> {
    let mut seen: BTreeMap<&str, &[u8]> = BTreeMap::new();
    let mut dups = Vec::new();
    for (path, entry) in &snapshot.entries {
        if let Some(other) = seen.insert(&entry.ino, path) {
            dups.push(format!("inode {} for both {} and {}", entry.ino, other.escape_ascii(), path.escape_ascii()));
        }
    }
    dups
}
