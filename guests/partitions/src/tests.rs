//! Tables built byte by byte, as fdisk and sgdisk would write them, and
//! damaged; plus mutated tables that must never panic. The kernel's view of
//! sfdisk-made tables is compared in tests/tests/partitions.rs.

use super::*;

const MIB: u64 = 1 << 20;

fn slot(sector: &mut [u8], i: usize, boot: u8, kind: u8, start: u32, sectors: u32) {
    let at = 0x1BE + 16 * i;
    sector[at] = boot;
    sector[at + 4] = kind;
    sector[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
    sector[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xAA;
}

/// A 64 MiB disk: p1 primary at 1 MiB (8 MiB, bootable), p2 extended from
/// 16 MiB to the end holding three logical partitions, p3 primary? no: p4
/// primary at 9 MiB (4 MiB).
fn mbr_disk() -> MemDisk {
    let mut d = vec![0u8; 64 * MIB as usize];
    let s = |mib: u64| (mib * MIB / 512) as u32;
    slot(&mut d, 0, 0x80, 0x83, s(1), s(8));
    slot(&mut d, 1, 0, 0x05, s(16), s(48));
    slot(&mut d, 3, 0, 0x0c, s(9), s(4));
    d[440..444].copy_from_slice(&[1, 2, 3, 4]);
    // EBRs at 16, 30 and 44 MiB; each logical starts 1 MiB after its EBR.
    let ext = s(16);
    for (i, ebr_mib) in [16u64, 30, 44].iter().enumerate() {
        let at = (ebr_mib * MIB) as usize;
        let ebr = &mut d[at..at + 512];
        slot(ebr, 0, 0, 0x83, s(1), s(10));
        if i < 2 {
            slot(ebr, 1, 0, 0x05, s(ebr_mib + 14) - ext, s(12));
        }
    }
    MemDisk { bytes: d, sector_size: 512 }
}

fn summary(t: &Table) -> Vec<(u32, u64, u64)> {
    t.partitions.iter().map(|p| (p.number, p.start / MIB, p.length / MIB)).collect()
}

#[test]
fn mbr_primary_extended_and_logical_partitions_are_numbered_as_linux_does() {
    let disk = mbr_disk();
    assert_eq!(probe(&disk).unwrap(), Some("mbr"));
    let t = read_table(&disk).unwrap();
    assert_eq!(t.format, "mbr");
    assert_eq!(t.disk_id, vec![1, 2, 3, 4]);
    assert_eq!(summary(&t), vec![(1, 1, 8), (2, 16, 48), (4, 9, 4), (5, 17, 10), (6, 31, 10), (7, 45, 10)]);
    assert!(t.partitions[0].flags.bootable && t.partitions[1].flags.container);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(map(&t, 6, 0).unwrap().start, 31 * MIB);
    assert_eq!(map(&t, 3, 0).unwrap_err().code, Code::NotFound);
    assert_eq!(map(&t, 6, 10 * MIB).unwrap_err().code, Code::Invalid);
}

#[test]
fn a_looping_chain_lists_each_logical_partition_once() {
    let mut disk = mbr_disk();
    // The third EBR links back to the first.
    let at = (44 * MIB) as usize;
    slot(&mut disk.bytes[at..at + 512], 1, 0, 0x05, 0, (12 * MIB / 512) as u32);
    let t = read_table(&disk).unwrap();
    assert_eq!(t.partitions.len(), 6);
    assert!(t.warnings.iter().any(|w| w.contains("loops back")), "{:?}", t.warnings);
}

#[test]
fn partitions_past_the_end_are_dropped_or_cut_as_linux_does() {
    let mut disk = mbr_disk();
    disk.bytes.truncate(40 * MIB as usize);
    let t = read_table(&disk).unwrap();
    // p2 cut to the end; the third EBR (44 MiB) is past the end; p6 (31
    // MiB + 10) is cut.
    assert_eq!(summary(&t), vec![(1, 1, 8), (2, 16, 24), (4, 9, 4), (5, 17, 10), (6, 31, 9)]);
    assert!(t.warnings.iter().any(|w| w.contains("past the end")), "{:?}", t.warnings);
}

#[test]
fn not_a_table() {
    let empty = MemDisk { bytes: vec![0; 4096], sector_size: 512 };
    assert_eq!(probe(&empty).unwrap(), None);
    assert_eq!(read_table(&empty).unwrap_err().code, Code::NotFound);
    let tiny = MemDisk { bytes: vec![0; 100], sector_size: 512 };
    assert_eq!(read_table(&tiny).unwrap_err().code, Code::NotFound);
    // A FAT boot sector: 0x55AA, but "boot indicators" that are code.
    let mut fat = vec![0u8; 4096];
    fat[0x1BE] = 0x33;
    fat[510] = 0x55;
    fat[511] = 0xAA;
    let fat = MemDisk { bytes: fat, sector_size: 512 };
    assert_eq!(probe(&fat).unwrap(), None);
    assert_eq!(read_table(&fat).unwrap_err().code, Code::NotFound);
}

/// A GPT disk of `sectors` sectors of `ss` bytes, with these partitions
/// (first LBA, last LBA, name) and 128 entries, primary and backup.
fn gpt_disk(ss: u64, sectors: u64, parts: &[(u64, u64, &str)]) -> MemDisk {
    let mut d = vec![0u8; (ss * sectors) as usize];
    slot(&mut d, 0, 0, 0xEE, 1, (sectors - 1).min(u64::from(u32::MAX)) as u32);
    let mut entries = vec![0u8; 128 * 128];
    for (i, (first, last, name)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&[
            0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
        ]);
        e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        e[48..56].copy_from_slice(&(1u64 << 2).to_le_bytes());
        for (j, u) in name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let array_sectors = (128u64 * 128).div_ceil(ss);
    let last = sectors - 1;
    let crc = crc32fast::hash(&entries);
    for (lba, alt, array_lba) in [(1, last, 2), (last, 1, last - array_sectors)] {
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + array_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(last - 1 - array_sectors).to_le_bytes());
        h[56..72].copy_from_slice(&[0xD1; 16]);
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc.to_le_bytes());
        let hcrc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&hcrc.to_le_bytes());
        let at = (lba * ss) as usize;
        d[at..at + 92].copy_from_slice(&h);
        let at = (array_lba * ss) as usize;
        d[at..at + entries.len()].copy_from_slice(&entries);
    }
    MemDisk { bytes: d, sector_size: 512 }
}

