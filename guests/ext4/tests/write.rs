//! The writer's file data path against oracles nobody here wrote: images
//! made by mkfs.ext4, changed through the `Filesystem` trait (iomap_begin
//! with the write flag, the data written into the mappings as the host
//! writes it, ioend, fallocate, setattr), unmounted, then checked by
//! `e2fsck -fn` and by the kernel's ext4 driver (a read-only loop mount):
//! every file reads back byte-exact and SEEK_DATA/SEEK_HOLE find data
//! exactly where the workload wrote blocks. The expected contents and
//! written blocks come from a model of POSIX semantics in this file, not
//! from the guest.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{Scratch, resolve};
use ext4::Ext4;
use fshost_sdk::{
    AttrChanges, ErrorCode, FallocateFlags, Filesystem, Ino, IomapFlags, MappingKind, MountOptions, Timestamp, testing,
};
use fshost_tests::kernel::{Image, KernelMount, data_ranges, require_root};
use fshost_tests::pattern::pattern;

const T: Timestamp = Timestamp { seconds: 1_700_000_000, nanoseconds: 123_456_789 };

/// Mount `image` read-write and begin writing.
fn open_rw(image: &Path) -> Ext4 {
    let device = testing::open_image_rw(image).expect("open image");
    let mut fs = Ext4::mount(device, &MountOptions { read_only: false, options: Vec::new() }).expect("mount");
    fs.begin_write().expect("begin_write");
    fs
}

fn e2fsck(image: &Path) {
    if let Err(e) = fshost_tests::fsck::e2fsck(image) {
        panic!("{e:#}");
    }
}

/// One file as the workload expects it: bytes and which blocks hold
/// written data (the rest are holes or unwritten, which SEEK_DATA skips on
/// a fresh kernel mount).
struct Model {
    path: String,
    bytes: Vec<u8>,
    written: Vec<bool>,
    bs: u64,
}

