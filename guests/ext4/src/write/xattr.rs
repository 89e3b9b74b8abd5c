//! Laying extended attributes out on disk: the writer's half of `xattr.rs`
//! and `acl.rs`.
//!
//! An inode's attributes live in its body (after `i_extra_isize`, behind
//! the magic) and, when they do not all fit, in one external block that
//! inodes with identical attributes may share (`h_refcount`). The layouts
//! are the kernel's (fs/ext4/xattr.c): entries from the front, each 16
//! bytes plus its name padded to 4; values packed from the back, each
//! padded to 4; a zero word ends the entry list. Block entries are sorted
//! (index, name length, name), carry `ext4_xattr_hash_entry` hashes, and the
//! header carries `ext4_xattr_rehash`'s block hash and, with metadata_csum,
//! a crc32c seeded with the block number. Body entries keep hash 0, as the
//! kernel leaves them.
//!
//! POSIX ACLs arrive in the VFS format (`posix_acl_xattr`, version 2, eight
//! bytes an entry) and are stored in ext4's (version 1, four bytes for the
//! entries without an id): [`acl_to_disk`], the reverse of `acl::to_xattr`.

use fshost_sdk::{Error, ErrorCode, Ino, Result, Timestamp, XattrFlags};

use super::RawInode;
use super::alloc;
use crate::csum::crc32c;
use crate::fs::Ext4;
use crate::xattr::{self as reader, Value, index};

pub const MAGIC: u32 = 0xEA02_0000;
const ENTRY_HEADER: usize = 16;
pub const BLOCK_HEADER: usize = 32;
const BLOCK_CSUM_AT: usize = 16;

/// One attribute to store: its name index, name without prefix, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

