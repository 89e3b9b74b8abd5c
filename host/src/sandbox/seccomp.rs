//! The seccomp allow-list, declared as data: one row per syscall the host
//! makes once it serves untrusted input, with the cheap argument checks that
//! narrow it, and which commands need it.
//!
//! The list was taken from `strace -f` of mounts that exercised everything
//! (listing, reading, xattrs, SEEK_DATA/HOLE, statfs, guest traps and
//! re-instantiation, SIGTERM, an unmount from outside) and of the offline
//! commands; see ARCHITECTURE.md, "Sandbox".
//!
//! Anything else fails with EPERM instead of killing the process. Both deny
//! the call; the difference is what an *unexpected* caller sees. fuser and
//! glibc have fallback paths we never want to succeed but must survive: after
//! an unmount from outside, fuser tries `umount2` and then spawns
//! `fusermount -u`; killing there would turn a clean exit into a crash. An
//! EPERM is an error these paths already handle.
//!
//! `clone3` fails with ENOSYS from a second filter: glibc then falls back to
//! `clone`, whose flags are in a register where the filter can check that
//! only threads (`CLONE_THREAD`) are created, never processes.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Which commands make a syscall after entering the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Every sandboxed command: reading the device, running the guest, writing output.
    All,
    /// Only `mount`: FUSE workers, the signal thread, the unmount helper.
    Mount,
    /// Only a read-write `mount`: writing the device and making it durable.
    MountRw,
    /// Only `cp-out`'s writer: creating files beneath DEST (Landlock bounds where).
    CpOut,
}

/// The sandboxed commands, by what they do once inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// `mount`: serves FUSE.
    Mount,
    /// `mount -o rw`: serves FUSE and writes the device.
    MountRw,
    /// `ls`, `stat`, `cat`, `info`: write to stdout.
    Offline,
    /// `cp-out`'s writer: creates files beneath DEST.
    CpOut,
}

/// One condition on an argument; all conditions of a row must hold. All
/// but `Null` compare the low 32 bits: every argument checked is an `int`
/// (whose upper register half is undefined) or flags that fit in them.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    /// `arg[i] == value`.
    Eq(u8, u64),
    /// `arg[i] & mask == value`.
    Masked(u8, u64, u64),
    /// `arg[i]` is this process's id (signals only to ourselves).
    OwnPid(u8),
    /// `arg[i]` is a null pointer (all 64 bits).
    Null(u8),
}

/// One allowed syscall.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub conds: &'static [Cond],
    pub need: Need,
}

const fn all(name: &'static str, nr: libc::c_long) -> Allow {
    Allow { name, nr, conds: &[], need: Need::All }
}

const fn mount(name: &'static str, nr: libc::c_long) -> Allow {
    Allow { name, nr, conds: &[], need: Need::Mount }
}

const fn when(name: &'static str, nr: libc::c_long, need: Need, conds: &'static [Cond]) -> Allow {
    Allow { name, nr, conds, need }
}

const fn cp_out(name: &'static str, nr: libc::c_long) -> Allow {
    Allow { name, nr, conds: &[], need: Need::CpOut }
}

const PROT_EXEC: u64 = libc::PROT_EXEC as u64;
const CLONE_THREAD: u64 = libc::CLONE_THREAD as u64;
const O_CREAT: u64 = libc::O_CREAT as u64;
const O_EXCL: u64 = libc::O_EXCL as u64;
const O_NOFOLLOW: u64 = libc::O_NOFOLLOW as u64;
const S_IFMT: u64 = libc::S_IFMT as u64;
const S_IFIFO: u64 = libc::S_IFIFO as u64;
const AT_SYMLINK_FOLLOW: u64 = libc::AT_SYMLINK_FOLLOW as u64;
const AT_EMPTY_PATH: u64 = libc::AT_EMPTY_PATH as u64;

