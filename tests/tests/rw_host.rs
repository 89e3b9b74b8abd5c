//! Read-write mounts (`-o rw`), the host's half, with guests other than
//! ext4: the opt-in is refused with a clear message by guests that cannot
//! write (a read-only world, or a `begin-write` that says no), an image
//! file has one read-write fshost at a time and no reader while it has one
//! (the locks), and the offline
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
    // Nor a reader while it writes (a shared lock for read-only opens): a
    // read-only mount and an offline command are refused.
    let out = mount_fails(&guest("hello"), &image, "ro");
    assert!(stderr(&out).contains("a read-write fshost mount holds it"), "{}", stderr(&out));
    let out = offline("ls", &guest("hello"), &image, &[OsStr::new("/")]).unwrap();
    assert!(!out.status.success() && stderr(&out).contains("a read-write fshost mount holds it"), "{}", stderr(&out));
    // The lock goes with the first mount's process.
    assert!(first.unmount().unwrap().success(), "{}", first.log());
    // Readers share the image; a writer is refused while one reads.
    let ro = FshostMount::mount(&guest("hello"), &image, &[]).unwrap();
    let listed = offline("ls", &guest("hello"), &image, &[OsStr::new("/")]).unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let out = mount_fails(&guest("evil"), &image, "rw");
    assert!(stderr(&out).contains("another program reads it"), "{}", stderr(&out));
    assert!(stderr(&out).contains(SUGGESTION), "{}", stderr(&out));
    drop(ro);
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

