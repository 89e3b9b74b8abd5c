"""The device, as the host hands it to the guest, with a small block cache.

Every read is checked against the device size first, so a bad offset from
the image is an `io` error with the numbers in its message, not a host
refusal without context. Metadata (inodes, directories, extent tables) is
read in small pieces, again and again; caching whole blocks saves most host
calls, as the Rust SDK's `Device` does.
"""

from .errors import FsError, IO

# The host promises at least this much per `read` call (wit/fshost.wit).
MAX_READ = 1 << 20
# Reads larger than this bypass the cache: they are not metadata.
CACHE_BYPASS = 64 * 1024


class Device:
    """Reads bytes through `read(offset, length) -> bytes` (the WIT import).

    `read_fn` raises FsError on failure; `size` is the device size in bytes.
    """

    def __init__(self, read_fn, size, block_size=4096, capacity=256):
        self._read_fn = read_fn
        self.size = size
        self._block = block_size
        self._capacity = capacity
        self._cache = {}

    def set_cache(self, block_size, capacity):
        """Cache `capacity` blocks of `block_size` bytes; drops what was cached."""
        self._block = block_size
        self._capacity = max(capacity, 1)
        self._cache = {}

    def read(self, offset, length):
        """`length` bytes at byte `offset`, or FsError(io) if not inside the device."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FsError(IO, f"read of {length} bytes at byte {offset} is past the end of the {self.size}-byte device")
        if length > CACHE_BYPASS:
            return self._read_direct(offset, length)
        out = bytearray()
        pos, end, bs = offset, offset + length, self._block
        while pos < end:
            index = pos // bs
            block = self._cached_block(index)
            start = pos - index * bs
            take = min(end - pos, len(block) - start)
            if take <= 0:
                raise FsError(IO, f"device block {index} is short")
            out += block[start : start + take]
            pos += take
        return bytes(out)

    def _cached_block(self, index):
        block = self._cache.pop(index, None)
        if block is None:
            at = index * self._block
            block = self._read_direct(at, min(self._block, self.size - at))
            if len(self._cache) >= self._capacity:
                # dicts keep insertion order and hits are re-inserted below,
                # so the first key is the least recently used block.
                del self._cache[next(iter(self._cache))]
        self._cache[index] = block
        return block

    def _read_direct(self, offset, length):
        parts = []
        done = 0
        while done < length:
            want = min(length - done, MAX_READ)
            got = self._read_fn(offset + done, want)
            if len(got) != want:
                raise FsError(IO, f"device returned {len(got)} of {want} bytes at {offset + done}")
            parts.append(got)
            done += want
        return b"".join(parts)
