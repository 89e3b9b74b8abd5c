//! The guest, natively, on images made by tools nobody here wrote:
//! `mkfs.vfat` (dosfstools) formats, mtools (`mcopy -s -m`, `mdel`,
//! `mattrib`) fills the image from a source tree. The source tree is the
//! oracle for names, types, sizes, bytes and modification times; `mdir`'s
//! "bytes free" for the free count; mkfs's `-n`/`-i` for label and serial.
//! (The kernel's own view is compared in tests/tests/fat_kernel_diff.rs.)
//!
//! File bytes are reassembled from the guest's mappings by reading the
//! image file, as the host would, so a wrong chain shows as wrong bytes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use fat::FatFs;
use fshost_sdk::{ErrorCode, FileType, Filesystem, Ino, IomapFlags, MappingKind, MountOptions, testing};
use fshost_tests::pattern::pattern;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "fshost-fat-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch dir");
        Scratch(path)
    }
    fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Run a tool (mtools in UTC, without its geometry check), panicking with
/// its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn touch(path: &Path, date: &str) {
    run(Command::new("touch").arg("-m").arg("-d").arg(date).arg(path));
}

/// The source tree: long, non-ASCII and 8.3 names in both cases, sizes
/// around the cluster size, a 100-entry directory, 20 nested directories,
/// timestamps at FAT's edges.
fn source_tree(root: &Path, cluster: usize) {
    let write = |rel: &str, seed: u32, len: usize| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, pattern(len, seed)).unwrap();
    };
    write("readme.txt", 1, 10);
    write("UPPER.TXT", 2, 20);
    write("Mixed.Txt", 3, 30);
    write("a rather long file name with spaces.text", 4, 40);
    write("caf\u{e9} cr\u{e8}me.txt", 5, 50);
    write("\u{65e5}\u{672c}\u{8a9e}\u{306e}\u{30d5}\u{30a1}\u{30a4}\u{30eb}.txt", 6, 60);
    write("empty", 7, 0);
    for (i, len) in [cluster - 1, cluster, cluster + 1, 2 * cluster, 3 << 20].into_iter().enumerate() {
        write(&format!("sizes/size-{len}"), 10 + i as u32, len);
    }
    for i in 0..100 {
        write(&format!("many/entry with a long name number {i:04}"), 100 + i, i as usize);
    }
    let mut deep = String::from("deep");
    for i in 0..20 {
        deep.push_str(&format!("/level{i}"));
    }
    write(&format!("{deep}/bottom.txt"), 200, 5);
    touch(&root.join("readme.txt"), "1980-01-01 00:00:00");
    touch(&root.join("UPPER.TXT"), "2107-12-31 23:59:58");
    touch(&root.join("Mixed.Txt"), "2000-02-29 12:34:57"); // odd second: FAT keeps 2 s
}

/// mkfs.vfat with `args` on a fresh image of `kib` KiB, the tree copied in
/// with `mcopy -s -m` (which keeps modification times).
fn build(dir: &Scratch, src: &Path, kib: u64, args: &[&str]) -> PathBuf {
    let image = dir.join("fat.img");
    run(Command::new("mkfs.vfat")
        .args(args)
        .args(["-n", "FSHOST", "-i", "c0ffee42", "-C"])
        .arg(&image)
        .arg(kib.to_string()));
    let mut mcopy = Command::new("mcopy");
    mcopy.args(["-s", "-m", "-i"]).arg(&image);
    for entry in fs::read_dir(src).unwrap() {
        mcopy.arg(entry.unwrap().path());
    }
    run(mcopy.arg("::"));
    image
}

fn mount(image: &Path) -> FatFs {
    let dev = testing::open_image(image).unwrap();
    FatFs::mount(dev, &MountOptions { read_only: true, options: vec![] }).unwrap()
}

/// The bytes of `ino` read through its mappings from the image file.
fn read_file(fs: &mut FatFs, image: &Path, ino: Ino, size: u64) -> Vec<u8> {
    let file = File::open(image).unwrap();
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let pos = out.len() as u64;
        let maps = fs.iomap_begin(ino, pos, size - pos, IomapFlags::default()).unwrap();
        for m in maps {
            assert!(m.offset <= out.len() as u64 && m.offset + m.length > out.len() as u64, "mapping {m:?}");
            let skip = out.len() as u64 - m.offset;
            let take = (m.length - skip).min(size - out.len() as u64) as usize;
            let MappingKind::Mapped(at) = m.kind else { panic!("unexpected mapping {m:?}") };
            let mut buf = vec![0u8; take];
            file.read_exact_at(&mut buf, at + skip).unwrap();
            out.extend_from_slice(&buf);
            if out.len() as u64 == size {
                break;
            }
        }
    }
    out
}

