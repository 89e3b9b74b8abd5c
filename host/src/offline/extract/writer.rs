//! cp-out's writer: the one process that creates host files.
//!
//! It has a single thread, never runs the guest, and does what the reader
//! asks ([`Request`]) one name at a time relative to the fd of the
//! directory the name goes in: `mkdirat`, `openat(O_CREAT|O_EXCL|
//! O_NOFOLLOW)`, `symlinkat`, `mknodat` (fifos), `linkat` (flags 0: never
//! following); every name must be one component; an existing name, such
//! as a symlink made a moment ago, is refused, never followed or replaced.
//! Mode and times go through the object's own fd. DEST is made before the
//! sandbox point; then Landlock allows creating only beneath DEST (a single
//! thread: the whole process is confined, whatever the Landlock ABI) and
//! seccomp only the cp-out rows. A file the reader cannot finish (it
//! aborts, fails, or dies) is removed, so no file is left short.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::stat::{Mode, SFlag, fchmod, futimens, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, UnlinkatFlags, linkat, symlinkat, unlinkat};

use super::wire::{Meta, Request, write_answer};
use crate::sandbox::{self, Allow, Prepared};

const CREATE: OFlag =
    OFlag::O_WRONLY.union(OFlag::O_CREAT).union(OFlag::O_EXCL).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);
const OPEN_DIR: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_NOFOLLOW).union(OFlag::O_CLOEXEC);
const OWNER_RW: Mode = Mode::S_IRUSR.union(Mode::S_IWUSR);

/// DEST's directory, opened before anything else, and DEST's name in it.
pub struct Destination {
    pub parent: OwnedFd,
    pub name: Vec<u8>,
    /// DEST as the user wrote it, for messages.
    pub shown: PathBuf,
}

/// DEST once made.
enum Top {
    None,
    Dir(OwnedFd),
    /// The one file: its directory is kept to remove it if it fails.
    File,
    /// A symlink or fifo: complete when made.
    Other,
}

/// A file being written: where, and the first write error, if any.
struct Open {
    fd: OwnedFd,
    name: Vec<u8>,
    failed: Option<String>,
}

/// Where the first copy of a hard-linked object is: directories from DEST
/// down, and its name there.
struct Place {
    dir: Vec<Vec<u8>>,
    name: Vec<u8>,
}

struct Writer {
    dest: Destination,
    top: Top,
    /// Directories entered below DEST, with their names.
    dirs: Vec<(OwnedFd, Vec<u8>)>,
    open: Option<Open>,
    links: HashMap<u64, Place>,
}

/// Serve the reader (`reader`, on `requests`/`answers`) until it closes the
/// pipe, then exit as it did. `jail` is entered once DEST is made.
pub fn serve(dest: Destination, jail: Prepared, requests: File, answers: File, reader: Pid) -> ExitCode {
    // Ctrl-C reaches the reader too; the writer outlives it to remove a
    // file it left short.
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let mut w = Writer { dest, top: Top::None, dirs: Vec::new(), open: None, links: HashMap::new() };
    let mut requests = BufReader::with_capacity(1 << 20, requests);
    let mut answers = answers;
    if let Err(e) = w.run(jail, &mut requests, &mut answers) {
        eprintln!("fshost: cp-out: {}", crate::report::message(&e));
    }
    // The reader is gone or misbehaved: a file it did not finish goes.
    w.abort();
    drop(answers);
    drop(requests);
    loop {
        match waitpid(reader, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(WaitStatus::Exited(_, code)) => return ExitCode::from(code.clamp(0, 255) as u8),
            // As a shell reports a signal: 128 + its number.
            Ok(WaitStatus::Signaled(_, sig, _)) => return ExitCode::from(128u8.wrapping_add(sig as u8)),
            _ => return ExitCode::FAILURE,
        }
    }
}

impl Writer {
    fn run(&mut self, jail: Prepared, requests: &mut impl std::io::Read, answers: &mut File) -> anyhow::Result<()> {
        // The first request names what DEST is; nothing else is made before
        // the sandbox point.
        let Some(first) = Request::read(requests)? else { return Ok(()) };
        let made = self.top(first, jail.ids());
        write_answer(answers, &made)?;
        let rule = match &self.top {
            Top::Dir(fd) => Some(Allow::CreateBeneath(fd.as_fd())),
            Top::File => Some(Allow::RemoveIn(self.dest.parent.as_fd())),
            Top::None | Top::Other => None,
        };
        if let Some(report) = jail.enter_allowing(rule)?.report {
            tracing::info!("cp-out writer: {report}");
        }
        while let Some(req) = Request::read(requests)? {
            let answered = req.answered();
            let result = self.handle(req);
            if answered {
                write_answer(answers, &result)?;
            }
        }
        answers.flush()?;
        Ok(())
    }

