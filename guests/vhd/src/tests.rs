//! Images made by `qemu-img convert -O vpc` (fixed and dynamic, with
//! QEMU's CHS sizing and with `force_size`), read whole through
//! [`Image::map`] and compared with `qemu-img convert -f vpc -O raw`; and
//! mutated images that must never panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn run(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fshost-vhd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Noise, zeros and text in 64 KiB runs.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|i| match (i >> 16) % 3 {
            0 => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
            1 => 0,
            _ => b"virtual hard disk "[i % 18],
        })
        .collect()
}

fn read_all(image: &[u8]) -> Result<Vec<u8>> {
    let disk = MemDisk(image.to_vec());
    let img = Image::open(&disk)?;
    let mut out = vec![0u8; img.length() as usize];
    let mut pos = 0u64;
    while pos < img.length() {
        let extents = img.map(&disk, pos, 5 << 20)?;
        assert!(extents[0].offset <= pos && pos < extents[0].offset + extents[0].length);
        for e in &extents {
            let dst = &mut out[e.offset as usize..(e.offset + e.length) as usize];
            match e.kind {
                Kind::Backing(f) => dst.copy_from_slice(&image[f as usize..(f + e.length) as usize]),
                Kind::Zeros => dst.fill(0),
            }
            pos = e.offset + e.length;
        }
    }
    Ok(out)
}

#[test]
fn qemu_made_vhds_read_as_qemu_reads_them() {
    let dir = scratch("convert");
    let raw = dir.join("disk.raw");
    // Not a whole CHS geometry: QEMU's sizing rule shows.
    std::fs::write(&raw, pattern(9 * 1024 * 1024 + 3 * 65536)).unwrap();
    for (name, opts) in [
        ("dynamic", "subformat=dynamic"),
        ("fixed", "subformat=fixed"),
        ("dynamic-sized", "subformat=dynamic,force_size=on"),
        ("fixed-sized", "subformat=fixed,force_size=on"),
    ] {
        let img = dir.join(name);
        run(&["convert", "-f", "raw", "-O", "vpc", "-o", opts, s(&raw), s(&img)]);
        let oracle = dir.join("oracle");
        run(&["convert", "-f", "vpc", "-O", "raw", s(&img), s(&oracle)]);
        let ours = read_all(&std::fs::read(&img).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = std::fs::read(&oracle).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        assert!(ours == theirs, "{name}: bytes differ from qemu-img's");
        assert_eq!(probe(&MemDisk(std::fs::read(&img).unwrap())).unwrap(), Some("vhd"));
    }
    assert_eq!(Image::open(&MemDisk(vec![0; 4096])).err().unwrap().code, Code::NotFound);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mutated_vhds_never_panic() {
    let dir = scratch("fuzz");
    let raw = dir.join("disk.raw");
    std::fs::write(&raw, pattern(3 << 20)).unwrap();
    let img = dir.join("d.vhd");
    run(&["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", s(&raw), s(&img)]);
    let seed = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut opened = 0;
    for _ in 0..2000 {
        let mut image = seed.clone();
        for _ in 0..1 + next() % 6 {
            // The footer copy, the dynamic header and the table.
            let at = (next() as usize) % image.len().min(8192);
            image[at] ^= 1 << (next() % 8);
        }
        // Keep the checksum right half the time, or nothing gets past it.
        if next().is_multiple_of(2) {
            let sum = image[..512]
                .iter()
                .enumerate()
                .filter(|(i, _)| !(64..68).contains(i))
                .fold(0u32, |s, (_, b)| s.wrapping_add(u32::from(*b)));
            image[64..68].copy_from_slice(&(!sum).to_be_bytes());
        }
        let disk = MemDisk(image);
        let Ok(img) = Image::open(&disk) else { continue };
        opened += 1;
        let mut pos = 0;
        while pos < img.length() {
            match img.map(&disk, pos, 1 << 20) {
                Ok(e) => pos = e.last().map_or(img.length(), |l| l.offset + l.length),
                Err(_) => break,
            }
        }
    }
    assert!(opened > 0, "no mutation opened: the test tests nothing");
}
