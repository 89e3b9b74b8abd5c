//! What /etc/fuse.conf allows a mount by a user other than root.
//!
//! Such a mount goes through the set-uid `fusermount3`, which refuses
//! `allow_other` unless /etc/fuse.conf has the line `user_allow_other`.
//! fshost checks first, as fusermount3 reads the file (a `#` starts a
//! comment, surrounding blanks do not count), so that the user learns what
//! to change before the guest is compiled and anything is opened.

use std::path::Path;

/// Where fusermount3 reads its configuration.
pub const FUSE_CONF: &str = "/etc/fuse.conf";

/// Whether `text` (the contents of /etc/fuse.conf) has `user_allow_other`.
pub fn allows_other(text: &str) -> bool {
    text.lines().any(|line| line.split('#').next().unwrap_or_default().trim() == "user_allow_other")
}

/// Fails with what to do when a mount by this (non-root) user asks for
/// `allow_other` and `conf` does not allow it. Root needs no permission.
pub fn check_allow_other(conf: &Path) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let text = match std::fs::read_to_string(conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("allow_other: cannot read {}: {e}", conf.display()),
    };
    if allows_other(&text) {
        return Ok(());
    }
    anyhow::bail!(
        "allow_other (other users may use this mount) is refused for a mount by a user other than root unless {} \
         has the line `user_allow_other`; ask an administrator to add it, or mount without allow_other (then only \
         you can use the mount)",
        conf.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_as_fusermount3_reads_it() {
        assert!(allows_other("user_allow_other\n"));
        assert!(allows_other("# comment\n  user_allow_other   # yes\nmount_max = 10\n"));
        assert!(!allows_other("#user_allow_other\n"));
        assert!(!allows_other("user_allow_other_not\n"));
        assert!(!allows_other(""));
    }
}
