//! What the host hands a guest: the device (bounds-checked, read-only on a
//! read-only mount whatever the guest believes) and a log routed into
//! `tracing`. Nothing else.

use super::State;
use super::bindings::{block_device, log, types};

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
        // The host has no write path yet; on a read-only mount this is the
        // enforcement point, not the guest's good will.
        tracing::warn!(target: "fshost::guest", "guest tried to write {} bytes at {offset}: refused", data.len());
        Err(types::ErrorCode::ReadOnly)
    }
}

/// Longest guest log message kept.
const MAX_MESSAGE: usize = 4096;

impl log::Host for State {
    fn log(&mut self, level: log::Level, mut message: String) {
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
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