impl Model {
    fn new(path: &str, bytes: Vec<u8>, bs: u64) -> Self {
        let blocks = (bytes.len() as u64).div_ceil(bs) as usize;
        Model { path: path.into(), bytes, written: vec![true; blocks], bs }
    }
    fn mark(&mut self, from_block: u64, to_block: u64, on: bool) {
        if self.written.len() < to_block as usize {
            self.written.resize(to_block as usize, false);
        }
        for b in from_block..to_block {
            self.written[b as usize] = on;
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset as usize..end].copy_from_slice(data);
        self.mark(offset / self.bs, (end as u64).div_ceil(self.bs), true);
    }
    fn truncate(&mut self, size: u64) {
        self.bytes.resize(size as usize, 0);
        let keep = size.div_ceil(self.bs) as usize;
        self.written.truncate(keep);
    }
    fn punch(&mut self, offset: u64, len: u64) {
        let end = (offset + len).min(self.bytes.len() as u64);
        for b in &mut self.bytes[offset as usize..end as usize] {
            *b = 0;
        }
        self.mark(offset.div_ceil(self.bs), (offset + len) / self.bs, false);
    }
    /// Expected SEEK_DATA ranges: runs of written blocks, clipped to the size.
    fn data_ranges(&self) -> Vec<(u64, u64)> {
        let size = self.bytes.len() as u64;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, &w) in self.written.iter().enumerate() {
            let (s, e) = (i as u64 * self.bs, ((i as u64 + 1) * self.bs).min(size));
            if !w || s >= size {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out
    }
}

/// Write `data` at `offset` of `ino` as the host does: iomap_begin with the
/// write flag, the bytes into the mappings (unwritten blocks zero-filled
/// around them), ioend for each stretch.
fn host_write(fs: &mut Ext4, img: &File, ino: Ino, offset: u64, data: &[u8]) {
    let bs = u64::from(fs.info().unwrap().block_size);
    let end = offset + data.len() as u64;
    let mut pos = offset;
    while pos < end {
        let flags = IomapFlags { write: true, ..Default::default() };
        let maps = fs.iomap_begin(ino, pos, end - pos, flags).expect("iomap_begin(write)");
        assert!(maps[0].offset <= pos && pos < maps[0].offset + maps[0].length, "first mapping misses {pos}");
        let start = pos;
        for m in &maps {
            if m.offset >= end {
                break;
            }
            assert_eq!(m.offset, pos - (pos - m.offset), "contiguous");
            let (s, e) = (pos.max(m.offset), end.min(m.offset + m.length));
            match m.kind {
                MappingKind::Mapped(dev) => {
                    img.write_all_at(&data[(s - offset) as usize..(e - offset) as usize], dev + (s - m.offset)).unwrap()
                }
                MappingKind::Unwritten(dev) => {
                    let (bs_s, bs_e) = (s / bs * bs, e.div_ceil(bs) * bs);
                    let mut buf = vec![0u8; (bs_e - bs_s) as usize];
                    buf[(s - bs_s) as usize..(e - bs_s) as usize]
                        .copy_from_slice(&data[(s - offset) as usize..(e - offset) as usize]);
                    img.write_all_at(&buf, dev + (bs_s - m.offset)).unwrap();
                }
                ref other => panic!("write mapping {other:?}"),
            }
            pos = e;
        }
        fs.ioend(ino, start, pos - start, T).expect("ioend");
    }
}

/// After unmount: e2fsck clean, and the kernel shows every model.
fn check_with_kernel(image: &Path, models: &[Model]) {
    check_with_kernel_and_statfs(image, models, None);
}

/// As [`check_with_kernel`], and the kernel's statfs equals what the guest
/// answered before its unmount (`info`): its counters stay exact.
fn check_with_kernel_and_statfs(image: &Path, models: &[Model], info: Option<fshost_sdk::FsInfo>) {
    e2fsck(image);
    let mount = KernelMount::read_only(image).expect("kernel mount");
    if let Some(info) = info {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%S %b %f %a %c %d"])
            .arg(mount.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<u64> = text.split_whitespace().map(|w| w.parse().unwrap()).collect();
        assert_eq!(v[0], u64::from(info.block_size), "statfs block size");
        let got = (info.total_blocks, info.free_blocks, info.available_blocks, info.total_inodes, info.free_inodes);
        assert_eq!((v[1], v[2], v[3], v[4], v[5]), got, "statfs (blocks, free, available, inodes, free inodes)");
    }
    for m in models {
        let path = mount.path().join(&m.path);
        // SEEK_DATA first: once read, unwritten blocks sit in the page cache
        // and count as data.
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", m.path));
        let size = file.metadata().unwrap().len();
        assert_eq!(size, m.bytes.len() as u64, "{}: size", m.path);
        assert_eq!(data_ranges(&file, size).unwrap(), m.data_ranges(), "{}: SEEK_DATA ranges", m.path);
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", m.path));
        assert_eq!(got.len(), m.bytes.len(), "{}: size", m.path);
        if let Some(i) = got.iter().zip(&m.bytes).position(|(a, b)| a != b) {
            panic!("{}: first difference at byte {i}", m.path);
        }
    }
}

fn ino_of(fs: &mut Ext4, path: &str) -> Ino {
    resolve(fs, path.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}")).ino
}

/// The workload: sequential, sparse and overwriting writes, appends,
/// truncates down and up, fallocate in every mode, and one file of 3,000
/// one-block extents (a tree two levels deep) cut back to a few.
fn workload(mkfs_args: &[&str], size: &str) {
    let extents = !mkfs_args.iter().any(|a| a.starts_with("ext2") || a.starts_with("ext3"));
    require_root();
    let src = Scratch::new("wsrc");
    std::fs::write(src.join("existing"), pattern(100_000, 1)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("frag"), b"").unwrap();
    std::fs::write(src.join("prealloc"), b"").unwrap();
    let image = Image::mkfs(src.path(), mkfs_args, size).expect("mkfs");
    let img = File::options().read(true).write(true).open(image.path()).unwrap();
    let mut fs = open_rw(image.path());
    let bs = u64::from(fs.info().unwrap().block_size);

    let mut existing = Model::new("existing", pattern(100_000, 1), bs);
    let mut empty = Model::new("empty", Vec::new(), bs);
    let mut frag = Model::new("frag", Vec::new(), bs);
    let mut prealloc = Model::new("prealloc", Vec::new(), bs);
    let (e_ino, m_ino, f_ino, p_ino) =
        (ino_of(&mut fs, "existing"), ino_of(&mut fs, "empty"), ino_of(&mut fs, "frag"), ino_of(&mut fs, "prealloc"));

    // Sequential, then sparse far out, then overwrite across blocks.
    for (off, data) in [(0u64, pattern(300_000, 2)), (10 << 20, pattern(5000, 3)), (1000, pattern(9000, 4))] {
        host_write(&mut fs, &img, m_ino, off, &data);
        empty.write(off, &data);
    }
    // Overwrite inside written blocks, append past the end.
    for (off, data) in [(4000u64, pattern(5000, 5)), (99_000, pattern(20_000, 6))] {
        host_write(&mut fs, &img, e_ino, off, &data);
        existing.write(off, &data);
    }
    // Truncate down mid-block (the host zeroes the tail of the block), then up.
    let cut = 50_001u64;
    let tail = cut.div_ceil(bs) * bs - cut;
    img.write_all_at(&vec![0; tail as usize], {
        let maps = fs.iomap_begin(e_ino, cut, 1, IomapFlags::default()).unwrap();
        match maps[0].kind {
            MappingKind::Mapped(dev) => dev + (cut - maps[0].offset),
            ref k => panic!("{k:?}"),
        }
    })
    .unwrap();
    let a = fs.setattr(e_ino, &AttrChanges { size: Some(cut), mtime: Some(T), ..Default::default() }).unwrap();
    assert_eq!(a.size, cut);
    existing.truncate(cut);
    fs.setattr(e_ino, &AttrChanges { size: Some(70_000), ..Default::default() }).unwrap();
    existing.truncate(70_000);
    // Punch a hole (block-aligned inside; the host zeroes partial blocks).
    let (p_off, p_len) = (100_000u64, 100_000u64);
    let zeros = |fs: &mut Ext4, from: u64, to: u64| {
        let maps = fs.iomap_begin(m_ino, from, to - from, IomapFlags::default()).unwrap();
        for m in maps {
            let (s, e) = (from.max(m.offset), to.min(m.offset + m.length));
            if let MappingKind::Mapped(dev) = m.kind
                && s < e
            {
                img.write_all_at(&vec![0; (e - s) as usize], dev + (s - m.offset)).unwrap();
            }
        }
    };
    let punch = FallocateFlags { punch_hole: true, keep_size: true, ..Default::default() };
    zeros(&mut fs, p_off, p_off.div_ceil(bs) * bs);
    zeros(&mut fs, (p_off + p_len) / bs * bs, p_off + p_len);
    fs.fallocate(m_ino, p_off, p_len, punch, T).unwrap();
    empty.punch(p_off, p_len);
    if extents {
        // Zero a range of written blocks: they become unwritten (holes to SEEK_DATA).
        let zr = FallocateFlags { zero_range: true, keep_size: true, ..Default::default() };
        fs.fallocate(m_ino, 8 * bs, 8 * bs, zr, T).unwrap();
        empty.punch(8 * bs, 8 * bs);
        // Preallocate with and without keep-size, then write into part of it.
        let a = fs.fallocate(p_ino, 0, 64 * bs, FallocateFlags::default(), T).unwrap();
        assert_eq!(a.size, 64 * bs);
        assert!(a.blocks >= 64 * bs / 512);
        prealloc.truncate(64 * bs);
        let keep = FallocateFlags { keep_size: true, ..Default::default() };
        let a = fs.fallocate(p_ino, 64 * bs, 64 * bs, keep, T).unwrap();
        assert_eq!(a.size, 64 * bs);
    } else {
        // As the kernel: only punch-hole works without extents.
        for mode in [
            FallocateFlags::default(),
            FallocateFlags { keep_size: true, ..Default::default() },
            FallocateFlags { zero_range: true, ..Default::default() },
        ] {
            let e = fs.fallocate(m_ino, p_off, p_len, mode, T).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Unsupported, "{mode:?}");
        }
    }
    let data = pattern(3 * bs as usize + 17, 7);
    host_write(&mut fs, &img, p_ino, 10 * bs + 5, &data);
    prealloc.write(10 * bs + 5, &data);
    // Many extents: every other block, 3,000 of them, then cut to 100.
    for i in 0..3000u64 {
        let data = pattern(bs as usize, 100 + i as u32);
        host_write(&mut fs, &img, f_ino, 2 * i * bs, &data);
        frag.write(2 * i * bs, &data);
    }
    fs.setattr(f_ino, &AttrChanges { size: Some(200 * bs), ..Default::default() }).unwrap();
    frag.truncate(200 * bs);

    let info = fs.info().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    check_with_kernel_and_statfs(image.path(), &[existing, empty, frag, prealloc], Some(info));
}

#[test]
fn default_ext4() {
    // 4 KiB blocks (mkfs picks 1 KiB for images this small).
    workload(&["-b", "4096"], "64M");
}

#[test]
fn one_kib_blocks_no_flex_bg_no_64bit() {
    workload(&["-b", "1024", "-O", "^flex_bg,^64bit"], "64M");
}

#[test]
fn gdt_csum_without_metadata_csum() {
    workload(&["-b", "4096", "-O", "^metadata_csum,uninit_bg"], "64M");
}

#[test]
fn ext3_block_mapped() {
    workload(&["-t", "ext3", "-b", "4096"], "64M");
}

#[test]
fn ext2_one_kib_blocks_block_mapped() {
    workload(&["-t", "ext2", "-b", "1024"], "64M");
}

#[test]
fn meta_bg_and_large_groups_spread() {
    workload(&["-b", "4096", "-O", "meta_bg,^resize_inode", "-g", "4096"], "128M");
}

#[test]
fn refuses_features_it_cannot_write_by_name() {
    require_root();
    let src = Scratch::new("wref");
    for (args, name) in [
        (&["-O", "bigalloc", "-C", "16384"][..], "bigalloc"),
        (&["-O", "quota"][..], "quota"),
        (&["-O", "casefold"][..], "casefold"),
        (&["-O", "encrypt"][..], "encrypt"),
    ] {
        let image = Image::mkfs(src.path(), args, "64M").expect("mkfs");
        let device = testing::open_image_rw(image.path()).unwrap();
        let mut fs = Ext4::mount(device, &MountOptions::default()).unwrap();
        let why = fs.begin_write().unwrap_err();
        assert!(why.contains(name), "{args:?}: {why}");
        assert_eq!(fs.ioend(12, 0, 1, T).unwrap_err().code(), ErrorCode::ReadOnly);
    }
}

#[test]
fn clean_after_unmount_not_clean_while_writing() {
    require_root();
    let src = Scratch::new("wstate");
    let image = Image::mkfs(src.path(), &[], "32M").expect("mkfs");
    let state = |image: &Path| {
        let out = std::process::Command::new("dumpe2fs").arg("-h").arg(image).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find(|l| l.starts_with("Filesystem state:")).unwrap().to_string()
    };
    assert!(state(image.path()).ends_with(" clean"), "{}", state(image.path()));
    let mut fs = open_rw(image.path());
    assert!(state(image.path()).contains("not clean"), "{}", state(image.path()));
    fs.unmount().unwrap();
    assert!(state(image.path()).ends_with(" clean"), "{}", state(image.path()));
    e2fsck(image.path());
}

#[test]
fn no_space_and_too_big_are_clean_errors() {
    require_root();
    let src = Scratch::new("wfull");
    std::fs::write(src.join("f"), b"").unwrap();
    let image = Image::mkfs(src.path(), &[], "16M").expect("mkfs");
    let img = File::options().read(true).write(true).open(image.path()).unwrap();
    let mut fs = open_rw(image.path());
    let ino = ino_of(&mut fs, "f");
    let bs = u64::from(fs.info().unwrap().block_size);
    // Fill the filesystem one MiB at a time until it refuses.
    let chunk = pattern(1 << 20, 9);
    let mut model = Model::new("f", Vec::new(), bs);
    let mut off = 0u64;
    let err = loop {
        let flags = IomapFlags { write: true, ..Default::default() };
        match fs.iomap_begin(ino, off, chunk.len() as u64, flags) {
            Ok(_) => {}
            Err(e) => break e,
        }
        // The mapping may cover less than the chunk: write what it covers.
        let maps = fs.iomap_begin(ino, off, chunk.len() as u64, flags).unwrap();
        let covered = maps.iter().map(|m| m.offset + m.length).max().unwrap().min(off + chunk.len() as u64) - off;
        host_write(&mut fs, &img, ino, off, &chunk[..covered as usize]);
        model.write(off, &chunk[..covered as usize]);
        off += covered;
        assert!(off < 64 << 20, "a 16 MiB filesystem took {off} bytes");
    };
    assert_eq!(err.code(), ErrorCode::NoSpace, "{err}");
    let info = fs.info().unwrap();
    assert!(info.available_blocks == 0, "{info:?}");
    // Past the largest extent file: EFBIG, nothing allocated.
    let flags = IomapFlags { write: true, ..Default::default() };
    let big = (1u64 << 32) * bs;
    assert_eq!(fs.iomap_begin(ino, big, 1, flags).unwrap_err().code(), ErrorCode::FileTooBig);
    assert_eq!(
        fs.setattr(ino, &AttrChanges { size: Some(big), ..Default::default() }).unwrap_err().code(),
        ErrorCode::FileTooBig
    );
    fs.unmount().unwrap();
    drop(fs);
    check_with_kernel(image.path(), &[model]);
}

#[test]
fn journal_needing_recovery_is_replayed_onto_the_device() {
    require_root();
    let src = Scratch::new("wjournal");
    std::fs::write(src.join("old"), pattern(10_000, 11)).unwrap();
    let image = Image::mkfs(src.path(), &[], "64M").expect("mkfs");
    let fresh = pattern(30_000, 12);
    image
        .crash_with_dirty_journal(|root| {
            std::fs::write(root.join("new"), &fresh)?;
            Ok(())
        })
        .expect("crash");
    let img = File::options().read(true).write(true).open(image.path()).unwrap();
    let mut fs = open_rw(image.path());
    let bs = u64::from(fs.info().unwrap().block_size);
    let ino = ino_of(&mut fs, "new");
    let more = pattern(5000, 13);
    host_write(&mut fs, &img, ino, 30_000, &more);
    fs.unmount().unwrap();
    drop(fs);
    let out = std::process::Command::new("dumpe2fs").arg("-h").arg(image.path()).output().unwrap();
    let header = String::from_utf8_lossy(&out.stdout);
    assert!(!header.contains("needs_recovery"), "{header}");
    let mut new = Model::new("new", fresh, bs);
    new.write(30_000, &more);
    check_with_kernel(image.path(), &[Model::new("old", pattern(10_000, 11), bs), new]);
}

#[test]
fn orphans_left_by_a_crash_are_processed_at_begin_write() {
    require_root();
    let src = Scratch::new("worphan");
    std::fs::write(src.join("keep"), pattern(10_000, 21)).unwrap();
    std::fs::write(src.join("gone"), pattern(300_000, 22)).unwrap();
    let image = Image::mkfs(src.path(), &[], "64M").expect("mkfs");
    // Unlinked while open at the crash: only the orphan list holds it.
    let mut open = None;
    image
        .crash_with_dirty_journal(|root| {
            open = Some(File::open(root.join("gone"))?);
            std::fs::remove_file(root.join("gone"))?;
            Ok(())
        })
        .expect("crash");
    drop(open);
    // The precondition, from e2fsprogs: replaying the journal of a copy
    // meets an orphan list (which its replay then clears).
    let replayed = image.copy().unwrap();
    let out =
        std::process::Command::new("e2fsck").args(["-E", "journal_only", "-y"]).arg(replayed.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Clearing orphaned inode"), "{said}");
    let mut fs = open_rw(image.path());
    let bs = u64::from(fs.info().unwrap().block_size);
    assert_eq!(resolve(&mut fs, b"gone").unwrap_err().code(), ErrorCode::NotFound);
    fs.unmount().unwrap();
    drop(fs);
    let out = std::process::Command::new("dumpe2fs").arg("-h").arg(image.path()).output().unwrap();
    let header = String::from_utf8_lossy(&out.stdout);
    assert!(!header.contains("First orphan inode"), "{header}");
    check_with_kernel(image.path(), &[Model::new("keep", pattern(10_000, 21), bs)]);
}

#[test]
fn setattr_owner_mode_and_times_as_the_kernel_reads_them() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let src = Scratch::new("wattr");
    std::fs::write(src.join("f"), pattern(5000, 31)).unwrap();
    std::fs::create_dir(src.join("d")).unwrap();
    let image = Image::mkfs(src.path(), &[], "32M").expect("mkfs");
    let small = Image::mkfs(src.path(), &["-I", "128"], "32M").expect("mkfs");
    // Post-2038 with nanoseconds (256-byte inodes), and a pre-1970 time.
    let late = Timestamp { seconds: (1 << 33) + 5, nanoseconds: 999_999_999 };
    let early = Timestamp { seconds: -1_000_000, nanoseconds: 5 };
    for (image, wide) in [(&image, true), (&small, false)] {
        let mut fs = open_rw(image.path());
        for path in ["f", "d"] {
            let ino = ino_of(&mut fs, path);
            let changes = AttrChanges {
                perm: Some(0o4751),
                uid: Some(100_000),
                gid: Some(70_001),
                atime: Some(early),
                mtime: Some(late),
                ctime: Some(T),
                ..Default::default()
            };
            let a = fs.setattr(ino, &changes).unwrap();
            assert_eq!((a.perm, a.uid, a.gid), (0o4751, 100_000, 70_001));
        }
        fs.unmount().unwrap();
        drop(fs);
        e2fsck(image.path());
        let mount = KernelMount::read_only(image.path()).expect("kernel mount");
        for path in ["f", "d"] {
            let m = std::fs::symlink_metadata(mount.path().join(path)).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o4751, "{path}");
            assert_eq!((m.uid(), m.gid()), (100_000, 70_001), "{path}");
            assert_eq!((m.ctime(), m.ctime_nsec()), (T.seconds, i64::from(T.nanoseconds) * i64::from(wide)), "{path}");
            if wide {
                assert_eq!((m.mtime(), m.mtime_nsec()), (late.seconds, 999_999_999), "{path}");
                assert_eq!((m.atime(), m.atime_nsec()), (early.seconds, 5), "{path}");
            } else {
                // 128-byte inodes: 32-bit seconds, clamped as the kernel clamps.
                assert_eq!((m.mtime(), m.mtime_nsec()), (i64::from(i32::MAX), 0), "{path}");
                assert_eq!((m.atime(), m.atime_nsec()), (early.seconds, 0), "{path}");
            }
        }
    }
}

