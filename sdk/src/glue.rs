//! The bridge between the generated WIT bindings and [`crate::Filesystem`].
//! Only compiled for wasm; nothing outside this file and `lib.rs` names a
//! generated type.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::Filesystem;
pub use crate::bindings;
use crate::bindings::fshost::plugin::{block_device, types as wit};
use crate::device::{BlockIo, Device};
use crate::error::{Error, ErrorCode, Result};
use crate::log::{Level, log};
use crate::types::*;

/// Implemented by [`crate::export!`]: names the guest's filesystem type and
/// the slot its mounted value lives in.
pub trait Export {
    type Fs: Filesystem;
    fn state() -> &'static LocalKey<RefCell<Option<Self::Fs>>>;
}

/// The `block-device` import as a [`BlockIo`].
struct HostDevice;

/// The host guarantees at least this much per read call.
const MAX_READ: usize = 1 << 20;

impl BlockIo for HostDevice {
    fn size(&self) -> u64 {
        block_device::size()
    }
    fn sector_size(&self) -> u32 {
        block_device::sector_size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let want = (buf.len() - done).min(MAX_READ);
            let at = offset + done as u64;
            let bytes = block_device::read(at, want as u32)
                .map_err(|code| Error::new(from_wit_error(code), format!("device read of {want} bytes at {at}")))?;
            if bytes.len() != want {
                return Err(Error::io(format!("device returned {} of {want} bytes at {at}", bytes.len())));
            }
            buf[done..done + want].copy_from_slice(&bytes);
            done += want;
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        block_device::write(offset, data).map_err(|code| {
            Error::new(from_wit_error(code), format!("device write of {} bytes at {offset}", data.len()))
        })
    }
    fn flush(&self) -> Result<()> {
        block_device::flush().map_err(|code| Error::new(from_wit_error(code), "device flush"))
    }
}

fn from_wit_error(code: wit::ErrorCode) -> ErrorCode {
    use wit::ErrorCode as W;
    match code {
        W::NotFound => ErrorCode::NotFound,
        W::NotDir => ErrorCode::NotDir,
        W::IsDir => ErrorCode::IsDir,
        W::Corrupted => ErrorCode::Corrupted,
        W::Io => ErrorCode::Io,
        W::Unsupported => ErrorCode::Unsupported,
        W::Invalid => ErrorCode::Invalid,
        W::NoData => ErrorCode::NoData,
        W::NameTooLong => ErrorCode::NameTooLong,
        W::NoMemory => ErrorCode::NoMemory,
        W::ReadOnly => ErrorCode::ReadOnly,
        W::Access => ErrorCode::Access,
        W::Exists => ErrorCode::Exists,
        W::NotEmpty => ErrorCode::NotEmpty,
        W::NoSpace => ErrorCode::NoSpace,
        W::TooManyLinks => ErrorCode::TooManyLinks,
        W::FileTooBig => ErrorCode::FileTooBig,
        W::NotPermitted => ErrorCode::NotPermitted,
        W::BadChecksum => ErrorCode::BadChecksum,
        W::NoKey => ErrorCode::NoKey,
    }
}

/// Log the error's message (the host only sees the code otherwise) and
/// return the code.
fn to_wit_error(op: &str, e: Error) -> wit::ErrorCode {
    use wit::ErrorCode as W;
    let level = match e.code() {
        ErrorCode::Corrupted | ErrorCode::BadChecksum | ErrorCode::Io => Level::Warn,
        _ => Level::Debug,
    };
    if !e.message().is_empty() {
        log(level, &format!("{op}: {e}"));
    }
    match e.code() {
        ErrorCode::NotFound => W::NotFound,
        ErrorCode::NotDir => W::NotDir,
        ErrorCode::IsDir => W::IsDir,
        ErrorCode::Corrupted => W::Corrupted,
        ErrorCode::Io => W::Io,
        ErrorCode::Unsupported => W::Unsupported,
        ErrorCode::Invalid => W::Invalid,
        ErrorCode::NoData => W::NoData,
        ErrorCode::NameTooLong => W::NameTooLong,
        ErrorCode::NoMemory => W::NoMemory,
        ErrorCode::ReadOnly => W::ReadOnly,
        ErrorCode::Access => W::Access,
        ErrorCode::Exists => W::Exists,
        ErrorCode::NotEmpty => W::NotEmpty,
        ErrorCode::NoSpace => W::NoSpace,
        ErrorCode::TooManyLinks => W::TooManyLinks,
        ErrorCode::FileTooBig => W::FileTooBig,
        ErrorCode::NotPermitted => W::NotPermitted,
        ErrorCode::BadChecksum => W::BadChecksum,
        ErrorCode::NoKey => W::NoKey,
    }
}

