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

/// Which partition `--partition` names: its number (as Linux numbers
/// them), its GPT name (`name=NAME`, the bytes as stored) or its unique
/// GUID (`uuid=UUID`: a GPT partition GUID, or for an MBR disk blkid's
/// PARTUUID `SSSSSSSS-NN`, the disk signature and the number in hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Number(u32),
    Name(Vec<u8>),
    /// Lower case, as parsed.
    Uuid(String),
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("name=") {
            if name.is_empty() {
                return Err("name= needs the partition's GPT name".into());
            }
            return Ok(Selector::Name(name.as_bytes().to_vec()));
        }
        if let Some(uuid) = s.strip_prefix("uuid=").or_else(|| s.strip_prefix("partuuid=")) {
            let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
            let hex = uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
            if !hex || (groups != [8, 4, 4, 4, 12] && groups != [8, 2]) {
                return Err(format!(
                    "{uuid:?} is not a partition UUID (a GPT GUID 8-4-4-4-12, or an MBR disk's SSSSSSSS-NN)"
                ));
            }
            return Ok(Selector::Uuid(uuid.to_ascii_lowercase()));
        }
        s.parse().map(Selector::Number).map_err(|_| format!("{s:?} is not a partition number, name=NAME or uuid=UUID"))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Number(n) => write!(f, "{n}"),
            Selector::Name(n) => write!(f, "name={}", n.escape_ascii()),
            Selector::Uuid(u) => write!(f, "uuid={u}"),
        }
    }
}

/// A partition's unique id as `uuid=` matches it (in any case): the GPT
/// GUID, or an MBR partition's PARTUUID (`SSSSSSSS-NN`, as blkid and
/// `sfdisk --part-uuid` print it).
pub fn part_uuid(table: &VolumeTable, v: &VolumeInfo) -> Option<String> {
    match (v.uuid, v.kind, <[u8; 4]>::try_from(table.disk_id.as_slice())) {
        (Some(g), _, _) => Some(g.to_string()),
        (None, VolumeType::Mbr(_), Ok(sig)) => Some(format!("{:08x}-{:02x}", u32::from_le_bytes(sig), v.number)),
        _ => None,
    }
}

/// One line per partition for an error message: number, name, unique id.
fn roll_call<'a>(table: &VolumeTable, volumes: impl IntoIterator<Item = &'a VolumeInfo>) -> String {
    let lines: Vec<String> = volumes
        .into_iter()
        .map(|v| {
            let mut line = format!("  {}", v.number);
            if !v.name.is_empty() {
                line.push_str(&format!(" name=\"{}\"", v.name.escape_ascii()));
            }
            if let Some(u) = part_uuid(table, v) {
                line.push_str(&format!(" uuid={u}"));
            }
            line
        })
        .collect();
    if lines.is_empty() { "  (none)".into() } else { lines.join("\n") }
}

/// The partition `which` names in `table`: exactly one, or an error
/// listing the table (a name or UUID that two partitions share is refused,
/// never resolved to the first).
pub fn select<'a>(table: &'a VolumeTable, which: &Selector, disk: &str) -> anyhow::Result<&'a VolumeInfo> {
    let found: Vec<&VolumeInfo> = table
        .volumes
        .iter()
        .filter(|v| match which {
            Selector::Number(n) => v.number == *n,
            Selector::Name(n) => v.name == *n,
            Selector::Uuid(u) => part_uuid(table, v).is_some_and(|p| p.eq_ignore_ascii_case(u)),
        })
        .collect();
    match found.as_slice() {
        [v] => Ok(v),
        [] => bail!(
            "{disk} has no partition {which}; its {} table holds:\n{}",
            table.format,
            roll_call(table, &table.volumes)
        ),
        many => bail!(
            "{disk}: {} partitions match {which}; choose one by number (--partition N):\n{}",
            many.len(),
            roll_call(table, many.iter().copied())
        ),
    }
}

/// Partition `which` of `guest`'s table as a device of its own.
pub fn open(guest: &VolumeGuest, which: &Selector) -> anyhow::Result<Arc<Device>> {
    let table = table(guest)?;
    let disk = guest.device().path().display().to_string();
    let v = select(&table, which, &disk)?;
    if which != &Selector::Number(v.number) {
        tracing::info!("partition {which} of {disk} is partition {}", v.number);
    }
    window(guest, &table, v)
}

