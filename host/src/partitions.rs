//! Whole-disk images: a volume guest (the `partitions` guest by default)
//! reads the partition table, and one partition becomes the device a
//! filesystem guest sees (`--partition N`), or the table is listed
//! (`fshost partitions`).
//!
//! The table is parsed by the sandboxed wasm guest, never here; this module
//! only picks from its validated answer (`plugin::volume`) and makes the
//! [`Device::window`].

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::device::Device;
use crate::error::{FsError, GuestCode};
use crate::offline::json::put_bytes;
use crate::plugin::search::SearchPath;
use crate::plugin::volume::{Layout, VolumeGuest, VolumeInfo, VolumeTable, VolumeType};
use crate::plugin::{CompileCache, Limits};

/// The volume guest `--partition` uses unless `--volume` names another.
pub const DEFAULT_GUEST: &str = "partitions";

/// Load the volume guest `name` (a name on the plugin search path, or a
/// path) for `device`.
pub fn load(
    name: Option<&OsStr>,
    device: Arc<Device>,
    limits: Limits,
    cache: Option<&CompileCache>,
) -> anyhow::Result<VolumeGuest> {
    let path = SearchPath::from_env().resolve(name.unwrap_or(OsStr::new(DEFAULT_GUEST)))?;
    let (guest, stats) = VolumeGuest::load(&path, device, limits, cache)?;
    tracing::info!(
        "volume guest {} {} in {:.1} ms",
        path.display(),
        if stats.compiled { "compiled" } else { "loaded from cache" },
        stats.millis
    );
    Ok(guest)
}

/// The table, read by `guest`, with the time it took logged.
pub fn table(guest: &VolumeGuest) -> anyhow::Result<VolumeTable> {
    let started = Instant::now();
    let disk = guest.device().path().display();
    let table = match guest.volumes() {
        Ok(t) => t,
        Err(FsError::Guest { code: GuestCode::NotFound, .. }) => {
            bail!("{disk}: no partition table that the volume guest reads (-v says why)")
        }
        Err(e) => return Err(e).with_context(|| format!("reading the partition table of {disk}")),
    };
    tracing::info!(
        "{} table: {} volumes in {:.2} ms",
        table.format,
        table.volumes.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(table)
}

/// Partition `number` of `guest`'s table as a device of its own.
pub fn open(guest: &VolumeGuest, number: u32) -> anyhow::Result<Arc<Device>> {
    let table = table(guest)?;
    let disk = guest.device().path().display();
    let Some(v) = table.volumes.iter().find(|v| v.number == number) else {
        let numbers: Vec<String> = table.volumes.iter().map(|v| v.number.to_string()).collect();
        bail!(
            "{disk} has no partition {number} (its {} table holds {})",
            table.format,
            if numbers.is_empty() { "none".to_string() } else { numbers.join(", ") }
        );
    };
    if v.flags.container {
        bail!("partition {number} of {disk} is an extended partition: it holds partitions 5 and up, not a filesystem");
    }
    let Layout::Linear { start } = v.layout else {
        bail!("volume {number} of {disk} is mapped through its guest; this fshost reads linear volumes only");
    };
    // The guest's answer was checked against this device; a window that
    // still does not fit is a host bug, said as such.
    let window = guest
        .device()
        .window(start, v.length, table.sector_size)
        .with_context(|| format!("partition {number} of {disk}: {} bytes at {start} do not fit", v.length))?;
    // Ask the guest's map too: a guest whose map disagrees with its own
    // table is refused rather than half-trusted.
    let extents = guest.map(number, 0, v.length).context("mapping the partition")?;
    let agrees = matches!(extents.as_slice(), [e] if e.offset == 0 && e.length == v.length
        && e.kind == crate::plugin::volume::ExtentKind::Backing(start));
    if !agrees {
        bail!("partition {number} of {disk}: the volume guest's map disagrees with its table ({extents:?})");
    }
    tracing::info!("partition {number} of {disk}: {} bytes at byte {start}", v.length);
    Ok(Arc::new(window))
}

fn type_name(t: VolumeType) -> String {
    match t {
        VolumeType::None => "-".into(),
        VolumeType::Mbr(b) => format!("{b:#04x}"),
        VolumeType::Gpt(g) => g.to_string(),
    }
}

fn flag_names(v: &VolumeInfo) -> Vec<&'static str> {
    let f = v.flags;
    [
        (f.bootable, "bootable"),
        (f.required, "required"),
        (f.read_only, "read-only"),
        (f.hidden, "hidden"),
        (f.no_automount, "no-automount"),
        (f.container, "container"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// A disk id as blkid prints PTUUID: a GPT disk GUID in its usual form,
/// an MBR signature as its 32-bit number in hex, anything else as bytes.
fn disk_id(bytes: &[u8]) -> String {
    if let Ok(guid) = <[u8; 16]>::try_from(bytes) {
        return crate::plugin::volume::Guid(guid).to_string();
    }
    if let Ok(sig) = <[u8; 4]>::try_from(bytes) {
        return format!("{:08x}", u32::from_le_bytes(sig));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `fshost partitions`: a header line naming the table, then one
/// tab-separated line per volume (number, start and length in bytes, type,
/// flags, unique GUID, name); or with `json`, one JSON object per volume.
pub fn list(table: &VolumeTable, disk: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if !json {
        writeln!(
            out,
            "{}: {} table, {}-byte sectors, disk id {}",
            disk.display(),
            table.format,
            table.sector_size,
            if table.disk_id.is_empty() { "-".to_string() } else { disk_id(&table.disk_id) }
        )?;
    }
    for v in &table.volumes {
        let start = match v.layout {
            Layout::Linear { start } => Some(start),
            Layout::Mapped => None,
        };
        let uuid = v.uuid.map(|g| g.to_string());
        if json {
            let mut obj = serde_json::Map::new();
            obj.insert("number".into(), v.number.into());
            obj.insert("table".into(), table.format.clone().into());
            obj.insert("sector_size".into(), table.sector_size.into());
            obj.insert("start".into(), start.into());
            obj.insert("length".into(), v.length.into());
            obj.insert("type".into(), type_name(v.kind).into());
            obj.insert("uuid".into(), uuid.into());
            put_bytes(&mut obj, "name", &v.name);
            obj.insert("flags".into(), flag_names(v).into());
            obj.insert("attributes".into(), v.attributes.into());
            obj.insert("disk_id".into(), disk_id(&table.disk_id).into());
            serde_json::to_writer(&mut *out, &obj)?;
            out.write_all(b"\n")?;
            continue;
        }
        let flags = flag_names(v);
        write!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t",
            v.number,
            start.map_or("mapped".to_string(), |s| s.to_string()),
            v.length,
            type_name(v.kind),
            if flags.is_empty() { "-".to_string() } else { flags.join(",") },
            uuid.as_deref().unwrap_or("-"),
        )?;
        out.write_all(&v.name)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
