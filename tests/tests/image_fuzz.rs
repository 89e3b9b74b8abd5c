//! Mutated ext4 images through the real binary and the real ext4.wasm
//! guest: the containment promise seen from outside. Each case flips bytes
//! or sets fields in the metadata of a real mkfs.ext4 image (superblock,
//! group descriptors, inode table, directory, htree, extent, xattr and
//! journal blocks, found with debugfs), then runs `fshost cp-out` of the
//! whole tree under a wall-clock deadline. Every run must end with exit 0,
//! or exit 1 and a `fshost: ` error line; never a signal, a panic message
//! or a hang; and the image must be unchanged byte for byte.
//!
//! The bounded test runs a few hundred cases. For a longer run by hand:
//! `FSHOST_FUZZ_CASES=20000 cargo test --release -p fshost-tests --test
//! image_fuzz -- --nocapture` (cases per base image; `FSHOST_FUZZ_SEED`
//! changes the mutations).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fshost_tests::fshost::{fshost_bin, guest};
use fshost_tests::scratch::ScratchDir;
use sha2::{Digest, Sha256};

/// Cases per base image in the bounded run.
const DEFAULT_CASES: u64 = 75;
/// Wall-clock limit of one `fshost cp-out`: far above what a case needs
/// (the guest's per-call deadline is 200 ms), far below a hang.
const DEADLINE: Duration = Duration::from_secs(60);

/// xorshift64*: a tiny seeded generator, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn debugfs(img: &Path, request: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(request).arg(img))
}

/// A base image: its bytes and the byte ranges of its metadata.
struct Base {
    name: &'static str,
    bytes: Vec<u8>,
    regions: Vec<(u64, u64)>,
}

/// A source tree with a directory big enough for an htree, a fragmented
/// file (an extent tree with an index block), a file with an indirect-block
/// map on ext2, fast and slow symlinks, in-inode and block xattrs.
fn source_tree(dir: &Path) {
    fs::create_dir_all(dir.join("big")).unwrap();
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    for i in 0..150 {
        fs::write(dir.join("big").join(format!("name-{i:03}-padding")), format!("{i}")).unwrap();
    }
    let frag = fs::File::create(dir.join("frag")).unwrap();
    for i in (0..300u64).step_by(2) {
        std::os::unix::fs::FileExt::write_all_at(&frag, &[i as u8 | 1; 700], i * 1024).unwrap();
    }
    fs::write(dir.join("sub/deeper/file"), vec![7u8; 20_000]).unwrap();
    fs::write(dir.join("tiny"), b"tiny").unwrap();
    std::os::unix::fs::symlink("tiny", dir.join("fast")).unwrap();
    std::os::unix::fs::symlink("s".repeat(300), dir.join("sub/slow")).unwrap();
    run(Command::new("setfattr").args(["-n", "user.a", "-v", "in-inode"]).arg(dir.join("tiny")));
    run(Command::new("setfattr").args(["-n", "user.b", "-v", &"B".repeat(600)]).arg(dir.join("tiny")));
}

