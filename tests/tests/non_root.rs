//! fshost started by an ordinary user, not root (issue 15, items 1 and 2).
//!
//! Every test here runs the real binary as `nobody` (uid/gid 65534, no
//! supplementary groups, no capabilities: the test runner is root and drops
//! all of it in the child before exec), on copies of the binary, the guest
//! and an ext4 image in a scratch directory that user can read.
//!
//! - Offline commands: `ls`, `ls -l`, `stat`, `cat` and `info` (the
//!   sandboxed ones) with stdout read to the end, closed after the first
//!   line, and closed before the command starts; `cp-out` (sandboxed in
//!   two processes: tests/cp_out_sandbox.rs) into a directory of the
//!   user's. None may die of a signal: threads
//!   started just before the sandbox (the epoch ticker, WASI's Tokio
//!   workers) registered rseq after the offline seccomp filter was in place,
//!   and glibc aborted ("Fatal glibc error: rseq registration failed"),
//!   about one run in four. A reader that stops early ends the command
//!   quietly (exit 0, nothing on stderr); a whole read gets the output the
//!   image's tree implies, the same as root gets.
//! - Mounts: with /dev/fuse at 0600 the error names /dev/fuse and its mode;
//!   at 0666 (as distributions ship it) the user mounts through
//!   fusermount3, reads, unmounts with `fusermount3 -u`, mounts again and
//!   stops the server with SIGTERM.
//!
//! Needs root (to create the user's view and to change /dev/fuse's mode);
//! CI runs as root.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::Permissions;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fshost_tests::fshost::{fshost_bin, guest};
use fshost_tests::kernel::{require_root, run};
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;

/// The unprivileged user the commands run as.
const USER: u32 = 65534;
/// Entries of /bigdir: `ls` of it writes far more than a pipe holds (64 KiB).
const BIG_DIR_ENTRIES: usize = 6000;
/// Size of /big.bin: more than a pipe holds, and not a multiple of a block.
const BIG_FILE: usize = 3 * 1024 * 1024 + 123;

/// Serialises the tests that change /dev/fuse's mode (one test binary runs
/// its tests on several threads).
static DEV_FUSE: Mutex<()> = Mutex::new(());

/// What the user can read: the binary, the guest, an image, and a home.
struct World {
    dir: ScratchDir,
    bin: PathBuf,
    plugin: PathBuf,
    image: PathBuf,
    home: PathBuf,
    names: Vec<String>,
    big: Vec<u8>,
}

/// mkfs.ext4 -d of: /bigdir with [`BIG_DIR_ENTRIES`] empty files,
/// /big.bin ([`BIG_FILE`] bytes of pattern), /small.txt; all 0644.
fn world() -> World {
    let dir = ScratchDir::new("non-root").unwrap();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
    let src = dir.path().join("src");
    let bigdir = src.join("bigdir");
    std::fs::create_dir_all(&bigdir).unwrap();
    let mut names = Vec::new();
    for i in 0..BIG_DIR_ENTRIES {
        let name = format!("entry-with-a-longish-name-{i:05}");
        let path = bigdir.join(&name);
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        names.push(name);
    }
    let big = pattern(BIG_FILE, 15);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("small.txt"), b"small\n").unwrap();
    for f in ["big.bin", "small.txt"] {
        std::fs::set_permissions(src.join(f), Permissions::from_mode(0o644)).unwrap();
    }
    let image = dir.path().join("image.ext4");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-d"]).arg(&src).arg(&image).arg("64M")).unwrap();
    std::fs::set_permissions(&image, Permissions::from_mode(0o644)).unwrap();
    let bin = dir.path().join("fshost");
    std::fs::copy(fshost_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, Permissions::from_mode(0o755)).unwrap();
    let plugin = dir.path().join("ext4.wasm");
    std::fs::copy(guest("ext4"), &plugin).unwrap();
    std::fs::set_permissions(&plugin, Permissions::from_mode(0o644)).unwrap();
    // A home of the user's own: the compiled-guest cache lives there, as it
    // would for any ordinary user (the first command compiles, the others
    // load from the cache).
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, USER);
    names.sort();
    let world = World { dir, bin, plugin, image, home, names, big };
    // Not through as_user: its working directory would be out of reach too.
    let reach = Command::new("test")
        .uid(USER)
        .gid(USER)
        .arg("-r")
        .arg(&world.image)
        .args(["-a", "-x"])
        .arg(&world.bin)
        .status()
        .unwrap();
    assert!(
        reach.success(),
        "uid {USER} cannot reach {}: the temp dir ($TMPDIR) must be traversable by others",
        world.dir.path().display()
    );
    world
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

