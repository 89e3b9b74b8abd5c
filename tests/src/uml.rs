//! A second kernel for the reference side: Debian's user-mode Linux (the
//! `user-mode-linux` package, a Linux 6.1 built as a program) with its
//! vfat module, for formats this machine's kernel cannot mount. The host
//! kernel here is built without FAT (`CONFIG_VFAT_FS` is not set and there
//! are no modules), so the kernel's vfat driver can only be reached this way.
//!
//! [`snapshot_vfat`] boots UML with the host's root directory as its root
//! (hostfs, read-only), the image as a read-only block device (`ubd0r=`),
//! and a small init script that loads the FAT modules, mounts the image,
//! runs [`crate::snapshot::SCRIPT`] over it and powers off. The snapshot
//! files come back through a second, writable hostfs mount of a scratch
//! directory. One boot takes about 3 s.
//!
//! [`write_with_vfat`] mounts an image read-write the same way, for
//! letting the kernel write what other tools cannot. [`probe_vfat`] mounts
//! several images read-only in one boot and runs any commands over each.
//!
//! Guarantees: [`snapshot_vfat`] and [`probe_vfat`] attach images
//! read-only; the host's root is mounted read-only inside UML; the UML
//! process is killed if it runs past a deadline. UML's clock is the host's and its time zone
//! (sys_tz) is UTC, as on the host.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::scratch::ScratchDir;
use crate::snapshot::{self, Snapshot};

/// Where Debian's user-mode-linux package keeps its modules.
const MODULES: &str = "/usr/lib/uml/modules";
/// How long one boot may take before it is killed.
const DEADLINE: Duration = Duration::from_secs(180);