/// Make an image with `mkfs_args` and find its metadata with debugfs.
fn base(scratch: &Path, name: &'static str, mkfs_args: &[&str], dirty_journal: bool) -> Base {
    let src = scratch.join(format!("{name}-src"));
    source_tree(&src);
    let img = scratch.join(format!("{name}.img"));
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).args(mkfs_args).arg(&img).arg("4M"));
    let fsck = Command::new("e2fsck").arg("-fyD").arg(&img).output().unwrap();
    assert!(fsck.status.code().is_some_and(|c| c <= 1), "e2fsck -fyD {name}");
    let bs: u64 = debugfs(&img, "stats")
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("block size in debugfs stats");
    let block = |b: u64| (b * bs, (b + 1) * bs);
    let mut regions = vec![(1024, 2048), block(if bs == 1024 { 2 } else { 1 })];
    let imap = debugfs(&img, "imap <2>");
    let itable: u64 = imap
        .split("located at block ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|b| b.parse().ok())
        .expect("inode table block in debugfs imap");
    regions.push((itable * bs, (itable + 8) * bs));
    for dir in ["/", "/big", "/sub", "/sub/deeper"] {
        regions.extend(debugfs(&img, &format!("blocks {dir}")).split_whitespace().map(|b| block(b.parse().unwrap())));
    }
    for file in ["/frag", "/tiny", "/sub/deeper/file", "/sub/slow"] {
        let stat = debugfs(&img, &format!("stat {file}"));
        if let Some(acl) = stat.split("File ACL: ").nth(1).and_then(|r| r.split_whitespace().next()) {
            let acl: u64 = acl.parse().unwrap();
            if acl != 0 {
                regions.push(block(acl));
            }
        }
        // Index and indirect blocks: debugfs lists them among the file's
        // blocks as (IND), (DIND), (ETB0)...
        for tag in ["(IND):", "(DIND):", "(ETB0):"] {
            let found = stat.split(tag).nth(1).and_then(|r| r.split([',', '\n']).next());
            if let Some(b) = found.and_then(|b| b.trim().parse().ok()) {
                regions.push(block(b));
            }
        }
    }
    if dirty_journal {
        // Log the root directory's and the inode table's first blocks in a
        // committed transaction (the image then needs recovery), and fuzz
        // the journal's first blocks too.
        let whole = fs::read(&img).unwrap();
        let mut script = String::from("jo\n");
        for (i, &(start, _)) in regions.iter().enumerate().skip(2).take(4) {
            let copy = scratch.join(format!("{name}-journaled-{i}"));
            fs::write(&copy, &whole[start as usize..(start + bs) as usize]).unwrap();
            script.push_str(&format!("jw -b {} {}\n", start / bs, copy.display()));
        }
        script.push_str("jc\n");
        let script_path = scratch.join(format!("{name}-script"));
        fs::write(&script_path, script).unwrap();
        run(Command::new("debugfs").arg("-w").arg("-f").arg(&script_path).arg(&img));
        regions.extend(debugfs(&img, "blocks <8>").split_whitespace().take(8).map(|b| block(b.parse().unwrap())));
    }
    Base { name, bytes: fs::read(&img).unwrap(), regions }
}

/// Apply 1..=8 mutations inside the metadata regions: random bytes, or a
/// 16/32-bit little-endian field set to a boundary value.
fn mutate(base: &Base, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = base.bytes.clone();
    for _ in 0..1 + rng.below(8) {
        let (start, end) = base.regions[rng.below(base.regions.len() as u64) as usize];
        let at = (start + rng.below(end - start)) as usize;
        match rng.below(6) {
            0..=2 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b = match rng.below(4) {
                        0 => 0,
                        1 => 0xff,
                        2 => *b ^ (1 << rng.below(8)),
                        _ => rng.next() as u8,
                    };
                }
            }
            wide => {
                let width = if wide == 3 { 2 } else { 4 };
                let at = at & !(width - 1);
                let value: u32 = match rng.below(6) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 1,
                    3 => 0x8000_0000,
                    4 => rng.below(4096) as u32,
                    _ => rng.next() as u32,
                };
                if let Some(field) = bytes.get_mut(at..at + width) {
                    field.copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
        }
    }
    bytes
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// The whole tree was copied out.
    Copied,
    /// The guest refused the image at mount.
    NotMounted,
    /// Mounted, then an operation failed with this errno.
    Failed(i32),
    /// cp-out refused the tree (a directory met under a second name).
    Refused,
    /// EIO because the guest trapped or ran out of time or memory.
    GuestFailed,
    /// EIO because the guest's answer broke the contract (a guest bug the
    /// host contained).
    GuestInvalid,
}