/// Walks the guest's tree and checks it against the source tree; returns
/// the number of entries checked.
fn check_tree(fs: &mut FatFs, image: &Path, src: &Path) -> usize {
    let mut checked = 0;
    let mut stack = vec![(1u64, src.to_path_buf())];
    while let Some((dir, path)) = stack.pop() {
        let mut listed = BTreeMap::new();
        let mut cookie = 0;
        loop {
            let batch = fs.readdir(dir, cookie, 37).unwrap();
            let Some(last) = batch.last() else { break };
            cookie = last.cookie;
            for e in batch {
                assert!(listed.insert(e.name.clone(), e).is_none(), "name listed twice");
            }
        }
        let expected: BTreeMap<Vec<u8>, fs::Metadata> = fs::read_dir(&path)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().as_bytes().to_vec(), e.metadata().unwrap())
            })
            .collect();
        assert_eq!(
            listed.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
            expected.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
            "names in {}",
            path.display()
        );
        for (name, meta) in &expected {
            let entry = &listed[name];
            let attr = fs.lookup(dir, name).unwrap();
            assert_eq!(attr.ino, entry.ino, "lookup and readdir agree on the inode");
            assert_eq!(fs.getattr(attr.ino).unwrap(), attr);
            // vfat lookups ignore ASCII case.
            let upper = name.to_ascii_uppercase();
            assert_eq!(fs.lookup(dir, &upper).unwrap().ino, attr.ino);
            let child = path.join(std::ffi::OsStr::from_bytes(name));
            if meta.is_dir() {
                assert_eq!(attr.kind, FileType::Directory);
                assert_eq!(entry.kind, FileType::Directory);
                let subdirs = fs::read_dir(&child).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count();
                assert_eq!(attr.nlink as usize, subdirs + 2, "nlink of {}", child.display());
                stack.push((attr.ino, child));
            } else {
                assert_eq!(attr.kind, FileType::Regular);
                assert_eq!(attr.size, meta.len(), "size of {}", child.display());
                // FAT keeps modification times in 2-second steps.
                assert_eq!(attr.mtime.seconds, meta.mtime() - meta.mtime().rem_euclid(2), "{}", child.display());
                assert_eq!(attr.ctime, attr.mtime);
                assert_eq!(attr.perm, 0o755);
                let bytes = read_file(fs, image, attr.ino, attr.size);
                assert!(bytes == fs::read(&child).unwrap(), "contents of {}", child.display());
            }
            checked += 1;
        }
    }
    checked
}

