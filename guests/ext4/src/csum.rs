//! The two checksum algorithms of ext4 and the policy for verifying them.
//!
//! `metadata_csum` filesystems protect every metadata object with CRC32C,
//! seeded per filesystem (from the UUID, or `s_checksum_seed`) and usually
//! per inode (inode number and generation folded into the seed). The kernel
//! calls the raw CRC register update `ext4_chksum`: no pre- or post-inversion,
//! which [`crc32c`] is. Long inputs (directory, extent and xattr blocks,
//! whole inodes) go to the host's `checksum` import through the SDK, which
//! computes them with the CPU's instruction; short ones stay in the guest.
//!
//! Older `uninit_bg` (`gdt_csum`) filesystems protect only group descriptors,
//! with the kernel's `crc16` (polynomial 0x8005 reflected, seeded with
//! 0xFFFF by the caller, no final xor; CRC-16/MODBUS when computed in one go).

/// The kernel's `ext4_chksum(seed, data)`: CRC32C register update, raw.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    fshost_sdk::checksum::crc32c(seed, data)
}

/// The kernel's `crc16(crc, data)` (lib/crc16.c), raw register update.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

/// Which checksums this mount verifies and the filesystem-wide seed.
#[derive(Debug, Clone, Copy)]
pub struct Checksums {
    /// `metadata_csum` is on and the `nocsum` mount option is not given.
    pub metadata: bool,
    /// Group descriptors carry a checksum (crc16 or crc32c) and it is checked.
    pub group_desc: bool,
    /// `s_csum_seed`: CRC32C of the UUID, or `s_checksum_seed`.
    pub seed: u32,
}

impl Checksums {
    /// The per-inode seed the kernel keeps as `ei->i_csum_seed`.
    pub fn inode_seed(&self, ino: u32, generation: u32) -> u32 {
        let mut both = [0u8; 8];
        both[..4].copy_from_slice(&ino.to_le_bytes());
        both[4..].copy_from_slice(&generation.to_le_bytes());
        crc32c(self.seed, &both)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C("123456789") = 0xE3069283 with the usual inversions.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        // Chaining is the same as one pass.
        assert_eq!(crc32c(crc32c(7, b"1234"), b"56789"), crc32c(7, b"123456789"));
    }

    #[test]
    fn crc16_matches_modbus_check_value() {
        // CRC-16/MODBUS (init 0xFFFF, reflected 0x8005, no xorout) = 0x4B37.
        assert_eq!(crc16(0xFFFF, b"123456789"), 0x4B37);
        assert_eq!(crc16(crc16(0xFFFF, b"1234"), b"56789"), 0x4B37);
    }
}
