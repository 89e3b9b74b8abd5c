//! Service mode (`fshost serve`) without systemd: the root front end opens
//! and mounts, a forked server that confined itself before it read
//! anything serves the fds it was passed (SCM_RIGHTS over a socketpair).
//!
//! - An ext4 image made by mkfs.ext4 -d (and the kernel, tests/src/tree.rs)
//!   seen through the pair is the kernel's own view of it: every entry, its
//!   attributes and its bytes (tests/src/compare.rs).
//! - While it serves, every thread of the server runs as nobody with no
//!   capability in any set, seccomp mode 2 and no_new_privs, and the server
//!   holds only the fds it was passed (the image, /dev/fuse) and what it
//!   made itself without a path; the front end keeps CAP_SYS_ADMIN alone.
//!   SIGTERM to the front end unmounts and both end with status 0.
//! - From before it read the image: the server is seen in /proc while its
//!   guest's `mount` (the first parse of the image) runs — the evil guest
//!   spins there until the deadline — with the same state and the serving
//!   filters stacked; the failed mount is then reported by the front end,
//!   which leaves nothing mounted.
//! - In the background (the default, as mount(8)'s helper runs it), the
//!   command returns once the server serves, holding none of the caller's
//!   pipes; `umount` ends the detached front end and the server.
//! - Through mount(8): `-o service` makes mount.fshost run `fshost serve`;
//!   `umount` ends it.
//! - As an ordinary user (nobody; /dev/fuse 0666 for the test, as
//!   distributions ship it): the front end mounts through fusermount3,
//!   the server is confined the same way (without an id change), and
//!   `fusermount3 -u` ends both.
//! - The systemd-free half of socket activation: `systemd-socket-activate`
//!   (systemd's own tool) listens as fshost.socket does and runs
//!   `fshost serve-fds` for the connection `fshost serve --socket` makes.
//!
//! Needs root, as the rest of the suite.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fshost_tests::compare::compare_trees;
use fshost_tests::fshost::{fshost_bin, guest};
use fshost_tests::kernel::{Image, KernelMount, require_root};
use fshost_tests::scratch::ScratchDir;
use fshost_tests::tree::{self, TreeSize};
use hello::image::Builder;

const ZERO_CAPS: &str = "0000000000000000";
/// CAP_SYS_ADMIN alone (bit 21).
const SYS_ADMIN_ONLY: &str = "0000000000200000";
const NOBODY: &str = "65534 65534 65534 65534";

/// Whether `path` is a mount point (mountinfo: stat would wait on a dead server).
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `fshost serve` front end; killed, and its mount detached, on drop.
struct Front {
    child: Child,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Front {
    fn start(plugin: &Path, image: &Path, mountpoint: &Path, log: &Path, extra: &[&str]) -> Front {
        let child = Command::new(fshost_bin())
            .args(["serve", "-v", "--foreground", "--plugin"])
            .arg(plugin)
            .arg(image)
            .arg(mountpoint)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Front { child, mountpoint: mountpoint.to_path_buf(), log: log.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server: the front end's one child.
    fn server(&self) -> Option<u32> {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid())).ok()?;
        let pids: Vec<u32> = children.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        match pids[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "fshost serve did not end within {timeout:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if mounted(&self.mountpoint) {
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
    }
}

/// The value of `name:` in a /proc status file, whitespace collapsed.
fn field(status: &str, name: &str) -> String {
    let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name}:"));
    line[name.len() + 1..].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every thread of the server is confined: nobody, no capability in any
/// set, seccomp filter mode with at least `filters` filters, no_new_privs.
fn assert_confined(pid: u32, filters: u32) {
    assert_confined_with(pid, filters, true)
}

/// As [`assert_confined`]; `bounding`: the bounding set is empty too (not
/// for a server started by an ordinary user, who cannot drop it: without
/// exec, and with no_new_privs, it grants nothing).
fn assert_confined_with(pid: u32, filters: u32, bounding: bool) {
    let mut seen = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = entry.unwrap().path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else { continue };
        let tid = path.display();
        assert_eq!(field(&status, "Uid"), NOBODY, "{tid}");
        assert_eq!(field(&status, "Gid"), NOBODY, "{tid}");
        assert_eq!(field(&status, "Groups"), "", "{tid}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            if set != "CapBnd" || bounding {
                assert_eq!(field(&status, set), ZERO_CAPS, "{tid} {set}");
            }
        }
        assert_eq!(field(&status, "Seccomp"), "2", "{tid}");
        assert_eq!(field(&status, "NoNewPrivs"), "1", "{tid}");
        let stacked: u32 = field(&status, "Seccomp_filters").parse().unwrap();
        assert!(stacked >= filters, "{tid}: {stacked} seccomp filters, not {filters}");
        seen += 1;
    }
    assert!(seen > 0);
}

