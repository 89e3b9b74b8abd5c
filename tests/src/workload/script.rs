//! Seeded operation scripts: the same seed always gives the same list of
//! operations, made before anything is applied, so two filesystems can be
//! driven through identical calls and compared call by call.
//!
//! The generator keeps a rough model of the namespace (which paths exist and
//! what they are) only to aim its calls: most target something that exists,
//! some deliberately do not, and some are meant to fail (rmdir of a full
//! directory, rename of a directory into itself, a 256-byte name). The model
//! is never the oracle; whatever the filesystem answers is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What a script may contain. Operation kinds select single calls; the
/// last four select whole phases (a big directory, a big sparse file, odd
/// names, the final timestamps), each of which uses the calls it needs
/// whatever else is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Create,
    Write,
    Append,
    Truncate,
    Fallocate,
    PunchHole,
    ZeroRange,
    Mkdir,
    Rmdir,
    Unlink,
    Rename,
    RenameNoreplace,
    RenameExchange,
    Link,
    Symlink,
    Mknod,
    Chmod,
    Chown,
    Utimens,
    Xattr,
    Acl,
    Read,
    Stat,
    List,
    OpenUnlinked,
    BigDir,
    BigSparse,
    Names,
    Edges,
    Stamp,
}

impl Kind {
    pub const ALL: [Kind; 30] = [
        Kind::Create,
        Kind::Write,
        Kind::Append,
        Kind::Truncate,
        Kind::Fallocate,
        Kind::PunchHole,
        Kind::ZeroRange,
        Kind::Mkdir,
        Kind::Rmdir,
        Kind::Unlink,
        Kind::Rename,
        Kind::RenameNoreplace,
        Kind::RenameExchange,
        Kind::Link,
        Kind::Symlink,
        Kind::Mknod,
        Kind::Chmod,
        Kind::Chown,
        Kind::Utimens,
        Kind::Xattr,
        Kind::Acl,
        Kind::Read,
        Kind::Stat,
        Kind::List,
        Kind::OpenUnlinked,
        Kind::BigDir,
        Kind::BigSparse,
        Kind::Names,
        Kind::Edges,
        Kind::Stamp,
    ];

    /// The kinds whose ops `mkfs.ext4 -d` can carry into an image (used for
    /// the seeded content; see [`Config::setup_ops`]).
    pub const SETUP: [Kind; 9] = [
        Kind::Create,
        Kind::Write,
        Kind::Mkdir,
        Kind::Symlink,
        Kind::Link,
        Kind::Mknod,
        Kind::Chmod,
        Kind::Chown,
        Kind::Xattr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Write => "write",
            Kind::Append => "append",
            Kind::Truncate => "truncate",
            Kind::Fallocate => "fallocate",
            Kind::PunchHole => "punch-hole",
            Kind::ZeroRange => "zero-range",
            Kind::Mkdir => "mkdir",
            Kind::Rmdir => "rmdir",
            Kind::Unlink => "unlink",
            Kind::Rename => "rename",
            Kind::RenameNoreplace => "rename-noreplace",
            Kind::RenameExchange => "rename-exchange",
            Kind::Link => "link",
            Kind::Symlink => "symlink",
            Kind::Mknod => "mknod",
            Kind::Chmod => "chmod",
            Kind::Chown => "chown",
            Kind::Utimens => "utimens",
            Kind::Xattr => "xattr",
            Kind::Acl => "acl",
            Kind::Read => "read",
            Kind::Stat => "stat",
            Kind::List => "list",
            Kind::OpenUnlinked => "open-unlinked",
            Kind::BigDir => "big-dir",
            Kind::BigSparse => "big-sparse",
            Kind::Names => "names",
            Kind::Edges => "edges",
            Kind::Stamp => "stamp",
        }
    }

    /// Parses a comma-separated list of kind names; `all` is every kind.
    pub fn parse_list(list: &str) -> Result<BTreeSet<Kind>, String> {
        let mut kinds = BTreeSet::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                kinds.extend(Kind::ALL);
                continue;
            }
            let kind = Kind::ALL.into_iter().find(|k| k.name() == word).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown operation kind {word:?}; known: all, {}", known.join(", "))
            })?;
            kinds.insert(kind);
        }
        Ok(kinds)
    }
}

/// How fallocate is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallocMode {
    Default,
    KeepSize,
    PunchHole,
    ZeroRange,
    ZeroRangeKeepSize,
}

impl FallocMode {
    pub fn flags(self) -> libc::c_int {
        match self {
            FallocMode::Default => 0,
            FallocMode::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
            FallocMode::PunchHole => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            FallocMode::ZeroRange => libc::FALLOC_FL_ZERO_RANGE,
            FallocMode::ZeroRangeKeepSize => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        }
    }
}

/// How a write opens its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// O_WRONLY, pwrite at the offset.
    Existing,
    /// O_WRONLY|O_CREAT, pwrite at the offset.
    Create,
    /// O_WRONLY|O_TRUNC, pwrite at the offset.
    Truncate,
    /// O_WRONLY|O_APPEND, write (the offset is ignored).
    Append,
}

/// A special file to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Char { major: u32, minor: u32 },
}

/// One POSIX ACL entry (tag as in `<sys/acl.h>`: 1 user_obj, 2 user,
/// 4 group_obj, 8 group, 0x10 mask, 0x20 other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// Paths are bytes relative to the directory a script is applied beneath.
pub type Name = Vec<u8>;

