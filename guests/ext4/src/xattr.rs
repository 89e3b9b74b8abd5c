//! Extended attributes: in the inode after `i_extra_isize`, in one external
//! block (`i_file_acl`), or with the value in a separate EA inode.
//!
//! Both places hold the same entry format: name length, a name *index* that
//! stands for a prefix ("user.", "trusted.", ...), the value's offset and
//! size (or the EA inode holding it), the name; a zero word ends the list.
//! In the inode, value offsets count from the first entry; in a block, from
//! the block start. Parsing checks what the kernel's `check_xattrs` checks:
//! entries inside the area, and each value inside the area and after the
//! entry list. External blocks are checksummed with their block number.

use fshost_sdk::bytes::{le_u16, le_u32, slice, u8_at};
use fshost_sdk::{Error, Result, ResultExt};

use crate::csum::crc32c;
use crate::features::incompat;
use crate::inode::{self, Inode, flags};
use crate::mapping;
use crate::volume::Volume;

const MAGIC: u32 = 0xEA02_0000;
/// Block header: magic, refcount, blocks, hash, checksum, reserved.
const BLOCK_HEADER_SIZE: usize = 32;
const BLOCK_CHECKSUM_OFFSET: usize = 16;
const ENTRY_HEADER_SIZE: usize = 16;
/// The largest value Linux lets an xattr have (`XATTR_SIZE_MAX`).
const VALUE_MAX: u32 = 65536;

/// Name indexes with a meaning.
pub mod index {
    pub const USER: u8 = 1;
    pub const POSIX_ACL_ACCESS: u8 = 2;
    pub const POSIX_ACL_DEFAULT: u8 = 3;
    pub const SYSTEM: u8 = 7;
}

/// Prefixes by name index. For the ACL and richacl indexes the prefix is
/// the whole name (the stored name is empty).
const PREFIXES: [(u8, &[u8], bool); 8] = [
    (index::USER, b"user.", false),
    (index::POSIX_ACL_ACCESS, b"system.posix_acl_access", true),
    (index::POSIX_ACL_DEFAULT, b"system.posix_acl_default", true),
    (4, b"trusted.", false),
    (6, b"security.", false),
    (8, b"system.richacl", true),
    (index::SYSTEM, b"system.", false),
    (10, b"gnu.", false),
];

/// Where an attribute's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    /// In the data of EA inode `ino`, `size` bytes.
    Inode {
        ino: u32,
        size: u32,
    },
}

/// One extended attribute as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Value,
}

impl Xattr {
    /// The full name ("user.foo"), or `None` for an unknown index.
    pub fn full_name(&self) -> Option<Vec<u8>> {
        let (_, prefix, whole) = PREFIXES.iter().find(|(i, _, _)| *i == self.index)?;
        let mut full = prefix.to_vec();
        if !whole {
            full.extend_from_slice(&self.name);
        }
        Some(full)
    }
}

/// Split a full name into its index and stored name, if its prefix is known.
pub fn split_name(full: &[u8]) -> Option<(u8, &[u8])> {
    PREFIXES.iter().find_map(|&(index, prefix, whole)| {
        if whole {
            (full == prefix).then_some((index, &[][..]))
        } else {
            full.strip_prefix(prefix).filter(|rest| !rest.is_empty()).map(|rest| (index, rest))
        }
    })
}

/// All attributes of `inode`: in-inode ones first, then the block's.
pub fn all(vol: &Volume, inode: &Inode) -> Result<Vec<Xattr>> {
    let mut out = in_inode(vol, inode)?;
    out.extend(in_block(vol, inode)?);
    Ok(out)
}

/// The attributes stored in the inode body.
pub fn in_inode(vol: &Volume, inode: &Inode) -> Result<Vec<Xattr>> {
    let area = &inode.xattr_area;
    if area.len() < 4 || le_u32(area, 0)? != MAGIC {
        return Ok(Vec::new());
    }
    let body = slice(area, 4, area.len() - 4)?;
    entries(vol, body, 0, 0).with_context(|| format!("inode {}: in-inode xattrs", inode.ino))
}