/// What each of the server's fds is (readlink of /proc/PID/fd/N).
fn fds(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let n = entry.file_name().to_string_lossy().parse().unwrap();
        if let Ok(target) = std::fs::read_link(entry.path()) {
            out.push((n, target.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    out
}

/// The server holds the image, /dev/fuse, the std streams the test gave
/// it (/dev/null and the log), at most `sockets` sockets (its end of the
/// socketpair, until it serves) and only what it made itself with no path
/// (the guest's memory image, the runtime's epoll and eventfd): not the
/// guest file, not the front end's other fds.
fn assert_only_passed_fds(pid: u32, image: &Path, log: &Path, sockets: usize) {
    let held = fds(pid);
    let image = image.canonicalize().unwrap().display().to_string();
    let log = log.canonicalize().unwrap().display().to_string();
    let mut kinds = BTreeSet::new();
    let mut socket_count = 0;
    for (n, target) in &held {
        let ok = match target.as_str() {
            t if t == image => kinds.insert("image"),
            "/dev/fuse" => kinds.insert("fuse"),
            "/dev/null" if *n <= 2 => true,
            t if t == log && *n <= 2 => true,
            t if t.starts_with("socket:") => {
                socket_count += 1;
                true
            }
            "anon_inode:[eventpoll]" | "anon_inode:[eventfd]" => true,
            t if t.starts_with("/memfd:wasm-memory-image") => true,
            _ => false,
        };
        assert!(ok, "the server holds fd {n} -> {target}, which it was not passed: {held:?}");
    }
    assert!(kinds.contains("image") && kinds.contains("fuse"), "the passed fds are missing: {held:?}");
    assert!(socket_count <= sockets, "{socket_count} sockets: {held:?}");
    assert!(!held.iter().any(|(_, t)| t.ends_with(".wasm")), "the guest file is still open: {held:?}");
}

#[test]
fn served_by_a_confined_server_the_image_is_what_the_kernel_sees() {
    require_root();
    let image = Image::build(tree::shared(TreeSize::Light), &[]).expect("build the image");
    let kernel = KernelMount::read_only(image.path()).expect("mount the image with the kernel");
    let dir = ScratchDir::new("serve").unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = dir.path().join("serve.log");
    let mut front = Front::start(&guest("ext4"), image.path(), &mnt, &log, &[]);
    wait_until("the mount appears", Duration::from_secs(60), || {
        mounted(&mnt) && front.log().contains("front end: serving")
    });
    let server = front.server().unwrap_or_else(|| panic!("no server process:\n{}", front.log()));

    let diffs = compare_trees(kernel.path(), &mnt);
    let shown: Vec<String> = diffs.iter().take(30).map(|d| format!("  {d}")).collect();
    assert!(diffs.is_empty(), "{} differences with the kernel's view:\n{}", diffs.len(), shown.join("\n"));

    // Serving: both stacked filter pairs, on every thread the listing used.
    assert_confined(server, 4);
    assert_only_passed_fds(server, image.path(), &log, 0);
    let front_status = std::fs::read_to_string(format!("/proc/{}/status", front.pid())).unwrap();
    assert_eq!(field(&front_status, "CapEff"), SYS_ADMIN_ONLY);
    assert_eq!(field(&front_status, "CapPrm"), SYS_ADMIN_ONLY);
    assert_eq!(field(&front_status, "CapBnd"), ZERO_CAPS);
    assert_eq!(field(&front_status, "Seccomp"), "2");
    let shown = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = shown.lines().find(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap())).unwrap();
    assert!(line.contains(" fuse.fshost ") && line.contains(" ro,") && line.contains("nosuid,nodev"), "{line}");

    // SIGTERM to the front end: it unmounts, the server ends, both exit 0.
    // SAFETY: kill with our child's pid and a valid signal.
    assert_eq!(unsafe { libc::kill(front.pid() as i32, libc::SIGTERM) }, 0);
    let status = front.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", front.log());
    assert!(!mounted(&mnt));
    assert!(!Path::new(&format!("/proc/{server}")).exists(), "the server outlived its mount");
    let log = front.log();
    assert!(
        log.contains("server confined before it read anything: sandbox: no_new_privs, uid 65534/gid 65534"),
        "{log}"
    );
    assert!(log.contains("SIGTERM: unmounting"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_server_is_confined_before_its_guest_reads_the_image() {
    require_root();
    let dir = ScratchDir::new("serve-evil").unwrap();
    let mut b = Builder::new(4096, b"evil");
    let root = b.root();
    b.file(root, b"hello.txt", b"hello\n");
    let image = dir.path().join("evil.img");
    std::fs::write(&image, b.build()).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = dir.path().join("serve.log");
    // The guest's mount spins for the whole deadline: the server is seen
    // in /proc while the first parse of the image runs.
    let mut front =
        Front::start(&guest("evil"), &image, &mnt, &log, &["-o", "evil=mount-loop", "--guest-timeout-ms", "4000"]);
    wait_until("the guest's mount starts", Duration::from_secs(60), || {
        front.log().contains("the guest reads the image now")
    });
    let server = front.server().unwrap_or_else(|| panic!("no server process:\n{}", front.log()));
    assert_confined(server, 4);
    // Its end of the socket is still open: it answers once the mount ends.
    assert_only_passed_fds(server, &image, &log, 1);
    let status = front.wait(Duration::from_secs(30));
    assert!(!status.success(), "a guest whose mount never ends was served:\n{}", front.log());
    let log = front.log();
    assert!(log.contains("was not served") && log.contains("deadline"), "{log}");
    assert!(!mounted(&mnt), "the failed mount was left behind");
}

#[test]
fn a_socket_activated_server_serves_what_the_front_end_hands_it() {
    require_root();
    let dir = ScratchDir::new("serve-socket").unwrap();
    let mut b = Builder::new(4096, b"socket");
    let root = b.root();
    b.file(root, b"greeting", b"served over a socket\n");
    let image = dir.path().join("hello.img");
    std::fs::write(&image, b.build()).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let socket = dir.path().join("serve.sock");
    let server_log = dir.path().join("server.log");
    // As fshost.socket: a SOCK_SEQPACKET listener, one server per
    // connection (Accept=yes), the connection as fd 3 (LISTEN_FDS=1).
    let mut listener = Command::new("systemd-socket-activate")
        .args(["--seqpacket", "--accept", "--listen"])
        .arg(&socket)
        .arg(fshost_bin())
        .args(["serve-fds", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .expect("systemd-socket-activate (package systemd)");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let listener = Kill(&mut listener);
    wait_until("the socket is listening", Duration::from_secs(10), || socket.exists());
    let out = Command::new(fshost_bin())
        .args(["serve", "-v", "--plugin"])
        .arg(guest("hello"))
        .arg(&image)
        .arg(&mnt)
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    let server_text = || std::fs::read_to_string(&server_log).unwrap_or_default();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server_text());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if mounted(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    let _unmount = Unmount(&mnt);
    assert!(mounted(&mnt), "fshost serve --socket returned, but nothing is mounted");
    assert_eq!(std::fs::read(mnt.join("greeting")).unwrap(), b"served over a socket\n");
    // The server is the listener's child, confined like a forked one.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", listener.0.id())).unwrap();
    let server: u32 = children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("no server process");
    assert_confined(server, 4);
    assert_only_passed_fds(server, &image, &server_log, 0);
    // umount(8) ends it.
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success());
    wait_until("the server ends after umount", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{server}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{server}/status")).is_ok_and(|s| s.contains("State:\tZ"))
    });
    let text = server_text();
    assert!(text.contains("server confined before it read anything"), "{text}");
    assert!(text.contains("unmounted"), "{text}");
}

/// Processes whose command line names `fshost serve` and `mountpoint`.
fn serve_processes(mountpoint: &Path) -> Vec<u32> {
    let want = mountpoint.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&b"serve".as_slice()) && args.contains(&want) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn in_the_background_serve_returns_once_it_serves_and_umount_ends_it() {
    require_root();
    let dir = ScratchDir::new("serve-bg").unwrap();
    let mut b = Builder::new(4096, b"background");
    let root = b.root();
    b.file(root, b"greeting", b"served in the background\n");
    let image = dir.path().join("hello.img");
    std::fs::write(&image, b.build()).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if mounted(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    let _unmount = Unmount(&mnt);
    // output(): returns only when every holder of its pipes lets go.
    let out = Command::new(fshost_bin())
        .args(["serve", "-v", "--plugin"])
        .arg(guest("hello"))
        .arg(&image)
        .arg(&mnt)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("server confined before it read anything"), "the server's log is not shown:\n{said}");
    assert!(mounted(&mnt), "fshost serve returned, but nothing is mounted:\n{said}");
    assert_eq!(std::fs::read(mnt.join("greeting")).unwrap(), b"served in the background\n");
    assert_eq!(serve_processes(&mnt).len(), 2, "a detached front end and its server");
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success());
    wait_until("the front end and the server end after umount", Duration::from_secs(10), || {
        serve_processes(&mnt).is_empty()
    });

    // A failure is reported by the command itself, with its status.
    let out = Command::new(fshost_bin())
        .args(["serve", "--plugin"])
        .arg(guest("evil"))
        .arg(&image)
        .arg(&mnt)
        .args(["-o", "evil=mount-fail"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("was not served"), "{said}");
    assert!(!mounted(&mnt));
}

/// /sbin/mount.fshost -> the binary under test while it lives.
struct HelperLink;

impl HelperLink {
    fn new() -> HelperLink {
        let link = Path::new("/sbin/mount.fshost");
        assert!(link.symlink_metadata().is_err(), "/sbin/mount.fshost exists (an installed fshost?); not replacing it");
        std::os::unix::fs::symlink(fshost_bin(), link).unwrap();
        HelperLink
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file("/sbin/mount.fshost");
    }
}

#[test]
fn mount8_with_the_service_option_runs_a_confined_server() {
    require_root();
    let dir = ScratchDir::new("serve-mount8").unwrap();
    let mut b = Builder::new(4096, b"mount8");
    let root = b.root();
    b.file(root, b"greeting", b"served for mount(8)\n");
    let image = dir.path().join("hello.img");
    std::fs::write(&image, b.build()).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _link = HelperLink::new();
    let options = format!("service,plugin={}", guest("hello").display());
    let out =
        Command::new("mount").args(["-t", "fshost"]).arg(&image).arg(&mnt).args(["-o", &options]).output().unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if mounted(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    let _unmount = Unmount(&mnt);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(mnt.join("greeting")).unwrap(), b"served for mount(8)\n");
    let pids = serve_processes(&mnt);
    let servers: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| field(&s, "Uid") == NOBODY))
        .collect();
    assert_eq!((pids.len(), servers.len()), (2, 1), "a front end and one server running as nobody: {pids:?}");
    assert_confined(servers[0], 4);
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_until("the front end and the server end after umount", Duration::from_secs(10), || {
        serve_processes(&mnt).is_empty()
    });
}

/// /dev/fuse at 0666 while it lives (0600 on this machine kind).
struct DevFuseOpen(u32);

impl DevFuseOpen {
    fn new() -> DevFuseOpen {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        DevFuseOpen(mode)
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0));
    }
}

#[test]
fn an_ordinary_user_serves_through_fusermount3() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    require_root();
    const USER: u32 = 65534;
    let dir = ScratchDir::new("serve-user").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut b = Builder::new(4096, b"user");
    let root = b.root();
    b.file(root, b"greeting", b"served for a user\n");
    let image = dir.path().join("hello.img");
    std::fs::write(&image, b.build()).unwrap();
    let bin = dir.path().join("fshost");
    std::fs::copy(fshost_bin(), &bin).unwrap();
    let plugin = dir.path().join("hello.wasm");
    std::fs::copy(guest("hello"), &plugin).unwrap();
    for (f, mode) in [(&image, 0o644), (&bin, 0o755), (&plugin, 0o644)] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(USER), Some(USER)).unwrap();
    let _dev = DevFuseOpen::new();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if mounted(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    let _unmount = Unmount(&mnt);
    let as_user = |program: &Path| {
        let mut c = Command::new(program);
        c.uid(USER).gid(USER).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").current_dir("/");
        c.stdin(Stdio::null());
        c
    };
    let out = as_user(&bin).args(["serve", "-v", "--plugin"]).arg(&plugin).arg(&image).arg(&mnt).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(mounted(&mnt), "{said}");
    let read = as_user(Path::new("cat")).arg(mnt.join("greeting")).output().unwrap();
    assert_eq!(read.stdout, b"served for a user\n", "{}", String::from_utf8_lossy(&read.stderr));
    let pids = serve_processes(&mnt);
    let servers: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| field(&s, "Seccomp") == "2"))
        .collect();
    assert_eq!((pids.len(), servers.len()), (2, 1), "a front end and one filtered server: {pids:?}");
    // nobody already: the same confinement but the id change.
    assert_confined_with(servers[0], 4, false);
    let unmounted = as_user(Path::new("fusermount3")).arg("-u").arg(&mnt).output().unwrap();
    assert!(unmounted.status.success(), "{}", String::from_utf8_lossy(&unmounted.stderr));
    wait_until("the front end and the server end after fusermount3 -u", Duration::from_secs(10), || {
        serve_processes(&mnt).is_empty()
    });
}
