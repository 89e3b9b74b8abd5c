//! Mounts by ordinary users through /etc/fstab (issue 14, items 1 and 2),
//! with the real mount(8), umount(8), fusermount3 and /etc/fuse.conf.
//!
//! mount(8) runs /sbin/mount.fshost as the user for a `user` or `users`
//! line; fshost then mounts through the set-uid fusermount3. The tests:
//!
//! - `user`: nobody mounts and reads byte-exact what mkfs.ext4 -d put in
//!   the image; another user (daemon) may not unmount it; nobody can;
//! - `users`: another user unmounts nobody's mount, and the server ends;
//! - `allow_other`: refused with a message naming /etc/fuse.conf and
//!   `user_allow_other` while the file lacks the line (as Debian ships it);
//!   with the line, the mount works and another user reads through it.
//!
//! Each test changes the system under guards that undo it, also on panic:
//! /etc/fstab and /etc/fuse.conf are restored byte for byte, /dev/fuse's
//! mode (0666, as distributions ship it; 0600 on this machine kind) is put
//! back, /sbin/mount.fshost (a link to a copy of the binary) is removed.
//! mount(8) reads only /etc/fstab for a user (`-T` is root's), hence the
//! real file. Needs root.

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fshost_tests::fshost::{fshost_bin, guest};
use fshost_tests::kernel::{require_root, run};
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;

/// The user who mounts.
const USER: u32 = 65534;
/// Another ordinary user (Debian's `daemon`).
const OTHER: u32 = 1;

/// The tests share /etc/fstab, /etc/fuse.conf, /dev/fuse and /sbin/mount.fshost.
static SYSTEM: Mutex<()> = Mutex::new(());

/// A file's bytes, put back on drop.
struct Restore {
    path: &'static str,
    original: Vec<u8>,
    mode: u32,
}

impl Restore {
    fn new(path: &'static str) -> Restore {
        let original = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let mode = std::fs::metadata(path).unwrap().mode() & 0o7777;
        Restore { path, original, mode }
    }

    /// The original with `lines` appended.
    fn append(&self, lines: &str) {
        let mut text = self.original.clone();
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        text.extend_from_slice(lines.as_bytes());
        std::fs::write(self.path, text).unwrap();
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.original) {
            eprintln!("warning: could not restore {}: {e}", self.path);
        }
        let _ = std::fs::set_permissions(self.path, Permissions::from_mode(self.mode));
    }
}

/// /dev/fuse at 0666 while it lives.
struct DevFuse {
    mode: u32,
}

impl DevFuse {
    fn open_to_all() -> DevFuse {
        let mode = std::fs::metadata("/dev/fuse").expect("these tests need /dev/fuse").mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", Permissions::from_mode(0o666)).unwrap();
        DevFuse { mode }
    }
}

impl Drop for DevFuse {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions("/dev/fuse", Permissions::from_mode(self.mode));
    }
}

/// /sbin/mount.fshost -> `target` while it lives.
struct HelperLink;

impl HelperLink {
    fn to(target: &Path) -> HelperLink {
        let link = Path::new("/sbin/mount.fshost");
        assert!(link.symlink_metadata().is_err(), "/sbin/mount.fshost exists (an installed fshost?); not replacing it");
        std::os::unix::fs::symlink(target, link).unwrap();
        HelperLink
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file("/sbin/mount.fshost");
    }
}

/// Whether `path` is a mount point now (from mountinfo: root may not stat
/// another user's FUSE mount).
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// Unmounts (lazily, as root) whatever a failed test left.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A scratch world the users can reach: a copy of the binary and the
/// guest, an ext4 image of /data.bin and /note.txt, a mountpoint of
/// nobody's and a home for its compiled-guest cache.
struct World {
    dir: ScratchDir,
    bin: PathBuf,
    plugin: PathBuf,
    image: PathBuf,
    mnt: PathBuf,
    home: PathBuf,
    data: Vec<u8>,
}

fn world() -> World {
    let dir = ScratchDir::new("user-fstab").unwrap();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data = pattern(200 * 1024 + 3, 21);
    std::fs::write(src.join("data.bin"), &data).unwrap();
    std::fs::write(src.join("note.txt"), b"mounted by a user\n").unwrap();
    for f in ["data.bin", "note.txt"] {
        std::fs::set_permissions(src.join(f), Permissions::from_mode(0o644)).unwrap();
    }
    let image = dir.path().join("disk.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&image).arg("16M")).unwrap();
    std::fs::set_permissions(&image, Permissions::from_mode(0o644)).unwrap();
    let bin = dir.path().join("fshost");
    std::fs::copy(fshost_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, Permissions::from_mode(0o755)).unwrap();
    let plugin = dir.path().join("ext4.wasm");
    std::fs::copy(guest("ext4"), &plugin).unwrap();
    std::fs::set_permissions(&plugin, Permissions::from_mode(0o644)).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(USER), Some(USER)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(USER), Some(USER)).unwrap();
    World { dir, bin, plugin, image, mnt, home, data }
}

impl World {
    /// The fstab line for the image with `options` after the guest.
    fn fstab_line(&self, options: &str) -> String {
        format!(
            "{} {} fshost plugin={},{options},noauto 0 0\n",
            self.image.display(),
            self.mnt.display(),
            self.plugin.display()
        )
    }