impl World {
    /// `program ARGS` as the unprivileged user, with a clean environment.
    fn as_user(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        // std clears the supplementary groups when root sets a uid; the uid
        // change from 0 clears every capability set.
        c.uid(USER).gid(USER).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", &self.home);
        c.current_dir(&self.home).stdin(Stdio::null());
        c
    }

    /// `fshost CMD --plugin ext4.wasm IMAGE ARGS` as the user.
    fn fshost(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = self.as_user(&self.bin);
        c.arg(cmd).arg("--plugin").arg(&self.plugin).arg(&self.image).args(args);
        c
    }

    /// The same command as root: the reference output.
    fn as_root(&self, cmd: &str, args: &[&str]) -> Vec<u8> {
        let out = run(Command::new(&self.bin).arg(cmd).arg("--plugin").arg(&self.plugin).arg(&self.image).args(args))
            .unwrap();
        out.stdout
    }
}

/// Wait for `child` at most `timeout`, killing it after.
fn wait(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How stdout is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// To the end.
    Whole,
    /// One line, then the pipe is closed (`| head -1`).
    FirstLine,
    /// Closed before the command starts (`| true`): the first write fails.
    ClosedBefore,
}

struct Ran {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Run `command` with stdout read as `reader`, stderr to a file.
fn run_with(world: &World, mut command: Command, reader: Reader, what: &str) -> Ran {
    let err_path = world.dir.path().join("stderr.log");
    let err = std::fs::File::create(&err_path).unwrap();
    command.stderr(err);
    let mut stdout = Vec::new();
    let status = match reader {
        Reader::ClosedBefore => {
            let mut fds = [0; 2];
            // SAFETY: a two-int array for pipe2 to fill.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: pipe2 just returned these two fds; we own them.
            let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            drop(read_end);
            command.stdout(Stdio::from(write_end));
            let mut child = command.spawn().unwrap();
            // The parent's copy of the write end went with `command`'s Stdio
            // into the child; drop ours so nothing else holds it.
            drop(command);
            wait(&mut child, Duration::from_secs(120), what)
        }
        Reader::Whole | Reader::FirstLine => {
            command.stdout(Stdio::piped());
            let mut child = command.spawn().unwrap();
            drop(command);
            let mut out = BufReader::new(child.stdout.take().unwrap());
            if reader == Reader::Whole {
                out.read_to_end(&mut stdout).unwrap();
            } else {
                out.read_until(b'\n', &mut stdout).unwrap();
            }
            drop(out);
            wait(&mut child, Duration::from_secs(120), what)
        }
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    Ran { status, stdout, stderr }
}

/// No signal death, no abort or panic message: an orderly end.
fn assert_orderly(ran: &Ran, what: &str) {
    assert!(
        ran.status.signal().is_none() && ran.status.code().is_some(),
        "{what} was killed by a signal ({}):\n{}",
        ran.status,
        ran.stderr
    );
    for bad in ["Fatal glibc error", "panicked", "Aborted", "SIGSEGV"] {
        assert!(!ran.stderr.contains(bad), "{what}: '{bad}' on stderr:\n{}", ran.stderr);
    }
}

/// One offline command and what its whole output must be.
struct Case {
    cmd: &'static str,
    args: &'static [&'static str],
    /// Writes more than a pipe holds: worth closing after one line.
    large: bool,
}

const CASES: &[Case] = &[
    Case { cmd: "ls", args: &["/bigdir"], large: true },
    Case { cmd: "ls", args: &["-l", "/bigdir"], large: true },
    Case { cmd: "stat", args: &["/big.bin"], large: false },
    Case { cmd: "cat", args: &["/big.bin"], large: true },
    Case { cmd: "info", args: &[], large: false },
];

/// What the whole output of `case` must hold, derived from the tree the
/// image was made of (names, sizes, bytes) and, for the layout, from the
/// same command run as root.
fn check_whole(world: &World, case: &Case, out: &[u8], what: &str) {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text.lines().collect();
    match (case.cmd, case.args) {
        ("ls", ["/bigdir"]) => assert!(lines == world.names, "{what}: not the {} names made", world.names.len()),
        ("ls", ["-l", "/bigdir"]) => {
            assert_eq!(lines.len(), world.names.len(), "{what}");
            for (line, name) in lines.iter().zip(&world.names) {
                assert!(line.starts_with("-rw-r--r-- ") && line.ends_with(&format!(" {name}")), "{what}: {line}");
            }
        }
        ("stat", _) => {
            assert!(text.contains("type: regular\n"), "{what}:\n{text}");
            assert!(text.contains(&format!("size: {BIG_FILE}\n")), "{what}:\n{text}");
        }
        ("cat", _) => assert!(out == world.big, "{what}: {} bytes, not the {BIG_FILE} written", out.len()),
        ("info", _) => {
            assert!(text.contains("type: ext4\n"), "{what}:\n{text}");
            assert!(text.contains("block size: 4096\n"), "{what}:\n{text}");
        }
        _ => unreachable!(),
    }
    assert!(out == world.as_root(case.cmd, case.args), "{what}: the output differs from root's");
}

#[test]
fn offline_commands_as_an_ordinary_user_end_in_order_whatever_the_reader_does() {
    require_root();
    let world = world();
    let mut runs = 0;
    // Twice over: the first pass compiles the guest into the user's cache,
    // the second loads it (two start-up timings for the threads started
    // before the sandbox).
    for pass in 0..2 {
        for case in CASES {
            let readers: &[Reader] = if case.large {
                &[Reader::Whole, Reader::FirstLine, Reader::ClosedBefore]
            } else {
                &[Reader::Whole, Reader::ClosedBefore]
            };
            for &reader in readers {
                let what = format!(
                    "pass {pass}: fshost {} {} as uid {USER}, stdout {reader:?}",
                    case.cmd,
                    case.args.join(" ")
                );
                let ran = run_with(&world, world.fshost(case.cmd, case.args), reader, &what);
                runs += 1;
                assert_orderly(&ran, &what);
                match reader {
                    Reader::Whole => {
                        assert!(ran.status.success(), "{what}: {}\n{}", ran.status, ran.stderr);
                        check_whole(&world, case, &ran.stdout, &what);
                    }
                    Reader::FirstLine | Reader::ClosedBefore => {
                        // A reader that stopped early is no error (as with
                        // `ls | head -1`): exit 0, nothing on stderr.
                        assert!(ran.status.success(), "{what}: {}\n{}", ran.status, ran.stderr);
                        assert!(ran.stderr.is_empty(), "{what}: not a quiet end:\n{}", ran.stderr);
                        if reader == Reader::FirstLine {
                            let first = ran.stdout.split(|&b| b == b'\n').next().unwrap_or_default();
                            let whole = world.as_root(case.cmd, case.args);
                            assert!(whole.starts_with(first), "{what}: the first line is not the output's");
                        }
                    }
                }
            }
        }
    }
    assert_eq!(runs, 26);
}

#[test]
fn cp_out_as_an_ordinary_user_extracts_exact_files() {
    require_root();
    let world = world();
    let out = world.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    chown(&out, USER);
    let dest = out.join("big.bin");
    let ran = run_with(
        &world,
        world.fshost("cp-out", &["/big.bin", dest.to_str().unwrap()]),
        Reader::Whole,
        "cp-out /big.bin as the user",
    );
    assert_orderly(&ran, "cp-out");
    assert!(ran.status.success(), "{}\n{}", ran.status, ran.stderr);
    assert!(std::fs::read(&dest).unwrap() == world.big, "the extracted big.bin differs");
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (USER, 0o644), "owned by the user who ran cp-out, mode kept");
    let tree = out.join("bigdir");
    let ran = run_with(&world, world.fshost("cp-out", &["/bigdir", tree.to_str().unwrap()]), Reader::Whole, "cp-out");
    assert_orderly(&ran, "cp-out /bigdir");
    assert!(ran.status.success(), "{}\n{}", ran.status, ran.stderr);
    let mut names: Vec<String> =
        std::fs::read_dir(&tree).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert!(names == world.names, "cp-out /bigdir: {} entries, not the {} made", names.len(), world.names.len());
}