/// One operation. Each is applied by [`crate::workload::apply`] with plain
/// syscalls and has one recorded result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// open(O_CREAT|O_EXCL|O_WRONLY, mode).
    Create {
        path: Name,
        mode: u32,
    },
    /// Opens as `open` says and writes `len` bytes of `tree::pattern(seed)`
    /// (the bytes that belong at `offset`).
    Write {
        path: Name,
        open: OpenMode,
        offset: u64,
        len: u64,
        seed: u64,
    },
    /// ftruncate through an O_WRONLY open (see `apply` for why not truncate).
    Truncate {
        path: Name,
        size: u64,
    },
    Fallocate {
        path: Name,
        mode: FallocMode,
        offset: u64,
        len: u64,
    },
    Mkdir {
        path: Name,
        mode: u32,
    },
    Rmdir {
        path: Name,
    },
    Unlink {
        path: Name,
    },
    /// renameat2 with 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
    Rename {
        from: Name,
        to: Name,
        flags: u32,
    },
    Link {
        from: Name,
        to: Name,
    },
    Symlink {
        target: Vec<u8>,
        path: Name,
    },
    Mknod {
        path: Name,
        special: Special,
        mode: u32,
    },
    Chmod {
        path: Name,
        mode: u32,
    },
    Chown {
        path: Name,
        uid: u32,
        gid: u32,
    },
    Utimens {
        path: Name,
        atime: (i64, u32),
        mtime: (i64, u32),
    },
    SetXattr {
        path: Name,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: i32,
    },
    RemoveXattr {
        path: Name,
        name: Vec<u8>,
    },
    /// system.posix_acl_access (or _default) set to these entries.
    SetAcl {
        path: Name,
        default: bool,
        entries: Vec<AclEntry>,
    },
    /// pread of `len` bytes at `offset`; the result holds their hash.
    Read {
        path: Name,
        offset: u64,
        len: u64,
    },
    /// lstat; the result holds type, mode, nlink, uid, gid, size, rdev.
    Stat {
        path: Name,
    },
    /// readdir; the result holds the sorted names' hash and count.
    List {
        path: Name,
    },
    /// Opens (creating) `path` read-write, unlinks it, writes and reads back
    /// through the descriptor, fstats, closes.
    OpenUnlinked {
        path: Name,
        seed: u64,
    },
}

impl Op {
    /// The kind this op counts as for selection.
    pub fn kind(&self) -> Kind {
        match self {
            Op::Create { .. } => Kind::Create,
            Op::Write { open: OpenMode::Append, .. } => Kind::Append,
            Op::Write { .. } => Kind::Write,
            Op::Truncate { .. } => Kind::Truncate,
            Op::Fallocate { mode: FallocMode::PunchHole, .. } => Kind::PunchHole,
            Op::Fallocate { mode: FallocMode::ZeroRange | FallocMode::ZeroRangeKeepSize, .. } => Kind::ZeroRange,
            Op::Fallocate { .. } => Kind::Fallocate,
            Op::Mkdir { .. } => Kind::Mkdir,
            Op::Rmdir { .. } => Kind::Rmdir,
            Op::Unlink { .. } => Kind::Unlink,
            Op::Rename { flags, .. } if *flags == libc::RENAME_NOREPLACE => Kind::RenameNoreplace,
            Op::Rename { flags, .. } if *flags == libc::RENAME_EXCHANGE => Kind::RenameExchange,
            Op::Rename { .. } => Kind::Rename,
            Op::Link { .. } => Kind::Link,
            Op::Symlink { .. } => Kind::Symlink,
            Op::Mknod { .. } => Kind::Mknod,
            Op::Chmod { .. } => Kind::Chmod,
            Op::Chown { .. } => Kind::Chown,
            Op::Utimens { .. } => Kind::Utimens,
            Op::SetXattr { .. } | Op::RemoveXattr { .. } => Kind::Xattr,
            Op::SetAcl { .. } => Kind::Acl,
            Op::Read { .. } => Kind::Read,
            Op::Stat { .. } => Kind::Stat,
            Op::List { .. } => Kind::List,
            Op::OpenUnlinked { .. } => Kind::OpenUnlinked,
        }
    }
}

fn esc(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    if bytes.len() > MAX {
        format!("{}...({} bytes)", bytes[..MAX].escape_ascii(), bytes.len())
    } else {
        bytes.escape_ascii().to_string()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { path, mode } => write!(f, "create {} {mode:o}", esc(path)),
            Op::Write { path, open, offset, len, .. } => write!(f, "write {} {open:?} {len}@{offset}", esc(path)),
            Op::Truncate { path, size } => write!(f, "truncate {} {size}", esc(path)),
            Op::Fallocate { path, mode, offset, len } => write!(f, "fallocate {} {mode:?} {len}@{offset}", esc(path)),
            Op::Mkdir { path, mode } => write!(f, "mkdir {} {mode:o}", esc(path)),
            Op::Rmdir { path } => write!(f, "rmdir {}", esc(path)),
            Op::Unlink { path } => write!(f, "unlink {}", esc(path)),
            Op::Rename { from, to, flags } => write!(f, "rename {} {} flags {flags}", esc(from), esc(to)),
            Op::Link { from, to } => write!(f, "link {} {}", esc(from), esc(to)),
            Op::Symlink { target, path } => write!(f, "symlink {} -> {}", esc(path), esc(target)),
            Op::Mknod { path, special, mode } => write!(f, "mknod {} {special:?} {mode:o}", esc(path)),
            Op::Chmod { path, mode } => write!(f, "chmod {} {mode:o}", esc(path)),
            Op::Chown { path, uid, gid } => write!(f, "lchown {} {uid}:{gid}", esc(path)),
            Op::Utimens { path, atime, mtime } => {
                write!(f, "utimensat {} a={}.{:09} m={}.{:09}", esc(path), atime.0, atime.1, mtime.0, mtime.1)
            }
            Op::SetXattr { path, name, value, flags } => {
                write!(f, "setxattr {} {} ({} bytes) flags {flags}", esc(path), esc(name), value.len())
            }
            Op::RemoveXattr { path, name } => write!(f, "removexattr {} {}", esc(path), esc(name)),
            Op::SetAcl { path, default, entries } => {
                let which = if *default { "default" } else { "access" };
                write!(f, "setacl {} {which} {entries:?}", esc(path))
            }
            Op::Read { path, offset, len } => write!(f, "read {} {len}@{offset}", esc(path)),
            Op::Stat { path } => write!(f, "lstat {}", esc(path)),
            Op::List { path } => write!(f, "readdir {}", esc(path)),
            Op::OpenUnlinked { path, .. } => write!(f, "open-unlink-write-read {}", esc(path)),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Ops applied to the seeded content's source directory before
    /// `mkfs.ext4 -d` (only [`Kind::SETUP`] kinds, small values).
    pub setup_ops: usize,
    /// Random single ops after the setup.
    pub ops: usize,
    /// Which kinds the random ops and phases may use.
    pub kinds: BTreeSet<Kind>,
    /// Entries in the big directory ([`Kind::BigDir`]).
    pub big_dir_entries: usize,
}

impl Config {
    /// Every kind, with sizes from the environment: FSHOST_WRITE_OPS
    /// (default 400), FSHOST_WRITE_DIR_ENTRIES (default 1000; 20000 for
    /// the full run), FSHOST_WRITE_KINDS (comma list, default all),
    /// FSHOST_WRITE_SEED (default `seed`).
    pub fn from_env(seed: u64) -> Result<Config, String> {
        let number = |var: &str, default: u64| -> Result<u64, String> {
            match std::env::var(var) {
                Ok(v) => v.trim().parse().map_err(|_| format!("{var}={v:?} is not a number")),
                Err(_) => Ok(default),
            }
        };
        let kinds = match std::env::var("FSHOST_WRITE_KINDS") {
            Ok(list) => Kind::parse_list(&list)?,
            Err(_) => Kind::ALL.into_iter().collect(),
        };
        Ok(Config {
            seed: number("FSHOST_WRITE_SEED", seed)?,
            setup_ops: 150,
            ops: number("FSHOST_WRITE_OPS", 400)? as usize,
            kinds,
            big_dir_entries: number("FSHOST_WRITE_DIR_ENTRIES", 1000)? as usize,
        })
    }

    /// The same, with the kinds limited to `kinds` (intersected with any
    /// FSHOST_WRITE_KINDS).
    pub fn only(mut self, kinds: &[Kind]) -> Config {
        self.kinds.retain(|k| kinds.contains(k));
        self
    }
}

/// A generated script: `setup` builds the seeded content in a plain
/// directory (for `mkfs.ext4 -d`), `ops` is what is applied and compared.
#[derive(Debug, Clone)]
pub struct Script {
    pub setup: Vec<Op>,
    pub ops: Vec<Op>,
    /// The paths whose atime and mtime the last phase set explicitly, and
    /// that nothing changed afterwards: the only times worth comparing.
    pub stamped: BTreeSet<Name>,
}

/// splitmix64: small, seedable, the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ent {
    Dir,
    File { size: u64 },
    Symlink,
    Special,
}

