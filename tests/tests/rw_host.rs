//! Read-write mounts (`-o rw`), the host's half, with guests other than
//! ext4: the opt-in is refused with a clear message by guests that cannot
//! write (a read-only world, or a `begin-write` that says no), an image
//! file has one read-write fshost at a time (the lock), and the offline
//! commands never write (the image is byte-compared before and after).
//! What a writing guest does to an image is `ext4_write.rs`'s; what a lying
//! one cannot make the host do is `malicious_guest.rs`'s.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fshost_tests::fshost::{FshostMount, fshost_bin, guest, is_mount_point, offline};
use fshost_tests::kernel::run;
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;
use hello::image::Builder;

/// What every refusal of `-o rw` ends with.
const SUGGESTION: &str = "mount read-only (without -o rw)";

/// A small hellofs image.
fn hello_image(dir: &ScratchDir) -> PathBuf {
    let mut b = Builder::new(4096, b"rw");
    let root = b.root();
    let docs = b.dir(root, b"docs");
    b.file(docs, b"a.bin", &pattern(10_000, 3));
    b.file(root, b"note", b"hello\n");
    b.symlink(root, b"link", b"docs/a.bin");
    let path = dir.path().join("hello.img");
    std::fs::write(&path, b.build()).unwrap();
    path
}

/// A FAT image with a file, made by mkfs.vfat and mtools-free means (the
/// root alone: the FAT guest cannot write, which is all this needs).
fn fat_image(dir: &ScratchDir) -> PathBuf {
    let path = dir.path().join("fat.img");
    run(Command::new("mkfs.vfat").args(["-C", "-n", "RWTEST"]).arg(&path).arg("4096")).unwrap();
    path
}

