//! Volume guests (wit/volume/volume.wit, `fshost:volume`): untrusted
//! components that read a container format — a partition table, later a
//! disk-image format — and describe the byte spaces inside it.
//!
//! A [`VolumeGuest`] runs under the same [`Limits`] as a filesystem guest
//! (memory, per-call deadline, log budget; WASI granting nothing) with the
//! same bounds-checked device import, and every answer is validated in
//! [`convert`]. The host uses a `linear` volume as a [`Device`] window
//! ([`Device::window`]), so the filesystem guest above sees a plain device
//! and the mapping checks of `plugin::convert` hold against the window.
//!
//! A trap costs the call, as for filesystem guests: the instance is
//! dropped and the next call starts a fresh one (which reads its table
//! again before answering `map`).

mod bindings;
mod convert;
mod imports;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use super::identity::{Identity, compatible_with};
use super::{
    CompileCache, Limits, LoadStats, State, engine, failure, load_component, new_store, note_dropped_logs, start_ticker,
};
use crate::device::Device;
use crate::error::FsError;
use bindings::{VolumeGuest as Bindings, VolumeGuestPre, types as wit};
pub use convert::MAX_VOLUMES;

/// The interface a volume guest exports.
pub const EXPORT: &str = "fshost:volume/volume";
/// The volume contract this host speaks (wit/volume/volume.wit).
pub const VERSION: &str = "0.2.0";

/// The version of `fshost:volume/volume` a component exports, if it
/// exports it ("" when unversioned).
pub fn contract_version(id: &Identity) -> Option<&str> {
    id.exports.iter().find_map(|name| match name.strip_prefix(EXPORT)? {
        "" => Some(""),
        rest => rest.strip_prefix('@'),
    })
}

/// Whether a component built for volume contract `version` links here.
pub fn compatible(version: &str) -> bool {
    compatible_with(VERSION, version)
}

/// A GUID as stored on disk (the first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl fmt::Display for Guid {
    /// The usual 8-4-4-4-12 form, upper case as blkid and sgdisk print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02X}"))
    }
}

/// What the container says a volume is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeType {
    None,
    Mbr(u8),
    Gpt(Guid),
}

/// Where a volume's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A validated range of the input: inside it, sector-aligned.
    Linear { start: u64 },
    /// Through `map`.
    Mapped,
}

/// The `volume-flags` of the WIT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeFlags {
    pub bootable: bool,
    pub required: bool,
    pub read_only: bool,
    pub hidden: bool,
    pub no_automount: bool,
    pub container: bool,
}

/// One validated volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub number: u32,
    pub layout: Layout,
    pub length: u64,
    pub kind: VolumeType,
    pub uuid: Option<Guid>,
    pub name: Vec<u8>,
    pub flags: VolumeFlags,
    pub attributes: u64,
}

/// A validated `volumes` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTable {
    pub format: String,
    pub sector_size: u32,
    pub disk_id: Vec<u8>,
    /// Sorted by number, numbers unique.
    pub volumes: Vec<VolumeInfo>,
    /// The parent image the volumes inherit from, as the image names it
    /// (never opened by the host).
    pub backing: Option<Vec<u8>>,
    /// Internal snapshots: (id, name), as stored.
    pub snapshots: Vec<Snapshot>,
}

/// An internal snapshot an image lists (not read: the volumes are the
/// active image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: Vec<u8>,
    pub name: Vec<u8>,
}

/// What backs one validated range of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentKind {
    /// The input at this byte offset (inside it).
    Backing(u64),
    Zeros,
    Inherited,
    Data(Arc<[u8]>),
}

/// One validated range of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: ExtentKind,
}

struct Live {
    store: Store<State>,
    guest: Bindings,
    /// The table this instance answered, once it has.
    table: Option<VolumeTable>,
}