/// The fshost binary hard-linked (or copied) into `dir/bin`, with evil as
/// the only installed guest (`dir/guests`, the search path's
/// `BINDIR/../guests`): detection then tries evil alone.
fn install_with_evil_only(dir: &Path) -> PathBuf {
    for sub in ["bin", "guests", "plugins", "xdg"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let bin = dir.join("bin/fshost");
    if std::fs::hard_link(fshost_bin(), &bin).is_err() {
        std::fs::copy(fshost_bin(), &bin).unwrap();
    }
    std::fs::copy(guest("evil"), dir.join("guests/evil.wasm")).unwrap();
    bin
}

/// A read-write mount opens the image read-write, and detection (no
/// `--plugin`) then mounts each installed guest read-only on it to see
/// which claims it. Such a read-only instance must not reach the device
/// even though the device could be written: evil's `write-when-ro` probe
/// tries to overwrite the first block, and the image must come out of the
/// whole mount byte for byte as it went in.
#[test]
fn a_read_only_instance_on_a_device_opened_read_write_never_writes() {
    let dir = ScratchDir::new("rw-probe").unwrap();
    let image = hello_image(&dir);
    let original = std::fs::read(&image).unwrap();
    let install = dir.path().join("install");
    let bin = install_with_evil_only(&install);
    let mnt = ScratchDir::new("rw-probe-mnt").unwrap();
    let log_path = dir.path().join("fshost.log");
    let mut child = Command::new(&bin)
        .args(["mount", "--foreground"])
        .arg(&image)
        .arg(mnt.path())
        .args(["-o", "rw,evil=write-when-ro"])
        .env("FSHOST_PLUGIN_PATH", install.join("plugins"))
        .env("XDG_DATA_HOME", install.join("xdg"))
        .env("HOME", &install)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    /// Unmounts (lazily if need be) and reaps fshost if the test fails
    /// midway: a failed assertion must not leave the mount behind.
    struct Cleanup<'a>(&'a Path, &'a mut std::process::Child);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if is_mount_point(self.0).unwrap_or(false) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
            if matches!(self.1.try_wait(), Ok(None)) {
                let _ = self.1.kill();
            }
            let _ = self.1.wait();
        }
    }
    let cleanup = Cleanup(mnt.path(), &mut child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !is_mount_point(mnt.path()).unwrap() {
        if let Some(status) = cleanup.1.try_wait().unwrap() {
            panic!("fshost exited {status} before mounting:\n{}", log());
        }
        assert!(std::time::Instant::now() < deadline, "no mount within 30 s:\n{}", log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Detection chose evil, whose read-write instance serves; its probe
    // tried to write and was told no.
    assert!(log().contains("detected evil"), "{}", log());
    let log_text = log();
    let answer = log_text.lines().find(|l| l.contains("a read-only instance's device write answered"));
    assert!(answer.is_some_and(|l| l.contains("Err(") && l.contains("read-only")), "{log_text}");
    assert_eq!(std::fs::read(mnt.path().join("note")).unwrap(), b"hello\n");
    assert!(Command::new("umount").arg(mnt.path()).status().unwrap().success());
    let status = cleanup.1.wait().unwrap();
    assert!(status.success(), "fshost exited {status}:\n{}", log());
    let after = std::fs::read(&image).unwrap();
    let changed = after.iter().zip(&original).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 0, "a read-only probe changed {changed} bytes of the image:\n{}", log());
}

/// After a guest instance is dropped (a trap), a read-write mount's caches
/// go with it: the failed call may have changed part of what it meant to,
/// and the fresh instance knows the device as it is. evil's `forgetful`
/// keeps a chmod in the instance's memory only; after `attr-panic` traps,
/// the mount must show the mode a fresh instance reports, not the cached
/// one.
#[test]
fn a_guest_restart_drops_the_caches_of_a_read_write_mount() {
    let dir = ScratchDir::new("rw-restart").unwrap();
    let mut b = Builder::new(4096, b"restart");
    let root = b.root();
    let file = b.file(root, b"forgetful", b"forgetful\n");
    b.set_meta(file, 0o644, 0, 0, (1_700_000_000, 0));
    b.file(root, b"attr-panic", b"trap\n");
    let image = dir.path().join("restart.img");
    std::fs::write(&image, b.build()).unwrap();
    let mount = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
    let path = mount.path().join("forgetful");
    let perm = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).unwrap().mode() & 0o7777
    };
    // Past the kernel's attribute timeout of a read-write mount (1 s), so
    // a stat asks fshost.
    let past_ttl = || std::thread::sleep(std::time::Duration::from_millis(1300));
    assert_eq!(perm(), 0o644);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    past_ttl();
    assert_eq!(perm(), 0o600, "the live instance's answer");
    let trapped = std::fs::metadata(mount.path().join("attr-panic")).unwrap_err();
    assert_eq!(trapped.raw_os_error(), Some(libc::EIO));
    assert!(mount.log().contains("deliberate panic"), "{}", mount.log());
    past_ttl();
    assert_eq!(perm(), 0o644, "a cached answer of the dropped instance outlived it:\n{}", mount.log());
    assert_eq!(std::fs::read(&path).unwrap(), b"forgetful\n");
}

/// One FUSE write makes a bounded number of guest calls: evil's
/// `wmap-one-block` maps a write one block per iomap-begin, so a 1 MiB
/// write (256 blocks, one FUSE request) is answered short after at most 64
/// calls rather than holding the mount's change lock for 256; the caller
/// continues, and the file ends up exactly as written.
#[test]
fn one_write_makes_a_bounded_number_of_guest_calls_then_answers_short() {
    const BS: usize = 4096;
    let dir = ScratchDir::new("rw-calls").unwrap();
    let mut b = Builder::new(BS as u32, b"calls");
    let root = b.root();
    b.file(root, b"wmap-one-block", &pattern(256 * BS, 8));
    let image = dir.path().join("calls.img");
    std::fs::write(&image, b.build()).unwrap();
    let mount = FshostMount::mount(&guest("evil"), &image, &["rw"]).unwrap();
    let path = mount.path().join("wmap-one-block");
    let data = pattern(256 * BS, 9);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let first = std::os::unix::fs::FileExt::write_at(&f, &data, 0).unwrap();
    assert!(first > 0 && first <= 64 * BS, "one write(2) of 1 MiB wrote {first} bytes:\n{}", mount.log());
    assert_eq!(first % BS, 0, "a short write ends on a block");
    std::os::unix::fs::FileExt::write_all_at(&f, &data[first..], first as u64).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}
