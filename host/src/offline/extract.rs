//! `cp-out`: copy a file or a subtree out of the image onto the host, in
//! two sandboxed processes.
//!
//! The *reader* runs the guest: it is an offline command like `ls` (no
//! file can be opened or created, seccomp's offline list, as root the uid
//! of `--user`, default nobody). The *writer* ([`writer`]), forked first
//! while the process has one thread, never runs the guest and creates what
//! the reader asks for ([`wire`]), one name at a time relative to the fd of
//! the directory it goes in, never following a symlink and never replacing
//! a name; its sandbox lets it create only beneath DEST. Splitting them
//! matters because Landlock before ABI v8 does not confine threads that
//! already run (the guest's runtime starts some): a process that runs the
//! guest must not have seccomp allow creating files. The writer has one
//! thread, so Landlock holds it whole. (ARCHITECTURE.md, "Sandbox".)
//!
//! On a damaged image the copy goes on past what it cannot read, as rsync
//! does: each object that fails (an unreadable inode, directory, symlink or
//! file content, a directory cycle, a name the host refuses or that exists
//! already) is reported on stderr with its path and reason and left out,
//! everything else is copied, and the command exits 1 at the end. A regular
//! file whose content cannot be read in full is removed rather than left
//! short, so every file copied is whole.

mod progress;
mod wire;
mod writer;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{ForkResult, fork, pipe};

use super::{display, os, resolve};
use crate::sandbox;
use crate::types::{Attr, FileKind, Ino, Timestamp};
use crate::volume::{Seek, Volume};
use progress::Progress;
use wire::{Meta, Request};
use writer::Destination;

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

/// `fshost cp-out`: extract `path` (a file or a whole subtree) to `dest`,
/// which must not exist, with the volume `open` mounts. Regular files keep
/// their holes; directories, symlinks, fifos and hard links are recreated;
/// device nodes and sockets are skipped with a warning; set-id bits are
/// dropped (the image is untrusted), the sticky bit is kept (it only limits
/// who may delete in a directory); times are kept. A directory met under a
/// second name (a cycle) is not entered.
///
/// Fails at once only when nothing can be copied: `dest` exists or its
/// directory cannot be opened, the volume or `path` cannot be resolved,
/// the sandbox cannot be entered; those errors name `image` first, except
/// `open`'s own. Every later failure costs one object (see the module
/// docs); the exit code is then 1. Must be called while the process has
/// one thread (it forks).
pub fn cp_out(
    path: &[u8],
    dest: &Path,
    options: &sandbox::Options,
    image: &str,
    open: impl FnOnce() -> anyhow::Result<Volume>,
) -> anyhow::Result<ExitCode> {
    let place = destination(dest).context(image.to_owned())?;
    let writer_jail = sandbox::prepare(options, sandbox::Profile::CpOut)?;
    let (requests_in, requests_out) = pipe().context("creating cp-out's pipes")?;
    let (answers_in, answers_out) = pipe().context("creating cp-out's pipes")?;
    // SAFETY: the process has a single thread (prepare checked it, or the
    // sandbox is off and nothing has started one yet: the guest is loaded
    // after this), so the child may run any code.
    match unsafe { fork() }.context("forking cp-out's reader")? {
        ForkResult::Parent { child } => {
            drop((requests_out, answers_in));
            Ok(writer::serve(place, writer_jail, File::from(requests_in), File::from(answers_out), child))
        }
        ForkResult::Child => {
            drop((place, writer_jail, requests_in, answers_out));
            let (requests, answers) = (File::from(requests_out), BufReader::new(File::from(answers_in)));
            read(path, options, image, open, Remote { requests, answers, gone: false })
        }
    }
}

