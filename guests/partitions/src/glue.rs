//! The component: exports `fshost:volume/volume` (wit/volume/volume.wit)
//! over the parsers, reading through the host's `block-device` import.
//! Only compiled for wasm; nothing else names a generated type.

use std::cell::RefCell;

use crate::{Code, Disk, Error, PartType, Result, Table};

wit_bindgen::generate!({
    path: "../../wit/volume",
    world: "volume-guest",
});

use exports::fshost::volume::volume::Guest;
use fshost::volume::{block_device, log, types as wit};

/// The host guarantees at least this much per read call.
const MAX_READ: usize = 1 << 20;

struct HostDisk;

impl Disk for HostDisk {
    fn size(&self) -> u64 {
        block_device::size()
    }
    fn sector_size(&self) -> u32 {
        block_device::sector_size()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(MAX_READ);
            let at = offset.saturating_add(out.len() as u64);
            let bytes = block_device::read(at, want as u32)
                .map_err(|code| Error::io(format!("device read of {want} bytes at {at}: {code:?}")))?;
            if bytes.len() != want {
                return Err(Error::io(format!("device returned {} of {want} bytes at {at}", bytes.len())));
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }
}

thread_local! {
    /// The table `volumes` read, for `map`.
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

fn code(op: &str, e: Error) -> wit::ErrorCode {
    // Not finding a table is an answer, not damage: -v shows why.
    let level = if e.code == Code::NotFound { log::Level::Info } else { log::Level::Warn };
    log::log(level, &format!("{op}: {e}"));
    match e.code {
        Code::NotFound => wit::ErrorCode::NotFound,
        Code::Corrupted => wit::ErrorCode::Corrupted,
        Code::Io => wit::ErrorCode::Io,
        Code::Invalid => wit::ErrorCode::Invalid,
    }
}

fn volume(p: &crate::Partition) -> wit::Volume {
    let f = p.flags;
    let mut flags = wit::VolumeFlags::empty();
    for (on, bit) in [
        (f.bootable, wit::VolumeFlags::BOOTABLE),
        (f.required, wit::VolumeFlags::REQUIRED),
        (f.read_only, wit::VolumeFlags::READ_ONLY),
        (f.hidden, wit::VolumeFlags::HIDDEN),
        (f.no_automount, wit::VolumeFlags::NO_AUTOMOUNT),
        (f.container, wit::VolumeFlags::CONTAINER),
    ] {
        if on {
            flags |= bit;
        }
    }
    wit::Volume {
        number: p.number,
        layout: wit::Layout::Linear(p.start),
        length: p.length,
        type_: match p.kind {
            PartType::Mbr(t) => wit::VolumeType::Mbr(t),
            PartType::Gpt(g) => wit::VolumeType::Gpt(g.to_vec()),
        },
        uuid: p.uuid.map(|u| u.to_vec()).unwrap_or_default(),
        name: p.name.clone(),
        flags,
        attributes: p.attributes,
    }
}

struct Partitions;

impl Guest for Partitions {
    fn probe() -> std::result::Result<Option<String>, wit::ErrorCode> {
        crate::probe(&HostDisk).map(|f| f.map(String::from)).map_err(|e| code("probe", e))
    }

    fn volumes() -> std::result::Result<wit::Table, wit::ErrorCode> {
        let table = crate::read_table(&HostDisk).map_err(|e| code("volumes", e))?;
        for w in &table.warnings {
            log::log(log::Level::Warn, w);
        }
        let answer = wit::Table {
            format: table.format.to_string(),
            sector_size: table.sector_size,
            disk_id: table.disk_id.clone(),
            volumes: table.partitions.iter().map(volume).collect(),
            backing: None,
            snapshots: Vec::new(),
        };
        TABLE.with(|t| *t.borrow_mut() = Some(table));
        Ok(answer)
    }

    fn map(number: u32, offset: u64, _length: u64) -> std::result::Result<Vec<wit::Extent>, wit::ErrorCode> {
        TABLE.with(|t| {
            let t = t.borrow();
            let table = t.as_ref().ok_or_else(|| code("map", Error::invalid("map before volumes")))?;
            let p = crate::map(table, number, offset).map_err(|e| code("map", e))?;
            Ok(vec![wit::Extent { offset: 0, length: p.length, kind: wit::ExtentKind::Backing(p.start) }])
        })
    }
}

export!(Partitions);
