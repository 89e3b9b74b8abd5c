//! One directory's entries as Linux's vfat lists them: the walk of
//! `__fat_readdir` and `fat_search_long` (which share it), with
//! `fat_parse_long`'s rules for long-name sequences. A sequence counts only
//! if its slots come in order with one checksum and end at a live short
//! entry; a broken sequence is skipped slot by slot or restarted at the
//! next slot that opens one, and a checksum that does not match the short
//! entry leaves the short name in force. Free (0x00 or 0xE5) and volume
//! label entries are skipped; Linux does not stop at the first 0x00 entry.

use std::cell::OnceCell;
use std::collections::HashMap;

use fshost_sdk::Result;

use crate::dir::{ENTRY_SIZE, ShortEntry, attr, checksum};
use crate::lfn::{self, LAST_SLOT, MAX_SLOTS, Slot, UNITS_PER_SLOT};

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name readdir shows: the long name if there is a valid one.
    pub name: Vec<u8>,
    /// The short name as shown (lookup matches it too).
    pub short: Vec<u8>,
    /// Index of the short entry among the directory's 32-byte slots.
    pub index: u32,
    pub entry: ShortEntry,
}

/// A parsed directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Entries in directory order, without "." and "..".
    pub entries: Vec<Listed>,
    /// Live short entries with the directory bit, "." and ".." included
    /// (the kernel's `fat_subdirs`, which sets a directory's link count).
    pub subdirs: u32,
    /// The first volume label entry's name, trailing spaces removed.
    pub label: Option<Vec<u8>>,
    /// Lookups in a large directory: each name and short name, folded as
    /// [`same_name`] compares them, to the first entry that bears it;
    /// built on the first lookup (vfat's own lookup scans the directory,
    /// which made 2,000 lookups in a 65,534-entry directory take 2 s).
    folded: OnceCell<HashMap<Vec<u8>, usize>>,
}

/// Directories with more entries than this get a name index; smaller ones
/// are scanned.
const INDEXED: usize = 64;

impl Listing {
    /// The entry `name` names, as vfat's lookup finds it: trailing dots
    /// ignored, letters matched without case as [`same_name`] does, short
    /// name first. A name exactly as listed is found first: a damaged
    /// short name can end in '.' (the kernel lists it and its lookup,
    /// which strips the dots, cannot find it; the listing shows it here).
    pub fn find(&self, name: &[u8]) -> Option<&Listed> {
        if name.last() == Some(&b'.')
            && let Some(e) = self.entries.iter().find(|e| e.name == name)
        {
            return Some(e);
        }
        let end = name.iter().rposition(|&b| b != b'.').map_or(0, |p| p + 1);
        let name = &name[..end];
        if name.is_empty() {
            return None;
        }
        if self.entries.len() <= INDEXED {
            return self.entries.iter().find(|e| same_name(&e.short, name) || same_name(&e.name, name));
        }
        let folded = self.folded.get_or_init(|| {
            let mut map = HashMap::with_capacity(self.entries.len() * 2);
            for (i, e) in self.entries.iter().enumerate() {
                map.entry(fold(&e.short)).or_insert(i);
                map.entry(fold(&e.name)).or_insert(i);
            }
            map
        });
        folded.get(&fold(name)).and_then(|&i| self.entries.get(i))
    }

    /// Entries whose cookie (index + 1) comes after `cookie`.
    pub fn after(&self, cookie: u64) -> &[Listed] {
        let start = self.entries.partition_point(|e| u64::from(e.index) < cookie);
        &self.entries[start..]
    }
}

/// Whether vfat's lookup takes `a` and `b` for the same name: the kernel's
/// `fat_name_match` is `nls_strnicmp` with the iocharset's lower-case table
/// (iso8859-1, Debian's default, also under `-o utf8`), applied byte by
/// byte even to UTF-8 names. So ASCII letters match in either case, and so
/// do bytes 0xC0..=0xDE (but 0xD7) with the byte 0x20 above: "caf\xe3\xa9"
/// finds "café" (c3 a9), while "CAFÉ" does not find "café" (0x89 and 0xa9
/// are not letters in Latin-1).
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| latin1_lower(x) == latin1_lower(y))
}

