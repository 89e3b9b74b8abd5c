//! The trust boundary for a volume guest's answers: a generated `table` or
//! extent list becomes a validated [`VolumeTable`] or [`Extent`] list here,
//! or an `FsError::Invalid` saying what was wrong. Past this module the
//! host trusts that every linear volume lies inside its input, aligned to
//! the table's sector size, and that every extent is where it says.

use std::sync::Arc;

use super::bindings::types as wit;
use super::{Extent, ExtentKind, Guid, Layout, Snapshot, VolumeFlags, VolumeInfo, VolumeTable, VolumeType};
use crate::error::{FsError, GuestCode};

/// Most volumes one table may list: Linux's DISK_MAX_PARTS.
pub const MAX_VOLUMES: usize = 256;
/// Longest volume name kept, in bytes (a GPT name is 36 UTF-16 units, at
/// most 108 bytes of UTF-8).
pub const MAX_NAME: usize = 256;
/// Most internal snapshots a table may list (qcow2's QCOW_MAX_SNAPSHOTS).
pub const MAX_SNAPSHOTS: usize = 65536;
/// Longest backing-file name, snapshot id or snapshot name kept, in bytes
/// (qcow2 stores a backing name of at most 1023 bytes, ids and names of
/// at most 65535).
pub const MAX_IMAGE_NAME: usize = 65535;

fn invalid(op: &'static str, reason: String) -> FsError {
    FsError::Invalid { op, reason }
}

pub fn code(c: wit::ErrorCode) -> GuestCode {
    use wit::ErrorCode as W;
    match c {
        W::NotFound => GuestCode::NotFound,
        W::Corrupted => GuestCode::Corrupted,
        W::Io => GuestCode::Io,
        W::Unsupported => GuestCode::Unsupported,
        W::Invalid => GuestCode::Invalid,
        W::NoMemory => GuestCode::NoMemory,
    }
}

fn guid(op: &'static str, what: &str, bytes: Vec<u8>) -> Result<Guid, FsError> {
    <[u8; 16]>::try_from(bytes.as_slice())
        .map(Guid)
        .map_err(|_| invalid(op, format!("{what} of {} bytes, not 16", bytes.len())))
}

