//! `--json`: the offline commands' output for scripts, one JSON object per
//! line (JSON Lines), with a schema that only grows (README, "JSON
//! output"): fields are added, never renamed or removed.
//!
//! Names and symlink targets are bytes. Valid UTF-8 is written as a JSON
//! string (`"name"`); anything else as lowercase hex (`"name_hex"`), so the
//! exact bytes survive and a string field never holds a guess.

use serde_json::{Map, Value, json};

use crate::types::{Attr, FileKind, FsInfo, Timestamp};

/// The type as `stat` names it.
pub fn kind(k: FileKind) -> &'static str {
    match k {
        FileKind::Regular => "regular",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::CharDevice => "char-device",
        FileKind::BlockDevice => "block-device",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
    }
}

/// `key` (UTF-8) or `key_hex` (other bytes) set to `bytes`.
pub fn put_bytes(obj: &mut Map<String, Value>, key: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => obj.insert(key.into(), s.into()),
        Err(_) => obj.insert(format!("{key}_hex"), bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into()),
    };
}

fn time(t: Timestamp) -> Value {
    json!({ "sec": t.seconds, "nsec": t.nanoseconds })
}

/// Every attribute of an inode.
pub fn attr(a: &Attr) -> Map<String, Value> {
    let f = a.flags;
    let flags: Vec<&str> = [
        (f.immutable, "immutable"),
        (f.append, "append"),
        (f.no_dump, "nodump"),
        (f.no_atime, "noatime"),
        (f.sync, "sync"),
        (f.encrypted, "encrypted"),
        (f.verity, "verity"),
        (f.casefold, "casefold"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let value = json!({
        "ino": a.ino.0,
        "type": kind(a.kind),
        "mode": a.perm,
        "nlink": a.nlink,
        "uid": a.uid,
        "gid": a.gid,
        "size": a.size,
        "blocks": a.blocks,
        "atime": time(a.atime),
        "mtime": time(a.mtime),
        "ctime": time(a.ctime),
        "crtime": a.crtime.map(time),
        "rdev": { "major": a.rdev.0, "minor": a.rdev.1 },
        "generation": a.generation,
        "flags": flags,
    });
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// What `info` prints.
pub fn info(i: &FsInfo, uuid: String) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), i.fs_type.clone().into());
    put_bytes(&mut m, "label", &i.label);
    m.insert("uuid".into(), uuid.into());
    for (k, v) in [
        ("block_size", u64::from(i.block_size)),
        ("name_max", u64::from(i.name_max)),
        ("total_blocks", i.total_blocks),
        ("free_blocks", i.free_blocks),
        ("available_blocks", i.available_blocks),
        ("total_inodes", i.total_inodes),
        ("free_inodes", i.free_inodes),
        ("root", i.root.0),
    ] {
        m.insert(k.into(), v.into());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_keep_their_bytes_in_hex() {
        let mut m = Map::new();
        put_bytes(&mut m, "name", b"caf\xe9");
        put_bytes(&mut m, "target", "café".as_bytes());
        assert_eq!(Value::Object(m), json!({ "name_hex": "636166e9", "target": "café" }));
    }
}
