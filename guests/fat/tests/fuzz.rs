//! Bounded mutation testing: a real image (mkfs.vfat + mcopy) with random
//! bytes changed in its metadata (boot sector, FATs, root directory and the
//! first data clusters), then every operation over the whole tree. Any
//! answer is fine, errors included; a panic, or a walk that does not end,
//! fails the test. Deterministic (a fixed seed), a few seconds;
//! `FSHOST_FUZZ_CASES=N` (per base image) and `FSHOST_FUZZ_SEED=S` run longer
//! or other searches.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fat::FatFs;
use fshost_sdk::{FileType, Filesystem, IomapFlags, MountOptions, testing};

fn run(cmd: &mut Command) {
    let out = cmd.env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC").output().expect("run tool");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An xorshift generator: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn image(dir: &Path, args: &[&str], kib: &str) -> Vec<u8> {
    let img = dir.join(format!("base{}.img", args.join("")));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("sub/a long file name {i}.txt")), vec![i as u8; i * 300]).unwrap();
    }
    std::fs::write(src.join("sub/deeper/x"), vec![7u8; 9000]).unwrap();
    std::fs::write(src.join("README.TXT"), b"hello").unwrap();
    run(Command::new("mkfs.vfat").args(args).arg("-C").arg(&img).arg(kib));
    run(Command::new("mcopy")
        .args(["-s", "-m", "-i"])
        .arg(&img)
        .arg(src.join("sub"))
        .arg(src.join("README.TXT"))
        .arg("::"));
    std::fs::read(&img).unwrap()
}

/// Every operation over the tree, bounded in entries and depth; returns
/// the number of entries listed (None if the mount failed).
fn exercise(bytes: Vec<u8>) -> Option<usize> {
    let dev = testing::memory_device(bytes);
    let Ok(mut fs) = FatFs::mount(dev, &MountOptions { read_only: true, options: vec![] }) else { return None };
    let _ = fs.info();
    let mut stack = vec![(1u64, 0usize)];
    let mut seen = 0;
    while let Some((dir, depth)) = stack.pop() {
        let _ = fs.getattr(dir);
        let _ = fs.readdirplus(dir, 0, 50);
        let mut cookie = 0;
        for _ in 0..100 {
            let Ok(batch) = fs.readdir(dir, cookie, 64) else { break };
            let Some(last) = batch.last() else { break };
            assert_ne!(last.cookie, cookie, "cookies advance");
            cookie = last.cookie;
            for e in batch {
                seen += 1;
                if seen > 5000 {
                    return Some(seen);
                }
                let _ = fs.lookup(dir, &e.name);
                let _ = fs.lookup(dir, &e.name.to_ascii_uppercase());
                let _ = fs.readlink(e.ino);
                match fs.getattr(e.ino) {
                    Ok(a) if a.kind == FileType::Directory && depth < 8 => stack.push((e.ino, depth + 1)),
                    Ok(a) if a.kind == FileType::Regular => {
                        let mut pos = 0;
                        while pos < a.size {
                            let Ok(maps) = fs.iomap_begin(e.ino, pos, a.size - pos, IomapFlags::default()) else {
                                break;
                            };
                            let Some(end) = maps.last().map(|m| m.offset + m.length) else { break };
                            assert!(end > pos, "mappings advance");
                            pos = end;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Some(seen)
}

#[test]
fn mutated_images_never_panic() {
    let dir = std::env::temp_dir().join(format!("fshost-fat-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bases = [image(&dir, &["-F", "12", "-s", "1"], "1440"), image(&dir, &["-F", "16", "-s", "1"], "8192")];
    let _ = std::fs::remove_dir_all(&dir);
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let per_base = env("FSHOST_FUZZ_CASES", 1000);
    let mut rng = Rng(env("FSHOST_FUZZ_SEED", 0x5eed_f00d_1234_5678) | 1);
    let start = Instant::now();
    let (mut cases, mut mounted, mut listed) = (0, 0, 0);
    for base in &bases {
        assert!(exercise(base.clone()).is_some_and(|n| n > 40), "the unmutated image lists");
        // Metadata lives in the first ~80 KiB of these images.
        let hot = base.len().min(80 << 10);
        for _ in 0..per_base {
            let mut bytes = base.clone();
            for _ in 0..1 + rng.below(8) {
                // One change in eight lands in the boot sector.
                let at = if rng.below(8) == 0 { rng.below(512) } else { rng.below(hot) };
                bytes[at] = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            if let Some(n) = exercise(bytes) {
                mounted += 1;
                listed += n;
            }
            cases += 1;
        }
    }
    assert!(start.elapsed() < Duration::from_secs(120) || per_base > 1000, "{cases} cases took {:?}", start.elapsed());
    // Not vacuous: most mutants still mount and list something.
    assert!(mounted > cases / 2 && listed > mounted * 20, "{mounted} of {cases} mounted, {listed} entries");
    eprintln!("{cases} mutants, {mounted} mounted, {listed} entries listed in {:?}", start.elapsed());
}
