//! The README's "Installing, mount(8) and fstab" section, followed as
//! written: its shell blocks marked `<!-- test: NAME -->` are read from
//! README.md and run line by line with bash, in the checkout, as root (or,
//! after a `# as the user:` line, as an ordinary user, nobody), then what
//! each line should have done is checked with the real programs:
//!
//! - `install`: the binary is at `$PREFIX/bin/fshost`, its `--version`
//!   finds the installed guests there, /sbin/mount.fshost leads to it;
//! - every `mount` line: mount(8) mounted a read-only FUSE filesystem
//!   there, whose file reads back byte for byte what mkfs.ext4 -d put in;
//!   every `umount` line: it is gone (and, for a user's mount, the mount
//!   was that user's);
//! - `uninstall`: no file is left under PREFIX, no /sbin/mount.fshost;
//! - `deb`: dpkg installs the package, mount(8) finds its helper and guest
//!   with no other set-up, `dpkg -r` leaves none of its files.
//!
//! The only substitutions are the values of the variables the README
//! assigns (`PREFIX`, `IMG`, `MNT`, `UIMG`, `UMNT`: scratch paths here),
//! and `cargo xtask ...`, which runs this build's xtask binary with
//! `--no-build` for `install` and `deb` (what `cargo xtask` runs once it
//! has built; target/ is built already, and a `cargo` inside `cargo test`
//! would wait for the lock the test holds). The README's preconditions are
//! met as it states them: an ext4 image, an empty mountpoint, for the user
//! an image they can read, a directory they own and /dev/fuse 0666.
//!
//! Everything is undone, also on panic: /etc/fstab and /etc/fuse.conf
//! byte for byte, /dev/fuse's mode, /sbin/mount.fshost, the package, the
//! mounts, the scratch prefix. Needs root.

mod common;
use common::{Scratch, ok, target_dir};

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The ordinary user of the `user` block.
const USER: u32 = 65534;

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The block after `<!-- test: NAME -->`: the lines of the fenced code
/// block that follows it, continuations joined.
fn block(readme: &str, name: &str) -> Vec<String> {
    let marker = format!("<!-- test: {name} -->");
    let at = readme.find(&marker).unwrap_or_else(|| panic!("README.md has no `{marker}`"));
    let mut lines = readme[at + marker.len()..].lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(fence.starts_with("```"), "`{marker}` is not followed by a code block but {fence:?}");
    let mut out: Vec<String> = Vec::new();
    let mut continued = false;
    for line in lines.by_ref() {
        if line.starts_with("```") {
            return out;
        }
        let (text, more) = match line.strip_suffix('\\') {
            Some(t) => (t, true),
            None => (line, false),
        };
        match out.last_mut() {
            Some(last) if continued => last.push_str(text),
            _ => out.push(text.to_string()),
        }
        continued = more;
    }
    panic!("the code block after `{marker}` is not closed");
}

/// `NAME=value` assignments of a line that holds only assignments (and a
/// comment), or `None`.
fn assignments(line: &str) -> Option<Vec<&str>> {
    let code = line.split(" #").next().unwrap_or("").trim();
    let words: Vec<&str> = code.split_whitespace().collect();
    let names: Vec<&str> = words
        .iter()
        .filter_map(|w| w.split_once('=').map(|(n, _)| n))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    (!words.is_empty() && names.len() == words.len()).then_some(names)
}

/// A file's bytes and mode, put back on drop.
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
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.original) {
            eprintln!("warning: could not restore {}: {e}", self.path);
        }
        let _ = std::fs::set_permissions(self.path, Permissions::from_mode(self.mode));
    }
}

/// Whatever a failed run left: mounts, the helper link, the package,
/// /dev/fuse's mode.
struct Undo {
    mounts: Vec<PathBuf>,
    fuse_mode: u32,
}

impl Drop for Undo {
    fn drop(&mut self) {
        for m in &self.mounts {
            if mounted(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        let _ = std::fs::remove_file("/sbin/mount.fshost");
        if Command::new("dpkg").args(["-s", "fshost"]).output().is_ok_and(|o| o.status.success()) {
            let _ = Command::new("dpkg").args(["-r", "fshost"]).output();
        }
        let _ = std::fs::set_permissions("/dev/fuse", Permissions::from_mode(self.fuse_mode));
    }
}

/// Whether `path` is a mount point now (from mountinfo: root may not stat
/// another user's FUSE mount).
fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

fn mountinfo_line(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap())).unwrap_or_default().to_string()
}

/// Every non-directory under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An ext4 image (mkfs.ext4 -d, readable by all) holding `data.bin`.
fn ext4_image(dir: &Path, image: &Path, data: &[u8]) {
    let src = dir.join(format!("src-{}", image.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), data).unwrap();
    std::fs::set_permissions(src.join("data.bin"), Permissions::from_mode(0o644)).unwrap();
    ok(
        "mkfs.ext4",
        Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(image).arg("16M").output().unwrap(),
    );
    std::fs::set_permissions(image, Permissions::from_mode(0o644)).unwrap();
}

