//! The privileged front end of `fshost serve`: it opens and mounts, the
//! server (forked here, or a socket unit's) serves.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, bail};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket, socketpair};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::wire::{self, Request};
use crate::cli::SourceArgs;
use crate::device::Device;
use crate::plugin::search::SearchPath;
use crate::sandbox;

/// The FUSE device the front end opens and mounts with.
const DEV_FUSE: &str = "/dev/fuse";

/// `fshost serve SOURCE MOUNTPOINT`: see the module docs of `serve`.
/// Without `socket` the server is a child of the front end, which stays to
/// unmount on SIGINT/SIGTERM/SIGHUP and ends with it: in this process with
/// `foreground`, else in a detached child, and this returns once the server
/// serves. With `socket` the server is the socket unit's, and this returns
/// once it serves.
pub fn run(
    source: &SourceArgs,
    mountpoint: &Path,
    socket_path: Option<&Path>,
    foreground: bool,
    options: &sandbox::Options,
) -> anyhow::Result<()> {
    if options.disabled {
        bail!("fshost serve is always sandboxed; use `fshost mount --no-sandbox` to debug");
    }
    if source.partition.is_some()
        || !source.backing.is_empty()
        || source.image_format.as_ref().is_some_and(|f| f != "raw")
    {
        bail!(
            "fshost serve serves an image file or a block device as it is (raw); --partition, --image-format and \
             --backing are for `fshost mount`"
        );
    }
    let host = crate::cli::split_options(&source.options)?;
    if host.rw {
        bail!("fshost serve mounts read-only; -o rw is for `fshost mount`");
    }
    if host.allow_other {
        crate::fuse_conf::check_allow_other(Path::new(crate::fuse_conf::FUSE_CONF))?;
    }
    let mountpoint = mountpoint.canonicalize().with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    let detach = !foreground && socket_path.is_none();
    if detach {
        detach_front_end(&mountpoint)?;
    }
    // The server first, while nothing is open: it inherits no fd but its
    // end of the socket and confines itself before it reads a byte.
    let (sock, child) = match socket_path {
        None => {
            let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .context("making the socket to the server")?;
            let keep = theirs.as_raw_fd();
            let ids = sandbox::server::server_ids(options)?;
            (ours, Some(fork_server(keep, theirs, ids)?))
        }
        Some(path) => (connect_to(path)?, None),
    };
    // From here a stop signal waits for `supervise`, which unmounts: none
    // may kill the front end between its mount(2) and the hand-over.
    if child.is_some() {
        stop_signals().thread_block().context("blocking signals")?;
    }
    let served = mount_and_hand_over(source, &mountpoint, &host, sock, detach);
    let Some(child) = child else { return served };
    if let Err(e) = served {
        let _ = waitpid(child, None);
        return Err(e);
    }
    if detach {
        // Serving: the caller's pipe is released (the server did the same).
        quiet_stdio()?;
    }
    supervise(child, &mountpoint)
}

