//! The foundation, end to end, with the hellofs guests (the Rust one and
//! the same format in other languages, `HELLOFS_GUESTS`): the same images
//! read through a real FUSE mount and through the offline commands must give
//! back exactly the bytes and attributes the image was built with.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use fshost_tests::fshost::{FshostMount, guest, offline};
use fshost_tests::pattern::pattern;
use fshost_tests::scratch::ScratchDir;
use hello::image::Builder;

const BS: u64 = 4096;
const NON_UTF8: &[u8] = b"caf\xe9-\xff\xfe.txt";

/// Every implementation of hellofs (guests/hello/README.md): each test
/// below runs against each of them, as target/guests/NAME.wasm.
const HELLOFS_GUESTS: &[&str] = &["hello", "hello-c", "hello-py"];

/// Run `test` with each guest of [`HELLOFS_GUESTS`], all of them even when
/// one fails, and fail naming those that did.
fn for_each_guest(test: impl Fn(&str) + std::panic::RefUnwindSafe) {
    let failed: Vec<&str> = HELLOFS_GUESTS
        .iter()
        .copied()
        .filter(|name| {
            eprintln!("--- hellofs guest {name}");
            std::panic::catch_unwind(|| test(name)).is_err()
        })
        .collect();
    assert!(failed.is_empty(), "failed with the hellofs guests {failed:?} (their panics are above)");
}

struct Sample {
    _dir: ScratchDir,
    image: PathBuf,
    small: Vec<u8>,
    /// (size, chunks) of the sparse file.
    sparse: (u64, Vec<(u64, Vec<u8>)>),
    big: Vec<u8>,
}

impl Sample {
    /// The expected bytes of the sparse file: chunks over zeros.
    fn sparse_bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.sparse.0 as usize];
        for (off, data) in &self.sparse.1 {
            v[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        v
    }
}

fn sample() -> Sample {
    let dir = ScratchDir::new("hello").unwrap();
    let mut b = Builder::new(BS as u32, b"sample");
    let root = b.root();
    let docs = b.dir(root, b"docs");
    let small = pattern(5000, 1);
    let f = b.file(docs, b"small.bin", &small);
    b.set_meta(f, 0o640, 1000, 2000, (-86_400, 123_456_789));
    b.link(root, b"hardlink.bin", f);
    b.file(root, NON_UTF8, b"named in latin-1\n");
    b.file(root, b"empty", b"");
    b.symlink(root, b"link", b"docs/small.bin");
    // Data, hole, data, hole up to an unaligned size.
    let sparse = (1_000_000u64, vec![(0, pattern(10_000, 2)), (8 * BS * 16, pattern(3 * BS as usize, 3))]);
    b.sparse_file(root, b"sparse.bin", sparse.0, sparse.1.clone());
    // Larger than the guest's block cache (1 MiB) and than one FUSE read.
    let big = pattern(24 << 20, 4);
    let chunks: Vec<(u64, Vec<u8>)> =
        big.chunks(256 * 1024).enumerate().map(|(i, c)| ((i * 256 * 1024) as u64, c.to_vec())).collect();
    b.sparse_file(root, b"big.bin", big.len() as u64, chunks);
    b.special(root, b"fifo", 0o010644, 0);
    b.special(root, b"tty", 0o020620, hello_rdev(4, 1));
    let image = dir.path().join("sample.img");
    std::fs::write(&image, b.build()).unwrap();
    Sample { _dir: dir, image, small, sparse, big }
}

/// glibc's makedev, as the hello format stores rdev.
fn hello_rdev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