/// Run `fshost cp-out` of the whole tree of `img`; panic on any broken
/// promise, with the case named so it can be replayed.
fn check_case(img: &Path, dest: &Path, nocsum: bool, what: &str) -> Outcome {
    let before = Sha256::digest(fs::read(img).unwrap());
    let mut cmd = Command::new(fshost_bin());
    cmd.args(["cp-out", "--guest-timeout-ms", "200", "--plugin"]).arg(guest("ext4")).arg(img);
    if nocsum {
        cmd.args(["-o", "nocsum"]);
    }
    let mut child =
        cmd.arg("/").arg(dest).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: fshost cp-out still running after {DEADLINE:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().unwrap();
    assert_eq!(status.signal(), None, "{what}: fshost died of signal {:?}:\n{stderr}", status.signal());
    assert!(!stderr.contains("panicked"), "{what}: the host panicked:\n{stderr}");
    assert_eq!(Sha256::digest(fs::read(img).unwrap()), before, "{what}: the image changed");
    match status.code() {
        Some(0) => Outcome::Copied,
        Some(1) => {
            let line = stderr
                .lines()
                .find(|l| l.starts_with("fshost: "))
                .unwrap_or_else(|| panic!("{what}: exit 1 without a `fshost: ` error line:\n{stderr}"));
            if line.starts_with("fshost: mounting ") {
                Outcome::NotMounted
            } else {
                // cp-out's own refusals (a directory cycle) carry no errno.
                let errno = line.rsplit_once("(os error ").and_then(|(_, r)| r.strip_suffix(')'));
                let Some(errno) = errno.and_then(|n| n.parse().ok()) else {
                    return Outcome::Refused;
                };
                if line.contains("guest failed") {
                    Outcome::GuestFailed
                } else if line.contains("guest returned an invalid result") {
                    Outcome::GuestInvalid
                } else {
                    Outcome::Failed(errno)
                }
            }
        }
        other => panic!("{what}: exit code {other:?}:\n{stderr}"),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn mutated_ext4_images_never_crash_hang_or_change() {
    let bin = fshost_bin();
    let plugin = guest("ext4");
    assert!(
        bin.exists() && plugin.exists(),
        "build first: cargo xtask build ({} / {})",
        bin.display(),
        plugin.display()
    );
    let cases = env_u64("FSHOST_FUZZ_CASES", DEFAULT_CASES);
    let seed = env_u64("FSHOST_FUZZ_SEED", 0x1234_5678_9abc_def1);
    let scratch = ScratchDir::new("image-fuzz").unwrap();
    let bases = [
        base(scratch.path(), "ext4-1k", &["-b", "1024", "-I", "256"], false),
        base(scratch.path(), "ext2", &["-t", "ext2", "-b", "1024", "-I", "128"], false),
        base(scratch.path(), "inline-4k", &["-b", "4096", "-O", "inline_data,^has_journal", "-I", "256"], false),
        base(scratch.path(), "journal", &["-b", "1024", "-I", "256"], true),
    ];
    let mut tally: BTreeMap<(&str, Outcome), u64> = BTreeMap::new();
    let started = Instant::now();
    for (b, base) in bases.iter().enumerate() {
        let pristine = scratch.path().join(format!("{}-pristine.img", base.name));
        fs::write(&pristine, &base.bytes).unwrap();
        let dest = scratch.path().join("out");
        let outcome = check_case(&pristine, &dest, false, &format!("{} pristine", base.name));
        assert_eq!(outcome, Outcome::Copied, "{}: the unmutated image must copy out", base.name);
        fs::remove_dir_all(&dest).unwrap();
        let mut rng = Rng(seed ^ (b as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for case in 0..cases {
            let img: PathBuf = scratch.path().join("case.img");
            fs::write(&img, mutate(base, &mut rng)).unwrap();
            let what = format!("{} case {case} (seed {seed:#x})", base.name);
            let outcome = check_case(&img, &dest, case % 2 == 1, &what);
            *tally.entry((base.name, outcome)).or_default() += 1;
            if dest.exists() {
                fs::remove_dir_all(&dest).unwrap();
            }
        }
    }
    let total = cases * bases.len() as u64;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{total} cases in {secs:.1} s ({:.1} cases/s)", total as f64 / secs);
    for ((name, outcome), n) in &tally {
        eprintln!("  {name:10} {outcome:?}: {n}");
    }
    // The mutations must reach past the mount, or this tests nothing.
    let mounted: u64 = tally.iter().filter(|((_, o), _)| *o != Outcome::NotMounted).map(|(_, n)| n).sum();
    assert!(mounted * 4 >= total, "only {mounted} of {total} mutants mounted");
}
