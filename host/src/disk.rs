//! A whole disk given without `--partition`: when no filesystem guest
//! mounts the source itself, its partition table (read by the volume
//! guest, as for `--partition`) is looked at, and each partition's
//! filesystem is found the way detection finds one (or with the guest
//! `--plugin` names).
//!
//! What comes of it: `fshost ls DISK` and `fshost info DISK` list the
//! partitions with what mounts each; `mount`, `cat`, `stat`, `cp-out` and
//! `ls DISK PATH` use the disk's one mountable partition, and refuse, with
//! the list, a disk with several or none. Nothing is chosen by guessing:
//! a partition that two guests claim is shown with both and is not "the
//! one" (the same rule as detection's).
//!
//! Every byte of the table and of each filesystem is parsed by sandboxed
//! guests (`partitions`, `detect`); this module only keeps their answers.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::bail;

use crate::detect::{Claims, Detected};
use crate::device::Device;
use crate::error::{FsError, GuestCode};
use crate::offline::json::put_bytes;
use crate::plugin::volume::{Layout, VolumeInfo, VolumeTable};
use crate::plugin::{CompileCache, GuestOptions, Limits, Plugin, capture_warnings};
use crate::types::FsInfo;

/// The most partitions whose filesystems are looked for: each costs a
/// mount attempt per installed guest (each up to its call timeout on a
/// crafted disk), and a table may list 256. Past it, partitions are
/// listed as not looked into, and no partition is "the one".
const MAX_PROBED: usize = 64;

/// One partition and what was found on it.
pub struct Part {
    pub volume: VolumeInfo,
    /// The partition as a device; `None` for an extended partition or a
    /// volume that cannot be read as one (`skipped` says why).
    device: Option<Arc<Device>>,
    claims: Claims,
    skipped: Option<String>,
}

impl Part {
    /// The names of the guests that mount it.
    pub fn filesystems(&self) -> Vec<String> {
        self.claims.names()
    }
}

/// A partitioned disk and its partitions' filesystems.
pub struct Disk {
    /// The source as the user named it.
    pub path: String,
    pub table: VolumeTable,
    pub parts: Vec<Part>,
}

/// How to look for filesystems on each partition.
pub struct Probe<'a> {
    /// The guest `--plugin` named (its path), or `None` to detect.
    pub named: Option<&'a Path>,
    /// The volume guest (`--volume`), or the default one.
    pub volume: Option<&'a OsStr>,
    pub limits: &'a Limits,
    /// The guest's options (`-o`).
    pub options: &'a [(String, String)],
    pub cache: Option<&'a CompileCache>,
}

/// `device`'s partition table with each partition's filesystems, or
/// `None` when it holds no table the volume guest reads (or no volume
/// guest is installed): then the source is not a partitioned disk and the
/// caller's own error about it stands.
pub fn probe(device: &Arc<Device>, how: &Probe) -> anyhow::Result<Option<Disk>> {
    let disk = device.path().display().to_string();
    let Ok(guest) = crate::partitions::load(how.volume, device.clone(), how.limits.clone(), how.cache) else {
        tracing::debug!("{disk}: no volume guest to look for a partition table with");
        return Ok(None);
    };
    let table = match guest.volumes() {
        Ok(t) => t,
        Err(FsError::Guest { code: GuestCode::NotFound, .. }) => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading the partition table of {disk}"))),
    };
    // A table without one partition is no partitioned disk: a FAT or NTFS
    // boot sector carries the MBR's 0x55AA signature and an empty table,
    // and the filesystem guest's own refusal of it is what the user needs.
    if table.volumes.is_empty() {
        tracing::debug!("{disk}: an empty {} table", table.format);
        return Ok(None);
    }
    tracing::info!(
        "{disk}: no filesystem on the whole disk; a {} table of {} volumes",
        table.format,
        table.volumes.len()
    );
    let mut parts = Vec::new();
    for (i, v) in table.volumes.iter().enumerate() {
        let mut part = Part {
            volume: v.clone(),
            device: None,
            claims: Claims { mounted: Vec::new(), refusals: Vec::new() },
            skipped: None,
        };
        if i >= MAX_PROBED {
            part.skipped = Some(format!("not looked into (fshost looks into the first {MAX_PROBED} partitions)"));
        } else if v.flags.container {
            part.skipped = Some("an extended partition (it holds the logical ones)".into());
        } else if !matches!(v.layout, Layout::Linear { .. }) {
            part.skipped = Some("a mapped volume".into());
        } else {
            match crate::partitions::window(&guest, &table, v) {
                Ok(window) => {
                    part.claims = claims(&window, how)?;
                    part.device = Some(window);
                }
                Err(e) => part.skipped = Some(format!("{e:#}")),
            }
        }
        parts.push(part);
    }
    Ok(Some(Disk { path: disk, table, parts }))
}