fn hash(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn mount_shows_the_tree_attributes_and_bytes() {
    for_each_guest(mount_shows_the_tree_attributes_and_bytes_with);
}

fn mount_shows_the_tree_attributes_and_bytes_with(name: &str) {
    let s = sample();
    let before = hash(&s.image);
    {
        let m = FshostMount::mount(&guest(name), &s.image, &[]).unwrap();
        let p = m.path();
        let mut names: Vec<Vec<u8>> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
        names.sort();
        let mut want: Vec<Vec<u8>> =
            [&b"big.bin"[..], b"docs", b"empty", b"fifo", b"hardlink.bin", b"link", NON_UTF8, b"sparse.bin", b"tty"]
                .iter()
                .map(|n| n.to_vec())
                .collect();
        want.sort();
        assert_eq!(names, want);

        let small = p.join("docs/small.bin");
        let meta = std::fs::symlink_metadata(&small).unwrap();
        assert_eq!(meta.mode(), 0o100640);
        assert_eq!((meta.uid(), meta.gid(), meta.size(), meta.nlink()), (1000, 2000, 5000, 2));
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (-86_400, 123_456_789));
        assert_eq!(std::fs::read(&small).unwrap(), s.small);
        assert_eq!(std::fs::symlink_metadata(p.join("hardlink.bin")).unwrap().ino(), meta.ino());
        assert_eq!(std::fs::read_link(p.join("link")).unwrap(), Path::new("docs/small.bin"));
        assert_eq!(std::fs::read(p.join("link")).unwrap(), s.small);
        assert_eq!(std::fs::read(p.join(OsStr::from_bytes(NON_UTF8))).unwrap(), b"named in latin-1\n");
        assert_eq!(std::fs::read(p.join("empty")).unwrap(), b"");
        let tty = std::fs::symlink_metadata(p.join("tty")).unwrap();
        assert_eq!((libc::major(tty.rdev()), libc::minor(tty.rdev())), (4, 1));
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &std::fs::symlink_metadata(p.join("fifo")).unwrap().file_type()
        ));

        // Byte-exact, holes as zeros, across extents and past the caches.
        assert_eq!(std::fs::read(p.join("sparse.bin")).unwrap(), s.sparse_bytes());
        assert!(std::fs::read(p.join("big.bin")).unwrap() == s.big, "big.bin differs");
        // Unaligned reads in the middle of extents.
        let f = std::fs::File::open(p.join("big.bin")).unwrap();
        let mut buf = vec![0u8; 100_003];
        f.read_exact_at(&mut buf, 7_777_777).unwrap();
        assert!(buf == s.big[7_777_777..7_877_780]);

        // A missing file is ENOENT.
        let err = std::fs::metadata(p.join("docs/missing")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        // Read-only: writes are refused.
        let err = std::fs::OpenOptions::new().write(true).open(&small).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    }
    assert_eq!(hash(&s.image), before, "the image changed");
}

#[test]
fn seek_data_and_hole_report_the_real_layout() {
    for_each_guest(seek_data_and_hole_report_the_real_layout_with);
}

