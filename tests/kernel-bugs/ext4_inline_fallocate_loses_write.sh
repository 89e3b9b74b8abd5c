#!/bin/bash
# Linux ext4 (seen on 6.18) with inline_data loses a successful write:
#
#   1. a small regular file whose data is inline (here 50 bytes of 'A');
#   2. fallocate(2) on it, any mode (0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE,
#      ZERO_RANGE, ...), any range: ext4_fallocate converts the inline data
#      to an extent-mapped block (debugfs shows EXTENTS afterwards);
#   3. pwrite(2) through a new descriptor, with no sync between 2 and 3;
#   4. unmount, mount again: the file holds the bytes from step 1, the
#      write of step 3 is gone (its size change stays when it extended the
#      file: zeros after the old bytes). e2fsck -fn finds the image clean.
#
# Reads before the unmount return the written bytes (page cache). A
# `sync -f` between steps 2 and 3 makes the write survive. No FUSE or fshost
# is involved: found by tests/tests/ext4_write.rs, whose script model
# (tests/src/workload/model.rs) showed fshost right and the kernel wrong
# (FSHOST_WRITE_OPS=3000 FSHOST_WRITE_SEED=3, inline_data layout).
#
# usage (root): ext4_inline_fallocate_loses_write.sh [FALLOC_MODE] [WRITE_LEN]
# Exit status 1 when the write was lost.
set -euo pipefail
mode=${1:-0} wlen=${2:-1}
d=$(mktemp -d)
mnt=$d/mnt
mkdir "$mnt"
truncate -s 64M "$d/img"
mkfs.ext4 -q -F -O inline_data "$d/img"
dev=$(losetup -f --show "$d/img")
cleanup() { umount "$mnt" 2>/dev/null || true; losetup -d "$dev"; rm -rf "$d"; }
trap cleanup EXIT
mount -t ext4 "$dev" "$mnt"
python3 - "$mnt/f" "$mode" "$wlen" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
path, mode, wlen = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3])
fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
os.pwrite(fd, b"A" * 50, 0)                       # 1. an inline file
os.close(fd)
fd = os.open(path, os.O_WRONLY)
if libc.fallocate(fd, mode, 0, 1) != 0:           # 2. converts it to extents
    sys.exit(f"fallocate mode {mode:#x}: {os.strerror(ctypes.get_errno())}")
os.close(fd)
fd = os.open(path, os.O_WRONLY)
os.pwrite(fd, b"B" * wlen, 0)                     # 3. reported success
os.close(fd)
PY
echo "before unmount: $(head -c 8 "$mnt/f" | od -A n -c)"
umount "$mnt"
mount -t ext4 -o ro "$dev" "$mnt"
got=$(head -c 8 "$mnt/f")
echo "after remount:  $(printf %s "$got" | od -A n -c) (size $(stat -c %s "$mnt/f"))"
umount "$mnt"
e2fsck -fn "$dev" >/dev/null 2>&1 && echo "e2fsck -fn: clean" || echo "e2fsck -fn: problems"
if [ "${got:0:1}" = B ]; then echo "the write survived"; else echo "THE WRITE WAS LOST"; exit 1; fi