#[test]
fn the_last_block_of_the_largest_file() {
    require_root();
    let src = Scratch::new("wbig");
    std::fs::write(src.join("f"), b"").unwrap();
    for args in [&[][..], &["-O", "^huge_file", "-b", "1024"][..], &["-t", "ext3"][..]] {
        let image = Image::mkfs(src.path(), args, "32M").expect("mkfs");
        let img = File::options().read(true).write(true).open(image.path()).unwrap();
        let mut fs = open_rw(image.path());
        let ino = ino_of(&mut fs, "f");
        let bs = u64::from(fs.info().unwrap().block_size);
        // Find the largest size the guest accepts, by bisection over setattr.
        let (mut ok, mut too_big) = (0u64, 1u64 << 62);
        while too_big - ok > 1 {
            let mid = ok + (too_big - ok) / 2;
            match fs.setattr(ino, &AttrChanges { size: Some(mid), ..Default::default() }) {
                Ok(_) => ok = mid,
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::FileTooBig, "{e}");
                    too_big = mid;
                }
            }
        }
        fs.setattr(ino, &AttrChanges { size: Some(0), ..Default::default() }).unwrap();
        // Write the last block below that limit.
        let data = pattern(bs as usize, 41);
        let at = ok / bs * bs - bs;
        host_write(&mut fs, &img, ino, at, &data);
        fs.unmount().unwrap();
        drop(fs);
        e2fsck(image.path());
        let mount = KernelMount::read_only(image.path()).expect("kernel mount");
        let f = File::open(mount.path().join("f")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), at + bs, "{args:?}");
        let mut got = vec![0u8; bs as usize];
        f.read_exact_at(&mut got, at).unwrap();
        assert_eq!(got, data, "{args:?}");
        // The kernel's own limit: one byte more past the guest's is refused
        // on a read-write kernel mount (EFBIG), the guest's limit is not.
        drop(f);
        drop(mount);
        let rw = KernelMount::read_write(image.path(), "").expect("kernel rw mount");
        let f = File::options().write(true).open(rw.path().join("f")).unwrap();
        assert!(f.set_len(ok).is_ok(), "{args:?}: the kernel refuses the guest's largest size {ok}");
        assert!(f.set_len(ok + 1).is_err(), "{args:?}: the kernel accepts {} past the guest's limit", ok + 1);
    }
}