/// The allow-list of the host (mount and offline commands).
pub const HOST: &[Allow] = &[
    // Device reads and output. Only fds opened before the sandbox exist.
    all("read", libc::SYS_read),
    all("pread64", libc::SYS_pread64),
    all("write", libc::SYS_write),
    all("writev", libc::SYS_writev),
    all("close", libc::SYS_close),
    // Memory: the allocator, wasmtime's instance memories, tables and
    // stacks (re-created when a trapped guest is instantiated again). Never
    // executable: the compiled guest was mapped before the sandbox, so no new
    // code can appear (W^X for the rest of the process's life).
    when("mmap", libc::SYS_mmap, Need::All, &[Cond::Masked(2, PROT_EXEC, 0)]),
    when("mprotect", libc::SYS_mprotect, Need::All, &[Cond::Masked(2, PROT_EXEC, 0)]),
    all("munmap", libc::SYS_munmap),
    all("mremap", libc::SYS_mremap),
    all("madvise", libc::SYS_madvise),
    all("brk", libc::SYS_brk),
    // Locks, time, and the wasmtime trap path (signal handler on an
    // alternate stack, then return from it).
    all("futex", libc::SYS_futex),
    all("sched_yield", libc::SYS_sched_yield),
    all("clock_gettime", libc::SYS_clock_gettime),
    all("clock_nanosleep", libc::SYS_clock_nanosleep),
    all("nanosleep", libc::SYS_nanosleep),
    all("rt_sigreturn", libc::SYS_rt_sigreturn),
    // A sleep interrupted by a signal (SIGCHLD from the unmount helper) is
    // resumed through restart_syscall; std asserts that sleeps only fail
    // with EINTR.
    all("restart_syscall", libc::SYS_restart_syscall),
    all("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    all("sigaltstack", libc::SYS_sigaltstack),
    all("getpid", libc::SYS_getpid),
    all("gettid", libc::SYS_gettid),
    all("getrandom", libc::SYS_getrandom),
    // The ambient Tokio runtime of WASI's synchronous bindings (started
    // before the sandbox): its workers wait on their epoll fd.
    all("epoll_pwait", libc::SYS_epoll_pwait),
    // glibc's abort() and raise() signal only this process.
    when("tgkill", libc::SYS_tgkill, Need::All, &[Cond::OwnPid(0)]),
    all("exit", libc::SYS_exit),
    all("exit_group", libc::SYS_exit_group),
    // What a new thread does to itself when it starts: glibc registers its
    // rseq area and robust-futex list, Rust's std names it and asks
    // pthread_getattr_np (sched_getaffinity) for its stack. Every command
    // needs them, not only those that create threads after the sandbox: the
    // thread, not its creator, makes these calls, at its first time slice,
    // which can come after `enter` has put the filter on it (TSYNC covers a
    // thread from the moment clone returns). The epoch ticker and WASI's
    // Tokio workers are created just before the offline commands enter the
    // sandbox; without rseq here, glibc aborted them ("Fatal glibc error:
    // rseq registration failed"). As root the uid switch hid the race:
    // glibc's setxid broadcast waits until every thread has started. The
    // calls act on the calling thread only and grant nothing; creating a
    // thread (`clone`) stays a mount's alone.
    all("rseq", libc::SYS_rseq),
    all("set_robust_list", libc::SYS_set_robust_list),
    when("prctl", libc::SYS_prctl, Need::All, &[Cond::Eq(0, libc::PR_SET_NAME as u64)]),
    all("sched_getaffinity", libc::SYS_sched_getaffinity),
    // Mount: FUSE worker threads are started after the sandbox (threads
    // only, never processes). clone3 is allowed here only so that the other
    // filter's ENOSYS is the answer: of two filters that both fail a call,
    // the one installed last decides the errno.
    when("clone", libc::SYS_clone, Need::Mount, &[Cond::Masked(0, CLONE_THREAD, CLONE_THREAD)]),
    mount("clone3", libc::SYS_clone3),
    // Mount: the signal thread waits for SIGINT/SIGTERM/SIGHUP; fuser polls
    // /dev/fuse to see whether it is still mounted; the unmount helper is
    // reaped at exit.
    mount("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    mount("ppoll", libc::SYS_ppoll),
    mount("wait4", libc::SYS_wait4),
    // Mount, detached: stderr is pointed at /dev/null (opened before).
    mount("dup3", libc::SYS_dup3),
    // A read-write mount writes file data and the guest's metadata into
    // the device (opened before the sandbox) and flushes it (fsync,
    // syncfs, the clean unmount, the guest's `flush`). Taken from
    // `strace -f` of a read-write mount that wrote, truncated, punched,
    // fsynced and unmounted.
    when("pwrite64", libc::SYS_pwrite64, Need::MountRw, &[]),
    when("fdatasync", libc::SYS_fdatasync, Need::MountRw, &[]),
    // cp-out's writer (offline/extract/writer.rs: one thread, no guest):
    // create the copy one name at a time, relative to the fd of the
    // directory it goes in; Landlock allows these only beneath DEST. It
    // reaps the reader at the end. Every open refuses to follow a symlink, and every
    // open that creates refuses an existing name (a symlink included):
    // either the new object or an object the copy opens again without
    // following. A name created earlier in the copy is never followed.
    when(
        "openat",
        libc::SYS_openat,
        Need::CpOut,
        &[Cond::Masked(2, O_CREAT | O_EXCL | O_NOFOLLOW, O_CREAT | O_EXCL | O_NOFOLLOW)],
    ),
    when("openat", libc::SYS_openat, Need::CpOut, &[Cond::Masked(2, O_CREAT | O_NOFOLLOW, O_NOFOLLOW)]),
    cp_out("mkdirat", libc::SYS_mkdirat),
    cp_out("symlinkat", libc::SYS_symlinkat),
    // Fifos only: device nodes are never created.
    when("mknodat", libc::SYS_mknodat, Need::CpOut, &[Cond::Masked(2, S_IFMT, S_IFIFO)]),
    // Hard links to a name, never through a symlink or to an fd.
    when("linkat", libc::SYS_linkat, Need::CpOut, &[Cond::Masked(4, AT_SYMLINK_FOLLOW | AT_EMPTY_PATH, 0)]),
    // A file copied short is removed; never a directory.
    when("unlinkat", libc::SYS_unlinkat, Need::CpOut, &[Cond::Eq(2, 0)]),
    cp_out("pwrite64", libc::SYS_pwrite64),
    cp_out("ftruncate", libc::SYS_ftruncate),
    // Metadata only through an fd the copy holds: Landlock does not govern
    // chmod or utimes, so no form that takes a path (`fchmodat`, a
    // `utimensat` with a path, which could name `..`) is allowed.
    cp_out("fchmod", libc::SYS_fchmod),
    when("utimensat", libc::SYS_utimensat, Need::CpOut, &[Cond::Null(1)]),
    cp_out("wait4", libc::SYS_wait4),
];

/// Syscalls x86_64 has besides the generic ones (glibc uses them there).
#[cfg(target_arch = "x86_64")]
pub const HOST_ARCH: &[Allow] =
    &[all("epoll_wait", libc::SYS_epoll_wait), mount("poll", libc::SYS_poll), mount("dup2", libc::SYS_dup2)];
#[cfg(not(target_arch = "x86_64"))]
pub const HOST_ARCH: &[Allow] = &[];

/// The allow-list of the unmount helper: wait for a request, unmount, answer.
pub const UNMOUNTER: &[Allow] = &[
    all("read", libc::SYS_read),
    all("write", libc::SYS_write),
    all("umount2", libc::SYS_umount2),
    all("exit_group", libc::SYS_exit_group),
];

/// The rows of the host's tables that `serving` needs.
pub fn host_rows(serving: Serving) -> impl Iterator<Item = &'static Allow> + Clone {
    HOST.iter().chain(HOST_ARCH).filter(move |a| match a.need {
        Need::All => true,
        Need::Mount => matches!(serving, Serving::Mount | Serving::MountRw),
        Need::MountRw => serving == Serving::MountRw,
        Need::CpOut => serving == Serving::CpOut,
    })
}

/// How many distinct syscalls `rows` allows.
pub fn count<'a>(rows: impl Iterator<Item = &'a Allow>) -> usize {
    rows.map(|a| a.nr).collect::<std::collections::BTreeSet<_>>().len()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp is not supported on {0}")]
    Arch(&'static str),
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

fn arch() -> Result<TargetArch, Error> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| Error::Arch(std::env::consts::ARCH))
}

