//! POSIX ACLs: ext4's compact on-disk form to the VFS xattr form.
//!
//! ext4 stores `system.posix_acl_*` as a version-1 header and entries of 4
//! bytes (USER_OBJ, GROUP_OBJ, MASK, OTHER: tag and permissions) or 8 bytes
//! (USER, GROUP: with the id). Applications see what the kernel's
//! `ext4_acl_from_disk` then `posix_acl_to_xattr` produce: a version-2
//! header and 8-byte entries for all, the id 0xFFFFFFFF where there is none.

use fshost_sdk::bytes::{le_u16, le_u32};
use fshost_sdk::{Error, Result};

const DISK_VERSION: u32 = 1;
const XATTR_VERSION: u32 = 2;
const UNDEFINED_ID: u32 = 0xFFFF_FFFF;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// Convert an on-disk ACL to the VFS xattr format; `None` for an empty ACL
/// (which the kernel reports as no attribute at all).
pub fn to_xattr(disk: &[u8]) -> Result<Option<Vec<u8>>> {
    let version = le_u32(disk, 0).map_err(|_| Error::corrupted("ACL shorter than its header"))?;
    if version != DISK_VERSION {
        return Err(Error::corrupted(format!("ACL version {version}, expected {DISK_VERSION}")));
    }
    let count = count(disk.len() - 4).ok_or_else(|| Error::corrupted(format!("ACL size {} invalid", disk.len())))?;
    if count == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(4 + count * 8);
    out.extend_from_slice(&XATTR_VERSION.to_le_bytes());
    let mut pos = 4;
    for _ in 0..count {
        let tag = le_u16(disk, pos)?;
        let perm = le_u16(disk, pos + 2)?;
        let id = match tag {
            USER_OBJ | GROUP_OBJ | MASK | OTHER => {
                pos += 4;
                UNDEFINED_ID
            }
            USER | GROUP => {
                let id = le_u32(disk, pos + 4)?;
                pos += 8;
                id
            }
            _ => return Err(Error::corrupted(format!("ACL entry tag {tag:#x} unknown"))),
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    if pos != disk.len() {
        return Err(Error::corrupted("ACL entries do not fill the value"));
    }
    Ok(Some(out))
}

/// `ext4_acl_count`: entries in `size` bytes after the header, assuming at
/// most four short entries.
fn count(size: usize) -> Option<usize> {
    match size.checked_sub(16) {
        None => size.is_multiple_of(4).then_some(size / 4),
        Some(rest) => rest.is_multiple_of(8).then_some(rest / 8 + 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_short_and_full_entries() {
        // user::rw-, user:1234:rw-, group::r--, mask::rw-, other::r--
        let mut disk = 1u32.to_le_bytes().to_vec();
        disk.extend([1, 0, 6, 0]);
        disk.extend([2, 0, 6, 0, 0xd2, 0x04, 0, 0]);
        disk.extend([4, 0, 4, 0]);
        disk.extend([0x10, 0, 6, 0]);
        disk.extend([0x20, 0, 4, 0]);
        // What getfattr -e hex shows for that ACL on a Linux filesystem.
        let expected = "0200000001000600ffffffff02000600d204000004000400ffffffff10000600ffffffff20000400ffffffff";
        let got: String = to_xattr(&disk).unwrap().unwrap().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn refuses_malformed_acls() {
        assert!(to_xattr(&[]).is_err());
        assert!(to_xattr(&[2, 0, 0, 0]).is_err());
        assert_eq!(to_xattr(&[1, 0, 0, 0]).unwrap(), None);
        assert!(to_xattr(&[1, 0, 0, 0, 9, 0, 6, 0]).is_err());
        assert!(to_xattr(&[1, 0, 0, 0, 1, 0, 6]).is_err());
    }
}
