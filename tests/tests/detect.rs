//! Filesystem detection: without `--plugin` (or with `--plugin auto`)
//! fshost tries each installed filesystem guest's read-only mount and uses
//! the one that claims the image, through the real binary.
//!
//! The oracle is the same command given `--plugin NAME`: its output must be
//! byte for byte what detection produces (the `--plugin` path is what the
//! ext4, FAT and hello suites check against the kernel). Images are made
//! by mkfs.ext4 -d, mkfs.vfat + mcopy, the hello guest's image writer,
//! sfdisk and qemu-img.
//!
//! The development tree installs test guests that read hellofs too (evil,
//! hello-c, hello-py), so most tests run an isolated install: the binary
//! hard-linked into a scratch `bin/`, its guests in the `guests/` beside it
//! (the search path's `BINDIR/../guests`), and `FSHOST_PLUGIN_PATH`,
//! `XDG_DATA_HOME` and `HOME` pointed at scratch directories.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fshost_tests::fshost::{fshost_bin, guest};
use fshost_tests::kernel::{run, sfdisk};
use fshost_tests::scratch::ScratchDir;
use hello::image::Builder;

/// An fshost installed on its own with the given guests.
struct Install {
    dir: ScratchDir,
    bin: PathBuf,
}

impl Install {
    /// `guests`: (the name installed, the built guest it is a copy of).
    fn new(guests: &[(&str, &str)]) -> Install {
        let dir = ScratchDir::new("detect").unwrap();
        for sub in ["bin", "guests", "plugins", "xdg"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let bin = dir.path().join("bin/fshost");
        if std::fs::hard_link(fshost_bin(), &bin).is_err() {
            std::fs::copy(fshost_bin(), &bin).unwrap();
        }
        let install = Install { dir, bin };
        for (name, built) in guests {
            install.add("guests", name, built);
        }
        install
    }

    /// Put a copy of the built guest `built` at `sub/name.wasm`.
    fn add(&self, sub: &str, name: &str, built: &str) {
        std::fs::copy(guest(built), self.path(sub).join(format!("{name}.wasm"))).unwrap();
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn fshost(&self, args: &[&OsStr]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("FSHOST_PLUGIN_PATH", self.path("plugins"))
            .env("XDG_DATA_HOME", self.path("xdg"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("running the installed fshost")
    }
}

/// The filesystem guests of the isolated install (and the volume guests
/// the image layers need, which detection must not try).
const GUESTS: &[(&str, &str)] =
    &[("ext4", "ext4"), ("fat", "fat"), ("hello", "hello"), ("partitions", "partitions"), ("qcow2", "qcow2")];

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `args` without `--plugin`, with `--plugin auto` and with `--plugin
/// name`: all succeed with the same stdout (less `info`'s line naming the
/// detected guest, which must name `name`).
fn same_as_named(install: &Install, name: &str, args: &[&OsStr]) -> String {
    let detected = install.fshost(args);
    assert!(detected.status.success(), "{args:?} without --plugin: {}", text(&detected.stderr));
    let mut auto_args = args.to_vec();
    auto_args.extend([os("--plugin"), os("auto")]);
    let auto = install.fshost(&auto_args);
    assert!(auto.status.success(), "{auto_args:?}: {}", text(&auto.stderr));
    assert_eq!(text(&auto.stdout), text(&detected.stdout), "--plugin auto is leaving it out");
    let mut named_args = args.to_vec();
    named_args.extend([os("--plugin"), os(name)]);
    let named = install.fshost(&named_args);
    assert!(named.status.success(), "{named_args:?}: {}", text(&named.stderr));
    let mut got = text(&detected.stdout);
    if args[0] == "info" && args.contains(&os("--json")) {
        let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&got).unwrap();
        assert_eq!(obj.remove("detected"), Some(name.into()), "{got}");
        got = format!("{}\n", serde_json::Value::Object(obj));
    } else if args[0] == "info" {
        let line = got.lines().find(|l| l.starts_with("detected: ")).map(String::from);
        let line = line.unwrap_or_else(|| panic!("info does not say what it detected:\n{got}"));
        assert!(line.starts_with(&format!("detected: {name} (")), "{line}");
        assert!(!text(&named.stdout).contains("detected: "), "nothing is detected when --plugin names the guest");
        got = got.replace(&format!("{line}\n"), "");
    }
    assert_eq!(got, text(&named.stdout), "{args:?}: detection reads differently from --plugin {name}");
    got
}

/// ls, stat, cat and info of `image` (with `extra` arguments, e.g.
/// `--partition 1`) agree with `--plugin name`; `file` is a file in it
/// holding `content`.
fn check_image(install: &Install, name: &str, image: &Path, extra: &[&OsStr], file: &str, content: &[u8]) {
    let with = |args: &[&'static OsStr]| joined(args, image, extra);
    let listing = same_as_named(install, name, &with(&[os("ls"), os("--json")]));
    assert!(listing.contains(&format!("\"{}\"", file.trim_start_matches('/'))), "{file} not listed:\n{listing}");
    same_as_named(install, name, &with(&[os("ls"), os("-l"), os("--time-style"), os("epoch")]));
    same_as_named(install, name, &[with(&[os("stat"), os("--json")]), vec![os(file)]].concat());
    let cat = same_as_named(install, name, &[with(&[os("cat")]), vec![os(file)]].concat());
    assert_eq!(cat.as_bytes(), content);
    same_as_named(install, name, &with(&[os("info")]));
    same_as_named(install, name, &with(&[os("info"), os("--json")]));
    // -v says which guest it chose.
    let verbose = install.fshost(&[with(&[os("ls"), os("-v")])].concat());
    let log = text(&verbose.stderr);
    assert!(log.contains(&format!("detected {name} on ")), "-v does not name the guest:\n{log}");
}

/// `args`, then `image`, then `extra`.
fn joined<'a>(args: &[&'a OsStr], image: &'a Path, extra: &[&'a OsStr]) -> Vec<&'a OsStr> {
    let mut v = args.to_vec();
    v.push(image.as_os_str());
    v.extend_from_slice(extra);
    v
}

/// A directory with `greeting.txt` holding `content` and a subdirectory.
fn tree(dir: &Path, content: &[u8]) -> PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("greeting.txt"), content).unwrap();
    std::fs::write(root.join("sub/inner"), b"inner\n").unwrap();
    root
}

