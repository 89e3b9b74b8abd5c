//! The server: confined before it reads anything, then handed its fds.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fuser::{Config, Session, SessionACL};

use super::wire::{self, Fds, Request};
use crate::device::Device;
use crate::fuse::FuseFs;
use crate::plugin::{GuestOptions, Limits, Plugin};
use crate::sandbox;
use crate::volume::Volume;

/// The largest guest a server reads (hello-py, with CPython inside, is 18 MB).
const MAX_GUEST: u64 = 256 << 20;

/// Serve one mount on the request that arrives on `sock`, as `ids` (from
/// [`sandbox::server::server_ids`]). The first thing it does is
/// [`sandbox::server::confine_server`]; it returns when the
/// mount ends (an unmount), or at once if the front end closes `sock`
/// without a request.
pub fn run(sock: OwnedFd, ids: Option<sandbox::Ids>) -> anyhow::Result<()> {
    let report = sandbox::server::confine_server(ids).context("confining the server")?;
    tracing::info!("server confined before it read anything: {report}");
    let Some((request, fds)) = wire::recv(sock.as_fd())? else {
        tracing::debug!("the front end closed the socket without a request");
        return Ok(());
    };
    let session = match start(&request, fds) {
        Ok(session) => session,
        Err(e) => {
            wire::answer(sock.as_fd(), &Err(crate::report::message(&e)));
            return Err(e);
        }
    };
    wire::answer(sock.as_fd(), &Ok(()));
    drop(sock);
    if request.detach {
        // Standard input is /dev/null (the detached front end's); dup2 is
        // in the serving list, opening is not.
        for fd in [1, 2] {
            // SAFETY: dup2 on fds this process owns.
            unsafe { libc::dup2(0, fd) };
        }
    }
    tracing::info!("serving {}", request.source);
    session.run().context("serving FUSE")?;
    tracing::info!("unmounted {}", request.source);
    Ok(())
}

/// Load the guest, drop the set-up syscalls, mount the guest (its first
/// look at the image) and answer the kernel's FUSE_INIT.
fn start(request: &Request, fds: Fds) -> anyhow::Result<Session<FuseFs>> {
    let Fds { device, fuse, guest } = fds;
    let wasm = read_guest(guest, &request.plugin)?;
    let device =
        Arc::new(Device::from_fd(device, PathBuf::from(&request.source), request.size, request.sector_size, true));
    let limits = Limits {
        memory: request.memory_mib.saturating_mul(1 << 20),
        call_timeout: Duration::from_millis(request.timeout_ms.max(10)),
        ..Limits::default()
    };
    let options = GuestOptions { read_only: true, options: request.guest_options.clone() };
    let path = Path::new(&request.plugin);
    // No compiled-guest cache: the server can open no file, and it never
    // runs native code it was handed.
    let (plugin, stats) = Plugin::load_bytes(&wasm, path, device.clone(), limits, options, None)?;
    drop(wasm);
    tracing::info!("guest {} compiled in {:.1} ms", path.display(), stats.millis);
    let serving = sandbox::server::tighten().context("installing the serving filter")?;
    tracing::info!("seccomp: the serving list ({serving} syscalls) is on every thread; the guest reads the image now");
    let volume = Volume::mount(plugin, device)
        .with_context(|| format!("mounting {} with {}", request.source, path.display()))?;
    let mut config = Config::default();
    config.n_threads = Some(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8));
    config.clone_fd = false;
    // The kernel enforces who may use the mount (user_id= of the front
    // end's mount, allow_other): the server runs as another uid.
    Session::from_fd(FuseFs::new(volume), fuse, SessionACL::All, config).context("answering the kernel's FUSE_INIT")
}

/// The guest's bytes from its fd, closed afterwards.
fn read_guest(fd: OwnedFd, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut wasm = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_GUEST + 1)
        .read_to_end(&mut wasm)
        .with_context(|| format!("reading guest {name}"))?;
    if wasm.len() as u64 > MAX_GUEST {
        bail!("guest {name} is larger than {} MiB", MAX_GUEST >> 20);
    }
    Ok(wasm)
}

/// `fshost serve-fds`: the server a socket unit starts for one connection
/// (systemd's Accept=yes: the connection is fd 3 with LISTEN_FDS=1, or
/// standard input with StandardInput=socket).
pub fn from_socket_activation() -> anyhow::Result<()> {
    let listen = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<u32>().ok());
    let pid_ok = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let fd = if listen == Some(1) && pid_ok { 3 } else { 0 };
    // SAFETY: an fd systemd passed us (or standard input), which nothing
    // else in this process owns or uses.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let kind = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::SockType)
        .with_context(|| format!("fd {fd} is not a socket: serve-fds runs from a socket unit (fshost.socket)"))?;
    if kind != nix::sys::socket::SockType::SeqPacket {
        bail!("fd {fd} is a {kind:?} socket; fshost.socket listens with ListenSequentialPacket=");
    }
    let ids = sandbox::server::server_ids(&sandbox::Options::default())?;
    run(sock, ids)
}
