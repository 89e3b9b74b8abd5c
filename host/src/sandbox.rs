//! The process sandbox: what fshost gives up before it serves untrusted input.
//!
//! Setting a mount up needs privileges: opening the device and /dev/fuse,
//! reading the guest and the compiled-guest cache, mounting. Serving it
//! needs none: the host reads the device through the fd it holds, answers
//! the kernel on the /dev/fuse fd and runs the guest in memory. So every
//! command has a point, after setup and before the first untrusted request,
//! where it enters the sandbox, and a point before that, while the process
//! still has a single thread, where it prepares:
//!
//! - [`prepare`] resolves the user to become, starts the unmount helper
//!   (mounts only: [`unmounter`]) and empties the capability bounding,
//!   inheritable and ambient sets, which every later thread inherits;
//! - [`Prepared::enter`] sets no_new_privs; as root, clears the supplementary
//!   groups and switches to the unprivileged uid/gid (`--user`/`--group`,
//!   default nobody/nogroup) through glibc, which applies it to every thread;
//!   drops every remaining capability; checks each thread in /proc; restricts
//!   itself with Landlock handling all filesystem, network and scope rights
//!   with no rule (nothing can be opened, bound or signalled afterwards); and
//!   installs the seccomp allow-list of [`seccomp::HOST`] on every thread at
//!   once (TSYNC).
//!
//! Landlock before ABI v8 restricts the calling thread and the threads it
//! starts later (the FUSE workers), not those running already (the epoch
//! ticker, idle compiler threads); those are covered by the uid, the
//! capabilities and seccomp, which allow no `open` at all.
//!
//! `cp-out` is the one command that creates files: its writer process
//! ([`Profile::CpOut`], one thread, no guest) enters with a single Landlock
//! rule ([`Allow`]) and the seccomp rows marked for it; its reader, which
//! runs the guest, is sandboxed as an offline command (offline/extract.rs).

mod seccomp;
pub mod server;
pub mod unmounter;

use std::fmt;
use std::os::fd::BorrowedFd;
use std::path::Path;

use anyhow::{Context, bail};
use caps::CapSet;
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, PathBeneath, RestrictSelfAttr, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::unistd::{Gid, Group, Uid, User};

