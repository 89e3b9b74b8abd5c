//! Images made by qemu-img and qemu-io (the oracle: `qemu-img convert -O
//! raw` of the same image), read whole through [`Image::map`]; and mutated
//! images that must never panic. The stack through the real binary is
//! tested in tests/tests/disk_images.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const MIB: usize = 1 << 20;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fshost-qcow2-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e} (qemu-utils)"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `len` bytes: runs of noise, of zeros and of text, so that some
/// clusters are stored, some left out as zeros and some compress.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let block = out.len() / 4096;
        for i in 0..4096 {
            out.push(match block % 5 {
                0 | 3 => {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
                1 => 0,
                _ => b"the quick brown fox jumps over the lazy dog "[i % 44],
            });
        }
    }
    out.truncate(len);
    out
}

/// The whole virtual disk through `map`, checking each answer's shape;
/// `inherited` ranges come from `base` (zeros past its end).
fn read_all(image: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>> {
    let disk = MemDisk(image.to_vec());
    let mut img = Image::open(&disk)?;
    let mut out = vec![0u8; img.length as usize];
    let mut pos = 0u64;
    while pos < img.length {
        let extents = img.map(&disk, pos, 3 * MIB as u64)?;
        let first = &extents[0];
        assert!(first.offset <= pos && pos < first.offset + first.length, "{first:?} at {pos}");
        let mut at = first.offset;
        for e in &extents {
            assert_eq!(e.offset, at, "contiguous");
            assert!(e.length > 0 && e.offset + e.length <= img.length);
            at += e.length;
            let dst = &mut out[e.offset as usize..(e.offset + e.length) as usize];
            match &e.kind {
                Kind::Backing(f) => dst.copy_from_slice(&image[*f as usize..(*f + e.length) as usize]),
                Kind::Zeros => dst.fill(0),
                Kind::Inherited => {
                    let base = base.expect("inherited extent without a backing file");
                    for (i, b) in dst.iter_mut().enumerate() {
                        *b = base.get(e.offset as usize + i).copied().unwrap_or(0);
                    }
                }
                Kind::Data(bytes) => {
                    assert_eq!(bytes.len() as u64, e.length);
                    assert!(bytes.len() <= MAX_DATA);
                    dst.copy_from_slice(bytes);
                }
            }
        }
        pos = at;
    }
    Ok(out)
}

/// `qemu-img convert -O raw`: the oracle.
fn qemu_raw(sc: &Scratch, image: &Path) -> Vec<u8> {
    let raw = sc.path("oracle.raw");
    run("qemu-img", &["convert", "-O", "raw", s(image), s(&raw)]);
    std::fs::read(raw).unwrap()
}

fn convert(sc: &Scratch, raw: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = sc.path(name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[s(raw), s(&out)]);
    run("qemu-img", &args);
    out
}

#[test]
fn converted_images_read_as_qemu_reads_them() {
    let sc = Scratch::new("convert");
    let raw = sc.path("disk.raw");
    let bytes = pattern(6 * MIB + 3 * 4096);
    std::fs::write(&raw, &bytes).unwrap();
    for (name, extra) in [
        ("v2", &["-o", "compat=0.10"][..]),
        ("v3-4k", &["-o", "compat=1.1,cluster_size=4096"]),
        ("v3-512", &["-o", "cluster_size=512"]),
        ("deflate", &["-c"]),
        ("deflate-2m", &["-c", "-o", "cluster_size=2M"]),
        ("zstd", &["-c", "-o", "compression_type=zstd"]),
        ("extl2", &["-o", "extended_l2=on,cluster_size=128k"]),
        ("extl2-compressed", &["-c", "-o", "extended_l2=on"]),
    ] {
        let img = convert(&sc, &raw, name, extra);
        let image = std::fs::read(&img).unwrap();
        let oracle = qemu_raw(&sc, &img);
        let ours = read_all(&image, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours.len(), oracle.len(), "{name}");
        assert!(ours == oracle, "{name}: bytes differ from qemu-img's");
        assert_eq!(&ours[..bytes.len()], &bytes[..], "{name}");
        let h = Image::open(&MemDisk(image)).unwrap().header;
        assert_eq!(h.version, if name == "v2" { 2 } else { 3 }, "{name}");
    }
}

#[test]
fn zero_clusters_subclusters_and_backing_files() {
    let sc = Scratch::new("zero");
    let raw = sc.path("base.raw");
    let base = pattern(4 * MIB);
    std::fs::write(&raw, &base).unwrap();
    // Zero clusters (the v3 zero flag) over stored ones.
    let img = convert(&sc, &raw, "zero.qcow2", &["-o", "compat=1.1"]);
    run("qemu-io", &["-c", "write -z 64k 192k", "-c", "write -z 1M 64k", s(&img)]);
    let image = std::fs::read(&img).unwrap();
    assert_eq!(read_all(&image, None).unwrap(), qemu_raw(&sc, &img));

    // An overlay on a raw base: unallocated clusters are inherited; a few
    // are written, one is zeroed (reads zeros, not the base's bytes).
    for (name, opts) in [("overlay", "compat=1.1"), ("overlay-v2", "compat=0.10"), ("overlay-sub", "extended_l2=on")] {
        let ov = sc.path(name);
        run("qemu-img", &["create", "-q", "-f", "qcow2", "-b", s(&raw), "-F", "raw", "-o", opts, s(&ov), "5M"]);
        let mut io = vec!["-c", "write -P 0x5a 100k 8k", "-c", "write -P 0xa5 2M 64k"];
        if name != "overlay-v2" {
            io.extend(["-c", "write -z 3M 64k", "-c", "write -z 1M 2k"]);
        }
        io.push(s(&ov));
        run("qemu-io", &io);
        let image = std::fs::read(&ov).unwrap();
        let h = Image::open(&MemDisk(image.clone())).unwrap().header;
        assert_eq!(h.backing.as_deref(), Some(s(&raw).as_bytes()), "{name}");
        assert_eq!(h.backing_format.as_deref(), Some(&b"raw"[..]), "{name}");
        assert!(read_all(&image, Some(&base)).unwrap() == qemu_raw(&sc, &ov), "{name}");
    }
}

#[test]
fn snapshots_are_listed_and_the_active_image_is_read() {
    let sc = Scratch::new("snap");
    let raw = sc.path("disk.raw");
    std::fs::write(&raw, pattern(2 * MIB)).unwrap();
    let img = convert(&sc, &raw, "snap.qcow2", &[]);
    run("qemu-img", &["snapshot", "-c", "first one", s(&img)]);
    run("qemu-io", &["-c", "write -P 0x77 0 64k", s(&img)]);
    run("qemu-img", &["snapshot", "-c", "second", s(&img)]);
    run("qemu-io", &["-c", "write -P 0x78 64k 64k", s(&img)]);
    // The table is written last, at the file's end: its last entry unpadded.
    run("qemu-img", &["snapshot", "-c", "last", s(&img)]);
    let image = std::fs::read(&img).unwrap();
    let opened = Image::open(&MemDisk(image.clone())).unwrap();
    let names: Vec<&[u8]> = opened.snapshots.iter().map(|s| s.name.as_slice()).collect();
    assert_eq!(names, vec![&b"first one"[..], b"second", b"last"], "{:?}", opened.warnings);
    let ours = read_all(&image, None).unwrap();
    assert!(ours == qemu_raw(&sc, &img));
    assert!(ours[..65536].iter().all(|b| *b == 0x77) && ours[65536..131072].iter().all(|b| *b == 0x78));
}

#[test]
fn encryption_and_external_data_files_are_refused_by_name() {
    let sc = Scratch::new("refuse");
    let luks = sc.path("luks.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            "secret,id=s0,data=pass",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
            s(&luks),
            "1M",
        ],
    );
    let e = Image::open(&MemDisk(std::fs::read(&luks).unwrap())).err().unwrap();
    assert_eq!(e.code, Code::Unsupported);
    assert!(e.message.contains("LUKS"), "{e}");
    let ext = sc.path("ext.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&sc.path("data"))), s(&ext), "1M"],
    );
    let e = Image::open(&MemDisk(std::fs::read(&ext).unwrap())).err().unwrap();
    assert!(e.code == Code::Unsupported && e.message.contains("external data file"), "{e}");
    assert_eq!(Image::open(&MemDisk(vec![0; 4096])).err().unwrap().code, Code::NotFound);
    assert_eq!(probe(&MemDisk(b"QFI\xfb".to_vec())).unwrap(), Some("qcow2"));
}

