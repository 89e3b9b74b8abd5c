//! fshost as a system tool, through the real programs: `cargo xtask
//! install` into a prefix, the installed binary finding its installed
//! guests, mount(8) running the installed helper (on the command line and
//! from a scratch fstab with `mount -T`), `uninstall` leaving nothing, and
//! the Debian package installed and removed with dpkg.
//!
//! These change the system (a /sbin/mount.fshost link, a dpkg package):
//! each change is undone on drop. Needs root, like the rest of the suite.

mod common;
use common::{Scratch, ok, target_dir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn xtask() -> Command {
    // The xtask binary directly: `cargo xtask` would wait for the target
    // directory this very `cargo test` holds.
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env("CARGO_TARGET_DIR", target_dir());
    c
}

/// The tests share /sbin/mount.fshost and /usr (the package's files):
/// one at a time.
static SYSTEM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc_geteuid() }, 0, "these tests install into the system and need root");
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn sh(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// An ext4 image (mkfs.ext4 -d) holding `greeting` with known bytes, and
/// an empty mountpoint beside it.
fn image(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(src.join("greeting"), &bytes).unwrap();
    let img = dir.join("disk.img");
    ok("mkfs.ext4", sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&img).arg("16M")));
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    (img, mnt, bytes)
}

/// /sbin/mount.fshost pointing at `target` for the guard's life.
struct HelperLink;

impl HelperLink {
    fn to(target: &Path) -> HelperLink {
        let link = Path::new("/sbin/mount.fshost");
        assert!(
            link.symlink_metadata().is_err(),
            "/sbin/mount.fshost exists already (an installed fshost?); the test will not replace it"
        );
        std::os::unix::fs::symlink(target, link).unwrap();
        HelperLink
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file("/sbin/mount.fshost");
    }
}

fn fstype_and_options(mnt: &Path) -> String {
    ok("findmnt", sh(Command::new("findmnt").args(["-n", "-o", "FSTYPE,OPTIONS"]).arg(mnt)))
}

/// Mounted through mount(8): the file reads back byte for byte, the mount
/// is FUSE and read-only; then umount(8) ends it.
fn check_mounted_then_umount(mnt: &Path, bytes: &[u8], what: &str) {
    assert_eq!(std::fs::read(mnt.join("greeting")).unwrap(), bytes, "{what}: content");
    let shown = fstype_and_options(mnt);
    assert!(shown.starts_with("fuse") && shown.contains("ro,"), "{what}: {shown}");
    ok("umount", sh(Command::new("umount").arg(mnt)));
    assert!(!sh(Command::new("mountpoint").arg("-q").arg(mnt)).status.success(), "{what}: still mounted");
}

