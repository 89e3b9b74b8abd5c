#!/bin/sh
# Seed corpora for the ext4 fuzz targets, cut from real mkfs.ext4 images.
#
# Usage: guests/ext4/fuzz/make-corpus.sh [CORPUS_DIR]   (default: ./corpus
# next to this script). Needs mkfs.ext4, debugfs, e2fsck and setfattr
# (Debian: e2fsprogs, attr). Each target's seeds go to CORPUS_DIR/TARGET/.
#
# What a seed is follows guests/ext4/src/fuzzing.rs: an option byte, the
# structure's bytes, then the image's blocks from 64 on (the fixture's
# payload starts at block 64, so block pointers of a 1 KiB-block image of
# at most 257 KiB still lead to the same bytes).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PATH="$PATH:/sbin:/usr/sbin"

for t in superblock group_descriptors inode extent_tree block_map dir_block htree xattr journal image; do
    mkdir -p "$out/$t"
done

# A source tree with one of each thing the parsers see.
src=$work/src
mkdir -p "$src/big" "$src/sub/deeper"
i=0
while [ $i -lt 120 ]; do
    : > "$src/big/name-$i-padding" # empty: no data block
    i=$((i + 1))
done
i=0
while [ $i -lt 60 ]; do # a sparse file: one extent per written KiB
    printf 'x' | dd of="$src/frag" bs=1 seek=$((i * 2048)) conv=notrunc status=none
    i=$((i + 1))
done
head -c 20000 /dev/zero | tr '\0' 'a' > "$src/sub/deeper/file"
printf tiny > "$src/tiny"
ln -s tiny "$src/fast"
ln -s "$(printf 's%.0s' $(seq 300))" "$src/sub/slow"
setfattr -n user.a -v in-inode "$src/tiny"
setfattr -n user.b -v "$(printf 'B%.0s' $(seq 600))" "$src/tiny"

# bytes FILE OFFSET COUNT: COUNT bytes of FILE from byte OFFSET.
bytes() { dd if="$1" bs=1 skip="$2" count="$3" status=none; }
# blocks FILE FIRST COUNT: COUNT 1 KiB blocks of FILE from block FIRST.
blocks() { dd if="$1" bs=1024 skip="$2" count="$3" status=none; }
opt() { printf "\\$(printf %03o "$1")"; }
# Byte offset of inode NUMBER (debugfs imap).
inode_at() {
    set -- $(debugfs -R "imap <$2>" "$1" 2>/dev/null | sed -n 's/.*located at block \([0-9]*\), offset \(0x[0-9a-f]*\).*/\1 \2/p')
    echo $(($1 * 1024 + $2))
}
ino_of() { debugfs -R "stat $2" "$1" 2>/dev/null | awk '/^Inode:/ { print $2; exit }'; }

# name, option byte, mkfs arguments (1 KiB blocks, 256 KiB).
make_image() {
    name=$1 opt=$2
    shift 2
    img=$work/$name.img
    mkfs.ext4 -q -F -d "$src" -b 1024 -N 192 "$@" "$img" 256k
    e2fsck -fyD "$img" >/dev/null 2>&1 || true
    cp "$img" "$out/image/$name"
    bytes "$img" 1024 1024 > "$out/superblock/$name"
    { opt "$opt"; blocks "$img" 2 1; blocks "$img" 64 200; } > "$out/group_descriptors/$name"
    for path in / /tiny /frag /fast /sub/slow /sub/deeper/file /big; do
        ino=$(ino_of "$img" "$path")
        at=$(inode_at "$img" "$ino")
        tag=$name-$(echo "$path" | tr / _)
        { opt "$opt"; bytes "$img" "$at" 256; blocks "$img" 64 200; } > "$out/inode/$tag"
        { opt "$opt"; bytes "$img" $((at + 0x28)) 60; blocks "$img" 64 200; } > "$out/extent_tree/$tag"
        { opt "$opt"; bytes "$img" $((at + 0x28)) 60; blocks "$img" 64 200; } > "$out/block_map/$tag"
        acl=$(debugfs -R "stat $path" "$img" 2>/dev/null | sed -n 's/.*File ACL: \([0-9]*\).*/\1/p')
        { opt "$opt"; bytes "$img" $((at + 160)) 96; blocks "$img" "${acl:-0}" 1; } > "$out/xattr/$tag"
    done
    for dir in / /big /sub; do
        tag=$name-$(echo "$dir" | tr / _)
        : > "$work/dir"
        for b in $(debugfs -R "blocks $dir" "$img" 2>/dev/null); do
            blocks "$img" "$b" 1 >> "$work/dir"
        done
        { opt "$opt"; cat "$work/dir"; } > "$out/dir_block/$tag"
        { opt "$opt"; cat "$work/dir"; } > "$out/htree/$tag"
    done
}

# Option bits (fuzzing.rs Fixture::new): 1 metadata_csum, 2 verify, 4 64bit,
# 8 inline_data.
make_image ext4 3 -I 256 -O ^has_journal
make_image ext4-nocsum 1 -I 256 -O ^has_journal
make_image ext4-64bit 7 -I 256 -O ^has_journal,64bit
make_image ext4-inline 9 -I 256 -O ^has_journal,inline_data
make_image ext4-plain 0 -I 256 -O ^has_journal,^metadata_csum,^dir_index
make_image ext2 0 -t ext2 -I 256

# A journal that needs recovery: log blocks of the root directory and two
# inode table blocks (debugfs jo/jw/jc), then keep the image (2 MiB) and the
# journal's first 64 blocks.
jimg=$work/journal.img
mkfs.ext4 -q -F -d "$src" -b 1024 -I 256 "$jimg" 2m
root_block=$(debugfs -R "blocks /" "$jimg" 2>/dev/null | awk '{ print $1 }')
blocks "$jimg" "$root_block" 1 > "$work/b1"
blocks "$jimg" 5 1 > "$work/b2"
printf 'jo\njw -b %s %s\njw -b 5 %s\njc\njo\njw -r 5\njc\n' "$root_block" "$work/b1" "$work/b2" > "$work/script"
debugfs -w -f "$work/script" "$jimg" >/dev/null 2>&1
cp "$jimg" "$out/image/journal-dirty"
debugfs -R "cat <8>" "$jimg" 2>/dev/null | head -c $((64 * 1024)) > "$work/log"
{ opt 0; cat "$work/log"; } > "$out/journal/csum-v3"
mkfs.ext4 -q -F -b 1024 -O ^metadata_csum "$jimg" 2m
debugfs -w -f "$work/script" "$jimg" >/dev/null 2>&1
debugfs -R "cat <8>" "$jimg" 2>/dev/null | head -c $((64 * 1024)) > "$work/log"
{ opt 0; cat "$work/log"; } > "$out/journal/plain"

for t in "$out"/*; do
    echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"
done
