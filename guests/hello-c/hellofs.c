/*
 * hellofs in C: the toy format of guests/hello (layout in
 * guests/hello/README.md) as an fshost guest written against the C bindings
 * that wit-bindgen generates from wit/fshost.wit (world filesystem-guest).
 *
 * Why it exists: to show (and test) that a guest need not be Rust. It answers
 * every question exactly as guests/hello does, so tests/tests/hello.rs runs
 * unchanged against both.
 *
 * What it guarantees: every number read from the image is checked before it
 * is used as a size, an index or an offset into guest memory; a truncated or
 * corrupted image gives the `corrupted` (or `io`) error, never an
 * out-of-bounds read or an overflow. Like guests/hello, it trusts extents'
 * device offsets: checking mappings against the device is the host's job,
 * and the tests rely on a guest that hands the host a bad one.
 *
 * Ownership (wit-bindgen's C conventions): arguments of an exported function
 * belong to it and are freed here; what an export returns must come from
 * malloc (the bindings free it after the host copied it); a list returned by
 * an import (block-device.read) belongs to the caller.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filesystem_guest.h"

typedef exports_fshost_plugin_filesystem_error_code_t err_t;
typedef fshost_plugin_types_file_type_t kind_t;

#define E_NOT_FOUND FSHOST_PLUGIN_TYPES_ERROR_CODE_NOT_FOUND
#define E_NOT_DIR FSHOST_PLUGIN_TYPES_ERROR_CODE_NOT_DIR
#define E_IS_DIR FSHOST_PLUGIN_TYPES_ERROR_CODE_IS_DIR
#define E_CORRUPTED FSHOST_PLUGIN_TYPES_ERROR_CODE_CORRUPTED
#define E_IO FSHOST_PLUGIN_TYPES_ERROR_CODE_IO
#define E_INVALID FSHOST_PLUGIN_TYPES_ERROR_CODE_INVALID
#define E_NO_DATA FSHOST_PLUGIN_TYPES_ERROR_CODE_NO_DATA
#define E_NO_MEMORY FSHOST_PLUGIN_TYPES_ERROR_CODE_NO_MEMORY

/* ---- the on-disk format (guests/hello/README.md) ---- */

#define HEADER_SIZE 56u
#define INODE_SIZE 64u
#define EXTENT_SIZE 24u
#define DIRENT_HEADER 8u
/* Most extents or directory entries one inode may have (as guests/hello). */
#define MAX_COUNT (1u << 20)
/* Largest directory and symlink payloads read (as guests/hello). */
#define MAX_DIR_BYTES (64u << 20)
#define MAX_SYMLINK_BYTES 4096u
/* The host serves at least this much per block-device.read call. */
#define MAX_DEVICE_READ (1u << 20)
#define ROOT_INO 1u
#define NAME_MAX 255u

static const uint8_t MAGIC[8] = {'F', 'S', 'H', 'O', 'S', 'T', 'H', '1'};

/* The header, validated at mount. */
static struct {
    bool mounted;
    uint32_t block_size;
    uint32_t inode_count;
    uint8_t label[32];
    size_t label_len;
    uint64_t inode_table;
    uint64_t device_size;
} fs;

/* One inode record, as stored. */
struct inode {
    uint64_t ino;
    uint32_t mode, uid, gid, nlink;
    uint64_t size;
    int64_t mtime;
    uint32_t mtime_ns;
    uint32_t count;
    uint64_t payload;
    uint64_t rdev;
};

struct extent {
    uint64_t file_offset, length, device_offset;
};

/* The operation being answered, for log lines. */
static const char *current_op = "";

/* ---- logging and errors ---- */

/* The length of the NUL-terminated or NUL-padded bytes in buf[0..cap). */
static size_t bounded_len(const void *buf, size_t cap) {
    const uint8_t *nul = memchr(buf, 0, cap);
    return nul != NULL ? (size_t)(nul - (const uint8_t *)buf) : cap;
}