/// `name` with every byte lowered as [`same_name`] lowers it: two names
/// are the same name exactly when their folds are equal.
fn fold(name: &[u8]) -> Vec<u8> {
    name.iter().map(|&b| latin1_lower(b)).collect()
}

/// iso8859-1's `charset2lower`: the capitals A-Z, À-Ö and Ø-Þ.
fn latin1_lower(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' | 0xC0..=0xD6 | 0xD8..=0xDE => b + 0x20,
        _ => b,
    }
}

/// What a long-name sequence turned out to be (`fat_parse_long`'s answers).
enum Long {
    /// A sequence and the short entry at `at`; `units` empty if the
    /// checksum did not match.
    Name { at: usize, units: Vec<u16> },
    /// Skip the slot at `at`.
    Invalid { at: usize },
    /// The slot at `at` is not a long-name slot: parse it afresh.
    NotSlot { at: usize },
    /// The directory ended inside the sequence.
    Eof,
}

/// Parse the directory's bytes (a whole number of 32-byte entries; a
/// partial entry at the end is ignored).
pub fn parse(raw: &[u8]) -> Result<Listing> {
    let slots: Vec<&[u8]> = raw.chunks_exact(ENTRY_SIZE).collect();
    let mut out = Listing::default();
    for s in &slots {
        let e = ShortEntry::parse(s)?;
        if e.is_free() || e.attr & attr::VOLUME != 0 {
            if out.label.is_none() && !e.is_free() && e.attr != attr::LONG_NAME && e.attr & attr::DIRECTORY == 0 {
                out.label = Some(crate::boot::trim_spaces(&e.name).to_vec());
            }
            continue;
        }
        if e.is_dir() {
            out.subdirs += 1;
        }
    }
    let mut i = 0;
    while i < slots.len() {
        let mut e = ShortEntry::parse(slots[i])?;
        let mut units = Vec::new();
        if e.attr == attr::LONG_NAME {
            match long_name(&slots, i)? {
                Long::Name { at, units: u } => {
                    i = at;
                    units = u;
                    e = ShortEntry::parse(slots[i])?;
                }
                Long::Invalid { at } => {
                    i = at + 1;
                    continue;
                }
                Long::NotSlot { at } => {
                    i = at;
                    continue;
                }
                Long::Eof => break,
            }
        } else if e.name[0] == crate::dir::DELETED || e.attr & attr::VOLUME != 0 || e.is_free() {
            i += 1;
            continue;
        }
        let index = i as u32;
        i += 1;
        let short = lfn::to_utf8(&e.display_name());
        if short.is_empty() || e.is_dot() {
            continue;
        }
        let long = lfn::to_utf8(&units);
        let name = if long.is_empty() { short.clone() } else { long };
        if !fshost_sdk::valid_name(&name) || !fshost_sdk::valid_name(&short) {
            fshost_sdk::warn!(
                "fat: directory entry {index}: name {:?} cannot be a Linux name; skipped",
                name.escape_ascii().to_string()
            );
            continue;
        }
        out.entries.push(Listed { name, short, index, entry: e });
    }
    Ok(out)
}

/// `fat_parse_long` from the slot at `i` (a long-name slot).
fn long_name(slots: &[&[u8]], mut i: usize) -> Result<Long> {
    'sequence: loop {
        let first = Slot::parse(slots[i])?;
        if first.id & LAST_SLOT == 0 {
            return Ok(Long::Invalid { at: i });
        }
        let count = first.id & !LAST_SLOT;
        if count == 0 || count > MAX_SLOTS {
            return Ok(Long::Invalid { at: i });
        }
        let alias = first.checksum;
        let mut units = vec![0u16; usize::from(count) * UNITS_PER_SLOT];
        let mut slot = first;
        let mut number = count;
        loop {
            number -= 1;
            let offset = usize::from(number) * UNITS_PER_SLOT;
            units[offset..offset + UNITS_PER_SLOT].copy_from_slice(&slot.units);
            if slot.id & LAST_SLOT != 0 {
                units.truncate(offset + UNITS_PER_SLOT);
            }
            i += 1;
            let Some(raw) = slots.get(i) else { return Ok(Long::Eof) };
            if number == 0 {
                break;
            }
            if fshost_sdk::bytes::u8_at(raw, 11)? != attr::LONG_NAME {
                return Ok(Long::NotSlot { at: i });
            }
            slot = Slot::parse(raw)?;
            if slot.id & !LAST_SLOT != number || slot.checksum != alias {
                continue 'sequence;
            }
        }
        let e = ShortEntry::parse(slots[i])?;
        if e.name[0] == crate::dir::DELETED {
            return Ok(Long::Invalid { at: i });
        }
        if e.attr == attr::LONG_NAME {
            continue 'sequence;
        }
        if e.is_free() || e.attr & attr::VOLUME != 0 {
            return Ok(Long::Invalid { at: i });
        }
        if checksum(&e.name) != alias {
            units.clear();
        }
        return Ok(Long::Name { at: i, units });
    }
}