/// Zero `[from, to)` of `ino` where it is mapped (what the host does to the
/// partial blocks of a punch, zero-range or truncate).
fn host_zero(fs: &mut Ext4, img: &File, ino: Ino, from: u64, to: u64) {
    if from >= to {
        return;
    }
    let size = fs.getattr(ino).unwrap().size;
    let mut pos = from;
    while pos < to.min(size) {
        let maps = fs.iomap_begin(ino, pos, to - pos, IomapFlags::default()).unwrap();
        for m in &maps {
            let (s, e) = (pos.max(m.offset), to.min(m.offset + m.length));
            if let MappingKind::Mapped(dev) = m.kind
                && s < e
            {
                img.write_all_at(&vec![0; (e - s) as usize], dev + (s - m.offset)).unwrap();
            }
        }
        pos = maps.iter().map(|m| m.offset + m.length).max().unwrap();
    }
}

/// Seeded random writes, truncates and fallocate calls on three files,
/// checked against the model by e2fsck and the kernel every 500 calls.
fn random_ops(mkfs_args: &[&str], seed: u32) {
    require_root();
    let extents = !mkfs_args.iter().any(|a| a.starts_with("ext2") || a.starts_with("ext3"));
    let src = Scratch::new("wrand");
    for n in 0..3 {
        std::fs::write(src.join(format!("r{n}")), pattern(50_000 * n, 50 + n as u32)).unwrap();
    }
    let image = Image::mkfs(src.path(), mkfs_args, "128M").expect("mkfs");
    let img = File::options().read(true).write(true).open(image.path()).unwrap();
    let mut x = seed.max(1);
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        u64::from(x) % n.max(1)
    };
    let mut fs = open_rw(image.path());
    let bs = u64::from(fs.info().unwrap().block_size);
    let mut models: Vec<Model> =
        (0..3).map(|n| Model::new(&format!("r{n}"), pattern(50_000 * n, 50 + n as u32), bs)).collect();
    const SPAN: u64 = 3 << 20;
    for round in 0..4 {
        for op in 0..500 {
            let f = rand(3) as usize;
            let ino = ino_of(&mut fs, &models[f].path.clone());
            let m = &mut models[f];
            let size = m.bytes.len() as u64;
            let off = if rand(4) == 0 { rand(SPAN) } else { rand(size.max(1)) };
            let len = 1 + if rand(3) == 0 { rand(64 * bs) } else { rand(2 * bs) };
            let what = if extents { rand(10) } else { [0, 1, 2, 3, 4, 5, 8][rand(7) as usize] };
            let ctx = format!("round {round} op {op}: file {f} kind {what} at {off}+{len} (size {size})");
            match what {
                0..=3 => {
                    let data = pattern(len as usize, (round * 1000 + op) as u32);
                    host_write(&mut fs, &img, ino, off, &data);
                    m.write(off, &data);
                }
                4 | 5 => {
                    let new = rand(SPAN);
                    // The host zeroes the rest of the block the smaller size ends in.
                    let small = new.min(size);
                    host_zero(&mut fs, &img, ino, small, small.div_ceil(bs) * bs);
                    fs.setattr(ino, &AttrChanges { size: Some(new), ..Default::default() }).expect(&ctx);
                    m.truncate(new);
                }
                6 | 7 => {
                    let keep = rand(2) == 0;
                    let mode = FallocateFlags { keep_size: keep, ..Default::default() };
                    let a = fs.fallocate(ino, off, len, mode, T).expect(&ctx);
                    if !keep && off + len > size {
                        m.bytes.resize((off + len) as usize, 0);
                    }
                    assert_eq!(a.size, m.bytes.len() as u64, "{ctx}");
                }
                8 => {
                    let end = off + len;
                    host_zero(&mut fs, &img, ino, off, end.min(off.div_ceil(bs) * bs));
                    host_zero(&mut fs, &img, ino, (end / bs * bs).max(off), end);
                    let mode = FallocateFlags { punch_hole: true, keep_size: true, ..Default::default() };
                    fs.fallocate(ino, off, len, mode, T).expect(&ctx);
                    if off < size {
                        m.punch(off, len.min(size - off));
                        m.mark(off.div_ceil(bs), (off + len) / bs, false);
                    } else {
                        m.mark(off.div_ceil(bs), (off + len) / bs, false);
                    }
                }
                _ => {
                    let keep = rand(2) == 0;
                    let end = off + len;
                    host_zero(&mut fs, &img, ino, off, end.min(off.div_ceil(bs) * bs));
                    host_zero(&mut fs, &img, ino, (end / bs * bs).max(off), end);
                    let mode = FallocateFlags { zero_range: true, keep_size: keep, ..Default::default() };
                    fs.fallocate(ino, off, len, mode, T).expect(&ctx);
                    if !keep && end > size {
                        m.bytes.resize(end as usize, 0);
                    }
                    let upto = end.min(m.bytes.len() as u64);
                    if off < upto {
                        m.bytes[off as usize..upto as usize].fill(0);
                    }
                    m.mark(off.div_ceil(bs), end / bs, false);
                }
            }
            let got = fs.getattr(ino).unwrap().size;
            assert_eq!(got, models[f].bytes.len() as u64, "{ctx}: size");
        }
        let info = fs.info().unwrap();
        fs.unmount().unwrap();
        drop(fs);
        check_with_kernel_and_statfs(image.path(), &models, Some(info));
        fs = open_rw(image.path());
    }
    fs.unmount().unwrap();
}

