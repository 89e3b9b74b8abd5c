//! The one way metadata is read: filesystem blocks from the device, with the
//! replayed journal laid over them.
//!
//! When an image was not unmounted cleanly its newest metadata may sit only
//! in the journal. After [`crate::journal::replay`] the [`Disk`] serves those
//! blocks from memory and every other block from the device, so the parsers
//! above it see the filesystem as the kernel would after recovery, without a
//! byte written. File data does not come through here: the host reads it from
//! the mappings `iomap_begin` returns (see `iomap.rs` for replayed data).
//!
//! It is also the one way metadata is written ([`Disk::write`]). With the
//! journal on (write/journal.rs), a write lands in the running
//! transaction's copy of its block, which reads see from then on, and the
//! block's home location is written only once the transaction has
//! committed to the journal; without it, writes go straight to the device.

use std::cell::RefCell;
use std::collections::BTreeMap;

use fshost_sdk::{Device, Error, Result};

use crate::journal::Replay;

/// The device, the filesystem block size, and the replayed journal, if any.
pub struct Disk {
    device: Device,
    block_size: u32,
    overlay: Option<Replay>,
    /// The running transaction's blocks (newest contents), when writes are
    /// journaled; `None` writes through to the device.
    running: RefCell<Option<BTreeMap<u64, Vec<u8>>>>,
    /// The `journal` mount option: a read-write mount journals its
    /// metadata (write/journal.rs).
    pub journal_requested: bool,
    /// When the journal was replayed (even to nothing): the transaction id
    /// the emptied journal starts from.
    replayed: Option<u32>,
}

impl Disk {
    /// A disk over `device` with `block_size`-byte blocks and no overlay.
    pub fn new(device: Device, block_size: u32) -> Self {
        Self {
            device,
            block_size,
            overlay: None,
            running: RefCell::new(None),
            journal_requested: false,
            replayed: None,
        }
    }

    /// Give the device back (to re-wrap it once the block size is known).
    pub fn into_device(self) -> Device {
        self.device
    }

    /// Serve the blocks `replay` holds from memory from now on.
    pub fn set_overlay(&mut self, replay: Replay) {
        self.replayed = Some(replay.next_sequence);
        self.overlay = if replay.is_empty() { None } else { Some(replay) };
    }

    /// Stop serving replayed blocks, handing them over (once they are
    /// written onto the device, before a read-write mount).
    pub fn take_overlay(&mut self) -> Option<Replay> {
        self.overlay.take()
    }

    /// The filesystem block size in bytes.
    pub fn block_size(&self) -> u64 {
        u64::from(self.block_size)
    }

    /// The next transaction id, when the journal was replayed at mount.
    pub fn replayed_sequence(&self) -> Option<u32> {
        self.replayed
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

    /// `len` bytes at byte `offset`, the running transaction's blocks and
    /// then replayed blocks taking precedence.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let running = self.running.borrow();
        if self.overlay.is_none() && running.as_ref().is_none_or(BTreeMap::is_empty) {
            return self.device.read(offset, len);
        }
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
            let held = running.as_ref().and_then(|r| r.get(&block)).map(Vec::as_slice);
            match held.or_else(|| self.overlay_block(block)) {
                Some(data) => {
                    let part = data.get(within..within + take).ok_or_else(|| {
                        Error::corrupted(format!("the copy of block {block} in memory is {} bytes", data.len()))
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

impl Disk {
    /// Write `data` at byte `offset`: into the running transaction when
    /// writes are journaled (whole blocks, read first when only part of one
    /// changes), else straight to the device.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if self.running.borrow().is_none() {
            return self.device.write(offset, data);
        }
        let bs = u64::from(self.block_size);
        let end = offset.checked_add(data.len() as u64).filter(|&end| end <= self.device.size()).ok_or_else(|| {
            Error::io(format!("write of {} bytes at byte {offset} is past the end of the device", data.len()))
        })?;
        let mut pos = offset;
        while pos < end {
            let block = pos / bs;
            let within = (pos % bs) as usize;
            let take = (end - pos).min(bs - within as u64) as usize;
            let src = &data[(pos - offset) as usize..][..take];
            let mut copy = if take == self.block_size as usize { Vec::new() } else { self.read_block(block)? };
            if copy.is_empty() {
                copy = src.to_vec();
            } else {
                copy[within..within + take].copy_from_slice(src);
            }
            if let Some(running) = self.running.borrow_mut().as_mut() {
                running.insert(block, copy);
            }
            pos += take as u64;
        }
        Ok(())
    }

    /// Start collecting writes in a running transaction (the journal is on).
    pub fn start_transactions(&self) {
        self.running.borrow_mut().get_or_insert_with(BTreeMap::new);
    }

    /// Stop journaling: writes go to the device again. Returns what the
    /// running transaction held (commit it first).
    pub fn stop_transactions(&self) -> BTreeMap<u64, Vec<u8>> {
        self.running.borrow_mut().take().unwrap_or_default()
    }

    /// Whether writes are being journaled.
    pub fn journaling(&self) -> bool {
        self.running.borrow().is_some()
    }

    /// How many blocks the running transaction holds.
    pub fn running_len(&self) -> usize {
        self.running.borrow().as_ref().map_or(0, BTreeMap::len)
    }

    /// A copy of the running transaction's blocks (to commit them).
    pub fn running_blocks(&self) -> BTreeMap<u64, Vec<u8>> {
        self.running.borrow().clone().unwrap_or_default()
    }

    /// Forget the running transaction's blocks once they are home (reads
    /// see the device again) and start an empty one.
    pub fn clear_running(&self) {
        if let Some(running) = self.running.borrow_mut().as_mut() {
            running.clear();
        }
    }
}