/// Fork the server: the child closes every fd but standard input, output
/// and error and `theirs`, and runs [`super::server::run`].
fn fork_server(keep: i32, theirs: OwnedFd, ids: Option<sandbox::Ids>) -> anyhow::Result<Pid> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse::<u32>().ok()));
    if threads != Some(1) {
        bail!("the front end must fork its server with one thread, but {threads:?} run");
    }
    // SAFETY: one thread (checked): the child owns a consistent copy of the
    // process and runs ordinary code, as after any fork of a single thread.
    match unsafe { nix::unistd::fork() }.context("forking the server")? {
        ForkResult::Parent { child } => {
            drop(theirs);
            Ok(child)
        }
        ForkResult::Child => {
            // SAFETY: close_range on numbers only; `keep` stays open.
            unsafe {
                if keep > 3 {
                    libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
                }
                libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
            }
            let code = match super::server::run(theirs, ids) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("fshost serve: server: {}", crate::report::message(&e));
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// Become the detached front end of a background `fshost serve`: fork;
/// the parent waits until the mount is served (or failed), shows what was
/// logged and exits; the child, in a session of its own, goes on with
/// standard input /dev/null and standard output and error a pipe to the
/// parent, which it and its server release once they serve
/// ([`quiet_stdio`]). Returns in the child only. One thread.
fn detach_front_end(mountpoint: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let (from_child, to_parent) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("making a pipe")?;
    // SAFETY: one thread (fork_server checks it again before its own
    // fork); the child goes on with ordinary code.
    match unsafe { nix::unistd::fork() }.context("forking the front end")? {
        ForkResult::Child => {
            drop(from_child);
            nix::unistd::setsid().context("starting a session")?;
            nix::unistd::dup2_stdin(&null).context("redirecting standard input")?;
            nix::unistd::dup2_stdout(&to_parent).context("redirecting standard output")?;
            nix::unistd::dup2_stderr(&to_parent).context("redirecting standard error")?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            drop(to_parent);
            let mut logged = String::new();
            let _ = std::fs::File::from(from_child).read_to_string(&mut logged);
            // Both ends are closed: the front end and its server serve (and
            // let go of the pipe), or they ended.
            eprint!("{logged}");
            if crate::mount::is_mounted(mountpoint) {
                std::process::exit(0);
            }
            let status = waitpid(child, None).context("waiting for the front end")?;
            let code = match status {
                WaitStatus::Exited(_, code) => code,
                _ => 1,
            };
            std::process::exit(if code == 0 { 1 } else { code })
        }
    }
}

/// Point standard output and error at standard input (/dev/null in a
/// detached front end): the caller stops waiting for the pipe.
fn quiet_stdio() -> anyhow::Result<()> {
    for fd in [1, 2] {
        // SAFETY: dup2 on fds this process owns.
        if unsafe { libc::dup2(0, fd) } < 0 {
            return Err(std::io::Error::last_os_error()).context("redirecting standard output and error");
        }
    }
    Ok(())
}

fn connect_to(path: &Path) -> anyhow::Result<OwnedFd> {
    let sock =
        socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).context("making a socket")?;
    let addr = UnixAddr::new(path).with_context(|| format!("socket path {}", path.display()))?;
    connect(sock.as_raw_fd(), &addr).with_context(|| {
        format!("connecting to the fshost server socket {} (is fshost.socket running?)", path.display())
    })?;
    Ok(sock)
}

/// Open the guest, the source and /dev/fuse, mount, send the three fds,
/// close ours and wait until the server serves (or unmount if it cannot).
fn mount_and_hand_over(
    source: &SourceArgs,
    mountpoint: &Path,
    host: &crate::cli::HostOptions,
    sock: OwnedFd,
    detach: bool,
) -> anyhow::Result<()> {
    let plugin = match source.plugin.as_deref() {
        Some(p) if !crate::detect::wanted(Some(p)) => SearchPath::from_env().resolve(p)?,
        // Detecting means running guests on the image here, in the front
        // end, which is not confined: service mode promises that only the
        // confined server parses the image.
        _ => bail!(
            "fshost serve needs --plugin NAME: detecting the filesystem would parse {} outside the confined server",
            source.source.display()
        ),
    };
    let guest = std::fs::File::open(&plugin).with_context(|| format!("opening guest {}", plugin.display()))?;
    let device = Device::open(&source.source, true)?;
    let fsname = source.source.canonicalize().unwrap_or_else(|_| source.source.clone());
    let fuse: OwnedFd = if nix::unistd::geteuid().is_root() {
        let fuse = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_FUSE)
            .with_context(|| format!("opening {DEV_FUSE}"))?;
        mount(&fsname, mountpoint, fuse.as_raw_fd(), host.allow_other, host.noexec)?;
        fuse.into()
    } else {
        fusermount(&fsname, mountpoint, host.allow_other, host.noexec)?
    };
    let request = Request {
        source: source.source.display().to_string(),
        plugin: plugin.display().to_string(),
        size: device.size(),
        sector_size: device.sector_size(),
        guest_options: host.guest.clone(),
        timeout_ms: source.guest_timeout_ms,
        memory_mib: source.guest_memory_mib,
        detach,
    };
    let sent = wire::send(sock.as_fd(), &request, [device.fd(), fuse.as_fd(), guest.as_fd()]);
    // The server holds them now: were we to keep /dev/fuse open, the
    // mount would outlive a server that died.
    drop((device, fuse, guest));
    let answer = sent.map_err(|e| crate::report::message(&e)).and_then(|()| wire::read_answer(sock.as_fd()));
    if let Err(e) = answer {
        let _ = unmount(mountpoint, MntFlags::MNT_DETACH, nix::unistd::geteuid().is_root());
        bail!("{} was not served: {e}", source.source.display());
    }
    tracing::info!("mounted {} at {}", source.source.display(), mountpoint.display());
    Ok(())
}