fn three(ss: u64) -> MemDisk {
    let per_mib = MIB / ss;
    gpt_disk(
        ss,
        64 * per_mib,
        &[
            (per_mib, 9 * per_mib - 1, "boot"),
            (9 * per_mib, 30 * per_mib - 1, "rootfs ünïcode"),
            (30 * per_mib, 60 * per_mib - 1, ""),
        ],
    )
}

#[test]
fn gpt_with_three_named_partitions() {
    for ss in [512, 4096] {
        let disk = three(ss);
        assert_eq!(probe(&disk).unwrap(), Some("gpt"));
        let t = read_table(&disk).unwrap();
        assert_eq!((t.format, t.sector_size), ("gpt", ss as u32));
        assert_eq!(summary(&t), vec![(1, 1, 8), (2, 9, 21), (3, 30, 30)]);
        assert_eq!(t.partitions[1].name, "rootfs ünïcode".as_bytes());
        assert_eq!(t.partitions[2].uuid, Some([3; 16]));
        assert!(t.partitions[0].flags.bootable);
        assert_eq!(t.disk_id, vec![0xD1; 16]);
        assert!(t.warnings.is_empty(), "{ss}: {:?}", t.warnings);
    }
}

#[test]
fn a_damaged_primary_gpt_falls_back_to_the_backup() {
    for ss in [512usize, 4096] {
        for damage in [92usize, 20, 2 * ss + 40] {
            let mut disk = three(ss as u64);
            // The header's end (CRC), its CRC field, an entry's LBA (array CRC).
            disk.bytes[ss + damage.min(ss) - if damage == 92 { 1 } else { 0 }] ^= 0xFF;
            if damage > ss {
                disk.bytes[damage] ^= 0xFF;
            }
            let t = read_table(&disk).unwrap();
            assert_eq!(summary(&t), vec![(1, 1, 8), (2, 9, 21), (3, 30, 30)], "{ss} {damage}");
            assert!(t.warnings.iter().any(|w| w.contains("using the backup")), "{:?}", t.warnings);
        }
    }
    // Both damaged: an error naming both.
    let mut disk = three(512);
    disk.bytes[512] = 0;
    let n = disk.bytes.len();
    disk.bytes[n - 512] = 0;
    let e = read_table(&disk).unwrap_err();
    assert_eq!(e.code, Code::Corrupted);
    assert!(e.message.contains("LBA 1") && e.message.contains("no \"EFI PART\""), "{e}");
}