fn seek_data_and_hole_report_the_real_layout_with(name: &str) {
    let s = sample();
    let m = FshostMount::mount(&guest(name), &s.image, &[]).unwrap();
    let f = std::fs::File::open(m.path().join("sparse.bin")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let seek = |off: i64, whence| {
        // SAFETY: lseek on an open descriptor.
        let r = unsafe { libc::lseek(fd, off, whence) };
        if r < 0 { Err(std::io::Error::last_os_error().raw_os_error()) } else { Ok(r) }
    };
    // Data [0, 12288) (10000 bytes rounded to blocks), hole, data at 512 KiB
    // for 3 blocks, then a hole to the end of the file.
    let second = (8 * BS * 16) as i64;
    assert_eq!(seek(0, libc::SEEK_DATA), Ok(0));
    assert_eq!(seek(0, libc::SEEK_HOLE), Ok(3 * BS as i64));
    assert_eq!(seek(3 * BS as i64, libc::SEEK_DATA), Ok(second));
    assert_eq!(seek(second, libc::SEEK_HOLE), Ok(second + 3 * BS as i64));
    assert_eq!(seek(second + 3 * BS as i64, libc::SEEK_DATA), Err(Some(libc::ENXIO)));
    assert_eq!(seek(1_000_000, libc::SEEK_HOLE), Err(Some(libc::ENXIO)));
}

fn stdout_ok(out: std::process::Output) -> Vec<u8> {
    assert!(out.status.success(), "fshost failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn offline_commands_agree_with_the_image() {
    for_each_guest(offline_commands_agree_with_the_image_with);
}

fn offline_commands_agree_with_the_image_with(name: &str) {
    let s = sample();
    let g = guest(name);
    let ls = stdout_ok(offline("ls", &g, &s.image, &[OsStr::new("/")]).unwrap());
    let names: Vec<&[u8]> = ls.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(names.contains(&NON_UTF8), "non-UTF-8 name missing from {names:?}");
    assert_eq!(names.len(), 9);

    let cat = stdout_ok(offline("cat", &g, &s.image, &[OsStr::new("docs/small.bin")]).unwrap());
    assert_eq!(cat, s.small);
    let cat = stdout_ok(offline("cat", &g, &s.image, &[OsStr::new("/link")]).unwrap());
    assert_eq!(cat, s.small, "cat follows symlinks");
    let cat = stdout_ok(offline("cat", &g, &s.image, &[OsStr::new("sparse.bin")]).unwrap());
    assert!(cat == s.sparse_bytes());
    let cat = stdout_ok(offline("cat", &g, &s.image, &[OsStr::from_bytes(NON_UTF8)]).unwrap());
    assert_eq!(cat, b"named in latin-1\n");

    let args = [OsStr::new("--time-style"), OsStr::new("epoch"), OsStr::new("docs/small.bin")];
    let stat = String::from_utf8(stdout_ok(offline("stat", &g, &s.image, &args).unwrap())).unwrap();
    for line in
        ["type: regular", "mode: 0640", "nlink: 2", "uid: 1000", "gid: 2000", "size: 5000", "mtime: -86400.123456789"]
    {
        assert!(stat.lines().any(|l| l == line), "missing {line:?} in\n{stat}");
    }

    let info = String::from_utf8(stdout_ok(offline("info", &g, &s.image, &[]).unwrap())).unwrap();
    assert!(info.contains("type: hellofs") && info.contains("label: sample"), "{info}");

    let missing = offline("cat", &g, &s.image, &[OsStr::new("docs/nope")]).unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such file or directory"));
}

#[test]
fn cp_out_extracts_a_sparse_exact_copy() {
    for_each_guest(cp_out_extracts_a_sparse_exact_copy_with);
}

fn cp_out_extracts_a_sparse_exact_copy_with(name: &str) {
    let s = sample();
    let out = ScratchDir::new("cp-out").unwrap();
    let dest = out.path().join("tree");
    stdout_ok(offline("cp-out", &guest(name), &s.image, &[OsStr::new("/"), dest.as_os_str()]).unwrap());
    assert_eq!(std::fs::read(dest.join("docs/small.bin")).unwrap(), s.small);
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == s.big);
    let sparse = dest.join("sparse.bin");
    assert!(std::fs::read(&sparse).unwrap() == s.sparse_bytes());
    // 6 data blocks of 4 KiB = 48 KiB = 96 sectors; a dense copy would be ~1 MB.
    let blocks = std::fs::metadata(&sparse).unwrap().blocks();
    assert!(blocks <= 200, "sparse.bin was written densely ({blocks} sectors)");
    assert_eq!(
        std::fs::metadata(dest.join("hardlink.bin")).unwrap().ino(),
        std::fs::metadata(dest.join("docs/small.bin")).unwrap().ino()
    );
    assert_eq!(std::fs::read_link(dest.join("link")).unwrap(), Path::new("docs/small.bin"));
    let meta = std::fs::metadata(dest.join("docs/small.bin")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec()), (0o640, -86_400, 123_456_789));
    // cp-out never overwrites.
    let again = offline("cp-out", &guest(name), &s.image, &[OsStr::new("/"), dest.as_os_str()]).unwrap();
    assert!(!again.status.success());
}

/// Byte offset of the first extent record of inode `ino`, from the layout
/// in guests/hello/README.md.
fn first_extent_record(image: &[u8], ino: usize) -> usize {
    let table = u64::from_le_bytes(image[48..56].try_into().unwrap()) as usize;
    let rec = table + (ino - 1) * 64;
    u64::from_le_bytes(image[rec + 40..rec + 48].try_into().unwrap()) as usize
}

#[test]
fn a_mapping_past_the_device_is_eio_and_logged() {
    for_each_guest(a_mapping_past_the_device_is_eio_and_logged_with);
}

