//! Concurrent namespace stress on read-write ext4 mounts (issue 11's
//! proof: "concurrent namespace stress from several processes, each
//! followed by e2fsck"), through the real `fshost mount -o rw`.
//!
//! On a fresh mkfs image of each layout (4 KiB ext4, 1 KiB ext4, ext2,
//! inline_data):
//! 1. stress-ng (Debian's, not ours) runs its filesystem stressors with
//!    several workers each inside the mount, verifying where a stressor
//!    offers it; it must report no failure and skip none. Unmount, then
//!    `e2fsck -fn` must find the image clean.
//! 2. Our own workers ([`fshost_tests::stress`], this binary re-executed
//!    as separate processes) race creates, writes, renames, links,
//!    unlinks, mkdir/rmdir and xattrs in one shared set of directories and
//!    leave a tree behind; every call answers success or an errno a race
//!    explains. fshost's view of the tree is captured before the unmount;
//!    then `e2fsck -fn` is clean and the kernel's ext4 driver shows the
//!    same tree (names, types, modes, sizes, contents, holes, xattrs, link
//!    counts, directory sizes).
//!
//! Knobs: FSHOST_STRESS_SECONDS (each phase, per layout; default 8),
//! FSHOST_STRESS_WORKERS (stress-ng workers per stressor and our worker
//! processes; default 2 and 4), FSHOST_STRESS_SEED,
//! FSHOST_STRESS_MOUNT_OPTIONS (added to `-o rw`, e.g. `journal`).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fshost_tests::capture::{self, Options};
use fshost_tests::fsck::e2fsck;
use fshost_tests::fshost::{FshostMount, guest};
use fshost_tests::kernel::{Image, KernelMount, require_root};
use fshost_tests::scratch::ScratchDir;
use fshost_tests::stress::{self, Tally};

/// A layout to stress: mkfs.ext4 arguments.
#[derive(Debug, Clone, Copy)]
struct Layout {
    name: &'static str,
    mkfs: &'static [&'static str],
}

const EXT4: Layout = Layout { name: "ext4 (4 KiB blocks)", mkfs: &[] };
const EXT4_1K: Layout = Layout { name: "ext4 with 1 KiB blocks", mkfs: &["-b", "1024"] };
const EXT2: Layout = Layout { name: "ext2", mkfs: &["-t", "ext2"] };
const INLINE: Layout = Layout { name: "ext4 with inline_data", mkfs: &["-O", "inline_data"] };

/// The environment variable that turns this binary into one of our
/// workers: `ROOT|ID|SEED|MILLIS`.
const WORKER_ENV: &str = "FSHOST_STRESS_WORKER_OF";

fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn seconds() -> u64 {
    knob("FSHOST_STRESS_SECONDS", 8).max(1)
}

/// stress-ng's stressors, chosen for the namespace and for the write path,
/// each with small sizes so a run is about many operations, not bytes.
/// `fallocate` and hole punching are for extent-mapped files: not on ext2.
fn stressors(layout: Layout, workers: u64) -> Vec<String> {
    let w = workers.to_string();
    let mut args: Vec<&str> = vec![
        "--dir",
        &w,
        "--dir-dirs",
        "64",
        "--dentry",
        &w,
        "--dentries",
        "256",
        "--link",
        &w,
        "--symlink",
        &w,
        "--rename",
        &w,
        "--filename",
        &w,
        "--chmod",
        &w,
        "--chown",
        &w,
        "--utime",
        &w,
        "--mknod",
        &w,
        "--xattr",
        &w,
        "--getdent",
        &w,
        "--dirmany",
        &w,
        "--dirdeep",
        "1",
        "--dirdeep-inodes",
        "1000",
        "--hdd",
        &w,
        "--hdd-bytes",
        "2M",
        "--hdd-write-size",
        "4K",
        "--seek",
        &w,
        "--seek-size",
        "2M",
        "--iomix",
        "1",
        "--iomix-bytes",
        "2M",
    ];
    if !layout.mkfs.contains(&"ext2") {
        args.extend(["--fallocate", "1", "--fallocate-bytes", "2M", "--fpunch", "1", "--seek-punch"]);
    }
    args.into_iter().map(String::from).collect()
}

