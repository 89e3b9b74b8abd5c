//! The one way metadata is read: filesystem blocks from the device, with the
//! replayed journal laid over them.
//!
//! When an image was not unmounted cleanly its newest metadata may sit only
//! in the journal. After [`crate::journal::replay`] the [`Disk`] serves those
//! blocks from memory and every other block from the device, so the parsers
//! above it see the filesystem as the kernel would after recovery, without a
//! byte written. File data does not come through here: the host reads it from
//! the mappings `iomap_begin` returns (see `iomap.rs` for replayed data).

use fshost_sdk::{Device, Error, Result};

use crate::journal::Replay;

/// The device, the filesystem block size, and the replayed journal, if any.
pub struct Disk {
    device: Device,
    block_size: u32,
    overlay: Option<Replay>,
}

impl Disk {
    /// A disk over `device` with `block_size`-byte blocks and no overlay.
    pub fn new(device: Device, block_size: u32) -> Self {
        Self { device, block_size, overlay: None }
    }

    /// Give the device back (to re-wrap it once the block size is known).
    pub fn into_device(self) -> Device {
        self.device
    }

    /// Serve the blocks `replay` holds from memory from now on.
    pub fn set_overlay(&mut self, replay: Replay) {
        self.overlay = if replay.is_empty() { None } else { Some(replay) };
    }

    /// Stop serving replayed blocks, handing them over (once they are
    /// written onto the device, before a read-write mount).
    pub fn take_overlay(&mut self) -> Option<Replay> {
        self.overlay.take()
    }

    /// The device underneath (its size, its cache).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The replayed contents of block `block`, if the journal has them.
    pub fn overlay_block(&self, block: u64) -> Option<&[u8]> {
        self.overlay.as_ref().and_then(|o| o.block(block))
    }

    /// Whether any block is replayed from the journal.
    pub fn has_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// Filesystem block `block`, whole.
    pub fn read_block(&self, block: u64) -> Result<Vec<u8>> {
        let offset = block
            .checked_mul(u64::from(self.block_size))
            .ok_or_else(|| Error::corrupted(format!("block {block} is beyond any device")))?;
        self.read(offset, self.block_size as usize)
    }

    /// `len` bytes at byte `offset`, replayed blocks taking precedence.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let Some(overlay) = &self.overlay else {
            return self.device.read(offset, len);
        };
        let bs = u64::from(self.block_size);
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| Error::corrupted(format!("read of {len} bytes at {offset} overflows")))?;
        while pos < end {
            let block = pos / bs;
            let within = (pos % bs) as usize;
            let take = (end - pos).min(bs - within as u64) as usize;
            match overlay.block(block) {
                Some(data) => {
                    let part = data.get(within..within + take).ok_or_else(|| {
                        Error::corrupted(format!("journal copy of block {block} is {} bytes", data.len()))
                    })?;
                    out.extend_from_slice(part);
                }
                None => out.extend_from_slice(&self.device.read(pos, take)?),
            }
            pos += take as u64;
        }
        Ok(out)
    }
}