static void log_message(fshost_plugin_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void log_message(fshost_plugin_log_level_t level, const char *fmt, ...) {
    char buf[512];
    int prefix = snprintf(buf, sizeof buf, "%s: ", current_op);
    if (prefix < 0 || (size_t)prefix >= sizeof buf) {
        prefix = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + prefix, sizeof buf - (size_t)prefix, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    size_t len = bounded_len(buf, sizeof buf);
    filesystem_guest_string_t message = {(uint8_t *)buf, len};
    fshost_plugin_log_log(level, &message); /* borrowed: the host copies it */
}

/* Log why, set *err to `code` and return false: `return fail(...)`. */
static bool fail(err_t *err, err_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool fail(err_t *err, err_t code, const char *fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) {
        bool serious = code == E_CORRUPTED || code == E_IO;
        log_message(serious ? FSHOST_PLUGIN_LOG_LEVEL_WARN : FSHOST_PLUGIN_LOG_LEVEL_DEBUG, "%s", buf);
    }
    *err = code;
    return false;
}

/* ---- bounds-checked little-endian readers ---- */

/* Each reads `buf[at..at+N)` only when it lies inside `len`. */
static bool le16(const uint8_t *buf, size_t len, size_t at, uint16_t *out) {
    if (at > len || len - at < 2) {
        return false;
    }
    *out = (uint16_t)(buf[at] | (uint16_t)(buf[at + 1] << 8));
    return true;
}

static bool le32(const uint8_t *buf, size_t len, size_t at, uint32_t *out) {
    if (at > len || len - at < 4) {
        return false;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        v |= (uint32_t)buf[at + i] << (8 * i);
    }
    *out = v;
    return true;
}

static bool le64(const uint8_t *buf, size_t len, size_t at, uint64_t *out) {
    if (at > len || len - at < 8) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++) {
        v |= (uint64_t)buf[at + i] << (8 * i);
    }
    *out = v;
    return true;
}

/* ---- the device ---- */

/*
 * Read `len` bytes at device byte `offset` into a new malloc'd buffer
 * (*out, which the caller frees; at least one byte is allocated so that
 * *out is never NULL on success). Reads in pieces the host always serves.
 */
static bool device_read(uint64_t offset, size_t len, uint8_t **out, err_t *err) {
    if (len > UINT64_MAX - offset) {
        return fail(err, E_CORRUPTED, "read of %zu bytes at byte %llu overflows", len, (unsigned long long)offset);
    }
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return fail(err, E_NO_MEMORY, "no memory for %zu bytes", len);
    }
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < MAX_DEVICE_READ ? len - done : MAX_DEVICE_READ;
        uint64_t at = offset + done;
        filesystem_guest_list_u8_t got;
        fshost_plugin_block_device_error_code_t code;
        if (!fshost_plugin_block_device_read(at, (uint32_t)want, &got, &code)) {
            free(buf);
            return fail(err, code, "device read of %zu bytes at byte %llu failed", want, (unsigned long long)at);
        }
        bool complete = got.len == want;
        if (complete) {
            memcpy(buf + done, got.ptr, want);
        }
        filesystem_guest_list_u8_free(&got);
        if (!complete) {
            free(buf);
            return fail(err, E_IO, "device returned a short read at byte %llu", (unsigned long long)at);
        }
        done += want;
    }
    *out = buf;
    return true;
}

/* ---- header, inodes, extents, directories ---- */

