//! How a failed command is told to the user: one line, each thing said
//! once, and a closed output pipe not treated as a failure.
//!
//! Errors built with `thiserror` often name their source in their own
//! message ("cannot open /dev/loop0: Device or resource busy") *and* return
//! it as `source()`; printing the whole chain would then say it twice.

/// The error and its causes joined by ": ", leaving out a cause whose text
/// the message already ends with.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether `e` comes from writing to a pipe whose reader has gone (EPIPE;
/// Rust ignores SIGPIPE, so the write fails instead of killing us).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<std::io::Error>()).any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open /dev/loop0: {source}")]
    struct Open {
        source: std::io::Error,
    }

    #[test]
    fn a_source_named_in_its_parent_is_said_once() {
        let e = anyhow::Error::new(Open { source: std::io::Error::from_raw_os_error(libc::EBUSY) });
        assert_eq!(message(&e), "cannot open /dev/loop0: Device or resource busy (os error 16)");
    }

    #[test]
    fn contexts_and_causes_are_joined() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT)).context("/missing");
        assert_eq!(message(&e), "/missing: No such file or directory (os error 2)");
    }

    #[test]
    fn broken_pipe_is_recognised_through_contexts_only() {
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&pipe));
        let other = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EIO)).context("writing");
        assert!(!is_broken_pipe(&other));
    }
}