/// A loaded volume guest bound to its input device. Calls are serialised.
pub struct VolumeGuest {
    engine: Engine,
    pre: VolumeGuestPre<State>,
    device: Arc<Device>,
    limits: Limits,
    live: Mutex<Option<Live>>,
    stop_ticker: Arc<AtomicBool>,
    /// Joined on drop: a volume guest dropped just before the sandbox
    /// point must leave no thread behind, or one still exiting would be
    /// seen with its old credentials when the sandbox checks every thread.
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl VolumeGuest {
    /// Load the volume guest at `path` for `device`, compiling it unless
    /// `cache` holds it already. Nothing runs yet.
    pub fn load(
        path: &Path,
        device: Arc<Device>,
        limits: Limits,
        cache: Option<&CompileCache>,
    ) -> anyhow::Result<(Self, LoadStats)> {
        let started = Instant::now();
        let wasm = std::fs::read(path).with_context(|| format!("reading volume guest {}", path.display()))?;
        let id = Identity::read(&wasm).map_err(|e| anyhow::anyhow!("{} {e}", path.display()))?;
        match contract_version(&id) {
            Some(v) if compatible(v) => {}
            Some(v) => anyhow::bail!(
                "{} was built for fshost:volume@{v}; this fshost speaks fshost:volume@{VERSION}",
                path.display()
            ),
            None => anyhow::bail!("{} is not a volume guest: it does not export {EXPORT}", path.display()),
        }
        let engine = engine()?;
        let (component, compiled) = load_component(&engine, &wasm, path, cache)?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Bindings::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(VolumeGuestPre::new)
            .map_err(|e| anyhow::anyhow!("{} does not fit fshost:volume@{VERSION}: {e}", path.display()))?;
        let (stop_ticker, ticker) = start_ticker(&engine)?;
        let stats = LoadStats { compiled, millis: started.elapsed().as_secs_f64() * 1000.0 };
        let guest =
            VolumeGuest { engine, pre, device, limits, live: Mutex::new(None), stop_ticker, ticker: Some(ticker) };
        Ok((guest, stats))
    }

    /// The input device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Run `f` on a live instance (started if none runs) with the limits
    /// armed; a trap drops the instance.
    fn call<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<Result<T, wit::ErrorCode>>,
    ) -> Result<T, FsError> {
        let mut slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let mut store = new_store(&self.engine, &self.limits, &self.device, false);
            store.set_epoch_deadline(self.limits.deadline_ticks());
            let guest = self.pre.instantiate(&mut store).map_err(|e| failure(op, e, &store))?;
            *slot = Some(Live { store, guest, table: None });
        }
        let Some(live) = slot.as_mut() else {
            return Err(FsError::Failed("no volume guest instance".into()));
        };
        live.store.set_epoch_deadline(self.limits.deadline_ticks());
        live.store.data_mut().log_budget.refill();
        let answer = f(live);
        note_dropped_logs(op, &live.store);
        match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(code)) => Err(FsError::Guest { op, code: convert::code(code) }),
            Err(e) => {
                let err = failure(op, e, &live.store);
                *slot = None;
                Err(err)
            }
        }
    }

    /// Start an instance now, without calling it: what instantiation
    /// needs (a memfd for a freshly compiled guest's memory image) is
    /// refused once the process is sandboxed, while calls are not.
    pub fn start(&self) -> Result<(), FsError> {
        self.call("start", |_| Ok(Ok(())))
    }

    /// Whether the input holds this guest's format: its name, or `None`.
    pub fn probe(&self) -> Result<Option<String>, FsError> {
        let name = self.call("probe", |l| l.guest.fshost_volume_volume().call_probe(&mut l.store))?;
        match name {
            Some(n) if n.is_empty() || n.len() > 16 || !n.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(FsError::Invalid { op: "probe", reason: format!("format name {n:?}") })
            }
            other => Ok(other),
        }
    }

    /// The validated table of volumes.
    pub fn volumes(&self) -> Result<VolumeTable, FsError> {
        let (size, sector) = (self.device.size(), self.device.sector_size());
        let raw = self.call("volumes", |l| l.guest.fshost_volume_volume().call_volumes(&mut l.store))?;
        let table = convert::table(raw, size, sector)?;
        let mut slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = slot.as_mut() {
            live.table = Some(table.clone());
        }
        Ok(table)
    }

    /// Validated extents of volume `number` from `offset`.
    pub fn map(&self, number: u32, offset: u64, length: u64) -> Result<Vec<Extent>, FsError> {
        let input_size = self.device.size();
        let (max_extents, max_data) = (self.limits.max_mappings, self.limits.max_value);
        let raw = self.call("map", |l| {
            if l.table.is_none() {
                // A fresh instance reads its table first, as `mount` comes
                // first in a filesystem guest.
                match l.guest.fshost_volume_volume().call_volumes(&mut l.store)? {
                    Ok(t) => l.table = convert::table(t, input_size, 0).ok(),
                    Err(code) => return Ok(Err(code)),
                }
            }
            let Some(v) = l.table.as_ref().and_then(|t| t.volumes.iter().find(|v| v.number == number)) else {
                return Ok(Err(wit::ErrorCode::NotFound));
            };
            let length_of_volume = v.length;
            let extents = l.guest.fshost_volume_volume().call_map(&mut l.store, number, offset, length)?;
            Ok(extents.map(|e| (e, length_of_volume)))
        })?;
        let (raw, volume_length) = raw;
        let check = convert::MapCheck { number, offset, length: volume_length, input_size, max_extents, max_data };
        convert::extents(raw, &check)
    }
}

impl Drop for VolumeGuest {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            // Woken now rather than within a tick; a ticker that panicked
            // has nothing left to say.
            ticker.thread().unpark();
            let _ = ticker.join();
        }
    }
}
