//! Deterministic file contents for tests: bytes that differ at every offset
//! of interest, so a read from the wrong place cannot pass for the right one.

/// `len` bytes of xorshift32 output, different for each `seed`.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
