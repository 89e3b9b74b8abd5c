//! `fshost mount`: mount over FUSE and serve until unmounted.
//!
//! Without `--foreground` the command re-executes itself in the foreground
//! as a detached child and returns once the mount is visible, so scripts
//! can use the mountpoint as soon as `fshost mount` exits.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fuser::{Config, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::SourceArgs;
use crate::fuse::FuseFs;
use crate::sandbox;

/// The filesystem type the kernel shows (`fuse.fshost`).
pub const SUBTYPE: &str = "fshost";

/// Set in the environment of the detached child of a background mount.
const DETACHED: &str = "FSHOST_DETACHED";

pub fn run(source: &SourceArgs, mountpoint: &Path, foreground: bool, sandbox: &sandbox::Options) -> anyhow::Result<()> {
    let mountpoint = mountpoint.canonicalize().with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    if crate::cli::split_options(&source.options)?.allow_other {
        crate::fuse_conf::check_allow_other(Path::new(crate::fuse_conf::FUSE_CONF))?;
    }
    if !foreground {
        return daemonize(&mountpoint);
    }
    // Block the stop signals in every thread (threads inherit the mask);
    // one thread waits for them and unmounts, which ends the session.
    let signals = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]);
    signals.thread_block().context("blocking signals")?;
    // Still one thread: start the unmount helper, drop the capability sets
    // that threads inherit.
    let writable = crate::cli::wants_rw(source)?;
    let jail = sandbox::prepare(sandbox, sandbox::Profile::Mount { mountpoint: &mountpoint, writable })?;

    let (mut volume, host_options) = crate::cli::mount_volume(source)?;
    volume.set_cache_sizes(host_options.cache_sizes);
    let allow_other = host_options.allow_other;
    let mut options = vec![
        MountOption::FSName(
            source.source.canonicalize().unwrap_or_else(|_| source.source.clone()).display().to_string(),
        ),
        MountOption::Subtype(SUBTYPE.into()),
        if host_options.rw { MountOption::RW } else { MountOption::RO },
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if allow_other {
        options.push(MountOption::CUSTOM("allow_other".into()));
    }
    if host_options.noexec {
        options.push(MountOption::NoExec);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(threads);
    // Workers share the session's /dev/fuse fd. clone_fd would open
    // /dev/fuse again for each worker inside `run()`, after the sandbox has
    // closed the filesystem; the input queue is shared by cloned fds anyway.
    config.clone_fd = false;
    let mut session =
        Session::new(FuseFs::new(volume), &mountpoint, &config).map_err(|e| mount_error(e, &mountpoint))?;
    tracing::info!("mounted {} at {}", source.source.display(), mountpoint.display());
    // A detached child's stderr is its parent's pipe, read until we close it.
    let null = match std::env::var_os(DETACHED) {
        Some(_) => Some(std::fs::OpenOptions::new().write(true).open("/dev/null")?),
        None => None,
    };

    // Everything is open and mounted: from here on only the guest, the
    // device fd and the /dev/fuse fd are used.
    let jailed = jail.enter().context("entering the sandbox")?;
    if let Some(report) = &jailed.report {
        tracing::info!("{report}");
    }
    if let Some(null) = null {
        // The parent shows what we logged so far and returns; later lines
        // would go to a closed pipe. Foreground mode keeps them.
        nix::unistd::dup2_stderr(&null).context("redirecting stderr")?;
    }
    // Unsandboxed, fuser unmounts itself; sandboxed, only the helper can.
    let helper = jailed.unmounter.map(Arc::new);
    let unmount: Box<dyn FnMut() -> std::io::Result<()> + Send> = match &helper {
        Some(h) => {
            let h = h.clone();
            Box::new(move || h.unmount())
        }
        None => {
            let mut fuser = session.unmount_callable();
            Box::new(move || fuser.unmount())
        }
    };
    std::thread::Builder::new().name("fshost-signals".into()).spawn(move || wait_and_unmount(&signals, unmount))?;
    // When the session ends (an unmount, or SIGTERM through the helper),
    // `run` calls the adapter's `destroy`: a read-write guest unmounts
    // cleanly and the device is flushed, still inside the sandbox.
    let served = session.run().context("serving FUSE");
    if let Some(h) = helper {
        h.finish();
    }
    served?;
    tracing::info!("unmounted {}", mountpoint.display());
    Ok(())
}

/// The device every FUSE mount is served through.
const DEV_FUSE: &str = "/dev/fuse";

/// A failed FUSE mount, with the cause named when it is /dev/fuse: fuser
/// opens it first, as root or not (as non-root, fusermount3 only makes the
/// mount(2) call afterwards), so a /dev/fuse this user cannot open
/// read-write fails every mount with a bare "Permission denied" that names
/// neither the file nor what would fix it.
fn mount_error(e: std::io::Error, mountpoint: &Path) -> anyhow::Error {
    let what = format!("mounting FUSE at {}", mountpoint.display());
    match dev_fuse_problem(e.kind()) {
        Some(why) => anyhow::Error::new(e).context(format!("{what}: {why}")),
        None => anyhow::Error::new(e).context(what),
    }
}

/// Why this process cannot open /dev/fuse read-write, when it fails the
/// same way (`kind`) the mount did; `None` when it can.
fn dev_fuse_problem(kind: std::io::ErrorKind) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // The same open fuser makes; the fd, if any, is closed at once, unused.
    let err = std::fs::OpenOptions::new().read(true).write(true).open(DEV_FUSE).err()?;
    if err.kind() != kind {
        return None;
    }
    if err.kind() == std::io::ErrorKind::NotFound {
        return Some(format!("there is no {DEV_FUSE} (load the fuse module; a container needs the device passed in)"));
    }
    let meta = std::fs::metadata(DEV_FUSE).ok()?;
    let user = nix::unistd::User::from_uid(meta.uid().into()).ok().flatten().map_or(meta.uid().to_string(), |u| u.name);
    let group =
        nix::unistd::Group::from_gid(meta.gid().into()).ok().flatten().map_or(meta.gid().to_string(), |g| g.name);
    let me = nix::unistd::geteuid();
    Some(format!(
        "{DEV_FUSE} is mode {:04o} owned by {user}:{group}, which uid {me} cannot open read-write; a mount as a \
         user other than root needs read-write access to {DEV_FUSE} (distributions ship it 0666: as root, \
         `chmod 0666 {DEV_FUSE}`), or run the mount as root",
        meta.mode() & 0o7777
    ))
}

