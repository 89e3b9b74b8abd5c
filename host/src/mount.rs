//! `fshost mount`: mount over FUSE and serve until unmounted.
//!
//! Without `--foreground` the command re-executes itself in the foreground
//! as a detached child and returns once the mount is visible, so scripts
//! can use the mountpoint as soon as `fshost mount` exits.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fuser::{Config, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::SourceArgs;
use crate::fuse::FuseFs;

/// The filesystem type the kernel shows (`fuse.fshost`).
pub const SUBTYPE: &str = "fshost";

/// Set in the environment of the detached child of a background mount.
const DETACHED: &str = "FSHOST_DETACHED";

pub fn run(source: &SourceArgs, mountpoint: &Path, foreground: bool) -> anyhow::Result<()> {
    let mountpoint = mountpoint.canonicalize().with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    if !foreground {
        return daemonize(&mountpoint);
    }
    // Block the stop signals in every thread (threads inherit the mask);
    // one thread waits for them and unmounts, which ends the session.
    let signals = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]);
    signals.thread_block().context("blocking signals")?;

    let (volume, allow_other) = crate::cli::mount_volume(source)?;
    let mut options = vec![
        MountOption::FSName(
            source.source.canonicalize().unwrap_or_else(|_| source.source.clone()).display().to_string(),
        ),
        MountOption::Subtype(SUBTYPE.into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if allow_other {
        options.push(MountOption::CUSTOM("allow_other".into()));
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(threads);
    config.clone_fd = true;
    let mut session = Session::new(FuseFs::new(volume), &mountpoint, &config)
        .with_context(|| format!("mounting FUSE at {}", mountpoint.display()))?;
    tracing::info!("mounted {} at {}", source.source.display(), mountpoint.display());
    if std::env::var_os(DETACHED).is_some() {
        // The parent reported success and stopped reading our stderr; later
        // log lines would go to a closed pipe. Foreground mode keeps them.
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        nix::unistd::dup2_stderr(&null).context("redirecting stderr")?;
    }

    let mut unmounter = session.unmount_callable();
    std::thread::Builder::new().name("fshost-signals".into()).spawn(move || {
        if let Ok(sig) = signals.wait() {
            tracing::info!("{sig:?}: unmounting");
            if let Err(e) = unmounter.unmount() {
                tracing::warn!("unmount after {sig:?}: {e}");
            }
        }
    })?;
    session.run().context("serving FUSE")?;
    tracing::info!("unmounted {}", mountpoint.display());
    Ok(())
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
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if is_mounted(mountpoint) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("mount failed ({status}):\n{}", err.trim_end());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    bail!("{} did not appear as mounted within 30 s", mountpoint.display())
}
