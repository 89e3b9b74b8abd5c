//! `cargo xtask install`, `uninstall` and `deb`: fshost as a system tool.
//!
//! Layout under PREFIX (default /usr/local), as distributions expect it:
//!
//! | path | what |
//! |---|---|
//! | `bin/fshost` | the host |
//! | `sbin/mount.fshost` | mount(8)'s helper: a symlink to `../bin/fshost` |
//! | `lib/fshost/plugins/{ext4,fat}.wasm` | the guests (found by `--plugin NAME` from BINDIR/../lib/fshost/plugins) |
//! | `share/man/man1/fshost*.1`, `man8/mount.fshost.8` | man pages, from the CLI definition (`fshost generate`) |
//! | `share/bash-completion/completions/fshost`, `share/zsh/vendor-completions/_fshost`, `share/fish/vendor_completions.d/fshost.fish` | completions |
//! | `lib/systemd/system/fshost.socket`, `fshost@.service` | service mode's units (dist/systemd), naming PREFIX/bin/fshost |
//!
//! mount(8) looks for helpers in /sbin only: with PREFIX /usr that is where
//! `sbin/mount.fshost` lands (/sbin is /usr/sbin on Debian 12); for another
//! prefix, link it there by hand (the install says so).
//!
//! `install` records what it wrote in `lib/fshost/installed-files`;
//! `uninstall` removes exactly those files. `deb` stages an install with
//! PREFIX /usr and builds a Debian package with dpkg-deb, Debian's own
//! packager (dpkg then tracks the files).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{run, target_dir};

/// The guests a system install ships (hello and evil are test guests).
const INSTALLED_GUESTS: &[&str] = &["ext4", "fat"];

/// Service mode's systemd units, from dist/systemd (`@bindir@` replaced).
const SYSTEMD_UNITS: &[&str] = &["fshost.socket", "fshost@.service"];

/// Where the manifest of an install lives, under PREFIX.
const MANIFEST: &str = "lib/fshost/installed-files";

struct Opts {
    prefix: PathBuf,
    destdir: Option<PathBuf>,
    build: bool,
}

fn parse(args: &[String], default_prefix: &str) -> anyhow::Result<Opts> {
    let mut o = Opts { prefix: default_prefix.into(), destdir: None, build: true };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => o.prefix = it.next().context("--prefix needs a directory")?.into(),
            "--destdir" => o.destdir = Some(it.next().context("--destdir needs a directory")?.into()),
            "--no-build" => o.build = false,
            other => bail!("unknown option {other}; usage: [--prefix DIR] [--destdir DIR] [--no-build]"),
        }
    }
    if !o.prefix.is_absolute() {
        bail!("--prefix must be an absolute path");
    }
    Ok(o)
}

impl Opts {
    /// PREFIX as files are written: under DESTDIR when staging.
    fn root(&self) -> PathBuf {
        match &self.destdir {
            Some(d) => d.join(self.prefix.strip_prefix("/").unwrap_or(&self.prefix)),
            None => self.prefix.clone(),
        }
    }
}

/// `cargo xtask install [--prefix DIR] [--destdir DIR] [--no-build]`.
pub fn install(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args, "/usr/local")?;
    let files = install_into(&opts)?;
    let root = opts.root();
    let manifest = root.join(MANIFEST);
    let listing: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(&manifest, listing).with_context(|| format!("writing {}", manifest.display()))?;
    eprintln!("install: {} files under {} (listed in {})", files.len(), root.display(), manifest.display());
    if opts.destdir.is_none() && !Path::new("/sbin/mount.fshost").exists() && opts.prefix != Path::new("/usr") {
        eprintln!(
            "install: mount(8) finds helpers in /sbin only; for `mount -t fshost` run: ln -s {} /sbin/mount.fshost",
            opts.prefix.join("sbin/mount.fshost").display()
        );
    }
    Ok(())
}

/// `cargo xtask uninstall [--prefix DIR] [--destdir DIR]`: remove what
/// `install` wrote (its manifest), then the directories it left empty.
pub fn uninstall(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args, "/usr/local")?;
    let root = opts.root();
    let manifest = root.join(MANIFEST);
    let listing = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {} (nothing installed?)", manifest.display()))?;
    let mut removed = 0;
    for file in listing.lines().filter(|l| !l.is_empty()).map(PathBuf::from).chain([manifest.clone()]) {
        if !file.starts_with(&root) {
            bail!("{} lists {}, outside {}", manifest.display(), file.display(), root.display());
        }
        match std::fs::remove_file(&file) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
        // Directories of ours that are now empty (remove_dir fails on others).
        let mut dir = file.parent();
        while let Some(d) = dir.filter(|d| *d != root && d.starts_with(&root)) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    eprintln!("uninstall: removed {removed} files under {}", root.display());
    Ok(())
}