#[test]
fn random_ops_default_ext4() {
    random_ops(&["-b", "4096"], 0x5eed_0001);
}

#[test]
fn random_ops_one_kib_blocks() {
    random_ops(&["-b", "1024", "-O", "^flex_bg,^64bit"], 0x5eed_0002);
}

#[test]
fn random_ops_ext3() {
    random_ops(&["-t", "ext3", "-b", "4096"], 0x5eed_0003);
}

#[test]
fn a_write_without_ioend_reads_as_zeros() {
    require_root();
    let src = Scratch::new("wnoioend");
    std::fs::write(src.join("f"), pattern(10_000, 61)).unwrap();
    let image = Image::mkfs(src.path(), &[], "32M").expect("mkfs");
    let img = File::options().read(true).write(true).open(image.path()).unwrap();
    let mut fs = open_rw(image.path());
    let ino = ino_of(&mut fs, "f");
    let bs = u64::from(fs.info().unwrap().block_size);
    // The host maps a write past the end and writes the data, then fails
    // before ioend: the blocks stay unwritten, the size unchanged.
    let flags = IomapFlags { write: true, ..Default::default() };
    let at = 10_000u64.div_ceil(bs) * bs + 2 * bs;
    let maps = fs.iomap_begin(ino, at, 4 * bs, flags).unwrap();
    for m in &maps {
        match m.kind {
            MappingKind::Unwritten(dev) => img.write_all_at(&vec![0xAB; m.length as usize], dev).unwrap(),
            ref k => panic!("a new block mapped as {k:?}: {maps:?}"),
        }
    }
    // A later write that does end extends the size over them.
    let data = pattern(100, 62);
    host_write(&mut fs, &img, ino, at + 10 * bs, &data);
    fs.unmount().unwrap();
    drop(fs);
    let mut model = Model::new("f", pattern(10_000, 61), bs);
    model.write(at + 10 * bs, &data);
    check_with_kernel(image.path(), &[model]);
}