    /// `program` as `uid` (its own group, no other), clean environment.
    fn as_user(&self, uid: u32, program: &str) -> Command {
        let mut c = Command::new(program);
        c.uid(uid).gid(uid).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", &self.home);
        c.current_dir("/").stdin(Stdio::null());
        c
    }
}

fn output(c: &mut Command) -> Output {
    c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `fshost mount` processes serving `mnt`.
fn servers_of(mnt: &Path) -> Vec<u32> {
    let want = mnt.as_os_str().as_encoded_bytes();
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

/// nobody mounts through mount(8), reads the files back, and the server
/// runs as nobody.
fn mount_as_user_and_read(world: &World) {
    let mounted_by = output(world.as_user(USER, "mount").arg(&world.mnt));
    assert!(mounted_by.status.success(), "mount as uid {USER}:\n{}", text(&mounted_by));
    assert!(mounted(&world.mnt), "mount(8) succeeded but nothing is mounted:\n{}", text(&mounted_by));
    let cat = output(world.as_user(USER, "cat").arg(world.mnt.join("data.bin")));
    assert!(cat.status.success() && cat.stdout == world.data, "data.bin read back differs:\n{}", text(&cat));
    let servers = servers_of(&world.mnt);
    assert_eq!(servers.len(), 1, "{servers:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", servers[0])).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let want = USER.to_string();
    assert!(uid.split_whitespace().skip(1).all(|id| id == want), "the server does not run as uid {USER}: {uid}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().find(|l| l.split(' ').nth(4) == Some(world.mnt.to_str().unwrap())).unwrap();
    assert!(line.contains(&format!("user_id={USER}")), "not the user's FUSE mount: {line}");
}

fn umount_as(world: &World, uid: u32) -> Output {
    output(world.as_user(uid, "umount").arg(&world.mnt))
}

#[test]
fn a_user_line_lets_that_user_mount_and_unmount_and_no_one_else_unmount() {
    require_root();
    let _one = SYSTEM.lock().unwrap_or_else(|p| p.into_inner());
    let world = world();
    let _dev = DevFuse::open_to_all();
    let _link = HelperLink::to(&world.bin);
    let fstab = Restore::new("/etc/fstab");
    fstab.append(&world.fstab_line("user"));
    let _unmount = Unmount(world.mnt.clone());

    mount_as_user_and_read(&world);
    let refused = umount_as(&world, OTHER);
    assert!(!refused.status.success(), "uid {OTHER} unmounted uid {USER}'s `user` mount");
    assert!(mounted(&world.mnt), "{}", text(&refused));
    let done = umount_as(&world, USER);
    assert!(done.status.success(), "umount by the user who mounted:\n{}", text(&done));
    assert!(!mounted(&world.mnt));
    wait_until("the server ends after umount", Duration::from_secs(10), || servers_of(&world.mnt).is_empty());
    drop(fstab);
}

#[test]
fn a_users_line_lets_another_user_unmount() {
    require_root();
    let _one = SYSTEM.lock().unwrap_or_else(|p| p.into_inner());
    let world = world();
    let _dev = DevFuse::open_to_all();
    let _link = HelperLink::to(&world.bin);
    let fstab = Restore::new("/etc/fstab");
    fstab.append(&world.fstab_line("users"));
    let _unmount = Unmount(world.mnt.clone());

    mount_as_user_and_read(&world);
    let done = umount_as(&world, OTHER);
    assert!(done.status.success(), "umount by another user of a `users` mount:\n{}", text(&done));
    assert!(!mounted(&world.mnt));
    wait_until("the server ends after umount", Duration::from_secs(10), || servers_of(&world.mnt).is_empty());
    drop(fstab);
}

#[test]
fn allow_other_needs_user_allow_other_in_fuse_conf() {
    require_root();
    let _one = SYSTEM.lock().unwrap_or_else(|p| p.into_inner());
    let world = world();
    let _dev = DevFuse::open_to_all();
    let _link = HelperLink::to(&world.bin);
    let fstab = Restore::new("/etc/fstab");
    fstab.append(&world.fstab_line("user,allow_other"));
    let fuse_conf = Restore::new("/etc/fuse.conf");
    let _unmount = Unmount(world.mnt.clone());

    // As Debian ships it: the line is commented out.
    fuse_conf.append("#user_allow_other\n");
    let refused = output(world.as_user(USER, "mount").arg(&world.mnt));
    assert!(!refused.status.success(), "allow_other without user_allow_other was mounted");
    assert!(!mounted(&world.mnt));
    let said = text(&refused);
    assert!(said.contains("/etc/fuse.conf") && said.contains("user_allow_other"), "{said}");
    assert!(!said.contains("panicked"), "{said}");

    fuse_conf.append("user_allow_other\n");
    mount_as_user_and_read(&world);
    // Another user reads through nobody's mount: allow_other is in force.
    let other = output(world.as_user(OTHER, "cat").arg(world.mnt.join("note.txt")));
    assert!(other.status.success(), "uid {OTHER} cannot read through an allow_other mount:\n{}", text(&other));
    assert_eq!(other.stdout, b"mounted by a user\n");
    let done = umount_as(&world, USER);
    assert!(done.status.success(), "{}", text(&done));
    assert!(!mounted(&world.mnt));
    drop(fuse_conf);
    drop(fstab);
    drop(world.dir);
}
