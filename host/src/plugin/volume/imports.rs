//! What the host hands a volume guest: the same bounds-checked device and
//! budgeted log as a filesystem guest's (`plugin::imports`), through the
//! volume contract's own interfaces. Nothing else; there is no `write`.

use super::super::State;
use super::super::bindings::{block_device as fs_device, log as fs_log, types as fs_types};
use super::bindings::{block_device, log, types};

impl types::Host for State {}

impl block_device::Host for State {
    fn size(&mut self) -> u64 {
        fs_device::Host::size(self)
    }

    fn sector_size(&mut self) -> u32 {
        fs_device::Host::sector_size(self)
    }

    fn read(&mut self, offset: u64, length: u32) -> Result<Vec<u8>, types::ErrorCode> {
        fs_device::Host::read(self, offset, length).map_err(|code| match code {
            fs_types::ErrorCode::Invalid => types::ErrorCode::Invalid,
            _ => types::ErrorCode::Io,
        })
    }
}

impl log::Host for State {
    fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Error => fs_log::Level::Error,
            log::Level::Warn => fs_log::Level::Warn,
            log::Level::Info => fs_log::Level::Info,
            log::Level::Debug => fs_log::Level::Debug,
            log::Level::Trace => fs_log::Level::Trace,
        };
        fs_log::Host::log(self, level, message);
    }
}
