//! Disk-image formats under the filesystem: a qcow2 file is not the disk
//! it stores. This module finds an image format on the source (by asking
//! the installed image-format guests to probe it, or as `--image-format`
//! says), and serves the virtual disk as a [`Device`] whose reads go
//! through the format guest's `map` ([`Layer`]). The partition guest and
//! the filesystem guest above read it as a plain device, so qcow2 → GPT →
//! ext4 composes with `--partition N`.
//!
//! What it guarantees:
//! - the image format is parsed by the sandboxed guest, never here; this
//!   module only follows validated extents (`plugin::volume::convert`:
//!   inside the input and the volume, contiguous, produced bytes of the
//!   extent's length);
//! - a backing file is never opened on the image's word: an image naming
//!   one needs `--backing FILE` (one per level of the chain, nearest
//!   first), and is refused with the name it asked for otherwise;
//! - each layer keeps a small cache of its extents, so that a filesystem's
//!   reads do not call the guest for every block.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

use crate::device::{Device, Layer};
use crate::error::FsError;
use crate::plugin::search::SearchPath;
use crate::plugin::volume::{Extent, ExtentKind, Layout, VolumeGuest, VolumeTable};
use crate::plugin::{CompileCache, Limits};

/// The image-format guests probed when `--image-format` is not given, in
/// this order. A name not on the plugin search path is skipped.
pub const IMAGE_GUESTS: &[&str] = &["qcow2", "vhd", "vmdk"];

/// How far past a read a layer asks its guest to map (whole clusters are
/// cached for the reads that follow).
const MAP_AHEAD: u64 = 1 << 20;
/// Most extents, and most produced bytes, one layer's cache keeps; past
/// either it starts again empty.
const CACHE_EXTENTS: usize = 65536;
const CACHE_DATA: usize = 32 << 20;

/// An image layer this process opened, as `fshost info` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The image file (or the layer's input).
    pub path: PathBuf,
    /// The format guest's name for it ("qcow2", "vhd").
    pub format: String,
    /// The virtual disk's length in bytes.
    pub length: u64,
    /// The backing file's name as the image gives it, and the file the
    /// user gave for it.
    pub backing: Option<(Vec<u8>, PathBuf)>,
    /// Internal snapshots' names, as stored.
    pub snapshots: Vec<Vec<u8>>,
}

/// The layers opened so far, the top first (one process opens one stack).
static OPENED: Mutex<Vec<Opened>> = Mutex::new(Vec::new());

/// The image layers this process opened, the top first.
pub fn opened() -> Vec<Opened> {
    OPENED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `fshost info`'s lines for the image layers, one block per layer.
pub fn write_info(out: &mut impl std::io::Write) -> std::io::Result<()> {
    for o in opened() {
        writeln!(out, "image: {} ({}, {} bytes)", o.path.display(), o.format, o.length)?;
        if let Some((name, path)) = &o.backing {
            writeln!(out, "backing: \"{}\" read from {}", name.escape_ascii(), path.display())?;
        }
        if !o.snapshots.is_empty() {
            let names: Vec<String> = o.snapshots.iter().map(|n| format!("\"{}\"", n.escape_ascii())).collect();
            writeln!(out, "snapshots: {}", names.join(", "))?;
        }
    }
    Ok(())
}

/// `fshost info --json`'s `images`: one object per image layer, the top
/// first: `path`, `format`, `length` (the virtual disk's bytes), `backing`
/// (`null`, or `name` as the image gives it and `path`, the file read for
/// it), `snapshots` (objects with `name`).
pub fn info_json() -> Vec<serde_json::Value> {
    use crate::offline::json::put_bytes;
    use std::os::unix::ffi::OsStrExt;
    opened()
        .into_iter()
        .map(|o| {
            let mut obj = serde_json::Map::new();
            put_bytes(&mut obj, "path", o.path.as_os_str().as_bytes());
            obj.insert("format".into(), o.format.into());
            obj.insert("length".into(), o.length.into());
            let backing = o.backing.map(|(name, path)| {
                let mut b = serde_json::Map::new();
                put_bytes(&mut b, "name", &name);
                put_bytes(&mut b, "path", path.as_os_str().as_bytes());
                serde_json::Value::Object(b)
            });
            obj.insert("backing".into(), backing.into());
            let snapshots: Vec<serde_json::Value> = o
                .snapshots
                .iter()
                .map(|n| {
                    let mut m = serde_json::Map::new();
                    put_bytes(&mut m, "name", n);
                    serde_json::Value::Object(m)
                })
                .collect();
            obj.insert("snapshots".into(), snapshots.into());
            serde_json::Value::Object(obj)
        })
        .collect()
}

/// What the user said about the source's image format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// A volume guest's name or path, or `raw` for none; `None` to probe.
    pub format: Option<&'a OsStr>,
    /// The backing files of the chain, nearest first.
    pub backing: &'a [PathBuf],
}