/// The UML kernel's FAT modules, in load order (fat before vfat; the
/// default codepage and iocharset before the mount needs them).
fn fat_modules() -> anyhow::Result<Vec<PathBuf>> {
    let version = std::fs::read_dir(MODULES)
        .with_context(|| format!("{MODULES}: is the user-mode-linux package installed?"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("kernel/fs/fat/vfat.ko").exists())
        .with_context(|| format!("no kernel/fs/fat/vfat.ko under {MODULES}/*"))?;
    let fs = version.join("kernel/fs");
    let modules = ["fat/fat.ko", "fat/vfat.ko", "nls/nls_cp437.ko", "nls/nls_iso8859-1.ko"].map(|m| fs.join(m));
    for m in &modules {
        ensure!(m.exists(), "{} is missing", m.display());
    }
    Ok(modules.to_vec())
}

/// Mounts `image` with UML's vfat driver (`mount -t vfat -o OPTIONS`, run
/// by root with umask 022) and returns the snapshot of what it shows, with
/// the lookups of the names in the file `names` (see [`snapshot::SCRIPT`]).
pub fn snapshot_vfat(image: &Path, options: &str, names: Option<&Path>) -> anyhow::Result<Snapshot> {
    let work = ScratchDir::new("uml")?;
    let script = work.path().join("snapshot.sh");
    std::fs::write(&script, snapshot::SCRIPT)?;
    let names = names.map(|n| n.canonicalize()).transpose()?.map(|n| format!(" '{}'", n.display())).unwrap_or_default();
    let body = format!("sh {} \"$MNT\" \"$OUT\"{names}", script.display());
    let out = boot_vfat(image, true, options, &body, work.path())?;
    snapshot::read(&out)
        .with_context(|| format!("the kernel's snapshot of {}:\n{}", image.display(), logs(work.path())))
}

/// Mounts `image` read-write with UML's vfat driver (`-o OPTIONS`) and runs
/// the shell commands `body` in it ($MNT is the mountpoint), to let the
/// kernel itself write what other tools cannot (mtools drops characters
/// outside the BMP, which vfat stores as UTF-16 surrogate pairs).
pub fn write_with_vfat(image: &Path, options: &str, body: &str) -> anyhow::Result<()> {
    let work = ScratchDir::new("uml")?;
    let out = boot_vfat(image, false, options, &format!("set -e\n{body}\n: > \"$OUT/done\""), work.path())?;
    ensure!(out.join("done").exists(), "the commands run under UML failed:\n{}", logs(work.path()));
    Ok(())
}

/// Boots UML with `image` as /dev/ubda (read-only if `read_only`), mounts
/// it with vfat at $MNT and runs `body` with $OUT a directory that comes
/// back as the returned path. `work` holds the scripts and logs.
fn boot_vfat(image: &Path, read_only: bool, options: &str, body: &str, work: &Path) -> anyhow::Result<PathBuf> {
    let out = work.join("out");
    std::fs::create_dir(&out)?;
    let body_file = work.join("body.sh");
    std::fs::write(&body_file, body)?;
    let mount = format!(
        "mkdir /mnt/img\n\
         if mount -t vfat -o {options} /dev/ubda /mnt/img; then\n\
         (cd / && MNT=/mnt/img OUT=/mnt/out sh {body})\n\
         umount /mnt/img\n\
         fi\n",
        body = body_file.display(),
    );
    boot(&[(image, read_only)], &mount, &out, work)?;
    Ok(out)
}

/// Boots UML once with each of `images` attached read-only (/dev/ubda,
/// /dev/ubdb…), mounts each in turn with vfat (`-o OPTIONS`) and runs the
/// shell commands `body` over it ($MNT the mountpoint, $OUT a fresh
/// directory), then hands each image's $OUT to `read` (with the image's
/// index), in order. An image the kernel refuses to mount has an empty
/// $OUT but for a file `mount-failed`. One boot for many images: each
/// boot costs about 3 s.
pub fn probe_vfat<T>(
    images: &[&Path],
    options: &str,
    body: &str,
    mut read: impl FnMut(usize, &Path) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    ensure!((1..=8).contains(&images.len()), "UML takes 1..=8 images per boot here, not {}", images.len());
    let work = ScratchDir::new("uml")?;
    let out = work.path().join("out");
    std::fs::create_dir(&out)?;
    let body_file = work.path().join("body.sh");
    std::fs::write(&body_file, body)?;
    let mut mounts = String::new();
    for (i, letter) in (0..images.len()).zip('a'..) {
        std::fs::create_dir(out.join(i.to_string()))?;
        mounts.push_str(&format!(
            "mkdir /mnt/img{i}\n\
             if mount -t vfat -o {options} /dev/ubd{letter} /mnt/img{i}; then\n\
             (cd / && MNT=/mnt/img{i} OUT=/mnt/out/{i} sh {body})\n\
             umount /mnt/img{i}\n\
             else : > /mnt/out/{i}/mount-failed\n\
             fi\n",
            body = body_file.display(),
        ));
    }
    let attached: Vec<(&Path, bool)> = images.iter().map(|i| (*i, true)).collect();
    boot(&attached, &mounts, &out, work.path())?;
    (0..images.len())
        .map(|i| {
            read(i, &out.join(i.to_string()))
                .with_context(|| format!("what the kernel showed of {}:\n{}", images[i].display(), logs(work.path())))
        })
        .collect()
}

/// Boots UML once with `images` attached read-only (/dev/ubda, /dev/ubdb…)
/// and runs the shell commands `body` ($OUT a fresh directory), without
/// mounting anything, then hands $OUT to `read`. For what the kernel itself
/// finds on a device: its partitions (/sys/block/ubda/ubdaN: this host
/// kernel has no partition parsers, UML's has MSDOS and EFI), a filesystem
/// on one of them.
pub fn run_read_only<T>(
    images: &[&Path],
    body: &str,
    read: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    ensure!((1..=8).contains(&images.len()), "UML takes 1..=8 images per boot here, not {}", images.len());
    let work = ScratchDir::new("uml")?;
    let out = work.path().join("out");
    std::fs::create_dir(&out)?;
    let body_file = work.path().join("body.sh");
    std::fs::write(&body_file, body)?;
    let run = format!("(cd / && OUT=/mnt/out sh {})\n", body_file.display());
    let attached: Vec<(&Path, bool)> = images.iter().map(|i| (*i, true)).collect();
    boot(&attached, &run, &out, work.path())?;
    read(&out).with_context(|| format!("what the kernel showed:\n{}", logs(work.path())))
}

/// Boots UML with `images` as /dev/ubda, /dev/ubdb… (each read-only or
/// not), loads the FAT modules, runs the shell commands `mounts` with the
/// host directory `out` mounted at /mnt/out, and powers off. `work` holds
/// the scripts and logs.
fn boot(images: &[(&Path, bool)], mounts: &str, out: &Path, work: &Path) -> anyhow::Result<()> {
    let mut ubds = Vec::new();
    for (i, (image, read_only)) in images.iter().enumerate() {
        let image = image.canonicalize().with_context(|| format!("{}", image.display()))?;
        let shown = image.to_string_lossy();
        ensure!(!shown.contains([',', '=', ' ']), "UML's ubd= syntax cannot take the path {shown}");
        ubds.push(format!("ubd{i}{}={}", if *read_only { "r" } else { "" }, image.display()));
    }
    let insmods: String = fat_modules()?
        .iter()
        .map(|m| format!("insmod {} || echo 'insmod {} failed'\n", m.display(), m.display()))
        .collect();
    let init = work.join("init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/sh\n\
             export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
             mount -t proc proc /proc\n\
             mount -t tmpfs tmpfs /mnt\n\
             mkdir /mnt/out\n\
             mount -t hostfs none /mnt/out -o {out}\n\
             exec > /mnt/out/init.log 2>&1\n\
             {insmods}\
             umask 022\n\
             {mounts}\
             sync\n\
             dmesg > /mnt/out/dmesg\n\
             : > /mnt/out/{FINISHED}\n\
             poweroff -f\n",
            out = out.display(),
        ),
    )?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let console = std::fs::File::create(work.join("console.log"))?;
    let mut command = Command::new("linux");
    command
        .arg("mem=256M")
        .arg("rootfstype=hostfs")
        .arg("rootflags=/")
        .arg("ro")
        .arg(format!("init={}", init.display()))
        .args(&ubds)
        // UML hands a `NAME=VALUE` it does not know to init's environment.
        .arg(GUEST_GLIBC_TUNABLES)
        .arg("con=null")
        .arg("con0=null,fd:1")
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    // SAFETY: the closure only makes two prctl calls on a prepared,
    // borrowed filter (async-signal-safe, no allocation).
    unsafe { command.pre_exec(no_xstate_regset) };
    let mut child = command.spawn().context("starting user-mode Linux (`linux`, package user-mode-linux)")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            // UML now and then aborts while powering off (SIGABRT after
            // "Powering off."); by then init has unmounted, synced and
            // said so, and what it wrote is complete.
            if !status.success() && !out.join(FINISHED).exists() {
                bail!("user-mode Linux exited with {status}:\n{}", logs(work));
            }
            break;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("user-mode Linux did not power off within {DEADLINE:?}:\n{}", logs(work));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Keeps glibc inside UML on SSE code paths (no AVX, AVX-512 or XSAVE in
/// its string functions and lazy binding): UML runs without the XSAVE
/// register set (see [`no_xstate_regset`]), so it saves and restores only
/// the x87/SSE state of the processes it runs, and their AVX registers do
/// not survive its context switches (printf printed "%s" literally, mount
/// failed with EINVAL, an AVX2 string function segfaulted).
/// `AVX_Fast_Unaligned_Load` is a preference glibc derives from AVX2 before
/// it reads the tunables, and its memmove and string selectors check it.
const GUEST_GLIBC_TUNABLES: &str = "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-FMA,-XSAVE,-XSAVEC,-AVX_Fast_Unaligned_Load";

/// Make UML fall back from the XSAVE register set to the legacy FXSAVE one
/// (`PTRACE_GETFPREGS`), by failing its `PTRACE_GETREGSET(NT_X86_XSTATE)`
/// with EIO through a seccomp filter installed just before exec.
///
/// Why: Debian 12's UML (6.1) copies the XSAVE area with a fixed-size
/// buffer, and a host kernel checks that a `PTRACE_SETREGSET` of it is
/// exactly the CPU's whole XSAVE size. On a CPU with AMX (a 8 KiB tile
/// state, e.g. Sapphire Rapids Xeons) the sizes differ, every set fails
/// with EFAULT ("ptrace set fp regs failed, errno = 14") and UML panics
/// as it starts init. UML probes the regset once at boot and, when the
/// probe fails, uses FXSAVE (x87 and SSE state) instead, which works on
/// every x86-64 host (with [`GUEST_GLIBC_TUNABLES`] for the programs it
/// runs); the probe is the only call this filter touches, and
/// the processes inside UML are unaffected (UML emulates their system
/// calls under PTRACE_SYSEMU, which the kernel handles before seccomp).
fn no_xstate_regset() -> std::io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
        const PTRACE_GETREGSET: u32 = 0x4204;
        const NT_X86_XSTATE: u32 = 0x202;
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        let stmt = |code, k| libc::sock_filter { code, jt: 0, jf: 0, k };
        let jeq_else = |k, jf| libc::sock_filter { code: JEQ_K, jt: 0, jf, k };
        // struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i
        // (the low 32 bits on little-endian x86-64).
        let filter = [
            stmt(LD_W_ABS, 4),
            jeq_else(AUDIT_ARCH_X86_64, 7),
            stmt(LD_W_ABS, 0),
            jeq_else(libc::SYS_ptrace as u32, 5),
            stmt(LD_W_ABS, 16),
            jeq_else(PTRACE_GETREGSET, 3),
            stmt(LD_W_ABS, 32),
            jeq_else(NT_X86_XSTATE, 1),
            stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::EIO as u32),
            stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        ];
        let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
        // SAFETY: plain prctl calls; `program` and `filter` outlive them.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog)
                    != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The file init creates in $OUT once the image is unmounted and synced.
const FINISHED: &str = "init.finished";

/// What the boot left behind, for error messages.
fn logs(work: &Path) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let console = read(work.join("console.log"));
    let tail: Vec<&str> = console.lines().rev().take(15).collect();
    format!(
        "init.log:\n{}\ndmesg (tail):\n{}\nconsole (tail):\n{}",
        read(work.join("out/init.log")),
        read(work.join("out/dmesg")).lines().rev().take(15).collect::<Vec<_>>().join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}
