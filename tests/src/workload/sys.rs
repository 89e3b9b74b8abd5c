//! Thin, checked wrappers over the syscalls a workload makes, each taking a
//! path as bytes and returning `io::Result`, so a caller can keep the errno
//! as the result of the operation. Nothing here follows a symlink unless
//! the syscall always does (open, truncate).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use crate::scratch::c_path;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn c_bytes(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// open(2) with raw flags and a creation mode.
pub fn open(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let c = c_path(path)?;
    // SAFETY: valid C string; open has no memory effects.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// write(2) until all of `buf` is written (at the fd's offset, which
/// O_APPEND moves to the end first).
pub fn write_all(file: &File, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: a valid fd and a buffer of the given length.
        let n = unsafe { libc::write(file.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// The fd's offset (lseek SEEK_CUR).
pub fn position(file: &File) -> io::Result<u64> {
    // SAFETY: a valid fd.
    let pos = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_CUR) };
    if pos < 0 { Err(io::Error::last_os_error()) } else { Ok(pos as u64) }
}

pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: a valid fd.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) })
}

pub fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdir(c.as_ptr(), mode) })
}

pub fn rmdir(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::rmdir(c.as_ptr()) })
}

pub fn unlink(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlink(c.as_ptr()) })
}

/// renameat2 with `flags` (0, RENAME_NOREPLACE, RENAME_EXCHANGE).
pub fn rename(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (f, t) = (c_path(from)?, c_path(to)?);
    // SAFETY: valid C strings.
    check(unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) })
}

/// link(2): a symlink is linked itself.
pub fn link(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (c_path(from)?, c_path(to)?);
    // SAFETY: valid C strings.
    check(unsafe { libc::linkat(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), 0) })
}

pub fn symlink(target: &[u8], path: &Path) -> io::Result<()> {
    let (t, p) = (c_bytes(target)?, c_path(path)?);
    // SAFETY: valid C strings.
    check(unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) })
}

pub fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(c.as_ptr(), mode, dev) })
}

/// chmod(2), which follows symlinks (Linux has no lchmod).
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(c.as_ptr(), mode) })
}

pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

/// utimensat(AT_SYMLINK_NOFOLLOW) with explicit (seconds, nanoseconds).
pub fn utimens(path: &Path, atime: (i64, u32), mtime: (i64, u32)) -> io::Result<()> {
    let c = c_path(path)?;
    let times = [
        libc::timespec { tv_sec: atime.0, tv_nsec: atime.1.into() },
        libc::timespec { tv_sec: mtime.0, tv_nsec: mtime.1.into() },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// lsetxattr with `flags` (0, XATTR_CREATE, XATTR_REPLACE).
pub fn setxattr(path: &Path, name: &[u8], value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let (c, n) = (c_path(path)?, c_bytes(name)?);
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags) })
}

pub fn removexattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let (c, n) = (c_path(path)?, c_bytes(name)?);
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) })
}

/// Every xattr name of `path` itself (llistxattr), as bytes, in the order
/// listed.
pub fn listxattr(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = c_path(path)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid C string and a buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf.split(|&b| b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 1 << 20 {
            return Err(err);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// The value of xattr `name` of `path` itself (lgetxattr).
pub fn getxattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let (c, n) = (c_path(path)?, c_bytes(name)?);
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid C strings and a buffer of the given length.
        let got = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 1 << 20 {
            return Err(err);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// Reads at `offset` until `buf` is full or end of file; the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The errno of an error, or EIO for one that has none (a failed
/// conversion, never a syscall).
pub fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}
