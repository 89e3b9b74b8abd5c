//! Offline commands: read an image through a guest without FUSE, for
//! scripts, containers and tests (`ls`, `stat`, `cat`, `cp-out`, `info`).
//!
//! Output is bytes: names and symlink targets are written as stored.

use std::io::Write;

use anyhow::bail;

use crate::error::FsError;
use crate::types::{Attr, FileKind, Ino};
use crate::volume::Volume;

mod extract;
pub mod json;
mod time;
pub use extract::{Extracted, cp_out};
pub use time::TimeStyle;

/// An [`FsError`] as the OS error a user recognises, with what failed:
/// `/a/b: No such file or directory (os error 2)`. A guest's own answer
/// is fully said by its errno; the host's reasons (a trap, an invalid
/// result, a device error) are added in words.
fn os(e: FsError, what: impl std::fmt::Display) -> anyhow::Error {
    let io = std::io::Error::from_raw_os_error(e.errno());
    match e {
        FsError::Guest { op, code } => {
            tracing::debug!("{what}: {op}: {code}");
            anyhow::Error::new(io).context(what.to_string())
        }
        e => anyhow::Error::new(io).context(format!("{what}: {e}")),
    }
}

/// Most symlinks followed while resolving one path (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// Resolve `path` (bytes, '/'-separated, from the root; symlinks inside the
/// image resolve inside the image) to attributes. Symlinks in the middle of
/// the path are followed; the last component is followed only if `follow`.
pub fn resolve(vol: &Volume, path: &[u8], follow: bool) -> anyhow::Result<Attr> {
    let mut stack: Vec<Ino> = vec![vol.root()];
    // Components still to walk, last first.
    let mut todo: Vec<Vec<u8>> = path.split(|&b| b == b'/').rev().map(<[u8]>::to_vec).collect();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match part.as_slice() {
            b"" | b"." => {}
            b".." => {
                if stack.len() > 1 {
                    stack.pop();
                }
            }
            name => {
                let dir = *stack.last().unwrap_or(&vol.root());
                let attr = vol.lookup(dir, name).map_err(|e| os(e, display(path)))?;
                let is_last = todo.iter().all(|p| p.is_empty());
                if attr.kind == FileKind::Symlink && (follow || !is_last) {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        let e = FsError::Request { ino: attr.ino, what: "too many symlinks", errno: libc::ELOOP };
                        return Err(os(e, display(path)));
                    }
                    let target = vol.readlink(attr.ino).map_err(|e| os(e, display(path)))?;
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                } else {
                    stack.push(attr.ino);
                }
            }
        }
    }
    let ino = *stack.last().unwrap_or(&vol.root());
    vol.getattr(ino).map_err(|e| os(e, display(path)))
}

fn display(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    if s.is_empty() { "/".into() } else { s.into_owned() }
}

