//! The 32-byte short (8.3) directory entry and how Linux's vfat shows its
//! name: `fat_parse_short` with the default `shortname=mixed`, codepage
//! 437 and `utf8`. The name bytes are code page 437; 0x05 in the first byte
//! stands for 0xE5 (which itself marks a deleted entry); trailing spaces of
//! the base and extension are padding; the NT lower-case flags (byte 12,
//! 0x08 base, 0x10 extension) ask for that part in lower case.

use fshost_sdk::Result;
use fshost_sdk::bytes::{le_u16, le_u32, slice, u8_at};

/// Attribute bits.
pub mod attr {
    pub const READ_ONLY: u8 = 0x01;
    pub const VOLUME: u8 = 0x08;
    pub const DIRECTORY: u8 = 0x10;
    /// The attribute value of a long-name slot.
    pub const LONG_NAME: u8 = 0x0F;
}

/// The first name byte of a deleted entry.
pub const DELETED: u8 = 0xE5;
/// The size of every directory entry.
pub const ENTRY_SIZE: usize = 32;

const LOWER_BASE: u8 = 0x08;
const LOWER_EXT: u8 = 0x10;

/// One short directory entry, fields as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortEntry {
    pub name: [u8; 11],
    pub attr: u8,
    pub lcase: u8,
    pub ctime_cs: u8,
    pub ctime: u16,
    pub cdate: u16,
    pub adate: u16,
    pub start_hi: u16,
    pub time: u16,
    pub date: u16,
    pub start_lo: u16,
    pub size: u32,
}

impl ShortEntry {
    /// Parse the 32 bytes of `raw` (a `Corrupted` error if shorter).
    pub fn parse(raw: &[u8]) -> Result<ShortEntry> {
        let mut name = [0u8; 11];
        name.copy_from_slice(slice(raw, 0, 11)?);
        Ok(ShortEntry {
            name,
            attr: u8_at(raw, 11)?,
            lcase: u8_at(raw, 12)?,
            ctime_cs: u8_at(raw, 13)?,
            ctime: le_u16(raw, 14)?,
            cdate: le_u16(raw, 16)?,
            adate: le_u16(raw, 18)?,
            start_hi: le_u16(raw, 20)?,
            time: le_u16(raw, 22)?,
            date: le_u16(raw, 24)?,
            start_lo: le_u16(raw, 26)?,
            size: le_u32(raw, 28)?,
        })
    }

    /// Free: never used (first byte 0) or deleted (0xE5), as the kernel's
    /// `IS_FREE`. Linux does not stop at the first never-used entry.
    pub fn is_free(&self) -> bool {
        self.name[0] == 0 || self.name[0] == DELETED
    }

    pub fn is_dir(&self) -> bool {
        self.attr & attr::DIRECTORY != 0
    }

    /// "." or "..", which the host supplies itself.
    pub fn is_dot(&self) -> bool {
        &self.name == b".          " || &self.name == b"..         "
    }

    /// The first cluster; the high half counts on FAT32 only.
    pub fn start(&self, fat32: bool) -> u32 {
        let hi = if fat32 { u32::from(self.start_hi) << 16 } else { 0 };
        hi | u32::from(self.start_lo)
    }

    /// The name as the kernel's vfat shows it, in UTF-16 (empty if the
    /// kernel would skip the entry).
    pub fn display_name(&self) -> Vec<u16> {
        let mut work = self.name;
        if work[0] == 0x05 {
            work[0] = DELETED;
        }
        let mut uni: Vec<u16> = Vec::with_capacity(12);
        let mut keep = 0; // length up to the last non-space character
        for &c in work.iter().take(8) {
            if c == 0 {
                break;
            }
            uni.push(cp437(c, self.lcase & LOWER_BASE != 0));
            if c != b' ' {
                keep = uni.len();
            }
        }
        uni.truncate(keep);
        uni.push(u16::from(b'.'));
        for &c in work.iter().skip(8) {
            if c == 0 {
                break;
            }
            uni.push(cp437(c, self.lcase & LOWER_EXT != 0));
            if c != b' ' {
                keep = uni.len();
            }
        }
        uni.truncate(keep);
        uni
    }
}

/// The checksum of a short name that its long-name slots carry.
pub fn checksum(name: &[u8; 11]) -> u8 {
    name.iter().fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// Code page 437 byte to Unicode, lowered first if `lower` (Linux's
/// nls_cp437 tables: bytes below 0x80 are ASCII and control codes).
fn cp437(c: u8, lower: bool) -> u16 {
    let c = if lower { cp437_lower(c) } else { c };
    match c {
        0..=0x7f => u16::from(c),
        _ => CP437_HIGH[usize::from(c - 0x80)],
    }
}

/// nls_cp437's charset2lower: ASCII letters, the accented capitals that
/// have a lower-case form in the code page, and the Greek capitals sigma
/// (0xE4 to 0xE5) and phi (0xE8 to 0xED).
fn cp437_lower(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' => c + 32,
        0x80 => 0x87,
        0x8e => 0x84,
        0x8f => 0x86,
        0x90 => 0x82,
        0x92 => 0x91,
        0x99 => 0x94,
        0x9a => 0x81,
        0xa5 => 0xa4,
        0xe4 => 0xe5,
        0xe8 => 0xed,
        _ => c,
    }
}