static bool read_header(err_t *err) {
    uint8_t *raw;
    if (!device_read(0, HEADER_SIZE, &raw, err)) {
        return fail(err, *err, "hellofs header unreadable");
    }
    uint32_t block_size = 0, inode_count = 0;
    uint64_t inode_table = 0;
    bool magic = memcmp(raw, MAGIC, sizeof MAGIC) == 0;
    (void)le32(raw, HEADER_SIZE, 8, &block_size);
    (void)le32(raw, HEADER_SIZE, 12, &inode_count);
    (void)le64(raw, HEADER_SIZE, 48, &inode_table);
    memcpy(fs.label, raw + 16, sizeof fs.label);
    free(raw);
    if (!magic) {
        return fail(err, E_INVALID, "not a hellofs image (bad magic)");
    }
    if (block_size < 512 || block_size > 65536 || (block_size & (block_size - 1)) != 0) {
        return fail(err, E_CORRUPTED, "header: block size %u is not a power of two in 512..=65536", block_size);
    }
    if (inode_count == 0) {
        return fail(err, E_CORRUPTED, "header: no inodes");
    }
    uint64_t table_len = (uint64_t)inode_count * INODE_SIZE; /* < 2^38: no overflow */
    if (inode_table > fs.device_size || table_len > fs.device_size - inode_table) {
        return fail(err, E_CORRUPTED, "header: inode table of %u inodes at byte %llu does not fit the %llu-byte device",
                    inode_count, (unsigned long long)inode_table, (unsigned long long)fs.device_size);
    }
    fs.block_size = block_size;
    fs.inode_count = inode_count;
    fs.inode_table = inode_table;
    fs.label_len = bounded_len(fs.label, sizeof fs.label);
    return true;
}

static bool read_inode(uint64_t ino, struct inode *out, err_t *err) {
    if (ino == 0 || ino > fs.inode_count) {
        return fail(err, E_NOT_FOUND, "inode %llu is outside 1..=%u", (unsigned long long)ino, fs.inode_count);
    }
    /* Inside the device: checked against the table's end at mount. */
    uint64_t at = fs.inode_table + (ino - 1) * INODE_SIZE;
    uint8_t *raw;
    if (!device_read(at, INODE_SIZE, &raw, err)) {
        return fail(err, *err, "inode %llu unreadable", (unsigned long long)ino);
    }
    uint64_t mtime = 0;
    out->ino = ino;
    (void)le32(raw, INODE_SIZE, 0, &out->mode);
    (void)le32(raw, INODE_SIZE, 4, &out->uid);
    (void)le32(raw, INODE_SIZE, 8, &out->gid);
    (void)le32(raw, INODE_SIZE, 12, &out->nlink);
    (void)le64(raw, INODE_SIZE, 16, &out->size);
    (void)le64(raw, INODE_SIZE, 24, &mtime);
    (void)le32(raw, INODE_SIZE, 32, &out->mtime_ns);
    (void)le32(raw, INODE_SIZE, 36, &out->count);
    (void)le64(raw, INODE_SIZE, 40, &out->payload);
    (void)le64(raw, INODE_SIZE, 48, &out->rdev);
    free(raw);
    memcpy(&out->mtime, &mtime, sizeof mtime); /* two's complement, as stored */
    return true;
}

/* The file type of st_mode `mode`, or false when it names none. */
static bool kind_of(uint32_t mode, kind_t *kind) {
    switch (mode & 0170000u) {
    case 0100000u: *kind = FSHOST_PLUGIN_TYPES_FILE_TYPE_REGULAR; return true;
    case 0040000u: *kind = FSHOST_PLUGIN_TYPES_FILE_TYPE_DIRECTORY; return true;
    case 0120000u: *kind = FSHOST_PLUGIN_TYPES_FILE_TYPE_SYMLINK; return true;
    case 0020000u: *kind = FSHOST_PLUGIN_TYPES_FILE_TYPE_CHAR_DEVICE; return true;
    case 0060000u: *kind = FSHOST_PLUGIN_TYPES_FILE_TYPE_BLOCK_DEVICE; return true;
    case 0010000u: *kind = FSHOST_PLUGIN_TYPES_FILE_TYPE_FIFO; return true;
    case 0140000u: *kind = FSHOST_PLUGIN_TYPES_FILE_TYPE_SOCKET; return true;
    default: return false;
    }
}

static bool inode_kind(const struct inode *inode, kind_t *kind, err_t *err) {
    if (!kind_of(inode->mode, kind)) {
        return fail(err, E_CORRUPTED, "inode %llu: mode %o has no valid type", (unsigned long long)inode->ino,
                    inode->mode);
    }
    return true;
}