/// `cargo xtask deb [--no-build]`: target/deb/fshost_VERSION_ARCH.deb.
pub fn deb(args: &[String]) -> anyhow::Result<()> {
    let stage = target_dir().join("deb/stage");
    let _ = std::fs::remove_dir_all(&stage);
    let mut opts = parse(args, "/usr")?;
    opts.prefix = "/usr".into();
    opts.destdir = Some(stage.clone());
    install_into(&opts)?;
    // As dh_strip does: the package ships the binary without its debug
    // info (128 MB -> 28 MB, and that much less to compress).
    run(Command::new("strip").arg("--strip-debug").arg(stage.join("usr/bin/fshost")))?;
    let arch = String::from_utf8(
        Command::new("dpkg").arg("--print-architecture").output().context("running dpkg --print-architecture")?.stdout,
    )?;
    let arch = arch.trim();
    let version = env!("CARGO_PKG_VERSION");
    let size_kib = dir_size(&stage)? / 1024;
    std::fs::create_dir_all(stage.join("DEBIAN"))?;
    std::fs::write(
        stage.join("DEBIAN/control"),
        format!(
            "Package: fshost\nVersion: {version}\nArchitecture: {arch}\nMaintainer: fshost developers <fshost@example.invalid>\n\
             Installed-Size: {size_kib}\nDepends: libc6, fuse3\nSection: admin\nPriority: optional\n\
             Homepage: https://example.invalid/fshost\n\
             Description: mount untrusted filesystem images through sandboxed WebAssembly guests\n \
             fshost parses filesystem metadata (ext2/3/4, FAT) in WebAssembly guests run\n \
             under wasmtime with hard limits, validates every answer, does the data IO\n \
             itself and serves the result read-only through FUSE, in a process that\n \
             drops its privileges (uid, capabilities, Landlock, seccomp).\n"
        ),
    )?;
    let out = target_dir().join(format!("deb/fshost_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zgzip", "--build"]).arg(&stage).arg(&out))?;
    eprintln!("deb: {}", out.display());
    Ok(())
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.path().symlink_metadata()?;
        total += if meta.is_dir() { dir_size(&e.path())? } else { meta.len() };
    }
    Ok(total)
}

/// Write every file of the layout under `opts.root()`; returns them.
fn install_into(opts: &Opts) -> anyhow::Result<Vec<PathBuf>> {
    if opts.build {
        crate::build()?;
    }
    let root = opts.root();
    let mut files = Vec::new();
    let mut put = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let dest = root.join(to);
        std::fs::create_dir_all(dest.parent().context("no parent")?)?;
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(from, &dest).with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        files.push(dest);
        Ok(())
    };
    let fshost = target_dir().join("release/fshost");
    put(&fshost, "bin/fshost", 0o755)?;
    for g in INSTALLED_GUESTS {
        put(&target_dir().join("guests").join(format!("{g}.wasm")), &format!("lib/fshost/plugins/{g}.wasm"), 0o644)?;
    }
    // Man pages and completions, generated by the binary being installed.
    let generated = target_dir().join(format!("install-generated-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&generated);
    run(Command::new(&fshost).arg("generate").arg(&generated))?;
    let mut pages: Vec<PathBuf> =
        std::fs::read_dir(generated.join("man"))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        let name = page.file_name().context("page name")?.to_string_lossy().into_owned();
        let section = name.rsplit('.').next().unwrap_or("1");
        put(&page, &format!("share/man/man{section}/{name}"), 0o644)?;
    }
    for (file, to) in [
        ("fshost.bash", "share/bash-completion/completions/fshost"),
        ("_fshost", "share/zsh/vendor-completions/_fshost"),
        ("fshost.fish", "share/fish/vendor_completions.d/fshost.fish"),
    ] {
        put(&generated.join("completions").join(file), to, 0o644)?;
    }
    // Service mode's units (dist/systemd), naming the installed binary;
    // PREFIX/lib/systemd/system is on systemd's unit path for /usr and
    // /usr/local.
    let bindir = opts.prefix.join("bin");
    for unit in SYSTEMD_UNITS {
        let from = crate::root().join("dist/systemd").join(unit);
        let text = std::fs::read_to_string(&from).with_context(|| format!("reading {}", from.display()))?;
        let dest = root.join("lib/systemd/system").join(unit);
        std::fs::create_dir_all(dest.parent().context("no parent")?)?;
        let text = text.replace("@bindir@", &bindir.display().to_string());
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        files.push(dest);
    }
    let helper = root.join("sbin/mount.fshost");
    std::fs::create_dir_all(root.join("sbin"))?;
    let _ = std::fs::remove_file(&helper);
    std::os::unix::fs::symlink("../bin/fshost", &helper).with_context(|| format!("linking {}", helper.display()))?;
    files.push(helper);
    let _ = std::fs::remove_dir_all(&generated);
    Ok(files)
}