#[test]
fn preallocation_across_uninitialised_groups() {
    require_root();
    let src = Scratch::new("wgroups");
    std::fs::write(src.join("big"), b"").unwrap();
    for (args, size) in [
        (&[][..], "1G"),
        (&["-O", "^metadata_csum,uninit_bg"][..], "1G"),
        (&["-b", "1024", "-O", "^flex_bg"][..], "256M"),
        (&["-O", "sparse_super2,^has_journal"][..], "1G"),
    ] {
        let image = Image::mkfs(src.path(), args, size).expect("mkfs");
        let img = File::options().read(true).write(true).open(image.path()).unwrap();
        let mut fs = open_rw(image.path());
        let ino = ino_of(&mut fs, "big");
        let info = fs.info().unwrap();
        let bs = u64::from(info.block_size);
        // Most of the free space: the allocation crosses most groups.
        let len = info.available_blocks * 3 / 4 * bs;
        fs.fallocate(ino, 0, len, FallocateFlags::default(), T).unwrap();
        let mut model = Model::new("big", vec![0; len as usize], bs);
        model.written.fill(false);
        for i in 0..16u64 {
            let data = pattern(3 * bs as usize, 70 + i as u32);
            let at = len / 16 * i + 7;
            host_write(&mut fs, &img, ino, at, &data);
            model.write(at, &data);
        }
        let used = fs.info().unwrap();
        assert!(used.free_blocks < info.free_blocks - len / bs, "{args:?}: {used:?}");
        fs.unmount().unwrap();
        drop(fs);
        check_with_kernel(image.path(), &[model]);
    }
}