static bool to_attr(const struct inode *inode, exports_fshost_plugin_filesystem_attr_t *attr, err_t *err) {
    kind_t kind;
    if (!inode_kind(inode, &kind, err)) {
        return false;
    }
    fshost_plugin_types_timestamp_t mtime = {
        .seconds = inode->mtime,
        .nanoseconds = inode->mtime_ns < 999999999u ? inode->mtime_ns : 999999999u,
    };
    *attr = (exports_fshost_plugin_filesystem_attr_t){
        .ino = inode->ino,
        .kind = kind,
        .perm = (uint16_t)(inode->mode & 07777u),
        .nlink = inode->nlink,
        .uid = inode->uid,
        .gid = inode->gid,
        .size = inode->size,
        .blocks = inode->size / 512 + (inode->size % 512 != 0),
        .atime = mtime,
        .mtime = mtime,
        .ctime = mtime,
        .crtime = {.is_some = false},
        .rdev = inode->rdev,
        .generation = 0,
        .flags = 0,
    };
    return true;
}

static bool checked_count(const struct inode *inode, err_t *err) {
    if (inode->count > MAX_COUNT) {
        return fail(err, E_CORRUPTED, "inode %llu: %u records is more than the %u allowed",
                    (unsigned long long)inode->ino, inode->count, MAX_COUNT);
    }
    return true;
}

/* One directory entry, checked: its name is raw[name_at..name_at+name_len). */
struct dirent {
    uint32_t ino;
    uint16_t name_len;
    size_t name_at;
};

/* A directory's payload and its entries, all validated. */
struct dir {
    uint8_t *raw;
    struct dirent *entries;
    uint32_t count;
};

static void dir_free(struct dir *d) {
    free(d->raw);
    free(d->entries);
    *d = (struct dir){0};
}

static const uint8_t *dirent_name(const struct dir *d, uint32_t i) {
    return d->raw + d->entries[i].name_at;
}

/* Read and check every entry of directory `ino` (as guests/hello does: one
 * bad entry makes the whole directory corrupted). */
static bool read_dir(uint64_t ino, struct dir *d, err_t *err) {
    struct inode inode;
    kind_t kind;
    if (!read_inode(ino, &inode, err) || !inode_kind(&inode, &kind, err)) {
        return false;
    }
    if (kind != FSHOST_PLUGIN_TYPES_FILE_TYPE_DIRECTORY) {
        return fail(err, E_NOT_DIR, "inode %llu is not a directory", (unsigned long long)ino);
    }
    if (!checked_count(&inode, err)) {
        return false;
    }
    if (inode.size > MAX_DIR_BYTES) {
        return fail(err, E_CORRUPTED, "directory %llu of %llu bytes", (unsigned long long)ino,
                    (unsigned long long)inode.size);
    }
    size_t len = (size_t)inode.size;
    /* Each entry takes at least 9 bytes: refuse counts the payload cannot
     * hold before allocating for them. */
    if ((uint64_t)inode.count * (DIRENT_HEADER + 1) > len) {
        return fail(err, E_CORRUPTED, "directory %llu: %u entries do not fit its %zu bytes", (unsigned long long)ino,
                    inode.count, len);
    }
    *d = (struct dir){0};
    d->entries = malloc(sizeof(struct dirent) * (inode.count > 0 ? inode.count : 1));
    if (d->entries == NULL) {
        return fail(err, E_NO_MEMORY, "directory %llu: no memory", (unsigned long long)ino);
    }
    if (!device_read(inode.payload, len, &d->raw, err)) {
        free(d->entries);
        return fail(err, *err, "directory %llu unreadable", (unsigned long long)ino);
    }
    size_t at = 0;
    for (uint32_t i = 0; i < inode.count; i++) {
        uint32_t child;
        uint16_t name_len;
        if (!le32(d->raw, len, at, &child) || !le16(d->raw, len, at + 4, &name_len) ||
            len - at < DIRENT_HEADER + (size_t)name_len) {
            dir_free(d);
            return fail(err, E_CORRUPTED, "directory %llu: entry at byte %zu runs past the directory",
                        (unsigned long long)ino, at);
        }
        const uint8_t *name = d->raw + at + DIRENT_HEADER;
        if (name_len == 0 || memchr(name, '/', name_len) != NULL || memchr(name, 0, name_len) != NULL) {
            dir_free(d);
            return fail(err, E_CORRUPTED, "directory %llu: entry at byte %zu has an invalid name",
                        (unsigned long long)ino, at);
        }
        d->entries[i] = (struct dirent){.ino = child, .name_len = name_len, .name_at = at + DIRENT_HEADER};
        at += DIRENT_HEADER + name_len;
    }
    d->count = inode.count;
    return true;
}