/// Waits for `child` at most `limit`, killing it after; its exit status
/// (None when it was killed) and its stdout, then its stderr when that was
/// piped too (each read by a thread, so a full pipe never blocks it).
fn wait_bounded(mut child: Child, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    }
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = out.join().unwrap_or_default();
    if let Some(err) = err {
        text.push_str(&err.join().unwrap_or_default());
    }
    (status, text)
}

/// Phase 1: stress-ng in `mount`. Panics, with its output and fshost's
/// log, unless it ran every stressor and reported success.
fn stress_ng(layout: Layout, mount: &FshostMount) {
    let dir = mount.path().join("stress-ng");
    std::fs::create_dir(&dir).expect("mkdir in the fshost mount");
    let secs = seconds();
    let workers = knob("FSHOST_STRESS_WORKERS", 2).max(1);
    let child = Command::new("stress-ng")
        .arg("--temp-path")
        .arg(&dir)
        .args(["--timeout", &format!("{secs}s"), "--verify", "--metrics-brief"])
        .args(stressors(layout, workers))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running stress-ng (Debian package stress-ng; `cargo xtask test` installs it): {e}")
        });
    // stress-ng stops its stressors at the timeout and then cleans up its
    // files through the mount: a generous bound, never reached unless hung.
    let (status, output) = wait_bounded(child, Duration::from_secs(secs * 4 + 120));
    let tail =
        |text: &str| text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let problem = match status {
        None => Some("did not finish in time (killed)".to_string()),
        Some(s) if !s.success() => Some(format!("exited {s}")),
        Some(_) if !output.contains("successful run completed") => {
            Some("did not say `successful run completed`".into())
        }
        Some(_) => {
            let bad: Vec<&str> = output
                .lines()
                .filter(|l| l.contains(" fail:") || l.contains("skipping") || l.contains("not supported"))
                .collect();
            (!bad.is_empty()).then(|| format!("reported failures or skipped stressors:\n{}", bad.join("\n")))
        }
    };
    if let Some(problem) = problem {
        panic!(
            "{}: stress-ng on the fshost mount {problem}\nstress-ng's output:\n{output}\nfshost's log (last lines):\n{}",
            layout.name,
            tail(&mount.log())
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("list stress-ng's directory").collect();
    assert!(leftovers.is_empty(), "{}: stress-ng left {} entries behind", layout.name, leftovers.len());
    std::fs::remove_dir(&dir).expect("rmdir stress-ng's directory");
    eprintln!(
        "{}: stress-ng:\n{}",
        layout.name,
        output.lines().filter(|l| l.contains("metrc")).collect::<Vec<_>>().join("\n")
    );
}

/// Phase 2: our workers, as separate processes, in `root`; their added
/// tally. Panics if one died or was killed.
fn own_workers(layout: Layout, root: &Path) -> Tally {
    stress::prepare(root).expect("make the shared directories");
    let workers = knob("FSHOST_STRESS_WORKERS", 4).max(2);
    let seed = knob("FSHOST_STRESS_SEED", 0x5eed);
    let millis = seconds() * 1000;
    let exe = std::env::current_exe().expect("this test binary");
    let children: Vec<(u64, Child)> = (0..workers)
        .map(|id| {
            let child = Command::new(&exe)
                .args(["stress_worker", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
                .env(WORKER_ENV, format!("{}|{id}|{seed}|{millis}", root.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a worker process");
            (id, child)
        })
        .collect();
    let mut total = Tally::default();
    let limit = Duration::from_millis(millis) * 4 + Duration::from_secs(60);
    for (id, child) in children {
        let (status, output) = wait_bounded(child, limit);
        let tally = Tally::parse(&output);
        match (status, tally) {
            (Some(s), Some(t)) if s.success() => total.add(&t),
            (status, _) => panic!("{}: worker {id} ended {status:?} without its tally:\n{output}", layout.name),
        }
    }
    total
}

/// Re-executed by [`own_workers`]: one worker process. Does nothing when
/// run by hand.
#[test]
#[ignore = "a worker process of the stress tests, which start it themselves"]
fn stress_worker() {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let [root, id, seed, millis] = parts[..] else { panic!("{WORKER_ENV}={spec:?}") };
    let tally = stress::run(
        Path::new(root),
        id.parse().expect("worker id"),
        seed.parse().expect("seed"),
        Duration::from_millis(millis.parse().expect("milliseconds")),
    );
    // On lines of their own: the harness has printed `test NAME ... `.
    print!("\n{}", tally.lines());
}

fn stress(layout: Layout) {
    require_root();
    let empty = ScratchDir::new("stress-root").expect("scratch dir");
    let image = Image::mkfs(empty.path(), layout.mkfs, "512M").expect("mkfs.ext4");
    e2fsck(image.path()).unwrap_or_else(|e| panic!("{}: the fresh image: {e:#}", layout.name));

    let extra = std::env::var("FSHOST_STRESS_MOUNT_OPTIONS").unwrap_or_default();
    let options: Vec<&str> = std::iter::once("rw").chain(extra.split(',').filter(|o| !o.is_empty())).collect();
    let mount_rw = || {
        FshostMount::mount(&guest("ext4"), image.path(), &options)
            .unwrap_or_else(|e| panic!("{}: fshost mount -o rw: {e:#}", layout.name))
    };
    let unmount = |mut mount: FshostMount, after: &str| {
        let status = mount.unmount().unwrap_or_else(|e| panic!("{}: unmount after {after}: {e:#}", layout.name));
        assert!(status.success(), "{}: fshost exited {status} after {after}:\n{}", layout.name, mount.log());
    };

    let mount = mount_rw();
    stress_ng(layout, &mount);
    unmount(mount, "stress-ng");
    e2fsck(image.path()).unwrap_or_else(|e| panic!("{}: after stress-ng through fshost: {e:#}", layout.name));

    let mount = mount_rw();
    let root = mount.path().join("race");
    let started = Instant::now();
    let tally = own_workers(layout, &root);
    let ran = started.elapsed();
    // The tree as fshost shows it, before its unmount (watched: a hang
    // here must fail the test, not stall it).
    let done = AtomicBool::new(false);
    let fshost_tree = std::thread::scope(|s| {
        let capturing = s.spawn(|| {
            let tree = capture::capture(mount.path());
            done.store(true, Ordering::Release);
            tree
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !done.load(Ordering::Acquire) {
            // SAFETY: kill has no memory effects; the pid is our child's.
            unsafe { libc::kill(mount.pid() as libc::pid_t, libc::SIGKILL) };
        }
        capturing.join().expect("capture panicked")
    });
    let log = mount.log();
    unmount(mount, "the workers");
    assert!(
        tally.unexpected.is_empty(),
        "{}: {} calls answered what no race explains:\n{}\nfshost's log:\n{log}",
        layout.name,
        tally.unexpected.len(),
        tally.unexpected.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
    e2fsck(image.path())
        .unwrap_or_else(|e| panic!("{}: after the concurrent workers through fshost: {e:#}", layout.name));
    let kernel = KernelMount::read_only(image.path()).expect("the kernel mounts the image");
    let kernel_tree = capture::capture(kernel.path());
    let opts = Options { timed: Default::default(), dir_sizes: true };
    if let Some(report) = capture::report(&capture::diff(&kernel_tree, &fshost_tree, &opts), 40) {
        panic!("{}: the kernel's view after unmount vs fshost's before it: {report}", layout.name);
    }
    // The workers did real work: each kind of call succeeded somewhere.
    for op in ["create-write", "rename", "link", "unlink", "mkdir", "rmdir", "setxattr", "own-write"] {
        assert!(tally.ok.get(op).copied().unwrap_or(0) > 0, "{}: no {op} succeeded: {tally:?}", layout.name);
    }
    let entries = kernel_tree.nodes.len();
    assert!(entries > 20, "{}: only {entries} entries left behind", layout.name);
    eprintln!(
        "{}: {} calls by the workers in {:.1} s, {entries} entries compared; ok {:?}, expected errnos {:?}",
        layout.name,
        tally.ops(),
        ran.as_secs_f64(),
        tally.ok,
        tally.expected
    );
}

#[test]
fn concurrent_stress_ext4() {
    stress(EXT4);
}

#[test]
fn concurrent_stress_ext4_1k_blocks() {
    stress(EXT4_1K);
}

#[test]
fn concurrent_stress_ext2() {
    stress(EXT2);
}

#[test]
fn concurrent_stress_inline_data() {
    stress(INLINE);
}
