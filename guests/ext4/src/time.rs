//! Inode timestamps: a signed 32-bit seconds field, widened by an optional
//! `_extra` word (in inodes larger than 128 bytes) whose low two bits extend
//! the epoch past 2038 and whose upper 30 bits are nanoseconds.

use fshost_sdk::Timestamp;

const EPOCH_MASK: u32 = 0x3;
const EPOCH_BITS: u32 = 2;

/// The kernel's `ext4_decode_extra_time`: `base` as signed seconds, plus
/// `(extra & 3) << 32` seconds and `extra >> 2` nanoseconds when the inode
/// has room for `extra`. Nanoseconds above 999,999,999 (which only a corrupt
/// inode holds) are clamped, since the contract promises a valid range.
pub fn decode(base: u32, extra: Option<u32>) -> Timestamp {
    let mut seconds = i64::from(base as i32);
    let mut nanoseconds = 0;
    if let Some(extra) = extra {
        seconds += i64::from(extra & EPOCH_MASK) << 32;
        nanoseconds = (extra >> EPOCH_BITS).min(999_999_999);
    }
    Timestamp { seconds, nanoseconds }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cases from the table in the kernel's Documentation/filesystems/ext4
    // (inode timestamps): epoch bits extend the signed 32-bit range.
    #[test]
    fn decodes_like_the_kernel() {
        assert_eq!(decode(0, None), Timestamp { seconds: 0, nanoseconds: 0 });
        assert_eq!(decode(0xFFFF_FFFF, None).seconds, -1);
        assert_eq!(decode(0x8000_0000, Some(0)).seconds, -(1 << 31));
        assert_eq!(decode(0x8000_0000, Some(1)).seconds, 1 << 31);
        assert_eq!(decode(0xFFFF_FFFF, Some(1)).seconds, (1 << 32) - 1);
        assert_eq!(decode(0, Some(1)).seconds, 1 << 32);
        assert_eq!(decode(0x7FFF_FFFF, Some(3)).seconds, (3 << 32) + 0x7FFF_FFFF);
        assert_eq!(decode(5, Some(123_456_789 << 2)), Timestamp { seconds: 5, nanoseconds: 123_456_789 });
        assert_eq!(decode(5, Some(0xFFFF_FFFC)).nanoseconds, 999_999_999);
    }
}