/* The extent table of regular file `inode`, sorted and non-overlapping, in a
 * malloc'd array of inode->count extents. */
static bool read_extents(const struct inode *inode, struct extent **out, err_t *err) {
    if (!checked_count(inode, err)) {
        return false;
    }
    size_t len = (size_t)inode->count * EXTENT_SIZE; /* <= 24 MiB */
    uint8_t *raw;
    if (!device_read(inode->payload, len, &raw, err)) {
        return fail(err, *err, "inode %llu: extent table unreadable", (unsigned long long)inode->ino);
    }
    struct extent *extents = malloc(sizeof(struct extent) * (inode->count > 0 ? inode->count : 1));
    if (extents == NULL) {
        free(raw);
        return fail(err, E_NO_MEMORY, "inode %llu: no memory for extents", (unsigned long long)inode->ino);
    }
    for (uint32_t i = 0; i < inode->count; i++) {
        size_t at = (size_t)i * EXTENT_SIZE;
        struct extent e;
        (void)le64(raw, len, at, &e.file_offset);
        (void)le64(raw, len, at + 8, &e.length);
        (void)le64(raw, len, at + 16, &e.device_offset);
        bool overflows = e.length > UINT64_MAX - e.file_offset;
        bool overlaps = i > 0 && extents[i - 1].file_offset + extents[i - 1].length > e.file_offset;
        if (e.length == 0 || overflows || overlaps) {
            free(raw);
            free(extents);
            return fail(err, E_CORRUPTED,
                        "inode %llu: extent %u (file offset %llu, length %llu) is empty, overflows or overlaps",
                        (unsigned long long)inode->ino, i, (unsigned long long)e.file_offset,
                        (unsigned long long)e.length);
        }
        extents[i] = e;
    }
    free(raw);
    *out = extents;
    return true;
}

/* ---- answers ---- */

/* A malloc'd copy of `len` bytes as a WIT list (NULL for none: the bindings
 * free only non-empty lists). */
static bool copy_list(const uint8_t *bytes, size_t len, filesystem_guest_list_u8_t *out, err_t *err) {
    *out = (filesystem_guest_list_u8_t){NULL, 0};
    if (len == 0) {
        return true;
    }
    out->ptr = malloc(len);
    if (out->ptr == NULL) {
        return fail(err, E_NO_MEMORY, "no memory for %zu bytes", len);
    }
    memcpy(out->ptr, bytes, len);
    out->len = len;
    return true;
}

static bool info(exports_fshost_plugin_filesystem_fs_info_t *ret, err_t *err) {
    static const char fs_type[] = "hellofs";
    *ret = (exports_fshost_plugin_filesystem_fs_info_t){
        .root = ROOT_INO,
        .block_size = fs.block_size,
        .name_max = NAME_MAX,
        .total_blocks = fs.device_size / fs.block_size,
        .total_inodes = fs.inode_count,
    };
    filesystem_guest_list_u8_t type;
    if (!copy_list((const uint8_t *)fs_type, sizeof fs_type - 1, &type, err)) {
        return false;
    }
    if (!copy_list(fs.label, fs.label_len, &ret->label, err)) {
        free(type.ptr);
        return false;
    }
    ret->fs_type = (filesystem_guest_string_t){type.ptr, type.len};
    return true;
}

static bool mounted(const char *op, err_t *err) {
    current_op = op;
    if (!fs.mounted) {
        return fail(err, E_INVALID, "called before a successful mount");
    }
    return true;
}

bool exports_fshost_plugin_filesystem_mount(exports_fshost_plugin_filesystem_mount_options_t *options,
                                            exports_fshost_plugin_filesystem_fs_info_t *ret, err_t *err) {
    /* hellofs has no options; the list is ours to free. */
    exports_fshost_plugin_filesystem_mount_options_free(options);
    current_op = "mount";
    fs.mounted = false;
    fs.device_size = fshost_plugin_block_device_size();
    if (!read_header(err) || !info(ret, err)) {
        return false;
    }
    fs.mounted = true;
    return true;
}