fn kind(k: FileType) -> wit::FileType {
    match k {
        FileType::Regular => wit::FileType::Regular,
        FileType::Directory => wit::FileType::Directory,
        FileType::Symlink => wit::FileType::Symlink,
        FileType::CharDevice => wit::FileType::CharDevice,
        FileType::BlockDevice => wit::FileType::BlockDevice,
        FileType::Fifo => wit::FileType::Fifo,
        FileType::Socket => wit::FileType::Socket,
        FileType::Unknown => wit::FileType::Unknown,
    }
}

fn from_kind(k: wit::FileType) -> FileType {
    match k {
        wit::FileType::Regular => FileType::Regular,
        wit::FileType::Directory => FileType::Directory,
        wit::FileType::Symlink => FileType::Symlink,
        wit::FileType::CharDevice => FileType::CharDevice,
        wit::FileType::BlockDevice => FileType::BlockDevice,
        wit::FileType::Fifo => FileType::Fifo,
        wit::FileType::Socket => FileType::Socket,
        wit::FileType::Unknown => FileType::Unknown,
    }
}

fn from_ts(t: wit::Timestamp) -> Timestamp {
    Timestamp { seconds: t.seconds, nanoseconds: t.nanoseconds }
}

fn ts(t: Timestamp) -> wit::Timestamp {
    wit::Timestamp { seconds: t.seconds, nanoseconds: t.nanoseconds }
}

fn attr(a: Attr) -> wit::Attr {
    let mut flags = wit::InodeFlags::empty();
    for (on, bit) in [
        (a.flags.immutable, wit::InodeFlags::IMMUTABLE),
        (a.flags.append, wit::InodeFlags::APPEND),
        (a.flags.no_dump, wit::InodeFlags::NO_DUMP),
        (a.flags.no_atime, wit::InodeFlags::NO_ATIME),
        (a.flags.sync, wit::InodeFlags::SYNC),
        (a.flags.encrypted, wit::InodeFlags::ENCRYPTED),
        (a.flags.verity, wit::InodeFlags::VERITY),
        (a.flags.casefold, wit::InodeFlags::CASEFOLD),
    ] {
        if on {
            flags |= bit;
        }
    }
    wit::Attr {
        ino: a.ino,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blocks: a.blocks,
        atime: ts(a.atime),
        mtime: ts(a.mtime),
        ctime: ts(a.ctime),
        crtime: a.crtime.map(ts),
        rdev: a.rdev,
        generation: a.generation,
        flags,
    }
}

fn entry(e: DirEntry) -> wit::DirEntry {
    wit::DirEntry { ino: e.ino, kind: kind(e.kind), name: e.name, cookie: e.cookie }
}

fn info(i: FsInfo) -> wit::FsInfo {
    wit::FsInfo {
        root: i.root,
        block_size: i.block_size,
        name_max: i.name_max,
        total_blocks: i.total_blocks,
        free_blocks: i.free_blocks,
        available_blocks: i.available_blocks,
        total_inodes: i.total_inodes,
        free_inodes: i.free_inodes,
        fs_type: i.fs_type,
        label: i.label,
        uuid: i.uuid,
    }
}

fn mapping(m: Mapping) -> wit::Mapping {
    let kind = match m.kind {
        MappingKind::Hole => wit::MappingKind::Hole,
        MappingKind::Mapped(at) => wit::MappingKind::Mapped(at),
        MappingKind::Unwritten(at) => wit::MappingKind::Unwritten(at),
        MappingKind::Inline(bytes) => wit::MappingKind::Inline(bytes),
    };
    wit::Mapping { offset: m.offset, length: m.length, kind }
}

/// Run `f` on the mounted filesystem, or fail if `mount` has not succeeded.
fn with_fs<E: Export, T>(op: &str, f: impl FnOnce(&mut E::Fs) -> Result<T>) -> Result<T, wit::ErrorCode> {
    E::state().with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(fs) => f(fs).map_err(|e| to_wit_error(op, e)),
            None => Err(to_wit_error(op, Error::invalid("called before a successful mount"))),
        }
    })
}