/// The device the filesystem (or the partition table) is read from: the
/// source itself when it holds no image format, or its virtual disk.
pub fn open(
    device: Arc<Device>,
    opts: &Options,
    limits: &Limits,
    cache: Option<&CompileCache>,
) -> anyhow::Result<Arc<Device>> {
    let mut backing = opts.backing.iter();
    let top = open_layer(device, opts.format, &mut backing, limits, cache)?;
    if let Some(extra) = backing.next() {
        bail!("--backing {}: no image in the chain names another backing file", extra.display());
    }
    Ok(top)
}

fn open_layer(
    device: Arc<Device>,
    format: Option<&OsStr>,
    backing: &mut std::slice::Iter<'_, PathBuf>,
    limits: &Limits,
    cache: Option<&CompileCache>,
) -> anyhow::Result<Arc<Device>> {
    let Some(guest) = pick(&device, format, limits, cache)? else {
        return Ok(device);
    };
    let image = device.path().display().to_string();
    if !device.read_only() {
        bail!(
            "{image} is a disk image (not a raw filesystem or disk), which fshost reads read-only: mount it without -o rw"
        );
    }
    let table = guest.volumes().with_context(|| format!("reading the image format of {image}"))?;
    describe(&table, &image);
    let volume = match table.volumes.as_slice() {
        [v] => v.clone(),
        [] => bail!("{image}: the {} image holds no disk (its virtual size is 0)", table.format),
        many => bail!("{image}: the {} image holds {} disks; fshost reads images of one", table.format, many.len()),
    };
    let entry = Opened {
        path: device.path().to_owned(),
        format: table.format.clone(),
        length: volume.length,
        backing: None,
        snapshots: table.snapshots.iter().map(|s| s.name.clone()).collect(),
    };
    let index = {
        let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
        opened.push(entry);
        opened.len() - 1
    };
    let inherit = match &table.backing {
        None => None,
        Some(name) => {
            let Some(path) = backing.next() else {
                bail!(
                    "{image} is based on the backing file \"{}\", which fshost does not open on the image's word: \
                     pass it with --backing FILE",
                    name.escape_ascii()
                );
            };
            tracing::info!("{image}: backing file \"{}\" is {}", name.escape_ascii(), path.display());
            if let Some(o) = OPENED.lock().unwrap_or_else(|p| p.into_inner()).get_mut(index) {
                o.backing = Some((name.clone(), path.clone()));
            }
            let parent = Arc::new(Device::open(path, true)?);
            Some(open_layer(parent, None, backing, limits, cache)?)
        }
    };
    match volume.layout {
        Layout::Linear { start } => {
            // Checked against the input by plugin::volume::convert.
            let window = device
                .window(start, volume.length, table.sector_size)
                .with_context(|| format!("{image}: the disk's {} bytes at {start} do not fit", volume.length))?;
            Ok(Arc::new(window))
        }
        Layout::Mapped => {
            let layer = Mapped {
                number: volume.number,
                length: volume.length,
                input: device.clone(),
                inherit,
                guest,
                cache: Mutex::new(Cache::default()),
            };
            Ok(Arc::new(device.layered(Arc::new(layer), volume.length, table.sector_size)))
        }
    }
}