#[test]
fn a_damaged_backup_is_a_warning() {
    let mut disk = three(512);
    let n = disk.bytes.len();
    disk.bytes[n - 512 + 30] ^= 1;
    let t = read_table(&disk).unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(t.warnings.iter().any(|w| w.contains("backup GPT is damaged")), "{:?}", t.warnings);
}

#[test]
fn gpt_entries_outside_the_disk_or_reversed_are_left_out() {
    let disk = gpt_disk(512, 2048 * 8, &[(2048, 4095, "a"), (4096, 1 << 40, "past"), (9000, 8000, "reversed")]);
    let t = read_table(&disk).unwrap();
    assert_eq!(t.partitions.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1]);
    assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
}

#[test]
fn names_decode_utf16_with_replacement() {
    let raw: Vec<u8> = [0x68u16, 0xD800, 0x69, 0, 0x70].iter().flat_map(|u| u.to_le_bytes()).collect();
    assert_eq!(name(&raw), "h\u{FFFD}i".as_bytes());
}

use crate::gpt::name;

/// A small xorshift generator: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Mutated tables (bytes flipped in the structures' sectors, and CRCs
/// recomputed half the time so the parser gets past them) never panic, and
/// whatever they yield lies inside the disk, sorted, non-empty.
#[test]
fn mutated_tables_never_panic() {
    let cases: u64 = std::env::var("PARTITIONS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let mut bases = [mbr_disk(), three(512), three(4096)];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for case in 0..cases {
        // Mutate in place and restore afterwards: cloning 64 MiB per case
        // would cost more than parsing.
        let disk = &mut bases[(case % 3) as usize];
        let ss = if case % 3 == 2 { 4096 } else { 512 };
        let hot: Vec<usize> = if case % 3 == 0 {
            vec![0, (16 * MIB) as usize, (30 * MIB) as usize, (44 * MIB) as usize]
        } else {
            vec![0, ss, 2 * ss, disk.bytes.len() - ss]
        };
        let mut undo: Vec<(usize, u8)> = Vec::new();
        for _ in 0..1 + rng.next() % 8 {
            let base = hot[(rng.next() % hot.len() as u64) as usize];
            let at = base + (rng.next() % 512) as usize;
            undo.push((at, disk.bytes[at]));
            disk.bytes[at] = rng.next() as u8;
        }
        if case % 3 != 0 && rng.next().is_multiple_of(2) {
            // Re-seal the primary header so the entries get parsed.
            undo.extend((ss + 16..ss + 20).map(|at| (at, disk.bytes[at])));
            let h = &mut disk.bytes[ss..ss + 92];
            h[16..20].fill(0);
            let crc = crc32fast::hash(h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(t) = read_table(&*disk) {
            let size = disk.bytes.len() as u64;
            for p in &t.partitions {
                assert!(p.length > 0 && p.start + p.length <= size, "case {case}: {p:?}");
                assert!(p.number >= 1 && p.number <= MAX_PARTITIONS, "case {case}: {p:?}");
            }
            assert!(t.partitions.windows(2).all(|w| w[0].number < w[1].number), "case {case}");
        }
        let _ = probe(&*disk);
        for (at, old) in undo.into_iter().rev() {
            disk.bytes[at] = old;
        }
    }
}