pub fn mount<E: Export>(options: wit::MountOptions) -> Result<wit::FsInfo, wit::ErrorCode> {
    let options = MountOptions { read_only: options.read_only, options: options.options };
    let device = Device::new(Box::new(HostDevice));
    let mut fs = E::Fs::mount(device, &options).map_err(|e| to_wit_error("mount", e))?;
    let answer = fs.info().map_err(|e| to_wit_error("mount", e))?;
    E::state().with(|cell| *cell.borrow_mut() = Some(fs));
    Ok(info(answer))
}

pub fn statfs<E: Export>() -> Result<wit::FsInfo, wit::ErrorCode> {
    with_fs::<E, _>("statfs", |fs| fs.info()).map(info)
}

pub fn getattr<E: Export>(ino: u64) -> Result<wit::Attr, wit::ErrorCode> {
    with_fs::<E, _>("getattr", |fs| fs.getattr(ino).map_err(|e| e.context(format!("inode {ino}")))).map(attr)
}

pub fn lookup<E: Export>(parent: u64, name: Vec<u8>) -> Result<wit::Attr, wit::ErrorCode> {
    with_fs::<E, _>("lookup", |fs| fs.lookup(parent, &name).map_err(|e| e.context(format!("directory {parent}"))))
        .map(attr)
}

pub fn readdir<E: Export>(ino: u64, cookie: u64, max: u32) -> Result<Vec<wit::DirEntry>, wit::ErrorCode> {
    with_fs::<E, _>("readdir", |fs| fs.readdir(ino, cookie, max).map_err(|e| e.context(format!("directory {ino}"))))
        .map(|v| v.into_iter().map(entry).collect())
}

pub fn readdirplus<E: Export>(ino: u64, cookie: u64, max: u32) -> Result<Vec<wit::DirEntryPlus>, wit::ErrorCode> {
    with_fs::<E, _>("readdirplus", |fs| {
        fs.readdirplus(ino, cookie, max).map_err(|e| e.context(format!("directory {ino}")))
    })
    .map(|v| v.into_iter().map(|(e, a)| wit::DirEntryPlus { entry: entry(e), attr: attr(a) }).collect())
}

pub fn readlink<E: Export>(ino: u64) -> Result<Vec<u8>, wit::ErrorCode> {
    with_fs::<E, _>("readlink", |fs| fs.readlink(ino).map_err(|e| e.context(format!("inode {ino}"))))
}

pub fn listxattr<E: Export>(ino: u64) -> Result<Vec<Vec<u8>>, wit::ErrorCode> {
    with_fs::<E, _>("listxattr", |fs| fs.listxattr(ino).map_err(|e| e.context(format!("inode {ino}"))))
}

pub fn getxattr<E: Export>(ino: u64, name: Vec<u8>) -> Result<Vec<u8>, wit::ErrorCode> {
    with_fs::<E, _>("getxattr", |fs| fs.getxattr(ino, &name).map_err(|e| e.context(format!("inode {ino}"))))
}

pub fn iomap_begin<E: Export>(
    ino: u64,
    offset: u64,
    length: u64,
    flags: wit::IomapFlags,
) -> Result<Vec<wit::Mapping>, wit::ErrorCode> {
    let flags = IomapFlags {
        write: flags.contains(wit::IomapFlags::WRITE),
        report: flags.contains(wit::IomapFlags::REPORT),
        direct: flags.contains(wit::IomapFlags::DIRECT),
    };
    with_fs::<E, _>("iomap-begin", |fs| {
        fs.iomap_begin(ino, offset, length, flags).map_err(|e| e.context(format!("inode {ino} offset {offset}")))
    })
    .map(|v| v.into_iter().map(mapping).collect())
}

// ---- The writer interface.

pub fn begin_write<E: Export>() -> Result<(), String> {
    E::state().with(|cell| match cell.borrow_mut().as_mut() {
        Some(fs) => fs.begin_write(),
        None => Err("begin-write called before a successful mount".to_string()),
    })
}

fn new_inode(n: wit::NewInode) -> NewInode {
    NewInode { kind: from_kind(n.kind), perm: n.perm, uid: n.uid, gid: n.gid, rdev: n.rdev, time: from_ts(n.time) }
}