/// The guests that mount `window`: the named one, or each installed one.
fn claims(window: &Arc<Device>, how: &Probe) -> anyhow::Result<Claims> {
    let Some(path) = how.named else {
        return crate::detect::claims(window, how.limits, how.options, how.cache);
    };
    let opts = GuestOptions { read_only: true, options: how.options.to_vec() };
    let (answer, complaints) = capture_warnings(|| {
        Plugin::load(path, window.clone(), how.limits.clone(), opts, how.cache)
            .and_then(|(plugin, _)| Ok(plugin.mount().map(|_| plugin)?))
    });
    let name = path.file_stem().unwrap_or(path.as_os_str()).to_owned();
    Ok(match answer {
        Ok(plugin) => {
            Claims { mounted: vec![(Detected { name, path: path.to_owned() }, plugin)], refusals: Vec::new() }
        }
        Err(e) => {
            let why = complaints.last().cloned().unwrap_or_else(|| format!("{e:#}"));
            let line = format!("{}: {}", name.to_string_lossy(), why.lines().next().unwrap_or(""));
            Claims { mounted: Vec::new(), refusals: vec![line] }
        }
    })
}

/// The partition a command without `--partition` uses.
pub struct Chosen {
    pub number: u32,
    pub detected: Detected,
    /// Mounted read-only.
    pub plugin: Plugin,
    pub device: Arc<Device>,
}

impl Disk {
    /// What each partition holds, one line each, for an error message.
    fn roll_call(&self) -> String {
        let lines: Vec<String> = self
            .parts
            .iter()
            .map(|p| {
                let mut line = format!("  {}", p.volume.number);
                if !p.volume.name.is_empty() {
                    line.push_str(&format!(" \"{}\"", p.volume.name.escape_ascii()));
                }
                let found = p.filesystems();
                match (&p.skipped, found.as_slice()) {
                    (Some(why), _) => line.push_str(&format!(": {why}")),
                    (None, []) => line.push_str(&format!(": no filesystem ({})", p.claims.refusals.join("; "))),
                    (None, names) => line.push_str(&format!(": {}", names.join(" and "))),
                }
                line
            })
            .collect();
        if lines.is_empty() { "  (no partitions)".into() } else { lines.join("\n") }
    }

    /// The one partition some guest mounts, and which one; a disk with
    /// none, or several (or a partition two guests claim), is refused with
    /// the list of what each partition holds.
    pub fn into_only(self) -> anyhow::Result<Chosen> {
        let path = self.path.clone();
        if self.parts.len() > MAX_PROBED {
            bail!(
                "{path} holds {} partitions, more than fshost looks into without being told: choose one with \
                 --partition N (or name=NAME, uuid=UUID)",
                self.parts.len()
            );
        }
        match self.parts.iter().filter(|p| !p.claims.mounted.is_empty()).count() {
            0 => bail!(
                "{path}: no partition of its {} table holds a filesystem fshost can read:\n{}",
                self.table.format,
                self.roll_call()
            ),
            1 => {}
            _ => bail!(
                "{path} holds several filesystems; choose one with --partition N (or name=NAME, uuid=UUID):\n{}",
                self.roll_call()
            ),
        }
        let found = self.parts.into_iter().find(|p| !p.claims.mounted.is_empty());
        let Some(Part { volume, device: Some(device), mut claims, .. }) = found else {
            bail!("{path}: the partition with a filesystem has no device");
        };
        if claims.mounted.len() > 1 {
            bail!(
                "{path}: partition {} is mounted by several filesystem guests ({}); fshost does not guess: \
                 choose one with --plugin NAME",
                volume.number,
                claims.names().join(", ")
            );
        }
        let (detected, plugin) = claims.mounted.remove(0);
        tracing::info!(
            "{path}: using partition {} ({}), the disk's one filesystem",
            volume.number,
            detected.name.to_string_lossy()
        );
        Ok(Chosen { number: volume.number, detected, plugin, device })
    }

