//! Case-insensitive names (the casefold feature, `+F` directories), as far
//! as they can be decided without the kernel's Unicode 12.1 tables.
//!
//! The kernel compares names by their NFD case folding (`utf8_casefold`).
//! This guest decides with certainty only the cases that need no tables:
//! identical bytes always match; two ASCII names match when equal ignoring
//! ASCII case (NFD and case folding of ASCII are ASCII lowercase); a name
//! that is not UTF-8 only matches itself (the kernel falls back to bytes).
//! Anything else (a non-ASCII name against a different one, since e.g. the
//! Kelvin sign folds to "k") is [`Match::Unsure`], and a lookup that finds no
//! certain match but met an unsure one fails with `Unsupported` rather than
//! guessing.

/// Whether a stored name matches the one looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    Unsure,
}

/// Compare `stored` with `wanted` in a casefolded directory.
pub fn compare(stored: &[u8], wanted: &[u8]) -> Match {
    if stored == wanted {
        return Match::Yes;
    }
    if std::str::from_utf8(wanted).is_err() || std::str::from_utf8(stored).is_err() {
        return Match::No;
    }
    if stored.is_ascii() && wanted.is_ascii() {
        return if stored.eq_ignore_ascii_case(wanted) { Match::Yes } else { Match::No };
    }
    Match::Unsure
}

/// The bytes the htree hash is computed over for `name`, when this guest
/// can fold it: ASCII lowercased, non-UTF-8 as is; `None` otherwise.
pub fn hash_key(name: &[u8]) -> Option<Vec<u8>> {
    if std::str::from_utf8(name).is_err() {
        Some(name.to_vec())
    } else if name.is_ascii() {
        Some(name.to_ascii_lowercase())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_only_what_needs_no_tables() {
        assert_eq!(compare(b"Hello.TXT", b"hello.txt"), Match::Yes);
        assert_eq!(compare(b"hello", b"world"), Match::No);
        assert_eq!(compare("caf\u{e9}".as_bytes(), "caf\u{e9}".as_bytes()), Match::Yes);
        assert_eq!(compare("\u{212a}".as_bytes(), b"k"), Match::Unsure);
        assert_eq!(compare(b"\xff", b"\xfe"), Match::No);
        assert_eq!(hash_key(b"ABC"), Some(b"abc".to_vec()));
        assert_eq!(hash_key("\u{e9}".as_bytes()), None);
    }
}