fn pad(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytes an entry takes in the entry list.
fn entry_size(a: &Attr) -> usize {
    pad(ENTRY_HEADER + a.name.len())
}

/// `ext4_xattr_hash_entry` (unsigned name bytes, the value as padded
/// little-endian words).
fn entry_hash(a: &Attr) -> u32 {
    let mut hash = 0u32;
    for &b in &a.name {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(b);
    }
    let mut value = a.value.clone();
    value.resize(pad(value.len()), 0);
    for w in value.chunks_exact(4) {
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
    hash
}

/// Write `attrs` into `area` (entries from `first`, values from the end,
/// offsets counted from `base`); the entry hashes, if `hashed`.
fn lay_out(area: &mut [u8], first: usize, base: usize, attrs: &[Attr], hashed: bool) -> Option<Vec<u32>> {
    let mut pos = first;
    let mut min_offs = area.len();
    let mut hashes = Vec::new();
    for a in attrs {
        let esize = entry_size(a);
        let vsize = pad(a.value.len());
        if pos + esize + 4 > min_offs.checked_sub(vsize)? || a.name.len() > 255 {
            return None;
        }
        let offs = if a.value.is_empty() {
            0
        } else {
            min_offs -= vsize;
            area[min_offs..min_offs + a.value.len()].copy_from_slice(&a.value);
            min_offs - base
        };
        let hash = if hashed { entry_hash(a) } else { 0 };
        hashes.push(hash);
        area[pos] = a.name.len() as u8;
        area[pos + 1] = a.index;
        area[pos + 2..pos + 4].copy_from_slice(&u16::try_from(offs).ok()?.to_le_bytes());
        area[pos + 4..pos + 8].fill(0);
        area[pos + 8..pos + 12].copy_from_slice(&(a.value.len() as u32).to_le_bytes());
        area[pos + 12..pos + 16].copy_from_slice(&hash.to_le_bytes());
        area[pos + ENTRY_HEADER..pos + ENTRY_HEADER + a.name.len()].copy_from_slice(&a.name);
        pos += esize;
    }
    Some(hashes)
}

/// The in-inode area (`area_len` bytes after `i_extra_isize`) holding
/// `attrs`; `None` when they do not fit. No attributes: all zeros.
pub fn encode_ibody(attrs: &[Attr], area_len: usize) -> Option<Vec<u8>> {
    let mut area = vec![0; area_len];
    if attrs.is_empty() {
        return Some(area);
    }
    if area_len < 8 {
        return None;
    }
    area[..4].copy_from_slice(&MAGIC.to_le_bytes());
    let body = area.get_mut(4..)?;
    lay_out(body, 0, 0, attrs, false)?;
    Some(area)
}

/// An external block holding `attrs` (sorted as the kernel sorts them),
/// with `refcount`; `None` when they do not fit. Call [`set_block_csum`]
/// once its block number is known.
pub fn encode_block(attrs: &[Attr], block_size: usize, refcount: u32) -> Option<Vec<u8>> {
    let mut sorted = attrs.to_vec();
    sorted.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    let mut block = vec![0; block_size];
    let hashes = lay_out(&mut block, BLOCK_HEADER, 0, &sorted, true)?;
    let mut hash = 0u32;
    for h in hashes {
        if h == 0 {
            hash = 0;
            break;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    block[..4].copy_from_slice(&MAGIC.to_le_bytes());
    block[4..8].copy_from_slice(&refcount.to_le_bytes());
    block[8..12].copy_from_slice(&1u32.to_le_bytes());
    block[12..16].copy_from_slice(&hash.to_le_bytes());
    Some(block)
}

/// Set an external block's refcount (then its checksum must be set again).
pub fn set_refcount(block: &mut [u8], refcount: u32) -> Result<()> {
    let field = block.get_mut(4..8).ok_or_else(|| Error::corrupted("xattr block too short"))?;
    field.copy_from_slice(&refcount.to_le_bytes());
    Ok(())
}

/// `ext4_xattr_block_csum_set`: crc32c of the block number then the block
/// with its checksum field zeroed, seeded with the filesystem's seed.
pub fn set_block_csum(block: &mut [u8], pblk: u64, fs_seed: u32) -> Result<()> {
    if block.len() < BLOCK_HEADER {
        return Err(Error::corrupted("xattr block too short"));
    }
    let c = crc32c(fs_seed, &pblk.to_le_bytes());
    let c = crc32c(c, &block[..BLOCK_CSUM_AT]);
    let c = crc32c(c, &[0; 4]);
    let c = crc32c(c, &block[BLOCK_CSUM_AT + 4..]);
    block[BLOCK_CSUM_AT..BLOCK_CSUM_AT + 4].copy_from_slice(&c.to_le_bytes());
    Ok(())
}

/// Bytes of the inode before the in-inode xattr area's fields.
const GOOD_OLD_INODE: usize = 128;

/// Convert what the reader found into values this writer can rewrite
/// (values kept in EA inodes are not: `Unsupported`).
pub(super) fn owned(ino: Ino, found: Vec<reader::Xattr>) -> Result<Vec<Attr>> {
    found
        .into_iter()
        .map(|x| match x.value {
            Value::Bytes(value) => Ok(Attr { index: x.index, name: x.name, value }),
            Value::Inode { .. } => {
                Err(Error::unsupported(format!("inode {ino}: an xattr value in an EA inode cannot be rewritten yet")))
            }
        })
        .collect()
}

impl Ext4 {
    /// Set (`value` Some) or remove (None) attribute `name` of `ino`
    /// (removexattr passes `replace`, as the VFS does to ext4).
    pub(crate) fn xattr_set(
        &mut self,
        ino: Ino,
        name: &[u8],
        value: Option<&[u8]>,
        flags: XattrFlags,
        time: Timestamp,
    ) -> Result<()> {
        self.writable()?;
        let inode = self.inode(ino)?;
        let shown = || String::from_utf8_lossy(name).into_owned();
        let (idx, short) = reader::split_name(name)
            .filter(|&(i, _)| !matches!(i, index::SYSTEM | 8))
            .ok_or_else(|| Error::unsupported(format!("xattr {:?}: namespace not supported by ext4", shown())))?;
        if short.len() > 255 {
            return Err(Error::new(ErrorCode::NameTooLong, format!("xattr name of {} bytes", short.len())));
        }
        if inode.has_flag(crate::inode::flags::IMMUTABLE) || inode.has_flag(crate::inode::flags::APPEND) {
            return Err(Error::new(ErrorCode::NotPermitted, format!("inode {ino} is immutable or append-only")));
        }
        let inode = if value.is_some() && self.convert_inline_symlink(inode.ino)? { self.inode(ino)? } else { inode };
        let value = match value {
            Some(v) if idx == index::POSIX_ACL_ACCESS || idx == index::POSIX_ACL_DEFAULT => acl_to_disk(v)?,
            Some(v) => Some(v.to_vec()),
            None => None,
        };
        let mut body = owned(ino, reader::in_inode(&self.vol, &inode)?)?;
        let mut block = owned(ino, reader::in_block(&self.vol, &inode)?)?;
        let is_it = |a: &Attr| a.index == idx && a.name == short;
        let in_body = body.iter().position(is_it);
        let in_block = block.iter().position(is_it);
        let exists = in_body.is_some() || in_block.is_some();
        if flags.create && exists {
            return Err(Error::new(ErrorCode::Exists, format!("inode {ino}: xattr {:?} exists", shown())));
        }
        // `ext4_xattr_set_handle`: absent and replace is ENODATA; absent and
        // no value (an empty ACL) is done.
        if !exists && flags.replace {
            return Err(Error::new(ErrorCode::NoData, format!("inode {ino}: no xattr {:?}", shown())));
        }
        if !exists && value.is_none() {
            return Ok(());
        }
        if let Some(i) = in_body {
            body.remove(i);
        }
        if let Some(i) = in_block {
            block.remove(i);
        }
        let mut raw = self.raw_inode(inode.ino)?;
        let area_start = GOOD_OLD_INODE + raw.extra_isize();
        let area_len = raw.bytes().len().saturating_sub(area_start);
        let mut block_changed = in_block.is_some();
        if let Some(value) = value {
            let new = Attr { index: idx, name: short.to_vec(), value };
            let mut with = body.clone();
            with.push(new.clone());
            if encode_ibody(&with, area_len).is_some() {
                body = with;
            } else {
                block.push(new);
                block_changed = true;
            }
        }
        let area = encode_ibody(&body, area_len)
            .ok_or_else(|| Error::new(ErrorCode::NoSpace, format!("inode {ino}: xattrs do not fit the inode")))?;
        if block_changed {
            self.store_xattr_block(inode.ino, &mut raw, &block)?;
        }
        let mut bytes = raw.bytes().to_vec();
        if area_len > 0 {
            bytes[area_start..].copy_from_slice(&area);
        }
        let mut raw = RawInode::from_bytes(&self.vol.sb, bytes);
        raw.set_ctime(time);
        self.put_inode(inode.ino, &raw)
    }

    /// Make `raw`'s external block hold `attrs` (none: no block), copying
    /// it first when other inodes share it.
    fn store_xattr_block(&mut self, ino: u32, raw: &mut RawInode, attrs: &[Attr]) -> Result<()> {
        let bs = self.vol.sb.block_size as usize;
        let old = raw.file_acl();
        let refcount = if old != 0 {
            let data = self.vol.disk.read_block(old)?;
            u32::from_le_bytes([data[4], data[5], data[6], data[7]])
        } else {
            0
        };
        if attrs.is_empty() {
            return self.release_xattr_block(ino, raw);
        }
        let mut data = encode_block(attrs, bs, 1)
            .ok_or_else(|| Error::new(ErrorCode::NoSpace, format!("inode {ino}: xattrs do not fit a block")))?;
        if old != 0 && refcount <= 1 {
            set_block_csum(&mut data, old, self.vol.csum.seed)?;
            return self.write_block(old, &data);
        }
        let goal = alloc::inode_goal(&self.vol.sb, ino);
        let (pblk, _) = alloc::alloc_blocks(self, goal, 1)?;
        set_block_csum(&mut data, pblk, self.vol.csum.seed)?;
        self.write_block(pblk, &data)?;
        if old != 0 {
            self.release_xattr_block(ino, raw)?;
        }
        raw.set_file_acl(pblk);
        raw.add_blocks(1)
    }

    /// Drop `raw`'s hold on its external xattr block: free it, or lower
    /// its refcount when other inodes share it.
    pub(crate) fn release_xattr_block(&mut self, ino: u32, raw: &mut RawInode) -> Result<()> {
        let old = raw.file_acl();
        if old == 0 {
            return Ok(());
        }
        let mut data = self.vol.disk.read_block(old)?;
        if data.len() < BLOCK_HEADER || data[..4] != MAGIC.to_le_bytes() {
            return Err(Error::corrupted(format!("inode {ino}: xattr block {old} has no magic")));
        }
        let refcount = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        if refcount <= 1 {
            alloc::free_blocks(self, old, 1)?;
        } else {
            set_refcount(&mut data, refcount - 1)?;
            set_block_csum(&mut data, old, self.vol.csum.seed)?;
            self.write_block(old, &data)?;
        }
        raw.set_file_acl(0);
        raw.add_blocks(-1)
    }
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// A VFS-format ACL (`posix_acl_xattr_header` version 2 and 8-byte
/// entries) in ext4's on-disk format (`ext4_acl_to_disk`). `Ok(None)` for
/// an ACL without entries, which the kernel takes as removing it.
pub fn acl_to_disk(xattr: &[u8]) -> Result<Option<Vec<u8>>> {
    let bad = |why: &str| Error::invalid(format!("POSIX ACL: {why}"));
    let version = xattr.get(..4).map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
    if version != Some(2) {
        return Err(bad("not a version 2 header"));
    }
    let body = &xattr[4..];
    if !body.len().is_multiple_of(8) {
        return Err(bad("size is not a whole number of entries"));
    }
    if body.is_empty() {
        return Ok(None);
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in body.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        if perm & !7 != 0 {
            return Err(bad("permission bits beyond rwx"));
        }
        out.extend_from_slice(&e[..4]);
        match tag {
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {}
            ACL_USER | ACL_GROUP => out.extend_from_slice(&e[4..8]),
            _ => return Err(bad(&format!("unknown tag {tag:#x}"))),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(index: u8, name: &str, value: &[u8]) -> Attr {
        Attr { index, name: name.as_bytes().to_vec(), value: value.to_vec() }
    }

    /// Read an area back (entries from `first`, offsets from `base`).
    fn decode(area: &[u8], first: usize, base: usize) -> Vec<Attr> {
        let mut out = Vec::new();
        let mut pos = first;
        while area[pos..pos + 4] != [0; 4] {
            let len = usize::from(area[pos]);
            let offs = usize::from(u16::from_le_bytes([area[pos + 2], area[pos + 3]]));
            let size = u32::from_le_bytes(area[pos + 8..pos + 12].try_into().unwrap()) as usize;
            let name = area[pos + 16..pos + 16 + len].to_vec();
            let value = area[base + offs..base + offs + size].to_vec();
            out.push(Attr { index: area[pos + 1], name, value });
            pos += pad(16 + len);
        }
        out
    }

    #[test]
    fn body_and_block_round_trip() {
        let attrs = vec![attr(1, "comment", b"hello"), attr(6, "selinux", b"x\0"), attr(1, "empty", b"")];
        let area = encode_ibody(&attrs, 96).unwrap();
        assert_eq!(u32::from_le_bytes(area[..4].try_into().unwrap()), MAGIC);
        assert_eq!(decode(&area[4..], 0, 4 - 4), attrs);
        assert!(encode_ibody(&attrs, 60).is_none(), "too small an area");
        assert_eq!(encode_ibody(&[], 96).unwrap(), vec![0; 96]);

        let block = encode_block(&attrs, 1024, 1).unwrap();
        let got = decode(&block, BLOCK_HEADER, 0);
        // Sorted by index, then name length, then name.
        assert_eq!(got, vec![attr(1, "empty", b""), attr(1, "comment", b"hello"), attr(6, "selinux", b"x\0")]);
        let big = vec![attr(1, "big", &[7; 2000])];
        assert!(encode_block(&big, 1024, 1).is_none());
        assert!(encode_block(&big, 4096, 1).is_some());
    }

    #[test]
    fn hashes_match_e2fsprogs() {
        // ext2fs_ext_attr_hash_entry for name "a", value "b\0\0\0":
        // name: (0 << 5) ^ 0 ^ 0x61 = 0x61; value word 0x62: (0x61 << 16) ^ (0x61 >> 16) ^ 0x62.
        assert_eq!(entry_hash(&attr(1, "a", b"b")), (0x61 << 16) ^ 0x62);
        let block = encode_block(&[attr(1, "a", b"b")], 1024, 1).unwrap();
        assert_eq!(u32::from_le_bytes(block[12..16].try_into().unwrap()), (0x61 << 16) ^ 0x62);
    }

    #[test]
    fn acls_convert_to_disk_and_back() {
        let vfs = "0200000001000600ffffffff02000600d204000004000400ffffffff10000600ffffffff20000400ffffffff";
        let vfs: Vec<u8> =
            (0..vfs.len() / 2).map(|i| u8::from_str_radix(&vfs[2 * i..2 * i + 2], 16).unwrap()).collect();
        let disk = acl_to_disk(&vfs).unwrap().unwrap();
        assert_eq!(disk.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert_eq!(crate::acl::to_xattr(&disk).unwrap().unwrap(), vfs);
        assert_eq!(acl_to_disk(&2u32.to_le_bytes()).unwrap(), None);
        assert!(acl_to_disk(&1u32.to_le_bytes()).is_err());
        assert!(acl_to_disk(&[2, 0, 0, 0, 0x40, 0, 6, 0, 0, 0, 0, 0]).is_err());
    }
}