fn condition(c: Cond, own_pid: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    let (arg, op, value) = match c {
        Cond::Eq(arg, value) => (arg, SeccompCmpOp::Eq, value),
        Cond::Masked(arg, mask, value) => (arg, SeccompCmpOp::MaskedEq(mask), value),
        Cond::OwnPid(arg) => (arg, SeccompCmpOp::Eq, own_pid),
        Cond::Null(arg) => return SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0),
    };
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// Compile `rows` into the filter that makes `clone3` fail with ENOSYS and
/// the allow-list filter (anything else: EPERM), in the order they must be
/// installed: installing one needs prctl, which the allow-list denies.
pub fn compile<'a>(rows: impl Iterator<Item = &'a Allow>) -> Result<[BpfProgram; 2], Error> {
    let arch = arch()?;
    let own_pid = u64::from(std::process::id());
    let mut map: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for row in rows {
        let entry = map.entry(row.nr).or_insert_with(|| Some(Vec::new()));
        if row.conds.is_empty() {
            // Unconditional: no rule list (an empty list matches always).
            *entry = None;
        } else if let Some(rules) = entry {
            let conds = row.conds.iter().map(|c| condition(*c, own_pid)).collect::<Result<Vec<_>, _>>()?;
            rules.push(SeccompRule::new(conds)?);
        }
    }
    let rules = map.into_iter().map(|(nr, rules)| (nr, rules.unwrap_or_default())).collect();
    let allow = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok([clone3.try_into()?, allow.try_into()?])
}