/// Validate a `volumes` answer for an input of `input_size` bytes whose
/// sectors are `input_sector` bytes.
pub fn table(t: wit::Table, input_size: u64, input_sector: u32) -> Result<VolumeTable, FsError> {
    const OP: &str = "volumes";
    let format_ok = (1..=16).contains(&t.format.len())
        && t.format.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !format_ok {
        return Err(invalid(OP, format!("format name {:?}", t.format)));
    }
    let ss = t.sector_size;
    if !ss.is_power_of_two() || !(512..=65536).contains(&ss) || ss < input_sector {
        return Err(invalid(OP, format!("sector size {ss} (the input's is {input_sector})")));
    }
    if t.disk_id.len() > 16 {
        return Err(invalid(OP, format!("disk id of {} bytes", t.disk_id.len())));
    }
    if t.volumes.len() > MAX_VOLUMES {
        return Err(invalid(OP, format!("{} volumes, more than {MAX_VOLUMES}", t.volumes.len())));
    }
    let mut volumes = Vec::with_capacity(t.volumes.len());
    let mut last_number = 0u32;
    for v in t.volumes {
        let n = v.number;
        let bad = |what: String| invalid(OP, format!("volume {n}: {what}"));
        if n <= last_number {
            return Err(bad(format!("number not above the previous one ({last_number})")));
        }
        last_number = n;
        let align = u64::from(ss);
        if v.length == 0 || !v.length.is_multiple_of(align) {
            return Err(bad(format!("length {} is not a positive multiple of the sector size {ss}", v.length)));
        }
        let layout = match v.layout {
            wit::Layout::Linear(start) => {
                if !start.is_multiple_of(align) {
                    return Err(bad(format!("start {start} is not a multiple of the sector size {ss}")));
                }
                if start.checked_add(v.length).is_none_or(|end| end > input_size) {
                    return Err(bad(format!(
                        "{} bytes from byte {start} do not fit in the input's {input_size} bytes",
                        v.length
                    )));
                }
                Layout::Linear { start }
            }
            wit::Layout::Mapped => Layout::Mapped,
        };
        let kind = match v.type_ {
            wit::VolumeType::None => VolumeType::None,
            wit::VolumeType::Mbr(t) => VolumeType::Mbr(t),
            wit::VolumeType::Gpt(g) => VolumeType::Gpt(guid(OP, "type GUID", g)?),
        };
        let uuid = if v.uuid.is_empty() { None } else { Some(guid(OP, "unique GUID", v.uuid)?) };
        if v.name.len() > MAX_NAME || v.name.contains(&0) {
            return Err(bad(format!("a name of {} bytes, or with a NUL", v.name.len())));
        }
        let f = v.flags;
        let flags = VolumeFlags {
            bootable: f.contains(wit::VolumeFlags::BOOTABLE),
            required: f.contains(wit::VolumeFlags::REQUIRED),
            read_only: f.contains(wit::VolumeFlags::READ_ONLY),
            hidden: f.contains(wit::VolumeFlags::HIDDEN),
            no_automount: f.contains(wit::VolumeFlags::NO_AUTOMOUNT),
            container: f.contains(wit::VolumeFlags::CONTAINER),
        };
        volumes.push(VolumeInfo {
            number: n,
            layout,
            length: v.length,
            kind,
            uuid,
            name: v.name,
            flags,
            attributes: v.attributes,
        });
    }
    if t.backing.as_ref().is_some_and(|b| b.is_empty() || b.len() > MAX_IMAGE_NAME) {
        return Err(invalid(OP, "a backing image name that is empty or too long".into()));
    }
    if t.snapshots.len() > MAX_SNAPSHOTS {
        return Err(invalid(OP, format!("{} snapshots, more than {MAX_SNAPSHOTS}", t.snapshots.len())));
    }
    let mut snapshots = Vec::with_capacity(t.snapshots.len());
    for s in t.snapshots {
        if s.id.len() > MAX_IMAGE_NAME || s.name.len() > MAX_IMAGE_NAME {
            return Err(invalid(OP, "a snapshot id or name longer than 65535 bytes".into()));
        }
        snapshots.push(Snapshot { id: s.id, name: s.name });
    }
    Ok(VolumeTable { format: t.format, sector_size: ss, disk_id: t.disk_id, volumes, backing: t.backing, snapshots })
}

/// What a `map` answer is checked against.
pub struct MapCheck {
    pub number: u32,
    pub offset: u64,
    /// The volume's length.
    pub length: u64,
    pub input_size: u64,
    pub max_extents: usize,
    pub max_data: usize,
}