    /// Where `name` goes, for messages.
    fn host(&self, name: &[u8]) -> String {
        let mut p = self.dest.shown.clone();
        for (_, dir) in &self.dirs {
            p.push(OsStr::from_bytes(dir));
        }
        if !name.is_empty() {
            p.push(OsStr::from_bytes(name));
        }
        p.display().to_string()
    }

    /// Make DEST (before the sandbox point); as root with `--user`, give it
    /// to that user, who creates everything beneath it afterwards.
    fn top(&mut self, req: Request, ids: Option<sandbox::Ids>) -> Result<(), String> {
        let parent = self.dest.parent.as_fd();
        let name = self.dest.name.clone();
        let fail = |e: nix::Error| format!("creating {}: {}", self.dest.shown.display(), std::io::Error::from(e));
        match req {
            Request::TopDir => {
                mkdirat(parent, name.as_slice(), Mode::S_IRWXU).map_err(fail)?;
                self.top = Top::Dir(openat(parent, name.as_slice(), OPEN_DIR, Mode::empty()).map_err(fail)?);
            }
            Request::TopFile => {
                let fd = openat(parent, name.as_slice(), CREATE, OWNER_RW).map_err(fail)?;
                self.open = Some(Open { fd, name: name.clone(), failed: None });
                self.top = Top::File;
            }
            Request::TopSymlink { target } => {
                symlinkat(target.as_slice(), parent, name.as_slice()).map_err(fail)?;
                self.top = Top::Other;
            }
            Request::TopFifo { meta } => {
                make_fifo(parent, &name, &meta).map_err(fail)?;
                self.top = Top::Other;
            }
            _ => return Err("cp-out writer: the first request must name DEST".into()),
        }
        if let Some(ids) = ids {
            let (uid, gid) = (Some(nix::unistd::Uid::from_raw(ids.uid)), Some(nix::unistd::Gid::from_raw(ids.gid)));
            nix::unistd::fchownat(parent, name.as_slice(), uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| format!("giving {} to uid {}/gid {}: {e}", self.dest.shown.display(), ids.uid, ids.gid))?;
        }
        Ok(())
    }