/// mount(2) of type fuse.fshost on the open /dev/fuse `fd`, owned by root
/// (only root may use it unless `allow_other`).
fn mount(fsname: &Path, mountpoint: &Path, fd: i32, allow_other: bool, noexec: bool) -> anyhow::Result<()> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY | MsFlags::MS_NOATIME;
    if noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    let mut data = format!("fd={fd},rootmode=40000,user_id=0,group_id=0,default_permissions");
    if allow_other {
        data.push_str(",allow_other");
    }
    let fstype = format!("fuse.{}", crate::mount::SUBTYPE);
    nix::mount::mount(Some(fsname), mountpoint, Some(fstype.as_str()), flags, Some(data.as_str()))
        .with_context(|| format!("mounting FUSE at {}", mountpoint.display()))
}

/// A mount by a user other than root, through the set-uid fusermount3
/// (libfuse's protocol: it opens /dev/fuse, mounts, and sends the fd back
/// over the socket named by `_FUSE_COMMFD`); the mounted /dev/fuse fd.
fn fusermount(fsname: &Path, mountpoint: &Path, allow_other: bool, noexec: bool) -> anyhow::Result<OwnedFd> {
    use std::io::IoSliceMut;
    use std::os::fd::{FromRawFd, RawFd};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::empty())
        .context("making the socket to fusermount3")?;
    nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    // fusermount3 splits on commas; a backslash escapes one.
    let name = fsname.display().to_string().replace('\\', "\\\\").replace(',', "\\,");
    let mut options =
        format!("ro,nosuid,nodev,noatime,default_permissions,subtype={},fsname={name}", crate::mount::SUBTYPE);
    if allow_other {
        options.push_str(",allow_other");
    }
    if noexec {
        options.push_str(",noexec");
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-o")
        .arg(&options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .status()
        .context("running fusermount3 (package fuse3)")?;
    drop(theirs);
    if !status.success() {
        bail!("fusermount3 could not mount {} ({status})", mountpoint.display());
    }
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receiving /dev/fuse from fusermount3")?;
    for c in msg.cmsgs().context("reading fusermount3's answer")? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS just installed this fd here; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    bail!("fusermount3 mounted {} but sent no /dev/fuse fd", mountpoint.display())
}

/// Unmount: umount2 as `root`, `fusermount3 -u` (lazily with
/// MNT_DETACH) otherwise. (`root` is asked once, before the front end's
/// filter, which has no geteuid.)
fn unmount(mountpoint: &Path, flags: MntFlags, root: bool) -> anyhow::Result<()> {
    if !root {
        let mut cmd = std::process::Command::new("fusermount3");
        cmd.arg("-u").arg("-q");
        if flags.contains(MntFlags::MNT_DETACH) {
            cmd.arg("-z");
        }
        let status = cmd.arg("--").arg(mountpoint).stdin(std::process::Stdio::null()).status()?;
        if !status.success() {
            tracing::warn!("fusermount3 -u {}: {status}", mountpoint.display());
            bail!("fusermount3 -u {}: {status}", mountpoint.display());
        }
        return Ok(());
    }
    let path = CString::new(mountpoint.as_os_str().as_bytes()).unwrap_or_default();
    let result = nix::mount::umount2(path.as_c_str(), flags | MntFlags::UMOUNT_NOFOLLOW);
    if let Err(e) = result {
        tracing::warn!("unmounting {}: {e}", mountpoint.display());
    }
    Ok(result?)
}

/// What [`supervise`] waits for: a stop signal, or the server's end.
fn stop_signals() -> SigSet {
    SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGCHLD])
}

/// The front end's life once the server serves: keep CAP_SYS_ADMIN alone,
/// unmount on SIGINT/SIGTERM/SIGHUP (the server then ends), and end with
/// the server, unmounting its dead mount if it died.
fn supervise(child: Pid, mountpoint: &Path) -> anyhow::Result<()> {
    let signals = stop_signals();
    let root = nix::unistd::geteuid().is_root();
    if root {
        sandbox::server::confine_front().context("confining the front end")?;
        tracing::info!("front end: serving through server {child}; CAP_SYS_ADMIN kept to unmount");
    } else {
        // Not root: nothing to drop, and unmounting runs fusermount3,
        // which no filter of ours could allow.
        tracing::info!("front end: serving through server {child}; unmounts with fusermount3 -u");
    }
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(status) => {
                // A server that died leaves a dead mount (ENOTCONN): clear it.
                let _ = unmount(mountpoint, MntFlags::MNT_DETACH, root);
                bail!("the server ended: {status:?}");
            }
            Err(e) => return Err(e).context("waiting for the server"),
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                tracing::info!("{sig:?}: unmounting {}", mountpoint.display());
                // A busy mount stays; the next signal tries again.
                let _ = unmount(mountpoint, MntFlags::empty(), root);
            }
            Err(e) => return Err(e).context("waiting for signals"),
        }
    }
}