/// Install `filters` on every thread of the process (TSYNC), which also sets
/// no_new_privs on each.
pub fn apply_all_threads(filters: &[BpfProgram]) -> Result<(), Error> {
    for f in filters {
        seccompiler::apply_filter_all_threads(f)?;
    }
    Ok(())
}

/// Install `filters` on the calling thread only (the single-threaded helper).
pub fn apply_this_thread(filters: &[BpfProgram]) -> Result<(), Error> {
    for f in filters {
        seccompiler::apply_filter(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_compile_and_have_no_duplicate_unconditional_rows() {
        for serving in [Serving::Mount, Serving::MountRw, Serving::Offline, Serving::CpOut] {
            compile(host_rows(serving)).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for row in host_rows(serving).filter(|r| r.conds.is_empty()) {
                assert!(seen.insert(row.nr), "{} is listed twice", row.name);
            }
        }
        compile(UNMOUNTER.iter()).unwrap();
        assert!(count(host_rows(Serving::Offline)) < count(host_rows(Serving::Mount)));
        assert!(count(host_rows(Serving::Offline)) < count(host_rows(Serving::CpOut)));
        assert_eq!(count(host_rows(Serving::MountRw)), count(host_rows(Serving::Mount)) + 2);
    }

    #[test]
    fn only_a_read_write_mount_writes_the_device() {
        let writes = |serving| {
            host_rows(serving)
                .any(|r| r.nr == libc::SYS_fdatasync || (r.nr == libc::SYS_pwrite64 && r.need != Need::CpOut))
        };
        assert!(writes(Serving::MountRw));
        for serving in [Serving::Mount, Serving::Offline, Serving::CpOut] {
            assert!(!writes(serving), "{serving:?}");
        }
    }

    #[test]
    fn every_profile_lets_a_thread_start_but_only_a_mount_creates_one() {
        // Threads created just before the sandbox point run these on
        // themselves afterwards; a failed rseq makes glibc abort.
        let start = [libc::SYS_rseq, libc::SYS_set_robust_list, libc::SYS_prctl, libc::SYS_sched_getaffinity];
        for serving in [Serving::Mount, Serving::MountRw, Serving::Offline, Serving::CpOut] {
            for nr in start {
                assert!(host_rows(serving).any(|r| r.nr == nr), "syscall {nr} missing ({serving:?})");
            }
            let creates = matches!(serving, Serving::Mount | Serving::MountRw);
            assert_eq!(host_rows(serving).any(|r| r.nr == libc::SYS_clone || r.nr == libc::SYS_clone3), creates);
        }
    }

    #[test]
    fn only_cp_out_creates_files_and_never_by_a_path_that_sets_metadata() {
        let creating = [libc::SYS_openat, libc::SYS_mkdirat, libc::SYS_symlinkat, libc::SYS_linkat, libc::SYS_mknodat];
        for serving in [Serving::Mount, Serving::MountRw, Serving::Offline] {
            assert!(!host_rows(serving).any(|r| creating.contains(&r.nr) || r.nr == libc::SYS_unlinkat));
        }
        let cp_out: Vec<_> = host_rows(Serving::CpOut).collect();
        for nr in creating {
            assert!(cp_out.iter().any(|r| r.nr == nr), "cp-out cannot make syscall {nr}");
        }
        for nr in [libc::SYS_fchmodat, libc::SYS_fchownat, libc::SYS_renameat2, libc::SYS_execve, libc::SYS_execveat] {
            assert!(!cp_out.iter().any(|r| r.nr == nr), "cp-out allows syscall {nr}");
        }
        // Every openat row demands O_NOFOLLOW.
        for row in cp_out.iter().filter(|r| r.nr == libc::SYS_openat) {
            assert!(row.conds.iter().any(|c| matches!(c, Cond::Masked(2, m, v) if m & v & O_NOFOLLOW != 0)));
        }
    }
}
