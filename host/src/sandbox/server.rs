//! Service mode's two confinements (`fshost serve`, serve.rs).
//!
//! - [`confine_server`]: the first thing the server process does, while it
//!   has one thread and holds nothing but its socket to the front end: no
//!   capabilities, the unprivileged ids, Landlock with no rule (on its one
//!   thread, so on every thread it will ever start, whatever the ABI), and a
//!   seccomp allow-list on that thread, which every later thread inherits.
//!   That first list ([`SETUP`] on top of a mount's serving list) also lets
//!   it receive the fds, compile the guest and map its code; [`tighten`]
//!   then stacks the plain serving list on every thread (no executable
//!   mappings, no `recvmsg`, no new fds, no more filters) before the guest
//!   reads a byte of the image.
//! - [`confine_front`]: the privileged front end, once the server serves,
//!   keeps only CAP_SYS_ADMIN (to unmount on SIGTERM) and the few syscalls
//!   of [`FRONT`]: it waits for a signal or the server's end.

use anyhow::Context;
use caps::CapSet;

use super::seccomp::{self, Allow, Cond, Need};
use super::{Ids, Options, Report};

const fn row(name: &'static str, nr: libc::c_long) -> Allow {
    Allow { name, nr, conds: &[], need: Need::All }
}

/// What the server needs before its guest serves, beyond a mount's serving
/// list: receive the fds (`recvmsg`), build the engine and its runtime
/// (WASI's Tokio: `epoll_create1`, `eventfd2`, `epoll_ctl`), map the
/// compiled guest executable (`mmap`/`mprotect` with PROT_EXEC), start the
/// compiler's and the runtime's threads (`clone` is in the serving list),
/// and stack the second filter (`seccomp`, which sets no_new_privs again).
/// Taken from `strace -f` of `fshost serve`.
pub const SETUP: &[Allow] = &[
    row("recvmsg", libc::SYS_recvmsg),
    row("rt_sigaction", libc::SYS_rt_sigaction),
    row("mmap", libc::SYS_mmap),
    row("mprotect", libc::SYS_mprotect),
    row("epoll_create1", libc::SYS_epoll_create1),
    row("epoll_ctl", libc::SYS_epoll_ctl),
    row("eventfd2", libc::SYS_eventfd2),
    // The guest's memory images (Component::initialize_copy_on_write_image).
    row("memfd_create", libc::SYS_memfd_create),
    row("ftruncate", libc::SYS_ftruncate),
    Allow { name: "fcntl", nr: libc::SYS_fcntl, conds: &[Cond::Eq(1, libc::F_ADD_SEALS as u64)], need: Need::All },
    // Tokio duplicates its epoll fd (try_clone).
    Allow { name: "fcntl", nr: libc::SYS_fcntl, conds: &[Cond::Eq(1, libc::F_DUPFD_CLOEXEC as u64)], need: Need::All },
    row("seccomp", libc::SYS_seccomp),
    Allow {
        name: "prctl",
        nr: libc::SYS_prctl,
        conds: &[Cond::Eq(0, libc::PR_SET_NO_NEW_PRIVS as u64)],
        need: Need::All,
    },
];

/// The front end once the server serves: wait for a stop signal or the
/// server's end, unmount, log a line, exit.
pub const FRONT: &[Allow] = &[
    row("read", libc::SYS_read),
    row("write", libc::SYS_write),
    row("writev", libc::SYS_writev),
    row("close", libc::SYS_close),
    row("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    row("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    row("rt_sigreturn", libc::SYS_rt_sigreturn),
    row("restart_syscall", libc::SYS_restart_syscall),
    row("wait4", libc::SYS_wait4),
    row("umount2", libc::SYS_umount2),
    row("brk", libc::SYS_brk),
    Allow { name: "mmap", nr: libc::SYS_mmap, conds: &[Cond::Masked(2, libc::PROT_EXEC as u64, 0)], need: Need::All },
    row("munmap", libc::SYS_munmap),
    row("mremap", libc::SYS_mremap),
    row("madvise", libc::SYS_madvise),
    row("futex", libc::SYS_futex),
    row("clock_gettime", libc::SYS_clock_gettime),
    row("sigaltstack", libc::SYS_sigaltstack),
    row("getpid", libc::SYS_getpid),
    row("gettid", libc::SYS_gettid),
    Allow { name: "tgkill", nr: libc::SYS_tgkill, conds: &[Cond::OwnPid(0)], need: Need::All },
    row("exit", libc::SYS_exit),
    row("exit_group", libc::SYS_exit_group),
];

/// The server's serving list (what [`tighten`] installs).
fn serving() -> impl Iterator<Item = &'static Allow> + Clone {
    seccomp::host_rows(seccomp::Serving::Mount)
}