/// "N bytes free" from mdir.
fn mdir_free(image: &Path) -> u64 {
    let out = run(Command::new("mdir").arg("-i").arg(image).arg("::"));
    let line = out.lines().find(|l| l.contains("bytes free")).expect("mdir prints bytes free");
    line.split("bytes").next().unwrap().chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

fn check_format(args: &[&str], kib: u64, cluster: usize) {
    let dir = Scratch::new("tree");
    let src = dir.join("src");
    source_tree(&src, cluster);
    let image = build(&dir, &src, kib, args);
    let mut fs = mount(&image);
    let checked = check_tree(&mut fs, &image, &src);
    assert!(checked > 130, "{checked} entries checked");
    let info = fs.info().unwrap();
    assert_eq!(info.fs_type, "vfat");
    assert_eq!(info.label, b"FSHOST");
    assert_eq!(info.uuid, [0xc0, 0xff, 0xee, 0x42]);
    assert_eq!(info.free_blocks * u64::from(info.block_size), mdir_free(&image), "free space as mdir counts it");
    // A restarted guest gives the same inode numbers.
    let again = mount(&image).lookup(1, b"readme.txt").unwrap();
    assert_eq!(again, fs.lookup(1, b"README.TXT").unwrap());
}

#[test]
fn fat12_2k_clusters() {
    check_format(&["-F", "12", "-s", "4"], 6 << 10, 2048);
}

#[test]
fn fat16_512_byte_clusters() {
    check_format(&["-F", "16", "-s", "1"], 24 << 10, 512);
}

#[test]
fn fat32_4k_clusters() {
    // mtools takes the FAT type from the cluster count: FAT32 needs 65525.
    check_format(&["-F", "32", "-s", "8"], 300 << 10, 4096);
}

#[test]
fn fat32_4k_sectors() {
    check_format(&["-F", "32", "-S", "4096", "-s", "1"], 300 << 10, 4096);
}

/// Files written into the gaps left by deleted ones: the chain jumps, and
/// the guest returns one mapping per run of contiguous clusters.
#[test]
fn fragmented_file() {
    let dir = Scratch::new("frag");
    let image = dir.join("fat.img");
    run(Command::new("mkfs.vfat").args(["-F", "16", "-s", "4", "-C"]).arg(&image).arg("16384"));
    for i in 0..8 {
        let p = dir.join(format!("f{i}"));
        fs::write(&p, pattern(3 * 2048, i)).unwrap();
        run(Command::new("mcopy").arg("-i").arg(&image).arg(&p).arg("::"));
    }
    for i in (0..8).step_by(2) {
        run(Command::new("mdel").arg("-i").arg(&image).arg(format!("::f{i}")));
    }
    let big = pattern(20 * 2048 + 5, 99);
    fs::write(dir.join("big"), &big).unwrap();
    run(Command::new("mcopy").arg("-i").arg(&image).arg(dir.join("big")).arg("::"));
    run(Command::new("mattrib").arg("-i").arg(&image).arg("+r").arg("::big"));

    let mut fs = mount(&image);
    let attr = fs.lookup(1, b"big").unwrap();
    let maps = fs.iomap_begin(attr.ino, 0, attr.size, IomapFlags::default()).unwrap();
    assert!(maps.len() >= 4, "a fragmented chain gives several runs: {maps:?}");
    assert!(maps.windows(2).all(|w| w[0].offset + w[0].length == w[1].offset));
    assert_eq!(read_file(&mut fs, &image, attr.ino, attr.size), big);
    assert_eq!(attr.perm, 0o555, "read-only attribute clears the write bits");
    // Asked in the middle, the answer starts with the run holding the offset.
    let mid = fs.iomap_begin(attr.ino, 9 * 2048 + 7, 1, IomapFlags::default()).unwrap();
    assert!(mid[0].offset <= 9 * 2048 + 7 && 9 * 2048 + 7 < mid[0].offset + mid[0].length);
}

/// Options change owners, masks and the time zone as the kernel's do.
#[test]
fn mount_options() {
    let dir = Scratch::new("opts");
    let src = dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    touch(&src.join("f"), "2020-06-01 10:00:00");
    let image = build(&dir, &src, 4096, &["-F", "12"]);
    let opts = |o: &[(&str, &str)]| MountOptions {
        read_only: true,
        options: o.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let utc = mount(&image).lookup(1, b"f").unwrap();
    let dev = testing::open_image(&image).unwrap();
    let mut fs = FatFs::mount(
        dev,
        &opts(&[("uid", "1000"), ("gid", "100"), ("fmask", "133"), ("dmask", "022"), ("time_offset", "60")]),
    )
    .unwrap();
    let f = fs.lookup(1, b"f").unwrap();
    assert_eq!((f.uid, f.gid, f.perm), (1000, 100, 0o644));
    assert_eq!(f.mtime.seconds, utc.mtime.seconds - 3600, "local time one hour east of UTC");
    assert_eq!(fs.lookup(1, b"d").unwrap().perm, 0o755);
    let dev = testing::open_image(&image).unwrap();
    let bad = FatFs::mount(dev, &opts(&[("umask", "999")])).err().expect("umask 999 refused");
    assert_eq!(bad.code(), ErrorCode::Invalid);
}

/// Entries broken as the kernel's vfat sees them (checked under user-mode
/// Linux 6.1): a subdirectory whose first cluster is 0 has no "." and ".."
/// and fails with EIO (`fat_validate_dir`); a file with a size but no first
/// cluster reads as zeros. The directory still lists every name.
#[test]
fn broken_entries_fail_alone() {
    let dir = Scratch::new("broken");
    let src = dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/inner"), b"inner").unwrap();
    fs::write(src.join("f"), pattern(5000, 1)).unwrap();
    fs::write(src.join("ok.txt"), b"fine").unwrap();
    let image = build(&dir, &src, 4096, &["-F", "12"]);
    let (d, f) = {
        let mut fs = mount(&image);
        (fs.lookup(1, b"d").unwrap().ino, fs.lookup(1, b"f").unwrap().ino)
    };
    // Inode numbers are entry positions / 32: zero each entry's cluster.
    let file = fs::OpenOptions::new().write(true).open(&image).unwrap();
    for ino in [d, f] {
        file.write_all_at(&[0, 0], ino * 32 + 26).unwrap();
    }
    drop(file);

    let mut fs = mount(&image);
    assert_eq!(fs.getattr(d).unwrap_err().code(), ErrorCode::Io);
    assert_eq!(fs.readdir(d, 0, 10).unwrap_err().code(), ErrorCode::Io);
    let listed: Vec<_> = fs.readdir(1, 0, 10).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed.len(), 3, "readdir still names the broken directory");
    // readdirplus fails the batch; the host then lists it without
    // attributes and asks for each entry's alone.
    assert_eq!(fs.readdirplus(1, 0, 10).unwrap_err().code(), ErrorCode::Io);
    let attr = fs.getattr(f).unwrap();
    assert_eq!(attr.size, 5000);
    let maps = fs.iomap_begin(f, 0, 5000, IomapFlags::default()).unwrap();
    assert!(matches!(maps[..], [fshost_sdk::Mapping { offset: 0, kind: MappingKind::Hole, .. }]), "{maps:?}");
    assert!(maps[0].length >= 5000);
    let ok = fs.lookup(1, b"OK.TXT").unwrap();
    assert_eq!(read_file(&mut fs, &image, ok.ino, ok.size), b"fine");
}
