//! The bytes each regular file should hold after a script, worked out from
//! the script alone: each op's POSIX meaning applied to an in-memory
//! namespace (path → directory, symlink, other, or a shared file inode, so
//! hard links see each other's writes), starting from the files read off
//! the seeded image.
//!
//! Why: when the kernel's copy and fshost's copy of an image differ in a
//! file's bytes, the kernel is not automatically right. The model settles
//! it: a file where fshost equals the model and the kernel does not is a
//! kernel defect (kernel-differential runs on inline_data found some: see
//! `tests/tests/ext4_write.rs`).
//!
//! Whether an op succeeded is taken from the recorded outcomes (the caller
//! passes the kernel's, which fshost's must equal anyway); the model only
//! says what a successful op does to the bytes. Where it cannot be sure (an
//! op that failed part-way may have changed a file; a write through a
//! symlink it cannot resolve; a file too big to hold) the inode is marked
//! unsure and never judged.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::apply::Outcome;
use super::script::{FallocMode, Name, Op, OpenMode};
use crate::tree::pattern;

/// Files past this are not modelled (the big sparse phase's 8 GiB file).
const MAX_MODELLED: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File(usize),
    Symlink(Vec<u8>),
    Other,
}

/// One inode's bytes: `size`, of which those past `data.len()` are zero.
#[derive(Debug, Clone, Default)]
struct Data {
    size: u64,
    data: Vec<u8>,
    unsure: bool,
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.data.clone();
        out.resize(self.size as usize, 0);
        out
    }

    fn set_len(&mut self, size: u64) {
        self.size = size;
        if (self.data.len() as u64) > size {
            self.data.truncate(size as usize);
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        if end > MAX_MODELLED {
            self.unsure = true;
            self.size = self.size.max(end);
            return;
        }
        if (self.data.len() as u64) < end {
            self.data.resize(end as usize, 0);
        }
        self.data[offset as usize..end as usize].copy_from_slice(bytes);
        self.size = self.size.max(end);
    }

    fn zero(&mut self, offset: u64, len: u64) {
        let end = (offset + len).min(self.data.len() as u64);
        if offset < end {
            self.data[offset as usize..end as usize].fill(0);
        }
    }
}

/// The namespace and file bytes as the script leaves them.
#[derive(Debug, Default)]
pub struct Model {
    entries: BTreeMap<Name, Entry>,
    inodes: Vec<Data>,
    /// Per inode, the indices of the ops that touched it (for messages).
    history: Vec<Vec<usize>>,
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

fn under_or_is(path: &[u8], dir: &[u8]) -> bool {
    path == dir || is_under(path, dir)
}

/// `target` (a symlink's) resolved against the directory `dir`, or None
/// when it leaves the tree or is absolute.
fn resolve_target(dir: &[u8], target: &[u8]) -> Option<Name> {
    if target.first() == Some(&b'/') {
        return None;
    }
    let mut parts: Vec<&[u8]> = dir.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join(&b'/'))
}

impl Model {
    /// The regular files, directories and symlinks beneath `root` (a
    /// mounted seeded image): the state before the script's ops.
    pub fn read(root: &Path) -> io::Result<Model> {
        let mut model = Model::default();
        let mut by_ino: BTreeMap<u64, usize> = BTreeMap::new();
        let mut stack = vec![Vec::<u8>::new()];
        while let Some(dir) = stack.pop() {
            let full = if dir.is_empty() { root.to_path_buf() } else { root.join(std::ffi::OsStr::from_bytes(&dir)) };
            for entry in std::fs::read_dir(&full)? {
                let entry = entry?;
                let name = entry.file_name().as_bytes().to_vec();
                if dir.is_empty() && name == b"lost+found" {
                    continue;
                }
                let rel = if dir.is_empty() { name } else { [&dir[..], b"/", &name[..]].concat() };
                let meta = std::fs::symlink_metadata(entry.path())?;
                let e = if meta.is_dir() {
                    stack.push(rel.clone());
                    Entry::Dir
                } else if meta.file_type().is_symlink() {
                    Entry::Symlink(std::fs::read_link(entry.path())?.as_os_str().as_bytes().to_vec())
                } else if meta.is_file() {
                    let ino = match by_ino.get(&meta.ino()) {
                        Some(&i) => i,
                        None => {
                            let mut d = Data { size: meta.size(), ..Data::default() };
                            if meta.size() > MAX_MODELLED {
                                d.unsure = true;
                            } else {
                                d.data = std::fs::read(entry.path())?;
                            }
                            model.inodes.push(d);
                            model.history.push(Vec::new());
                            by_ino.insert(meta.ino(), model.inodes.len() - 1);
                            model.inodes.len() - 1
                        }
                    };
                    Entry::File(ino)
                } else {
                    Entry::Other
                };
                model.entries.insert(rel, e);
            }
        }
        Ok(model)
    }

