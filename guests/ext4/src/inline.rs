//! Inline data: small files, directories and symlinks whose bytes live in the
//! inode itself, the first 60 in `i_block` and the rest in the value of the
//! in-inode `system.data` attribute (kernel: `ext4_read_inline_data`).

use fshost_sdk::Result;

use crate::inode::Inode;
use crate::volume::Volume;
use crate::xattr::{self, Value, index};

/// The two parts of an inode's inline data.
pub struct Inline {
    /// `i_block`.
    pub head: [u8; 60],
    /// The `system.data` value (empty when there is none).
    pub tail: Vec<u8>,
}

impl Inline {
    /// Read the inline data of `inode`.
    pub fn read(vol: &Volume, inode: &Inode) -> Result<Self> {
        let tail = xattr::in_inode(vol, inode)?
            .into_iter()
            .find(|x| x.index == index::SYSTEM && x.name == b"data")
            .map(|x| match x.value {
                Value::Bytes(b) => b,
                // An EA inode cannot hold inline data; treat it as empty.
                Value::Inode { .. } => Vec::new(),
            })
            .unwrap_or_default();
        Ok(Self { head: inode.block, tail })
    }

    /// The first `size` bytes of the file, zero-filled past the stored
    /// bytes as the kernel does (`size` is bounded by the caller).
    pub fn file_bytes(&self, size: usize) -> Vec<u8> {
        let mut out: Vec<u8> = self.head.iter().chain(self.tail.iter()).copied().take(size).collect();
        out.resize(size, 0);
        out
    }
}
