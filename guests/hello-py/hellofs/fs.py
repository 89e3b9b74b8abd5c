"""A mounted hellofs image: the answers to the fshost filesystem questions.

Values are plain Python (file types as the names of the WIT `file-type`
enum, mappings as tuples); `app.py` turns them into the generated WIT
types. Like the Rust guest (guests/hello/src/lib.rs), it trusts the device
offsets in extent tables: checking them against the device is the host's
job, and the tests rely on that.
"""

from collections import namedtuple

from . import layout
from .errors import FsError, NOT_FOUND, NOT_DIR, IS_DIR, INVALID, corrupted

_KINDS = {
    0o100000: "REGULAR",
    0o040000: "DIRECTORY",
    0o120000: "SYMLINK",
    0o020000: "CHAR_DEVICE",
    0o060000: "BLOCK_DEVICE",
    0o010000: "FIFO",
    0o140000: "SOCKET",
}

# Longest symlink target this guest reads.
MAX_SYMLINK = 4096
# Parsed directories kept between calls, counted in entries. Parsing is
# the cost of a lookup in Python (~5 us an entry), and the image is
# read-only, so a parse stays true for the life of the mount.
DIR_CACHE_ENTRIES = 1 << 16

Attr = namedtuple("Attr", "ino kind perm nlink uid gid size blocks mtime mtime_ns rdev")
Info = namedtuple("Info", "root block_size name_max total_blocks total_inodes fs_type label")
# kind: "HOLE" (device_offset None) or "MAPPED".
Mapping = namedtuple("Mapping", "offset length kind device_offset")


def file_kind(mode):
    """The WIT file-type name of `mode`'s type bits, or None."""
    return _KINDS.get(mode & 0o170000)


class Hello:
    """hellofs on `device` (a `device.Device`)."""

    def __init__(self, device):
        self.device = device
        self.header = layout.read_header(device)
        device.set_cache(self.header.block_size, 256)
        # ino -> (entries, {name: index of its first entry}), least recently used first.
        self._dirs = {}
        self._dir_entries = 0

    def info(self):
        h = self.header
        return Info(1, h.block_size, 255, self.device.size // h.block_size, h.inode_count, "hellofs", h.label)

    def _inode(self, ino):
        return layout.read_inode(self.device, self.header, ino)

    def _kind(self, ino, inode):
        kind = file_kind(inode.mode)
        if kind is None:
            raise corrupted(f"inode {ino}: mode {inode.mode:o} has no valid type")
        return kind

    def _attr(self, ino, inode):
        return Attr(
            ino=ino,
            kind=self._kind(ino, inode),
            perm=inode.mode & 0o7777,
            nlink=inode.nlink,
            uid=inode.uid,
            gid=inode.gid,
            size=inode.size,
            blocks=-(-inode.size // 512),
            mtime=inode.mtime,
            mtime_ns=min(inode.mtime_ns, 999_999_999),
            rdev=inode.rdev,
        )

    def _dir(self, ino):
        """Directory `ino` as (entries, {name: index}); errors are not cached."""
        cached = self._dirs.pop(ino, None)
        if cached is None:
            inode = self._inode(ino)
            if file_kind(inode.mode) != "DIRECTORY":
                raise FsError(NOT_DIR)
            try:
                entries = layout.read_dir(self.device, inode)
            except FsError as e:
                raise e.context(f"directory {ino}") from None
            index = {}
            for i, (_, name) in enumerate(entries):
                index.setdefault(name, i)
            cached = (entries, index)
            self._dir_entries += len(entries)
            while self._dirs and self._dir_entries > DIR_CACHE_ENTRIES:
                oldest = next(iter(self._dirs))
                self._dir_entries -= len(self._dirs.pop(oldest)[0])
        self._dirs[ino] = cached
        return cached

    def getattr(self, ino):
        return self._attr(ino, self._inode(ino))

    def lookup(self, parent, name):
        entries, index = self._dir(parent)
        found = index.get(name)
        if found is None:
            raise FsError(NOT_FOUND)
        return self.getattr(entries[found][0])

    def readdir(self, ino, cookie, max_entries):
        """Up to `max_entries` (entry ino, kind, name, cookie) after `cookie`; cookie = index + 1."""
        entries, _ = self._dir(ino)
        out = []
        for index in range(cookie, min(len(entries), cookie + max_entries)):
            child, name = entries[index]
            out.append((child, self._kind(child, self._inode(child)), name, index + 1))
        return out

    def readlink(self, ino):
        inode = self._inode(ino)
        if file_kind(inode.mode) != "SYMLINK":
            raise FsError(INVALID, f"inode {ino} is not a symlink")
        if inode.size > MAX_SYMLINK:
            raise corrupted(f"inode {ino}: symlink target of {inode.size} bytes")
        return self.device.read(inode.payload, inode.size)

    def iomap_begin(self, ino, offset, length):
        inode = self._inode(ino)
        kind = file_kind(inode.mode)
        if kind == "DIRECTORY":
            raise FsError(IS_DIR)
        if kind != "REGULAR":
            raise FsError(INVALID, f"inode {ino} is not a regular file")
        try:
            extents = layout.read_extents(self.device, inode)
        except FsError as e:
            raise e.context(f"inode {ino}") from None
        return map_range(extents, offset, length, inode.size, self.header.block_size)


def map_range(extents, offset, length, size, block):
    """Answer iomap-begin from a sorted extent table: the extent or hole that
    contains `offset`, then the following ones until `offset + length` or the
    end of the file (rounded up to a block, at most 2^64 - 1) is covered."""
    eof = min(-(-size // block) * block, layout.U64_MAX)
    want_end = min(offset + max(length, 1), eof)
    out = []
    pos = offset - offset % block
    for e in extents:
        if pos >= want_end:
            break
        e_end = e.file_offset + e.length
        if e_end <= pos:
            continue
        if e.file_offset > pos:
            out.append(Mapping(pos, e.file_offset - pos, "HOLE", None))
            pos = e.file_offset
            if pos >= want_end:
                break
        out.append(Mapping(e.file_offset, e.length, "MAPPED", e.device_offset))
        pos = e_end
    if pos < want_end:
        out.append(Mapping(pos, eof - pos, "HOLE", None))
    return out
