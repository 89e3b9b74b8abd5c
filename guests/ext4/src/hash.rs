//! The directory-index hashes (`fs/ext4/hash.c`): legacy (`dx_hack_hash`),
//! half-MD4 and TEA, each over signed or unsigned name bytes, seeded from
//! `s_hash_seed`. An htree lookup must reproduce the hash the writer used
//! bit for bit, so this is a transcription of the kernel's arithmetic.

/// `DX_HASH_*` versions.
pub const LEGACY: u8 = 0;
pub const HALF_MD4: u8 = 1;
pub const TEA: u8 = 2;
const LEGACY_UNSIGNED: u8 = 3;
const HALF_MD4_UNSIGNED: u8 = 4;
const TEA_UNSIGNED: u8 = 5;

/// The major hash of `name` with hash `version` (unsigned variants 3..=5)
/// and `seed`, low bit clear as the index stores it; `None` for an unknown
/// version.
pub fn dx_hash(version: u8, name: &[u8], seed: &[u32; 4]) -> Option<u32> {
    dx_hash_pair(version, name, seed).map(|(major, _)| major)
}

/// The major and minor hashes of `name`, as `ext4fs_dirhash` fills
/// `hinfo` (the minor is 0 for the legacy hash).
pub fn dx_hash_pair(version: u8, name: &[u8], seed: &[u32; 4]) -> Option<(u32, u32)> {
    let mut buf =
        if seed.iter().any(|&s| s != 0) { *seed } else { [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476] };
    let unsigned = matches!(version, LEGACY_UNSIGNED | HALF_MD4_UNSIGNED | TEA_UNSIGNED);
    let (hash, minor) = match version {
        LEGACY | LEGACY_UNSIGNED => (dx_hack_hash(name, unsigned), 0),
        HALF_MD4 | HALF_MD4_UNSIGNED => {
            for chunk in chunks(name, 32) {
                let input = str2hashbuf::<8>(chunk, unsigned);
                half_md4_transform(&mut buf, &input);
            }
            (buf[1], buf[2])
        }
        TEA | TEA_UNSIGNED => {
            for chunk in chunks(name, 16) {
                let input = str2hashbuf::<4>(chunk, unsigned);
                tea_transform(&mut buf, &input);
            }
            (buf[0], buf[1])
        }
        _ => return None,
    };
    let hash = hash & !1;
    // EXT4_HTREE_EOF_32BIT << 1 is reserved for "end of directory".
    Some((if hash == 0x7fff_ffff << 1 { (0x7fff_ffff - 1) << 1 } else { hash }, minor))
}

/// The kernel feeds `str2hashbuf` the rest of the name from each chunk
/// start (it uses the remaining length for padding), stepping by `step`.
fn chunks(name: &[u8], step: usize) -> impl Iterator<Item = &[u8]> {
    (0..name.len()).step_by(step).filter_map(move |start| name.get(start..))
}

/// A name byte as the C code sees it through `char` (signed or unsigned).
fn byte(b: u8, unsigned: bool) -> u32 {
    if unsigned { u32::from(b) } else { i32::from(b as i8) as u32 }
}

fn dx_hack_hash(name: &[u8], unsigned: bool) -> u32 {
    let (mut hash0, mut hash1) = (0x12a3_fe2du32, 0x37ab_e8f9u32);
    for &b in name {
        let mut hash = hash1.wrapping_add(hash0 ^ byte(b, unsigned).wrapping_mul(7_152_373));
        if hash & 0x8000_0000 != 0 {
            hash = hash.wrapping_sub(0x7fff_ffff);
        }
        hash1 = hash0;
        hash0 = hash;
    }
    hash0 << 1
}

/// `str2hashbuf_{signed,unsigned}`: pack up to `N * 4` bytes of `msg` into
/// `N` words, padding with the remaining length.
fn str2hashbuf<const N: usize>(msg: &[u8], unsigned: bool) -> [u32; N] {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; N];
    let mut val = pad;
    let mut filled = 0;
    for (i, &b) in msg.iter().take(N * 4).enumerate() {
        val = byte(b, unsigned).wrapping_add(val << 8);
        if i % 4 == 3 {
            if let Some(slot) = out.get_mut(filled) {
                *slot = val;
            }
            filled += 1;
            val = pad;
        }
    }
    if let Some(slot) = out.get_mut(filled) {
        *slot = val;
    }
    out
}

fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    fn g(x: u32, y: u32, z: u32) -> u32 {
        (x & y).wrapping_add((x ^ y) & z)
    }
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ y ^ z
    }
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let [mut a, mut b, mut c, mut d] = *buf;
    let round = |f: fn(u32, u32, u32) -> u32, a: &mut u32, b: u32, c: u32, d: u32, x: u32, s: u32| {
        *a = a.wrapping_add(f(b, c, d)).wrapping_add(x).rotate_left(s);
    };
    round(f, &mut a, b, c, d, x[0], 3);
    round(f, &mut d, a, b, c, x[1], 7);
    round(f, &mut c, d, a, b, x[2], 11);
    round(f, &mut b, c, d, a, x[3], 19);
    round(f, &mut a, b, c, d, x[4], 3);
    round(f, &mut d, a, b, c, x[5], 7);
    round(f, &mut c, d, a, b, x[6], 11);
    round(f, &mut b, c, d, a, x[7], 19);

    round(g, &mut a, b, c, d, x[1].wrapping_add(K2), 3);
    round(g, &mut d, a, b, c, x[3].wrapping_add(K2), 5);
    round(g, &mut c, d, a, b, x[5].wrapping_add(K2), 9);
    round(g, &mut b, c, d, a, x[7].wrapping_add(K2), 13);
    round(g, &mut a, b, c, d, x[0].wrapping_add(K2), 3);
    round(g, &mut d, a, b, c, x[2].wrapping_add(K2), 5);
    round(g, &mut c, d, a, b, x[4].wrapping_add(K2), 9);
    round(g, &mut b, c, d, a, x[6].wrapping_add(K2), 13);

    round(h, &mut a, b, c, d, x[3].wrapping_add(K3), 3);
    round(h, &mut d, a, b, c, x[7].wrapping_add(K3), 9);
    round(h, &mut c, d, a, b, x[2].wrapping_add(K3), 11);
    round(h, &mut b, c, d, a, x[6].wrapping_add(K3), 15);
    round(h, &mut a, b, c, d, x[1].wrapping_add(K3), 3);
    round(h, &mut d, a, b, c, x[5].wrapping_add(K3), 9);
    round(h, &mut c, d, a, b, x[0].wrapping_add(K3), 11);
    round(h, &mut b, c, d, a, x[4].wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea_transform(buf: &mut [u32; 4], x: &[u32; 4]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut sum, mut b0, mut b1) = (0u32, buf[0], buf[1]);
    let [a, b, c, d] = *x;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add((b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b));
        b1 = b1.wrapping_add((b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d));
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Names of every length to 70 (chunk boundaries at 16 and 32), with
    /// bytes above 0x7f where signed and unsigned hashes differ.
    fn names() -> Vec<Vec<u8>> {
        let alphabet: Vec<u8> = (b'!'..=b'~').filter(|&b| b != b'"' && b != b'\\').chain(0x80..=0xff).collect();
        (1..=70).map(|len| (0..len).map(|i| alphabet[(i * 7 + len * 13) % alphabet.len()]).collect()).collect()
    }

    /// Every hash version and two seeds against e2fsprogs' `debugfs dx_hash`.
    #[test]
    fn matches_debugfs_dx_hash() {
        let seed_text = "01234567-89ab-cdef-0123-456789abcdef";
        let seed_bytes: Vec<u8> = seed_text
            .split('-')
            .collect::<String>()
            .as_bytes()
            .chunks(2)
            .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
            .collect();
        let seed: [u32; 4] =
            std::array::from_fn(|i| u32::from_le_bytes(seed_bytes[i * 4..i * 4 + 4].try_into().unwrap()));
        // debugfs takes the numeric DX_HASH_* value (it has no names for
        // the unsigned variants).
        let versions = [("0", 0), ("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)];
        let mut script = Vec::new();
        let mut expected = Vec::new();
        for (alg, version) in versions {
            for (seed_arg, seed) in [("", [0u32; 4]), (seed_text, seed)] {
                for name in names() {
                    script.extend_from_slice(format!("dx_hash -h {alg} ").as_bytes());
                    if !seed_arg.is_empty() {
                        script.extend_from_slice(format!("-s {seed_arg} ").as_bytes());
                    }
                    script.extend_from_slice(&name);
                    script.push(b'\n');
                    expected.push(dx_hash(version, &name, &seed).unwrap());
                }
            }
        }
        let mut child = Command::new("debugfs")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run debugfs");
        child.stdin.take().unwrap().write_all(&script).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let got: Vec<u32> = text
            .lines()
            .filter_map(|l| l.split(" is 0x").nth(1))
            .map(|rest| u32::from_str_radix(rest.split_whitespace().next().unwrap(), 16).unwrap())
            .collect();
        assert_eq!(got.len(), expected.len(), "debugfs answered {} of {} hashes", got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "hash #{i} differs");
        }
    }
}
