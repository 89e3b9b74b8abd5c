//! CRC32C for guests: metadata checksums (ext4's `metadata_csum`, and
//! others that use Castagnoli's polynomial) cost a guest most of its time
//! when computed by a table loop inside the sandbox. The host's `checksum`
//! import computes them with the CPU's instruction; a call costs about as
//! much as a guest call, so inputs shorter than [`HOST_MIN`] stay in the
//! guest's own loop. Natively (tests, fuzzing) everything is computed here.

/// Inputs at least this long go to the host. Not tuned: ext4's inputs are
/// either a few bytes (seeds, descriptor fields) or 128 and more (whole
/// inodes, blocks), so any value between serves it the same.
pub const HOST_MIN: usize = 64;

/// CRC32C register update: `seed` in, the register after `data` out, with
/// no inversion before or after (the kernel's `crc32c(seed, data)`, ext4's
/// `ext4_chksum`). The standard CRC-32C of `data` is `!crc32c(!0, data)`;
/// chaining calls equals one call over the concatenation.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "wasm32")]
    if data.len() >= HOST_MIN {
        return crate::bindings::fshost::plugin::checksum::crc32c(seed, data);
    }
    software(seed, data)
}

/// The same, always in the guest (slicing-by-8 tables).
pub fn software(seed: u32, data: &[u8]) -> u32 {
    !::crc32c::crc32c_append(!seed, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value_and_chains() {
        // CRC-32C("123456789") = 0xE3069283 with the usual inversions.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let (a, b) = long.split_at(HOST_MIN / 2);
        assert_eq!(crc32c(crc32c(7, a), b), crc32c(7, &long));
        assert_eq!(software(7, &long), crc32c(7, &long));
    }
}