/// Sets /dev/fuse's mode for a test and restores the original on drop,
/// also when the test panics.
struct DevFuseMode {
    original: u32,
}

const DEV_FUSE_PATH: &str = "/dev/fuse";

impl DevFuseMode {
    fn new() -> DevFuseMode {
        let original = std::fs::metadata(DEV_FUSE_PATH).expect("this test needs /dev/fuse").mode() & 0o7777;
        DevFuseMode { original }
    }

    fn set(&self, mode: u32) {
        std::fs::set_permissions(DEV_FUSE_PATH, Permissions::from_mode(mode)).unwrap();
        assert_eq!(std::fs::metadata(DEV_FUSE_PATH).unwrap().mode() & 0o7777, mode);
    }
}

impl Drop for DevFuseMode {
    fn drop(&mut self) {
        if let Err(e) = std::fs::set_permissions(DEV_FUSE_PATH, Permissions::from_mode(self.original)) {
            eprintln!("warning: could not restore {DEV_FUSE_PATH} to {:04o}: {e}", self.original);
        }
    }
}

/// Whether `path` is a mount point now. From mountinfo, not stat: even root
/// may not stat a FUSE mount of another user made without allow_other.
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

/// Unmounts (lazily, as root) whatever a failed test left at the path.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if mounted(self.0) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

