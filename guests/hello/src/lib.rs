//! hellofs: the smallest real fshost guest (layout in README.md).
//!
//! It parses a flat, documented toy format so that the host, the SDK and the
//! contract can be tested without ext4. It deliberately trusts the extent
//! table's device offsets: checking them against the device is the host's job,
//! and tests rely on this guest to hand the host a bad mapping.
//!
//! This crate is the filesystem; `component/` exports it as hello.wasm (one
//! line), so that other guests can wrap [`Hello`] (guests/evil does).

mod format;
#[cfg(not(target_arch = "wasm32"))]
pub mod image;

use fshost_sdk::{
    Attr, Device, DirEntry, Error, ErrorCode, FileType, Filesystem, FsInfo, Ino, IomapFlags, Mapping, MappingKind,
    MountOptions, Result, Timestamp,
};

pub use format::{Header, Inode, MAGIC};

/// A mounted hellofs image.
pub struct Hello {
    device: Device,
    header: Header,
}

impl Hello {
    fn inode(&self, ino: Ino) -> Result<Inode> {
        self.header.read_inode(&self.device, ino)
    }

    fn attr(&self, ino: Ino, inode: &Inode) -> Result<Attr> {
        let kind = FileType::from_mode(inode.mode)
            .ok_or_else(|| Error::corrupted(format!("inode {ino}: mode {:o} has no valid type", inode.mode)))?;
        let mtime = Timestamp { seconds: inode.mtime, nanoseconds: inode.mtime_ns.min(999_999_999) };
        Ok(Attr {
            ino,
            kind,
            perm: (inode.mode & 0o7777) as u16,
            nlink: inode.nlink,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            blocks: inode.size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: None,
            rdev: inode.rdev,
            generation: 0,
            flags: Default::default(),
        })
    }

    fn dir(&self, ino: Ino) -> Result<Vec<(u32, Vec<u8>)>> {
        let inode = self.inode(ino)?;
        if FileType::from_mode(inode.mode) != Some(FileType::Directory) {
            return Err(ErrorCode::NotDir.into());
        }
        format::read_dir(&self.device, &inode).map_err(|e| e.context(format!("directory {ino}")))
    }
}

impl Filesystem for Hello {
    fn mount(device: Device, _options: &MountOptions) -> Result<Self> {
        let header = Header::read(&device)?;
        device.set_cache(header.block_size, 256);
        Ok(Hello { device, header })
    }

    fn info(&mut self) -> Result<FsInfo> {
        let bs = u64::from(self.header.block_size);
        Ok(FsInfo {
            root: 1,
            block_size: self.header.block_size,
            name_max: 255,
            total_blocks: self.device.size() / bs,
            free_blocks: 0,
            available_blocks: 0,
            total_inodes: u64::from(self.header.inode_count),
            free_inodes: 0,
            fs_type: "hellofs".into(),
            label: self.header.label.clone(),
            uuid: Vec::new(),
        })
    }

    fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        let inode = self.inode(ino)?;
        self.attr(ino, &inode)
    }

    fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let found = self.dir(parent)?.into_iter().find(|(_, n)| n == name);
        match found {
            Some((ino, _)) => self.getattr(u64::from(ino)),
            None => Err(ErrorCode::NotFound.into()),
        }
    }

    fn readdir(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>> {
        let entries = self.dir(ino)?;
        let start = usize::try_from(cookie).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for (index, (child, name)) in entries.into_iter().enumerate().skip(start).take(max as usize) {
            let inode = self.inode(u64::from(child))?;
            let kind = FileType::from_mode(inode.mode)
                .ok_or_else(|| Error::corrupted(format!("inode {child}: mode {:o} has no valid type", inode.mode)))?;
            out.push(DirEntry { ino: u64::from(child), kind, name, cookie: index as u64 + 1 });
        }
        Ok(out)
    }

    fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        if FileType::from_mode(inode.mode) != Some(FileType::Symlink) {
            return Err(Error::invalid(format!("inode {ino} is not a symlink")));
        }
        let len = usize::try_from(inode.size)
            .ok()
            .filter(|&l| l <= 4096)
            .ok_or_else(|| Error::corrupted(format!("inode {ino}: symlink target of {} bytes", inode.size)))?;
        self.device.read(inode.payload, len)
    }

    fn iomap_begin(&mut self, ino: Ino, offset: u64, length: u64, _flags: IomapFlags) -> Result<Vec<Mapping>> {
        let inode = self.inode(ino)?;
        match FileType::from_mode(inode.mode) {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => return Err(ErrorCode::IsDir.into()),
            _ => return Err(Error::invalid(format!("inode {ino} is not a regular file"))),
        }
        let extents = format::read_extents(&self.device, &inode).map_err(|e| e.context(format!("inode {ino}")))?;
        Ok(map_range(&extents, offset, length, inode.size, u64::from(self.header.block_size)))
    }
}

/// Answer iomap-begin from a sorted extent table: the extent or hole that
/// contains `offset`, then the following ones until `offset + length` or the
/// end of the file (rounded up to a block) is covered.
fn map_range(extents: &[format::Extent], offset: u64, length: u64, size: u64, block: u64) -> Vec<Mapping> {
    let eof = size.div_ceil(block).saturating_mul(block);
    let want_end = offset.saturating_add(length.max(1)).min(eof);
    let mut out = Vec::new();
    let mut pos = offset - offset % block;
    for e in extents {
        if pos >= want_end {
            break;
        }
        let e_end = e.file_offset.saturating_add(e.length);
        if e_end <= pos {
            continue;
        }
        if e.file_offset > pos {
            out.push(Mapping { offset: pos, length: e.file_offset - pos, kind: MappingKind::Hole });
            pos = e.file_offset;
            if pos >= want_end {
                break;
            }
        }
        out.push(Mapping { offset: e.file_offset, length: e.length, kind: MappingKind::Mapped(e.device_offset) });
        pos = e_end;
    }
    if pos < want_end {
        out.push(Mapping { offset: pos, length: eof - pos, kind: MappingKind::Hole });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_extents_and_holes_around_the_offset() {
        let ext = |f, l, d| format::Extent { file_offset: f, length: l, device_offset: d };
        let extents = [ext(4096, 8192, 40960), ext(20480, 4096, 8192)];
        let m = map_range(&extents, 5000, 100_000, 30_000, 4096);
        let kinds: Vec<_> = m.iter().map(|m| (m.offset, m.length, m.kind.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (4096, 8192, MappingKind::Mapped(40960)),
                (12288, 8192, MappingKind::Hole),
                (20480, 4096, MappingKind::Mapped(8192)),
                (24576, 8192, MappingKind::Hole),
            ]
        );
        let m = map_range(&extents, 0, 10, 30_000, 4096);
        assert_eq!((m[0].offset, m[0].length, &m[0].kind), (0, 4096, &MappingKind::Hole));
        assert_eq!(m.len(), 1);
    }
}