/// The guest that reads `device`'s format, or `None` for a raw source.
fn pick(
    device: &Arc<Device>,
    format: Option<&OsStr>,
    limits: &Limits,
    cache: Option<&CompileCache>,
) -> anyhow::Result<Option<VolumeGuest>> {
    let image = device.path().display();
    let search = SearchPath::from_env();
    let load = |path: &std::path::Path| -> anyhow::Result<VolumeGuest> {
        let (guest, stats) = VolumeGuest::load(path, device.clone(), limits.clone(), cache)?;
        tracing::debug!(
            "image guest {} {} in {:.1} ms",
            path.display(),
            if stats.compiled { "compiled" } else { "loaded from cache" },
            stats.millis
        );
        Ok(guest)
    };
    match format {
        Some(f) if f == "raw" => Ok(None),
        Some(f) => {
            let path = search.resolve(f)?;
            let guest = load(&path)?;
            match guest.probe().with_context(|| format!("probing {image} with {}", path.display()))? {
                Some(_) => Ok(Some(guest)),
                None => bail!("{image} is not a {} image (its guest's probe says no)", f.to_string_lossy()),
            }
        }
        None => {
            let mut found = Vec::new();
            for name in IMAGE_GUESTS {
                let Ok(path) = search.resolve(OsStr::new(name)) else { continue };
                // A guest that cannot say costs its own answer, not the
                // command: the source may well be a raw filesystem.
                let answer = load(&path).and_then(|g| Ok((g.probe()?, g)));
                match answer {
                    Ok((Some(fmt), guest)) => found.push((fmt, guest)),
                    Ok((None, _)) => {}
                    Err(e) => tracing::warn!("image guest {} could not probe {image}: {e:#}", path.display()),
                }
            }
            if found.len() > 1 {
                let names: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
                bail!(
                    "{image} is claimed by several image formats ({}): choose one with --image-format",
                    names.join(", ")
                );
            }
            Ok(found.pop().map(|(fmt, guest)| {
                tracing::info!("{image}: {fmt} image");
                guest
            }))
        }
    }
}

/// Log what the image says of itself.
fn describe(table: &VolumeTable, image: &str) {
    if !table.snapshots.is_empty() {
        let names: Vec<String> = table.snapshots.iter().map(|s| format!("\"{}\"", s.name.escape_ascii())).collect();
        tracing::info!(
            "{image}: {} internal snapshots ({}); reading the active image",
            table.snapshots.len(),
            names.join(", ")
        );
    }
}

/// Extents of one volume already answered, by their start.
#[derive(Default)]
struct Cache {
    extents: BTreeMap<u64, Extent>,
    data: usize,
}

impl Cache {
    fn find(&self, offset: u64) -> Option<Extent> {
        let (_, e) = self.extents.range(..=offset).next_back()?;
        (offset < e.offset + e.length).then(|| e.clone())
    }

    fn insert(&mut self, extents: &[Extent]) {
        let data: usize = extents.iter().map(|e| if let ExtentKind::Data(d) = &e.kind { d.len() } else { 0 }).sum();
        if self.extents.len() + extents.len() > CACHE_EXTENTS || self.data + data > CACHE_DATA {
            self.extents.clear();
            self.data = 0;
        }
        for e in extents {
            if let Some(old) = self.extents.insert(e.offset, e.clone())
                && let ExtentKind::Data(d) = old.kind
            {
                self.data -= d.len();
            }
            if let ExtentKind::Data(d) = &e.kind {
                self.data += d.len();
            }
        }
    }
}