/// How many syscalls the server may make while it sets up, and once it serves.
pub fn counts() -> (usize, usize) {
    (seccomp::count(serving().chain(SETUP)), seccomp::count(serving()))
}

/// The ids the server will switch to (`--user`/`--group`, default nobody,
/// when started as root; `None` otherwise). Resolved by whoever starts the
/// server, so that the server's first act is [`confine_server`], not a
/// user database lookup (which may load NSS modules).
pub fn server_ids(options: &Options) -> anyhow::Result<Option<Ids>> {
    super::target_ids(options)
}

/// Confine the server process before it reads anything: see the module
/// docs. Must run with one thread. Fails closed.
pub fn confine_server(ids: Option<Ids>) -> anyhow::Result<Report> {
    let threads = super::thread_count()?;
    if threads != 1 {
        anyhow::bail!("the server must confine itself with one thread, but {threads} run");
    }
    let bounding_dropped = match super::drop_bounding_set() {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
        Err(e) => return Err(e).context("dropping the capability bounding set"),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    if let Some(ids) = ids {
        super::become_ids(ids)?;
    }
    // Only the sets that hold something: a server started without
    // privilege (a systemd DynamicUser) then needs no capset at all, and
    // its unit can deny it.
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable, CapSet::Ambient] {
        if !caps::read(None, set).map_err(super::caps_error)?.is_empty() {
            caps::clear(None, set).map_err(super::caps_error)?;
        }
    }
    // No core dumps, no ptrace by another process of the same uid.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("clearing the dumpable flag");
    }
    super::check_threads(ids, bounding_dropped)?;
    let landlock = super::restrict_landlock(None)?;
    let filters = seccomp::compile(serving().chain(SETUP))?;
    seccomp::apply_this_thread(&filters)?;
    Ok(Report { ids, root_kept: false, bounding_dropped, landlock, seccomp_syscalls: counts().0 })
}

/// Stack the serving list on every thread: from here on no executable
/// mapping, no `recvmsg`, no new fd and no further filter. Returns how many
/// syscalls it allows.
pub fn tighten() -> anyhow::Result<usize> {
    let filters = seccomp::compile(serving())?;
    seccomp::apply_all_threads(&filters)?;
    Ok(counts().1)
}