/// The attributes stored in the external block, if any.
pub fn in_block(vol: &Volume, inode: &Inode) -> Result<Vec<Xattr>> {
    if inode.file_acl == 0 {
        return Ok(Vec::new());
    }
    let block = inode.file_acl;
    let parse = || -> Result<Vec<Xattr>> {
        let data = vol.disk.read_block(block)?;
        let magic = le_u32(&data, 0)?;
        if magic != MAGIC {
            return Err(Error::corrupted(format!("magic {magic:#010x}, expected {MAGIC:#010x}")));
        }
        let blocks = le_u32(&data, 8)?;
        if blocks != 1 {
            return Err(Error::corrupted(format!("h_blocks {blocks}, expected 1")));
        }
        if vol.csum.metadata {
            let stored = le_u32(&data, BLOCK_CHECKSUM_OFFSET)?;
            let c = crc32c(vol.csum.seed, &block.to_le_bytes());
            let c = crc32c(c, slice(&data, 0, BLOCK_CHECKSUM_OFFSET)?);
            let c = crc32c(c, &[0; 4]);
            let computed = crc32c(c, data.get(BLOCK_CHECKSUM_OFFSET + 4..).unwrap_or_default());
            if stored != computed {
                return Err(Error::bad_checksum(format!(
                    "checksum {stored:#010x} does not match computed {computed:#010x}"
                )));
            }
        }
        entries(vol, &data, BLOCK_HEADER_SIZE, 0)
    };
    parse().with_context(|| format!("inode {}: xattr block {block}", inode.ino))
}

/// Parse the entry list of `area` starting at `first`, values counted from
/// `value_base`.
fn entries(vol: &Volume, area: &[u8], first: usize, value_base: usize) -> Result<Vec<Xattr>> {
    struct Raw {
        index: u8,
        name: Vec<u8>,
        offs: usize,
        inum: u32,
        size: u32,
    }
    let mut raw = Vec::new();
    let mut pos = first;
    loop {
        if le_u32(area, pos).map_err(|_| Error::corrupted("entry list runs past the end"))? == 0 {
            break;
        }
        let name_len = usize::from(u8_at(area, pos)?);
        let next = pos + ((ENTRY_HEADER_SIZE + name_len + 3) & !3);
        if next + 4 > area.len() {
            return Err(Error::corrupted(format!("entry at {pos} runs past the end")));
        }
        raw.push(Raw {
            index: u8_at(area, pos + 1)?,
            name: slice(area, pos + ENTRY_HEADER_SIZE, name_len)?.to_vec(),
            offs: usize::from(le_u16(area, pos + 2)?),
            inum: le_u32(area, pos + 4)?,
            size: le_u32(area, pos + 8)?,
        });
        pos = next;
    }
    let list_end = pos + 4;
    raw.into_iter()
        .map(|r| {
            let value = if r.inum != 0 {
                if !vol.sb.features.incompat(incompat::EA_INODE) {
                    return Err(Error::corrupted(format!("value in inode {} without the ea_inode feature", r.inum)));
                }
                Value::Inode { ino: r.inum, size: r.size }
            } else if r.size == 0 {
                Value::Bytes(Vec::new())
            } else {
                let start = value_base + r.offs;
                let size = r.size as usize;
                if start < list_end || start.checked_add(size).is_none_or(|end| end > area.len()) {
                    return Err(Error::corrupted(format!(
                        "value of {} bytes at {} outside the value area",
                        r.size, r.offs
                    )));
                }
                Value::Bytes(slice(area, start, size)?.to_vec())
            };
            Ok(Xattr { index: r.index, name: r.name, value })
        })
        .collect()
}

/// The bytes of `x`'s value, reading its EA inode if it has one.
pub fn value(vol: &Volume, x: &Xattr) -> Result<Vec<u8>> {
    match &x.value {
        Value::Bytes(b) => Ok(b.clone()),
        Value::Inode { ino, size } => ea_inode_value(vol, *ino, *size).with_context(|| format!("EA inode {ino}")),
    }
}

fn ea_inode_value(vol: &Volume, ino: u32, size: u32) -> Result<Vec<u8>> {
    let ea = inode::read(vol, ino)?;
    if !ea.has_flag(flags::EA_INODE) {
        return Err(Error::corrupted("not flagged as an EA inode"));
    }
    if size > VALUE_MAX || ea.size != u64::from(size) {
        return Err(Error::corrupted(format!("size {} does not match the value size {size}", ea.size)));
    }
    let bs = vol.bs();
    let mut out = Vec::with_capacity(size as usize);
    let mut lblk = 0;
    while (out.len() as u64) < u64::from(size) {
        let block = mapping::read_block(vol, &ea, lblk)?.unwrap_or_else(|| vec![0; bs as usize]);
        let want = (u64::from(size) - out.len() as u64).min(bs) as usize;
        out.extend_from_slice(slice(&block, 0, want)?);
        lblk += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_index() {
        for full in [&b"user.comment"[..], b"system.posix_acl_access", b"system.data", b"security.selinux"] {
            let (index, name) = split_name(full).unwrap();
            let x = Xattr { index, name: name.to_vec(), value: Value::Bytes(Vec::new()) };
            assert_eq!(x.full_name().unwrap(), full);
        }
        assert_eq!(split_name(b"system.posix_acl_access"), Some((2, &b""[..])));
        assert_eq!(split_name(b"user."), None);
        assert_eq!(split_name(b"os2.x"), None);
    }
}