/// A `mapped` volume of a guest, read through its validated extents.
struct Mapped {
    guest: VolumeGuest,
    number: u32,
    length: u64,
    /// The guest's input (the image file, or a layer below).
    input: Arc<Device>,
    /// What `inherited` extents read: the backing file the user gave.
    inherit: Option<Arc<Device>>,
    cache: Mutex<Cache>,
}

impl fmt::Debug for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapped")
            .field("input", &self.input.path())
            .field("number", &self.number)
            .field("length", &self.length)
            .field("inherit", &self.inherit.as_ref().map(|d| d.path().to_owned()))
            .finish_non_exhaustive()
    }
}

impl Mapped {
    /// The extent holding `offset`, from the cache or the guest.
    fn extent(&self, offset: u64, want: u64) -> Result<Extent, FsError> {
        if let Some(e) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).find(offset) {
            return Ok(e);
        }
        let ask = want.max(MAP_AHEAD).min(self.length - offset);
        let extents = self.guest.map(self.number, offset, ask)?;
        // Validated: non-empty, the first holding `offset`.
        let first = extents.first().cloned().ok_or_else(|| FsError::Failed("an empty map answer".into()))?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(&extents);
        Ok(first)
    }
}

impl Layer for Mapped {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let left = (buf.len() - done) as u64;
            let e = self.extent(at, left)?;
            let within = at - e.offset;
            let n = (e.length - within).min(left) as usize;
            let dst = &mut buf[done..done + n];
            match &e.kind {
                ExtentKind::Backing(start) => self.input.read_exact_at(start + within, dst)?,
                ExtentKind::Zeros => dst.fill(0),
                ExtentKind::Inherited => match &self.inherit {
                    // A backing file shorter than the disk reads as zeros
                    // past its end, as QEMU reads it.
                    Some(parent) => {
                        let have = parent.size().saturating_sub(at).min(n as u64) as usize;
                        parent.read_exact_at(at, &mut dst[..have])?;
                        dst[have..].fill(0);
                    }
                    None => dst.fill(0),
                },
                ExtentKind::Data(bytes) => {
                    // Validated: as long as the extent.
                    let src = bytes.get(within as usize..within as usize + n);
                    dst.copy_from_slice(src.ok_or_else(|| FsError::Failed("a short data extent".into()))?);
                }
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(offset: u64, length: u64, kind: ExtentKind) -> Extent {
        Extent { offset, length, kind }
    }

    #[test]
    fn the_cache_finds_the_extent_holding_an_offset_and_bounds_its_data() {
        let mut cache = Cache::default();
        let data: Arc<[u8]> = Arc::from(vec![7u8; 4096]);
        cache.insert(&[
            extent(0, 65536, ExtentKind::Backing(1 << 20)),
            extent(65536, 4096, ExtentKind::Data(data.clone())),
            extent(69632, 512, ExtentKind::Zeros),
        ]);
        assert_eq!(cache.find(0).map(|e| e.offset), Some(0));
        assert_eq!(cache.find(65535).map(|e| e.offset), Some(0));
        assert_eq!(cache.find(65536).map(|e| e.kind), Some(ExtentKind::Data(data.clone())));
        assert_eq!(cache.find(70143).map(|e| e.offset), Some(69632));
        assert!(cache.find(70144).is_none(), "past the last extent");
        assert_eq!(cache.data, 4096);
        // The same extent again replaces, and counts, its bytes once.
        cache.insert(&[extent(65536, 4096, ExtentKind::Data(data))]);
        assert_eq!(cache.data, 4096);
        // Past the byte budget the cache starts again.
        let big: Arc<[u8]> = Arc::from(vec![0u8; CACHE_DATA]);
        cache.insert(&[extent(1 << 30, CACHE_DATA as u64, ExtentKind::Data(big))]);
        assert!(cache.find(0).is_none());
        assert_eq!(cache.data, CACHE_DATA);
    }
}
