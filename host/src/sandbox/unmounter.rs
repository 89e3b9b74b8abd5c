//! The unmount helper: the one piece that keeps the right to unmount.
//!
//! Unmounting needs CAP_SYS_ADMIN, and Landlock forbids it outright, so a
//! sandboxed `fshost mount` cannot unmount itself on SIGTERM. Before it drops
//! anything it starts this helper (itself, re-executed as the hidden
//! `sandbox-unmounter` command) with a pipe each way. The helper keeps only
//! CAP_SYS_ADMIN, installs a seccomp filter of four syscalls (read, write,
//! umount2, exit_group) and then waits: each byte it reads asks it to
//! unmount the one mountpoint it was started with; it answers with the errno
//! (0 on success). It ends when the pipe closes, that is when fshost exits.
//! It ignores SIGINT/SIGTERM/SIGHUP, which a terminal or `kill` also sends
//! to it: fshost decides when to unmount.
//!
//! Started as non-root, fshost mounted through the setuid `fusermount3`,
//! and the helper unmounts through it too (`fusermount3 -u`); it then
//! cannot be sandboxed itself (no_new_privs would disarm the setuid bit),
//! and has nothing to drop either.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};

use super::seccomp;

/// The hidden subcommand that runs [`serve`].
pub const COMMAND: &str = "sandbox-unmounter";

/// The host's end of the helper.
pub struct Unmounter {
    pipes: Mutex<Option<(ChildStdin, ChildStdout)>>,
    child: Mutex<Child>,
}

impl Unmounter {
    /// Start the helper for `mountpoint` and wait until it is ready.
    pub fn start(mountpoint: &Path) -> anyhow::Result<Unmounter> {
        let exe = std::env::current_exe().context("finding our own executable")?;
        let mut child = Command::new(exe)
            .arg(COMMAND)
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the unmount helper")?;
        let (Some(input), Some(mut output)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the unmount helper has no pipes");
        };
        let ready = read_status(&mut output).context("waiting for the unmount helper")?;
        if ready != 0 {
            let _ = child.wait();
            bail!("the unmount helper could not sandbox itself: {}", std::io::Error::from_raw_os_error(ready));
        }
        tracing::debug!("unmount helper {} ready for {}", child.id(), mountpoint.display());
        Ok(Unmounter { pipes: Mutex::new(Some((input, output))), child: Mutex::new(child) })
    }

    /// The helper's process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().map_or(0, |c| c.id())
    }

    /// Ask the helper to unmount; its answer.
    pub fn unmount(&self) -> std::io::Result<()> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        let Some((input, output)) = pipes.as_mut() else {
            return Err(std::io::Error::other("the unmount helper has ended"));
        };
        input.write_all(b"u")?;
        match read_status(output)? {
            0 => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    }

    /// Close the pipes (the helper exits) and reap it.
    pub fn finish(&self) {
        drop(self.pipes.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Ok(mut child) = self.child.lock()
            && let Err(e) = child.wait()
        {
            tracing::warn!("reaping the unmount helper: {e}");
        }
    }
}

fn read_status(from: &mut impl Read) -> std::io::Result<i32> {
    let mut buf = [0u8; 4];
    from.read_exact(&mut buf)?;
    Ok(i32::from_le_bytes(buf))
}

/// The helper's main: never returns.
pub fn serve(mountpoint: &Path) -> ! {
    // A terminal's ^C or a `kill` of the process group reaches us too; fshost
    // decides when to unmount, and we end when it closes the pipe.
    let _ = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]).thread_block();
    let root = nix::unistd::geteuid().is_root();
    let target = CString::new(mountpoint.as_os_str().as_bytes()).unwrap_or_default();
    let ready = if root { restrict().map_or_else(|e| e.raw_os_error().unwrap_or(libc::EPERM), |()| 0) } else { 0 };
    reply(ready);
    if ready != 0 {
        exit();
    }
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: reads at most one byte into a live stack buffer.
        match unsafe { libc::read(0, byte.as_mut_ptr().cast(), 1) } {
            1 => reply(unmount(&target, root)),
            n if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => exit(),
        }
    }
}

fn reply(status: i32) {
    let bytes = status.to_le_bytes();
    // SAFETY: writes four bytes from a live stack buffer.
    unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
}

fn exit() -> ! {
    // SAFETY: _exit has no preconditions; nothing is left to flush.
    unsafe { libc::_exit(0) }
}

/// Unmount `target` (not following a symlink put in its place); the errno.
fn unmount(target: &CString, root: bool) -> i32 {
    // SAFETY: `target` is a NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::UMOUNT_NOFOLLOW) } == 0 {
        return 0;
    }
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    if root || errno != libc::EPERM {
        return errno;
    }
    let path = std::ffi::OsStr::from_bytes(target.as_bytes());
    for bin in ["fusermount3", "fusermount"] {
        if let Ok(status) = Command::new(bin).args(["-u", "-q", "--"]).arg(path).stdin(Stdio::null()).status() {
            return if status.success() { 0 } else { libc::EBUSY };
        }
    }
    errno
}

/// Keep CAP_SYS_ADMIN (effective and permitted) and nothing else; allow
/// only the four syscalls of [`seccomp::UNMOUNTER`].
fn restrict() -> std::io::Result<()> {
    use caps::{CapSet, Capability};
    let io = |e: caps::errors::CapsError| std::io::Error::other(e.to_string());
    super::drop_bounding_set()?;
    caps::clear(None, CapSet::Ambient).map_err(io)?;
    caps::clear(None, CapSet::Inheritable).map_err(io)?;
    let keep = caps::CapsHashSet::from([Capability::CAP_SYS_ADMIN]);
    caps::set(None, CapSet::Effective, &keep).map_err(io)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(io)?;
    let filters = seccomp::compile(seccomp::UNMOUNTER.iter()).map_err(std::io::Error::other)?;
    seccomp::apply_this_thread(&filters).map_err(std::io::Error::other)
}