#[test]
fn random_ops_ext2_one_kib_blocks() {
    random_ops(&["-t", "ext2", "-b", "1024"], 0x5eed_0004);
}

/// Not a proof: how long the writer takes natively (run with --ignored).
#[test]
#[ignore]
fn bench_sequential_and_fragmented() {
    let src = Scratch::new("wbench");
    std::fs::write(src.join("seq"), b"").unwrap();
    std::fs::write(src.join("frag"), b"").unwrap();
    let image = Image::mkfs(src.path(), &["-b", "4096"], "2G").expect("mkfs");
    let img = File::options().read(true).write(true).open(image.path()).unwrap();
    let mut fs = open_rw(image.path());
    let (seq, frag) = (ino_of(&mut fs, "seq"), ino_of(&mut fs, "frag"));
    let chunk = pattern(128 << 10, 1);
    let t = std::time::Instant::now();
    for i in 0..(1u64 << 30) / chunk.len() as u64 {
        host_write(&mut fs, &img, seq, i * chunk.len() as u64, &chunk);
    }
    eprintln!("1 GiB in 128 KiB writes: {:?}", t.elapsed());
    let block = pattern(4096, 2);
    let t = std::time::Instant::now();
    for i in 0..20_000u64 {
        host_write(&mut fs, &img, frag, (i * 7919 % 40_000) * 2 * 4096, &block);
    }
    eprintln!("20,000 scattered 4 KiB writes: {:?}", t.elapsed());
    fs.unmount().unwrap();
    drop(fs);
    e2fsck(image.path());
}

/// Damaged metadata costs an operation an error, never a panic: random
/// bytes of the metadata area of an image (superblock, descriptors,
/// bitmaps, inode table, the extent blocks of a fragmented file) are
/// flipped, then the writer mounts, begins and writes, truncates and
/// punches, each step allowed to fail.
#[test]
fn damaged_metadata_gives_errors_not_panics() {
    require_root();
    let src = Scratch::new("wdamage");
    std::fs::write(src.join("frag"), b"").unwrap();
    std::fs::write(src.join("plain"), pattern(40_000, 81)).unwrap();
    let image = Image::mkfs(src.path(), &["-b", "1024", "-N", "64"], "8M").expect("mkfs");
    {
        let img = File::options().read(true).write(true).open(image.path()).unwrap();
        let mut fs = open_rw(image.path());
        let frag = ino_of(&mut fs, "frag");
        for i in 0..400u64 {
            host_write(&mut fs, &img, frag, 2 * i * 1024, &pattern(1024, i as u32));
        }
        fs.unmount().unwrap();
    }
    let pristine = std::fs::read(image.path()).unwrap();
    let scratch = Scratch::new("wdamage-copy");
    let copy = scratch.join("img");
    let mut x = 0x1234_5678u32;
    let mut rand = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as usize % n
    };
    // The metadata lives in the first 1.5 MiB: group 0's tables and the
    // frag file's extent blocks allocated next to its data.
    let area = (1536 << 10).min(pristine.len());
    for round in 0..300 {
        let mut bytes = pristine.clone();
        for _ in 0..1 + rand(8) {
            let at = 1024 + rand(area - 1024);
            bytes[at] ^= 1 << rand(8);
        }
        std::fs::write(&copy, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let Ok(device) = testing::open_image_rw(&copy) else { return };
            let Ok(mut fs) = Ext4::mount(device, &MountOptions { read_only: false, options: Vec::new() }) else {
                return;
            };
            if fs.begin_write().is_err() {
                return;
            }
            let flags = IomapFlags { write: true, ..Default::default() };
            for name in ["frag", "plain"] {
                let Ok(ino) = resolve(&mut fs, name.as_bytes()).map(|a| a.ino) else { continue };
                let _ = fs.iomap_begin(ino, 5000, 300_000, flags);
                let _ = fs.ioend(ino, 5000, 300_000, T);
                let _ = fs.setattr(ino, &AttrChanges { size: Some(123_456), ..Default::default() });
                let punch = FallocateFlags { punch_hole: true, keep_size: true, ..Default::default() };
                let _ = fs.fallocate(ino, 10_000, 50_000, punch, T);
                let _ = fs.fallocate(ino, 0, 400_000, FallocateFlags::default(), T);
                let _ = fs.setattr(ino, &AttrChanges { size: Some(0), ..Default::default() });
            }
            let _ = fs.unmount();
        });
        assert!(outcome.is_ok(), "round {round}: the writer panicked on damaged metadata");
    }
}