fn a_mapping_past_the_device_is_eio_and_logged_with(name: &str) {
    let dir = ScratchDir::new("bad-map").unwrap();
    let mut b = Builder::new(BS as u32, b"bad");
    let good = pattern(8192, 5);
    b.file(b.root(), b"good", &good);
    let bad = b.file(b.root(), b"bad", &pattern(8192, 6));
    let mut img = b.build();
    let at = first_extent_record(&img, bad as usize) + 16;
    img[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let image = dir.path().join("bad.img");
    std::fs::write(&image, &img).unwrap();

    let mut m = FshostMount::mount(&guest(name), &image, &[]).unwrap();
    let err = std::fs::read(m.path().join("bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(std::fs::read(m.path().join("good")).unwrap(), good, "the rest still reads");
    assert!(m.alive(), "the host survived");
    let log = m.log();
    assert!(log.contains("outside the") && log.contains("device"), "no reason logged:\n{log}");

    let out = offline("cat", &guest(name), &image, &[OsStr::new("bad")]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Input/output error"));
}

#[test]
fn a_truncated_image_fails_cleanly() {
    for_each_guest(a_truncated_image_fails_cleanly_with);
}

fn a_truncated_image_fails_cleanly_with(name: &str) {
    let s = sample();
    let full = std::fs::read(&s.image).unwrap();
    let g = guest(name);
    // Cut inside the header, inside the inode table, and inside the data.
    for cut in [20usize, BS as usize + 100, full.len() / 2] {
        let dir = ScratchDir::new("truncated").unwrap();
        let image = dir.path().join("cut.img");
        std::fs::write(&image, &full[..cut]).unwrap();
        for (cmd, arg) in [("ls", "/"), ("cat", "big.bin"), ("cat", "docs/small.bin")] {
            let out = offline(cmd, &g, &image, &[OsStr::new(arg)]).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{cmd} {arg} at cut {cut} panicked:\n{stderr}");
            if !out.status.success() {
                assert_eq!(out.status.code(), Some(1), "{cmd} {arg} at cut {cut}: {stderr}");
                assert!(
                    stderr.lines().any(|l| l.starts_with("fshost: ")),
                    "{cmd} {arg} at cut {cut}: unclear error {stderr}"
                );
            }
        }
        // Whatever still reads must be right.
        let out = offline("cat", &g, &image, &[OsStr::new("docs/small.bin")]).unwrap();
        if out.status.success() {
            assert_eq!(out.stdout, s.small, "cut {cut}: wrong bytes instead of an error");
        }
    }
    // Cut in the header: not even mountable, with a reason.
    let dir = ScratchDir::new("truncated").unwrap();
    let image = dir.path().join("cut.img");
    std::fs::write(&image, &full[..20]).unwrap();
    let err = FshostMount::mount(&guest(name), &image, &[]).err().expect("mounting 20 bytes must fail");
    assert!(format!("{err:#}").contains("mount"), "{err:#}");
}

/// A small image with one of everything (no large file): the base for
/// corruption.
fn small_image() -> Vec<u8> {
    let mut b = Builder::new(BS as u32, b"corrupt");
    let root = b.root();
    let docs = b.dir(root, b"docs");
    let f = b.file(docs, b"small.bin", &pattern(5000, 7));
    b.link(root, b"hardlink.bin", f);
    b.file(root, NON_UTF8, b"named in latin-1\n");
    b.symlink(root, b"link", b"docs/small.bin");
    b.sparse_file(root, b"sparse.bin", 100_000, vec![(0, pattern(5000, 8)), (16 * BS, pattern(BS as usize, 9))]);
    b.special(root, b"tty", 0o020620, hello_rdev(4, 1));
    b.build()
}

/// Where inode `ino`'s payload (directory entries, extent table, symlink
/// target) lies in `image`, from the layout in guests/hello/README.md.
fn payload(image: &[u8], ino: usize) -> std::ops::Range<usize> {
    let rec = BS as usize + (ino - 1) * 64;
    let field = |at: usize| u64::from_le_bytes(image[rec + at..rec + at + 8].try_into().unwrap()) as usize;
    let (mode, count) = (field(0) as u32, field(36) as u32 as usize);
    let len = if mode & 0o170000 == 0o100000 { count * 24 } else { field(16) };
    field(40)..field(40) + len
}

/// Overwrite one field of `image` at a random place in its metadata: the
/// header, the inode table or an inode's payload, with a random byte or an
/// edge value of 4 or 8 bytes. `base` is the uncorrupted image.
fn corrupt(image: &mut [u8], base: &[u8], random: &mut impl FnMut() -> u64) {
    let table = BS as usize;
    let inodes = u32::from_le_bytes(base[12..16].try_into().unwrap()) as usize;
    let region = match random() % 4 {
        0 => 0..56,
        1 => table..table + inodes * 64,
        _ => Some(payload(base, 1 + random() as usize % inodes)).filter(|r| !r.is_empty()).unwrap_or(0..56),
    };
    let at = region.start + (random() as usize) % region.len();
    let edge_u32 = [0u32, 1, 2, 0x7fff_ffff, 0xffff_ffff, 0o040755, 0o120777, 1 << 20, 4096];
    let edge_u64 = [0u64, u64::MAX, 1 << 40, u64::MAX - 4095, image.len() as u64 - 8];
    match random() % 3 {
        0 => image[at] = random() as u8,
        1 => {
            let at = (at & !3).min(image.len() - 4);
            let v = edge_u32[random() as usize % edge_u32.len()];
            image[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => {
            let at = (at & !7).min(image.len() - 8);
            let v = edge_u64[random() as usize % edge_u64.len()];
            image[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// What offline command `cmd` showed with guest `name`: exit code, stdout
/// and the error lines (with the guest's path replaced by GUEST).
fn answer(name: &str, cmd: &str, image: &Path, args: &[&OsStr]) -> (Option<i32>, Vec<u8>, Vec<String>) {
    let plugin = guest(name);
    let out = offline(cmd, &plugin, image, args).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.starts_with("fshost: "))
        .map(|l| l.replace(&*plugin.to_string_lossy(), "GUEST"))
        .collect();
    (out.status.code(), out.stdout, errors)
}

/// Every hellofs guest must read a corrupted image exactly as the first of
/// [`HELLOFS_GUESTS`] (the Rust guest, whose parser cannot read out of
/// bounds) does: the same listings, bytes and attributes where it reads
/// on, the same error where it refuses. A C guest reading past a buffer, or
/// trusting a count it should have checked, answers differently or traps.
#[test]
fn corrupted_images_get_the_same_answers_from_every_guest() {
    let dir = ScratchDir::new("corrupt").unwrap();
    let base = small_image();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let commands: [(&str, &[&str]); 6] = [
        ("ls", &["/", "-l"]),
        ("ls", &["/docs", "-l"]),
        ("cat", &["/docs/small.bin"]),
        ("cat", &["/sparse.bin"]),
        ("cat", &["/link"]),
        ("stat", &["/tty"]),
    ];
    let (reference, others) = HELLOFS_GUESTS.split_first().unwrap();
    let mut differences = Vec::new();
    // How the reference answered: (read on, refused at mount, refused later).
    let mut outcomes = (0, 0, 0);
    for case in 0..30 {
        let mut image = base.clone();
        for _ in 0..1 + random() % 3 {
            corrupt(&mut image, &base, &mut random);
        }
        let path = dir.path().join(format!("case-{case}.img"));
        std::fs::write(&path, &image).unwrap();
        for (cmd, args) in commands {
            let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
            let want = answer(reference, cmd, &path, &args);
            match (want.0, want.2.first()) {
                (Some(0), _) => outcomes.0 += 1,
                (_, Some(e)) if e.contains(": mount: ") => outcomes.1 += 1,
                _ => outcomes.2 += 1,
            }
            for other in others {
                let got = answer(other, cmd, &path, &args);
                if got != want {
                    let show = |a: &(Option<i32>, Vec<u8>, Vec<String>)| {
                        let stdout: String = String::from_utf8_lossy(&a.1).chars().take(100).collect();
                        format!("exit {:?}, {:?}, stdout {stdout:?}", a.0, a.2)
                    };
                    differences.push(format!(
                        "case {case}, {cmd} {args:?}: {reference}: {}; {other}: {}",
                        show(&want),
                        show(&got)
                    ));
                }
            }
        }
    }
    eprintln!("answers read on, refused at mount, refused later: {outcomes:?}");
    assert!(differences.is_empty(), "{} differences:\n{}", differences.len(), differences.join("\n"));
    // The corruption must reach past mount, and not always break it.
    assert!(outcomes.0 > 0 && outcomes.1 > 0 && outcomes.2 > 0, "corruption too weak or too strong: {outcomes:?}");
}