bool exports_fshost_plugin_filesystem_statfs(exports_fshost_plugin_filesystem_fs_info_t *ret, err_t *err) {
    return mounted("statfs", err) && info(ret, err);
}

bool exports_fshost_plugin_filesystem_getattr(exports_fshost_plugin_filesystem_ino_t ino,
                                              exports_fshost_plugin_filesystem_attr_t *ret, err_t *err) {
    struct inode inode;
    return mounted("getattr", err) && read_inode(ino, &inode, err) && to_attr(&inode, ret, err);
}

bool exports_fshost_plugin_filesystem_lookup_name(exports_fshost_plugin_filesystem_ino_t parent,
                                                  filesystem_guest_list_u8_t *name,
                                                  exports_fshost_plugin_filesystem_attr_t *ret, err_t *err) {
    struct dir d;
    bool ok = mounted("lookup", err) && read_dir(parent, &d, err);
    if (ok) {
        bool found = false;
        uint32_t child = 0;
        for (uint32_t i = 0; i < d.count && !found; i++) {
            found = d.entries[i].name_len == name->len && memcmp(dirent_name(&d, i), name->ptr, name->len) == 0;
            child = d.entries[i].ino;
        }
        dir_free(&d);
        struct inode inode;
        if (!found) {
            ok = false;
            *err = E_NOT_FOUND;
        } else {
            ok = read_inode(child, &inode, err) && to_attr(&inode, ret, err);
        }
    }
    filesystem_guest_list_u8_free(name);
    return ok;
}

/* Entries of directory `ino` after `cookie` (entry i has cookie i + 1), at
 * most `max`, with their attributes when `attrs` is not NULL. */
static bool list_dir(uint64_t ino, uint64_t cookie, uint32_t max, exports_fshost_plugin_filesystem_dir_entry_t **entries,
                     exports_fshost_plugin_filesystem_attr_t **attrs, size_t *count, err_t *err) {
    struct dir d;
    if (!read_dir(ino, &d, err)) {
        return false;
    }
    size_t start = cookie < d.count ? (size_t)cookie : d.count;
    size_t n = d.count - start < max ? d.count - start : max;
    *entries = NULL;
    *count = 0;
    if (attrs != NULL) {
        *attrs = NULL;
    }
    if (n == 0) {
        dir_free(&d);
        return true;
    }
    exports_fshost_plugin_filesystem_dir_entry_t *out = calloc(n, sizeof *out);
    exports_fshost_plugin_filesystem_attr_t *out_attrs = attrs != NULL ? calloc(n, sizeof *out_attrs) : NULL;
    bool ok = out != NULL && (attrs == NULL || out_attrs != NULL);
    if (!ok) {
        fail(err, E_NO_MEMORY, "directory %llu: no memory for %zu entries", (unsigned long long)ino, n);
    }
    size_t done = 0;
    for (; ok && done < n; done++) {
        uint32_t i = (uint32_t)(start + done);
        struct inode child;
        kind_t kind;
        exports_fshost_plugin_filesystem_attr_t attr;
        ok = read_inode(d.entries[i].ino, &child, err) && inode_kind(&child, &kind, err) &&
             (attrs == NULL || to_attr(&child, &attr, err)) &&
             copy_list(dirent_name(&d, i), d.entries[i].name_len, &out[done].name, err);
        if (ok) {
            out[done].ino = child.ino;
            out[done].kind = kind;
            out[done].cookie = (uint64_t)i + 1;
            if (attrs != NULL) {
                out_attrs[done] = attr;
            }
        }
    }
    dir_free(&d);
    if (!ok) {
        for (size_t j = 0; out != NULL && j < n; j++) {
            free(out[j].name.ptr);
        }
        free(out);
        free(out_attrs);
        return false;
    }
    *entries = out;
    if (attrs != NULL) {
        *attrs = out_attrs;
    }
    *count = n;
    return true;
}