#[test]
fn a_file_past_2_gib_turns_large_file_on() {
    require_root();
    let src = Scratch::new("wlarge");
    std::fs::write(src.join("f"), b"").unwrap();
    for args in [&["-O", "^large_file,^huge_file"][..], &["-t", "ext2", "-O", "^large_file"][..]] {
        let image = Image::mkfs(src.path(), args, "32M").expect("mkfs");
        let features = |image: &Path| {
            let out = std::process::Command::new("dumpe2fs").arg("-h").arg(image).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("Filesystem features:"))
                .unwrap()
                .to_string()
        };
        assert!(!features(image.path()).contains("large_file"), "{args:?}");
        let img = File::options().read(true).write(true).open(image.path()).unwrap();
        let mut fs = open_rw(image.path());
        let ino = ino_of(&mut fs, "f");
        let bs = u64::from(fs.info().unwrap().block_size);
        let at = 3u64 << 30;
        let data = pattern(5000, 91);
        host_write(&mut fs, &img, ino, at, &data);
        fs.unmount().unwrap();
        drop(fs);
        assert!(features(image.path()).contains("large_file"), "{args:?}: {}", features(image.path()));
        e2fsck(image.path());
        let mount = KernelMount::read_only(image.path()).expect("kernel mount");
        let f = File::open(mount.path().join("f")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), at + 5000, "{args:?}");
        assert_eq!(data_ranges(&f, at + 5000).unwrap(), vec![(at / bs * bs, at + 5000)], "{args:?}");
        let mut got = vec![0u8; 5000];
        f.read_exact_at(&mut got, at).unwrap();
        assert_eq!(got, data, "{args:?}");
    }
}

#[test]
fn a_restarted_instance_keeps_the_orphans_the_host_holds() {
    require_root();
    let src = Scratch::new("wrestart");
    std::fs::write(src.join("open"), pattern(50_000, 95)).unwrap();
    let image = Image::mkfs(src.path(), &[], "32M").expect("mkfs");
    let mut fs = open_rw(image.path());
    let ino = ino_of(&mut fs, "open");
    let root = fs.info().unwrap().root;
    let gone = fs.unlink(root, b"open", T).unwrap();
    assert_eq!(gone.nlink, 0);
    // The guest traps: no unmount; the host mounts a fresh instance.
    drop(fs);
    let mut fs = open_rw(image.path());
    let a = fs.getattr(ino).expect("the orphan the host holds open is still there");
    assert_eq!(a.size, 50_000);
    let (data, _) = common::read_file(&mut fs, image.path(), ino, a.size).unwrap();
    assert_eq!(data, pattern(50_000, 95));
    fs.evict(ino).unwrap();
    assert_eq!(fs.getattr(ino).unwrap_err().code(), ErrorCode::NotFound);
    fs.unmount().unwrap();
    drop(fs);
    e2fsck(image.path());
}

#[test]
fn stale_superblock_counts_are_recounted_at_begin_write() {
    require_root();
    let src = Scratch::new("wstale");
    std::fs::write(src.join("f"), b"").unwrap();
    let image = Image::mkfs(src.path(), &[], "32M").expect("mkfs");
    // As a crash leaves it: the superblock's copy of the counts is stale
    // (the kernel writes it lazily), here far too low.
    common::debugfs_w(image.path(), "ssv free_blocks_count 10");
    common::debugfs_w(image.path(), "ssv free_inodes_count 1");
    let img = File::options().read(true).write(true).open(image.path()).unwrap();
    let mut fs = open_rw(image.path());
    let ino = ino_of(&mut fs, "f");
    let bs = u64::from(fs.info().unwrap().block_size);
    let data = pattern(4 << 20, 97);
    host_write(&mut fs, &img, ino, 0, &data);
    let info = fs.info().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    let out = std::process::Command::new("dumpe2fs").arg("-h").arg(image.path()).output().unwrap();
    let header = String::from_utf8_lossy(&out.stdout);
    let count =
        |name: &str| -> u64 { header.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().parse().unwrap() };
    assert_eq!(count("Free blocks:"), info.free_blocks, "{header}");
    assert_eq!(count("Free inodes:"), info.free_inodes, "{header}");
    check_with_kernel_and_statfs(image.path(), &[Model::new("f", data, bs)], Some(info));
}
