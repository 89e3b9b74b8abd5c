//! The host against a hostile guest (guests/evil, tricks listed in its
//! README): every misbehaviour costs the one operation that met it, with the
//! errno the contract promises (EIO for traps, deadlines and invalid
//! answers) and its reason in the host's log, while the host keeps serving:
//! after each case a file the guest has not been asked about yet reads back
//! byte-exact through the same mount. On a read-write mount its write
//! tricks (mappings a write must not use, a lying `ioend`, a create that
//! names a live inode) cost their operation too, and the image changes
//! only inside the blocks the host validated.
//!
//! Loops are cheap because the mounts run with `--guest-timeout-ms 200`;
//! answers that take the guest time to build (millions of entries, 200 MiB
//! values) get a mount with the default second, so they reach the host.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fshost_tests::fshost::{FshostMount, fshost_bin, guest, offline};
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;
use hello::image::Builder;

const BS: usize = 4096;
/// Per-call guest deadline of the mounts that run loops.
const FAST: &str = "200";
/// Good files: one for each check that the mount still works.
const GOOD_FILES: usize = 64;

fn good_bytes(i: usize) -> Vec<u8> {
    pattern(3 * BS + 123 + i, 1000 + i as u32)
}

/// One hellofs image with every trick of the evil guest (grouped by the
/// operation they spoil, so that listing a group's parent works) and
/// `good/g0..g63`, which only hello's answers touch.
struct EvilImage {
    _dir: ScratchDir,
    path: PathBuf,
}

impl EvilImage {
    fn new() -> Self {
        let mut b = Builder::new(BS as u32, b"evil");
        let root = b.root();
        let good = b.dir(root, b"good");
        for i in 0..GOOD_FILES {
            b.file(good, format!("g{i}").as_bytes(), &good_bytes(i));
        }
        let files = |b: &mut Builder, dir: &[u8], names: &[&str]| {
            let d = b.dir(root, dir);
            for n in names {
                b.file(d, n.as_bytes(), &pattern(2 * BS, 7));
            }
        };
        files(
            &mut b,
            b"attr",
            &["attr-loop", "attr-panic", "attr-alloc", "attr-nsec", "attr-size", "attr-perm", "attr-ino0"],
        );
        files(&mut b, b"wrong", &["attr-wrong-ino"]);
        let special = b.dir(root, b"special");
        b.dir(special, b"chardev-sda");
        b.file(special, b"setuid-root", b"#!/bin/sh\nid\n");
        b.file(special, b"ancient", b"old\n");
        files(
            &mut b,
            b"map",
            &[
                "map-loop",
                "map-panic",
                "map-alloc",
                "map-stack",
                "badmap-past-end",
                "badmap-overlap",
                "badmap-gap",
                "badmap-unaligned",
                "badmap-overflow",
                "badmap-empty",
                "badmap-misses",
                "badmap-zero-length",
                "badmap-inline-short",
                "manymaps",
                "tinyholes",
            ],
        );
        let dir = b.dir(root, b"dir");
        for n in [
            "dir-loop",
            "hugelist",
            "overfull",
            "badname-slash",
            "badname-nul",
            "badname-dotdot",
            "badname-dot",
            "badname-empty",
            "badname-long",
            "badentry-ino0",
            "badcookie-zero",
            "badcookie-same",
            "badcookie-cycle",
            "endless",
        ] {
            let d = b.dir(dir, n.as_bytes());
            b.file(d, b"inside", b"x");
        }
        files(&mut b, b"xattr", &["hugexattr", "oomxattr", "flaky", "writer", "badxattr-names", "logflood"]);
        let link = b.dir(root, b"link");
        for n in ["badlink-empty", "badlink-nul", "badlink-huge"] {
            b.symlink(link, n.as_bytes(), b"../good/g0");
        }
        let dir = ScratchDir::new("evil").unwrap();
        let path = dir.path().join("evil.img");
        std::fs::write(&path, b.build()).unwrap();
        EvilImage { _dir: dir, path }
    }
}