bool exports_fshost_plugin_filesystem_readdir(exports_fshost_plugin_filesystem_ino_t ino, uint64_t cookie,
                                              uint32_t max_entries,
                                              exports_fshost_plugin_filesystem_list_dir_entry_t *ret, err_t *err) {
    if (!mounted("readdir", err)) {
        return false;
    }
    return list_dir(ino, cookie, max_entries, &ret->ptr, NULL, &ret->len, err);
}

bool exports_fshost_plugin_filesystem_readdirplus(exports_fshost_plugin_filesystem_ino_t ino, uint64_t cookie,
                                                  uint32_t max_entries,
                                                  exports_fshost_plugin_filesystem_list_dir_entry_plus_t *ret,
                                                  err_t *err) {
    exports_fshost_plugin_filesystem_dir_entry_t *entries;
    exports_fshost_plugin_filesystem_attr_t *attrs;
    size_t n;
    if (!mounted("readdirplus", err) || !list_dir(ino, cookie, max_entries, &entries, &attrs, &n, err)) {
        return false;
    }
    *ret = (exports_fshost_plugin_filesystem_list_dir_entry_plus_t){NULL, 0};
    if (n == 0) {
        return true;
    }
    ret->ptr = calloc(n, sizeof *ret->ptr);
    if (ret->ptr == NULL) {
        for (size_t i = 0; i < n; i++) {
            free(entries[i].name.ptr);
        }
        free(entries);
        free(attrs);
        return fail(err, E_NO_MEMORY, "directory %llu: no memory for %zu entries", (unsigned long long)ino, n);
    }
    for (size_t i = 0; i < n; i++) {
        ret->ptr[i].entry = entries[i]; /* the name moves along */
        ret->ptr[i].attr = attrs[i];
    }
    ret->len = n;
    free(entries);
    free(attrs);
    return true;
}

bool exports_fshost_plugin_filesystem_readlink(exports_fshost_plugin_filesystem_ino_t ino,
                                               filesystem_guest_list_u8_t *ret, err_t *err) {
    struct inode inode;
    kind_t kind;
    if (!mounted("readlink", err) || !read_inode(ino, &inode, err) || !inode_kind(&inode, &kind, err)) {
        return false;
    }
    if (kind != FSHOST_PLUGIN_TYPES_FILE_TYPE_SYMLINK) {
        return fail(err, E_INVALID, "inode %llu is not a symlink", (unsigned long long)ino);
    }
    if (inode.size > MAX_SYMLINK_BYTES) {
        return fail(err, E_CORRUPTED, "inode %llu: symlink target of %llu bytes", (unsigned long long)ino,
                    (unsigned long long)inode.size);
    }
    uint8_t *target;
    if (!device_read(inode.payload, (size_t)inode.size, &target, err)) {
        return fail(err, *err, "inode %llu: symlink target unreadable", (unsigned long long)ino);
    }
    *ret = (filesystem_guest_list_u8_t){target, (size_t)inode.size};
    if (inode.size == 0) {
        free(target);
        ret->ptr = NULL;
    }
    return true;
}

bool exports_fshost_plugin_filesystem_listxattr(exports_fshost_plugin_filesystem_ino_t ino,
                                                filesystem_guest_list_list_u8_t *ret, err_t *err) {
    /* hellofs stores no extended attributes. */
    (void)ino;
    *ret = (filesystem_guest_list_list_u8_t){NULL, 0};
    return mounted("listxattr", err);
}

bool exports_fshost_plugin_filesystem_getxattr(exports_fshost_plugin_filesystem_ino_t ino,
                                               filesystem_guest_list_u8_t *name, filesystem_guest_list_u8_t *ret,
                                               err_t *err) {
    (void)ino;
    (void)ret;
    filesystem_guest_list_u8_free(name);
    if (mounted("getxattr", err)) {
        *err = E_NO_DATA;
    }
    return false;
}

/* A growing array of mappings, returned as the WIT list. */
struct mappings {
    exports_fshost_plugin_filesystem_list_mapping_t list;
    size_t cap;
};

