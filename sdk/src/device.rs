//! The device a guest reads, with a small block cache in front of it.
//!
//! On wasm the bytes come from the host's `block-device` import; in native
//! tests they come from an image file (see [`crate::testing`]). Parsers
//! read the same metadata blocks over and over (group descriptors, inode
//! tables, index blocks), so a few hundred cached blocks save most host calls.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::{Error, Result};

/// Where the bytes come from. Implemented by the wasm import and by files.
pub trait BlockIo {
    /// Size of the device in bytes.
    fn size(&self) -> u64;
    /// Logical sector size in bytes.
    fn sector_size(&self) -> u32;
    /// Fill `buf` from byte `offset`; the range lies inside the device.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Write `data` at byte `offset`; the range lies inside the device.
    /// The default refuses: a read-only device.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let _ = (offset, data);
        Err(Error::new(crate::ErrorCode::ReadOnly, "the device is read-only"))
    }
    /// Make the writes before this call durable (a barrier).
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Reads larger than this bypass the cache (they are data, not metadata).
const CACHE_BYPASS: usize = 64 * 1024;

/// The longest span [`Device::prefetch`] reads at once.
pub const MAX_PREFETCH: usize = 1 << 20;

/// A device handle with a block cache. Writes go through to the device at
/// once and update the cached copy (write-through), so a read after a
/// write sees it.
pub struct Device {
    io: Box<dyn BlockIo>,
    size: u64,
    cache: RefCell<BlockCache>,
}

struct BlockCache {
    block_size: usize,
    capacity: usize,
    tick: u64,
    blocks: HashMap<u64, (u64, Vec<u8>)>,
}

impl BlockCache {
    fn get(&mut self, index: u64) -> Option<&[u8]> {
        self.tick += 1;
        let tick = self.tick;
        self.blocks.get_mut(&index).map(|(used, data)| {
            *used = tick;
            data.as_slice()
        })
    }

    fn insert(&mut self, index: u64, data: Vec<u8>) {
        if self.blocks.len() >= self.capacity {
            // Forget the least recently used half at once (as `crate::lru`
            // does): O(1) amortised. Dropping only the oldest block scanned
            // the whole cache on every miss (4,096 blocks for ext4), which a
            // listing in hash order, each inode in another inode-table
            // block, turned into most of its time.
            let mut ticks: Vec<u64> = self.blocks.values().map(|(t, _)| *t).collect();
            let mid = ticks.len() / 2;
            let (_, &mut median, _) = ticks.select_nth_unstable(mid);
            self.blocks.retain(|_, (t, _)| *t > median);
        }
        self.tick += 1;
        self.blocks.insert(index, (self.tick, data));
    }
}

impl Device {
    /// Wrap `io` with a cache of 256 blocks of 4 KiB.
    pub fn new(io: Box<dyn BlockIo>) -> Self {
        let size = io.size();
        Self {
            io,
            size,
            cache: RefCell::new(BlockCache { block_size: 4096, capacity: 256, tick: 0, blocks: HashMap::new() }),
        }
    }

    /// Change the cache geometry (e.g. to the filesystem's block size once the
    /// superblock is read). Drops what was cached.
    pub fn set_cache(&self, block_size: u32, capacity: usize) {
        let mut cache = self.cache.borrow_mut();
        cache.block_size = (block_size as usize).clamp(512, 64 * 1024);
        cache.capacity = capacity.max(1);
        cache.blocks.clear();
    }

    /// Size of the device in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Logical sector size in bytes.
    pub fn sector_size(&self) -> u32 {
        self.io.sector_size()
    }

    /// `len` bytes at byte `offset`, or an `Io` error if the range is not
    /// inside the device.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Fill `buf` from byte `offset`, or an `Io` error if the range is not
    /// inside the device.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&end| end <= self.size).ok_or_else(|| {
            Error::io(format!(
                "read of {} bytes at byte {offset} is past the end of the {}-byte device",
                buf.len(),
                self.size
            ))
        })?;
        if buf.len() > CACHE_BYPASS {
            return self.io.read_at(offset, buf);
        }
        let mut cache = self.cache.borrow_mut();
        let bs = cache.block_size as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos / bs;
            let start = index * bs;
            let within = (pos - start) as usize;
            let take = ((end - pos) as usize).min(cache.block_size - within);
            let dst_at = (pos - offset) as usize;
            if cache.get(index).is_none() {
                let block_len = bs.min(self.size - start) as usize;
                let mut block = vec![0u8; block_len];
                self.io.read_at(start, &mut block)?;
                cache.insert(index, block);
            }
            let block = cache.get(index).ok_or_else(|| Error::io("block cache lost a block"))?;
            let src = block
                .get(within..within + take)
                .ok_or_else(|| Error::io(format!("short block {index} from the device")))?;
            buf[dst_at..dst_at + take].copy_from_slice(src);
            pos += take as u64;
        }
        Ok(())
    }
}

impl Device {
    /// Whether the block holding byte `offset` is in the cache.
    pub fn is_cached(&self, offset: u64) -> bool {
        let cache = self.cache.borrow();
        cache.blocks.contains_key(&(offset / cache.block_size as u64))
    }

