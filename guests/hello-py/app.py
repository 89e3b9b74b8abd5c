"""hello-py.wasm: hellofs (package `hellofs`) exported as an fshost guest.

componentize-py builds this module into a component of the world
`filesystem-guest` (wit/fshost.wit) and calls the methods of the class
`Filesystem` below for the exported interface. This module is the only one
that names generated types (`wit_world`): it keeps the mounted filesystem,
turns plain answers into WIT records, and turns every failure into an
`error-code`. An exception that escaped an export would trap the instance
(the host survives, but the operation fails without a reason), so each
export catches everything: FsError keeps its code, anything else is a bug
met on bad data and becomes `corrupted`, and the message goes to the log.
"""

import functools

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import block_device, types
from wit_world.imports import log as wit_log

from hellofs.device import Device
from hellofs.errors import FsError, INVALID, NO_DATA
from hellofs.fs import Hello

# The mounted filesystem of this instance; set by a successful `mount`.
_mounted = None


def _host_read(offset, length):
    try:
        return block_device.read(offset, length)
    except Err as e:
        raise FsError(e.value.name, f"device read of {length} bytes at {offset}") from None


def _log(level, message):
    wit_log.log(level, message)


def _export(op):
    """Wrap an export: FsError and stray exceptions become a logged `error-code`."""

    def wrap(method):
        @functools.wraps(method)
        def guarded(self, *args):
            try:
                return method(self, *args)
            except FsError as e:
                level = wit_log.Level.WARN if e.code in ("CORRUPTED", "IO") else wit_log.Level.DEBUG
                if e.message:
                    _log(level, f"{op}: {e}")
                raise Err(types.ErrorCode[e.code]) from None
            except MemoryError:
                raise Err(types.ErrorCode.NO_MEMORY) from None
            except Exception as e:  # a parser bug met on bad data: not a trap
                _log(wit_log.Level.ERROR, f"{op}: unexpected {type(e).__name__}: {e}")
                raise Err(types.ErrorCode.CORRUPTED) from None

        return guarded

    return wrap


def _fs():
    if _mounted is None:
        raise FsError(INVALID, "called before a successful mount")
    return _mounted


def _timestamp(seconds, nanoseconds):
    return types.Timestamp(seconds=seconds, nanoseconds=nanoseconds)


def _attr(a):
    t = _timestamp(a.mtime, a.mtime_ns)
    return types.Attr(
        ino=a.ino,
        kind=types.FileType[a.kind],
        perm=a.perm,
        nlink=a.nlink,
        uid=a.uid,
        gid=a.gid,
        size=a.size,
        blocks=a.blocks,
        atime=t,
        mtime=t,
        ctime=t,
        crtime=None,
        rdev=a.rdev,
        generation=0,
        flags=types.InodeFlags(0),
    )


def _info(i):
    return types.FsInfo(
        root=i.root,
        block_size=i.block_size,
        name_max=i.name_max,
        total_blocks=i.total_blocks,
        free_blocks=0,
        available_blocks=0,
        total_inodes=i.total_inodes,
        free_inodes=0,
        fs_type=i.fs_type,
        label=i.label,
        uuid=b"",
    )


def _entry(e):
    ino, kind, name, cookie = e
    return types.DirEntry(ino=ino, kind=types.FileType[kind], name=name, cookie=cookie)


def _mapping(m):
    kind = types.MappingKind_Hole() if m.kind == "HOLE" else types.MappingKind_Mapped(m.device_offset)
    return types.Mapping(offset=m.offset, length=m.length, kind=kind)


class Filesystem(exports.Filesystem):
    @_export("mount")
    def mount(self, options):
        global _mounted
        _mounted = None
        fs = Hello(Device(_host_read, block_device.size()))
        info = _info(fs.info())
        _mounted = fs
        return info

    @_export("statfs")
    def statfs(self):
        return _info(_fs().info())

    @_export("getattr")
    def getattr(self, ino):
        return _attr(_fs().getattr(ino))

    @_export("lookup")
    def lookup_name(self, parent, name):
        return _attr(_fs().lookup(parent, name))

    @_export("readdir")
    def readdir(self, ino, cookie, max_entries):
        return [_entry(e) for e in _fs().readdir(ino, cookie, max_entries)]

    @_export("readdirplus")
    def readdirplus(self, ino, cookie, max_entries):
        fs = _fs()
        return [
            types.DirEntryPlus(entry=_entry(e), attr=_attr(fs.getattr(e[0])))
            for e in fs.readdir(ino, cookie, max_entries)
        ]

    @_export("readlink")
    def readlink(self, ino):
        return _fs().readlink(ino)

    @_export("listxattr")
    def listxattr(self, ino):
        _fs()
        return []

    @_export("getxattr")
    def getxattr(self, ino, name):
        _fs()
        raise FsError(NO_DATA)

    @_export("iomap-begin")
    def iomap_begin(self, ino, offset, length, flags):
        return [_mapping(m) for m in _fs().iomap_begin(ino, offset, length)]