fn ext4_image(dir: &Path, content: &[u8]) -> PathBuf {
    let image = dir.join("ext4.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(tree(dir, content)).arg(&image).arg("8M")).unwrap();
    image
}

#[test]
fn ext4_is_found_by_the_ext4_guest() {
    let install = Install::new(GUESTS);
    let content = b"found without --plugin\n";
    let image = ext4_image(install.dir.path(), content);
    check_image(&install, "ext4", &image, &[], "/greeting.txt", content);
    // In the development tree, with its test guests (which read hellofs,
    // not ext4), the same.
    let out = Command::new(fshost_bin())
        .args([os("cat"), image.as_os_str(), os("/greeting.txt")])
        .env("FSHOST_PLUGIN_PATH", install.path("plugins"))
        .env("XDG_DATA_HOME", install.path("xdg"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, content);
}

#[test]
fn fat_is_found_by_the_fat_guest() {
    let install = Install::new(GUESTS);
    let dir = install.dir.path();
    let content = b"on a FAT volume\n";
    let root = tree(dir, content);
    let image = dir.join("fat.img");
    run(Command::new("mkfs.vfat").args(["-n", "DETECT", "-C"]).arg(&image).arg("4096")).unwrap();
    let mut mcopy = Command::new("mcopy");
    mcopy.args(["-s", "-m", "-Q", "-i"]).arg(&image);
    mcopy.arg(root.join("greeting.txt")).arg(root.join("sub")).arg("::/");
    run(&mut mcopy).unwrap();
    check_image(&install, "fat", &image, &[], "/greeting.txt", content);
}

fn hello_image(dir: &Path, content: &[u8]) -> PathBuf {
    let mut b = Builder::new(4096, b"detect");
    let root = b.root();
    b.file(root, b"greeting.txt", content);
    let image = dir.join("hello.img");
    std::fs::write(&image, b.build()).unwrap();
    image
}

#[test]
fn hellofs_is_found_by_the_hello_guest() {
    let install = Install::new(GUESTS);
    let content = b"hello, detected\n";
    let image = hello_image(install.dir.path(), content);
    check_image(&install, "hello", &image, &[], "/greeting.txt", content);
}

/// A 32 MiB GPT disk whose second partition is an ext4 (the first is
/// blank), written by sfdisk and mkfs.ext4 -E offset.
fn gpt_disk(dir: &Path, content: &[u8]) -> PathBuf {
    let image = dir.join("gpt.img");
    std::fs::File::create(&image).unwrap().set_len(32 << 20).unwrap();
    let script = "label: gpt\nstart=2048, size=8192, type=L, name=blank\nstart=10240, size=40960, type=L, name=data\n";
    sfdisk(&image, script).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree(dir, content))
        .arg("-E")
        .arg(format!("offset={}", 10240 * 512))
        .arg(&image)
        .arg(format!("{}k", 40960 / 2)))
    .unwrap();
    image
}

