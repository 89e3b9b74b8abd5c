"""The hellofs on-disk records (guests/hello/README.md), parsed with bounds checks.

Every field comes from `struct.unpack_from` on a buffer whose length was
checked first, and every number that later code adds or multiplies is
checked against the u64 range and the device, so a damaged image is a
`corrupted` (or `io`) FsError naming the record, never an exception.
"""

import struct
from collections import namedtuple

from .errors import FsError, NOT_FOUND, INVALID, corrupted

MAGIC = b"FSHOSTH1"
HEADER_SIZE = 56
INODE_SIZE = 64
EXTENT_SIZE = 24
DIRENT_HEAD = 8
# Most extents or directory entries one inode may have (as the Rust guest).
MAX_COUNT = 1 << 20
# Largest directory payload read in one go.
MAX_DIR_BYTES = 64 << 20
U64_MAX = (1 << 64) - 1

_HEADER = struct.Struct("<8sII32sQ")
_INODE = struct.Struct("<IIIIQqIIQQ8x")
_EXTENT = struct.Struct("<QQQ")
_DIRENT = struct.Struct("<IHH")

Header = namedtuple("Header", "block_size inode_count label inode_table")
Inode = namedtuple("Inode", "mode uid gid nlink size mtime mtime_ns count payload rdev")
Extent = namedtuple("Extent", "file_offset length device_offset")


def _unpack(fmt, raw, at, what):
    """`fmt` unpacked at byte `at` of `raw`, or a corrupted error naming `what`."""
    if at < 0 or at + fmt.size > len(raw):
        raise corrupted(f"{what}: record at byte {at} runs past the {len(raw)} bytes read")
    return fmt.unpack_from(raw, at)


def read_header(device):
    """The header at byte 0, checked."""
    try:
        raw = device.read(0, HEADER_SIZE)
    except FsError as e:
        raise e.context("hellofs header") from None
    magic, block_size, inode_count, label, inode_table = _unpack(_HEADER, raw, 0, "header")
    if magic != MAGIC:
        raise FsError(INVALID, "not a hellofs image (bad magic)")
    if not 512 <= block_size <= 65536 or block_size & (block_size - 1):
        raise corrupted(f"header: block size {block_size} is not a power of two in 512..=65536")
    if inode_count == 0:
        raise corrupted("header: no inodes")
    end = inode_table + inode_count * INODE_SIZE
    if end > device.size:
        raise corrupted(
            f"header: inode table of {inode_count} inodes at byte {inode_table} "
            f"does not fit the {device.size}-byte device"
        )
    return Header(block_size, inode_count, label.split(b"\0", 1)[0], inode_table)


def read_inode(device, header, ino):
    """Inode `ino` (1-based), as stored."""
    if not 1 <= ino <= header.inode_count:
        raise FsError(NOT_FOUND, f"inode {ino} is outside 1..={header.inode_count}")
    at = header.inode_table + (ino - 1) * INODE_SIZE
    try:
        raw = device.read(at, INODE_SIZE)
    except FsError as e:
        raise e.context(f"inode {ino}") from None
    return Inode(*_unpack(_INODE, raw, 0, f"inode {ino}"))


def _checked_count(inode):
    if inode.count > MAX_COUNT:
        raise corrupted(f"{inode.count} records is more than the {MAX_COUNT} allowed")
    return inode.count


def read_extents(device, inode):
    """The extent table of a regular file: sorted, non-empty, non-overlapping, no overflow."""
    count = _checked_count(inode)
    raw = device.read(inode.payload, count * EXTENT_SIZE)
    out = []
    previous_end = 0
    for i in range(count):
        e = Extent(*_unpack(_EXTENT, raw, i * EXTENT_SIZE, f"extent {i}"))
        end = e.file_offset + e.length
        if e.length == 0 or end > U64_MAX or e.file_offset < previous_end:
            raise corrupted(f"extent {i} ({e}) is empty, overflows or overlaps")
        out.append(e)
        previous_end = end
    return out


def read_dir(device, inode):
    """The entries of a directory: a list of (inode number, name bytes)."""
    count = _checked_count(inode)
    if inode.size > MAX_DIR_BYTES:
        raise corrupted(f"directory of {inode.size} bytes")
    raw = device.read(inode.payload, inode.size)
    out = []
    at = 0
    for _ in range(count):
        ino, name_len, _pad = _unpack(_DIRENT, raw, at, "directory entry")
        start = at + DIRENT_HEAD
        if start + name_len > len(raw):
            raise corrupted(f"entry at byte {at}: name of {name_len} bytes runs past the directory")
        name = raw[start : start + name_len]
        if not name or b"/" in name or b"\0" in name:
            raise corrupted(f"entry at byte {at} has an invalid name")
        out.append((ino, name))
        at = start + name_len
    return out