#[cfg(test)]
mod tests {
    //! Directory bytes built by hand; what each case must show is what
    //! Linux 6.1's vfat showed for the same bytes (checked under user-mode
    //! Linux while writing this guest; tests/tests/fat_kernel_diff.rs keeps
    //! checking real images against it).
    use super::*;

    fn short(name: &[u8; 11], attr: u8) -> Vec<u8> {
        let mut e = vec![0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        e
    }

    /// The long-name slots for `text` belonging to short name `name`, in
    /// disk order (last part first).
    fn slots(text: &str, sum: u8) -> Vec<Vec<u8>> {
        let mut units: Vec<u16> = text.encode_utf16().collect();
        if !units.len().is_multiple_of(13) {
            units.push(0);
            while !units.len().is_multiple_of(13) {
                units.push(0xffff);
            }
        }
        let n = units.len() / 13;
        (1..=n)
            .rev()
            .map(|i| {
                let mut s = vec![0u8; 32];
                s[0] = i as u8 | if i == n { 0x40 } else { 0 };
                s[11] = attr::LONG_NAME;
                s[13] = sum;
                let part = &units[(i - 1) * 13..i * 13];
                for (u, at) in part.iter().zip([1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]) {
                    s[at..at + 2].copy_from_slice(&u.to_le_bytes());
                }
                s
            })
            .collect()
    }

    fn names(parts: &[Vec<u8>]) -> Vec<String> {
        let listing = parse(&parts.concat()).unwrap();
        listing.entries.iter().map(|e| String::from_utf8(e.name.clone()).unwrap()).collect()
    }

    #[test]
    fn long_names_and_their_fallbacks() {
        let a = b"SMILE~1 TXT";
        let b = b"BADSUM~1TXT";
        let c = b"ORDER~1 TXT";
        let mut parts = Vec::new();
        parts.extend(slots("smile \u{1F600}.txt", checksum(a)));
        parts.push(short(a, 0x20));
        parts.extend(slots("wrong checksum", checksum(b) ^ 1));
        parts.push(short(b, 0x20));
        let mut order = slots("slots in the wrong order.txt", checksum(c));
        order.swap(0, 1);
        parts.extend(order);
        parts.push(short(c, 0x20));
        parts.push(slots("orphan", 0x12).remove(0));
        parts.push(short(b"PLAIN   TXT", 0x20));
        assert_eq!(names(&parts), ["smile \u{1F600}.txt", "BADSUM~1.TXT", "ORDER~1.TXT", "PLAIN.TXT"]);
    }

    #[test]
    fn skips_free_deleted_labels_and_dots_but_not_after_a_zero_entry() {
        let d = b"DELETED TXT";
        let mut parts = vec![short(b".          ", 0x10), short(b"..         ", 0x10)];
        parts.extend(slots("deleted one.txt", checksum(d)));
        let mut deleted = short(d, 0x20);
        deleted[0] = crate::dir::DELETED;
        parts.push(deleted);
        parts.push(short(b"LABEL      ", attr::VOLUME));
        parts.push(vec![0u8; 32]);
        parts.push(short(b"AFTER   TXT", 0x20));
        parts.push(short(b"SUBDIR     ", attr::DIRECTORY));
        let listing = parse(&parts.concat()).unwrap();
        let names: Vec<_> = listing.entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, [b"AFTER.TXT".to_vec(), b"SUBDIR".to_vec()]);
        assert_eq!(listing.subdirs, 3, "., .. and SUBDIR");
        assert_eq!(listing.label.as_deref(), Some(&b"LABEL"[..]));
        // Cookies are slot indexes + 1: resuming after AFTER.TXT gives SUBDIR.
        let after = listing.after(u64::from(listing.entries[0].index) + 1);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].name, b"SUBDIR");
    }

    #[test]
    fn lookup_folds_case_bytewise_ignores_trailing_dots_and_knows_short_names() {
        let a = b"LONGNA~1TXT";
        let mut parts = slots("Long Name.txt", checksum(a));
        parts.push(short(a, 0x20));
        parts.push(short(b"CAF\x82    TXT", 0x20));
        let listing = parse(&parts.concat()).unwrap();
        for name in [&b"long name.TXT"[..], b"Long Name.txt...", b"longna~1.txt", b"LONGNA~1.TXT"] {
            assert_eq!(listing.find(name).map(|e| e.index), Some(1), "{}", name.escape_ascii());
        }
        assert_eq!(listing.find("CAF\u{e9}.txt".as_bytes()).map(|e| e.index), Some(2));
        assert!(listing.find("CAF\u{c9}.TXT".as_bytes()).is_none(), "non-ASCII letters keep their case");
        // The kernel folds bytes as Latin-1 letters, UTF-8 or not: c3 -> e3.
        assert_eq!(listing.find(b"caf\xe3\xa9.TXT").map(|e| e.index), Some(2));
        assert!(listing.find(b"caf\xc3\x89.txt").is_none(), "0x89 is not a Latin-1 capital");
        assert!(listing.find(b"...").is_none());
        // A damaged short name ending in '.' is found as listed.
        let odd = parse(&short(b"ODD     AB.", 0x20)).unwrap();
        assert_eq!(odd.entries[0].name, b"ODD.AB.");
        assert_eq!(odd.find(b"ODD.AB.").map(|e| e.index), Some(0));
        assert!(odd.find(b"ODD.AB").is_none(), "the kernel's rule otherwise");
    }

    /// A directory large enough for the name index answers every lookup
    /// as the scan does: the first entry whose short or long name folds
    /// to the name, also where one entry's long name is another's short
    /// name in another case.
    #[test]
    fn a_large_directory_finds_through_its_index_what_a_scan_finds() {
        let mut parts = Vec::new();
        for i in 0..150u32 {
            let short_name = format!("F{i:07}TXT");
            parts.push(short(short_name.as_bytes().try_into().unwrap(), 0x20));
        }
        // A long name equal (folded) to an earlier entry's short name: the
        // earlier entry wins; and a later short name equal to it too.
        let clash = b"CLASH~1 TXT";
        parts.extend(slots("f0000007.txt", checksum(clash)));
        parts.push(short(clash, 0x20));
        let caf = b"CAF~1   TXT";
        parts.extend(slots("Caf\u{e9} Long.txt", checksum(caf)));
        parts.push(short(caf, 0x20));
        parts.push(short(b"F0000009TXT", 0x20));
        let listing = parse(&parts.concat()).unwrap();
        assert!(listing.entries.len() > INDEXED, "the index is not used");
        let scan = |name: &[u8]| {
            let end = name.iter().rposition(|&b| b != b'.').map_or(0, |p| p + 1);
            let name = &name[..end];
            listing.entries.iter().find(|e| !name.is_empty() && (same_name(&e.short, name) || same_name(&e.name, name)))
        };
        let mut probes: Vec<Vec<u8>> = Vec::new();
        for e in &listing.entries {
            for n in [&e.name, &e.short] {
                probes.push(n.clone());
                probes.push(n.to_ascii_lowercase());
                probes.push(n.to_ascii_uppercase());
                probes.push([n.as_slice(), b".."].concat());
            }
        }
        probes.extend([b"nope".to_vec(), b"F0000150.TXT".to_vec(), "CAF\u{c9} LONG.TXT".as_bytes().to_vec()]);
        for name in &probes {
            assert_eq!(listing.find(name).map(|e| e.index), scan(name).map(|e| e.index), "{}", name.escape_ascii());
        }
        assert_eq!(listing.find(b"F0000007.TXT").map(|e| e.index), Some(7), "the earlier entry");
    }

    #[test]
    fn a_sequence_cut_by_the_end_of_the_directory_ends_the_listing() {
        let mut parts = vec![short(b"FIRST      ", 0x20)];
        parts.extend(slots("a name longer than one slot", 0x55).into_iter().take(1));
        assert_eq!(names(&parts), ["FIRST"]);
    }
}
