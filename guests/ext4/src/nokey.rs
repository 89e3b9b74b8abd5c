//! Encrypted names without their key: fscrypt's *no-key names*.
//!
//! The guest holds no keys, so an encrypted directory shows what the
//! kernel shows when the key is absent (`fscrypt_fname_disk_to_usr`): each
//! ciphertext name as base64url (RFC 4648, no padding) of a
//! `struct fscrypt_nokey_name`: the entry's directory hashes (major, minor;
//! zeros when the kernel lists the directory linearly) then the ciphertext,
//! whole up to 149 bytes, or its first 149 bytes and the SHA-256 of the
//! rest. A lookup decodes the name back (`fscrypt_setup_filename`) and
//! matches the ciphertext, or the prefix and digest (`fscrypt_match_name`).
//! Symlink targets are shown the same way (with zero hashes).

use fshost_sdk::{Error, Result};
use sha2::{Digest, Sha256};

/// `FSCRYPT_FNAME_MIN_MSG_LEN`: no ciphertext name is shorter.
pub const MIN_CIPHERTEXT: usize = 16;
/// `sizeof(nokey_name.bytes)`: the ciphertext a no-key name holds whole.
const WHOLE: usize = 149;
/// `offsetof(struct fscrypt_nokey_name, bytes)`: the two hash words.
const HASHES: usize = 8;
/// `FSCRYPT_NOKEY_NAME_MAX`: hashes, prefix and a SHA-256.
const LONG: usize = HASHES + WHOLE + 32;
/// `FSCRYPT_NOKEY_NAME_MAX_ENCODED`: the longest name a lookup decodes.
const MAX_ENCODED: usize = (LONG * 4).div_ceil(3);

const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The no-key name of ciphertext `cipher` listed with hashes `hash` and
/// `minor`; `Corrupted` for a ciphertext shorter than any the kernel
/// writes.
pub fn encode(cipher: &[u8], hash: u32, minor: u32) -> Result<Vec<u8>> {
    if cipher.len() < MIN_CIPHERTEXT {
        return Err(Error::corrupted(format!("encrypted name of {} bytes (at least {MIN_CIPHERTEXT})", cipher.len())));
    }
    let mut raw = Vec::with_capacity(LONG);
    raw.extend_from_slice(&hash.to_le_bytes());
    raw.extend_from_slice(&minor.to_le_bytes());
    match (cipher.get(..WHOLE), cipher.get(WHOLE..)) {
        (Some(prefix), Some(rest)) if !rest.is_empty() => {
            raw.extend_from_slice(prefix);
            raw.extend_from_slice(&Sha256::digest(rest));
        }
        _ => raw.extend_from_slice(cipher),
    }
    Ok(base64url_encode(&raw))
}

/// What a lookup name decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The whole ciphertext.
    Whole(Vec<u8>),
    /// The first 149 bytes of a longer ciphertext and the digest of the rest.
    Long { prefix: Vec<u8>, digest: Vec<u8> },
}

impl Wanted {
    /// Decode a no-key name; `None` when it cannot be one (the kernel's
    /// lookup then says ENOENT).
    pub fn decode(name: &[u8]) -> Option<Wanted> {
        if name.len() > MAX_ENCODED {
            return None;
        }
        let raw = base64url_decode(name)?;
        if raw.len() == LONG {
            let prefix = raw.get(HASHES..HASHES + WHOLE)?.to_vec();
            let digest = raw.get(HASHES + WHOLE..)?.to_vec();
            return Some(Wanted::Long { prefix, digest });
        }
        if raw.len() <= HASHES || raw.len() > HASHES + WHOLE {
            return None;
        }
        Some(Wanted::Whole(raw.get(HASHES..)?.to_vec()))
    }

    /// Whether the on-disk name `disk` is the one wanted.
    pub fn matches(&self, disk: &[u8]) -> bool {
        match self {
            Wanted::Whole(cipher) => disk == cipher.as_slice(),
            Wanted::Long { prefix, digest } => {
                disk.len() > WHOLE
                    && disk.get(..WHOLE) == Some(prefix.as_slice())
                    && disk.get(WHOLE..).is_some_and(|rest| Sha256::digest(rest).as_slice() == digest.as_slice())
            }
        }
    }
}

fn base64url_encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((src.len() * 4).div_ceil(3));
    let (mut acc, mut bits) = (0u32, 0u32);
    let digit = |v: u32| TABLE.get((v & 0x3f) as usize).copied().unwrap_or(b'A');
    for &b in src {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(digit(acc >> bits));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(digit(acc << (6 - bits)));
    }
    out
}

/// `fscrypt_base64url_decode`: `None` for a byte outside the alphabet or
/// leftover bits that are not zero.
fn base64url_decode(src: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(src.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in src {
        let v = TABLE.iter().position(|&t| t == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_and_refuses_what_the_kernel_refuses() {
        assert_eq!(base64url_encode(b"\xfb\xff\x00"), b"-_8A");
        assert_eq!(base64url_encode(b"ab"), b"YWI");
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 53 + 7) as u8).collect();
            assert_eq!(base64url_decode(&base64url_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64url_decode(b"YW+"), None, "'+' is not base64url");
        assert_eq!(base64url_decode(b"YWJ"), None, "leftover bits must be zero");
    }

    #[test]
    fn names_decode_to_what_they_encode() {
        let short: Vec<u8> = (0..32u8).collect();
        let name = encode(&short, 0x1234_5678, 9).unwrap();
        assert_eq!(Wanted::decode(&name), Some(Wanted::Whole(short.clone())));
        assert!(Wanted::decode(&name).unwrap().matches(&short));

        let long: Vec<u8> = (0..200u8).collect();
        let name = encode(&long, 0, 0).unwrap();
        assert_eq!(name.len(), MAX_ENCODED);
        let wanted = Wanted::decode(&name).unwrap();
        assert!(wanted.matches(&long));
        let mut other = long.clone();
        other[190] ^= 1;
        assert!(!wanted.matches(&other));

        assert!(encode(&short[..15], 0, 0).is_err(), "shorter than any ciphertext");
        assert_eq!(Wanted::decode(b"plain-name"), None);
    }
}