    /// Follows symlinks in `path` (every component, and the last too when
    /// `follow_last`): the path it names, or None when a link cannot be
    /// followed within the model.
    fn resolve(&self, path: &[u8], follow_last: bool) -> Option<Name> {
        let mut path = path.to_vec();
        'again: for _ in 0..40 {
            let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            let mut done: Name = Vec::new();
            for (i, c) in comps.iter().enumerate() {
                let here = if done.is_empty() { c.to_vec() } else { [&done[..], b"/", c].concat() };
                let last = i + 1 == comps.len();
                if let Some(Entry::Symlink(target)) = self.entries.get(&here) {
                    if last && !follow_last {
                        return Some(here);
                    }
                    let mut next = resolve_target(&done, target)?;
                    for rest in &comps[i + 1..] {
                        next.push(b'/');
                        next.extend_from_slice(rest);
                    }
                    path = next;
                    continue 'again;
                }
                done = here;
            }
            return Some(done);
        }
        None
    }

    fn new_inode(&mut self) -> usize {
        self.inodes.push(Data::default());
        self.history.push(Vec::new());
        self.inodes.len() - 1
    }

    /// The inode a data op on `path` reaches (following symlinks), or
    /// None. `create` makes it when missing.
    fn file(&mut self, path: &[u8], create: bool) -> Option<usize> {
        let real = self.resolve(path, true)?;
        match self.entries.get(&real) {
            Some(Entry::File(i)) => Some(*i),
            None if create => {
                let i = self.new_inode();
                self.entries.insert(real, Entry::File(i));
                Some(i)
            }
            _ => None,
        }
    }

    fn remove_tree(&mut self, path: &[u8]) {
        self.entries.retain(|p, _| !under_or_is(p, path));
    }

    fn take_tree(&mut self, path: &[u8]) -> Vec<(Name, Entry)> {
        let taken: Vec<(Name, Entry)> = self
            .entries
            .iter()
            .filter(|(p, _)| under_or_is(p, path))
            .map(|(p, e)| (p[path.len()..].to_vec(), e.clone()))
            .collect();
        self.remove_tree(path);
        taken
    }

    fn put_tree(&mut self, at: &[u8], tree: Vec<(Name, Entry)>) {
        for (rest, e) in tree {
            self.entries.insert([at, &rest[..]].concat(), e);
        }
    }

    /// The inode `path` reaches following symlinks, if the model has it.
    fn inode_at(&self, path: &[u8]) -> Option<usize> {
        match self.entries.get(&self.resolve(path, true)?) {
            Some(Entry::File(i)) => Some(*i),
            _ => None,
        }
    }

    /// Marks what a failed data op on `path` might have changed. A path
    /// the model cannot follow leaves the tree (an absolute symlink target,
    /// or `..` above the root), so it changes no file the model holds.
    fn unsure(&mut self, path: &[u8]) {
        if let Some(i) = self.inode_at(path) {
            self.inodes[i].unsure = true;
        }
    }

    /// Applies op number `index`, which answered `outcome`.
    pub fn apply(&mut self, index: usize, op: &Op, outcome: &Outcome) {
        let ok = matches!(outcome, Outcome::Ok(_));
        let data_op =
            matches!(op, Op::Write { .. } | Op::Truncate { .. } | Op::Fallocate { .. } | Op::OpenUnlinked { .. });
        if !ok {
            // Most failures change nothing; a data op may have failed
            // part-way (ENOSPC, or EFBIG after some bytes were written).
            let errno = if let Outcome::Err(e) = outcome { *e } else { 0 };
            let before_any_change = match op {
                Op::Truncate { .. } | Op::Fallocate { .. } => !matches!(errno, libc::ENOSPC | libc::EIO | libc::EDQUOT),
                _ => matches!(
                    errno,
                    libc::ENOENT
                        | libc::EISDIR
                        | libc::ENXIO
                        | libc::ENOTDIR
                        | libc::ELOOP
                        | libc::ENAMETOOLONG
                        | libc::EACCES
                        | libc::EPERM
                        | libc::EEXIST
                ),
            };
            if data_op && !before_any_change {
                let path = match op {
                    Op::Write { path, .. }
                    | Op::Truncate { path, .. }
                    | Op::Fallocate { path, .. }
                    | Op::OpenUnlinked { path, .. } => path,
                    _ => unreachable!(),
                };
                if let Some(i) = self.inode_at(path) {
                    self.history[i].push(index);
                }
                self.unsure(path);
            }
            return;
        }
        let touched = |model: &mut Model, i: usize| model.history[i].push(index);
        match op {
            Op::Create { path, .. } => {
                let i = self.new_inode();
                touched(self, i);
                self.entries.insert(path.clone(), Entry::File(i));
            }
            Op::Write { path, open, offset, len, seed } => {
                let create = matches!(open, OpenMode::Create);
                let Some(i) = self.file(path, create) else {
                    return self.unsure(path);
                };
                touched(self, i);
                let d = &mut self.inodes[i];
                if *open == OpenMode::Truncate {
                    d.set_len(0);
                }
                let at = if *open == OpenMode::Append { d.size } else { *offset };
                if at + len > MAX_MODELLED {
                    d.unsure = true;
                    d.size = d.size.max(at + len);
                } else {
                    d.write(at, &pattern(*seed, *offset, *len as usize));
                }
            }
            Op::Truncate { path, size } => {
                let Some(i) = self.file(path, false) else {
                    return self.unsure(path);
                };
                touched(self, i);
                self.inodes[i].set_len(*size);
            }
            Op::Fallocate { path, mode, offset, len } => {
                let Some(i) = self.file(path, false) else {
                    return self.unsure(path);
                };
                touched(self, i);
                let d = &mut self.inodes[i];
                let end = offset + len;
                match mode {
                    FallocMode::Default | FallocMode::ZeroRange if end > d.size => {
                        if *mode == FallocMode::ZeroRange {
                            d.zero(*offset, *len);
                        }
                        d.size = end;
                    }
                    FallocMode::Default | FallocMode::KeepSize => {}
                    FallocMode::PunchHole | FallocMode::ZeroRange | FallocMode::ZeroRangeKeepSize => {
                        d.zero(*offset, *len)
                    }
                }
            }
            Op::Mkdir { path, .. } => {
                self.entries.insert(path.clone(), Entry::Dir);
            }
            Op::Rmdir { path } | Op::Unlink { path } => {
                self.remove_tree(path);
            }
            Op::Rename { from, to, flags } => {
                let (fe, te) = (self.entries.get(from).cloned(), self.entries.get(to).cloned());
                if from == to || (fe.is_some() && fe == te && matches!(fe, Some(Entry::File(_)))) {
                    return; // the same file: rename does nothing
                }
                let moved: Vec<usize> = self
                    .entries
                    .iter()
                    .filter(|(p, _)| under_or_is(p, from) || under_or_is(p, to))
                    .filter_map(|(_, e)| if let Entry::File(i) = e { Some(*i) } else { None })
                    .collect();
                for i in moved {
                    touched(self, i);
                }
                if *flags == libc::RENAME_EXCHANGE {
                    let a = self.take_tree(from);
                    let b = self.take_tree(to);
                    self.put_tree(to, a);
                    self.put_tree(from, b);
                } else {
                    let a = self.take_tree(from);
                    self.remove_tree(to);
                    self.put_tree(to, a);
                }
            }
            Op::Link { from, to } => {
                if let Some(e) = self.entries.get(from).cloned() {
                    if let Entry::File(i) = e {
                        touched(self, i);
                    }
                    self.entries.insert(to.clone(), e);
                }
            }
            Op::Symlink { target, path } => {
                self.entries.insert(path.clone(), Entry::Symlink(target.clone()));
            }
            Op::Mknod { path, .. } => {
                self.entries.insert(path.clone(), Entry::Other);
            }
            Op::OpenUnlinked { path, seed } => {
                let Some(i) = self.file(path, true) else {
                    return self.unsure(path);
                };
                touched(self, i);
                self.entries.remove(path);
                self.inodes[i].write(5000, &pattern(*seed, 5000, 10_000));
            }
            Op::Chmod { .. }
            | Op::Chown { .. }
            | Op::Utimens { .. }
            | Op::SetXattr { .. }
            | Op::RemoveXattr { .. }
            | Op::SetAcl { .. }
            | Op::Read { .. }
            | Op::Stat { .. }
            | Op::List { .. } => {}
        }
    }

    /// Applies every op with its outcome.
    pub fn run(&mut self, ops: &[Op], outcomes: &[Outcome]) {
        for (i, (op, outcome)) in ops.iter().zip(outcomes).enumerate() {
            self.apply(i, op, outcome);
        }
    }

    /// Each path naming a regular file the model is sure of, with the
    /// bytes it must hold and the ops that touched its inode.
    pub fn files(&self) -> Vec<(Name, Vec<u8>, &[usize])> {
        self.entries
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File(i) if !self.inodes[*i].unsure => {
                    Some((p.clone(), self.inodes[*i].bytes(), &self.history[*i][..]))
                }
                _ => None,
            })
            .collect()
    }

    /// How many inodes the model gave up on (for messages).
    pub fn unsure_count(&self) -> usize {
        self.inodes.iter().filter(|d| d.unsure).count()
    }
}
