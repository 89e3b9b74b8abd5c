//! Guest diagnostics. On wasm a message goes to the host's `log` import and
//! lands in the host's `tracing` output; natively (unit tests) warnings and
//! errors go to stderr.

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed: corrupted metadata, a refused feature.
    Error,
    /// Something is off but the guest carries on.
    Warn,
    /// What a user may want to know (shown with `fshost -v`).
    Info,
    /// Detail for whoever debugs the guest (`-vv`).
    Debug,
    /// Every step (`-vvv`).
    Trace,
}

/// Send one message to the host's log.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::fshost::plugin::log as wit;
        let level = match level {
            Level::Error => wit::Level::Error,
            Level::Warn => wit::Level::Warn,
            Level::Info => wit::Level::Info,
            Level::Debug => wit::Level::Debug,
            Level::Trace => wit::Level::Trace,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if level <= Level::Warn {
        eprintln!("[guest {level:?}] {message}");
    }
}

/// `warn!("inode {ino}: ...")`: log a formatted warning through the host.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)*)) };
}

/// `debug!(...)`: log a formatted debug message through the host.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)*)) };
}

/// `error!(...)`: log a formatted error through the host.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)*)) };
}