fn unlinked(u: Unlinked) -> wit::Unlinked {
    wit::Unlinked { ino: u.ino, nlink: u.nlink }
}

pub fn create<E: Export>(parent: u64, name: Vec<u8>, new: wit::NewInode) -> Result<wit::Attr, wit::ErrorCode> {
    let new = new_inode(new);
    with_fs::<E, _>("create", |fs| fs.create(parent, &name, &new).map_err(|e| e.context(format!("directory {parent}"))))
        .map(attr)
}

pub fn symlink<E: Export>(
    parent: u64,
    name: Vec<u8>,
    target: Vec<u8>,
    new: wit::NewInode,
) -> Result<wit::Attr, wit::ErrorCode> {
    let new = new_inode(new);
    with_fs::<E, _>("symlink", |fs| {
        fs.symlink(parent, &name, &target, &new).map_err(|e| e.context(format!("directory {parent}")))
    })
    .map(attr)
}

pub fn link<E: Export>(
    ino: u64,
    parent: u64,
    name: Vec<u8>,
    time: wit::Timestamp,
) -> Result<wit::Attr, wit::ErrorCode> {
    with_fs::<E, _>("link", |fs| {
        fs.link(ino, parent, &name, from_ts(time)).map_err(|e| e.context(format!("inode {ino} into {parent}")))
    })
    .map(attr)
}

pub fn unlink<E: Export>(parent: u64, name: Vec<u8>, time: wit::Timestamp) -> Result<wit::Unlinked, wit::ErrorCode> {
    with_fs::<E, _>("unlink", |fs| {
        fs.unlink(parent, &name, from_ts(time)).map_err(|e| e.context(format!("directory {parent}")))
    })
    .map(unlinked)
}

pub fn rmdir<E: Export>(parent: u64, name: Vec<u8>, time: wit::Timestamp) -> Result<u64, wit::ErrorCode> {
    with_fs::<E, _>("rmdir", |fs| {
        fs.rmdir(parent, &name, from_ts(time)).map_err(|e| e.context(format!("directory {parent}")))
    })
}

pub fn rename<E: Export>(
    parent: u64,
    name: Vec<u8>,
    new_parent: u64,
    new_name: Vec<u8>,
    flags: wit::RenameFlags,
    time: wit::Timestamp,
) -> Result<Option<wit::Unlinked>, wit::ErrorCode> {
    let flags = RenameFlags {
        no_replace: flags.contains(wit::RenameFlags::NO_REPLACE),
        exchange: flags.contains(wit::RenameFlags::EXCHANGE),
    };
    with_fs::<E, _>("rename", |fs| {
        fs.rename(parent, &name, new_parent, &new_name, flags, from_ts(time))
            .map_err(|e| e.context(format!("directory {parent} to {new_parent}")))
    })
    .map(|r| r.map(unlinked))
}

pub fn setattr<E: Export>(ino: u64, c: wit::AttrChanges) -> Result<wit::Attr, wit::ErrorCode> {
    let changes = AttrChanges {
        perm: c.perm,
        uid: c.uid,
        gid: c.gid,
        size: c.size,
        atime: c.atime.map(from_ts),
        mtime: c.mtime.map(from_ts),
        ctime: c.ctime.map(from_ts),
    };
    with_fs::<E, _>("setattr", |fs| fs.setattr(ino, &changes).map_err(|e| e.context(format!("inode {ino}")))).map(attr)
}

pub fn setxattr<E: Export>(
    ino: u64,
    name: Vec<u8>,
    value: Vec<u8>,
    flags: wit::XattrFlags,
    time: wit::Timestamp,
) -> Result<(), wit::ErrorCode> {
    let flags = XattrFlags {
        create: flags.contains(wit::XattrFlags::CREATE),
        replace: flags.contains(wit::XattrFlags::REPLACE),
    };
    with_fs::<E, _>("setxattr", |fs| {
        fs.setxattr(ino, &name, &value, flags, from_ts(time)).map_err(|e| e.context(format!("inode {ino}")))
    })
}

pub fn removexattr<E: Export>(ino: u64, name: Vec<u8>, time: wit::Timestamp) -> Result<(), wit::ErrorCode> {
    with_fs::<E, _>("removexattr", |fs| {
        fs.removexattr(ino, &name, from_ts(time)).map_err(|e| e.context(format!("inode {ino}")))
    })
}