static bool push(struct mappings *m, uint64_t offset, uint64_t length, uint8_t tag, uint64_t device, err_t *err) {
    if (m->list.len == m->cap) {
        size_t cap = m->cap == 0 ? 8 : m->cap * 2;
        exports_fshost_plugin_filesystem_mapping_t *grown = realloc(m->list.ptr, cap * sizeof *grown);
        if (grown == NULL) {
            return fail(err, E_NO_MEMORY, "no memory for %zu mappings", cap);
        }
        m->list.ptr = grown;
        m->cap = cap;
    }
    exports_fshost_plugin_filesystem_mapping_t *out = &m->list.ptr[m->list.len++];
    *out = (exports_fshost_plugin_filesystem_mapping_t){.offset = offset, .length = length, .kind = {.tag = tag}};
    if (tag == FSHOST_PLUGIN_TYPES_MAPPING_KIND_MAPPED) {
        out->kind.val.mapped = device;
    }
    return true;
}

/*
 * Answer iomap-begin from a sorted extent table, as guests/hello's
 * map_range: the extent or hole that contains `offset`, then the following
 * ones until `offset + length` or the end of the file (rounded up to a
 * block) is covered.
 */
static bool map_range(const struct extent *extents, uint32_t count, uint64_t offset, uint64_t length, uint64_t size,
                      struct mappings *m, err_t *err) {
    uint64_t block = fs.block_size;
    uint64_t blocks = size / block + (size % block != 0);
    uint64_t eof = blocks > UINT64_MAX / block ? UINT64_MAX : blocks * block;
    uint64_t span = length > 0 ? length : 1;
    uint64_t want_end = span > UINT64_MAX - offset ? UINT64_MAX : offset + span;
    if (want_end > eof) {
        want_end = eof;
    }
    uint64_t pos = offset - offset % block;
    for (uint32_t i = 0; i < count && pos < want_end; i++) {
        const struct extent *e = &extents[i];
        uint64_t e_end = e->file_offset + e->length; /* no overflow: read_extents */
        if (e_end <= pos) {
            continue;
        }
        if (e->file_offset > pos) {
            if (!push(m, pos, e->file_offset - pos, FSHOST_PLUGIN_TYPES_MAPPING_KIND_HOLE, 0, err)) {
                return false;
            }
            pos = e->file_offset;
            if (pos >= want_end) {
                break;
            }
        }
        if (!push(m, e->file_offset, e->length, FSHOST_PLUGIN_TYPES_MAPPING_KIND_MAPPED, e->device_offset, err)) {
            return false;
        }
        pos = e_end;
    }
    if (pos < want_end) {
        return push(m, pos, eof - pos, FSHOST_PLUGIN_TYPES_MAPPING_KIND_HOLE, 0, err);
    }
    return true;
}

bool exports_fshost_plugin_filesystem_iomap_begin(exports_fshost_plugin_filesystem_ino_t ino, uint64_t offset,
                                                  uint64_t length, exports_fshost_plugin_filesystem_iomap_flags_t flags,
                                                  exports_fshost_plugin_filesystem_list_mapping_t *ret, err_t *err) {
    (void)flags; /* read, report and direct get the same answer */
    struct inode inode;
    kind_t kind;
    if (!mounted("iomap_begin", err) || !read_inode(ino, &inode, err) || !inode_kind(&inode, &kind, err)) {
        return false;
    }
    if (kind == FSHOST_PLUGIN_TYPES_FILE_TYPE_DIRECTORY) {
        *err = E_IS_DIR;
        return false;
    }
    if (kind != FSHOST_PLUGIN_TYPES_FILE_TYPE_REGULAR) {
        return fail(err, E_INVALID, "inode %llu is not a regular file", (unsigned long long)ino);
    }
    struct extent *extents;
    if (!read_extents(&inode, &extents, err)) {
        return false;
    }
    struct mappings m = {{NULL, 0}, 0};
    bool ok = map_range(extents, inode.count, offset, length, inode.size, &m, err);
    free(extents);
    if (!ok) {
        free(m.list.ptr);
        return false;
    }
    *ret = m.list;
    return true;
}