fn mode_string(a: &Attr) -> String {
    let t = match a.kind {
        FileKind::Regular => '-',
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    };
    let p = u32::from(a.perm);
    let bit = |mask: u32, c: char| if p & mask != 0 { c } else { '-' };
    let special = |x: bool, s: bool, lower: char, upper: char| match (x, s) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    format!(
        "{t}{}{}{}{}{}{}{}{}{}",
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(p & 0o100 != 0, p & 0o4000 != 0, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(p & 0o010 != 0, p & 0o2000 != 0, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(p & 0o001 != 0, p & 0o1000 != 0, 't', 'T'),
    )
}

/// How `ls`, `stat` and `info` print.
#[derive(Debug, Clone)]
pub enum Format {
    /// For people: `ls` names (or `-l` rows), `stat` `key: value` lines.
    Text { long: bool, times: TimeStyle },
    /// One JSON object per line, every attribute (json.rs).
    Json,
}

/// `ls`: the entries of a directory (or the name of a file), one per line;
/// with `long`, mode, links, owner, size, mtime and symlink targets too.
/// An entry whose attributes cannot be read is still listed (as ls -l
/// does, with `?` fields, or in JSON with an `error`), reported on stderr,
/// and counted: the result is the number of such entries.
pub fn ls(vol: &Volume, path: &[u8], format: &Format, out: &mut impl Write) -> anyhow::Result<u64> {
    let attr = resolve(vol, path, true)?;
    let entries: Vec<(Vec<u8>, Ino)> = if attr.kind == FileKind::Directory {
        let mut v: Vec<_> = vol
            .read_whole_dir(attr.ino)
            .map_err(|e| os(e, display(path)))?
            .into_iter()
            .map(|e| (e.name, e.ino))
            .collect();
        v.sort();
        v
    } else {
        vec![(path.rsplit(|&b| b == b'/').next().unwrap_or(path).to_vec(), attr.ino)]
    };
    let mut failed = 0;
    for (name, ino) in entries {
        let long = match format {
            Format::Text { long: false, .. } => {
                out.write_all(&name)?;
                out.write_all(b"\n")?;
                continue;
            }
            _ => vol.getattr(ino).map_err(|e| os(e, String::from_utf8_lossy(&name))),
        };
        let target = match &long {
            Ok(a) if a.kind == FileKind::Symlink => {
                Some(vol.readlink(ino).map_err(|e| os(e, String::from_utf8_lossy(&name))))
            }
            _ => None,
        };
        let errors: Vec<&anyhow::Error> =
            long.as_ref().err().into_iter().chain(target.as_ref().and_then(|t| t.as_ref().err())).collect();
        for e in &errors {
            eprintln!("fshost: ls: {}", crate::report::message(e));
        }
        failed += u64::from(!errors.is_empty());
        match format {
            Format::Json => {
                let mut obj = long.as_ref().map(json::attr).unwrap_or_default();
                json::put_bytes(&mut obj, "name", &name);
                if let Some(Ok(t)) = &target {
                    json::put_bytes(&mut obj, "target", t);
                }
                if let Some(e) = errors.first() {
                    obj.insert("ino".into(), ino.0.into());
                    obj.insert("error".into(), crate::report::message(e).into());
                }
                serde_json::to_writer(&mut *out, &obj)?;
            }
            Format::Text { times, .. } => {
                match &long {
                    Ok(a) => {
                        let size = match a.kind {
                            FileKind::CharDevice | FileKind::BlockDevice => format!("{}, {}", a.rdev.0, a.rdev.1),
                            _ => a.size.to_string(),
                        };
                        let when = times.ls(a.mtime);
                        write!(out, "{} {} {} {} {size} {when} ", mode_string(a), a.nlink, a.uid, a.gid)?;
                    }
                    // As ls -l shows an entry it cannot stat.
                    Err(_) => write!(out, "?????????? ? ? ? ? ? ")?,
                }
                out.write_all(&name)?;
                if let Some(Ok(t)) = &target {
                    out.write_all(b" -> ")?;
                    out.write_all(t)?;
                }
            }
        }
        out.write_all(b"\n")?;
    }
    Ok(failed)
}

/// `stat`: every attribute, one `key: value` per line (or one JSON object).
pub fn stat(vol: &Volume, path: &[u8], format: &Format, out: &mut impl Write) -> anyhow::Result<()> {
    let a = resolve(vol, path, false)?;
    let target = match a.kind {
        FileKind::Symlink => Some(vol.readlink(a.ino).map_err(|e| os(e, display(path)))?),
        _ => None,
    };
    let times = match format {
        Format::Json => {
            let mut obj = json::attr(&a);
            json::put_bytes(&mut obj, "path", path);
            if let Some(t) = &target {
                json::put_bytes(&mut obj, "target", t);
            }
            serde_json::to_writer(&mut *out, &obj)?;
            out.write_all(b"\n")?;
            return Ok(());
        }
        Format::Text { times, .. } => times,
    };
    writeln!(out, "ino: {}", a.ino)?;
    writeln!(out, "type: {}", json::kind(a.kind))?;
    writeln!(out, "mode: {:04o}", a.perm)?;
    writeln!(out, "nlink: {}", a.nlink)?;
    writeln!(out, "uid: {}", a.uid)?;
    writeln!(out, "gid: {}", a.gid)?;
    writeln!(out, "size: {}", a.size)?;
    writeln!(out, "blocks: {}", a.blocks)?;
    writeln!(out, "atime: {}", times.full(a.atime))?;
    writeln!(out, "mtime: {}", times.full(a.mtime))?;
    writeln!(out, "ctime: {}", times.full(a.ctime))?;
    writeln!(out, "crtime: {}", a.crtime.map_or("-".into(), |t| times.full(t)))?;
    writeln!(out, "rdev: {},{}", a.rdev.0, a.rdev.1)?;
    writeln!(out, "generation: {}", a.generation)?;
    if let Some(t) = target {
        out.write_all(b"target: ")?;
        out.write_all(&t)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Stream regular file `attr` to `out` in 1 MiB reads.
fn copy_file(vol: &Volume, attr: &Attr, what: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let mut pos = 0u64;
    while pos < attr.size {
        let chunk = vol.read(attr.ino, pos, 1 << 20).map_err(|e| os(e, format!("{what} at byte {pos}")))?;
        if chunk.is_empty() {
            bail!("{what}: read at byte {pos} returned nothing before the end ({} bytes)", attr.size);
        }
        out.write_all(&chunk)?;
        pos += chunk.len() as u64;
    }
    Ok(())
}

/// `cat`: the bytes of a regular file.
pub fn cat(vol: &Volume, path: &[u8], out: &mut impl Write) -> anyhow::Result<()> {
    let attr = resolve(vol, path, true)?;
    if attr.kind != FileKind::Regular {
        bail!("{}: not a regular file", display(path));
    }
    copy_file(vol, &attr, &display(path), out)
}

/// `info`: what the filesystem reports about itself.
pub fn info(vol: &Volume, format: &Format, out: &mut impl Write) -> anyhow::Result<()> {
    let i = vol.statfs().map_err(|e| os(e, "statfs"))?;
    if let Format::Json = format {
        serde_json::to_writer(&mut *out, &json::info(&i, format_uuid(&i.uuid)))?;
        out.write_all(b"\n")?;
        return Ok(());
    }
    writeln!(out, "type: {}", i.fs_type)?;
    out.write_all(b"label: ")?;
    out.write_all(&i.label)?;
    writeln!(out)?;
    writeln!(out, "uuid: {}", format_uuid(&i.uuid))?;
    writeln!(out, "block size: {}", i.block_size)?;
    writeln!(out, "blocks: {} total, {} free, {} available", i.total_blocks, i.free_blocks, i.available_blocks)?;
    writeln!(out, "inodes: {} total, {} free", i.total_inodes, i.free_inodes)?;
    writeln!(out, "root inode: {}", i.root)?;
    Ok(())
}

/// A 16-byte UUID in the usual 8-4-4-4-12 form; other lengths in plain hex.
pub fn format_uuid(u: &[u8]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    if u.len() == 16 {
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    } else {
        hex
    }
}
