//! Answering `iomap_begin`: a regular file's byte range as mappings the host
//! can read from, following the contract in wit/fshost.wit.
//!
//! The answer starts with the extent or hole containing the offset and goes
//! on, contiguous, until it covers the asked range or the end of the file
//! (rounded up to a block), at most [`MAX_MAPPINGS`] long. Extents are
//! returned whole (the host caches them); a hole reaches to the next extent
//! or to the end of the file. Mapped, unwritten and hole mappings are in
//! whole blocks; inline data is one mapping of exactly the file's size.
//!
//! When the journal was replayed (disk.rs), a data block whose newest copy
//! is in the journal (data=journal, or a block that changed from metadata
//! to data) is returned as inline bytes, so the host serves what the kernel
//! would read after recovery.

use fshost_sdk::{Error, Mapping, MappingKind, Result};

use crate::inline::Inline;
use crate::inode::{Inode, flags};
use crate::mapping::{self, Run};
use crate::volume::Volume;

/// Longest mapping list returned.
pub const MAX_MAPPINGS: usize = 256;
/// Longest inline mapping built from replayed journal blocks, in blocks.
const MAX_REPLAYED_RUN: u64 = 16;

/// The mappings of `[offset, offset + length)` of regular file `inode`.
/// `report` asks for the layout only (SEEK_DATA/SEEK_HOLE), which the
/// kernel answers differently for inline data (`ext4_iomap_begin_report`).
pub fn map(vol: &Volume, inode: &Inode, offset: u64, length: u64, report: bool) -> Result<Vec<Mapping>> {
    let bs = vol.bs();
    let size = inode.size;
    let first = offset / bs;
    if offset >= size {
        // Past the end: nothing to read; a block-aligned hole keeps the
        // answer valid for hosts that ask anyway.
        let end = offset.saturating_add(length.max(1)).div_ceil(bs).max(first + 1);
        return Ok(vec![Mapping { offset: first * bs, length: (end - first) * bs, kind: MappingKind::Hole }]);
    }
    if inode.has_flag(flags::INLINE_DATA) && report {
        // The kernel reports one inline extent of min(inline size, i_size)
        // and ENOENT past it, even when i_size is larger: SEEK_HOLE then
        // fails on such a file. Mirror it so lseek agrees with the kernel.
        let inline = Inline::read(vol, inode)?;
        let stored = (inline.head.len() + inline.tail.len()) as u64;
        let len = size.min(stored);
        if offset >= len {
            return Err(Error::not_found(format!(
                "inode {}: offset {offset} is past its {len} bytes of inline data",
                inode.ino
            )));
        }
        let bytes = inline.file_bytes(len as usize);
        return Ok(vec![Mapping { offset: 0, length: len, kind: MappingKind::Inline(bytes) }]);
    }
    if inode.has_flag(flags::INLINE_DATA) {
        // The kernel (ext4_read_inline_folio) serves the inline bytes and
        // zeros after them up to i_size, however large i_size claims to be.
        let head = size.min(bs);
        let bytes = Inline::read(vol, inode)?.file_bytes(head as usize);
        let mut out = vec![Mapping { offset: 0, length: head, kind: MappingKind::Inline(bytes) }];
        if size > bs {
            out.push(Mapping { offset: bs, length: (size.div_ceil(bs) - 1) * bs, kind: MappingKind::Hole });
        }
        return Ok(out);
    }
    let eof = size.div_ceil(bs);
    let want = offset.saturating_add(length.max(1)).div_ceil(bs).clamp(first + 1, eof);
    let runs = mapping::runs(vol, inode, first, want, MAX_MAPPINGS / 2)?;
    let mut out = Vec::new();
    let mut cursor = first;
    for run in &runs.runs {
        if out.len() + 2 > MAX_MAPPINGS {
            return Ok(out);
        }
        if run.lblk > cursor {
            out.push(hole(cursor, run.lblk, bs));
        }
        push_run(vol, &mut out, run, size)?;
        cursor = cursor.max(run.end());
    }
    if cursor < runs.end && cursor < eof && out.len() < MAX_MAPPINGS {
        // Stretch the trailing hole to the next extent or the end of file.
        let next = mapping::runs(vol, inode, runs.end, eof, 1)?;
        let hole_end = next.runs.first().map_or(next.end, |r| r.lblk).max(runs.end).min(eof);
        out.push(hole(cursor, hole_end, bs));
    }
    Ok(out)
}

fn hole(from: u64, to: u64, bs: u64) -> Mapping {
    Mapping { offset: from * bs, length: (to - from) * bs, kind: MappingKind::Hole }
}

/// Append the mapping(s) of one allocated run, splitting out blocks the
/// journal replay holds newer copies of.
fn push_run(vol: &Volume, out: &mut Vec<Mapping>, run: &Run, size: u64) -> Result<()> {
    let bs = vol.bs();
    if run.unwritten {
        out.push(Mapping { offset: run.lblk * bs, length: run.len * bs, kind: MappingKind::Unwritten(run.pblk * bs) });
        return Ok(());
    }
    if !vol.disk.has_overlay() {
        out.push(Mapping { offset: run.lblk * bs, length: run.len * bs, kind: MappingKind::Mapped(run.pblk * bs) });
        return Ok(());
    }
    let replayed = |i: u64| vol.disk.overlay_block(run.pblk + i);
    let mut i = 0;
    while i < run.len {
        let start = i;
        while i < run.len && replayed(i).is_none() {
            i += 1;
        }
        if i > start {
            out.push(Mapping {
                offset: (run.lblk + start) * bs,
                length: (i - start) * bs,
                kind: MappingKind::Mapped((run.pblk + start) * bs),
            });
        }
        let file_pos = (run.lblk + i) * bs;
        if i >= run.len || file_pos >= size {
            break;
        }
        let mut bytes = Vec::new();
        let start = i;
        while i < run.len && i - start < MAX_REPLAYED_RUN {
            let Some(block) = replayed(i) else { break };
            bytes.extend_from_slice(block);
            i += 1;
        }
        bytes.truncate((size - file_pos).min(bytes.len() as u64) as usize);
        let length = bytes.len() as u64;
        if length > 0 {
            out.push(Mapping { offset: file_pos, length, kind: MappingKind::Inline(bytes) });
        }
        if length < (i - start) * bs {
            break; // Reached the end of the file.
        }
    }
    Ok(())
}
