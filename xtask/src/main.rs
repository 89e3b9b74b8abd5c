//! `cargo xtask`: the two commands of the README, and their parts.
//!
//! - `cargo xtask demo`  — set up, build host and guests, make a sample
//!   image, mount it, list it, unmount.
//! - `cargo xtask test`  — set up, build, fmt + clippy, the whole test suite.
//! - `cargo xtask new-plugin NAME [DIR]` — start a guest from sdk/template
//!   (new_plugin.rs).
//! - `cargo xtask build` — build `fshost` (release) and every guest into
//!   `target/guests/NAME.wasm`; `build-c` only the guests written in C.
//! - `cargo xtask install [--prefix DIR] [--destdir DIR]`, `uninstall`,
//!   `deb` — fshost as a system tool (install.rs).
//!
//! Set-up installs what a fresh machine of this kind lacks: the
//! wasm32-wasip2 Rust target and, when running as root, the Debian packages
//! the tests use as oracles (e2fsprogs, fuse3, fuse2fs, attr, acl,
//! stress-ng; dosfstools, mtools and user-mode-linux for FAT, whose reference vfat
//! driver runs in user-mode Linux because this kernel has none), the C
//! guests' toolchain (clang-14, lld-14, wasi-libc; see cguest.rs) and, in
//! `target/py-venv`, componentize-py for the Python guests (pyguest.rs).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

mod bench;
mod cguest;
mod install;
mod new_plugin;
mod pyguest;

