//! The sandbox is on, proven by the kernel: a serving `fshost mount` and each
//! of its threads show seccomp filter mode, no_new_privs, no capabilities and
//! the unprivileged uid/gid in /proc, and the mount still works in that state
//! (listing, byte-exact reads, guest traps and restarts, unmount, exit 0).
//! SIGTERM unmounts through the unmount helper, which keeps CAP_SYS_ADMIN
//! and nothing else. `--no-sandbox` leaves seccomp off. That the layers deny
//! what they must (Landlock: EACCES on open; seccomp: EPERM on socket, exec
//! mappings…) is proven by the probes in host/src/sandbox.rs.
//!
//! All of this needs root (mounting, switching uid), as CI has.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fshost_tests::fshost::{FshostMount, fshost_bin, guest, is_mount_point};
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;
use hello::image::Builder;

const ZERO_CAPS: &str = "0000000000000000";
/// CAP_SYS_ADMIN alone (bit 21).
const SYS_ADMIN_ONLY: &str = "0000000000200000";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the sandbox tests need root (CI runs as root): they mount FUSE and check the uid switch");
}

struct Sample {
    _dir: ScratchDir,
    image: PathBuf,
    data: Vec<u8>,
}

/// A small tree: /data.bin (300 KiB), /docs/readme.txt.
fn sample() -> Sample {
    let dir = ScratchDir::new("sandbox").unwrap();
    let mut b = Builder::new(4096, b"sandbox");
    let root = b.root();
    let data = pattern(300 * 1024 + 7, 9);
    b.file(root, b"data.bin", &data);
    let docs = b.dir(root, b"docs");
    b.file(docs, b"readme.txt", b"inside the sandbox\n");
    let image = dir.path().join("sample.img");
    std::fs::write(&image, b.build()).unwrap();
    Sample { _dir: dir, image, data }
}

/// `(tid, comm, status)` of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = entry.unwrap().path();
        let tid = path.file_name().unwrap().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim().to_string();
        let status = std::fs::read_to_string(path.join("status")).unwrap();
        out.push((tid, comm, status));
    }
    out
}

/// The value of `name:` in a /proc status file, whitespace collapsed.
fn field(status: &str, name: &str) -> String {
    let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name}:"));
    line[name.len() + 1..].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every thread of `pid` runs under seccomp with no_new_privs, no
/// capability in any set, as `uid`/`gid` (real, effective, saved, fs).
fn assert_confined(pid: u32, uid: u32, gid: u32) -> Vec<String> {
    let all = threads(pid);
    assert!(all.len() >= 3, "expected the main, epoch and FUSE threads, found {}", all.len());
    for (tid, comm, status) in &all {
        let who = format!("thread {tid} ({comm}) of fshost {pid}");
        assert_eq!(field(status, "Seccomp"), "2", "{who}: seccomp filter mode");
        assert_eq!(field(status, "Seccomp_filters"), "2", "{who}: the allow-list and the clone3 filter");
        assert_eq!(field(status, "NoNewPrivs"), "1", "{who}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(status, set), ZERO_CAPS, "{who}: {set}");
        }
        assert_eq!(field(status, "Uid"), vec![uid.to_string(); 4].join(" "), "{who}: Uid");
        assert_eq!(field(status, "Gid"), vec![gid.to_string(); 4].join(" "), "{who}: Gid");
        assert_eq!(field(status, "Groups"), "", "{who}: supplementary groups");
    }
    all.into_iter().map(|(_, comm, _)| comm).collect()
}

/// The mount lists and reads byte-exact.
fn assert_serves(m: &FshostMount, s: &Sample) {
    let mut names: Vec<Vec<u8>> =
        std::fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
    names.sort();
    assert!(names.starts_with(&[b"data.bin".to_vec(), b"docs".to_vec()]), "{names:?}");
    assert!(std::fs::read(m.path().join("data.bin")).unwrap() == s.data, "data.bin differs");
    assert_eq!(std::fs::read(m.path().join("docs/readme.txt")).unwrap(), b"inside the sandbox\n");
}