    /// The directory names go in now.
    fn current(&self) -> Result<BorrowedFd<'_>, String> {
        match (self.dirs.last(), &self.top) {
            (Some((fd, _)), _) => Ok(fd.as_fd()),
            (None, Top::Dir(fd)) => Ok(fd.as_fd()),
            _ => Err(format!("{} is not a directory", self.dest.shown.display())),
        }
    }

    fn handle(&mut self, req: Request) -> Result<(), String> {
        if self.open.is_some() && !matches!(req, Request::Data { .. } | Request::Close { .. } | Request::Abort) {
            return Err("cp-out writer: a file is still open".into());
        }
        let os = |what: String| move |e: nix::Error| format!("{what}: {}", std::io::Error::from(e));
        match req {
            Request::Dir { name } => {
                single_component(&name)?;
                let at = self.current()?;
                mkdirat(at, name.as_slice(), Mode::S_IRWXU).map_err(os(format!("creating {}", self.host(&name))))?;
                let fd = openat(at, name.as_slice(), OPEN_DIR, Mode::empty())
                    .map_err(os(format!("opening {}", self.host(&name))))?;
                self.dirs.push((fd, name));
            }
            Request::Leave { meta } => {
                let what = format!("setting mode and times of {}", self.host(b""));
                let (fd, _) = self.dirs.pop().ok_or("cp-out writer: no directory to leave")?;
                finish(&fd, &meta, 0o1777).map_err(os(what))?;
            }
            Request::File { name } => {
                single_component(&name)?;
                let fd = openat(self.current()?, name.as_slice(), CREATE, OWNER_RW)
                    .map_err(os(format!("creating {}", self.host(&name))))?;
                self.open = Some(Open { fd, name, failed: None });
            }
            Request::Data { at, bytes } => {
                if let Some(open) = &mut self.open
                    && open.failed.is_none()
                    && let Err(e) = write_all_at(&open.fd, &bytes, at)
                {
                    open.failed = Some(format!("writing at byte {at}: {e}"));
                }
            }
            Request::Close { size, meta, link } => {
                let open = self.open.take().ok_or("cp-out writer: no open file")?;
                let what = self.host(if self.is_top_file() { b"" } else { &open.name });
                let done = match &open.failed {
                    Some(e) => Err(e.clone()),
                    None => i64::try_from(size)
                        .map_err(|_| format!("size {size} too large"))
                        .and_then(|len| nix::unistd::ftruncate(&open.fd, len).map_err(|e| e.to_string()))
                        .and_then(|()| finish(&open.fd, &meta, 0o1777).map_err(|e| e.to_string())),
                };
                if let Err(e) = done {
                    self.remove(open);
                    return Err(format!("{what}: {e}"));
                }
                self.remember(link, &open.name);
            }
            Request::Abort => {
                if let Some(open) = self.open.take() {
                    self.remove(open);
                }
            }
            Request::Symlink { name, target, link } => {
                single_component(&name)?;
                symlinkat(target.as_slice(), self.current()?, name.as_slice())
                    .map_err(os(format!("creating symlink {}", self.host(&name))))?;
                self.remember(link, &name);
            }
            Request::Fifo { name, meta, link } => {
                single_component(&name)?;
                make_fifo(self.current()?, &name, &meta).map_err(os(format!("creating fifo {}", self.host(&name))))?;
                self.remember(link, &name);
            }
            Request::Link { link, name } => {
                single_component(&name)?;
                let what = format!("linking {}", self.host(&name));
                self.link(link, &name).map_err(os(what))?;
            }
            Request::Finish { meta } => {
                if let Top::Dir(fd) = &self.top {
                    let what = format!("setting mode and times of {}", self.dest.shown.display());
                    finish(fd, &meta, 0o1777).map_err(os(what))?;
                }
            }
            Request::TopDir | Request::TopFile | Request::TopSymlink { .. } | Request::TopFifo { .. } => {
                return Err("cp-out writer: DEST is already made".into());
            }
        }
        Ok(())
    }

    fn is_top_file(&self) -> bool {
        matches!(self.top, Top::File) && self.dirs.is_empty()
    }

    /// Remove a file not written whole, by name in the directory it was
    /// made in (DEST's own directory for DEST).
    fn remove(&mut self, open: Open) {
        drop(open.fd);
        let dir = if self.is_top_file() { Ok(self.dest.parent.as_fd()) } else { self.current() };
        if let Ok(dir) = dir
            && let Err(e) = unlinkat(dir, open.name.as_slice(), UnlinkatFlags::NoRemoveDir)
        {
            eprintln!("fshost: cp-out: could not remove the partial {}: {e}", self.host(&open.name));
        }
    }

    /// The reader is gone: remove what it left open.
    fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            self.remove(open);
        }
    }

    fn remember(&mut self, link: u64, name: &[u8]) {
        if link != 0 {
            let dir = self.dirs.iter().map(|(_, n)| n.clone()).collect();
            self.links.insert(link, Place { dir, name: name.to_vec() });
        }
    }

    /// `name` in the current directory becomes another name of `link`'s
    /// first copy, whose directory is found again from DEST one name at a
    /// time, never following a symlink.
    fn link(&self, link: u64, name: &[u8]) -> nix::Result<()> {
        let first = self.links.get(&link).ok_or(nix::errno::Errno::ENOENT)?;
        let Top::Dir(root) = &self.top else { return Err(nix::errno::Errno::ENOTDIR) };
        let path_only = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut dir: Option<OwnedFd> = None;
        for part in &first.dir {
            let at = dir.as_ref().map_or(root.as_fd(), AsFd::as_fd);
            dir = Some(openat(at, part.as_slice(), path_only, Mode::empty())?);
        }
        let at = dir.as_ref().map_or(root.as_fd(), AsFd::as_fd);
        let here = self.current().map_err(|_| nix::errno::Errno::ENOTDIR)?;
        linkat(at, first.name.as_slice(), here, name, AtFlags::empty())
    }
}

/// A name from the image is one path component: not empty, not `.` or
/// `..`, no `/`, no NUL. (The guest boundary already refuses such names;
/// this holds whatever the reader sends.)
pub fn single_component(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(format!("refusing the name {:?}: not a single path component", String::from_utf8_lossy(name)));
    }
    Ok(())
}

/// A fifo, opened again (not followed, never blocking) to set its mode
/// (no set-id bits) and times through an fd.
fn make_fifo(dir: BorrowedFd<'_>, name: &[u8], meta: &Meta) -> nix::Result<()> {
    mknodat(dir, name, SFlag::S_IFIFO, OWNER_RW, 0)?;
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty())?;
    finish(&fd, meta, 0o777)
}

fn write_all_at(file: &OwnedFd, mut buf: &[u8], mut at: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let offset = i64::try_from(at).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
        match nix::sys::uio::pwrite(file, buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Set `meta`'s permission bits (within `mask`: never set-id) and times on
/// the object behind `fd`.
fn finish(fd: &impl AsFd, meta: &Meta, mask: u16) -> nix::Result<()> {
    let spec = |(s, ns): (i64, u32)| TimeSpec::new(s, i64::from(ns));
    fchmod(fd.as_fd(), Mode::from_bits_truncate(u32::from(meta.perm & mask)))?;
    futimens(fd.as_fd(), &spec(meta.atime), &spec(meta.mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_components_pass() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"../x", b"a\0b"] {
            assert!(single_component(bad).is_err(), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"a b", b"\xff"] {
            assert!(single_component(good).is_ok(), "{good:?}");
        }
    }
}