/// A tiny xorshift: deterministic mutations, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_images_never_panic() {
    let sc = Scratch::new("fuzz");
    let raw = sc.path("disk.raw");
    std::fs::write(&raw, pattern(MIB)).unwrap();
    let mut seeds = Vec::new();
    for (name, extra) in [
        ("plain", &["-o", "cluster_size=4096"][..]),
        ("deflate", &["-c", "-o", "cluster_size=4096"]),
        ("extl2", &["-o", "extended_l2=on,cluster_size=16k"]),
        ("zstd", &["-c", "-o", "compression_type=zstd,cluster_size=4096"]),
    ] {
        let img = convert(&sc, &raw, name, extra);
        run("qemu-img", &["snapshot", "-c", "s", s(&img)]);
        seeds.push(std::fs::read(img).unwrap());
    }
    let cases: u64 = std::env::var("QCOW2_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut opened, mut read) = (0, 0);
    for case in 0..cases {
        let mut image = seeds[(case % seeds.len() as u64) as usize].clone();
        // Mostly the metadata at the front (header, L1, refcounts, L2),
        // sometimes anywhere; sometimes a whole big-endian number.
        for _ in 0..1 + rng.next() % 8 {
            let span = if rng.next().is_multiple_of(4) { image.len() } else { image.len().min(64 << 10) };
            let at = (rng.next() as usize) % span;
            if rng.next().is_multiple_of(3) && at + 8 <= image.len() {
                let v = [0u64, u64::MAX, 1 << 62, rng.next(), 1 << 63 | 0x200][(rng.next() % 5) as usize];
                image[at..at + 8].copy_from_slice(&v.to_be_bytes());
            } else {
                image[at] ^= 1 << (rng.next() % 8);
            }
        }
        if rng.next().is_multiple_of(16) {
            image.truncate((rng.next() as usize) % image.len());
        }
        let disk = MemDisk(image);
        let Ok(mut img) = Image::open(&disk) else { continue };
        opened += 1;
        let mut pos = 0u64;
        let mut calls = 0;
        while pos < img.length && calls < 64 {
            calls += 1;
            match img.map(&disk, pos, MIB as u64) {
                Ok(extents) => {
                    let last = extents.last().unwrap();
                    assert!(last.offset + last.length > pos);
                    pos = last.offset + last.length;
                }
                Err(_) => break,
            }
        }
        read += usize::from(pos >= img.length);
    }
    eprintln!("{cases} mutated images: {opened} opened, {read} read to their end");
    assert!(opened > 0 && read > 0, "the mutations never let an image through: they test nothing");
}