/// The unmount helper fshost started (its child running `sandbox-unmounter`).
fn helper_of(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    children
        .split_whitespace()
        .map(|c| c.parse::<u32>().unwrap())
        .find(|c| {
            std::fs::read(format!("/proc/{c}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|arg| arg == b"sandbox-unmounter"))
        })
        .unwrap_or_else(|| panic!("fshost {pid} has no unmount helper among its children {children:?}"))
}

#[test]
fn a_serving_mount_is_confined_on_every_thread_and_still_works() {
    require_root();
    let s = sample();
    let mut m = FshostMount::mount(&guest("hello"), &s.image, &[]).unwrap();
    // Serve something first, so the FUSE workers have run guest calls.
    assert_serves(&m, &s);
    let comms = assert_confined(m.pid(), 65534, 65534);
    assert!(comms.iter().any(|c| c.starts_with("fuser-")), "no FUSE worker among {comms:?}");
    assert!(comms.iter().any(|c| c == "fshost-epoch"), "no epoch ticker among {comms:?}");
    // Still serving after the inspection, from the same confined process.
    assert_serves(&m, &s);
    let log = m.log();
    assert!(log.contains("sandbox: no_new_privs, uid 65534/gid 65534, capabilities dropped, landlock ABI v"), "{log}");
    assert!(log.contains("seccomp allow-list of "), "{log}");
    // Unmounted from outside, as a user would: the process ends cleanly.
    let status = m.unmount().unwrap();
    assert!(status.success(), "fshost exited with {status} after umount:\n{}", m.log());
}

#[test]
fn sigterm_unmounts_through_the_helper_which_keeps_only_cap_sys_admin() {
    require_root();
    let s = sample();
    let mut m = FshostMount::mount(&guest("hello"), &s.image, &[]).unwrap();
    let helper = helper_of(m.pid());
    let status = std::fs::read_to_string(format!("/proc/{helper}/status")).unwrap();
    assert_eq!(field(&status, "CapEff"), SYS_ADMIN_ONLY, "helper {helper}");
    assert_eq!(field(&status, "CapPrm"), SYS_ADMIN_ONLY, "helper {helper}");
    for set in ["CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(field(&status, set), ZERO_CAPS, "helper {helper}: {set}");
    }
    assert_eq!(field(&status, "Seccomp"), "2", "helper {helper}");
    assert_eq!(field(&status, "NoNewPrivs"), "1", "helper {helper}");
    // A signal to the whole group (^C, kill -TERM -PGID) reaches the helper
    // too; it must not die of it, or nothing could unmount any more.
    // SAFETY: kill with a pid we just read and a valid signal.
    assert_eq!(unsafe { libc::kill(helper as i32, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(Path::new(&format!("/proc/{helper}")).exists(), "the helper died of SIGTERM");
    assert_serves(&m, &s);

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) }, 0);
    let exit = m.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "fshost exited with {exit} after SIGTERM:\n{}", m.log());
    assert!(!is_mount_point(m.path()).unwrap(), "still mounted after SIGTERM:\n{}", m.log());
    // fshost reaped its helper before exiting.
    assert!(!Path::new(&format!("/proc/{helper}")).exists(), "the unmount helper outlived fshost");
    assert!(m.log().contains("SIGTERM: unmounting"), "{}", m.log());
}

#[test]
fn user_and_group_are_configurable() {
    require_root();
    let s = sample();
    let mut m =
        FshostMount::mount_with(&guest("hello"), &s.image, &[], &["--user", "4321", "--group", "1234"]).unwrap();
    assert_confined(m.pid(), 4321, 1234);
    assert_serves(&m, &s);
    assert!(m.unmount().unwrap().success(), "{}", m.log());
    // Root is refused as the identity to serve as.
    let s2 = sample();
    let err = FshostMount::mount_with(&guest("hello"), &s2.image, &[], &["--user", "0"]).err().unwrap();
    assert!(err.to_string().contains("refusing to run as uid 0"), "{err:#}");
}

#[test]
fn guest_traps_and_restarts_work_inside_the_sandbox() {
    require_root();
    // guests/evil misbehaves by name (its README): each trick traps the
    // guest a different way, and every trap is followed by a fresh
    // instance (new memories, tables, stacks: mapped after the sandbox).
    let dir = ScratchDir::new("sandbox-evil").unwrap();
    let mut b = Builder::new(4096, b"evil");
    let root = b.root();
    b.file(root, b"good", b"still good\n");
    let tricks: [&[u8]; 4] = [
        b"attr-panic", // a panic: the message goes through WASI stderr (its Tokio runtime)
        b"map-stack",  // stack overflow
        b"attr-loop",  // the epoch deadline
        b"attr-alloc", // the memory limit
    ];
    for name in tricks {
        b.file(root, name, b"x");
    }
    let image = dir.path().join("evil.img");
    std::fs::write(&image, b.build()).unwrap();
    let mut m = FshostMount::mount(&guest("evil"), &image, &[]).unwrap();
    for name in tricks {
        let path = m.path().join(std::ffi::OsStr::from_bytes(name));
        let err = std::fs::read(&path).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{}: {err}", path.display());
        assert_eq!(std::fs::read(m.path().join("good")).unwrap(), b"still good\n", "after {}", path.display());
    }
    let log = m.log();
    assert!(log.contains("panicked at"), "the guest's panic message did not reach the log:\n{log}");
    assert!(log.contains("deadline exceeded"), "{log}");
    assert!(m.alive(), "fshost died:\n{log}");
    assert_confined(m.pid(), 65534, 65534);
    assert!(m.unmount().unwrap().success(), "{}", m.log());
}

#[test]
fn no_sandbox_keeps_privileges_and_says_so() {
    require_root();
    let s = sample();
    let mut m = FshostMount::mount_with(&guest("hello"), &s.image, &[], &["--no-sandbox"]).unwrap();
    for (tid, comm, status) in threads(m.pid()) {
        assert_eq!(field(&status, "Seccomp"), "0", "thread {tid} ({comm})");
        assert_eq!(field(&status, "Uid"), "0 0 0 0", "thread {tid} ({comm})");
    }
    assert_serves(&m, &s);
    assert!(m.log().contains("sandbox disabled (--no-sandbox)"), "{}", m.log());
    assert!(m.unmount().unwrap().success(), "{}", m.log());
}

#[test]
fn offline_commands_run_sandboxed() {
    require_root();
    let s = sample();
    let out = Command::new(fshost_bin())
        .args(["cat", "-v", "--plugin"])
        .arg(guest("hello"))
        .arg(&s.image)
        .arg("/data.bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout == s.data, "cat differs");
    assert!(stderr.contains("sandbox: no_new_privs, uid 65534/gid 65534"), "{stderr}");
}