/// Who runs a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Root,
    User,
}

/// The README's world: the variables' values, the `cargo` it runs, and
/// the checks made after lines.
struct Run {
    vars: BTreeMap<&'static str, PathBuf>,
    shim: PathBuf,
    user_home: PathBuf,
    data: Vec<u8>,
    /// `dpkg -L fshost` after `dpkg -i`.
    packaged: Vec<String>,
    mounts_checked: usize,
}

impl Run {
    fn command(&self, who: Who, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(repo()).stdin(Stdio::null());
        c.env_clear().envs(self.vars.iter().map(|(k, v)| (*k, v)));
        match who {
            Who::Root => {
                let path = format!("{}:{}", self.shim.display(), std::env::var("PATH").unwrap_or_default());
                c.env("PATH", path).env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
                c.env("CARGO_TARGET_DIR", target_dir());
            }
            Who::User => {
                c.uid(USER).gid(USER).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", &self.user_home);
            }
        }
        c
    }

    /// Run one line of the README with bash; it must succeed.
    fn line(&mut self, who: Who, line: &str) {
        let out = self.command(who, "bash").args(["-euo", "pipefail", "-c", line]).output().unwrap();
        assert!(
            out.status.success(),
            "the README's line `{line}` (as {who:?}) failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.after(who, line);
    }

    /// The mountpoint variable a `mount`/`umount` line names.
    fn target_of(&self, line: &str) -> PathBuf {
        let named: Vec<&PathBuf> = self
            .vars
            .iter()
            .filter(|(k, _)| k.ends_with("MNT") && line.contains(&format!("\"${k}\"")))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(named.len(), 1, "`{line}`: which mountpoint?");
        named[0].clone()
    }

    /// What `line` should have done, checked.
    fn after(&mut self, who: Who, line: &str) {
        let first = line.split_whitespace().next().unwrap_or("");
        match first {
            "mount" => {
                let mnt = self.target_of(line);
                assert!(mounted(&mnt), "`{line}` succeeded but nothing is mounted at {}", mnt.display());
                let info = mountinfo_line(&mnt);
                let fields: Vec<&str> = info.split(' ').collect();
                let fstype = info.split(" - ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("");
                assert!(fstype.starts_with("fuse"), "`{line}`: not a FUSE mount: {info}");
                assert!(
                    fields.get(5).is_some_and(|o| o.split(',').any(|o| o == "ro")),
                    "`{line}`: not read-only: {info}"
                );
                if who == Who::User {
                    assert!(info.contains(&format!("user_id={USER}")), "`{line}`: not the user's mount: {info}");
                }
                // Read as whoever mounted it (root may not read a user's FUSE mount).
                let cat = self.command(who, "cat").arg(mnt.join("data.bin")).output().unwrap();
                assert!(cat.status.success(), "`{line}`: cat: {}", String::from_utf8_lossy(&cat.stderr));
                assert!(cat.stdout == self.data, "`{line}`: data.bin reads back different bytes");
                self.mounts_checked += 1;
            }
            "umount" => {
                let mnt = self.target_of(line);
                assert!(!mounted(&mnt), "`{line}` succeeded but {} is still mounted", mnt.display());
            }
            "ln" if line.contains("/sbin/mount.fshost") => {
                let helper = std::fs::canonicalize("/sbin/mount.fshost").unwrap();
                let bin = std::fs::canonicalize(self.vars["PREFIX"].join("bin/fshost")).unwrap();
                assert_eq!(helper, bin, "/sbin/mount.fshost does not lead to the installed binary");
            }
            "dpkg" if line.starts_with("dpkg -i") => {
                let listed = ok("dpkg -L", Command::new("dpkg").args(["-L", "fshost"]).output().unwrap());
                self.packaged = listed.lines().map(String::from).collect();
                for want in ["/usr/bin/fshost", "/usr/sbin/mount.fshost", "/usr/lib/fshost/plugins/ext4.wasm"] {
                    assert!(self.packaged.iter().any(|l| l == want), "the package lacks {want}:\n{listed}");
                }
            }
            "dpkg" if line.starts_with("dpkg -r") => {
                assert!(!self.packaged.is_empty(), "dpkg -r before dpkg -i");
                let left: Vec<&String> = self
                    .packaged
                    .iter()
                    .filter(|f| Path::new(f).symlink_metadata().is_ok_and(|m| !m.is_dir()))
                    .collect();
                assert!(left.is_empty(), "dpkg -r left {left:?}");
                let status = Command::new("dpkg").args(["-s", "fshost"]).output().unwrap();
                assert!(!status.status.success(), "fshost is still installed after `{line}`");
            }
            _ => {}
        }
    }

    /// Run block `name` of the README: assignments must name variables
    /// this test gives values to; `# as root:` / `# as the user:` switch
    /// who runs the lines that follow.
    fn block(&mut self, readme: &str, name: &str) {
        let mut who = Who::Root;
        for line in block(readme, name) {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                let comment = comment.trim();
                if comment.starts_with("as root") {
                    who = Who::Root;
                } else if comment.starts_with("as the user") {
                    who = Who::User;
                }
                continue;
            }
            if let Some(names) = assignments(trimmed) {
                for n in names {
                    assert!(self.vars.contains_key(n), "the README assigns {n}, which this test does not provide");
                }
                continue;
            }
            self.line(who, trimmed);
        }
    }
}

#[test]
fn the_readme_install_and_fstab_sections_work_as_written() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc_geteuid() }, 0, "this test installs into the system and needs root");
    assert!(Path::new("/sbin/mount.fshost").symlink_metadata().is_err(), "/sbin/mount.fshost exists; not replacing it");
    let installed = Command::new("dpkg").args(["-s", "fshost"]).output().unwrap();
    assert!(!installed.status.success(), "a fshost package is installed; the test will not replace it");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();

    let scratch = Scratch::new("readme");
    let dir = scratch.0.clone();
    std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
    let data: Vec<u8> = (0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 23) as u8).collect();
    let (img, mnt) = (dir.join("disk.img"), dir.join("mnt"));
    ext4_image(&dir, &img, &data);
    std::fs::create_dir(&mnt).unwrap();
    // The user's: an image they can read, a directory they own, a home.
    let alice = dir.join("alice");
    std::fs::create_dir(&alice).unwrap();
    std::os::unix::fs::chown(&alice, Some(USER), Some(USER)).unwrap();
    let (uimg, umnt) = (alice.join("disk.img"), alice.join("disk"));
    ext4_image(&dir, &uimg, &data);
    std::fs::create_dir(&umnt).unwrap();
    std::os::unix::fs::chown(&umnt, Some(USER), Some(USER)).unwrap();

    // `cargo xtask ARGS` as this build's xtask, without building.
    let shim = dir.join("shim");
    std::fs::create_dir(&shim).unwrap();
    let xtask = env!("CARGO_BIN_EXE_xtask");
    std::fs::write(
        shim.join("cargo"),
        format!(
            "#!/bin/sh\n[ \"$1\" = xtask ] || {{ echo \"README test: only cargo xtask expected: cargo $*\" >&2; exit 99; }}\n\
             shift\ncase \"$1\" in install|deb) exec {xtask} \"$@\" --no-build ;; *) exec {xtask} \"$@\" ;; esac\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(shim.join("cargo"), Permissions::from_mode(0o755)).unwrap();

    let fstab = Restore::new("/etc/fstab");
    let fuse_conf = Restore::new("/etc/fuse.conf");
    let fuse_mode = std::fs::metadata("/dev/fuse").expect("this test needs /dev/fuse").mode() & 0o7777;
    let undo = Undo { mounts: vec![mnt.clone(), umnt.clone()], fuse_mode };

    let prefix = dir.join("prefix");
    let mut run = Run {
        vars: BTreeMap::from([("PREFIX", prefix.clone()), ("IMG", img), ("MNT", mnt), ("UIMG", uimg), ("UMNT", umnt)]),
        shim,
        user_home: alice,
        data,
        packaged: Vec::new(),
        mounts_checked: 0,
    };

    run.block(&readme, "install");
    let version = ok("fshost --version", Command::new(prefix.join("bin/fshost")).arg("--version").output().unwrap());
    for g in ["ext4", "fat"] {
        let want = prefix.join(format!("lib/fshost/plugins/{g}.wasm"));
        assert!(version.contains(&format!("{g} ({})", want.display())), "--version:\n{version}");
    }
    run.block(&readme, "mount");
    // As distributions ship it, which the user block says it needs.
    std::fs::set_permissions("/dev/fuse", Permissions::from_mode(0o666)).unwrap();
    run.block(&readme, "user");
    std::fs::set_permissions("/dev/fuse", Permissions::from_mode(fuse_mode)).unwrap();
    run.block(&readme, "uninstall");
    let left = files_under(&prefix);
    assert!(left.is_empty(), "the README's uninstall left {left:?}");
    assert!(
        Path::new("/sbin/mount.fshost").symlink_metadata().is_err(),
        "the README's uninstall left /sbin/mount.fshost"
    );
    run.block(&readme, "deb");
    // Three as root, one as the user, one from the package.
    assert!(run.mounts_checked >= 6, "the README's blocks mounted {} times, not 6", run.mounts_checked);

    drop(undo);
    let (fstab_bytes, fuse_conf_bytes) = (fstab.original.clone(), fuse_conf.original.clone());
    drop(fuse_conf);
    drop(fstab);
    assert_eq!(std::fs::read("/etc/fstab").unwrap(), fstab_bytes, "/etc/fstab not restored");
    assert_eq!(std::fs::read("/etc/fuse.conf").unwrap(), fuse_conf_bytes, "/etc/fuse.conf changed");
    assert_eq!(std::fs::metadata("/dev/fuse").unwrap().mode() & 0o7777, fuse_mode, "/dev/fuse's mode");
    assert!(Path::new("/sbin/mount.fshost").symlink_metadata().is_err());
}