/// The front end, once the server serves: CAP_SYS_ADMIN alone (effective
/// and permitted), every other set empty, no_new_privs, [`FRONT`]. One
/// thread.
pub fn confine_front() -> anyhow::Result<()> {
    use caps::{Capability, CapsHashSet};
    if let Err(e) = super::drop_bounding_set()
        && e.raw_os_error() != Some(libc::EPERM)
    {
        return Err(e).context("dropping the capability bounding set");
    }
    caps::clear(None, CapSet::Ambient).map_err(super::caps_error)?;
    caps::clear(None, CapSet::Inheritable).map_err(super::caps_error)?;
    let keep = CapsHashSet::from([Capability::CAP_SYS_ADMIN]);
    caps::set(None, CapSet::Effective, &keep).map_err(super::caps_error)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(super::caps_error)?;
    let filters = seccomp::compile(FRONT.iter())?;
    seccomp::apply_this_thread(&filters)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `label: ok` or `label: ERRNO` for a libc-style result.
    fn outcome(label: &str, failed: bool) -> String {
        if !failed {
            return format!("{label}: ok\n");
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let name = match errno {
            libc::EPERM => "EPERM".to_string(),
            libc::EACCES => "EACCES".to_string(),
            libc::EBADF => "EBADF".to_string(),
            n => format!("errno {n}"),
        };
        format!("{label}: {name}\n")
    }

    /// What the forked child of this test, confined as a server is, may do
    /// before and after [`tighten`]: one line per attempt.
    fn probe() -> String {
        let mut out = String::new();
        match confine_server(None) {
            Ok(report) => out.push_str(&format!("{report}\n")),
            Err(e) => return format!("confine failed: {e}\n"),
        }
        let exec_map = || {
            // SAFETY: an anonymous mapping, unmapped at once when it succeeds.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p != libc::MAP_FAILED {
                    libc::munmap(p, 4096);
                }
                p == libc::MAP_FAILED
            }
        };
        // SAFETY: plain syscalls on constant, NUL-terminated strings and
        // invalid fds; results are only compared with -1.
        unsafe {
            let status = c"/proc/self/status".as_ptr();
            out.push_str(&outcome("open", libc::open(status, libc::O_RDONLY | libc::O_CLOEXEC) < 0));
            out.push_str(&outcome("socket", libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) < 0));
            out.push_str(&outcome("exec map while setting up", exec_map()));
            out.push_str(&outcome("recvmsg while setting up", libc::recvmsg(-1, std::ptr::null_mut(), 0) < 0));
            match tighten() {
                Ok(n) => out.push_str(&format!("tightened to {n}\n")),
                Err(e) => return format!("{out}tighten failed: {e}\n"),
            }
            out.push_str(&outcome("exec map while serving", exec_map()));
            out.push_str(&outcome("recvmsg while serving", libc::recvmsg(-1, std::ptr::null_mut(), 0) < 0));
            out.push_str(&outcome("memfd_create while serving", libc::memfd_create(c"x".as_ptr(), 0) < 0));
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            out.push_str(&outcome("execve", libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) < 0));
        }
        out
    }

    #[test]
    fn a_confined_server_opens_nothing_and_maps_no_code_once_it_serves() {
        let mut fds = [0; 2];
        // SAFETY: a two-int array for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child makes syscalls, allocates (glibc's fork leaves
        // malloc usable) and leaves with _exit; it touches no lock another
        // test thread could hold but the allocator's.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let out = probe();
            // SAFETY: writes a live buffer to our pipe, then ends the child
            // without running the test harness's exit path.
            unsafe {
                libc::write(fds[1], out.as_ptr().cast(), out.len());
                libc::_exit(0);
            }
        }
        // SAFETY: we own the write end; closing it lets the read below end.
        unsafe { libc::close(fds[1]) };
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a live buffer from our pipe.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            text.extend_from_slice(&buf[..n as usize]);
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe {
            libc::close(fds[0]);
            libc::waitpid(pid, &mut status, 0);
        }
        let out = String::from_utf8_lossy(&text);
        assert!(libc::WIFEXITED(status), "the probe was killed ({status}):\n{out}");
        let lines: Vec<&str> = out.lines().collect();
        let says = |l: &str| assert!(lines.contains(&l), "missing {l:?}:\n{out}");
        assert!(out.starts_with("sandbox: no_new_privs"), "{out}");
        // seccomp from the start: EPERM, before Landlock could say EACCES.
        says("open: EPERM");
        says("socket: EPERM");
        says("exec map while setting up: ok");
        // Allowed while setting up: the kernel itself refuses the bad fd.
        says("recvmsg while setting up: EBADF");
        says(&format!("tightened to {}", counts().1));
        for denied in ["exec map while serving", "recvmsg while serving", "memfd_create while serving", "execve"] {
            says(&format!("{denied}: EPERM"));
        }
    }

    #[test]
    fn the_setup_list_only_adds_and_the_serving_list_maps_no_code() {
        let (setup, serving_count) = counts();
        assert!(setup > serving_count);
        seccomp::compile(FRONT.iter()).unwrap();
        // What only set-up may do is gone once the guest reads the image.
        for nr in [libc::SYS_recvmsg, libc::SYS_seccomp, libc::SYS_epoll_create1, libc::SYS_eventfd2] {
            assert!(!serving().any(|r| r.nr == nr), "syscall {nr} is allowed while serving");
        }
        for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
            assert!(serving().filter(|r| r.nr == nr).all(|r| !r.conds.is_empty()), "unconditional {nr} while serving");
        }
        // Neither list opens, executes or makes a socket.
        for nr in [libc::SYS_openat, libc::SYS_execve, libc::SYS_execveat, libc::SYS_socket, libc::SYS_connect] {
            assert!(!serving().chain(SETUP).chain(FRONT).any(|r| r.nr == nr), "syscall {nr} is allowed");
        }
    }
}
