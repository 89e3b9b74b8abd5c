//! Images made by `qemu-img convert -O vmdk` (monolithicSparse and
//! streamOptimized), read whole through [`Image::map`] and compared with
//! `qemu-img convert -f vmdk -O raw`; and mutated images that never panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn run(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fshost-vmdk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Noise, zeros and text in 48 KiB runs (not grain-aligned).
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|i| match (i / 49152) % 3 {
            0 => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
            1 => 0,
            _ => b"virtual machine disk "[i % 21],
        })
        .collect()
}

fn read_all(image: &[u8]) -> Result<Vec<u8>> {
    let disk = MemDisk(image.to_vec());
    let mut img = Image::open(&disk)?;
    let mut out = vec![0u8; img.length as usize];
    let mut pos = 0u64;
    while pos < img.length {
        let extents = img.map(&disk, pos, 3 << 20)?;
        assert!(extents[0].offset <= pos && pos < extents[0].offset + extents[0].length);
        for e in &extents {
            let dst = &mut out[e.offset as usize..(e.offset + e.length) as usize];
            match &e.kind {
                Kind::Backing(f) => dst.copy_from_slice(&image[*f as usize..(*f + e.length) as usize]),
                Kind::Zeros => dst.fill(0),
                Kind::Data(bytes) => {
                    assert_eq!(bytes.len() as u64, e.length);
                    dst.copy_from_slice(bytes)
                }
            }
            pos = e.offset + e.length;
        }
    }
    Ok(out)
}

#[test]
fn qemu_made_vmdks_read_as_qemu_reads_them() {
    let dir = scratch("convert");
    let raw = dir.join("disk.raw");
    std::fs::write(&raw, pattern(7 * 1024 * 1024 + 5 * 4096)).unwrap();
    for (name, opts) in [("sparse", "subformat=monolithicSparse"), ("stream", "subformat=streamOptimized")] {
        let img = dir.join(name);
        run(&["convert", "-f", "raw", "-O", "vmdk", "-o", opts, s(&raw), s(&img)]);
        let oracle = dir.join("oracle");
        run(&["convert", "-f", "vmdk", "-O", "raw", s(&img), s(&oracle)]);
        let bytes = std::fs::read(&img).unwrap();
        assert_eq!(probe(&MemDisk(bytes.clone())).unwrap(), Some("vmdk"));
        let ours = read_all(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = std::fs::read(&oracle).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        assert!(ours == theirs, "{name}: bytes differ from qemu-img's");
    }
    assert_eq!(Image::open(&MemDisk(vec![0; 4096])).err().unwrap().code, Code::NotFound);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mutated_vmdks_never_panic() {
    let dir = scratch("fuzz");
    let raw = dir.join("disk.raw");
    std::fs::write(&raw, pattern(2 << 20)).unwrap();
    let mut seeds = Vec::new();
    for opts in ["subformat=monolithicSparse", "subformat=streamOptimized"] {
        let img = dir.join("d.vmdk");
        run(&["convert", "-f", "raw", "-O", "vmdk", "-o", opts, s(&raw), s(&img)]);
        seeds.push(std::fs::read(&img).unwrap());
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut opened = 0;
    for case in 0..2000u64 {
        let mut image = seeds[(case % 2) as usize].clone();
        for _ in 0..1 + next() % 6 {
            // The header, the descriptor, the tables; the footer at the end.
            let at = if next().is_multiple_of(4) {
                image.len() - 1 - (next() as usize) % 1536
            } else {
                (next() as usize) % image.len().min(96 << 10)
            };
            image[at] ^= 1 << (next() % 8);
        }
        let disk = MemDisk(image);
        let Ok(mut img) = Image::open(&disk) else { continue };
        opened += 1;
        let mut pos = 0;
        while pos < img.length {
            match img.map(&disk, pos, 1 << 20) {
                Ok(e) => pos = e.last().map_or(img.length, |l| l.offset + l.length),
                Err(_) => break,
            }
        }
    }
    assert!(opened > 0, "no mutation opened: the test tests nothing");
}
