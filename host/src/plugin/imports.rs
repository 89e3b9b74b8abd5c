//! What the host hands a guest: the device (bounds-checked, read-only on a
//! read-only mount whatever the guest believes; on a read-write mount
//! writes of at most `Limits::max_write` bytes inside it, and flush as
//! fdatasync), a log routed into `tracing`, truncated and limited per
//! call, and CRC32C computed with the CPU's instruction (a pure function:
//! nothing of the host is read or kept). Nothing else.

use super::State;
use super::bindings::{block_device, checksum, log, types};

impl types::Host for State {}

impl block_device::Host for State {
    fn size(&mut self) -> u64 {
        self.device.size()
    }

    fn sector_size(&mut self) -> u32 {
        self.device.sector_size()
    }

    fn read(&mut self, offset: u64, length: u32) -> Result<Vec<u8>, types::ErrorCode> {
        if length > self.max_read {
            return Err(types::ErrorCode::Invalid);
        }
        if !self.device.contains(offset, u64::from(length)) {
            tracing::debug!(target: "fshost::guest", "guest read of {length} bytes at {offset} is outside the device");
            return Err(types::ErrorCode::Io);
        }
        let mut buf = vec![0u8; length as usize];
        match self.device.read_exact_at(offset, &mut buf) {
            Ok(()) => Ok(buf),
            Err(e) => {
                tracing::warn!("{e}");
                Err(types::ErrorCode::Io)
            }
        }
    }

    fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), types::ErrorCode> {
        // On a read-only mount this is the enforcement point, not the
        // guest's good will: the device is not even open for writing. An
        // instance mounted read-only on a device opened read-write (a guest
        // probed by detection, a volume guest) is refused the same way.
        if self.device.read_only() || !self.writable {
            tracing::warn!(target: "fshost::guest", "guest tried to write {} bytes at {offset}: refused", data.len());
            return Err(types::ErrorCode::ReadOnly);
        }
        if data.len() > self.max_write as usize {
            return Err(types::ErrorCode::Invalid);
        }
        if !self.device.contains(offset, data.len() as u64) {
            tracing::warn!(target: "fshost::guest", "guest write of {} bytes at {offset} is outside the device", data.len());
            return Err(types::ErrorCode::Io);
        }
        self.device.write_all_at(offset, &data).map_err(|e| {
            tracing::warn!("{e}");
            types::ErrorCode::Io
        })
    }

    fn flush(&mut self) -> Result<(), types::ErrorCode> {
        // Read-only: nothing was written, nothing to make durable.
        if self.device.read_only() || !self.writable {
            return Ok(());
        }
        self.device.flush().map_err(|e| {
            tracing::warn!("{e}");
            types::ErrorCode::Io
        })
    }
}

impl checksum::Host for State {
    fn crc32c(&mut self, seed: u32, data: Vec<u8>) -> u32 {
        crc32c_update(seed, &data)
    }
}

/// The contract's CRC32C: the raw register update, as ext4's. The crate
/// computes the standard CRC (inverted before and after).
fn crc32c_update(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// Longest guest log message kept.
const MAX_MESSAGE: usize = 4096;

/// How much a guest may log in one call. Without it a guest (or a guest
/// looping over a corrupted structure, warning each time) writes to the
/// host's log as fast as it can until the deadline: 250 MB in one second.
#[derive(Debug, Clone)]
pub(crate) struct LogBudget {
    messages: u32,
    bytes: usize,
    per_call: (u32, usize),
    dropped: u32,
}

impl LogBudget {
    /// A budget of `messages` messages and `bytes` bytes per call.
    pub(crate) fn new(messages: u32, bytes: usize) -> Self {
        LogBudget { messages, bytes, per_call: (messages, bytes), dropped: 0 }
    }

    /// Start a call: a full budget, no message dropped.
    pub(crate) fn refill(&mut self) {
        (self.messages, self.bytes) = self.per_call;
        self.dropped = 0;
    }

    /// Whether a message of `len` bytes fits; counts it as dropped if not.
    fn take(&mut self, len: usize) -> bool {
        if self.messages == 0 || len > self.bytes {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.messages -= 1;
        self.bytes -= len;
        true
    }

    /// Messages dropped since the last refill.
    pub(crate) fn dropped(&self) -> u32 {
        self.dropped
    }
}

thread_local! {
    /// The guest's warnings and errors while [`capture_warnings`] runs.
    static CAPTURE: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Whether a capture took `message` (it is then logged at debug level).
fn captured(message: &str) -> bool {
    CAPTURE.with_borrow_mut(|c| match c {
        Some(list) => {
            tracing::debug!(target: "fshost::guest", "{message}");
            list.push(message.to_owned());
            true
        }
        None => false,
    })
}

/// Run `f` (guest calls on this thread), keeping the guest's warnings and
/// errors for the caller instead of logging them: detection tries guests
/// that are expected to refuse, and reports their reasons itself.
pub fn capture_warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let outer = CAPTURE.replace(Some(Vec::new()));
    let result = f();
    let got = CAPTURE.replace(outer).unwrap_or_default();
    (result, got)
}

impl log::Host for State {
    fn log(&mut self, level: log::Level, mut message: String) {
        if !self.log_budget.take(message.len().min(MAX_MESSAGE)) {
            return;
        }
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if matches!(level, log::Level::Error | log::Level::Warn) && captured(&message) {
            return;
        }
        match level {
            log::Level::Error => tracing::error!(target: "fshost::guest", "{message}"),
            log::Level::Warn => tracing::warn!(target: "fshost::guest", "{message}"),
            log::Level::Info => tracing::info!(target: "fshost::guest", "{message}"),
            log::Level::Debug => tracing::debug!(target: "fshost::guest", "{message}"),
            log::Level::Trace => tracing::trace!(target: "fshost::guest", "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_the_raw_register_update() {
        // CRC-32C("123456789") = 0xE3069283 with the usual inversions.
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_update(crc32c_update(7, b"1234"), b"56789"), crc32c_update(7, b"123456789"));
        assert_ne!(crc32c_update(7, b"123456789"), crc32c_update(8, b"123456789"));
    }

    #[test]
    fn log_budget_counts_what_it_drops_and_refills() {
        let mut b = LogBudget::new(2, 100);
        assert!(b.take(60));
        assert!(!b.take(60), "over the bytes");
        assert!(b.take(40));
        assert!(!b.take(1), "over the messages");
        assert_eq!(b.dropped(), 2);
        b.refill();
        assert_eq!(b.dropped(), 0);
        assert!(b.take(100));
    }
}
