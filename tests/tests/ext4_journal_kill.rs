//! A journaled read-write mount (`-o rw,journal`) killed with SIGKILL
//! while a writer is busy, then checked by oracles nobody here wrote: the
//! journal replayed by e2fsck (`-E journal_only`), then `e2fsck -fn` clean;
//! the kernel's ext4 replays the journal of its own copy and reads every
//! file fsync'd before the kill intact; fshost mounts the image again
//! (recovering the journal itself), reads them, unmounts, and e2fsck is
//! clean. (The guest's crash-point tests are guests/ext4/tests/crash.rs.)

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fshost_tests::fsck::e2fsck;
use fshost_tests::fshost::{FshostMount, guest};
use fshost_tests::kernel::{Image, KernelMount, require_root};
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn killed_while_writing(mkfs: &[&str]) {
    let src = ScratchDir::new("jkill-src").unwrap();
    std::fs::write(src.path().join("old"), pattern(30_000, 1)).unwrap();
    let image = Image::mkfs(src.path(), mkfs, "64M").expect("mkfs");
    let mut mount = FshostMount::mount(&guest("ext4"), image.path(), &["rw", "journal"])
        .unwrap_or_else(|e| panic!("fshost mount -o rw,journal: {e:#}"));
    let root = mount.path().to_path_buf();
    let mut synced = Vec::new();
    std::fs::create_dir(root.join("d")).unwrap();
    for i in 0..30u32 {
        let data = pattern(1 + i as usize * 3_001, i + 10);
        let name = format!("d/f{i}");
        write_synced(&root.join(&name), &data);
        synced.push((name, data));
    }
    // Renamed over and deleted, then made durable by an fsync.
    std::fs::rename(root.join("d/f3"), root.join("d/f4")).unwrap();
    std::fs::remove_file(root.join("d/f5")).unwrap();
    synced.retain(|(n, _)| n != "d/f3" && n != "d/f4" && n != "d/f5");
    let data = pattern(3 * 3_001 + 1, 13);
    write_synced(&root.join("d/f6"), &pattern(6 * 3_001 + 1, 16));
    synced.push(("d/f4".into(), data));

    // A writer that never syncs, busy when the server dies.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::write(root.join(format!("busy{i}")), pattern(i % 20_000 + 1, i as u32));
                let _ = std::fs::remove_file(root.join(format!("busy{}", i / 2)));
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on the child this test started.
    let killed = unsafe { libc::kill(mount.pid() as i32, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill: {}", std::io::Error::last_os_error());
    mount.wait_exit(Duration::from_secs(10)).expect("fshost exits after SIGKILL");
    stop.store(true, Ordering::Relaxed);
    drop(mount);
    let _ = busy.join();

    // e2fsck replays the journal of a copy, then finds it clean.
    let copy = image.copy().unwrap();
    let out = Command::new("e2fsck").args(["-E", "journal_only", "-y"]).arg(copy.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(!said.contains("corrupt") && !said.contains("invalid") && !said.contains("checksum"), "{said}");
    e2fsck(copy.path()).unwrap_or_else(|e| panic!("{mkfs:?}: after the journal replay: {e:#}"));

    // The kernel replays its own copy and reads what was fsync'd.
    {
        let kernel = KernelMount::replaying(&image).expect("kernel mount of the killed image");
        for (name, data) in &synced {
            let got = std::fs::read(kernel.path().join(name)).ok();
            assert!(got.as_ref() == Some(data), "{mkfs:?}: the kernel reads {name} differently");
        }
        assert!(!kernel.path().join("d/f5").exists(), "{mkfs:?}: d/f5 was deleted before an fsync");
        assert!(!kernel.path().join("d/f3").exists(), "{mkfs:?}: d/f3 was renamed before an fsync");
    }

    // fshost recovers the journal itself, then unmounts cleanly.
    let mut again = FshostMount::mount(&guest("ext4"), image.path(), &["rw", "journal"])
        .unwrap_or_else(|e| panic!("fshost mount after the kill: {e:#}"));
    for (name, data) in &synced {
        let got = std::fs::read(again.path().join(name)).ok();
        assert!(got.as_ref() == Some(data), "{mkfs:?}: fshost reads {name} differently after recovery");
    }
    again.unmount().expect("unmount");
    e2fsck(image.path()).unwrap_or_else(|e| panic!("{mkfs:?}: after fshost's recovery and unmount: {e:#}"));
}

#[test]
fn sigkill_keeps_what_was_fsynced_4k() {
    require_root();
    killed_while_writing(&["-b", "4096"]);
}

#[test]
fn sigkill_keeps_what_was_fsynced_1k_without_checksums() {
    require_root();
    killed_while_writing(&["-b", "1024", "-O", "^metadata_csum,^64bit"]);
}