pub fn ioend<E: Export>(ino: u64, offset: u64, written: u64, time: wit::Timestamp) -> Result<u64, wit::ErrorCode> {
    with_fs::<E, _>("ioend", |fs| {
        fs.ioend(ino, offset, written, from_ts(time)).map_err(|e| e.context(format!("inode {ino} offset {offset}")))
    })
}

pub fn fallocate<E: Export>(
    ino: u64,
    offset: u64,
    length: u64,
    mode: wit::FallocateFlags,
    time: wit::Timestamp,
) -> Result<wit::Attr, wit::ErrorCode> {
    let mode = FallocateFlags {
        keep_size: mode.contains(wit::FallocateFlags::KEEP_SIZE),
        punch_hole: mode.contains(wit::FallocateFlags::PUNCH_HOLE),
        zero_range: mode.contains(wit::FallocateFlags::ZERO_RANGE),
        collapse_range: mode.contains(wit::FallocateFlags::COLLAPSE_RANGE),
        insert_range: mode.contains(wit::FallocateFlags::INSERT_RANGE),
    };
    with_fs::<E, _>("fallocate", |fs| {
        fs.fallocate(ino, offset, length, mode, from_ts(time)).map_err(|e| e.context(format!("inode {ino}")))
    })
    .map(attr)
}

pub fn fsync<E: Export>(ino: u64, datasync: bool) -> Result<(), wit::ErrorCode> {
    with_fs::<E, _>("fsync", |fs| fs.fsync(ino, datasync).map_err(|e| e.context(format!("inode {ino}"))))
}

pub fn syncfs<E: Export>() -> Result<(), wit::ErrorCode> {
    with_fs::<E, _>("syncfs", |fs| fs.syncfs())
}

pub fn evict<E: Export>(ino: u64) -> Result<(), wit::ErrorCode> {
    with_fs::<E, _>("evict", |fs| fs.evict(ino).map_err(|e| e.context(format!("inode {ino}"))))
}

pub fn unmount<E: Export>() -> Result<(), wit::ErrorCode> {
    with_fs::<E, _>("unmount", |fs| fs.unmount())
}

