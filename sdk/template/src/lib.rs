//! starter: a minimal fshost guest. One root directory holding the files
//! a text header lists (the format is in README.md and [`header`]).
//!
//! `mount` reads and checks the header once; every other call answers from
//! the parsed list. File data never passes through the guest: `iomap_begin`
//! tells the host where each file's bytes are, and the host reads them.

pub mod header;

use fshost_sdk::{
    Attr, Device, DirEntry, Error, ErrorCode, FileType, Filesystem, FsInfo, Ino, IomapFlags, Mapping, MappingKind,
    MountOptions, Result, Timestamp,
};

use header::{BLOCK, Entry};

/// The root directory's inode.
const ROOT: Ino = 1;

/// A mounted starter image.
pub struct Starter {
    device_size: u64,
    files: Vec<Entry>,
}

impl Starter {
    /// The file with inode `ino` (the header's n-th file is inode n + 1).
    fn file(&self, ino: Ino) -> Result<&Entry> {
        ino.checked_sub(2)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.files.get(i))
            .ok_or_else(|| Error::not_found(format!("no inode {ino}")))
    }

    fn attr(&self, ino: Ino) -> Result<Attr> {
        let (kind, perm, nlink, size) = if ino == ROOT {
            (FileType::Directory, 0o555, 2, 0)
        } else {
            (FileType::Regular, 0o444, 1, self.file(ino)?.size)
        };
        Ok(Attr {
            ino,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            size,
            blocks: size.div_ceil(BLOCK) * (BLOCK / 512),
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            crtime: None,
            rdev: 0,
            generation: 0,
            flags: Default::default(),
        })
    }
}

impl Filesystem for Starter {
    fn mount(device: Device, _options: &MountOptions) -> Result<Self> {
        let device_size = device.size();
        let head = device.read(0, BLOCK.min(device_size) as usize)?;
        let files = header::parse(&head, device_size)?;
        Ok(Starter { device_size, files })
    }

    fn info(&mut self) -> Result<FsInfo> {
        Ok(FsInfo {
            root: ROOT,
            block_size: BLOCK as u32,
            name_max: 255,
            total_blocks: self.device_size / BLOCK,
            total_inodes: self.files.len() as u64 + 1,
            fs_type: "starter".into(),
            ..Default::default()
        })
    }

    fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        self.attr(ino)
    }

    fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if parent != ROOT {
            return Err(ErrorCode::NotDir.into());
        }
        let index = self.files.iter().position(|f| f.name == name).ok_or(ErrorCode::NotFound)?;
        self.attr(index as u64 + 2)
    }

    /// Cookie n resumes after the n-th file, so it is never 0.
    fn readdir(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>> {
        if ino != ROOT {
            return Err(ErrorCode::NotDir.into());
        }
        let start = usize::try_from(cookie).unwrap_or(usize::MAX);
        Ok(self
            .files
            .iter()
            .enumerate()
            .skip(start)
            .take(max as usize)
            .map(|(i, f)| DirEntry {
                ino: i as u64 + 2,
                kind: FileType::Regular,
                name: f.name.clone(),
                cookie: i as u64 + 1,
            })
            .collect())
    }

    fn readlink(&mut self, _ino: Ino) -> Result<Vec<u8>> {
        Err(Error::invalid("there are no symlinks"))
    }

    /// A file is one contiguous run of blocks: map all of it at once. The
    /// mapping covers whole blocks, except that it stops at the device's end.
    fn iomap_begin(&mut self, ino: Ino, offset: u64, _length: u64, _flags: IomapFlags) -> Result<Vec<Mapping>> {
        if ino == ROOT {
            return Err(ErrorCode::IsDir.into());
        }
        let file = self.file(ino)?;
        let mapped = file.size.div_ceil(BLOCK).saturating_mul(BLOCK).min(self.device_size - file.offset);
        if offset < mapped {
            return Ok(vec![Mapping { offset: 0, length: mapped, kind: MappingKind::Mapped(file.offset) }]);
        }
        // Past the data: a hole (the host never reads past the size).
        let start = offset / BLOCK * BLOCK;
        Ok(vec![Mapping { offset: start, length: BLOCK, kind: MappingKind::Hole }])
    }
}

fshost_sdk::export!(Starter);

#[cfg(test)]
mod tests {
    use super::*;
    use fshost_sdk::testing::memory_device;

    /// An image holding `files`, written as README.md describes.
    fn image(files: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut img = b"fshost-starter v1\n".to_vec();
        for (name, data) in files {
            img.extend(format!("{} ", data.len()).bytes());
            img.extend_from_slice(name);
            img.push(b'\n');
        }
        for (_, data) in files {
            img.resize(img.len().div_ceil(512).max(1) * 512, 0);
            img.extend_from_slice(data);
        }
        img
    }

    #[test]
    fn lists_looks_up_and_maps_files() {
        let img = image(&[(b"hello.txt", b"hello\n"), (b"two", b"22")]);
        let mut fs = Starter::mount(memory_device(img.clone()), &MountOptions::default()).unwrap();
        let root = fs.info().unwrap().root;
        let names: Vec<Vec<u8>> = fs.readdir(root, 0, 10).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, [b"hello.txt".to_vec(), b"two".to_vec()]);
        assert!(fs.readdir(root, 2, 10).unwrap().is_empty());
        let two = fs.lookup(root, b"two").unwrap();
        assert_eq!(two.size, 2);
        let maps = fs.iomap_begin(two.ino, 0, 2, IomapFlags::default()).unwrap();
        let MappingKind::Mapped(at) = maps[0].kind else { panic!("{maps:?}") };
        assert_eq!(&img[at as usize..][..2], b"22");
        assert_eq!(fs.lookup(root, b"three").unwrap_err().code(), ErrorCode::NotFound);
    }
}