/// Validate a `map` answer: non-empty, bounded, sorted and contiguous, the
/// first containing the asked offset, none past the volume's end, backing
/// ranges inside the input and 512-byte aligned, data as long as its extent.
pub fn extents(raw: Vec<wit::Extent>, c: &MapCheck) -> Result<Vec<Extent>, FsError> {
    const OP: &str = "map";
    let bad = |what: String| invalid(OP, format!("volume {} at {}: {what}", c.number, c.offset));
    if raw.is_empty() || raw.len() > c.max_extents {
        return Err(bad(format!("{} extents", raw.len())));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut expect: Option<u64> = None;
    for e in raw {
        let end = e.offset.checked_add(e.length).filter(|end| e.length > 0 && *end <= c.length);
        let Some(end) = end else {
            return Err(bad(format!("extent of {} bytes at {} (the volume has {})", e.length, e.offset, c.length)));
        };
        match expect {
            None if e.offset > c.offset || end <= c.offset => {
                return Err(bad(format!("first extent {}..{end} does not contain the offset", e.offset)));
            }
            Some(at) if at != e.offset => return Err(bad(format!("extent at {} after one ending at {at}", e.offset))),
            _ => {}
        }
        expect = Some(end);
        let kind = match e.kind {
            wit::ExtentKind::Backing(at) => {
                if !at.is_multiple_of(512) || !e.offset.is_multiple_of(512) || !e.length.is_multiple_of(512) {
                    return Err(bad(format!("backing extent {}+{} at {at} not 512-byte aligned", e.offset, e.length)));
                }
                if at.checked_add(e.length).is_none_or(|end| end > c.input_size) {
                    return Err(bad(format!("backing range {at}+{} outside the input", e.length)));
                }
                ExtentKind::Backing(at)
            }
            wit::ExtentKind::Zeros => ExtentKind::Zeros,
            wit::ExtentKind::Inherited => ExtentKind::Inherited,
            wit::ExtentKind::Data(bytes) => {
                if bytes.len() as u64 != e.length || bytes.len() > c.max_data {
                    return Err(bad(format!("{} data bytes for an extent of {}", bytes.len(), e.length)));
                }
                ExtentKind::Data(Arc::from(bytes))
            }
        };
        out.push(Extent { offset: e.offset, length: e.length, kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(number: u32, start: u64, length: u64) -> wit::Volume {
        wit::Volume {
            number,
            layout: wit::Layout::Linear(start),
            length,
            type_: wit::VolumeType::Mbr(0x83),
            uuid: Vec::new(),
            name: Vec::new(),
            flags: wit::VolumeFlags::empty(),
            attributes: 0,
        }
    }

    fn tab(ss: u32, volumes: Vec<wit::Volume>) -> wit::Table {
        wit::Table {
            format: "mbr".into(),
            sector_size: ss,
            disk_id: vec![1, 2, 3, 4],
            volumes,
            backing: None,
            snapshots: Vec::new(),
        }
    }

    #[test]
    fn a_table_is_checked_volume_by_volume() {
        let size = 1 << 20;
        let ok = table(tab(512, vec![vol(1, 512, 4096), vol(5, 8192, size - 8192)]), size, 512).unwrap();
        assert_eq!(ok.volumes.len(), 2);
        let err = |t: wit::Table| table(t, size, 512).unwrap_err().to_string();
        assert!(err(tab(512, vec![vol(1, 512, size)])).contains("do not fit"));
        assert!(err(tab(512, vec![vol(1, u64::MAX - 511, 512)])).contains("do not fit"));
        assert!(err(tab(512, vec![vol(1, 100, 512)])).contains("start 100"));
        assert!(err(tab(4096, vec![vol(1, 512, 4096)])).contains("start 512"));
        assert!(err(tab(512, vec![vol(1, 512, 0)])).contains("length 0"));
        assert!(err(tab(512, vec![vol(2, 512, 512), vol(2, 1024, 512)])).contains("number"));
        assert!(err(tab(512, vec![vol(0, 512, 512)])).contains("number"));
        assert!(err(tab(1000, vec![])).contains("sector size"));
        assert!(table(tab(512, vec![]), size, 4096).is_err(), "a table finer than its device");
        assert!(err(tab(512, (1..=300).map(|n| vol(n, 512, 512)).collect())).contains("300 volumes"));
        let mut gpt = vol(1, 512, 512);
        gpt.type_ = wit::VolumeType::Gpt(vec![0; 15]);
        assert!(err(tab(512, vec![gpt])).contains("15 bytes"));
    }

    #[test]
    fn extents_are_checked_against_the_volume_and_the_input() {
        let c =
            MapCheck { number: 1, offset: 4096, length: 1 << 20, input_size: 4 << 20, max_extents: 8, max_data: 4096 };
        let e = |offset, length, kind| wit::Extent { offset, length, kind };
        let ok = extents(vec![e(0, 1 << 20, wit::ExtentKind::Backing(512))], &c).unwrap();
        assert!(matches!(ok[0].kind, ExtentKind::Backing(512)));
        let two = vec![e(0, 8192, wit::ExtentKind::Zeros), e(8192, 512, wit::ExtentKind::Data(vec![7; 512]))];
        assert_eq!(extents(two, &c).unwrap().len(), 2);
        for bad in [
            vec![],
            vec![e(8192, 512, wit::ExtentKind::Zeros)],
            vec![e(0, 4096, wit::ExtentKind::Zeros)],
            vec![e(0, 2 << 20, wit::ExtentKind::Zeros)],
            vec![e(0, 8192, wit::ExtentKind::Backing(4 << 20))],
            vec![e(0, 8192, wit::ExtentKind::Backing(100))],
            vec![e(0, 8192, wit::ExtentKind::Data(vec![0; 10]))],
            vec![e(0, 8192, wit::ExtentKind::Zeros), e(9000, 512, wit::ExtentKind::Zeros)],
        ] {
            assert!(extents(bad.clone(), &c).is_err(), "{bad:?}");
        }
    }
}