/// Implement the generated `Guest` trait for `$export` (an [`Export`]) and
/// export it. Used by [`crate::export!`].
#[macro_export]
#[doc(hidden)]
macro_rules! export_glue {
    ($export:ident) => {
        use $crate::__private::bindings::exports::fshost::plugin::filesystem as __fshost_fs;
        use $crate::__private::bindings::fshost::plugin::types as __fshost_t;
        impl __fshost_fs::Guest for $export {
            fn mount(o: __fshost_t::MountOptions) -> Result<__fshost_t::FsInfo, __fshost_t::ErrorCode> {
                $crate::__private::mount::<$export>(o)
            }
            fn statfs() -> Result<__fshost_t::FsInfo, __fshost_t::ErrorCode> {
                $crate::__private::statfs::<$export>()
            }
            fn getattr(ino: u64) -> Result<__fshost_t::Attr, __fshost_t::ErrorCode> {
                $crate::__private::getattr::<$export>(ino)
            }
            fn lookup_name(parent: u64, name: Vec<u8>) -> Result<__fshost_t::Attr, __fshost_t::ErrorCode> {
                $crate::__private::lookup::<$export>(parent, name)
            }
            fn readdir(ino: u64, cookie: u64, max: u32) -> Result<Vec<__fshost_t::DirEntry>, __fshost_t::ErrorCode> {
                $crate::__private::readdir::<$export>(ino, cookie, max)
            }
            fn readdirplus(
                ino: u64,
                cookie: u64,
                max: u32,
            ) -> Result<Vec<__fshost_t::DirEntryPlus>, __fshost_t::ErrorCode> {
                $crate::__private::readdirplus::<$export>(ino, cookie, max)
            }
            fn readlink(ino: u64) -> Result<Vec<u8>, __fshost_t::ErrorCode> {
                $crate::__private::readlink::<$export>(ino)
            }
            fn listxattr(ino: u64) -> Result<Vec<Vec<u8>>, __fshost_t::ErrorCode> {
                $crate::__private::listxattr::<$export>(ino)
            }
            fn getxattr(ino: u64, name: Vec<u8>) -> Result<Vec<u8>, __fshost_t::ErrorCode> {
                $crate::__private::getxattr::<$export>(ino, name)
            }
            fn iomap_begin(
                ino: u64,
                offset: u64,
                length: u64,
                flags: __fshost_t::IomapFlags,
            ) -> Result<Vec<__fshost_t::Mapping>, __fshost_t::ErrorCode> {
                $crate::__private::iomap_begin::<$export>(ino, offset, length, flags)
            }
        }
        use $crate::__private::bindings::exports::fshost::plugin::writer as __fshost_w;
        impl __fshost_w::Guest for $export {
            fn begin_write() -> Result<(), String> {
                $crate::__private::begin_write::<$export>()
            }
            fn create(p: u64, n: Vec<u8>, new: __fshost_t::NewInode) -> Result<__fshost_t::Attr, __fshost_t::ErrorCode> {
                $crate::__private::create::<$export>(p, n, new)
            }
            fn symlink(
                p: u64,
                n: Vec<u8>,
                t: Vec<u8>,
                new: __fshost_t::NewInode,
            ) -> Result<__fshost_t::Attr, __fshost_t::ErrorCode> {
                $crate::__private::symlink::<$export>(p, n, t, new)
            }
            fn link(i: u64, p: u64, n: Vec<u8>, t: __fshost_t::Timestamp) -> Result<__fshost_t::Attr, __fshost_t::ErrorCode> {
                $crate::__private::link::<$export>(i, p, n, t)
            }
            fn unlink(p: u64, n: Vec<u8>, t: __fshost_t::Timestamp) -> Result<__fshost_t::Unlinked, __fshost_t::ErrorCode> {
                $crate::__private::unlink::<$export>(p, n, t)
            }
            fn rmdir(p: u64, n: Vec<u8>, t: __fshost_t::Timestamp) -> Result<u64, __fshost_t::ErrorCode> {
                $crate::__private::rmdir::<$export>(p, n, t)
            }
            fn rename(
                p: u64,
                n: Vec<u8>,
                np: u64,
                nn: Vec<u8>,
                f: __fshost_t::RenameFlags,
                t: __fshost_t::Timestamp,
            ) -> Result<Option<__fshost_t::Unlinked>, __fshost_t::ErrorCode> {
                $crate::__private::rename::<$export>(p, n, np, nn, f, t)
            }
            fn setattr(i: u64, c: __fshost_t::AttrChanges) -> Result<__fshost_t::Attr, __fshost_t::ErrorCode> {
                $crate::__private::setattr::<$export>(i, c)
            }
            fn setxattr(
                i: u64,
                n: Vec<u8>,
                v: Vec<u8>,
                f: __fshost_t::XattrFlags,
                t: __fshost_t::Timestamp,
            ) -> Result<(), __fshost_t::ErrorCode> {
                $crate::__private::setxattr::<$export>(i, n, v, f, t)
            }
            fn removexattr(i: u64, n: Vec<u8>, t: __fshost_t::Timestamp) -> Result<(), __fshost_t::ErrorCode> {
                $crate::__private::removexattr::<$export>(i, n, t)
            }
            fn ioend(i: u64, o: u64, w: u64, t: __fshost_t::Timestamp) -> Result<u64, __fshost_t::ErrorCode> {
                $crate::__private::ioend::<$export>(i, o, w, t)
            }
            fn fallocate(
                i: u64,
                o: u64,
                l: u64,
                m: __fshost_t::FallocateFlags,
                t: __fshost_t::Timestamp,
            ) -> Result<__fshost_t::Attr, __fshost_t::ErrorCode> {
                $crate::__private::fallocate::<$export>(i, o, l, m, t)
            }
            fn fsync(i: u64, d: bool) -> Result<(), __fshost_t::ErrorCode> {
                $crate::__private::fsync::<$export>(i, d)
            }
            fn syncfs() -> Result<(), __fshost_t::ErrorCode> {
                $crate::__private::syncfs::<$export>()
            }
            fn evict(i: u64) -> Result<(), __fshost_t::ErrorCode> {
                $crate::__private::evict::<$export>(i)
            }
            fn unmount() -> Result<(), __fshost_t::ErrorCode> {
                $crate::__private::unmount::<$export>()
            }
        }
        $crate::__private::bindings::__fshost_export_world!($export with_types_in $crate::__private::bindings);
    };
}
