//! The hard limits a guest instance runs under, in one place.

use std::time::Duration;

/// Limits for each guest instance and each call into it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub memory: usize,
    /// Largest table, in elements.
    pub table_elements: usize,
    /// Most instances (a component may instantiate several core modules).
    pub instances: usize,
    /// Wall-clock deadline for one call (enforced with epoch interruption).
    pub call_timeout: Duration,
    /// Largest single device read a guest may ask for, in bytes.
    pub max_read: u32,
    /// Largest single device write a guest may ask for, in bytes
    /// (read-write mounts; the contract promises at least 1 MiB).
    pub max_write: u32,
    /// Most entries a readdir answer may hold.
    pub max_dir_entries: u32,
    /// Most mappings one iomap-begin answer may hold.
    pub max_mappings: usize,
    /// Largest xattr value, symlink target or inline mapping, in bytes.
    pub max_value: usize,
    /// Consecutive failed mounts after which the filesystem is marked failed.
    pub max_mount_failures: u32,
    /// Most guest log messages kept per call; the rest are counted, and
    /// the count is logged once after the call.
    pub log_messages_per_call: u32,
    /// Most bytes of guest log messages kept per call.
    pub log_bytes_per_call: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            table_elements: 100_000,
            instances: 16,
            call_timeout: Duration::from_secs(1),
            max_read: 16 << 20,
            max_write: 1 << 20,
            max_dir_entries: 4096,
            max_mappings: 4096,
            max_value: 1 << 20,
            max_mount_failures: 3,
            log_messages_per_call: 100,
            log_bytes_per_call: 64 << 10,
        }
    }
}

/// The epoch tick: deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

impl Limits {
    /// The call deadline in epoch ticks (at least 1).
    pub fn deadline_ticks(&self) -> u64 {
        (self.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}
