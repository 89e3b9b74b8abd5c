//! The component: exports `fshost:volume/volume` (wit/volume/volume.wit)
//! over [`Image`], reading the image file through the host's
//! `block-device` import. Only compiled for wasm; nothing else names a
//! generated type.

use std::cell::RefCell;

use crate::{Code, Disk, Error, Image, Kind, Result};

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
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(MAX_READ);
            let at = offset.saturating_add(out.len() as u64);
            let bytes = block_device::read(at, want as u32)
                .map_err(|code| Error::io(format!("file read of {want} bytes at {at}: {code:?}")))?;
            if bytes.len() != want {
                return Err(Error::io(format!("file returned {} of {want} bytes at {at}", bytes.len())));
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }
}

thread_local! {
    /// The image `volumes` opened, for `map`.
    static IMAGE: RefCell<Option<Image>> = const { RefCell::new(None) };
}

fn code(op: &str, e: Error) -> wit::ErrorCode {
    // Not being a VMDK is an answer, not damage: -v shows why.
    let level = if e.code == Code::NotFound { log::Level::Info } else { log::Level::Error };
    log::log(level, &format!("vmdk {op}: {e}"));
    match e.code {
        Code::NotFound => wit::ErrorCode::NotFound,
        Code::Corrupted => wit::ErrorCode::Corrupted,
        Code::Io => wit::ErrorCode::Io,
        Code::Unsupported => wit::ErrorCode::Unsupported,
        Code::Invalid => wit::ErrorCode::Invalid,
    }
}

struct Vmdk;

impl Guest for Vmdk {
    fn probe() -> std::result::Result<Option<String>, wit::ErrorCode> {
        crate::probe(&HostDisk).map(|f| f.map(String::from)).map_err(|e| code("probe", e))
    }

    fn volumes() -> std::result::Result<wit::Table, wit::ErrorCode> {
        let image = Image::open(&HostDisk).map_err(|e| code("volumes", e))?;
        log::log(
            log::Level::Info,
            &format!(
                "vmdk: {} sparse extent of {} bytes",
                if image.compressed { "stream-optimized" } else { "monolithic" },
                image.length
            ),
        );
        let volumes = if image.length == 0 {
            Vec::new()
        } else {
            vec![wit::Volume {
                number: 1,
                layout: wit::Layout::Mapped,
                length: image.length,
                type_: wit::VolumeType::None,
                uuid: Vec::new(),
                name: Vec::new(),
                flags: wit::VolumeFlags::empty(),
                attributes: 0,
            }]
        };
        IMAGE.with(|i| *i.borrow_mut() = Some(image));
        Ok(wit::Table {
            format: "vmdk".into(),
            sector_size: 512,
            disk_id: Vec::new(),
            volumes,
            backing: None,
            snapshots: Vec::new(),
        })
    }

    fn map(number: u32, offset: u64, length: u64) -> std::result::Result<Vec<wit::Extent>, wit::ErrorCode> {
        IMAGE.with(|i| {
            let mut i = i.borrow_mut();
            let image = i.as_mut().ok_or_else(|| code("map", Error::invalid("map before volumes")))?;
            if number != 1 {
                return Err(code("map", Error::not_found(format!("no volume {number}: a VMDK has volume 1"))));
            }
            let extents = image.map(&HostDisk, offset, length).map_err(|e| code("map", e))?;
            Ok(extents
                .into_iter()
                .map(|e| wit::Extent {
                    offset: e.offset,
                    length: e.length,
                    kind: match e.kind {
                        Kind::Backing(at) => wit::ExtentKind::Backing(at),
                        Kind::Zeros => wit::ExtentKind::Zeros,
                        Kind::Data(bytes) => wit::ExtentKind::Data(bytes),
                    },
                })
                .collect())
        })
    }
}

export!(Vmdk);
