//! A data write that fails after the guest allocated for it, on a
//! read-write ext4 mount through the real `fshost mount -o rw`.
//!
//! The contract's order is: iomap-begin(write) allocates (unwritten
//! extents for holes), the host writes the data, ioend converts what was
//! written and raises the size. When the host's device write fails in
//! between, ioend is never called: the file keeps unwritten extents, past
//! its size when the write was extending it. That is what fallocate with
//! KEEP_SIZE leaves too, so it is harmless by construction: unwritten
//! extents read as zeros (and past the size, not at all), e2fsck accepts
//! them, and they go back to the free pool with the file. (The kernel's
//! ext4 trims blocks past the size after a failed extending direct write;
//! fshost leaves them to the next truncate or unlink.) This test proves
//! each of those claims with oracles nobody here wrote: e2fsck -fn, its
//! block count, and the kernel's ext4 reading the image.
//!
//! The failure is real, not simulated: the image is a sparse file on a
//! small tmpfs that is then filled, so writes into blocks the image file
//! already has (the metadata mkfs wrote) succeed and writes into its holes
//! (new data blocks) fail with ENOSPC.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use fshost_tests::fshost::{FshostMount, guest};
use fshost_tests::kernel::{KernelMount, require_root, run};
use fshost_tests::scratch::ScratchDir;

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs {
    dir: ScratchDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = ScratchDir::new("tmpfs").unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()))
            .unwrap();
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `e2fsck -fn`: panics unless clean; the blocks in use it counted.
fn fsck_used_blocks(image: &Path, when: &str) -> u64 {
    let out = Command::new("e2fsck").arg("-fn").arg(image).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{when}: e2fsck -fn says the image is not clean:\n{text}");
    // "IMAGE: 12/16384 files (0.0% non-contiguous), 9577/65536 blocks"
    let used = text
        .lines()
        .find_map(|l| l.strip_suffix(" blocks").and_then(|l| l.rsplit(' ').next()).and_then(|f| f.split_once('/')))
        .and_then(|(used, _)| used.parse().ok());
    used.unwrap_or_else(|| panic!("{when}: no block count in e2fsck's output:\n{text}"))
}

#[test]
fn a_failed_data_write_leaves_unwritten_blocks_that_e2fsck_accepts_and_unlink_frees() {
    require_root();
    let fs = Tmpfs::new("16m");
    let image = fs.path().join("ext4.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image).arg("64M")).unwrap();
    let fresh = fsck_used_blocks(&image, "the fresh image");
    // Fill the tmpfs: every hole of the image now fails to fill.
    {
        let filler = std::fs::File::create(fs.path().join("filler")).unwrap();
        let chunk = vec![0x55u8; 64 << 10];
        let mut at = 0u64;
        while filler.write_all_at(&chunk, at).is_ok() {
            at += chunk.len() as u64;
        }
    }
    let data = vec![0xabu8; 64 << 10];
    {
        let mut mount = FshostMount::mount(&guest("ext4"), &image, &["rw"]).unwrap();
        let path = mount.path().join("new");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
        let failed = f.write_at(&data, 0).unwrap_err();
        assert_eq!(failed.raw_os_error(), Some(libc::EIO), "the failed write: {failed}\n{}", mount.log());
        assert!(mount.log().contains("No space left on device"), "{}", mount.log());
        drop(f);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the size moved without the data");
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert!(mount.unmount().unwrap().success(), "{}", mount.log());
    }
    // The blocks the guest allocated are the file's (more in use than
    // fresh), as unwritten extents past its size, which e2fsck accepts.
    let after_failure = fsck_used_blocks(&image, "after the failed write");
    assert!(after_failure > fresh, "the failed write allocated nothing ({after_failure} blocks in use)");
    let extents = Command::new("debugfs").args(["-R", "stat /new"]).arg(&image).output().unwrap();
    let extents = String::from_utf8_lossy(&extents.stdout).into_owned();
    assert!(extents.contains("[u]"), "no unwritten extent on /new:\n{extents}");
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    {
        let kernel = KernelMount::read_only(&image).unwrap();
        let path = kernel.path().join("new");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }
    // With room again, the same write lands (into the same unwritten
    // extents, converted by ioend), and the kernel reads it.
    {
        let mut mount = FshostMount::mount(&guest("ext4"), &image, &["rw"]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(mount.path().join("new")).unwrap();
        f.write_all_at(&data, 0).unwrap();
        drop(f);
        assert!(mount.unmount().unwrap().success(), "{}", mount.log());
    }
    fsck_used_blocks(&image, "after the write that succeeded");
    {
        let kernel = KernelMount::read_only(&image).unwrap();
        assert_eq!(std::fs::read(kernel.path().join("new")).unwrap(), data);
    }
    // Unlink gives every block back.
    {
        let mut mount = FshostMount::mount(&guest("ext4"), &image, &["rw"]).unwrap();
        std::fs::remove_file(mount.path().join("new")).unwrap();
        assert!(mount.unmount().unwrap().success(), "{}", mount.log());
    }
    assert_eq!(fsck_used_blocks(&image, "after the unlink"), fresh, "blocks stayed allocated after the unlink");
}