fn hash(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// getxattr(2) with a 64 KiB buffer: one FUSE request, the value or errno.
fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: valid C strings and a buffer of the length passed.
    let n = unsafe { libc::getxattr(c_path(path).as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// listxattr(2) with a 64 KiB buffer.
fn listxattr(path: &Path) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: a valid C string and a buffer of the length passed.
    let n = unsafe { libc::listxattr(c_path(path).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// lseek(SEEK_DATA) from 0 on an open file.
fn seek_data(path: &Path) -> Result<i64, i32> {
    let f = std::fs::File::open(path).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    // SAFETY: lseek on a descriptor we own.
    let r = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&f), 0, libc::SEEK_DATA) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

/// An operation on a path in the mount; what it returned or the errno.
#[derive(Debug, Clone, Copy)]
enum Op {
    Stat,
    Read,
    List,
    Xattr,
    ListXattr,
    Readlink,
    SeekData,
}

fn run(op: Op, path: &Path) -> Result<(), i32> {
    let io = |e: std::io::Error| e.raw_os_error().unwrap_or(0);
    match op {
        Op::Stat => std::fs::symlink_metadata(path).map(drop).map_err(io),
        Op::Read => std::fs::read(path).map(drop).map_err(io),
        Op::List => {
            std::fs::read_dir(path).map_err(io)?.try_for_each(|e| e.map(drop)).map_err(io)?;
            Ok(())
        }
        Op::Xattr => getxattr(path, "user.evil").map(drop),
        Op::ListXattr => listxattr(path).map(drop),
        Op::Readlink => std::fs::read_link(path).map(drop).map_err(io),
        Op::SeekData => seek_data(path).map(drop),
    }
}

/// A mount of the evil image and the checks every case shares.
struct Session {
    mount: FshostMount,
    next_good: usize,
    log_seen: usize,
}

impl Session {
    fn new(image: &EvilImage, timeout_ms: &str) -> Session {
        let mount =
            FshostMount::mount_with(&guest("evil"), &image.path, &[], &["--guest-timeout-ms", timeout_ms]).unwrap();
        Session { mount, next_good: 0, log_seen: 0 }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mount.path().join(rel)
    }

    /// The log written since the last call.
    fn new_log(&mut self) -> String {
        let log = self.mount.log();
        let fresh = log.get(self.log_seen..).unwrap_or_default().to_string();
        self.log_seen = log.len();
        fresh
    }

    /// The host is alive and a file the guest was not asked about before
    /// reads back byte-exact (lookup, getattr and iomap through the guest).
    fn still_serves(&mut self, after: &str) {
        assert!(self.mount.alive(), "fshost died after {after}:\n{}", self.mount.log());
        let i = self.next_good;
        self.next_good += 1;
        assert!(i < GOOD_FILES, "more checks than good files");
        let got = std::fs::read(self.path(&format!("good/g{i}")));
        assert!(got.as_ref().is_ok_and(|b| *b == good_bytes(i)), "good/g{i} after {after}: {got:?}");
    }

    /// `op` on `rel` fails with `want`, the log says `reason`, and the mount
    /// still serves.
    fn fails(&mut self, op: Op, rel: &str, want: i32, reason: &str) {
        let what = format!("{op:?} {rel}");
        let started = Instant::now();
        let got = run(op, &self.path(rel));
        assert_eq!(got, Err(want), "{what}: expected errno {want}");
        let log = self.new_log();
        assert!(log.contains(reason), "{what}: no {reason:?} in the log:\n{log}");
        eprintln!("{what}: errno {want} in {:?}", started.elapsed());
        self.still_serves(&what);
    }
}

/// The mount's line in /proc/self/mountinfo.
fn mountinfo(mountpoint: &Path) -> String {
    let want = mountpoint.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find(|l| l.split(' ').nth(4) == Some(want.as_str())).unwrap_or_default().to_string()
}

#[test]
fn one_mount_survives_every_cheap_misbehaviour() {
    let image = EvilImage::new();
    let before = hash(&image.path);
    let mut s = Session::new(&image, FAST);
    let eio = libc::EIO;

    // Attributes (lookup).
    s.fails(Op::Stat, "attr/attr-loop", eio, "deadline exceeded");
    s.fails(Op::Stat, "attr/attr-panic", eio, "evil: deliberate panic in attributes");
    s.fails(Op::Stat, "attr/attr-alloc", eio, "forcing trap when growing memory");
    s.fails(Op::Stat, "attr/attr-nsec", eio, "mtime has 1000000000 nanoseconds");
    s.fails(Op::Stat, "attr/attr-size", eio, "does not fit off_t");
    s.fails(Op::Stat, "attr/attr-perm", eio, "permission bits 177777 out of range");
    s.fails(Op::Stat, "attr/attr-ino0", eio, "inode number 0");
    // Attributes of another inode, met by readdirplus (which asks by inode).
    s.fails(Op::List, "wrong", eio, "got attributes of inode");

    // Mappings (read).
    s.fails(Op::Read, "map/map-loop", eio, "deadline exceeded");
    s.fails(Op::Read, "map/map-panic", eio, "evil: deliberate panic in iomap-begin");
    s.fails(Op::Read, "map/map-alloc", eio, "forcing trap when growing memory");
    s.fails(Op::Read, "map/map-stack", eio, "guest trapped");
    s.fails(Op::Read, "map/badmap-past-end", eio, "outside the");
    s.fails(Op::Read, "map/badmap-overlap", eio, "not where the previous ended");
    s.fails(Op::Read, "map/badmap-gap", eio, "not where the previous ended");
    s.fails(Op::Read, "map/badmap-unaligned", eio, "is not aligned to the 4096-byte block");
    s.fails(Op::Read, "map/badmap-overflow", eio, "is empty or overflows");
    s.fails(Op::Read, "map/badmap-empty", eio, "no mappings");
    s.fails(Op::Read, "map/badmap-misses", eio, "does not contain the offset asked");
    s.fails(Op::Read, "map/badmap-zero-length", eio, "is empty or overflows");
    s.fails(Op::Read, "map/badmap-inline-short", eio, "inline mapping 0 holds 3 bytes");
    // A 1 TiB file the guest maps one byte per answer: a read is slow but
    // bounded (one answer per byte), a seek gives up.
    let tiny = std::fs::File::open(s.path("map/tinyholes")).unwrap();
    let mut buf = vec![1u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&tiny, &mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "holes read as zeros");
    drop(tiny);
    s.fails(Op::SeekData, "map/tinyholes", eio, "too many pieces");

    // Directories (readdirplus through FUSE).
    s.fails(Op::List, "dir/dir-loop", eio, "deadline exceeded");
    s.fails(Op::List, "dir/overfull", eio, "more than the");
    s.fails(Op::List, "dir/badname-slash", eio, "invalid entry name \"a/b\"");
    s.fails(Op::List, "dir/badname-nul", eio, "invalid entry name \"a\\0b\"");
    s.fails(Op::List, "dir/badname-dotdot", eio, "invalid entry name \"..\"");
    s.fails(Op::List, "dir/badname-dot", eio, "invalid entry name \".\"");
    s.fails(Op::List, "dir/badname-empty", eio, "invalid entry name \"\"");
    s.fails(Op::List, "dir/badname-long", eio, "invalid entry name \"nnnn");
    s.fails(Op::List, "dir/badentry-ino0", eio, "entry with inode 0");
    s.fails(Op::List, "dir/badcookie-zero", eio, "and cookie 0");
    s.fails(Op::List, "dir/badcookie-same", eio, "and cookie 7");

    // Extended attributes and symlinks.
    s.fails(Op::Xattr, "xattr/oomxattr", eio, "forcing trap when growing memory");
    s.fails(Op::ListXattr, "xattr/badxattr-names", eio, "invalid xattr names");
    s.fails(Op::Readlink, "link/badlink-empty", eio, "target of 0 bytes");
    s.fails(Op::Readlink, "link/badlink-nul", eio, "target of 3 bytes");
    s.fails(Op::Readlink, "link/badlink-huge", eio, "target of 1048576 bytes");

    // A guest that logs as fast as it can until the deadline: the host
    // keeps 100 messages, says how many it dropped, and the log stays small.
    let size_before = s.mount.log().len();
    s.fails(Op::Xattr, "xattr/logflood", eio, "guest log messages over the per-call budget");
    let grown = s.mount.log().len() - size_before;
    assert!(grown < 1 << 20, "one call grew the log by {grown} bytes");
    // A name the file does not list (it lists user.evil) is ENODATA from the
    // host's cache of names, without a guest call: the guest's getxattr
    // would flood the log until the deadline and fail with EIO.
    let _ = s.new_log();
    let logflood = s.path("xattr/logflood");
    assert_eq!(getxattr(&logflood, "security.selinux"), Err(libc::ENODATA));
    assert_eq!(getxattr(&logflood, "system.posix_acl_access"), Err(libc::ENODATA));
    let log = s.new_log();
    assert!(!log.contains("evil: flood") && !log.contains("guest log messages"), "the guest was asked:\n{log}");

    // Traps on every other call of one instance: the restarted instance
    // answers again.
    let flaky = s.path("xattr/flaky");
    for round in 0..3 {
        assert_eq!(getxattr(&flaky, "user.evil"), Ok(b"flaky-ok".to_vec()), "round {round}");
        assert_eq!(getxattr(&flaky, "user.evil"), Err(eio), "round {round}");
    }
    assert_eq!(s.new_log().matches("guest trapped").count(), 3);
    s.still_serves("flaky");

    // The write import refuses, whatever the guest believes.
    let answer = getxattr(&s.path("xattr/writer"), "user.evil").unwrap();
    assert!(answer.starts_with(b"refused") && answer.windows(9).any(|w| w == b"read-only"), "{answer:?}");
    assert!(s.new_log().contains("guest tried to write 4096 bytes at 0: refused"));
    s.still_serves("writer");

    // Valid but hostile attributes are served, and the mount contains them:
    // nodev (a "directory" that says it is /dev/sda cannot be opened as
    // one), nosuid (a root-owned setuid file gains nothing).
    let options = mountinfo(s.mount.path());
    let fields: Vec<&str> = options.split(' ').nth(5).unwrap_or_default().split(',').collect();
    assert!(fields.contains(&"nodev") && fields.contains(&"nosuid") && fields.contains(&"ro"), "{options}");
    let sda = std::fs::symlink_metadata(s.path("special/chardev-sda")).unwrap();
    assert!(sda.file_type().is_char_device(), "{sda:?}");
    assert_eq!((libc::major(sda.rdev()), libc::minor(sda.rdev())), (8, 0));
    let err = std::fs::File::open(s.path("special/chardev-sda")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "nodev refuses to open the device");
    let suid = std::fs::symlink_metadata(s.path("special/setuid-root")).unwrap();
    assert_eq!((suid.mode(), suid.uid()), (0o104755, 0));
    assert!(std::fs::symlink_metadata(s.path("special/ancient")).is_ok());
    s.still_serves("special files");

    assert!(s.mount.alive());
    drop(s);
    assert_eq!(hash(&image.path), before, "the image changed");
}

#[test]
fn answers_too_big_for_the_host_are_refused() {
    let image = EvilImage::new();
    // The guest needs time to build these answers: the default deadline.
    let mut s = Session::new(&image, "1000");
    s.fails(Op::List, "dir/hugelist", libc::EIO, "entries, more than the");
    s.fails(Op::Read, "map/manymaps", libc::EIO, "1000000 mappings, more than 4096");
    // 200 MiB: wasmtime refuses to copy that much out of the guest.
    s.fails(Op::Xattr, "xattr/hugexattr", libc::EIO, "too much data is being copied");
    // Through the offline command too, with the count in the message.
    let out = offline_fast("ls", &image.path, &["dir/hugelist"], "1000");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("2000000 entries, more than the 1024 asked"), "{}", stderr(&out));
}

#[test]
fn repeated_failures_on_one_inode_cost_one_guest_call_each() {
    let image = EvilImage::new();
    let mut s = Session::new(&image, FAST);
    // Each failed read costs the kernel's request and at most its retry of
    // one page, never a loop in the host: the number of traps is bounded by
    // the number of operations, not by time.
    const READS: usize = 4;
    for i in 0..READS {
        let err = std::fs::read(s.path("map/map-loop")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "read {i}");
    }
    let traps = s.new_log().matches("iomap-begin: guest trapped: deadline exceeded").count();
    assert!((READS..=2 * READS).contains(&traps), "{traps} deadlines for {READS} reads");
    s.still_serves("repeated reads");
    // Offline: one command, one operation, exactly one trap.
    let out = offline_fast("cat", &image.path, &["map/map-loop"], FAST);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).matches("guest trapped").count(), 1, "{}", stderr(&out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An offline command with a guest deadline of `timeout_ms`.
fn offline_fast(cmd: &str, image: &Path, args: &[&str], timeout_ms: &str) -> Output {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--guest-timeout-ms"), OsStr::new(timeout_ms)];
    all.extend(args.iter().map(OsStr::new));
    offline(cmd, &guest("evil"), image, &all).unwrap()
}

#[test]
fn offline_listings_that_loop_or_never_end_stop() {
    let image = EvilImage::new();
    for (dir, reason) in
        [("dir/badcookie-cycle", "cookie 1 came back: the listing loops"), ("dir/endless", "no end yet")]
    {
        let started = Instant::now();
        let out = offline_fast("ls", &image.path, &[dir], FAST);
        assert_eq!(out.status.code(), Some(1), "{dir}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{dir}: {}", stderr(&out));
        eprintln!("ls {dir}: refused in {:?}", started.elapsed());
    }
    // cp-out seeks for data: a file mapped a byte at a time ends with EIO.
    let out_dir = ScratchDir::new("evil-cp").unwrap();
    let dest = out_dir.path().join("tiny");
    let out = offline_fast("cp-out", &image.path, &["map/tinyholes", dest.to_str().unwrap()], FAST);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("too many pieces"), "{}", stderr(&out));
}

#[test]
fn cp_out_refuses_a_directory_cycle() {
    let dir = ScratchDir::new("cycle").unwrap();
    let mut b = Builder::new(BS as u32, b"cycle");
    let d = b.dir(b.root(), b"d");
    b.file(d, b"f", b"data");
    b.link(d, b"self", d);
    let image = dir.path().join("cycle.img");
    std::fs::write(&image, b.build()).unwrap();
    let dest = dir.path().join("out");
    let out = offline("cp-out", &guest("hello"), &image, &[OsStr::new("/"), dest.as_os_str()]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("a directory has one name"), "{}", stderr(&out));
    assert_eq!(std::fs::read(dest.join("d/f")).unwrap(), b"data", "what came before the cycle was copied");
}

/// `fshost mount` (background mode) with `-o evil=VALUE`: exits, never
/// hangs; killed and failed if it runs past 20 s.
fn mount_with_trick(image: &Path, value: &str) -> Output {
    let mnt = ScratchDir::new("evil-mnt").unwrap();
    let mut child = Command::new(fshost_bin())
        .args(["mount", "--guest-timeout-ms", FAST, "-o"])
        .arg(format!("evil={value}"))
        .arg("--plugin")
        .arg(guest("evil"))
        .arg(image)
        .arg(mnt.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = Command::new("umount").arg("-l").arg(mnt.path()).status();
            panic!("fshost mount -o evil={value} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!fshost_tests::fshost::is_mount_point(mnt.path()).unwrap(), "evil={value} left a mount");
    out
}

#[test]
fn a_guest_whose_mount_fails_or_hangs_makes_mount_exit_nonzero() {
    let image = EvilImage::new();
    for (value, reason) in [
        ("mount-loop", "deadline exceeded"),
        ("mount-fail", "mount: the filesystem is damaged (structure needs cleaning)"),
        ("mount-panic", "evil: deliberate panic in mount"),
        ("mount-badinfo", "block size 3"),
    ] {
        let out = mount_with_trick(&image.path, value);
        assert_eq!(out.status.code(), Some(1), "evil={value}: {}", stderr(&out));
        assert!(stderr(&out).contains("fshost: mount failed"), "evil={value}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "evil={value}: no {reason:?} in {}", stderr(&out));
        // The offline commands say the same.
        let out = offline_fast("info", &image.path, &["-o", &format!("evil={value}")], FAST);
        assert_eq!(out.status.code(), Some(1), "info evil={value}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "info evil={value}: {}", stderr(&out));
    }
    // In the foreground too: FshostMount sees the process exit.
    let err = FshostMount::mount_with(&guest("evil"), &image.path, &["evil=mount-loop"], &["--guest-timeout-ms", FAST])
        .err()
        .expect("a mount that always times out must fail");
    assert!(format!("{err:#}").contains("deadline exceeded"), "{err:#}");
}

/// After a trap the host starts a fresh instance, which must mount again.
/// When those mounts keep failing (here the image's header is overwritten
/// behind the running mount, so hellofs no longer recognises it), the
/// filesystem enters its failed state after three in a row: from then on
/// every operation fails at once with EIO, without calling the guest, and
/// the log says why.
#[test]
fn a_guest_that_cannot_mount_again_fails_the_filesystem_after_three_tries() {
    use std::os::unix::fs::FileExt;
    let image = EvilImage::new();
    let mut s = Session::new(&image, FAST);
    s.still_serves("the first mount");
    std::fs::OpenOptions::new().write(true).open(&image.path).unwrap().write_all_at(b"BROKEN!!", 0).unwrap();
    // The panic throws the instance away; nothing is restarted yet.
    assert_eq!(run(Op::Stat, &s.path("attr/attr-panic")), Err(libc::EIO));
    // Each operation on an uncached name now needs a fresh instance, whose
    // mount fails; the third failure in a row fails the filesystem.
    // Those operations fail with the mount's own error (hellofs calls a
    // bad magic Invalid: EINVAL), or EIO once the failed state is reached.
    for i in 0..3 {
        let got = run(Op::Stat, &s.path(&format!("good/g{}", 10 + i)));
        assert!(matches!(got, Err(libc::EINVAL | libc::EIO)), "try {i}: {got:?}");
    }
    let log = s.new_log();
    assert!(
        log.contains("3 mounts in a row failed, the last with: mount: invalid argument"),
        "no failed state in the log:\n{log}"
    );
    // Failed: later operations fail with EIO without another mount attempt
    // (one would count a fourth failure in a row).
    for i in 0..5 {
        assert_eq!(run(Op::Read, &s.path(&format!("good/g{}", 20 + i))), Err(libc::EIO));
    }
    let log = s.new_log();
    assert!(log.contains("the filesystem is in a failed state"), "{log}");
    assert!(!log.contains("4 mounts in a row"), "the failed filesystem tried to mount again:\n{log}");
    assert!(s.mount.alive(), "the host must keep running, answering EIO");
}

/// Where `needle` (unique) lies in `haystack`.
fn find_unique(haystack: &[u8], needle: &[u8]) -> usize {
    let mut at = haystack.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i);
    let first = at.next().expect("the pattern is in the image");
    assert!(at.next().is_none(), "the pattern is in the image twice");
    first
}

/// The byte ranges where `a` and `b` (of one length) differ.
fn differences(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    assert_eq!(a.len(), b.len(), "the image changed its length");
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, _) in a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y) {
        match out.last_mut() {
            Some((_, end)) if *end == i => *end = i + 1,
            _ => out.push((i, i + 1)),
        }
    }
    out
}

/// A read-write mount (`-o rw`) of evil's write tricks: each lie costs the
/// write or create that met it (EIO, its reason logged), the mount keeps
/// serving, and afterwards the image differs from the original only where
/// the host wrote into blocks it had validated: the file whose `ioend`
/// lied (its own blocks, mapped truthfully) and a good file overwritten.
#[test]
fn write_tricks_cost_their_operation_and_nothing_lands_outside_validated_blocks() {
    const TRICKS: [(&str, &str); 5] = [
        ("wmap-past-end", "outside the"),
        ("wmap-unaligned", "not aligned"),
        ("wmap-misses", "does not contain the offset asked"),
        ("wmap-hole", "is a hole, not mapped or unwritten"),
        ("wmap-inline", "is inline bytes, not mapped or unwritten"),
    ];
    let content = |k: u32| pattern(2 * BS, 500 + k);
    let mut b = Builder::new(BS as u32, b"evil-rw");
    let root = b.root();
    let good = b.dir(root, b"good");
    for i in 0..4 {
        b.file(good, format!("g{i}").as_bytes(), &good_bytes(i));
    }
    let w = b.dir(root, b"w");
    for (k, (name, _)) in TRICKS.iter().enumerate() {
        b.file(w, name.as_bytes(), &content(k as u32));
    }
    b.file(w, b"ioend-size", &content(99));
    b.file(w, b"map-panic", &content(98));
    let other = b.dir(root, b"create-other");
    b.file(other, b"victim", b"victim\n");
    let dir = ScratchDir::new("evil-rw").unwrap();
    let image = dir.path().join("evil-rw.img");
    std::fs::write(&image, b.build()).unwrap();
    let original = std::fs::read(&image).unwrap();

    let mut mount = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
    let mut seen = 0;
    let mut new_log = |mount: &FshostMount| {
        let log = mount.log();
        let fresh = log.get(seen..).unwrap_or_default().to_string();
        seen = log.len();
        fresh
    };
    let data = pattern(100, 77);
    let write_at = |rel: &str, offset: u64| -> Result<usize, i32> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(mount.path().join(rel))
            .map_err(|e| e.raw_os_error().unwrap_or(0))?;
        std::os::unix::fs::FileExt::write_at(&f, &data, offset).map_err(|e| e.raw_os_error().unwrap_or(0))
    };
    for (k, (name, reason)) in TRICKS.iter().enumerate() {
        let rel = format!("w/{name}");
        assert_eq!(write_at(&rel, 10), Err(libc::EIO), "{rel}");
        let log = new_log(&mount);
        assert!(log.contains(reason), "{rel}: no {reason:?} in the log:\n{log}");
        // The kernel drops the pages of a failed write: the file reads as it was.
        assert_eq!(std::fs::read(mount.path().join(&rel)).unwrap(), content(k as u32), "{rel} after the failed write");
    }
    // A lying ioend: the data went into the file's own blocks (validated),
    // the size it answered is refused.
    assert_eq!(write_at("w/ioend-size", 10), Err(libc::EIO));
    let log = new_log(&mount);
    assert!(log.contains("after writing [10, 110)"), "ioend-size: {log}");
    assert_eq!(std::fs::metadata(mount.path().join("w/ioend-size")).unwrap().len(), 2 * BS as u64);
    // A create answering the number of an inode the kernel holds.
    std::fs::metadata(mount.path().join("create-other/victim")).unwrap();
    let created = std::fs::File::create(mount.path().join("create-other/new")).map_err(|e| e.raw_os_error());
    assert_eq!(created.err(), Some(Some(libc::EIO)));
    let log = new_log(&mount);
    assert!(log.contains("already in use"), "create-other: {log}");
    assert_eq!(std::fs::read(mount.path().join("create-other/victim")).unwrap(), b"victim\n");
    // A trap in a write's iomap-begin: the instance is dropped, and the next
    // one mounts read-write and agrees to `begin-write` before it serves
    // (evil refuses writes in an instance that has not: the honest write
    // below proves the host asked again).
    assert_eq!(write_at("w/map-panic", 10), Err(libc::EIO));
    let log = new_log(&mount);
    assert!(log.contains("deliberate panic"), "map-panic: {log}");
    // The mount serves reads and honest writes.
    assert_eq!(std::fs::read(mount.path().join("good/g0")).unwrap(), good_bytes(0));
    assert_eq!(write_at("good/g1", 5), Ok(100));
    let mut g1 = good_bytes(1);
    g1[5..105].copy_from_slice(&data);
    assert_eq!(std::fs::read(mount.path().join("good/g1")).unwrap(), g1);
    assert!(mount.unmount().unwrap().success(), "{}", mount.log());

    let after = std::fs::read(&image).unwrap();
    let ioend_at = find_unique(&original, &content(99)[..512]);
    let g1_at = find_unique(&original, &good_bytes(1)[..512]);
    let validated = [(ioend_at + 10, ioend_at + 110), (g1_at + 5, g1_at + 105)];
    let outside: Vec<_> = differences(&original, &after)
        .into_iter()
        .filter(|&(start, end)| !validated.iter().any(|&(s, e)| s <= start && end <= e))
        .collect();
    assert!(outside.is_empty(), "bytes changed outside the two validated writes: {outside:?}");
    assert_eq!(&after[ioend_at + 10..ioend_at + 110], &data[..]);
    assert_eq!(&after[g1_at + 5..g1_at + 105], &data[..]);
}
