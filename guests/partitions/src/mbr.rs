//! The DOS partition table (MBR) and its extended partitions, read as
//! Linux's `block/partitions/msdos.c` reads them.
//!
//! Sector 0 holds four 16-byte slots at 0x1BE. A slot of type 0x05, 0x0F
//! or 0x85 is an extended partition: its first sector is an EBR, another
//! four slots of which the data slots describe a logical partition
//! (relative to that EBR) and the first extended slot links to the next EBR
//! (relative to the extended partition's start). Logical partitions are
//! numbered from 5 in chain order. Sizes count in the device's logical
//! sectors.

use crate::bytes::{u8_at, u32_at};
use crate::{Disk, Error, Flags, MAX_PARTITIONS, PartType, Partition, Result, Table, has_boot_signature};

/// Where the four slots start in an MBR or EBR.
const SLOTS: usize = 0x1BE;
/// The GPT protective type.
pub const PROTECTIVE: u8 = 0xEE;
/// Linux stops following a chain after this many EBRs without a data
/// partition (msdos.c's `loopct`).
const MAX_EMPTY_LINKS: u32 = 100;

/// One 16-byte slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub boot: u8,
    pub kind: u8,
    /// In sectors, relative to the MBR or EBR's base.
    pub start: u32,
    pub sectors: u32,
}

impl Slot {
    pub fn is_extended(&self) -> bool {
        matches!(self.kind, 0x05 | 0x0F | 0x85)
    }
}

/// The four slots of an MBR or EBR sector.
pub fn slots(sector: &[u8]) -> Result<[Slot; 4]> {
    let mut out = [Slot { boot: 0, kind: 0, start: 0, sectors: 0 }; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let at = SLOTS + 16 * i;
        *slot = Slot {
            boot: u8_at(sector, at, "MBR slot")?,
            kind: u8_at(sector, at + 4, "MBR slot")?,
            start: u32_at(sector, at + 8, "MBR slot")?,
            sectors: u32_at(sector, at + 12, "MBR slot")?,
        };
    }
    Ok(out)
}

/// Whether a sector with the boot signature is a DOS partition table:
/// every boot indicator 0 or 0x80 (msdos.c; anything else is a FAT boot
/// sector or garbage).
pub fn looks_like_mbr(sector: &[u8]) -> bool {
    has_boot_signature(sector) && slots(sector).is_ok_and(|s| s.iter().all(|s| s.boot == 0 || s.boot == 0x80))
}

/// Read the table whose first sector is `sector`.
pub fn read(disk: &dyn Disk, sector: &[u8]) -> Result<Table> {
    let primary = slots(sector)?;
    if let Some(bad) = primary.iter().find(|s| s.boot != 0 && s.boot != 0x80) {
        return Err(Error::not_found(format!(
            "no partition table: a boot indicator of {:#04x} (a FAT boot sector, or not a table)",
            bad.boot
        )));
    }
    if primary.iter().any(|s| s.kind == PROTECTIVE) {
        // Linux's msdos.c leaves such a disk to efi.c; here efi.c refused
        // the protective MBR.
        return Err(Error::corrupted("an MBR with a GPT (0xEE) slot that is not a valid protective MBR"));
    }
    let ss = u64::from(disk.sector_size().max(512));
    let mut table = Table {
        format: "mbr",
        sector_size: disk.sector_size().max(512),
        disk_id: sector.get(440..444).map(<[u8]>::to_vec).unwrap_or_default(),
        partitions: Vec::new(),
        warnings: Vec::new(),
    };
    let mut next_logical = 5;
    for (i, slot) in primary.iter().enumerate() {
        if slot.sectors == 0 {
            continue;
        }
        let start = u64::from(slot.start) * ss;
        let length = u64::from(slot.sectors) * ss;
        table.partitions.push(Partition {
            number: i as u32 + 1,
            start,
            length,
            kind: PartType::Mbr(slot.kind),
            uuid: None,
            name: Vec::new(),
            flags: Flags { bootable: slot.boot == 0x80, container: slot.is_extended(), ..Flags::default() },
            attributes: u64::from(slot.boot),
        });
        if slot.is_extended() {
            logical_chain(disk, ss, start, length, &mut next_logical, &mut table);
        }
    }
    Ok(table)
}

/// Follow the EBR chain of the extended partition at `first` (`first_len`
/// bytes), adding its logical partitions. Damage ends the chain with a
/// warning; what was found before stays.
fn logical_chain(disk: &dyn Disk, ss: u64, first: u64, first_len: u64, next: &mut u32, table: &mut Table) {
    let mut this = first;
    let mut this_len = first_len;
    let mut empty_links = 0u32;
    let mut visited: Vec<u64> = Vec::new();
    loop {
        empty_links += 1;
        if empty_links > MAX_EMPTY_LINKS {
            table.warnings.push(format!("logical partitions: {MAX_EMPTY_LINKS} EBRs without a partition: chain ends"));
            return;
        }
        if *next > MAX_PARTITIONS {
            table.warnings.push(format!("logical partitions: more than {MAX_PARTITIONS} partitions: chain ends"));
            return;
        }
        if visited.contains(&this) {
            table.warnings.push(format!(
                "logical partitions: the EBR chain loops back to byte {this}: chain ends (Linux lists the loop's partitions again, up to 255)"
            ));
            return;
        }
        visited.push(this);
        let sector = match this.checked_add(512).filter(|end| *end <= disk.size()) {
            Some(_) => disk.read(this, 512),
            None => Err(Error::io(format!("EBR at byte {this} is past the end of the disk"))),
        };
        let sector = match sector {
            Ok(s) => s,
            Err(e) => {
                table.warnings.push(format!("logical partitions: {e}: chain ends"));
                return;
            }
        };
        if !has_boot_signature(&sector) {
            table.warnings.push(format!("logical partitions: EBR at byte {this} has no 0x55AA signature: chain ends"));
            return;
        }
        let Ok(slots) = slots(&sector) else { return };
        for (i, slot) in slots.iter().enumerate() {
            if slot.sectors == 0 || slot.is_extended() {
                continue;
            }
            let offs = u64::from(slot.start) * ss;
            let size = u64::from(slot.sectors) * ss;
            let Some(start) = this.checked_add(offs) else { continue };
            // The third and fourth slots often hold garbage: Linux takes
            // them only when they lie inside this EBR's and the extended
            // partition's range.
            if i >= 2
                && (offs.saturating_add(size) > this_len
                    || start < first
                    || start.saturating_add(size) > first.saturating_add(first_len))
            {
                continue;
            }
            table.partitions.push(Partition {
                number: *next,
                start,
                length: size,
                kind: PartType::Mbr(slot.kind),
                uuid: None,
                name: Vec::new(),
                flags: Flags { bootable: slot.boot == 0x80, ..Flags::default() },
                attributes: u64::from(slot.boot),
            });
            empty_links = 0;
            *next += 1;
            if *next > MAX_PARTITIONS {
                return;
            }
        }
        let Some(link) = slots.iter().find(|s| s.sectors != 0 && s.is_extended()) else { return };
        this = first.saturating_add(u64::from(link.start) * ss);
        this_len = u64::from(link.sectors) * ss;
    }
}
