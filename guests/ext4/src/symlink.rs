//! Symlink targets, from the three places ext4 keeps them: in `i_block`
//! ("fast", when no data block is charged to the inode), in inline data, or
//! in the first data block ("slow"). As `readlink(2)` on Linux returns, the
//! target stops at the size (at most 59 bytes fast, a block less one slow)
//! and at the first NUL.

use fshost_sdk::bytes::{le_u16, slice};
use fshost_sdk::{Error, Result, ResultExt};

use crate::inline::Inline;
use crate::inode::{Inode, flags};
use crate::mapping;
use crate::nokey;
use crate::volume::Volume;

/// `ext4_inode_is_fast_symlink`: no blocks besides a possible xattr block.
fn is_fast(vol: &Volume, inode: &Inode) -> bool {
    if inode.has_flag(flags::EA_INODE) {
        return inode.size != 0 && inode.size < 60;
    }
    if inode.has_flag(flags::INLINE_DATA) {
        return false;
    }
    let ea_blocks = if inode.file_acl != 0 { vol.sb.cluster_size >> 9 } else { 0 };
    inode.blocks.checked_sub(ea_blocks) == Some(0)
}

/// The target of symlink `inode`.
pub fn target(vol: &Volume, inode: &Inode) -> Result<Vec<u8>> {
    let mut bytes = if inode.has_flag(flags::INLINE_DATA) {
        if inode.size >= vol.bs() {
            return Err(Error::corrupted(format!("symlink {}: inline target of {} bytes", inode.ino, inode.size)));
        }
        Inline::read(vol, inode)?.file_bytes(inode.size as usize)
    } else if is_fast(vol, inode) {
        if inode.size == 0 || inode.size >= 60 {
            return Err(Error::corrupted(format!("symlink {}: invalid fast symlink length {}", inode.ino, inode.size)));
        }
        inode.block.get(..inode.size as usize).unwrap_or_default().to_vec()
    } else {
        let block = mapping::read_block(vol, inode, 0)?
            .ok_or_else(|| Error::corrupted(format!("symlink {}: no data block", inode.ino)))?;
        let len = inode.size.min(vol.bs() - 1) as usize;
        block.get(..len).unwrap_or_default().to_vec()
    };
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    if bytes.is_empty() {
        // The kernel shows this as an empty target; the contract has none
        // (the host refuses one), so it is reported as the damage it is.
        return Err(Error::corrupted(format!("symlink {}: empty target (its first byte is NUL)", inode.ino)));
    }
    Ok(bytes)
}

/// The target of encrypted symlink `inode` as the kernel shows it without
/// the key (`ext4_get_encrypted_link`, `fscrypt_get_symlink`): the stored
/// ciphertext (`struct fscrypt_symlink_data`: a 16-bit length, then the
/// bytes) as a no-key name with zero hashes.
pub fn encrypted_target(vol: &Volume, inode: &Inode) -> Result<Vec<u8>> {
    let (area, max) = if is_fast(vol, inode) {
        (inode.block.to_vec(), inode.block.len())
    } else if inode.has_flag(flags::INLINE_DATA) {
        let bytes = Inline::read(vol, inode)?.file_bytes(inode.size.min(vol.bs()) as usize);
        let max = bytes.len();
        (bytes, max)
    } else {
        let block = mapping::read_block(vol, inode, 0)?
            .ok_or_else(|| Error::corrupted(format!("symlink {}: no data block", inode.ino)))?;
        (block, vol.bs() as usize)
    };
    let len = usize::from(le_u16(&area, 0)?);
    if len == 0 || len + 2 > max {
        return Err(Error::corrupted(format!("encrypted symlink {}: ciphertext of {len} bytes", inode.ino)));
    }
    nokey::encode(slice(&area, 2, len)?, 0, 0).with_context(|| format!("encrypted symlink {}", inode.ino))
}