    /// `fshost ls DISK`: one line per partition, tab-separated: number,
    /// type, length in bytes, the guests that mount it (`-` for none,
    /// comma-separated when several claim it), name; or with `json` one
    /// object per partition (`fshost partitions --json`'s keys and
    /// `filesystems`, a list of guest names).
    pub fn list(&self, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
        for p in &self.parts {
            let found = p.filesystems();
            if json {
                let mut obj = crate::partitions::json(&self.table, &p.volume);
                obj.insert("filesystems".into(), found.into());
                serde_json::to_writer(&mut *out, &obj)?;
                out.write_all(b"\n")?;
                continue;
            }
            let fs = if found.is_empty() { "-".to_string() } else { found.join(",") };
            write!(
                out,
                "{}\t{}\t{}\t{fs}\t",
                p.volume.number,
                crate::partitions::type_name(p.volume.kind),
                p.volume.length
            )?;
            out.write_all(&p.volume.name)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// What the one guest that mounts partition `p` reports of it.
    fn statfs(p: &Part) -> anyhow::Result<Option<(&Detected, FsInfo)>> {
        match p.claims.mounted.as_slice() {
            [(d, plugin)] => {
                let i = plugin.statfs().map_err(|e| anyhow::anyhow!("statfs of partition {}: {e}", p.volume.number))?;
                Ok(Some((d, i)))
            }
            _ => Ok(None),
        }
    }

    /// `fshost info --json DISK`: `table` (format, sector_size, disk_id)
    /// and `partitions`, each `fshost partitions --json`'s keys with
    /// `filesystems` (the guests that mount it) and `filesystem`: `null`,
    /// or when one guest mounts it, `info --json`'s object for it with
    /// `guest` naming the guest.
    pub fn info_json(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let mut partitions = Vec::new();
        for p in &self.parts {
            let mut obj = crate::partitions::json(&self.table, &p.volume);
            obj.insert("filesystems".into(), p.filesystems().into());
            let fs = match Self::statfs(p)? {
                Some((d, i)) => {
                    let mut fs = crate::offline::json::info(&i, crate::offline::format_uuid(&i.uuid));
                    if let Some(m) = fs.as_object_mut() {
                        put_bytes(m, "guest", d.name.as_encoded_bytes());
                    }
                    fs
                }
                None => serde_json::Value::Null,
            };
            obj.insert("filesystem".into(), fs);
            partitions.push(serde_json::Value::Object(obj));
        }
        let mut out = serde_json::Map::new();
        let id = crate::partitions::disk_id(&self.table.disk_id);
        out.insert(
            "table".into(),
            serde_json::json!({"format": self.table.format, "sector_size": self.table.sector_size, "disk_id": id}),
        );
        out.insert("partitions".into(), partitions.into());
        Ok(out)
    }

    /// `fshost info DISK`: a `table:` line, then a `partition N:` line per
    /// partition (start, length, type, uuid, name) ending in what is on it:
    /// `TYPE (guest NAME), label "L", uuid U`, `no filesystem`, `claimed
    /// by A and B`, or why it was not looked at.
    pub fn info_text(&self, out: &mut impl Write) -> anyhow::Result<()> {
        let id = crate::partitions::disk_id(&self.table.disk_id);
        writeln!(out, "table: {}, {}-byte sectors, disk id {id}", self.table.format, self.table.sector_size)?;
        for p in &self.parts {
            let v = &p.volume;
            let start = match v.layout {
                Layout::Linear { start } => start.to_string(),
                Layout::Mapped => "mapped".into(),
            };
            write!(
                out,
                "partition {}: start {start}, length {}, type {}, uuid {}, name \"",
                v.number,
                v.length,
                crate::partitions::type_name(v.kind),
                crate::partitions::part_uuid(&self.table, v).unwrap_or_else(|| "-".into())
            )?;
            out.write_all(&v.name)?;
            out.write_all(b"\": ")?;
            match (&p.skipped, Self::statfs(p)?) {
                (Some(why), _) => out.write_all(why.as_bytes())?,
                (None, Some((d, i))) => {
                    write!(out, "{} (guest {}), label \"", i.fs_type, d.name.to_string_lossy())?;
                    out.write_all(&i.label)?;
                    write!(out, "\", uuid {}", crate::offline::format_uuid(&i.uuid))?;
                }
                (None, None) if p.claims.mounted.is_empty() => out.write_all(b"no filesystem")?,
                (None, None) => write!(out, "claimed by {}", p.filesystems().join(" and "))?,
            }
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}
