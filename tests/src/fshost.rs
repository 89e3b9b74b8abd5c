//! Finding and running the `fshost` binary and the built guests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::scratch::ScratchDir;

/// The workspace's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// The `fshost` binary: `$FSHOST_BIN`, or the release build in target/.
pub fn fshost_bin() -> PathBuf {
    std::env::var_os("FSHOST_BIN").map(PathBuf::from).unwrap_or_else(|| target_dir().join("release/fshost"))
}

/// A built guest component by name ("hello", "ext4"): target/guests/NAME.wasm,
/// where `cargo xtask build` puts them.
pub fn guest(name: &str) -> PathBuf {
    target_dir().join("guests").join(format!("{name}.wasm"))
}

/// Run an offline command: `fshost CMD --plugin PLUGIN SOURCE ARGS...`.
pub fn offline(cmd: &str, plugin: &Path, source: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
    let bin = fshost_bin();
    Command::new(&bin)
        .arg(cmd)
        .arg("--plugin")
        .arg(plugin)
        .arg(source)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))
}

/// A foreground `fshost mount` at a fresh mountpoint, unmounted (and the
/// process reaped) on drop. Its stderr goes to a log file tests can read.
pub struct FshostMount {
    child: Child,
    mountpoint: ScratchDir,
    log: PathBuf,
    _log_dir: ScratchDir,
}

impl FshostMount {
    /// Mount `source` with guest `plugin` and `-o options`.
    pub fn mount(plugin: &Path, source: &Path, options: &[&str]) -> anyhow::Result<FshostMount> {
        Self::mount_with(plugin, source, options, &[])
    }

    /// As [`FshostMount::mount`], with extra command-line arguments.
    pub fn mount_with(plugin: &Path, source: &Path, options: &[&str], extra: &[&str]) -> anyhow::Result<FshostMount> {
        let bin = fshost_bin();
        let mountpoint = ScratchDir::new("fshost-mnt")?;
        let log_dir = ScratchDir::new("fshost-log")?;
        let log = log_dir.path().join("stderr.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&bin);
        command.arg("mount").arg("--foreground").arg("--plugin").arg(plugin).arg(source).arg(mountpoint.path());
        if !options.is_empty() {
            command.arg("-o").arg(options.join(","));
        }
        command.args(extra).env("RUST_LOG", "info");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut mount = FshostMount { child, mountpoint, log, _log_dir: log_dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mount_point(mount.mountpoint.path())? {
            if let Some(status) = mount.child.try_wait()? {
                bail!("{} exited ({status}) before mounting {}:\n{}", bin.display(), source.display(), mount.log());
            }
            if Instant::now() > deadline {
                bail!("{} did not mount {} within 30 s:\n{}", bin.display(), source.display(), mount.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(mount)
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// The process id of the serving fshost.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What fshost wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the serving process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait (at most `timeout`) for the serving process to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("fshost did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `umount` the mountpoint from outside, as a user would, and wait for
    /// the serving process to exit; its status.
    pub fn unmount(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("umount").arg(self.path()).status().context("running umount")?;
        if !status.success() {
            bail!("umount {} failed: {status}", self.path().display());
        }
        self.wait_exit(Duration::from_secs(10))
    }
}

/// A mount point sits on a different device than its parent.
pub fn is_mount_point(path: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent().context("a mountpoint has a parent")?;
    Ok(std::fs::metadata(path)?.dev() != std::fs::metadata(parent)?.dev())
}

impl Drop for FshostMount {
    fn drop(&mut self) {
        if is_mount_point(self.path()).unwrap_or(true) {
            let ok = Command::new("umount").arg(self.path()).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(self.path()).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                eprintln!("warning: fshost did not exit after unmount; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