/// The generator's idea of the namespace: path → what it is. The root is
/// the empty path and always a directory.
#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<Name, Ent>,
    /// Xattr names set per path, to aim removes and replaces.
    xattrs: BTreeMap<Name, BTreeSet<Vec<u8>>>,
}

fn join(dir: &[u8], name: &[u8]) -> Name {
    if dir.is_empty() {
        name.to_vec()
    } else {
        let mut path = dir.to_vec();
        path.push(b'/');
        path.extend_from_slice(name);
        path
    }
}

fn parent(path: &[u8]) -> &[u8] {
    path.iter().rposition(|&b| b == b'/').map_or(&[][..], |i| &path[..i])
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

impl Model {
    fn get(&self, path: &[u8]) -> Option<Ent> {
        if path.is_empty() { Some(Ent::Dir) } else { self.entries.get(path).copied() }
    }

    fn dirs(&self) -> Vec<Name> {
        let mut dirs = vec![Vec::new()];
        dirs.extend(self.entries.iter().filter(|(_, e)| **e == Ent::Dir).map(|(p, _)| p.clone()));
        dirs
    }

    fn matching(&self, want: impl Fn(Ent) -> bool) -> Vec<Name> {
        self.entries.iter().filter(|(_, e)| want(**e)).map(|(p, _)| p.clone()).collect()
    }

    fn is_empty_dir(&self, path: &[u8]) -> bool {
        !self.entries.keys().any(|p| is_under(p, path))
    }

    fn remove_tree(&mut self, path: &[u8]) {
        self.entries.retain(|p, _| p != path && !is_under(p, path));
        self.xattrs.retain(|p, _| p != path && !is_under(p, path));
    }

    /// Moves `from` (and what is beneath it) to `to`.
    fn move_tree(&mut self, from: &[u8], to: &[u8]) {
        let moved: Vec<(Name, Ent)> = self
            .entries
            .iter()
            .filter(|(p, _)| *p == from || is_under(p, from))
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        let xattrs: Vec<(Name, BTreeSet<Vec<u8>>)> = self
            .xattrs
            .iter()
            .filter(|(p, _)| *p == from || is_under(p, from))
            .map(|(p, x)| (p.clone(), x.clone()))
            .collect();
        self.remove_tree(from);
        let rebase = |p: &[u8]| {
            let mut n = to.to_vec();
            n.extend_from_slice(&p[from.len()..]);
            n
        };
        for (p, e) in moved {
            self.entries.insert(rebase(&p), e);
        }
        for (p, x) in xattrs {
            self.xattrs.insert(rebase(&p), x);
        }
    }
}

/// The generator's state.
struct Gen {
    rng: Rng,
    model: Model,
    counter: u64,
}

/// Weights of the random single ops.
const WEIGHTS: [(Kind, u64); 25] = [
    (Kind::Create, 8),
    (Kind::Write, 14),
    (Kind::Append, 4),
    (Kind::Truncate, 5),
    (Kind::Fallocate, 3),
    (Kind::PunchHole, 3),
    (Kind::ZeroRange, 3),
    (Kind::Mkdir, 6),
    (Kind::Rmdir, 3),
    (Kind::Unlink, 4),
    (Kind::Rename, 6),
    (Kind::RenameNoreplace, 2),
    (Kind::RenameExchange, 2),
    (Kind::Link, 4),
    (Kind::Symlink, 4),
    (Kind::Mknod, 2),
    (Kind::Chmod, 3),
    (Kind::Chown, 3),
    (Kind::Utimens, 2),
    (Kind::Xattr, 6),
    (Kind::Acl, 2),
    (Kind::Read, 5),
    (Kind::Stat, 3),
    (Kind::List, 2),
    (Kind::OpenUnlinked, 1),
];

/// Makes the script for `config`.
pub fn generate(config: &Config) -> Script {
    let mut g = Gen { rng: Rng::new(config.seed), model: Model::default(), counter: 0 };
    let setup_kinds: BTreeSet<Kind> = Kind::SETUP.into_iter().collect();
    let mut setup = Vec::new();
    // A few directories first, so the setup has somewhere to put things.
    for _ in 0..4.min(config.setup_ops) {
        setup.push(g.mkdir());
    }
    while setup.len() < config.setup_ops {
        if let Some(op) = g.random_op(&setup_kinds, true) {
            setup.push(op);
        }
    }

    let mut ops = Vec::new();
    let phases: Vec<Kind> = [Kind::BigDir, Kind::BigSparse, Kind::Names, Kind::Edges]
        .into_iter()
        .filter(|k| config.kinds.contains(k))
        .collect();
    // Each phase starts at a seeded point among the random ops.
    let mut starts: Vec<(usize, Kind)> =
        phases.iter().map(|&k| (g.rng.below(config.ops as u64 + 1) as usize, k)).collect();
    starts.sort();
    let mut starts = starts.into_iter().peekable();
    let mut made = 0;
    while made < config.ops || starts.peek().is_some() {
        while let Some(&(at, phase)) = starts.peek() {
            if at > made {
                break;
            }
            starts.next();
            match phase {
                Kind::BigDir => g.big_dir(config.big_dir_entries, &mut ops),
                Kind::BigSparse => g.big_sparse(&mut ops),
                Kind::Names => g.names(&config.kinds, &mut ops),
                Kind::Edges => g.edges(&mut ops),
                _ => {}
            }
        }
        if made >= config.ops {
            continue;
        }
        if let Some(op) = g.random_op(&config.kinds, false) {
            ops.push(op);
            made += 1;
        } else if !config.kinds.iter().any(|k| WEIGHTS.iter().any(|(w, _)| w == k)) {
            made = config.ops; // no single-op kind selected
        }
    }
    let mut stamped = BTreeSet::new();
    if config.kinds.contains(&Kind::Stamp) {
        g.stamp(&mut ops, &mut stamped);
    }
    Script { setup, ops, stamped }
}

impl Gen {
    /// A fresh name: mostly short ASCII, sometimes non-UTF-8 or long.
    fn fresh_name(&mut self) -> Name {
        self.counter += 1;
        let n = self.counter;
        match self.rng.below(20) {
            0 => format!("caf\u{e9}-{n}").into_bytes(),
            1 => {
                let mut name = b"\xff\xfe-".to_vec();
                name.extend_from_slice(n.to_string().as_bytes());
                name
            }
            2 => {
                let mut name = format!("long-{n}-").into_bytes();
                name.resize(100 + self.rng.below(100) as usize, b'L');
                name
            }
            _ => format!("n{n}").into_bytes(),
        }
    }

    /// A path that does not exist yet, in an existing directory.
    fn fresh_path(&mut self) -> Name {
        let dirs = self.model.dirs();
        let dir = self.rng.pick(&dirs).clone();
        let name = self.fresh_name();
        join(&dir, &name)
    }

    /// An existing path matching `want`, or (sometimes, or when none
    /// exists) a path that does not exist.
    fn existing(&mut self, want: impl Fn(Ent) -> bool) -> Name {
        let candidates = self.model.matching(want);
        if candidates.is_empty() || self.rng.chance(4) {
            return self.fresh_path();
        }
        self.rng.pick(&candidates).clone()
    }

    fn any_existing(&mut self) -> Name {
        self.existing(|_| true)
    }

    fn file(&mut self) -> Name {
        self.existing(|e| matches!(e, Ent::File { .. }))
    }

    fn size_of(&self, path: &[u8]) -> u64 {
        match self.model.get(path) {
            Some(Ent::File { size }) => size,
            _ => 0,
        }
    }

    fn set_size(&mut self, path: &[u8], size: u64) {
        if let Some(Ent::File { size: s }) = self.model.entries.get_mut(path) {
            *s = size;
        }
    }

    /// An offset near what matters: block edges, the current size, small
    /// and far-away places.
    fn offset(&mut self, size: u64) -> u64 {
        match self.rng.below(8) {
            0 => 0,
            1 => size,
            2 => size.saturating_sub(self.rng.below(5000)),
            3 => self.rng.below(16) * 1024 + self.rng.below(3).wrapping_sub(1).min(2),
            4 => self.rng.below(4 << 20),
            5 => (self.rng.below(64) << 16) + self.rng.below(4096),
            6 => size + self.rng.below(1 << 20),
            _ => self.rng.below(size.max(1) + 8192),
        }
    }

    fn length(&mut self) -> u64 {
        match self.rng.below(10) {
            0 => 1,
            1 => 4096,
            2 => self.rng.below(300_000) + 1,
            3 => 1024 * (self.rng.below(8) + 1),
            _ => self.rng.below(20_000) + 1,
        }
    }

    fn mode(&mut self, dir: bool) -> u32 {
        let modes: &[u32] = if dir {
            &[0o755, 0o700, 0o1777, 0o2775, 0o777, 0o555]
        } else {
            &[0o644, 0o600, 0o4755, 0o2755, 0o666, 0o000, 0o7777, 0o444]
        };
        *self.rng.pick(modes)
    }

    fn mkdir(&mut self) -> Op {
        let path = self.fresh_path();
        if self.model.get(parent(&path)) == Some(Ent::Dir) {
            self.model.entries.insert(path.clone(), Ent::Dir);
        }
        let mode = self.mode(true);
        Op::Mkdir { path, mode }
    }

    fn xattr_value(&mut self, small: bool) -> Vec<u8> {
        let len = if small {
            self.rng.below(200) as usize
        } else {
            match self.rng.below(6) {
                0 => 0,
                1 => 1500 + self.rng.below(1500) as usize,
                2 => 3000 + self.rng.below(1200) as usize,
                _ => self.rng.below(400) as usize,
            }
        };
        crate::tree::pattern(self.rng.next_u64(), 0, len)
    }

    fn xattr_name(&mut self, path: &[u8], small: bool) -> Vec<u8> {
        let existing: Vec<Vec<u8>> =
            self.model.xattrs.get(path).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        if !existing.is_empty() && self.rng.chance(40) {
            return self.rng.pick(&existing).clone();
        }
        let n = self.rng.below(12);
        // user.* is refused on symlinks and special files (EPERM): mostly
        // trusted.* there, mostly user.* on files and directories.
        let plain = matches!(self.model.get(path), Some(Ent::Dir | Ent::File { .. }));
        let user = small || if plain { self.rng.chance(70) } else { self.rng.chance(10) };
        let space = if user { "user" } else { "trusted" };
        let mut name = format!("{space}.x{n}").into_bytes();
        if self.rng.chance(5) {
            name.resize(name.len() + 200, b'k'); // long names (255 at most)
        }
        name
    }

    fn acl(&mut self, dir: bool) -> (bool, Vec<AclEntry>) {
        let default = dir && self.rng.chance(50);
        let perm = |rng: &mut Rng| rng.below(8) as u16;
        let mut entries = vec![AclEntry { tag: 1, perm: perm(&mut self.rng), id: u32::MAX }];
        let users = self.rng.below(3);
        for i in 0..users {
            entries.push(AclEntry { tag: 2, perm: perm(&mut self.rng), id: 1000 + i as u32 * 7 });
        }
        entries.push(AclEntry { tag: 4, perm: perm(&mut self.rng), id: u32::MAX });
        let groups = self.rng.below(2);
        for i in 0..groups {
            entries.push(AclEntry { tag: 8, perm: perm(&mut self.rng), id: 2000 + i as u32 });
        }
        // A mask is required with named entries; leave it out now and then
        // so the filesystem must refuse the ACL (EINVAL).
        if (users + groups > 0 && !self.rng.chance(10)) || self.rng.chance(10) {
            entries.push(AclEntry { tag: 0x10, perm: perm(&mut self.rng), id: u32::MAX });
        }
        entries.push(AclEntry { tag: 0x20, perm: perm(&mut self.rng), id: u32::MAX });
        (default, entries)
    }

    /// One random op of the selected kinds, or None when the draw fell on
    /// an unselected kind. `setup` keeps values small (mkfs -d limits).
    fn random_op(&mut self, kinds: &BTreeSet<Kind>, setup: bool) -> Option<Op> {
        let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut draw = self.rng.below(total);
        let kind = WEIGHTS.iter().find(|(_, w)| {
            if draw < *w {
                true
            } else {
                draw -= w;
                false
            }
        })?;
        if !kinds.contains(&kind.0) {
            return None;
        }
        Some(self.op_of(kind.0, setup))
    }

    fn op_of(&mut self, kind: Kind, setup: bool) -> Op {
        match kind {
            Kind::Create => {
                let path = if self.rng.chance(10) { self.any_existing() } else { self.fresh_path() };
                if self.model.get(&path).is_none() && self.model.get(parent(&path)) == Some(Ent::Dir) {
                    self.model.entries.insert(path.clone(), Ent::File { size: 0 });
                }
                let mode = self.mode(false);
                Op::Create { path, mode }
            }
            Kind::Write | Kind::Append => {
                let path = if self.rng.chance(15) { self.fresh_path() } else { self.file() };
                let size = self.size_of(&path);
                let open = if kind == Kind::Append {
                    OpenMode::Append
                } else {
                    *self.rng.pick(&[OpenMode::Existing, OpenMode::Existing, OpenMode::Create, OpenMode::Truncate])
                };
                let (mut offset, mut len) = (self.offset(size), self.length());
                if setup {
                    offset %= 1 << 20;
                    len %= 64 << 10;
                }
                let base = if open == OpenMode::Truncate { 0 } else { size };
                let end = if open == OpenMode::Append { base + len } else { base.max(offset + len) };
                let exists = matches!(self.model.get(&path), Some(Ent::File { .. }));
                if !exists && open == OpenMode::Create && self.model.get(parent(&path)) == Some(Ent::Dir) {
                    self.model.entries.insert(path.clone(), Ent::File { size: 0 });
                }
                self.set_size(&path, end);
                let seed = self.rng.next_u64();
                Op::Write { path, open, offset, len, seed }
            }
            Kind::Truncate => {
                let path = self.file();
                let old = self.size_of(&path);
                let size = match self.rng.below(5) {
                    0 => 0,
                    1 => old / 2,
                    2 => old + self.rng.below(1 << 20),
                    3 => self.rng.below(8) * 4096,
                    _ => self.rng.below(old.max(1) * 2 + 1),
                };
                self.set_size(&path, size);
                Op::Truncate { path, size }
            }
            Kind::Fallocate | Kind::PunchHole | Kind::ZeroRange => {
                let path = self.file();
                let size = self.size_of(&path);
                let mode = match kind {
                    Kind::PunchHole => FallocMode::PunchHole,
                    Kind::ZeroRange => *self.rng.pick(&[FallocMode::ZeroRange, FallocMode::ZeroRangeKeepSize]),
                    _ => *self.rng.pick(&[FallocMode::Default, FallocMode::KeepSize]),
                };
                let offset = self.offset(size);
                let len = self.length();
                if matches!(mode, FallocMode::Default | FallocMode::ZeroRange) {
                    self.set_size(&path, size.max(offset + len));
                }
                Op::Fallocate { path, mode, offset, len }
            }
            Kind::Mkdir => self.mkdir(),
            Kind::Rmdir => {
                let path = self.existing(|e| e == Ent::Dir);
                if self.model.get(&path) == Some(Ent::Dir) && self.model.is_empty_dir(&path) {
                    self.model.remove_tree(&path);
                }
                Op::Rmdir { path }
            }
            Kind::Unlink => {
                let path = self.existing(|e| e != Ent::Dir);
                if matches!(self.model.get(&path), Some(e) if e != Ent::Dir) {
                    self.model.remove_tree(&path);
                }
                Op::Unlink { path }
            }
            Kind::Rename | Kind::RenameNoreplace | Kind::RenameExchange => self.rename(kind),
            Kind::Link => {
                let from = self.existing(|e| e != Ent::Dir);
                let to = if self.rng.chance(10) { self.any_existing() } else { self.fresh_path() };
                if let Some(e) = self.model.get(&from)
                    && self.model.get(&to).is_none()
                    && self.model.get(parent(&to)) == Some(Ent::Dir)
                {
                    self.model.entries.insert(to.clone(), e);
                }
                Op::Link { from, to }
            }
            Kind::Symlink => {
                let path = self.fresh_path();
                let len = match self.rng.below(6) {
                    0 => 60,
                    1 => 61 + self.rng.below(200),
                    2 if !setup => *self.rng.pick(&[1000, 1023, 1024, 2000, 4095]),
                    _ => 1 + self.rng.below(59),
                };
                // Relative to the symlink's own directory most are dangling;
                // a few name something (what matters is the bytes stored).
                let mut target = if self.rng.chance(50) { self.any_existing() } else { b"t".to_vec() };
                target.resize(len as usize, b'/');
                if target.iter().all(|&b| b == b'/') {
                    target[0] = b'x';
                }
                if self.model.get(parent(&path)) == Some(Ent::Dir) {
                    self.model.entries.insert(path.clone(), Ent::Symlink);
                }
                Op::Symlink { target, path }
            }
            Kind::Mknod => {
                let path = self.fresh_path();
                let special = if self.rng.chance(50) {
                    Special::Fifo
                } else {
                    Special::Char { major: self.rng.below(300) as u32, minor: self.rng.below(1 << 20) as u32 }
                };
                if self.model.get(parent(&path)) == Some(Ent::Dir) {
                    self.model.entries.insert(path.clone(), Ent::Special);
                }
                let mode = *self.rng.pick(&[0o644, 0o600, 0o666, 0o000]);
                Op::Mknod { path, special, mode }
            }
            Kind::Chmod => {
                // chmod follows symlinks: aim at files and directories.
                let path = self.existing(|e| matches!(e, Ent::Dir | Ent::File { .. }));
                let dir = self.model.get(&path) == Some(Ent::Dir);
                let mode = self.mode(dir);
                Op::Chmod { path, mode }
            }
            Kind::Chown => {
                let path = self.any_existing();
                let ids = [0, 1000, 65534, 65535, 70000, 3_000_000_000, 4_294_967_294];
                let (uid, gid) = (*self.rng.pick(&ids), *self.rng.pick(&ids));
                Op::Chown { path, uid, gid }
            }
            Kind::Utimens => {
                let path = self.any_existing();
                let (atime, mtime) = self.times();
                Op::Utimens { path, atime, mtime }
            }
            Kind::Xattr => {
                // user.* only on files and directories; trusted.* anywhere.
                let path = if setup {
                    self.existing(|e| matches!(e, Ent::Dir | Ent::File { .. }))
                } else {
                    self.any_existing()
                };
                let name = self.xattr_name(&path, setup);
                if !setup && self.rng.chance(25) {
                    if let Some(set) = self.model.xattrs.get_mut(&path) {
                        set.remove(&name);
                    }
                    return Op::RemoveXattr { path, name };
                }
                let flags = if setup { 0 } else { *self.rng.pick(&[0, 0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]) };
                let value = self.xattr_value(setup);
                if self.model.get(&path).is_some() {
                    self.model.xattrs.entry(path.clone()).or_default().insert(name.clone());
                }
                Op::SetXattr { path, name, value, flags }
            }
            Kind::Acl => {
                let path = self.existing(|e| matches!(e, Ent::Dir | Ent::File { .. }));
                let dir = self.model.get(&path) == Some(Ent::Dir);
                let (default, entries) = self.acl(dir);
                Op::SetAcl { path, default, entries }
            }
            Kind::Read => {
                let path = self.file();
                let size = self.size_of(&path);
                let offset = self.offset(size);
                let len = self.length();
                Op::Read { path, offset, len }
            }
            Kind::Stat => Op::Stat { path: self.any_existing() },
            Kind::List => Op::List { path: self.existing(|e| e == Ent::Dir) },
            Kind::OpenUnlinked => Op::OpenUnlinked { path: self.fresh_path(), seed: self.rng.next_u64() },
            Kind::BigDir | Kind::BigSparse | Kind::Names | Kind::Edges | Kind::Stamp => {
                unreachable!("phases are not drawn")
            }
        }
    }

    /// Times worth storing: nanoseconds, before 1970, after 2038; the atime
    /// always in the future, so relatime never moves it when a reader looks.
    fn times(&mut self) -> ((i64, u32), (i64, u32)) {
        let nsec = |rng: &mut Rng| rng.below(1_000_000_000) as u32;
        let atime = (4_102_444_800 + self.rng.below(1 << 30) as i64, nsec(&mut self.rng)); // 2100 on
        let mtime = match self.rng.below(4) {
            0 => (-(self.rng.below(1 << 31) as i64), nsec(&mut self.rng)),
            1 => (2_200_000_000 + self.rng.below(1 << 32) as i64, nsec(&mut self.rng)),
            2 => (0, 0),
            _ => (1_700_000_000 + self.rng.below(1 << 24) as i64, nsec(&mut self.rng)),
        };
        (atime, mtime)
    }

    fn rename(&mut self, kind: Kind) -> Op {
        let flags = match kind {
            Kind::RenameNoreplace => libc::RENAME_NOREPLACE,
            Kind::RenameExchange => libc::RENAME_EXCHANGE,
            _ => 0,
        };
        let from = self.any_existing();
        let dirs = self.model.dirs();
        let to = match self.rng.below(6) {
            // Over an existing entry of any kind (files over files, dirs
            // over empty and non-empty dirs, mismatches that must fail).
            0 | 1 => self.any_existing(),
            // Into its own subtree (EINVAL for a directory).
            2 if self.model.get(&from) == Some(Ent::Dir) => {
                let name = self.fresh_name();
                join(&from, &name)
            }
            // Over an empty directory.
            3 => {
                let empty: Vec<Name> =
                    dirs.iter().filter(|d| !d.is_empty() && self.model.is_empty_dir(d)).cloned().collect();
                if empty.is_empty() { self.fresh_path() } else { self.rng.pick(&empty).clone() }
            }
            _ => self.fresh_path(),
        };
        self.predict_rename(&from, &to, flags);
        Op::Rename { from, to, flags }
    }

    fn predict_rename(&mut self, from: &[u8], to: &[u8], flags: u32) {
        let (Some(f), t) = (self.model.get(from), self.model.get(to)) else { return };
        if from.is_empty() || to.is_empty() || from == to || is_under(to, from) {
            return;
        }
        if self.model.get(parent(to)) != Some(Ent::Dir) {
            return;
        }
        if flags == libc::RENAME_EXCHANGE {
            let Some(_) = t else { return };
            if is_under(from, to) {
                return;
            }
            let tmp = b"\0swap".to_vec();
            self.model.move_tree(from, &tmp);
            self.model.move_tree(to, from);
            self.model.move_tree(&tmp, to);
            return;
        }
        match t {
            None => {}
            Some(_) if flags == libc::RENAME_NOREPLACE => return,
            Some(Ent::Dir) if f == Ent::Dir && self.model.is_empty_dir(to) => self.model.remove_tree(to),
            Some(Ent::Dir) => return,
            Some(_) if f == Ent::Dir => return,
            Some(_) => self.model.remove_tree(to),
        }
        self.model.move_tree(from, to);
    }

    /// A directory grown to `entries` names (long enough that it needs an
    /// htree with two levels at 20,000), every tenth a subdirectory, then
    /// about a third removed and a few names added back.
    fn big_dir(&mut self, entries: usize, ops: &mut Vec<Op>) {
        self.counter += 1;
        let dir = format!("big-{}", self.counter).into_bytes();
        ops.push(Op::Mkdir { path: dir.clone(), mode: 0o755 });
        let name = |i: usize| join(&dir, format!("{i:06}-{}", "h".repeat(100 + i % 120)).as_bytes());
        for i in 0..entries {
            if i % 10 == 0 {
                ops.push(Op::Mkdir { path: name(i), mode: 0o755 });
            } else {
                ops.push(Op::Create { path: name(i), mode: 0o644 });
            }
        }
        ops.push(Op::List { path: dir.clone() });
        let mut removed = BTreeSet::new();
        for _ in 0..entries / 3 {
            let i = self.rng.below(entries as u64) as usize;
            removed.insert(i);
            ops.push(if i.is_multiple_of(10) { Op::Rmdir { path: name(i) } } else { Op::Unlink { path: name(i) } });
        }
        for &i in removed.iter().take(20) {
            ops.push(Op::Create { path: name(i), mode: 0o600 });
        }
        ops.push(Op::List { path: dir.clone() });
        ops.push(Op::Rmdir { path: dir.clone() }); // ENOTEMPTY
        // Into the model: the directory and a few of its entries, so later
        // ops touch it without every pick scanning 20,000 names.
        self.model.entries.insert(dir.clone(), Ent::Dir);
        for i in (1..entries).step_by(997).filter(|i| i % 10 != 0 && !removed.contains(i)) {
            self.model.entries.insert(name(i), Ent::File { size: 0 });
        }
    }

    /// A sparse file of several GiB with islands of data past 4 GiB, a hole
    /// punched between them, and a truncate down into the middle.
    fn big_sparse(&mut self, ops: &mut Vec<Op>) {
        self.counter += 1;
        let path = format!("sparse-{}", self.counter).into_bytes();
        let seed = self.rng.next_u64();
        ops.push(Op::Create { path: path.clone(), mode: 0o644 });
        for offset in [0, 1 << 20, (1 << 30) + 123, (4 << 30) - 2, (5 << 30) + 4096, (6 << 30) + 1] {
            ops.push(Op::Write { path: path.clone(), open: OpenMode::Existing, offset, len: 70_000, seed });
        }
        ops.push(Op::Truncate { path: path.clone(), size: 8 << 30 });
        ops.push(Op::Fallocate { path: path.clone(), mode: FallocMode::PunchHole, offset: 1 << 20, len: 40_000 });
        ops.push(Op::Read { path: path.clone(), offset: (4 << 30) - 10, len: 100 });
        ops.push(Op::Truncate { path: path.clone(), size: (5 << 30) + 10_000 });
        ops.push(Op::Stat { path: path.clone() });
        self.model.entries.insert(path, Ent::File { size: (5 << 30) + 10_000 });
    }

    /// Names at the edges: non-UTF-8 bytes, 255 bytes (the longest), 256
    /// bytes (ENAMETOOLONG) for every call that takes a new name.
    fn names(&mut self, kinds: &BTreeSet<Kind>, ops: &mut Vec<Op>) {
        self.counter += 1;
        let dir = format!("names-{}", self.counter).into_bytes();
        ops.push(Op::Mkdir { path: dir.clone(), mode: 0o755 });
        let at = |name: &[u8]| join(&dir, name);
        let long = |c: u8, len: usize| vec![c; len];
        let odd: [&[u8]; 4] = [b"\xff", b"caf\xe9", b"\xc3\x28-bad", b"a\x01b\x7fc\xfe"];
        for (i, name) in odd.iter().enumerate() {
            ops.push(Op::Write { path: at(name), open: OpenMode::Create, offset: 0, len: 10 + i as u64, seed: 7 });
        }
        ops.push(Op::Create { path: at(&long(b'a', 255)), mode: 0o644 });
        ops.push(Op::Create { path: at(&long(b'b', 256)), mode: 0o644 });
        ops.push(Op::Mkdir { path: at(&long(0xe9, 255)), mode: 0o755 });
        ops.push(Op::Mkdir { path: at(&long(0xe9, 256)), mode: 0o755 });
        ops.push(Op::Symlink { target: long(b't', 300), path: at(&long(b's', 255)) });
        ops.push(Op::Symlink { target: b"t".to_vec(), path: at(&long(b's', 256)) });
        ops.push(Op::Mknod { path: at(&long(b'f', 256)), special: Special::Fifo, mode: 0o644 });
        ops.push(Op::Link { from: at(&long(b'a', 255)), to: at(&long(b'c', 255)) });
        ops.push(Op::Link { from: at(&long(b'a', 255)), to: at(&long(b'c', 256)) });
        ops.push(Op::Rename { from: at(b"\xff"), to: at(&long(0xfe, 255)), flags: 0 });
        ops.push(Op::Rename { from: at(b"caf\xe9"), to: at(&long(0xfe, 256)), flags: 0 });
        ops.push(Op::Stat { path: at(&long(b'z', 256)) });
        ops.push(Op::Unlink { path: at(&long(b'z', 256)) });
        ops.push(Op::List { path: dir.clone() });
        if kinds.contains(&Kind::Xattr) {
            let mut name = b"user.".to_vec();
            name.resize(255, b'x');
            ops.push(Op::SetXattr { path: at(&long(b'a', 255)), name: name.clone(), value: b"v".to_vec(), flags: 0 });
            name.push(b'x');
            ops.push(Op::SetXattr { path: at(&long(b'a', 255)), name, value: b"v".to_vec(), flags: 0 });
        }
        self.model.entries.insert(dir.clone(), Ent::Dir);
        for name in [&long(b'a', 255)[..], &long(b'c', 255), &long(0xfe, 255), b"caf\xe9"] {
            self.model.entries.insert(at(name), Ent::File { size: 0 });
        }
    }

    /// Calls that must fail, each with its errno: taken names, the wrong
    /// kind of thing, a directory into itself, a non-empty target, a loop,
    /// a path through a file, sizes past the limits, a bad ACL, bad xattr
    /// names and values; and a file and a directory exchanged.
    fn edges(&mut self, ops: &mut Vec<Op>) {
        self.counter += 1;
        let d = format!("edges-{}", self.counter).into_bytes();
        let at = |name: &str| join(&d, name.as_bytes());
        ops.push(Op::Mkdir { path: d.clone(), mode: 0o755 });
        ops.push(Op::Mkdir { path: at("s"), mode: 0o755 });
        ops.push(Op::Create { path: at("f"), mode: 0o644 });
        ops.push(Op::Mkdir { path: at("full"), mode: 0o755 });
        ops.push(Op::Create { path: at("full/x"), mode: 0o644 });
        ops.push(Op::Mkdir { path: at("e"), mode: 0o755 });
        ops.push(Op::Mkdir { path: at("e2"), mode: 0o755 });
        ops.push(Op::Symlink { target: b"loop".to_vec(), path: at("loop") });
        // EEXIST, EISDIR, ENOTDIR.
        ops.push(Op::Create { path: at("f"), mode: 0o644 });
        ops.push(Op::Mkdir { path: at("f"), mode: 0o755 });
        ops.push(Op::Symlink { target: b"x".to_vec(), path: at("s") });
        ops.push(Op::Link { from: at("f"), to: at("s") });
        ops.push(Op::Unlink { path: at("s") });
        ops.push(Op::Rmdir { path: at("f") });
        ops.push(Op::Truncate { path: at("s"), size: 0 });
        ops.push(Op::Write { path: at("s"), open: OpenMode::Existing, offset: 0, len: 1, seed: 1 });
        ops.push(Op::Create { path: at("f/x"), mode: 0o644 });
        ops.push(Op::Stat { path: at("f/x") });
        // EINVAL (rmdir of "." and a directory into itself), ENOTEMPTY.
        ops.push(Op::Rmdir { path: at("s/.") });
        ops.push(Op::Rmdir { path: at("full/..") });
        ops.push(Op::Rename { from: d.clone(), to: at("s/inner"), flags: 0 });
        ops.push(Op::Rename { from: at("f"), to: at("s"), flags: 0 });
        ops.push(Op::Rename { from: at("s"), to: at("f"), flags: 0 });
        ops.push(Op::Rename { from: at("e"), to: at("full"), flags: 0 });
        ops.push(Op::Rename { from: at("f"), to: at("missing"), flags: libc::RENAME_EXCHANGE });
        ops.push(Op::Rename { from: at("f"), to: at("full"), flags: libc::RENAME_NOREPLACE });
        ops.push(Op::Rename { from: at("f"), to: at("f"), flags: 0 });
        // EPERM: a hard link to a directory.
        ops.push(Op::Link { from: at("s"), to: at("dir-link") });
        // ELOOP.
        ops.push(Op::Write { path: at("loop"), open: OpenMode::Create, offset: 0, len: 1, seed: 1 });
        // EFBIG: past the largest file of every layout here.
        ops.push(Op::Truncate { path: at("f"), size: 1 << 50 });
        ops.push(Op::Write { path: at("f"), open: OpenMode::Existing, offset: 1 << 45, len: 1, seed: 1 });
        // ENAMETOOLONG: a target of PATH_MAX bytes.
        ops.push(Op::Symlink { target: vec![b'p'; 4096], path: at("too-long") });
        // EINVAL: an ACL with a named user and no mask; a bad ACL version.
        let no_mask = vec![
            AclEntry { tag: 1, perm: 6, id: u32::MAX },
            AclEntry { tag: 2, perm: 6, id: 1000 },
            AclEntry { tag: 4, perm: 4, id: u32::MAX },
            AclEntry { tag: 0x20, perm: 4, id: u32::MAX },
        ];
        ops.push(Op::SetAcl { path: at("f"), default: false, entries: no_mask });
        ops.push(Op::SetAcl { path: at("f"), default: true, entries: vec![] });
        // Xattr names and values at and past the limits.
        ops.push(Op::SetXattr { path: at("f"), name: b"user.".to_vec(), value: b"v".to_vec(), flags: 0 });
        ops.push(Op::SetXattr { path: at("f"), name: b"nonexistent.x".to_vec(), value: b"v".to_vec(), flags: 0 });
        ops.push(Op::SetXattr { path: at("f"), name: b"user.big".to_vec(), value: vec![7; 65537], flags: 0 });
        ops.push(Op::SetXattr {
            path: at("f"),
            name: b"user.r".to_vec(),
            value: b"v".to_vec(),
            flags: libc::XATTR_REPLACE,
        });
        ops.push(Op::SetXattr { path: at("f"), name: b"user.c".to_vec(), value: b"v".to_vec(), flags: 0 });
        ops.push(Op::SetXattr {
            path: at("f"),
            name: b"user.c".to_vec(),
            value: b"w".to_vec(),
            flags: libc::XATTR_CREATE,
        });
        ops.push(Op::RemoveXattr { path: at("f"), name: b"user.missing".to_vec() });
        ops.push(Op::SetXattr { path: at("loop"), name: b"user.on-symlink".to_vec(), value: b"v".to_vec(), flags: 0 });
        // What succeeds: a directory over an empty one, a file and a
        // directory exchanged, a rename onto itself.
        ops.push(Op::Rename { from: at("s"), to: at("e2"), flags: 0 });
        ops.push(Op::Rename { from: at("f"), to: at("full"), flags: libc::RENAME_EXCHANGE });
        ops.push(Op::List { path: d.clone() });
        ops.push(Op::Stat { path: at("f/x") });
        ops.push(Op::Stat { path: at("full") });
        self.model.entries.insert(d.clone(), Ent::Dir);
        self.model.entries.insert(at("e"), Ent::Dir);
        self.model.entries.insert(at("f"), Ent::Dir);
        self.model.entries.insert(at("f/x"), Ent::File { size: 0 });
        self.model.entries.insert(at("full"), Ent::File { size: 0 });
    }

    /// The last phase: explicit atime and mtime on a sample of what exists
    /// (files, directories, symlinks, specials), remembered for comparing.
    fn stamp(&mut self, ops: &mut Vec<Op>, stamped: &mut BTreeSet<Name>) {
        let all = self.model.matching(|_| true);
        let count = all.len().min(60);
        for _ in 0..count {
            let path = self.rng.pick(&all).clone();
            let (atime, mtime) = self.times();
            ops.push(Op::Utimens { path: path.clone(), atime, mtime });
            stamped.insert(path);
        }
        // Directories whose entries change after the stamp would lose it;
        // nothing follows this phase, so every stamped path keeps its times.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> Config {
        Config { seed, setup_ops: 50, ops: 300, kinds: Kind::ALL.into_iter().collect(), big_dir_entries: 100 }
    }

    #[test]
    fn a_seed_gives_one_script() {
        let (a, b) = (generate(&config(7)), generate(&config(7)));
        assert_eq!(a.setup, b.setup);
        assert_eq!(a.ops, b.ops);
        assert_eq!(a.stamped, b.stamped);
        assert_ne!(generate(&config(8)).ops, a.ops);
    }

    #[test]
    fn selection_limits_the_kinds() {
        let mut c = config(3);
        c.kinds = [Kind::Create, Kind::Write].into_iter().collect();
        let script = generate(&c);
        assert_eq!(script.ops.len(), c.ops);
        assert!(script.ops.iter().all(|op| matches!(op.kind(), Kind::Create | Kind::Write)), "{:?}", script.ops);
        assert!(script.setup.iter().all(|op| Kind::SETUP.contains(&op.kind())));
    }

    #[test]
    fn every_kind_is_drawn() {
        let script = generate(&config(11));
        let seen: BTreeSet<Kind> = script.ops.iter().map(Op::kind).collect();
        for (kind, _) in WEIGHTS {
            assert!(seen.contains(&kind), "{kind:?} never drawn");
        }
        assert!(!script.stamped.is_empty());
    }

    #[test]
    fn kind_lists_parse() {
        assert_eq!(Kind::parse_list("write, mkdir").unwrap(), [Kind::Write, Kind::Mkdir].into_iter().collect());
        assert_eq!(Kind::parse_list("all").unwrap().len(), Kind::ALL.len());
        assert!(Kind::parse_list("writes").is_err());
    }
}
