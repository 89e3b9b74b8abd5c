//! Block-mapped (ext2/ext3) files: freeing their blocks. Writing them is
//! not done yet (begin_write refuses filesystems without extents); on an
//! ext4 filesystem an old block-mapped file can still be truncated or
//! deleted.

use fshost_sdk::{Error, Result};

use super::RawInode;
use crate::fs::Ext4;

/// Free every block of block-mapped inode `ino` at or past `from`.
pub(super) fn truncate(_fs: &mut Ext4, ino: u32, _raw: &mut RawInode, _from: u32) -> Result<()> {
    Err(Error::unsupported(format!("inode {ino}: truncating block-mapped files is not supported yet")))
}
