//! VFAT long-name slots and their text: 13 UTF-16 units per 32-byte slot,
//! numbered from the end of the name backwards (the first slot on disk
//! carries 0x40 | count), each carrying the checksum of the short entry it
//! belongs to. The text converts to UTF-8 as Linux's `utf16s_to_utf8s`
//! does: up to the first NUL, at most 255 units, surrogate pairs joined,
//! unpaired surrogates dropped.

use fshost_sdk::Result;
use fshost_sdk::bytes::{le_u16, u8_at};

/// Byte offsets of the 13 name units in a slot (5 + 6 + 2).
const UNIT_OFFSETS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
/// Units in one slot.
pub const UNITS_PER_SLOT: usize = 13;
/// The most slots a name may have (ceil(255 / 13)).
pub const MAX_SLOTS: u8 = 20;
/// The most units the kernel converts (`FAT_MAX_UNI_CHARS`).
pub const MAX_UNITS: usize = 255;
/// Marks the first slot on disk (the last part of the name).
pub const LAST_SLOT: u8 = 0x40;

/// One long-name slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The sequence byte (number | 0x40 on the last part).
    pub id: u8,
    pub checksum: u8,
    pub units: [u16; UNITS_PER_SLOT],
}

impl Slot {
    pub fn parse(raw: &[u8]) -> Result<Slot> {
        let mut units = [0u16; UNITS_PER_SLOT];
        for (unit, &at) in units.iter_mut().zip(UNIT_OFFSETS.iter()) {
            *unit = le_u16(raw, at)?;
        }
        Ok(Slot { id: u8_at(raw, 0)?, checksum: u8_at(raw, 13)?, units })
    }
}

/// UTF-8 bytes of a long name's units, as the kernel's `utf16s_to_utf8s`.
pub fn to_utf8(units: &[u16]) -> Vec<u8> {
    let units = &units[..units.len().min(MAX_UNITS)];
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    let mut out = Vec::with_capacity(end * 3);
    let mut i = 0;
    while i < end {
        let u = units[i];
        i += 1;
        let c = match u {
            0xdc00..=0xdfff => continue, // a low surrogate alone
            0xd800..=0xdbff => match units.get(i) {
                Some(&low @ 0xdc00..=0xdfff) if i < end => {
                    i += 1;
                    0x10000 + ((u32::from(u) - 0xd800) << 10) + (u32::from(low) - 0xdc00)
                }
                _ => continue, // a high surrogate without its pair
            },
            u => u32::from(u),
        };
        // Every value here is a scalar value: surrogates were handled above.
        if let Some(ch) = char::from_u32(c) {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_like_utf16s_to_utf8s() {
        let units: Vec<u16> = "caf\u{e9} \u{1F600}\u{4e2d}".encode_utf16().chain([0, 0xffff]).collect();
        assert_eq!(to_utf8(&units), "caf\u{e9} \u{1F600}\u{4e2d}".as_bytes());
        // Unpaired surrogates vanish; the text goes on.
        assert_eq!(to_utf8(&[0x61, 0xd800, 0x62, 0xdc00, 0x63]), b"abc");
        // At most 255 units.
        assert_eq!(to_utf8(&[0x61; 260]).len(), 255);
    }

    #[test]
    fn slot_units_in_order() {
        let mut raw = [0u8; 32];
        raw[0] = 0x41;
        raw[11] = 0x0f;
        raw[13] = 0xab;
        for (n, &at) in UNIT_OFFSETS.iter().enumerate() {
            raw[at] = b'a' + n as u8;
        }
        let slot = Slot::parse(&raw).unwrap();
        assert_eq!(slot.id, 0x41);
        assert_eq!(slot.checksum, 0xab);
        assert_eq!(to_utf8(&slot.units), b"abcdefghijklm");
    }
}