/// An ext4 image with a few files, made by mkfs.ext4 -d.
fn ext4_image(dir: &ScratchDir) -> PathBuf {
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/data.bin"), pattern(100_000, 5)).unwrap();
    std::fs::write(root.join("small"), b"small\n").unwrap();
    let path = dir.path().join("ext4.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&root).arg(&path).arg("16M")).unwrap();
    path
}

/// `fshost mount --foreground ... -o OPTIONS` expected to fail: its output.
fn mount_fails(plugin: &Path, image: &Path, options: &str) -> Output {
    let mnt = ScratchDir::new("rw-mnt").unwrap();
    let out = Command::new(fshost_bin())
        .args(["mount", "--foreground", "--plugin"])
        .arg(plugin)
        .arg(image)
        .arg(mnt.path())
        .args(["-o", options])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!is_mount_point(mnt.path()).unwrap(), "left a mount behind");
    assert!(!out.status.success(), "-o {options} with {} mounted:\n{}", plugin.display(), stderr(&out));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rw_is_refused_for_guests_that_cannot_write() {
    let dir = ScratchDir::new("rw-refused").unwrap();
    let hello = hello_image(&dir);
    let fat = fat_image(&dir);
    // (guest, image, what the message says besides the suggestion)
    let cases = [
        // An SDK guest: `writer` exported, `begin-write` refuses (the default).
        ("hello", &hello, "the guest cannot write this filesystem: this guest cannot write"),
        ("fat", &fat, "the guest cannot write this filesystem:"),
        // A C guest of the read-only world: no `writer` export at all.
        ("hello-c", &hello, "cannot write: it does not export fshost:plugin/writer@0.2.0"),
    ];
    for (name, image, says) in cases {
        let before = std::fs::read(image).unwrap();
        let out = mount_fails(&guest(name), image, "rw");
        let err = stderr(&out);
        assert!(err.contains(says), "{name}: {err}");
        assert!(err.contains(SUGGESTION), "{name}: {err}");
        assert_eq!(std::fs::read(image).unwrap(), before, "{name}: the refused mount changed the image");
        // The same guest and image mount read-only, by default and with -o ro.
        for options in [&[][..], &["ro"][..]] {
            let mount = FshostMount::mount(&guest(name), image, options).unwrap();
            assert!(std::fs::read_dir(mount.path()).unwrap().count() > 0 || name == "fat", "{name}");
            let written = std::fs::write(mount.path().join("new"), b"x").unwrap_err();
            assert_eq!(written.raw_os_error(), Some(libc::EROFS), "{name}: a write on a read-only mount");
        }
    }
}

#[test]
fn a_refusal_sentence_is_cleaned_and_cut() {
    let dir = ScratchDir::new("rw-refusal").unwrap();
    let image = hello_image(&dir);
    let out = mount_fails(&guest("evil"), &image, "rw,evil=refuse-write");
    let err = stderr(&out);
    let line = err.lines().find(|l| l.contains("evil refuses:")).unwrap_or_else(|| panic!("no refusal in:\n{err}"));
    assert!(line.contains(SUGGESTION), "{line}");
    assert!(!line.chars().any(|c| c.is_control()), "control characters reached the terminal: {line:?}");
    assert!(line.contains("red"), "the words between the control characters are kept: {line}");
    // 1,400 characters asked, at most 300 shown, and the cut is marked.
    assert!(line.contains('…'), "{line}");
    assert!(line.chars().count() < 300 + 200, "{} characters: {line}", line.chars().count());
    // Read-only, the same guest mounts (begin-write is never called).
    let mount = FshostMount::mount(&guest("evil"), &image, &["evil=refuse-write"]).unwrap();
    assert_eq!(std::fs::read(mount.path().join("note")).unwrap(), b"hello\n");
}

#[test]
fn one_read_write_fshost_per_image() {
    let dir = ScratchDir::new("rw-lock").unwrap();
    let image = hello_image(&dir);
    // evil agrees to write (it writes nothing itself).
    let mut first = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
    let out = mount_fails(&guest("evil"), &image, "rw");
    let err = stderr(&out);
    assert!(err.contains("another program holds it locked"), "{err}");
    assert!(err.contains(SUGGESTION), "{err}");
    // Read-only mounts are not refused.
    let ro = FshostMount::mount(&guest("hello"), &image, &[]).unwrap();
    assert_eq!(std::fs::read(ro.path().join("note")).unwrap(), b"hello\n");
    drop(ro);
    // The lock goes with the first mount's process.
    assert!(first.unmount().unwrap().success(), "{}", first.log());
    let again = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
    assert_eq!(std::fs::read(again.path().join("note")).unwrap(), b"hello\n");
}

#[test]
fn offline_commands_refuse_rw_and_never_write() {
    let dir = ScratchDir::new("rw-offline").unwrap();
    let images = [("hello", hello_image(&dir), "docs/a.bin"), ("ext4", ext4_image(&dir), "sub/data.bin")];
    for (name, image, file) in &images {
        let plugin = guest(name);
        let before = std::fs::read(image).unwrap();
        let mtime = std::fs::metadata(image).unwrap().modified().unwrap();
        for cmd in ["ls", "stat", "cat", "info"] {
            let args: Vec<&OsStr> = match cmd {
                "ls" => vec![OsStr::new("-l"), OsStr::new("/")],
                "stat" | "cat" => vec![OsStr::new(file)],
                _ => vec![],
            };
            let ok = offline(cmd, &plugin, image, &args).unwrap();
            assert!(ok.status.success(), "{name} {cmd}: {}", stderr(&ok));
            let mut with_rw = args.clone();
            with_rw.extend([OsStr::new("-o"), OsStr::new("rw")]);
            let refused = offline(cmd, &plugin, image, &with_rw).unwrap();
            assert!(!refused.status.success(), "{name} {cmd} -o rw ran");
            assert!(stderr(&refused).contains("-o rw is for `fshost mount`"), "{name} {cmd}: {}", stderr(&refused));
        }
        let dest = dir.path().join(format!("copy-{name}"));
        let copied = offline("cp-out", &plugin, image, &[OsStr::new("/"), dest.as_os_str()]).unwrap();
        assert!(copied.status.success(), "{name} cp-out: {}", stderr(&copied));
        assert_eq!(std::fs::read(image).unwrap(), before, "{name}: an offline command changed the image");
        assert_eq!(std::fs::metadata(image).unwrap().modified().unwrap(), mtime, "{name}: the image was written");
    }
}

/// The value of `name:` in a /proc status file, whitespace collapsed.
fn field(status: &str, name: &str) -> String {
    let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name}:"));
    line[name.len() + 1..].split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn a_read_write_mount_is_sandboxed_while_it_writes() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "runs as root (the sandbox drops to nobody)");
    let dir = ScratchDir::new("rw-sandbox").unwrap();
    let image = hello_image(&dir);
    let mount = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
    // An honest overwrite inside the file's blocks (evil maps writes onto them).
    let f = std::fs::OpenOptions::new().write(true).open(mount.path().join("docs/a.bin")).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"written", 100).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut expected = pattern(10_000, 3);
    expected[100..107].copy_from_slice(b"written");
    assert_eq!(std::fs::read(mount.path().join("docs/a.bin")).unwrap(), expected);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", mount.pid())).unwrap();
    let mut seen = 0;
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(field(&status, "Seccomp"), "2", "{status}");
        assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
        assert_eq!(field(&status, "CapEff"), "0000000000000000", "{status}");
        assert_eq!(field(&status, "Uid"), "65534 65534 65534 65534", "{status}");
        seen += 1;
    }
    assert!(seen > 1, "threads of the serving process");
    assert!(mount.log().contains("seccomp allow-list of "), "{}", mount.log());
}