/// Volume `v` of `guest`'s `table` as a device of its own: a window on
/// the guest's input, after checking that the guest's map agrees.
pub fn window(guest: &VolumeGuest, table: &VolumeTable, v: &VolumeInfo) -> anyhow::Result<Arc<Device>> {
    let disk = guest.device().path().display();
    let number = v.number;
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

pub(crate) fn type_name(t: VolumeType) -> String {
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
pub(crate) fn disk_id(bytes: &[u8]) -> String {
    if let Ok(guid) = <[u8; 16]>::try_from(bytes) {
        return crate::plugin::volume::Guid(guid).to_string();
    }
    if let Ok(sig) = <[u8; 4]>::try_from(bytes) {
        return format!("{:08x}", u32::from_le_bytes(sig));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn start(v: &VolumeInfo) -> Option<u64> {
    match v.layout {
        Layout::Linear { start } => Some(start),
        Layout::Mapped => None,
    }
}

/// One volume as `fshost partitions --json` prints it (README, "JSON output").
pub fn json(table: &VolumeTable, v: &VolumeInfo) -> serde_json::Map<String, serde_json::Value> {
    let mut obj = serde_json::Map::new();
    obj.insert("number".into(), v.number.into());
    obj.insert("table".into(), table.format.clone().into());
    obj.insert("sector_size".into(), table.sector_size.into());
    obj.insert("start".into(), start(v).into());
    obj.insert("length".into(), v.length.into());
    obj.insert("type".into(), type_name(v.kind).into());
    obj.insert("uuid".into(), v.uuid.map(|g| g.to_string()).into());
    put_bytes(&mut obj, "name", &v.name);
    obj.insert("flags".into(), flag_names(v).into());
    obj.insert("attributes".into(), v.attributes.into());
    obj.insert("disk_id".into(), disk_id(&table.disk_id).into());
    obj
}

/// `fshost partitions`: a header line naming the table, then one
/// tab-separated line per volume (number, start and length in bytes, type,
/// flags, unique GUID, name); or with `json`, one JSON object per volume.
pub fn list(table: &VolumeTable, disk: &Path, as_json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if !as_json {
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
        let start = start(v);
        let uuid = v.uuid.map(|g| g.to_string());
        if as_json {
            serde_json::to_writer(&mut *out, &json(table, v))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::volume::{Guid, VolumeFlags};

    fn volume(number: u32, name: &str, uuid: Option<Guid>, kind: VolumeType) -> VolumeInfo {
        VolumeInfo {
            number,
            layout: Layout::Linear { start: u64::from(number) << 20 },
            length: 1 << 20,
            kind,
            uuid,
            name: name.as_bytes().to_vec(),
            flags: VolumeFlags::default(),
            attributes: 0,
        }
    }

    fn table(format: &str, disk_id: Vec<u8>, volumes: Vec<VolumeInfo>) -> VolumeTable {
        VolumeTable { format: format.into(), sector_size: 512, disk_id, volumes, backing: None, snapshots: Vec::new() }
    }

    #[test]
    fn selectors_parse_numbers_names_and_uuids_and_refuse_the_rest() {
        assert_eq!("3".parse(), Ok(Selector::Number(3)));
        assert_eq!("name=ROOT".parse(), Ok(Selector::Name(b"ROOT".to_vec())));
        assert_eq!("name=a=b".parse(), Ok(Selector::Name(b"a=b".to_vec())));
        let u = "uuid=0FC63DAF-8483-4772-8E79-3D69D8477DE4".parse::<Selector>();
        assert_eq!(u, Ok(Selector::Uuid("0fc63daf-8483-4772-8e79-3d69d8477de4".into())));
        assert_eq!("uuid=1234abcd-02".parse(), Ok(Selector::Uuid("1234abcd-02".into())));
        for bad in
            ["", "-1", "x", "name=", "uuid=", "uuid=0fc63daf", "uuid=zzzzzzzz-02", "uuid=0fc63daf-8483-4772-8e79"]
        {
            assert!(bad.parse::<Selector>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn select_finds_exactly_one_and_lists_the_table_otherwise() {
        let g = |b: u8| Some(Guid([b; 16]));
        let t = table(
            "gpt",
            vec![9; 16],
            vec![
                volume(1, "ROOT", g(1), VolumeType::None),
                volume(2, "data", g(2), VolumeType::None),
                volume(3, "data", g(3), VolumeType::None),
            ],
        );
        let by = |s: &str| select(&t, &s.parse().unwrap(), "d.img").map(|v| v.number);
        assert_eq!(by("1").unwrap(), 1);
        assert_eq!(by("name=ROOT").unwrap(), 1);
        assert_eq!(by(&format!("uuid={}", Guid([3; 16]))).unwrap(), 3);
        let twice = format!("{:#}", by("name=data").unwrap_err());
        assert!(twice.contains("2 partitions match name=data") && twice.contains("\n  2 name=\"data\""), "{twice}");
        assert!(twice.contains("\n  3 name=\"data\"") && !twice.contains("\n  1 "), "{twice}");
        let none = format!("{:#}", by("name=root").unwrap_err());
        assert!(
            none.contains("no partition name=root") && none.contains("\n  1 name=\"ROOT\" uuid=01010101-0101-"),
            "{none}"
        );
        assert!(by("4").is_err());
        // An MBR partition's uuid is the disk signature and its number.
        let m = table("mbr", 0x1234_abcdu32.to_le_bytes().to_vec(), vec![volume(5, "", None, VolumeType::Mbr(0x83))]);
        let v = select(&m, &"uuid=1234ABCD-05".parse().unwrap(), "m.img").unwrap();
        assert_eq!(v.number, 5);
        assert_eq!(part_uuid(&m, v).as_deref(), Some("1234abcd-05"));
    }
}