/// Wait for a stop signal and unmount, which ends the session. A busy
/// filesystem stays mounted; the next signal tries again.
fn wait_and_unmount(signals: &SigSet, mut unmount: impl FnMut() -> std::io::Result<()>) {
    while let Ok(sig) = signals.wait() {
        tracing::info!("{sig:?}: unmounting");
        match unmount() {
            Ok(()) => return,
            Err(e) => tracing::warn!("unmount after {sig:?}: {e}"),
        }
    }
}

/// Whether `mountpoint` is a FUSE mount now (fuser's own mount code shows
/// the type as plain `fuse`; through fusermount it is `fuse.fshost`).
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = mountpoint.to_string_lossy();
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-");
        fields.get(4).is_some_and(|p| *p == want)
            && sep.and_then(|s| fields.get(s + 1)).is_some_and(|t| *t == "fuse" || *t == format!("fuse.{SUBTYPE}"))
    })
}

fn daemonize(mountpoint: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding our own executable")?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let mut cmd = Command::new(exe);
    cmd.args(&args).env(DETACHED, "1").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid().map(drop).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("starting the mount process")?;
    // The child closes its stderr once it serves (mounted and sandboxed);
    // until then what it logs is ours to show.
    let (done, logged) = std::sync::mpsc::channel();
    if let Some(mut e) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut err = String::new();
            let _ = e.read_to_string(&mut err);
            let _ = done.send(err);
        });
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(status) = child.try_wait()? {
            let err = logged.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
            bail!("mount failed ({status}):\n{}", err.trim_end());
        }
        if let Ok(err) = logged.try_recv() {
            if is_mounted(mountpoint) {
                eprint!("{err}");
                return Ok(());
            }
            // The log also closes when the child exits, which we may see
            // before `try_wait` does: give it a moment to be reaped.
            let closed = Instant::now();
            while closed.elapsed() < Duration::from_secs(5) {
                if let Some(status) = child.try_wait()? {
                    bail!("mount failed ({status}):\n{}", err.trim_end());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprint!("{err}");
            bail!("the mount process closed its log but {} is not mounted", mountpoint.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    bail!("{} did not appear as mounted within 30 s", mountpoint.display())
}