#[test]
fn install_mount_with_mount8_and_fstab_then_uninstall() {
    require_root();
    let _one = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("prefix");
    let prefix = scratch.0.join("usr-local");
    ok("install", sh(xtask().args(["install", "--no-build", "--prefix"]).arg(&prefix)));

    // The installed binary finds the installed guests by name.
    let version = ok("fshost --version", sh(Command::new(prefix.join("bin/fshost")).arg("--version")));
    for g in ["ext4", "fat"] {
        let want = prefix.join(format!("lib/fshost/plugins/{g}.wasm"));
        assert!(version.contains(&format!("{g} ({})", want.display())), "--version:\n{version}");
    }
    assert!(version.contains("contract: fshost:plugin@"), "{version}");
    assert!(!version.contains("evil"), "a test guest was installed:\n{version}");
    // Man pages render; completions load into bash.
    for page in ["man1/fshost.1", "man1/fshost-mount.1", "man8/mount.fshost.8"] {
        let text = std::fs::read_to_string(prefix.join("share/man").join(page)).unwrap();
        assert!(text.starts_with(".TH") || text.contains("\n.TH"), "{page} is not a man page");
    }
    let bash = prefix.join("share/bash-completion/completions/fshost");
    let complete =
        ok("bash", sh(Command::new("bash").arg("-c").arg(format!("source {} && complete -p fshost", bash.display()))));
    assert!(complete.contains("fshost"), "{complete}");

    // Service mode's units name the installed binary and pass systemd's
    // own checks.
    let units = prefix.join("lib/systemd/system");
    let service = std::fs::read_to_string(units.join("fshost@.service")).unwrap();
    let exec = format!("ExecStart={} serve-fds", prefix.join("bin/fshost").display());
    assert!(service.contains(&exec), "{service}");
    ok(
        "systemd-analyze verify",
        sh(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(units.join("fshost.socket"))
            .arg(units.join("fshost@.service"))),
    );
    let security = ok(
        "systemd-analyze security",
        sh(Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(units.join("fshost@.service"))),
    );
    let overall = security.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_default();
    assert!(overall.contains("SAFE"), "systemd does not rate fshost@.service SAFE: {overall}");

    let (img, mnt, bytes) = image(&scratch.0);
    {
        let _link = HelperLink::to(&prefix.join("sbin/mount.fshost"));
        ok(
            "mount -t fshost",
            sh(Command::new("mount").args(["-t", "fshost"]).arg(&img).arg(&mnt).args(["-o", "plugin=ext4,ro"])),
        );
        check_mounted_then_umount(&mnt, &bytes, "mount -t fshost -o plugin=ext4");

        ok(
            "mount -t fshost.ext4",
            sh(Command::new("mount").args(["-t", "fshost.ext4"]).arg(&img).arg(&mnt).args(["-o", "noexec"])),
        );
        assert!(fstype_and_options(&mnt).contains("noexec"), "noexec not applied");
        check_mounted_then_umount(&mnt, &bytes, "mount -t fshost.ext4");

        // An fstab line with systemd's and mount(8)'s own options.
        let fstab = scratch.0.join("fstab");
        std::fs::write(
            &fstab,
            format!(
                "{} {} fshost plugin=ext4,ro,nofail,x-systemd.automount,noauto 0 0\n",
                img.display(),
                mnt.display()
            ),
        )
        .unwrap();
        ok("mount -T fstab DIR", sh(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt)));
        check_mounted_then_umount(&mnt, &bytes, "fstab by mountpoint");

        // Without a guest named, the installed guests are asked (detection).
        ok("mount -t fshost without plugin=", sh(Command::new("mount").args(["-t", "fshost"]).arg(&img).arg(&mnt)));
        check_mounted_then_umount(&mnt, &bytes, "detected");
        // The service mode cannot detect: it says how to name the guest.
        let refused = sh(Command::new("mount").args(["-t", "fshost", "-o", "service"]).arg(&img).arg(&mnt));
        assert!(!refused.status.success());
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("plugin=NAME"), "{err}");
    }

    ok("uninstall", sh(xtask().args(["uninstall", "--prefix"]).arg(&prefix)));
    let left: Vec<_> = walk(&prefix);
    assert!(left.is_empty(), "uninstall left {left:?}");
}

/// Every non-directory under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// dpkg -r on drop, should the test fail with the package installed.
struct Package;

impl Drop for Package {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-r", "fshost"]).output();
    }
}

#[test]
fn the_debian_package_installs_mounts_and_removes_cleanly() {
    require_root();
    let _one = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let listed = sh(Command::new("dpkg").args(["-s", "fshost"]));
    assert!(!listed.status.success(), "a fshost package is installed already; the test will not replace it");
    assert!(Path::new("/sbin/mount.fshost").symlink_metadata().is_err(), "/sbin/mount.fshost exists already");
    ok("xtask deb", sh(xtask().args(["deb", "--no-build"])));
    let debs: Vec<PathBuf> = std::fs::read_dir(target_dir().join("deb"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let _package = Package;
    ok("dpkg -i", sh(Command::new("dpkg").arg("-i").arg(&debs[0])));
    let files = ok("dpkg -L", sh(Command::new("dpkg").args(["-L", "fshost"])));
    for want in [
        "/usr/bin/fshost",
        "/usr/sbin/mount.fshost",
        "/usr/lib/fshost/plugins/ext4.wasm",
        "/usr/share/man/man1/fshost.1",
        "/usr/lib/systemd/system/fshost@.service",
        "/usr/lib/systemd/system/fshost.socket",
    ] {
        assert!(files.lines().any(|l| l == want), "the package lacks {want}:\n{files}");
    }
    // mount(8) finds the packaged helper and guest with no other set-up.
    let scratch = Scratch::new("deb");
    let (img, mnt, bytes) = image(&scratch.0);
    ok("mount", sh(Command::new("mount").args(["-t", "fshost.ext4"]).arg(&img).arg(&mnt)));
    check_mounted_then_umount(&mnt, &bytes, "packaged mount.fshost");

    ok("dpkg -r", sh(Command::new("dpkg").args(["-r", "fshost"])));
    let left: Vec<&str> =
        files.lines().filter(|f| Path::new(f).symlink_metadata().is_ok_and(|m| !m.is_dir())).collect();
    assert!(left.is_empty(), "dpkg -r left {left:?}");
}
