//! The GUID partition table, read as Linux's `block/partitions/efi.c`
//! reads it, plus the backup it trusts only with the `gpt` boot option.
//!
//! Sector 0 holds a protective MBR (one 0xEE slot starting at LBA 1; a
//! hybrid MBR has other slots beside it). LBA 1 holds the primary header:
//! "EFI PART", its size and CRC32, its own LBA, the backup's LBA, the
//! usable range, the disk GUID and where the entry array lies, how many
//! 128-byte entries it holds and their CRC32. The backup header sits in the
//! disk's last LBA, with its own copy of the array. The LBA size is the
//! device's; an image file does not say it, so a disk written with
//! 4096-byte sectors is looked for at 4096 too.

use crate::bytes::{array, u32_at, u64_at};
use crate::mbr::{PROTECTIVE, slots};
use crate::{Disk, Error, Flags, MAX_PARTITIONS, PartType, Partition, Result, Table};

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The header's fields end here (UEFI: HeaderSize >= 92).
const HEADER_MIN: u32 = 92;
const ENTRY_SIZE: u32 = 128;
/// The largest entry array read (Linux: KMALLOC_MAX_SIZE, 4 MiB).
const MAX_ARRAY: u64 = 4 << 20;

/// What the first sector says about GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pmbr {
    /// One 0xEE slot from LBA 1, nothing else.
    Protective,
    /// A 0xEE slot from LBA 1 and other slots (a hybrid MBR).
    Hybrid,
}

/// Whether `sector` (with the boot signature) is a protective or hybrid
/// MBR, as efi.c's `is_pmbr_valid`.
pub fn protective_mbr(sector: &[u8]) -> Option<Pmbr> {
    let slots = slots(sector).ok()?;
    slots.iter().any(|s| s.kind == PROTECTIVE && s.start == 1).then(|| {
        if slots.iter().all(|s| s.kind == PROTECTIVE || s.kind == 0) { Pmbr::Protective } else { Pmbr::Hybrid }
    })
}

/// A header that passed every check of efi.c's `is_gpt_valid`.
#[derive(Debug, Clone)]
struct Header {
    lba: u64,
    alternate: u64,
    disk_guid: [u8; 16],
    entries_lba: u64,
    entries: u32,
    entries_crc: u32,
}

/// One GPT's header and entry array, read and checked at `lba` with
/// sectors of `ss` bytes; `Err` says what is wrong.
fn read_gpt(disk: &dyn Disk, ss: u64, lba: u64) -> Result<(Header, Vec<u8>)> {
    let what = |msg: String| Error::corrupted(format!("GPT header at LBA {lba} ({ss}-byte sectors): {msg}"));
    let last = (disk.size() / ss).checked_sub(1).ok_or_else(|| what("the disk is smaller than one sector".into()))?;
    if lba > last {
        return Err(what(format!("past the last LBA {last}")));
    }
    let buf = disk.read(lba * ss, ss as usize)?;
    if array::<8>(&buf, 0, "signature")? != *SIGNATURE {
        return Err(what("no \"EFI PART\" signature".into()));
    }
    let size = u32_at(&buf, 12, "header size")?;
    if size < HEADER_MIN || u64::from(size) > ss {
        return Err(what(format!("header size {size} outside {HEADER_MIN}..={ss}")));
    }
    let stored_crc = u32_at(&buf, 16, "header CRC")?;
    let mut copy = buf.get(..size as usize).ok_or_else(|| what("short header".into()))?.to_vec();
    copy[16..20].fill(0);
    let crc = crc32fast::hash(&copy);
    if crc != stored_crc {
        return Err(what(format!("header CRC {crc:#010x}, stored {stored_crc:#010x}")));
    }
    let my_lba = u64_at(&buf, 24, "my LBA")?;
    if my_lba != lba {
        return Err(what(format!("says it is at LBA {my_lba}")));
    }
    let first_usable = u64_at(&buf, 40, "first usable LBA")?;
    let last_usable = u64_at(&buf, 48, "last usable LBA")?;
    if first_usable > last || last_usable > last || last_usable < first_usable {
        return Err(what(format!("usable LBAs {first_usable}..={last_usable} do not fit 0..={last}")));
    }
    let entry_size = u32_at(&buf, 84, "entry size")?;
    if entry_size != ENTRY_SIZE {
        return Err(what(format!("entry size {entry_size}, not {ENTRY_SIZE}")));
    }
    let header = Header {
        lba,
        alternate: u64_at(&buf, 32, "alternate LBA")?,
        disk_guid: array(&buf, 56, "disk GUID")?,
        entries_lba: u64_at(&buf, 72, "entry array LBA")?,
        entries: u32_at(&buf, 80, "entry count")?,
        entries_crc: u32_at(&buf, 88, "entry array CRC")?,
    };
    let array_len = u64::from(header.entries) * u64::from(ENTRY_SIZE);
    if array_len > MAX_ARRAY {
        return Err(what(format!("{} entries: larger than {MAX_ARRAY} bytes", header.entries)));
    }
    let array_at = header
        .entries_lba
        .checked_mul(ss)
        .filter(|at| header.entries_lba <= last && at.checked_add(array_len).is_some_and(|end| end <= disk.size()))
        .ok_or_else(|| what(format!("entry array at LBA {} runs past the disk", header.entries_lba)))?;
    let entries = disk.read(array_at, array_len as usize)?;
    let crc = crc32fast::hash(&entries);
    if crc != header.entries_crc {
        return Err(what(format!("entry array CRC {crc:#010x}, stored {:#010x}", header.entries_crc)));
    }
    Ok((header, entries))
}