/// Guests built by `build`: (package, library name).
const GUESTS: &[(&str, &str)] = &[
    ("fshost-guest-hello-component", "hello"),
    ("fshost-guest-ext4", "ext4"),
    ("fshost-guest-fat", "fat"),
    ("fshost-guest-evil", "evil"),
    ("fshost-guest-partitions", "partitions"),
    ("fshost-guest-qcow2", "qcow2"),
    ("fshost-guest-vhd", "vhd"),
    ("fshost-guest-vmdk", "vmdk"),
];
/// Guests written in C (guests/NAME/*.c), built by `cguest`.
const C_GUESTS: &[&str] = &["hello-c"];
/// Guests written in Python (guests/NAME/app.py), built by `pyguest`.
const PY_GUESTS: &[&str] = &["hello-py"];
/// Debian packages the tests and the C guests need, with a command (or an
/// absolute path to a file) that shows each is present.
const PACKAGES: &[(&str, &str)] = &[
    ("e2fsprogs", "mkfs.ext4"),
    ("fuse3", "fusermount3"),
    ("fuse2fs", "fuse2fs"),
    ("attr", "setfattr"),
    ("acl", "setfacl"),
    ("util-linux", "losetup"),
    // Concurrent namespace stress on read-write mounts (tests/ext4_stress.rs).
    ("stress-ng", "stress-ng"),
    // Partition tables for tests/partitions.rs (sfdisk), compared with the
    // partitions user-mode Linux finds (this kernel has no partition parsers).
    ("fdisk", "sfdisk"),
    // qcow2 images and their raw oracle for tests/disk_images.rs and the
    // qcow2 guest's own tests (qemu-img, qemu-io).
    ("qemu-utils", "qemu-img"),
    ("clang-14", cguest::CLANG),
    ("lld-14", "wasm-ld-14"),
    ("wasi-libc", "/usr/lib/wasm32-wasi/libc.a"),
    ("libclang-rt-14-dev-wasm32", "/usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a"),
    // FAT images for the fat guest's tests, and their reference kernel: the
    // host kernel has no vfat, user-mode Linux (6.1, vfat as modules) does.
    ("dosfstools", "mkfs.vfat"),
    ("mtools", "mcopy"),
    ("user-mode-linux", "linux"),
    ("kmod", "insmod"),
    // `python3 -m venv` for componentize-py (pyguest.rs), should the
    // python3 on PATH be Debian's own.
    ("python3-venv", "/usr/lib/python3.11/ensurepip/__init__.py"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn have(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return std::path::Path::new(cmd).exists();
    }
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1 || test -x /usr/sbin/{cmd} || test -x /sbin/{cmd}"))
        .status()
        .is_ok_and(|s| s.success())
}

fn setup() -> anyhow::Result<()> {
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let has_target = targets.as_ref().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"));
    if !has_target {
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    let missing: Vec<&str> = PACKAGES.iter().filter(|(_, cmd)| !have(cmd)).map(|(pkg, _)| *pkg).collect();
    if !missing.is_empty() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc_geteuid() } != 0 {
            bail!("missing packages {missing:?}; install them (as root: apt-get install {})", missing.join(" "));
        }
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn build() -> anyhow::Result<()> {
    setup()?;
    run(cargo().args(["build", "--release", "-p", "fshost"]))?;
    let mut guests = cargo();
    guests.args(["build", "--release", "--target", "wasm32-wasip2"]);
    for (pkg, _) in GUESTS {
        guests.args(["-p", pkg]);
    }
    run(&mut guests)?;
    let out = target_dir().join("guests");
    std::fs::create_dir_all(&out)?;
    for (_, lib) in GUESTS {
        let built = target_dir().join("wasm32-wasip2/release").join(format!("{lib}.wasm"));
        let dest = out.join(format!("{lib}.wasm"));
        std::fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
        eprintln!("guest: {}", dest.display());
    }
    build_c_guests()?;
    for name in PY_GUESTS {
        pyguest::build(&root(), name, &target_dir().join("py-venv"), &out.join(format!("{name}.wasm")))?;
    }
    Ok(())
}

/// The C guests alone (`cargo xtask build-c`, quicker while writing C).
fn build_c_guests() -> anyhow::Result<()> {
    let out = target_dir().join("guests");
    std::fs::create_dir_all(&out)?;
    for name in C_GUESTS {
        cguest::build(&root(), name, &target_dir().join("c-guests").join(name), &out.join(format!("{name}.wasm")))?;
    }
    Ok(())
}

fn lint() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"]))?;
    run(cargo()
        .args(["clippy", "--release", "--target", "wasm32-wasip2", "-p", "fshost-sdk"])
        .args(GUESTS.iter().flat_map(|(p, _)| ["-p", p]))
        .args(["--", "-D", "warnings"]))
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    build()?;
    lint()?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--release"]).args(extra);
    cmd.env("FSHOST_BIN", target_dir().join("release/fshost"));
    run(&mut cmd)
}

/// The main job on built-in samples: make an ext4 image (mkfs.ext4 -d from
/// a small tree) and a hellofs image, mount each through its guest, list
/// it, read a file, unmount.
fn demo() -> anyhow::Result<()> {
    build()?;
    let work = target_dir().join("demo");
    for mnt in ["ext4-mnt", "hello-mnt"] {
        // A previous demo interrupted mid-way may have left a mount behind.
        let _ = Command::new("umount").arg("-l").arg(work.join(mnt)).status();
    }
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("docs"))?;
    std::fs::write(tree.join("docs/readme.txt"), "Hello from ext4, parsed by a sandboxed guest.\n")?;
    std::os::unix::fs::symlink("docs/readme.txt", tree.join("readme"))?;
    std::fs::write(tree.join("numbers.txt"), (0..20_000).map(|i| format!("{i}\n")).collect::<String>())?;
    let ext4 = work.join("sample-ext4.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "fshost-sample", "-d"]).arg(&tree).arg(&ext4).arg("16M"))?;
    show(&ext4, "ext4", &work.join("ext4-mnt"))?;

    let hello = work.join("sample-hello.img");
    std::fs::write(&hello, sample_hello_image())?;
    show(&hello, "hello", &work.join("hello-mnt"))?;
    eprintln!("demo: mounted, listed and unmounted both samples");
    Ok(())
}

/// Mount `image` with guest `guest` at `mnt`, list it, read a file, unmount.
fn show(image: &std::path::Path, guest: &str, mnt: &std::path::Path) -> anyhow::Result<()> {
    let fshost = target_dir().join("release/fshost");
    let plugin = target_dir().join("guests").join(format!("{guest}.wasm"));
    std::fs::create_dir_all(mnt)?;
    run(Command::new(&fshost).arg("info").arg("--plugin").arg(&plugin).arg(image))?;
    run(Command::new(&fshost).arg("mount").arg("--plugin").arg(&plugin).arg(image).arg(mnt))?;
    let listed =
        run(Command::new("ls").arg("-lR").arg(mnt)).and_then(|()| run(Command::new("cat").arg(mnt.join("readme"))));
    let unmounted = run(Command::new("umount").arg(mnt));
    listed?;
    unmounted
}

fn sample_hello_image() -> Vec<u8> {
    let mut b = hello::image::Builder::new(4096, b"fshost-sample");
    let docs = b.dir(b.root(), b"docs");
    b.file(docs, b"readme.txt", b"Hello from hellofs, the smallest fshost guest.\n");
    b.symlink(b.root(), b"readme", b"docs/readme.txt");
    let big: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
    b.sparse_file(b.root(), b"sparse.bin", 1 << 20, vec![(0, big.clone()), (512 * 1024, big)]);
    b.build()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => build(),
        Some("build-c") => setup().and_then(|()| build_c_guests()),
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("demo") => demo(),
        Some("setup") => setup(),
        Some("bench") => bench::run(&args[1..]),
        Some("new-plugin") => new_plugin::run(&args[1..]),
        Some("install") => install::install(&args[1..]),
        Some("uninstall") => install::uninstall(&args[1..]),
        Some("deb") => install::deb(&args[1..]),
        _ => {
            bail!("usage: cargo xtask <demo|test|build|build-c|lint|setup|bench|new-plugin|install|uninstall|deb>")
        }
    }
}