pub use unmounter::Unmounter;

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--no-sandbox`: keep every privilege (debugging).
    pub disabled: bool,
    /// `--user NAME|UID` (root only; default nobody).
    pub user: Option<String>,
    /// `--group NAME|GID` (root only; default the user's primary group, else nogroup).
    pub group: Option<String>,
}

/// Which command is sandboxed: it decides the seccomp rows and whether an
/// unmount helper is needed.
#[derive(Debug, Clone, Copy)]
pub enum Profile<'a> {
    Mount {
        mountpoint: &'a Path,
        /// A read-write mount: the device is written (pwrite64, fdatasync).
        writable: bool,
    },
    Offline,
    /// `cp-out`'s writer: creates files beneath one directory (given to
    /// [`Prepared::enter_allowing`]), runs no guest and has one thread. As
    /// root it keeps uid 0 unless `--user`/`--group` name another identity:
    /// the copy belongs to the caller, as cp(1)'s would. (cp-out's reader,
    /// which runs the guest, is an [`Profile::Offline`] command.)
    CpOut,
}

/// The uid and gid to switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Default identity when started as root.
const NOBODY: Ids = Ids { uid: 65534, gid: 65534 };

/// The sandbox, prepared and not yet entered.
pub struct Prepared {
    /// `None`: disabled.
    plan: Option<Plan>,
}

struct Plan {
    ids: Option<Ids>,
    serving: seccomp::Serving,
    unmounter: Option<Unmounter>,
    bounding_dropped: bool,
    /// Started as root and staying uid 0 (cp-out without `--user`).
    root_kept: bool,
}

/// What is in force after [`Prepared::enter`]; `Display` is the `-v` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ids: Option<Ids>,
    /// Root stayed uid 0, without any capability (cp-out).
    pub root_kept: bool,
    pub bounding_dropped: bool,
    pub landlock: String,
    pub seccomp_syscalls: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sandbox: no_new_privs, ")?;
        match self.ids {
            Some(Ids { uid, gid }) => write!(f, "uid {uid}/gid {gid}, ")?,
            None if self.root_kept => write!(f, "uid 0 kept (the caller's, for the files it creates), ")?,
            None => write!(f, "uid unchanged (not started as root), ")?,
        }
        let bounding = if self.bounding_dropped { "" } else { " (bounding set kept: no CAP_SETPCAP)" };
        write!(
            f,
            "capabilities dropped{bounding}, {}, seccomp allow-list of {} syscalls (others: EPERM)",
            self.landlock, self.seccomp_syscalls
        )
    }
}

/// Entered: the report and, for a mount, the helper that can still unmount.
pub struct Sandboxed {
    pub report: Option<Report>,
    pub unmounter: Option<Unmounter>,
}

/// Run while the process has a single thread: resolve the identity, start
/// the unmount helper for a mount, empty the bounding, inheritable and
/// ambient capability sets that later threads inherit.
pub fn prepare(options: &Options, profile: Profile<'_>) -> anyhow::Result<Prepared> {
    if options.disabled {
        tracing::warn!("sandbox disabled (--no-sandbox): fshost keeps every privilege it was started with");
        return Ok(Prepared { plan: None });
    }
    let threads = thread_count()?;
    if threads != 1 {
        bail!("the sandbox must be prepared before any thread starts, but {threads} threads run");
    }
    prepare_unchecked(options, profile)
}

fn prepare_unchecked(options: &Options, profile: Profile<'_>) -> anyhow::Result<Prepared> {
    let root = nix::unistd::geteuid().is_root();
    let keep_root = matches!(profile, Profile::CpOut) && options.user.is_none() && options.group.is_none();
    let ids = if keep_root { target_ids_kept(options)? } else { target_ids(options)? };
    let (serving, unmounter) = match profile {
        Profile::Mount { mountpoint, writable } => {
            let serving = if writable { seccomp::Serving::MountRw } else { seccomp::Serving::Mount };
            (serving, Some(Unmounter::start(mountpoint)?))
        }
        Profile::Offline => (seccomp::Serving::Offline, None),
        Profile::CpOut => (seccomp::Serving::CpOut, None),
    };
    let bounding_dropped = match drop_bounding_set() {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
        Err(e) => return Err(e).context("dropping the capability bounding set"),
    };
    caps::clear(None, CapSet::Ambient).map_err(caps_error)?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_error)?;
    if !root {
        // Not root: a mount goes through fusermount3, nothing here needs a
        // capability the process may have been given.
        caps::clear(None, CapSet::Effective).map_err(caps_error)?;
        caps::clear(None, CapSet::Permitted).map_err(caps_error)?;
    }
    let root_kept = root && ids.is_none();
    Ok(Prepared { plan: Some(Plan { ids, serving, unmounter, bounding_dropped, root_kept }) })
}

impl Prepared {
    /// The identity [`Prepared::enter`] will switch to, if any: what files
    /// created before the sandbox point should be owned by.
    pub fn ids(&self) -> Option<Ids> {
        self.plan.as_ref().and_then(|p| p.ids)
    }

    /// Give up everything not needed to serve: see the module docs. Fails
    /// closed: an error here must end the command.
    pub fn enter(self) -> anyhow::Result<Sandboxed> {
        self.enter_allowing(None)
    }

    /// As [`Prepared::enter`], with one Landlock rule for cp-out's writer.
    pub fn enter_allowing(self, rule: Option<Allow<'_>>) -> anyhow::Result<Sandboxed> {
        let Some(plan) = self.plan else {
            return Ok(Sandboxed { report: None, unmounter: None });
        };
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
        }
        if let Some(ids) = plan.ids {
            become_ids(ids)?;
        }
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable, CapSet::Ambient] {
            caps::clear(None, set).map_err(caps_error)?;
        }
        check_threads(plan.ids, plan.bounding_dropped)?;
        let landlock = restrict_landlock(rule)?;
        let rows = || seccomp::host_rows(plan.serving);
        let filters = seccomp::compile(rows())?;
        tracing::debug!("seccomp allows: {}", rows().map(|r| r.name).collect::<Vec<_>>().join(" "));
        seccomp::apply_all_threads(&filters)?;
        let report = Report {
            ids: plan.ids,
            root_kept: plan.root_kept,
            bounding_dropped: plan.bounding_dropped,
            landlock,
            seccomp_syscalls: seccomp::count(rows()),
        };
        Ok(Sandboxed { report: Some(report), unmounter: plan.unmounter })
    }
}

fn caps_error(e: caps::errors::CapsError) -> anyhow::Error {
    anyhow::anyhow!("capabilities: {e}")
}

/// Drop every capability from this thread's bounding set (up to the
/// kernel's last one, known to this binary or not). EPERM without
/// CAP_SETPCAP.
fn drop_bounding_set() -> std::io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        match unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } {
            1 => {}
            // Not in the set (errno is left as it was: not to be read).
            0 => continue,
            // EINVAL: past the kernel's last capability.
            _ => break,
        }
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The identity to switch to, or `None` when not started as root.
fn target_ids(options: &Options) -> anyhow::Result<Option<Ids>> {
    if !nix::unistd::geteuid().is_root() {
        if options.user.is_some() || options.group.is_some() {
            bail!("--user and --group need fshost to be started as root");
        }
        return Ok(None);
    }
    let (uid, primary) = match &options.user {
        Some(spec) => lookup_user(spec)?,
        None => match User::from_name("nobody") {
            Ok(Some(u)) => (u.uid.as_raw(), Some(u.gid.as_raw())),
            _ => (NOBODY.uid, None),
        },
    };
    let gid = match &options.group {
        Some(spec) => lookup_group(spec)?,
        None => primary.unwrap_or(match Group::from_name("nogroup") {
            Ok(Some(g)) => g.gid.as_raw(),
            _ => NOBODY.gid,
        }),
    };
    if uid == 0 || gid == 0 {
        bail!("refusing to run as uid {uid}/gid {gid}: that keeps root's files; use --no-sandbox to debug");
    }
    Ok(Some(Ids { uid, gid }))
}

/// cp-out's identity: the caller's own unless `--user`/`--group` name
/// another (as root only; checked by [`target_ids`]).
fn target_ids_kept(options: &Options) -> anyhow::Result<Option<Ids>> {
    if options.user.is_some() || options.group.is_some() {
        return target_ids(options);
    }
    Ok(None)
}

/// A user name or number: its uid and, when known, its primary group.
fn lookup_user(spec: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let found = match spec.parse::<u32>() {
        Ok(uid) => {
            User::from_uid(Uid::from_raw(uid)).ok().flatten().map_or((uid, None), |u| (uid, Some(u.gid.as_raw())))
        }
        Err(_) => match User::from_name(spec).with_context(|| format!("looking up user {spec}"))? {
            Some(u) => (u.uid.as_raw(), Some(u.gid.as_raw())),
            None => bail!("--user {spec}: no such user"),
        },
    };
    Ok(found)
}

/// A group name or number.
fn lookup_group(spec: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = spec.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(spec).with_context(|| format!("looking up group {spec}"))? {
        Some(g) => Ok(g.gid.as_raw()),
        None => bail!("--group {spec}: no such group"),
    }
}

/// Switch every thread to `ids`, with no supplementary groups. The libc
/// wrappers (nix calls them) apply the change to all threads of the process
/// (glibc's setxid broadcast); the raw syscalls would change only this one.
fn become_ids(ids: Ids) -> anyhow::Result<()> {
    let (uid, gid) = (Uid::from_raw(ids.uid), Gid::from_raw(ids.gid));
    nix::unistd::setgroups(&[]).context("clearing supplementary groups")?;
    nix::unistd::setresgid(gid, gid, gid).with_context(|| format!("switching to gid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).with_context(|| format!("switching to uid {uid}"))?;
    let (r, g) = (nix::unistd::getresuid()?, nix::unistd::getresgid()?);
    if [r.real, r.effective, r.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        bail!("still running as uid {r:?}/gid {g:?} after switching to {uid}/{gid}");
    }
    Ok(())
}

/// How many threads the process has now.
fn thread_count() -> anyhow::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    field(&status, "Threads:").and_then(|v| v.trim().parse().ok()).context("no Threads: line in /proc/self/status")
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(name))
}

/// Every thread must now run as `ids` with no capability it could use
/// (effective, permitted, ambient); the bounding and inheritable sets
/// only matter for execve, which no_new_privs and seccomp rule out, and are
/// checked on this thread. Read from /proc before Landlock closes it.
fn check_threads(ids: Option<Ids>, bounding_dropped: bool) -> anyhow::Result<()> {
    let zero = "0000000000000000";
    let me = nix::unistd::gettid().as_raw().to_string();
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let entry = entry?;
        let status = std::fs::read_to_string(entry.path().join("status"))?;
        let tid = entry.file_name().to_string_lossy().into_owned();
        let mut must_be_zero = vec!["CapEff:", "CapPrm:", "CapAmb:"];
        if tid == me {
            must_be_zero.push("CapInh:");
            if bounding_dropped {
                must_be_zero.push("CapBnd:");
            }
        }
        for name in must_be_zero {
            let value = field(&status, name).map(str::trim);
            if value != Some(zero) {
                bail!("thread {tid} still has {name} {value:?} after dropping capabilities");
            }
        }
        if let Some(Ids { uid, gid }) = ids {
            for (name, want) in [("Uid:", uid), ("Gid:", gid)] {
                let got: Vec<&str> = field(&status, name).map(|v| v.split_whitespace().collect()).unwrap_or_default();
                if got.len() != 4 || got.iter().any(|v| *v != want.to_string()) {
                    bail!("thread {tid} has {name} {got:?}, not {want}");
                }
            }
        }
    }
    Ok(())
}

/// The one filesystem rule cp-out's writer keeps.
#[derive(Debug, Clone, Copy)]
pub enum Allow<'a> {
    /// DEST is this directory: create the copy beneath it
    /// (`creating_rights`).
    CreateBeneath(BorrowedFd<'a>),
    /// DEST is one file in this directory, created before the sandbox
    /// point: remove it if it cannot be copied whole (the rule allows
    /// removing files beneath the directory; the writer's code names DEST
    /// alone).
    RemoveIn(BorrowedFd<'a>),
}

/// What cp-out may do beneath its destination directory: create
/// directories, files, symlinks and fifos, write and size the files it
/// created, open the directories and fifos it created again (to set their
/// mode and times through an fd), remove a file it copied short, and
/// hard-link between its own directories (REFER; Landlock refuses a link
/// whose source is outside the rule). Never execute, never make a device
/// node or socket.
fn creating_rights() -> landlock::BitFlags<AccessFs> {
    AccessFs::MakeDir
        | AccessFs::MakeReg
        | AccessFs::MakeSym
        | AccessFs::MakeFifo
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::ReadDir
        | AccessFs::ReadFile
        | AccessFs::RemoveFile
        | AccessFs::Refer
}

/// Landlock handling every access right this binary knows, with no rule
/// (or, for cp-out's writer, the one `rule` says): no file
/// can be opened, created, executed or removed, no TCP port bound or
/// connected, no signal sent and no abstract socket reached outside the
/// domain. Best effort: the kernel enforces what its ABI supports; the
/// description says which.
fn restrict_landlock(rule: Option<Allow<'_>>) -> anyhow::Result<String> {
    let abi = ABI::V10;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?;
    match rule {
        Some(Allow::CreateBeneath(dir)) => ruleset = ruleset.add_rule(PathBeneath::new(dir, creating_rights()))?,
        Some(Allow::RemoveIn(dir)) => ruleset = ruleset.add_rule(PathBeneath::new(dir, AccessFs::RemoveFile))?,
        None => {}
    }
    let status = ruleset.all_threads(true)?.restrict_self().context("entering the Landlock domain")?;
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        // Best effort: every right the running kernel supports is handled;
        // newer ones (and all_threads before v8) are not available.
        RulesetStatus::PartiallyEnforced => "all this kernel supports",
        RulesetStatus::NotEnforced => "not enforced",
    };
    let threads = if status.all_threads { "all threads" } else { "this thread and those it starts" };
    Ok(match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => {
            format!("landlock ABI v{} ({enforced}, {threads})", effective_abi as i32)
        }
        LandlockStatus::NotEnabled => "landlock not enabled in this kernel".into(),
        LandlockStatus::NotImplemented => "landlock not built into this kernel".into(),
    })
}

#[cfg(test)]
mod tests {
    //! The layers bite: each probe runs in a fresh copy of this test binary
    //! (re-executed with [`PROBE`] set, so the sandbox never touches the test
    //! runner), tries what the sandbox must forbid, and prints one line per
    //! attempt; the parent checks the lines and that the child was not
    //! killed.

    use std::ffi::CString;
    use std::process::Command;

    use super::*;

    /// Set in the re-executed child: run the probe instead of skipping it.
    const PROBE: &str = "FSHOST_SANDBOX_PROBE";

    /// Run the ignored probe test `name` in a child; its stdout.
    fn run_probe(name: &str) -> String {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--ignored", "--exact", &format!("sandbox::tests::{name}"), "--nocapture", "--test-threads=1"])
            .env(PROBE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "probe {name} failed ({}):\n{stdout}\n{stderr}", out.status);
        assert!(stdout.contains("PROBE DONE"), "probe {name} did not finish:\n{stdout}\n{stderr}");
        stdout
    }

    /// `label: ok` or `label: ERRNO-NAME` for a libc-style result.
    fn outcome(label: &str, failed: bool) -> String {
        if failed {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let name = match errno {
                libc::EACCES => "EACCES".to_string(),
                libc::EPERM => "EPERM".to_string(),
                libc::ENOSYS => "ENOSYS".to_string(),
                libc::ELOOP => "ELOOP".to_string(),
                libc::ENOTDIR => "ENOTDIR".to_string(),
                n => format!("errno {n}"),
            };
            format!("{label}: {name}")
        } else {
            format!("{label}: ok")
        }
    }

    fn try_open(path: &str) -> bool {
        let c = CString::new(path).unwrap();
        // SAFETY: a NUL-terminated path; the fd, if any, is closed at once.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
        }
        fd < 0
    }

    fn try_create(path: &str) -> bool {
        let c = CString::new(path).unwrap();
        // SAFETY: as in try_open.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o600) };
        if fd >= 0 {
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
        }
        fd < 0
    }

    fn exe() -> String {
        std::env::current_exe().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    #[ignore = "run by landlock_denies_every_open in a child process"]
    fn probe_landlock() {
        if std::env::var_os(PROBE).is_none() {
            return;
        }
        let scratch = std::env::temp_dir().join(format!("fshost-sandbox-probe-{}", std::process::id()));
        let scratch = scratch.to_string_lossy().into_owned();
        println!("{}", outcome("open before", try_open(&exe())));
        println!("{}", restrict_landlock(None).unwrap());
        println!("{}", outcome("open after", try_open(&exe())));
        println!("{}", outcome("open /proc after", try_open("/proc/self/status")));
        println!("{}", outcome("create after", try_create(&scratch)));
        println!("PROBE DONE");
    }

    #[test]
    fn landlock_denies_every_open() {
        let out = run_probe("probe_landlock");
        assert!(out.contains("open before: ok"), "{out}");
        assert!(out.contains("landlock ABI v"), "{out}");
        // Landlock answers EACCES (seccomp is not installed in this probe).
        assert!(out.contains("open after: EACCES"), "{out}");
        assert!(out.contains("open /proc after: EACCES"), "{out}");
        assert!(out.contains("create after: EACCES"), "{out}");
    }

    #[test]
    #[ignore = "run by the whole_sandbox_denies_and_does_not_kill in a child process"]
    fn probe_whole_sandbox() {
        if std::env::var_os(PROBE).is_none() {
            return;
        }
        let exe = exe();
        let jail = prepare_unchecked(&Options::default(), Profile::Offline).unwrap();
        let report = jail.enter().unwrap().report.unwrap();
        println!("{report}");
        println!("{}", outcome("open", try_open(&exe)));
        // SAFETY: plain syscalls with integer arguments; results are only
        // compared with -1.
        unsafe {
            println!("{}", outcome("socket", libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) < 0));
            println!("{}", outcome("ptrace", libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0));
            // Each of these would succeed without seccomp: signal 0 to
            // ourselves, a setresuid that changes nothing, a TCP socket.
            println!("{}", outcome("kill", libc::kill(libc::getpid(), 0) < 0));
            println!("{}", outcome("setresuid", libc::syscall(libc::SYS_setresuid, -1, -1, -1) < 0));
            let size = 1 << 16;
            let rw = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            println!("{}", outcome("mmap rw", rw == libc::MAP_FAILED));
            let rx = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            println!("{}", outcome("mmap exec", rx == libc::MAP_FAILED));
            println!("{}", outcome("mprotect exec", libc::mprotect(rw, size, libc::PROT_READ | libc::PROT_EXEC) < 0));
        }
        let spawned = Command::new(&exe).arg("--list").output();
        println!("spawn: {}", if spawned.is_ok() { "ok" } else { "failed" });
        println!("PROBE DONE");
    }

    #[test]
    fn whole_sandbox_denies_and_does_not_kill() {
        let out = run_probe("probe_whole_sandbox");
        assert!(out.contains("sandbox: no_new_privs"), "{out}");
        if nix::unistd::geteuid().is_root() {
            assert!(out.contains("uid 65534/gid 65534"), "{out}");
        }
        // seccomp answers first (EPERM), before Landlock could (EACCES).
        for denied in ["open", "socket", "ptrace", "kill", "setresuid", "mmap exec", "mprotect exec"] {
            assert!(out.contains(&format!("\n{denied}: EPERM")), "{denied} was not denied with EPERM:\n{out}");
        }
        assert!(out.contains("mmap rw: ok"), "{out}");
        assert!(out.contains("spawn: failed"), "{out}");
    }

    #[test]
    #[ignore = "run by cp_out_writer_creates_only_beneath_dest_and_never_by_path_metadata in a child process"]
    fn probe_cp_out_writer() {
        use std::os::fd::{AsFd, AsRawFd, OwnedFd};
        use std::os::unix::fs::PermissionsExt;
        if std::env::var_os(PROBE).is_none() {
            return;
        }
        let scratch = std::env::temp_dir().join(format!("fshost-writer-probe-{}", std::process::id()));
        let dest = scratch.join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        println!("scratch {}", scratch.display());
        // The test harness has a second thread, so root cannot stay uid 0
        // here (its capabilities are per thread; the real writer has one
        // thread): become nobody, and let DAC allow everything the probe
        // tries, so that what denies is Landlock or seccomp.
        let mut options = Options::default();
        if nix::unistd::geteuid().is_root() {
            options.user = Some("65534".into());
            options.group = Some("65534".into());
            std::os::unix::fs::chown(&dest, Some(65534), Some(65534)).unwrap();
        }
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dir: OwnedFd = std::fs::File::open(&dest).unwrap().into();
        let d = dir.as_raw_fd();
        let jail = prepare_unchecked(&options, Profile::CpOut).unwrap();
        let report = jail.enter_allowing(Some(Allow::CreateBeneath(dir.as_fd()))).unwrap().report.unwrap();
        println!("{report}");
        let c = |s: &str| CString::new(s).unwrap();
        let create = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let outside = format!("{}/outside", scratch.display());
        // SAFETY: plain syscalls on NUL-terminated paths and fds this probe
        // owns; results are only compared with -1 (fds leak until exit).
        unsafe {
            println!("{}", outcome("mkdirat inside", libc::mkdirat(d, c("sub").as_ptr(), 0o700) < 0));
            let f = libc::openat(d, c("f").as_ptr(), create, 0o600);
            println!("{}", outcome("create inside", f < 0));
            println!("{}", outcome("fchmod by fd", libc::fchmod(f, 0o644) < 0));
            println!(
                "{}",
                outcome("create outside", libc::openat(libc::AT_FDCWD, c(&outside).as_ptr(), create, 0o600) < 0)
            );
            println!("{}", outcome("create by ..", libc::openat(d, c("../escape").as_ptr(), create, 0o600) < 0));
            println!("{}", outcome("open following", libc::openat(d, c("f").as_ptr(), libc::O_RDONLY) < 0));
            let to_scratch = c(&scratch.display().to_string());
            println!("{}", outcome("symlinkat inside", libc::symlinkat(to_scratch.as_ptr(), d, c("s").as_ptr()) < 0));
            let nofollow = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            println!("{}", outcome("open the symlink", libc::openat(d, c("s").as_ptr(), nofollow) < 0));
            println!(
                "{}",
                outcome("create through the symlink", libc::openat(d, c("s/x").as_ptr(), create, 0o600) < 0)
            );
            println!("{}", outcome("fchmodat", libc::syscall(libc::SYS_fchmodat, d, c("..").as_ptr(), 0o777) < 0));
            let null = std::ptr::null::<libc::timespec>();
            println!("{}", outcome("utimensat by path", libc::utimensat(d, c("..").as_ptr(), null, 0) < 0));
            let dev = libc::makedev(1, 3);
            println!("{}", outcome("mknod char", libc::mknodat(d, c("c").as_ptr(), libc::S_IFCHR | 0o600, dev) < 0));
            println!("{}", outcome("mknod fifo", libc::mknodat(d, c("p").as_ptr(), libc::S_IFIFO | 0o600, 0) < 0));
            let follow = libc::AT_SYMLINK_FOLLOW;
            println!(
                "{}",
                outcome("linkat following", libc::linkat(d, c("s").as_ptr(), d, c("l").as_ptr(), follow) < 0)
            );
            println!("{}", outcome("linkat", libc::linkat(d, c("f").as_ptr(), d, c("sub/f2").as_ptr(), 0) < 0));
            println!("{}", outcome("rmdir", libc::unlinkat(d, c("sub").as_ptr(), libc::AT_REMOVEDIR) < 0));
            println!("{}", outcome("unlink file", libc::unlinkat(d, c("sub/f2").as_ptr(), 0) < 0));
        }
        println!("PROBE DONE");
    }

    #[test]
    fn cp_out_writer_creates_only_beneath_dest_and_never_by_path_metadata() {
        let out = run_probe("probe_cp_out_writer");
        if let Some(scratch) = out.lines().find_map(|l| l.strip_prefix("scratch ")) {
            assert!(!std::path::Path::new(scratch).join("outside").exists(), "{out}");
            assert!(!std::path::Path::new(scratch).join("escape").exists(), "{out}");
            assert!(!std::path::Path::new(scratch).join("x").exists(), "{out}");
            let _ = std::fs::remove_dir_all(scratch);
        }
        let lines: Vec<&str> = out.lines().collect();
        let says = |l: &str| assert!(lines.contains(&l), "missing {l:?}:\n{out}");
        for ok in [
            "mkdirat inside",
            "create inside",
            "fchmod by fd",
            "symlinkat inside",
            "mknod fifo",
            "linkat",
            "unlink file",
        ] {
            says(&format!("{ok}: ok"));
        }
        // Landlock: nothing outside DEST, not through `..`, not through a
        // symlink to outside.
        for denied in ["create outside", "create by ..", "create through the symlink"] {
            says(&format!("{denied}: EACCES"));
        }
        // seccomp: no open that follows, no metadata by path, no device
        // node, no link through a symlink, no rmdir.
        for denied in ["open following", "fchmodat", "utimensat by path", "mknod char", "linkat following", "rmdir"] {
            says(&format!("{denied}: EPERM"));
        }
        // O_NOFOLLOW|O_DIRECTORY: the symlink itself, not the directory it names.
        says("open the symlink: ENOTDIR");
    }

    #[test]
    fn report_names_every_layer() {
        let r = Report {
            ids: Some(NOBODY),
            root_kept: false,
            bounding_dropped: true,
            landlock: "landlock ABI v7 (full, all threads)".into(),
            seccomp_syscalls: 40,
        };
        assert_eq!(
            r.to_string(),
            "sandbox: no_new_privs, uid 65534/gid 65534, capabilities dropped, landlock ABI v7 (full, all threads), \
             seccomp allow-list of 40 syscalls (others: EPERM)"
        );
    }
}