/// The sector sizes to look for a GPT at: the device's, and 4096 on a
/// 512-byte device (an image of a 4Kn disk).
fn sector_sizes(disk: &dyn Disk) -> Vec<u64> {
    let native = u64::from(disk.sector_size().max(512));
    if native == 512 { vec![512, 4096] } else { vec![native] }
}

/// Read the GPT of a disk whose sector 0 is a protective or hybrid MBR.
pub fn read(disk: &dyn Disk) -> Result<Table> {
    let mut warnings = Vec::new();
    let mut reasons = Vec::new();
    let mut found = None;
    for ss in sector_sizes(disk) {
        match read_gpt(disk, ss, 1) {
            Ok(gpt) => {
                found = Some((ss, gpt));
                break;
            }
            Err(e) => reasons.push(e.message),
        }
    }
    match &found {
        Some((ss, (header, entries))) => check_backup(disk, *ss, header, entries, &mut warnings),
        None => {
            // The primary is damaged: the backup in the last LBA, as Linux
            // does with the `gpt` boot option (and parted, gdisk, fdisk).
            for ss in sector_sizes(disk) {
                // A primary that names another sector size than the one
                // tried is not this disk's: only look where a GPT of this
                // sector size keeps its backup.
                let Some(last) = (disk.size() / ss).checked_sub(1) else { continue };
                match read_gpt(disk, ss, last) {
                    Ok(gpt) => {
                        warnings.push(format!(
                            "the primary GPT is damaged ({}); using the backup at LBA {last} (Linux does so only with the `gpt` boot option)",
                            reasons.join("; ")
                        ));
                        found = Some((ss, gpt));
                        break;
                    }
                    Err(e) => reasons.push(e.message),
                }
            }
        }
    }
    let Some((ss, (header, entries))) = found else {
        return Err(Error::corrupted(format!("protective MBR, but no valid GPT: {}", reasons.join("; "))));
    };
    let partitions = entries_of(disk, ss, &header, &entries, &mut warnings);
    Ok(Table { format: "gpt", sector_size: ss as u32, disk_id: header.disk_guid.to_vec(), partitions, warnings })
}

/// Warn when the primary's backup is missing or damaged (efi.c's
/// `compare_gpts` warns too; the primary is used either way).
fn check_backup(disk: &dyn Disk, ss: u64, primary: &Header, entries: &[u8], warnings: &mut Vec<String>) {
    match read_gpt(disk, ss, primary.alternate) {
        Err(e) => warnings.push(format!("the backup GPT is damaged: {}", e.message)),
        Ok((backup, backup_entries)) => {
            if backup.alternate != primary.lba || backup.disk_guid != primary.disk_guid || backup_entries != entries {
                warnings.push(format!("the backup GPT at LBA {} differs from the primary", backup.lba));
            }
        }
    }
}

/// The partitions of an entry array, as efi.c's loop takes them: entries
/// with a type GUID, inside the disk, numbered by index + 1, at most 255.
fn entries_of(disk: &dyn Disk, ss: u64, header: &Header, entries: &[u8], warnings: &mut Vec<String>) -> Vec<Partition> {
    let last = (disk.size() / ss).saturating_sub(1);
    let mut out = Vec::new();
    for (i, entry) in entries.chunks_exact(ENTRY_SIZE as usize).enumerate().take(header.entries as usize) {
        let number = i as u32 + 1;
        let Ok(kind) = array::<16>(entry, 0, "type GUID") else { continue };
        if kind == [0; 16] {
            continue;
        }
        if number > MAX_PARTITIONS {
            warnings.push(format!("GPT entry {number} and later: past Linux's {MAX_PARTITIONS} partitions, left out"));
            break;
        }
        let (Ok(first), Ok(end), Ok(attributes), Ok(uuid)) = (
            u64_at(entry, 32, "first LBA"),
            u64_at(entry, 40, "last LBA"),
            u64_at(entry, 48, "attributes"),
            array::<16>(entry, 16, "unique GUID"),
        ) else {
            continue;
        };
        if first > last || end > last {
            warnings
                .push(format!("partition {number}: LBAs {first}..={end} pass the disk's last LBA {last}: left out"));
            continue;
        }
        if end < first {
            warnings.push(format!("partition {number}: last LBA {end} before its first {first}: left out"));
            continue;
        }
        let bit = |n: u32| attributes & (1u64 << n) != 0;
        out.push(Partition {
            number,
            start: first * ss,
            length: (end - first + 1) * ss,
            kind: PartType::Gpt(kind),
            uuid: Some(uuid),
            name: name(entry.get(56..128).unwrap_or_default()),
            flags: Flags {
                bootable: bit(2),
                required: bit(0),
                read_only: bit(60),
                hidden: bit(62),
                no_automount: bit(63),
                container: false,
            },
            attributes,
        });
    }
    out
}

/// A GPT name: UTF-16LE up to its first NUL, as UTF-8 (unpaired
/// surrogates become U+FFFD).
pub fn name(raw: &[u8]) -> Vec<u8> {
    let units = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0);
    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect::<String>().into_bytes()
}