/// `fshost mount` processes serving `mountpoint` (their command line names it).
fn servers_of(mountpoint: &Path) -> Vec<u32> {
    let want = mountpoint.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&b"mount".as_slice())
            && args.contains(&want)
            && !args.contains(&b"sandbox-unmounter".as_slice())
        {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// /proc/PID/status fields of every thread of `pid`.
fn thread_fields(pid: u32) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        out.push(
            status
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
                .collect(),
        );
    }
    out
}

#[test]
fn a_non_root_mount_needs_dev_fuse_read_write_says_so_and_works_when_it_has_it() {
    require_root();
    let _serial = DEV_FUSE.lock().unwrap_or_else(|p| p.into_inner());
    let world = world();
    let mnt = world.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    chown(&mnt, USER);
    let mode = DevFuseMode::new();
    let _unmount = Unmount(&mnt);
    let sandbox_line = "sandbox: no_new_privs, uid unchanged (not started as root), capabilities dropped";

    // (a) 0600, root's: the mount fails and says why.
    mode.set(0o600);
    let ran = run_with(&world, world.fshost("mount", &[mnt.to_str().unwrap()]), Reader::Whole, "mount at 0600");
    assert_orderly(&ran, "mount with /dev/fuse 0600");
    assert!(!ran.status.success(), "mounted with /dev/fuse at 0600?\n{}", ran.stderr);
    assert!(!mounted(&mnt));
    assert!(
        ran.stderr.contains("/dev/fuse is mode 0600"),
        "the error does not name /dev/fuse and its mode:\n{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("read-write"), "the error does not say what a non-root mount needs:\n{}", ran.stderr);

    // (b) 0666, as distributions ship it: mount (in the background, the
    // default), read, unmount with fusermount3.
    mode.set(0o666);
    let ran = run_with(&world, world.fshost("mount", &["-v", mnt.to_str().unwrap()]), Reader::Whole, "mount at 0666");
    assert_orderly(&ran, "mount with /dev/fuse 0666");
    assert!(ran.status.success(), "the mount failed ({}):\n{}", ran.status, ran.stderr);
    assert!(mounted(&mnt), "fshost mount returned but nothing is mounted:\n{}", ran.stderr);
    assert!(ran.stderr.contains(sandbox_line), "no sandbox line:\n{}", ran.stderr);
    assert!(ran.stderr.contains("seccomp allow-list of "), "{}", ran.stderr);
    let read = run(world.as_user("cat").arg(mnt.join("big.bin"))).unwrap();
    assert!(read.stdout == world.big, "big.bin read through the user's mount differs");
    let servers = servers_of(&mnt);
    assert_eq!(servers.len(), 1, "one server for {}: {servers:?}", mnt.display());
    for t in thread_fields(servers[0]) {
        assert_eq!(t["Seccomp"], "2", "{t:?}");
        assert_eq!(t["NoNewPrivs"], "1", "{t:?}");
        assert_eq!(t["Uid"], format!("{USER} {USER} {USER} {USER}"), "{t:?}");
    }
    run(world.as_user("fusermount3").arg("-u").arg(&mnt)).unwrap();
    assert!(!mounted(&mnt));
    wait_until("the server exits after fusermount3 -u", Duration::from_secs(10), || servers_of(&mnt).is_empty());

    // Again in the foreground, stopped with SIGTERM (its unmount helper
    // goes through fusermount3 -u).
    let log = world.dir.path().join("mount.log");
    let mut child = world
        .fshost("mount", &["-v", "--foreground", mnt.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the foreground mount appears", Duration::from_secs(30), || {
        mounted(&mnt) || child.try_wait().unwrap().is_some()
    });
    assert!(mounted(&mnt), "the foreground mount failed:\n{}", read_log());
    let read = run(world.as_user("cat").arg(mnt.join("small.txt"))).unwrap();
    assert_eq!(read.stdout, b"small\n");
    // SAFETY: kill with our child's pid and a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = wait(&mut child, Duration::from_secs(10), "the foreground mount after SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", read_log());
    assert!(!mounted(&mnt), "still mounted after SIGTERM:\n{}", read_log());
    let log = read_log();
    assert!(log.contains(sandbox_line), "{log}");
    assert!(log.contains("SIGTERM: unmounting"), "{log}");
    drop(mode);
}
