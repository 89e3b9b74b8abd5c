//! The internal snapshot table: listed by id and name, never read (the
//! guest serves the active image). Damage here costs the list, not the
//! image: it becomes a warning.

use crate::bytes::{u16_at, u32_at};
use crate::header::Header;
use crate::{Disk, Error, Result};

/// QEMU's QCOW_MAX_SNAPSHOTS.
pub const MAX_SNAPSHOTS: u32 = 65536;
/// QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA.
const MAX_EXTRA: u32 = 1024;
/// QEMU's QCOW_MAX_SNAPSHOTS_SIZE: the whole table in at most 64 MiB.
const MAX_TABLE: u64 = 64 << 20;
/// The fixed part of an entry.
const ENTRY: usize = 40;
/// Bytes read from the device at a time.
const CHUNK: u64 = 64 << 10;

/// One snapshot's id and name, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: Vec<u8>,
    pub name: Vec<u8>,
}

/// Reads a table of unknown length from the device in chunks.
struct Cursor<'a> {
    disk: &'a dyn Disk,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.at == self.buf.len() {
                let left = self.end.saturating_sub(self.pos);
                if left == 0 {
                    return Err(Error::corrupted(format!("snapshot table runs past byte {}", self.end)));
                }
                let len = left.min(CHUNK) as usize;
                self.buf = self.disk.read(self.pos, len)?;
                self.pos += len as u64;
                self.at = 0;
            }
            let take = (n - out.len()).min(self.buf.len() - self.at);
            out.extend_from_slice(&self.buf[self.at..self.at + take]);
            self.at += take;
        }
        Ok(out)
    }
}

/// The snapshots `header` lists.
pub fn read(disk: &dyn Disk, header: &Header) -> Result<Vec<Snapshot>> {
    let n = header.nb_snapshots;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > MAX_SNAPSHOTS {
        return Err(Error::corrupted(format!("{n} snapshots, more than {MAX_SNAPSHOTS}")));
    }
    let start = header.snapshots_offset;
    if !start.is_multiple_of(header.cluster_size()) || start >= disk.size() {
        return Err(Error::corrupted(format!("snapshot table at {start}: unaligned or past the end of the file")));
    }
    let end = disk.size().min(start.saturating_add(MAX_TABLE));
    let mut cur = Cursor { disk, pos: start, end, buf: Vec::new(), at: 0 };
    let mut out = Vec::with_capacity(n.min(1024) as usize);
    for i in 0..n {
        let fixed = cur.take(ENTRY)?;
        let id_len = u16_at(&fixed, 12, "snapshot id_str_size")? as usize;
        let name_len = u16_at(&fixed, 14, "snapshot name_size")? as usize;
        let extra = u32_at(&fixed, 36, "snapshot extra_data_size")?;
        if extra > MAX_EXTRA {
            return Err(Error::corrupted(format!("snapshot {i}: {extra} bytes of extra data")));
        }
        cur.take(extra as usize)?;
        let id = cur.take(id_len)?;
        let name = cur.take(name_len)?;
        // Entries start 8-aligned; the last is not padded (the file may
        // end right after it).
        let used = ENTRY + extra as usize + id_len + name_len;
        if i + 1 < n {
            cur.take(used.next_multiple_of(8) - used)?;
        }
        out.push(Snapshot { id, name });
    }
    Ok(out)
}