#[test]
fn sigterm_and_umount_end_a_read_write_mount_with_the_guests_clean_unmount() {
    let dir = ScratchDir::new("rw-end").unwrap();
    let image = hello_image(&dir);
    for how in ["umount", "SIGTERM"] {
        let mut mount = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
        assert_eq!(std::fs::read(mount.path().join("note")).unwrap(), b"hello\n");
        let status = match how {
            "umount" => mount.unmount().unwrap(),
            _ => {
                // SAFETY: kill has no memory effects; the pid is our child's.
                assert_eq!(unsafe { libc::kill(mount.pid() as libc::pid_t, libc::SIGTERM) }, 0);
                mount.wait_exit(std::time::Duration::from_secs(10)).unwrap()
            }
        };
        assert!(status.success(), "{how}: {status}\n{}", mount.log());
        // `destroy` ran: evil's `unmount` answered, the device was flushed.
        assert!(mount.log().contains("unmounted cleanly"), "{how}:\n{}", mount.log());
        assert!(!is_mount_point(mount.path()).unwrap(), "{how}");
    }
}

#[test]
fn a_refused_punch_or_shrink_leaves_the_file_as_it_was() {
    let dir = ScratchDir::new("rw-refused-punch").unwrap();
    let image = hello_image(&dir);
    let before = std::fs::read(&image).unwrap();
    let mount = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
    let path = mount.path().join("docs/a.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // evil answers fallocate and setattr with `read-only`: nothing may change,
    // not even the partial blocks at the ends of the range or past the new size.
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    for (mode, what) in [(punch, "punch-hole"), (libc::FALLOC_FL_ZERO_RANGE, "zero-range")] {
        // SAFETY: fallocate on a descriptor we own.
        let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), mode, 100, 5000) };
        assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EROFS)), "{what}");
    }
    assert_eq!(f.set_len(1000).unwrap_err().raw_os_error(), Some(libc::EROFS), "truncate");
    drop(f);
    assert_eq!(std::fs::read(&path).unwrap(), pattern(10_000, 3));
    drop(mount);
    assert_eq!(std::fs::read(&image).unwrap(), before, "the image changed");
}