    /// Bring the blocks that hold [`offset`, `offset + len`) into the cache
    /// (clamped to the device), reading the missing ones with one device
    /// read from the first missing block to the last: readahead, as the
    /// kernel's ext4 reads a run of inode-table blocks around the inode it
    /// needs. Spans longer than a quarter of the cache or than
    /// [`MAX_PREFETCH`] bytes are cut there; a failed read is left to the
    /// read that needs the bytes, which reports it.
    pub fn prefetch(&self, offset: u64, len: u64) {
        let mut cache = self.cache.borrow_mut();
        let bs = cache.block_size as u64;
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return;
        }
        let max_blocks = (cache.capacity / 4).min(MAX_PREFETCH / cache.block_size).max(1) as u64;
        let last = ((end - 1) / bs).min(offset / bs + max_blocks - 1);
        let missing = |c: &BlockCache, b: u64| !c.blocks.contains_key(&b);
        let Some(first) = (offset / bs..=last).find(|&b| missing(&cache, b)) else { return };
        let Some(last) = (first..=last).rev().find(|&b| missing(&cache, b)) else { return };
        let start = first * bs;
        let span_end = ((last + 1) * bs).min(self.size);
        let mut span = vec![0u8; (span_end - start) as usize];
        if self.io.read_at(start, &mut span).is_err() {
            return;
        }
        for (i, block) in span.chunks(cache.block_size).enumerate() {
            let index = first + i as u64;
            if missing(&cache, index) {
                cache.insert(index, block.to_vec());
            }
        }
    }

    /// Write `data` at byte `offset` (write-through: the device first, then
    /// the cached copies of the blocks it touches), or an `Io` error if the
    /// range is not inside the device; `ReadOnly` on a read-only mount.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len() as u64).filter(|&end| end <= self.size).ok_or_else(|| {
            Error::io(format!(
                "write of {} bytes at byte {offset} is past the end of the {}-byte device",
                data.len(),
                self.size
            ))
        })?;
        let mut done = 0usize;
        while done < data.len() {
            let want = (data.len() - done).min(MAX_WRITE);
            self.io.write_at(offset + done as u64, &data[done..done + want])?;
            done += want;
        }
        let mut cache = self.cache.borrow_mut();
        let bs = cache.block_size as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos / bs;
            let start = index * bs;
            let within = (pos - start) as usize;
            let take = ((end - pos) as usize).min(cache.block_size - within);
            if let Some((_, block)) = cache.blocks.get_mut(&index)
                && let Some(dst) = block.get_mut(within..within + take)
            {
                let src = (pos - offset) as usize;
                dst.copy_from_slice(&data[src..src + take]);
            }
            pos += take as u64;
        }
        Ok(())
    }

    /// Make every write so far durable (the host's fdatasync): a barrier.
    pub fn flush(&self) -> Result<()> {
        self.io.flush()
    }
}

/// The host accepts at least this much per write call.
const MAX_WRITE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Counting {
        data: Vec<u8>,
        reads: Cell<usize>,
    }

    impl BlockIo for std::rc::Rc<Counting> {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn sector_size(&self) -> u32 {
            512
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.reads.set(self.reads.get() + 1);
            let o = offset as usize;
            buf.copy_from_slice(&self.data[o..o + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn cached_reads_match_the_bytes_and_hit_the_cache() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let io = std::rc::Rc::new(Counting { data: data.clone(), reads: Cell::new(0) });
        let dev = Device::new(Box::new(io.clone()));
        // Spans blocks 0..=2, ends in the short last block.
        assert_eq!(dev.read(4000, 5000).unwrap(), data[4000..9000]);
        assert_eq!(dev.read(9000, 1000).unwrap(), data[9000..10_000]);
        let after_first = io.reads.get();
        assert_eq!(dev.read(100, 8000).unwrap(), data[100..8100]);
        assert_eq!(io.reads.get(), after_first, "second read should be served from cache");
        assert_eq!(dev.read(9999, 2).unwrap_err().code(), crate::ErrorCode::Io);
        assert_eq!(dev.read(u64::MAX, 2).unwrap_err().code(), crate::ErrorCode::Io);
    }

    #[test]
    fn prefetch_reads_the_missing_span_once() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let io = std::rc::Rc::new(Counting { data: data.clone(), reads: Cell::new(0) });
        let dev = Device::new(Box::new(io.clone()));
        dev.set_cache(1024, 64);
        dev.read(5 * 1024, 10).unwrap();
        let before = io.reads.get();
        // Blocks 2..=9: one read for 2..=9 (5 is cached but inside the span).
        dev.prefetch(2 * 1024 + 100, 8 * 1024 - 200);
        assert_eq!(io.reads.get(), before + 1);
        assert_eq!(dev.read(2048, 8192).unwrap(), data[2048..10_240]);
        assert_eq!(io.reads.get(), before + 1, "served from the cache");
        // All cached: no read. Past the end: clamped, the short last block kept.
        dev.prefetch(3 * 1024, 2048);
        dev.prefetch(39 * 1024, 1 << 20);
        assert_eq!(io.reads.get(), before + 2);
        assert_eq!(dev.read(39 * 1024, 64).unwrap(), data[39 * 1024..]);
        assert_eq!(io.reads.get(), before + 2);
        dev.prefetch(u64::MAX - 5, 100);
        dev.prefetch(50_000, 100);
        assert_eq!(io.reads.get(), before + 2);
    }

    #[test]
    fn eviction_keeps_capacity() {
        let data = vec![1u8; 64 * 1024];
        let io = std::rc::Rc::new(Counting { data, reads: Cell::new(0) });
        let dev = Device::new(Box::new(io.clone()));
        dev.set_cache(1024, 4);
        for i in 0..20 {
            dev.read(i * 1024, 10).unwrap();
        }
        assert!(dev.cache.borrow().blocks.len() <= 4);
        // The most recently read block is still cached.
        let before = io.reads.get();
        dev.read(19 * 1024, 10).unwrap();
        assert_eq!(io.reads.get(), before);
    }
}