#[test]
fn a_gpt_partition_and_a_qcow2_of_the_disk() {
    let install = Install::new(GUESTS);
    let dir = install.dir.path();
    let content = b"in partition 2\n";
    let disk = gpt_disk(dir, content);
    check_image(&install, "ext4", &disk, &[os("--partition"), os("2")], "/greeting.txt", content);
    // qcow2 -> GPT -> ext4, nothing named.
    let qcow2 = dir.join("gpt.qcow2");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&disk).arg(&qcow2)).unwrap();
    check_image(&install, "ext4", &qcow2, &[os("--partition"), os("2")], "/greeting.txt", content);
    // The blank partition: nothing claims it, and the error says why.
    let out = install.fshost(&[os("ls"), qcow2.as_os_str(), os("--partition"), os("1")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for name in ["ext4", "fat", "hello"] {
        assert!(err.contains(&format!("\n  {name}: ")), "{name} not among the refusals:\n{err}");
    }
}

#[test]
fn a_blank_image_is_claimed_by_nobody_and_each_refusal_is_listed() {
    let install = Install::new(GUESTS);
    let image = install.path("blank.img");
    std::fs::File::create(&image).unwrap().set_len(4 << 20).unwrap();
    let out = install.fshost(&[os("ls"), image.as_os_str()]);
    assert!(!out.status.success(), "a blank image was listed: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("no installed filesystem guest recognises it"), "{err}");
    let refusals: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).map(str::trim).collect();
    // Every filesystem guest, in search order, and no volume guest.
    let names: Vec<&str> = refusals.iter().map(|l| l.split(": ").next().unwrap()).collect();
    assert_eq!(names, ["ext4", "fat", "hello"], "{err}");
    for (line, name) in refusals.iter().zip(names) {
        assert!(line.len() > name.len() + 2, "{name} refused without a reason: {err}");
        // The same guest, named, refuses too.
        let named = install.fshost(&[os("ls"), image.as_os_str(), os("--plugin"), os(name)]);
        assert!(!named.status.success(), "--plugin {name} lists a blank image: {}", text(&named.stdout));
    }
    // The same refusal from info.
    let info = install.fshost(&[os("info"), image.as_os_str()]);
    assert!(!info.status.success() && text(&info.stderr).contains("recognises"), "{}", text(&info.stderr));
}

#[test]
fn two_guests_that_claim_an_image_are_refused_by_name() {
    let install = Install::new(&[("ext4", "ext4")]);
    install.add("plugins", "hello-one", "hello");
    install.add("plugins", "hello-two", "hello");
    let content = b"claimed twice\n";
    let image = hello_image(install.dir.path(), content);
    let out = install.fshost(&[os("ls"), image.as_os_str()]);
    assert!(!out.status.success(), "an ambiguous image was listed: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("hello-one") && err.contains("hello-two") && err.contains("--plugin"), "{err}");
    assert!(!err.contains("ext4"), "ext4 did not claim it: {err}");
    // Either, named, reads it.
    for name in ["hello-one", "hello-two"] {
        let out = install.fshost(&[os("cat"), image.as_os_str(), os("/greeting.txt"), os("--plugin"), os(name)]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert_eq!(out.stdout, content);
    }
}

#[test]
fn mount_finds_the_guest_too() {
    let install = Install::new(GUESTS);
    let content = b"mounted without naming a guest\n";
    let image = ext4_image(install.dir.path(), content);
    // `--plugin auto` (the helper always passes --plugin), in the
    // development tree: of its guests only ext4 reads ext4.
    let mut mount = fshost_tests::fshost::FshostMount::mount_with(Path::new("auto"), &image, &[], &[]).unwrap();
    assert_eq!(std::fs::read(mount.path().join("greeting.txt")).unwrap(), content);
    let mut names: Vec<String> = std::fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let named = install.fshost(&[os("ls"), image.as_os_str(), os("--plugin"), os("ext4")]);
    let mut listed: Vec<String> = text(&named.stdout).lines().map(String::from).collect();
    listed.sort();
    assert_eq!(names, listed, "the mount lists what `ls --plugin ext4` lists");
    assert!(mount.log().contains("detected ext4 on "), "{}", mount.log());
    assert!(mount.unmount().unwrap().success(), "{}", mount.log());
}

#[test]
fn serve_does_not_detect() {
    // Service mode promises that only the confined server parses the
    // image; detection would parse it in the front end.
    let install = Install::new(GUESTS);
    let image = ext4_image(install.dir.path(), b"served\n");
    let dir = install.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let out = install.fshost(&[os("serve"), image.as_os_str(), dir.as_os_str()]);
    assert!(!out.status.success(), "served without --plugin");
    assert!(text(&out.stderr).contains("--plugin NAME"), "{}", text(&out.stderr));
    assert!(!fshost_tests::fshost::is_mount_point(&dir).unwrap());
}