/// Code page 437, bytes 0x80..=0xFF.
const CP437_HIGH: [u16; 128] = [
    0x00c7, 0x00fc, 0x00e9, 0x00e2, 0x00e4, 0x00e0, 0x00e5, 0x00e7, 0x00ea, 0x00eb, 0x00e8, 0x00ef, 0x00ee, 0x00ec,
    0x00c4, 0x00c5, 0x00c9, 0x00e6, 0x00c6, 0x00f4, 0x00f6, 0x00f2, 0x00fb, 0x00f9, 0x00ff, 0x00d6, 0x00dc, 0x00a2,
    0x00a3, 0x00a5, 0x20a7, 0x0192, 0x00e1, 0x00ed, 0x00f3, 0x00fa, 0x00f1, 0x00d1, 0x00aa, 0x00ba, 0x00bf, 0x2310,
    0x00ac, 0x00bd, 0x00bc, 0x00a1, 0x00ab, 0x00bb, 0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562, 0x2556,
    0x2555, 0x2563, 0x2551, 0x2557, 0x255d, 0x255c, 0x255b, 0x2510, 0x2514, 0x2534, 0x252c, 0x251c, 0x2500, 0x253c,
    0x255e, 0x255f, 0x255a, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256c, 0x2567, 0x2568, 0x2564, 0x2565, 0x2559,
    0x2558, 0x2552, 0x2553, 0x256b, 0x256a, 0x2518, 0x250c, 0x2588, 0x2584, 0x258c, 0x2590, 0x2580, 0x03b1, 0x00df,
    0x0393, 0x03c0, 0x03a3, 0x03c3, 0x00b5, 0x03c4, 0x03a6, 0x0398, 0x03a9, 0x03b4, 0x221e, 0x03c6, 0x03b5, 0x2229,
    0x2261, 0x00b1, 0x2265, 0x2264, 0x2320, 0x2321, 0x00f7, 0x2248, 0x00b0, 0x2219, 0x00b7, 0x221a, 0x207f, 0x00b2,
    0x25a0, 0x00a0,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8; 11], lcase: u8) -> ShortEntry {
        let mut raw = [0u8; 32];
        raw[..11].copy_from_slice(name);
        raw[12] = lcase;
        ShortEntry::parse(&raw).unwrap()
    }

    fn shown(name: &[u8; 11], lcase: u8) -> String {
        String::from_utf16(&entry(name, lcase).display_name()).unwrap()
    }

    #[test]
    fn short_names_as_vfat_shows_them() {
        assert_eq!(shown(b"README  TXT", 0), "README.TXT");
        assert_eq!(shown(b"README  TXT", LOWER_BASE), "readme.TXT");
        assert_eq!(shown(b"README  TXT", LOWER_BASE | LOWER_EXT), "readme.txt");
        assert_eq!(shown(b"MAKEFILE   ", 0), "MAKEFILE");
        assert_eq!(shown(b"A B     C  ", 0), "A B.C");
        assert_eq!(shown(b"\x05BC     D  ", 0), "\u{3c3}BC.D"); // 0xE5 is small sigma in CP437
        assert_eq!(shown(b"\x90T\x81        ", LOWER_BASE), "\u{e9}t\u{fc}");
        // Capital sigma and phi have lower-case forms in the code page.
        assert_eq!(shown(b"\xe4\xe8      \xe4\xe8 ", LOWER_BASE), "\u{3c3}\u{3c6}.\u{3a3}\u{3a6}");
        assert_eq!(shown(b"\xe4\xe8      \xe4\xe8 ", LOWER_EXT), "\u{3a3}\u{3a6}.\u{3c3}\u{3c6}");
        assert_eq!(shown(b"        TXT", 0), ".TXT");
        assert_eq!(shown(b"           ", 0), "");
    }

    #[test]
    fn checksum_matches_the_specification_example() {
        // Hand-computed with the specification's rotate-right-and-add over
        // "FOO     BAR".
        let mut sum = 0u8;
        for &c in b"FOO     BAR" {
            sum = (if sum & 1 != 0 { 0x80 } else { 0 }) + (sum >> 1);
            sum = sum.wrapping_add(c);
        }
        assert_eq!(checksum(b"FOO     BAR"), sum);
    }
}