/// The reader: open the volume, enter the offline sandbox, walk `path`
/// and have the writer make each object.
fn read(
    path: &[u8],
    options: &sandbox::Options,
    image: &str,
    open: impl FnOnce() -> anyhow::Result<Volume>,
    remote: Remote,
) -> anyhow::Result<ExitCode> {
    // Disabled, the writer has said so already.
    let jail = match options.disabled {
        true => None,
        false => Some(sandbox::prepare(options, sandbox::Profile::Offline)?),
    };
    let vol = open()?;
    // Decided before the sandbox point: the check is an ioctl.
    let progress = Progress::on_terminal();
    if let Some(report) = jail.map(sandbox::Prepared::enter).transpose()?.and_then(|s| s.report) {
        tracing::info!("cp-out reader: {report}");
    }
    let attr = resolve(&vol, path, false).context(image.to_owned())?;
    let what = display(path);
    let mut copy =
        Copy { vol: &vol, remote, dirs: HashMap::new(), links: HashSet::new(), done: Extracted::default(), progress };
    match copy.top(&attr, &what) {
        Ok(()) => copy.done.copied += 1,
        Err(e) => copy.report(&what, &e),
    }
    copy.progress.object_done();
    copy.progress.finish();
    let done = copy.done;
    if done.failed > 0 {
        eprintln!(
            "fshost: cp-out: {} of {} objects could not be copied (listed above)",
            done.failed,
            done.failed + done.copied
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Open DEST's directory; DEST itself must not exist.
fn destination(dest: &Path) -> anyhow::Result<Destination> {
    let Some(name) = dest.file_name() else {
        bail!("{}: cp-out needs the name of a new file or directory", dest.display());
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let parent = openat(nix::fcntl::AT_FDCWD, dir, flags, Mode::empty())
        .with_context(|| format!("opening {}", dir.display()))?;
    match fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(nix::errno::Errno::ENOENT) => {}
        Ok(_) => bail!("{} already exists; cp-out only creates new files", dest.display()),
        Err(e) => return Err(e).with_context(|| format!("checking {}", dest.display())),
    }
    Ok(Destination { parent, name: name.as_bytes().to_vec(), shown: dest.to_owned() })
}

/// The reader's end of the pipes to the writer.
struct Remote {
    requests: File,
    answers: BufReader<File>,
    /// The writer has gone (killed, or it refused the stream): nothing more
    /// can be copied.
    gone: bool,
}

impl Remote {
    /// Send `req`; for a request the writer answers, its answer.
    fn ask(&mut self, req: Request) -> anyhow::Result<()> {
        if self.gone {
            bail!("cp-out's writer has gone");
        }
        let answered = req.answered();
        let answer = self.requests.write_all(&req.encode()).and_then(|()| match answered {
            true => wire::read_answer(&mut self.answers),
            false => Ok(Ok(())),
        });
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(e) => {
                self.gone = true;
                Err(anyhow::Error::new(e).context("cp-out's writer has gone"))
            }
        }
    }
}

fn meta(attr: &Attr) -> Meta {
    let t = |t: Timestamp| (t.seconds, t.nanoseconds);
    Meta { perm: attr.perm, atime: t(attr.atime), mtime: t(attr.mtime) }
}

struct Copy<'a> {
    vol: &'a Volume,
    remote: Remote,
    /// Directories entered, by inode, with the name they were entered by.
    dirs: HashMap<Ino, String>,
    /// Hard-linked non-directories copied whole (the writer knows where).
    links: HashSet<Ino>,
    done: Extracted,
    progress: Progress,
}

impl Copy<'_> {
    /// DEST itself, as what `attr` is.
    fn top(&mut self, attr: &Attr, what: &str) -> anyhow::Result<()> {
        match attr.kind {
            FileKind::Directory => {
                self.remote.ask(Request::TopDir)?;
                self.dirs.insert(attr.ino, what.to_owned());
                let listed = self.entries(attr, what, 0);
                self.remote.ask(Request::Finish { meta: meta(attr) })?;
                listed
            }
            FileKind::Regular => {
                self.remote.ask(Request::TopFile)?;
                self.file_data(attr, what, 0)
            }
            FileKind::Symlink => {
                let target = self.vol.readlink(attr.ino).map_err(|e| os(e, what))?;
                self.remote.ask(Request::TopSymlink { target })
            }
            FileKind::Fifo => self.remote.ask(Request::TopFifo { meta: meta(attr) }),
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                tracing::warn!("{what}: skipping a device node or socket");
                Ok(())
            }
        }
    }

    /// Copy one object into the writer's current directory as `name`;
    /// report it if it fails.
    fn object(&mut self, attr: &Attr, what: String, name: &[u8], depth: usize) {
        match self.try_object(attr, &what, name, depth) {
            Ok(()) => self.done.copied += 1,
            Err(e) => self.report(&what, &e),
        }
        self.progress.object_done();
    }

    fn report(&mut self, what: &str, e: &anyhow::Error) {
        self.done.failed += 1;
        self.progress.clear();
        let e = crate::report::message(e);
        // The error usually starts with the path already.
        if e.starts_with(what) {
            eprintln!("fshost: cp-out: {e}");
        } else {
            eprintln!("fshost: cp-out: {what}: {e}");
        }
    }

    fn try_object(&mut self, attr: &Attr, what: &str, name: &[u8], depth: usize) -> anyhow::Result<()> {
        writer::single_component(name).map_err(anyhow::Error::msg)?;
        let link = if attr.nlink > 1 { attr.ino.0 } else { 0 };
        if attr.kind == FileKind::Directory {
            if depth > MAX_DEPTH {
                bail!("{what}: directory nesting deeper than {MAX_DEPTH}");
            }
            // A directory has one name. A second one is a cycle (a directory
            // inside itself) or a DAG whose paths multiply; both would make
            // the copy endless, so refuse.
            if let Some(first) = self.dirs.insert(attr.ino, what.to_owned()) {
                bail!(
                    "{what}: directory inode {} is also {first}: a directory has one name (a cycle or a corrupted entry)",
                    attr.ino
                );
            }
        } else if link != 0 && self.links.contains(&attr.ino) {
            return self.remote.ask(Request::Link { link, name: name.to_vec() });
        }
        match attr.kind {
            FileKind::Directory => {
                self.remote.ask(Request::Dir { name: name.to_vec() })?;
                let listed = self.entries(attr, what, depth);
                self.remote.ask(Request::Leave { meta: meta(attr) })?;
                listed
            }
            FileKind::Regular => {
                self.remote.ask(Request::File { name: name.to_vec() })?;
                self.file_data(attr, what, link)
            }
            FileKind::Symlink => {
                let target = self.vol.readlink(attr.ino).map_err(|e| os(e, what))?;
                self.remote.ask(Request::Symlink { name: name.to_vec(), target, link })?;
                self.remember(link, attr);
                Ok(())
            }
            FileKind::Fifo => {
                self.remote.ask(Request::Fifo { name: name.to_vec(), meta: meta(attr), link })?;
                self.remember(link, attr);
                Ok(())
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                tracing::warn!("{what}: skipping a device node or socket");
                Ok(())
            }
        }
    }

    fn remember(&mut self, link: u64, attr: &Attr) {
        if link != 0 {
            self.links.insert(attr.ino);
        }
    }

    /// Copy a directory's entries into the writer's current directory. A
    /// directory that cannot be listed stays, empty, and is reported; its
    /// entries that can be read are copied.
    fn entries(&mut self, attr: &Attr, what: &str, depth: usize) -> anyhow::Result<()> {
        let listed = self.vol.read_whole_dir(attr.ino).map_err(|e| os(e, what));
        for e in listed.as_deref().unwrap_or_default() {
            if self.remote.gone {
                // Said once, by the object that met it.
                break;
            }
            let child_what = format!("{}/{}", what.trim_end_matches('/'), String::from_utf8_lossy(&e.name));
            match self.vol.getattr(e.ino) {
                Ok(child) => self.object(&child, child_what, &e.name, depth + 1),
                Err(err) => self.report(&child_what.clone(), &os(err, child_what)),
            }
        }
        listed.map(drop)
    }

    /// Send the open file's data ranges (holes stay holes), then close it;
    /// if it cannot be read whole, the writer removes it.
    fn file_data(&mut self, attr: &Attr, what: &str, link: u64) -> anyhow::Result<()> {
        if let Err(e) = self.send_sparse(attr, what) {
            self.remote.ask(Request::Abort)?;
            return Err(e);
        }
        self.remote.ask(Request::Close { size: attr.size, meta: meta(attr), link })?;
        self.remember(link, attr);
        Ok(())
    }

    fn send_sparse(&mut self, attr: &Attr, what: &str) -> anyhow::Result<()> {
        let vol = self.vol;
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
                let n = chunk.len() as u64;
                self.remote.ask(Request::Data { at, bytes: chunk })?;
                at += n;
                self.progress.bytes(n);
            }
            pos = hole;
        }
        Ok(())
    }
}
