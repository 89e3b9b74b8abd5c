//! The reference side of the differential tests: ext4 images made by
//! `mkfs.ext4 -d`, completed and mounted by the Linux kernel's ext4 driver.
//!
//! Guarantees: every loop device attached and every mount made here is
//! undone by a guard's Drop, including when a test panics; the kernel's
//! read-only view attaches the image read-only (`losetup -r`), so it cannot
//! change the file that fshost is then given.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

use crate::scratch::ScratchDir;
use crate::tree::{self, SourceTree};

/// Fails the calling test, loudly, when not run as root: loop devices and
/// mounts need it, and a differential test that silently passes proves
/// nothing.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test mounts ext4 images with the kernel (loop devices, mount) and must run as root; \
         CI runs it as root. Run: sudo -E cargo test -p fshost-tests --test ext4_kernel_diff"
    );
}

/// Run `command`; its output, or an error with both streams when it fails.
pub fn run(command: &mut Command) -> anyhow::Result<Output> {
    let shown = format!("{command:?}");
    let output = command.output().with_context(|| format!("running {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Write the partition table `script` (sfdisk's script format) onto the
/// disk image `image` with sfdisk. `--no-reread --no-tell-kernel`: an
/// image file has no partitions for the kernel to rescan, and a rescan
/// request is one more way to reach a kernel in a bad state.
pub fn sfdisk(image: &Path, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running sfdisk (package fdisk)")?;
    child.stdin.take().context("sfdisk's stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "sfdisk {}: {}", image.display(), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The size given to mkfs: large enough that mke2fs picks its "default"
/// profile (4 KiB blocks, 256-byte inodes) rather than "small"; the file is
/// sparse, so only what is written takes space.
const IMAGE_SIZE: &str = "1G";

/// An ext4 image file in its own scratch directory.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    _dir: ScratchDir,
}

impl Image {
    /// `mkfs.ext4 -q -F -d TREE ARGS IMG 1G`, then [`tree::complete_in_image`]
    /// through a read-write kernel mount, then `e2fsck -fn` to prove the
    /// result consistent before anything is compared on it.
    pub fn build(tree: &SourceTree, mkfs_args: &[&str]) -> anyhow::Result<Image> {
        let dir = ScratchDir::new("image")?;
        let path = dir.path().join("ext4.img");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(tree.root())
            .args(mkfs_args)
            .arg(&path)
            .arg(IMAGE_SIZE))?;
        let image = Image { path, _dir: dir };
        {
            let mount = KernelMount::read_write(&image.path, "")?;
            tree::complete_in_image(mount.path(), tree.size())
                .with_context(|| format!("completing {} through the kernel", image.path.display()))?;
        }
        image.fsck()?;
        Ok(image)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `mkfs.ext4 -q -F -d ROOT ARGS IMG SIZE` and nothing else: raw
    /// material for tests that then change the image on purpose.
    pub fn mkfs(root: &Path, mkfs_args: &[&str], size: &str) -> anyhow::Result<Image> {
        let dir = ScratchDir::new("image")?;
        let path = dir.path().join("ext4.img");
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(root).args(mkfs_args).arg(&path).arg(size))?;
        Ok(Image { path, _dir: dir })
    }

    /// Turns the image into a crashed one whose journal holds committed but
    /// unreplayed transactions: mounts it read-write with `data=journal`
    /// (so file data goes through the journal too), lets `change` work on
    /// the mounted root, commits the journal with fsync, and copies the
    /// image file while still mounted. The copy is what a power cut at that
    /// moment leaves: the journal is on disk, the metadata it describes is
    /// still dirty in memory (writeback waits 30 s). The copy replaces the
    /// image; checks that its superblock says `needs_recovery`.
    pub fn crash_with_dirty_journal(&self, change: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let snapshot = self.path.with_extension("crashed");
        {
            let mount = KernelMount::read_write(&self.path, ",data=journal")?;
            change(mount.path()).context("changing the image before the crash")?;
            // fsync commits the journal; unlike syncfs it does not also write
            // back the block device's dirty metadata buffers.
            File::open(mount.path())?.sync_all().context("fsync the root directory")?;
            run(Command::new("cp").arg("--sparse=always").arg(&self.path).arg(&snapshot))?;
        }
        std::fs::rename(&snapshot, &self.path)?;
        let out = run(Command::new("dumpe2fs").arg("-h").arg(&self.path))?;
        let header = String::from_utf8_lossy(&out.stdout);
        ensure!(header.contains("needs_recovery"), "the crashed image does not need recovery:\n{header}");
        Ok(())
    }

    /// `e2fsck -fn`: fails unless the image is consistent.
    pub fn fsck(&self) -> anyhow::Result<()> {
        run(Command::new("e2fsck").arg("-fn").arg(&self.path)).map(drop)
    }

    /// A byte-identical copy in a new scratch directory, holes kept holes.
    pub fn copy(&self) -> anyhow::Result<Image> {
        let dir = ScratchDir::new("image")?;
        let path = dir.path().join("ext4.img");
        run(Command::new("cp").arg("--sparse=always").arg(&self.path).arg(&path))?;
        Ok(Image { path, _dir: dir })
    }

    /// SHA-256 over the image's length and the offset and bytes of every
    /// 4 KiB block (aligned, clipped to the data ranges SEEK_DATA/SEEK_HOLE
    /// report) that holds a non-zero byte: a full-content hash that skips
    /// the holes of a 1 GiB sparse file. Any change of content changes it;
    /// the host filesystem's hole map does not (it changes by itself, e.g.
    /// when writeback allocates blocks the loop device wrote zeros into).
    pub fn content_hash(&self) -> anyhow::Result<[u8; 32]> {
        const BLOCK: u64 = 4096;
        let file = File::open(&self.path).with_context(|| format!("open {}", self.path.display()))?;
        let len = file.metadata()?.len();
        let mut hasher = Sha256::new();
        hasher.update(len.to_le_bytes());
        let mut buf = vec![0u8; 1 << 20];
        for (start, end) in data_ranges(&file, len).with_context(|| format!("mapping {}", self.path.display()))? {
            let mut pos = start;
            while pos < end {
                // Up to 1 MiB (256 blocks), ending on a block boundary or
                // at the range's end.
                let stop = end.min((pos / BLOCK + 256) * BLOCK);
                let chunk = &mut buf[..(stop - pos) as usize];
                file.read_exact_at(chunk, pos)?;
                let mut at = pos;
                while at < stop {
                    let piece_end = (at - at % BLOCK + BLOCK).min(stop);
                    let piece = &chunk[(at - pos) as usize..(piece_end - pos) as usize];
                    if piece.iter().any(|&b| b != 0) {
                        hasher.update(at.to_le_bytes());
                        hasher.update(piece);
                    }
                    at = piece_end;
                }
                pos = stop;
            }
        }
        Ok(hasher.finalize().into())
    }
}

/// The data ranges of an open file, `[start, end)`, as lseek with
/// SEEK_DATA/SEEK_HOLE reports them from offset 0 to `len`.
pub fn data_ranges(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        // SAFETY: a valid open fd; lseek has no memory effects.
        let data = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after `offset`
            }
            return Err(err);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (data, hole) = (data as u64, hole as u64);
        if hole <= data {
            return Err(std::io::Error::other(format!("SEEK_HOLE from {data} went back to {hole}")));
        }
        ranges.push((data, hole));
        offset = hole;
    }
    Ok(ranges)
}

/// A loop device attached to an image file; detached on drop.
#[derive(Debug)]
struct LoopDevice {
    device: PathBuf,
}

impl LoopDevice {
    fn attach(image: &Path, read_only: bool) -> anyhow::Result<LoopDevice> {
        let mut command = Command::new("losetup");
        if read_only {
            command.arg("-r");
        }
        let output = run(command.args(["-f", "--show"]).arg(image))?;
        let device = String::from_utf8(output.stdout).context("losetup printed a non-UTF-8 device name")?;
        let device = device.trim();
        ensure!(device.starts_with("/dev/loop"), "losetup printed {device:?}, not a loop device");
        Ok(LoopDevice { device: PathBuf::from(device) })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // A just-unmounted device can be briefly busy; retry a few times.
        for attempt in 0..10 {
            match Command::new("losetup").arg("-d").arg(&self.device).output() {
                Ok(out) if out.status.success() => return,
                Ok(out) if attempt == 9 => eprintln!(
                    "warning: losetup -d {} failed: {}",
                    self.device.display(),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(err) => {
                    eprintln!("warning: cannot run losetup -d {}: {err}", self.device.display());
                    return;
                }
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }
}

/// A mount of a device at a directory; unmounted on drop (lazily if busy).
#[derive(Debug)]
struct Mounted {
    target: PathBuf,
}

impl Mounted {
    fn mount(device: &Path, target: &Path, options: &str) -> anyhow::Result<Mounted> {
        run(Command::new("mount").args(["-t", "ext4", "-o", options]).arg(device).arg(target))?;
        Ok(Mounted { target: target.to_path_buf() })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut command = Command::new("umount");
            if lazy {
                command.arg("-l");
            }
            command.arg(&self.target).output()
        };
        match umount(false) {
            Ok(out) if out.status.success() => {}
            _ => match umount(true) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "warning: umount -l {} failed: {}",
                    self.target.display(),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(err) => eprintln!("warning: cannot run umount -l {}: {err}", self.target.display()),
            },
        }
    }
}

/// An image mounted by the kernel's ext4 driver at a scratch mountpoint.
/// Drop unmounts, detaches the loop device and removes the mountpoint, in
/// that order (fields drop in declaration order).
#[derive(Debug)]
pub struct KernelMount {
    mounted: Mounted,
    _loop_device: LoopDevice,
    _mountpoint: ScratchDir,
    /// The private copy a replaying mount works on, removed last.
    _copy: Option<Image>,
}

impl KernelMount {
    /// The reference view: the image attached read-only and mounted `-o ro`.
    /// (`noload` would hide a dirty journal's committed transactions; a
    /// clean image needs no replay, so plain `ro` is the honest view.)
    pub fn read_only(image: &Path) -> anyhow::Result<KernelMount> {
        Self::mount(image, true, "ro")
    }

    /// The reference view of an image whose journal needs recovery: the
    /// kernel replays the journal into a private copy (attached read-write,
    /// mounted `-o ro`), leaving `image` itself untouched.
    pub fn replaying(image: &Image) -> anyhow::Result<KernelMount> {
        let copy = image.copy()?;
        let mut mount = Self::mount(copy.path(), false, "ro")?;
        mount._copy = Some(copy);
        Ok(mount)
    }

    /// The stale view of a dirty image: journal ignored (`ro,noload`). Only
    /// for proving that an image's journal holds changes that matter.
    pub fn ignoring_journal(image: &Path) -> anyhow::Result<KernelMount> {
        Self::mount(image, true, "ro,noload")
    }

    /// A read-write mount, used only to build images.
    pub fn read_write(image: &Path, options: &str) -> anyhow::Result<KernelMount> {
        // noinit_itable: no background thread zeroing inode tables while
        // we work; the image is the same either way.
        Self::mount(image, false, &format!("rw,noinit_itable{options}"))
    }

    fn mount(image: &Path, read_only: bool, options: &str) -> anyhow::Result<KernelMount> {
        let mountpoint = ScratchDir::new("mnt")?;
        let loop_device = LoopDevice::attach(image, read_only)?;
        let mounted = Mounted::mount(&loop_device.device, mountpoint.path(), options)
            .with_context(|| format!("mounting {} ({})", image.display(), loop_device.device.display()))?;
        Ok(KernelMount { mounted, _loop_device: loop_device, _mountpoint: mountpoint, _copy: None })
    }

    pub fn path(&self) -> &Path {
        &self.mounted.target
    }
}
