//! Compressed clusters: raw deflate (QEMU's default) or Zstandard frames,
//! inflated into exactly one cluster. The compressed bytes are attacker
//! bytes: the output is bounded by the cluster size, and a stream that
//! ends short of a full cluster or wants to write past it is corrupt.

use crate::header::Compression;
use crate::{Error, Result};

/// Inflate `input` into a cluster of `cluster_size` bytes, as QEMU's
/// `qcow2_co_decompress` does: the stream must fill the cluster; bytes
/// after its end (the sector padding) are ignored.
pub fn inflate(kind: Compression, input: &[u8], cluster_size: usize, what: &str) -> Result<Vec<u8>> {
    match kind {
        Compression::Deflate => deflate(input, cluster_size, what),
        Compression::Zstd => zstd(input, cluster_size, what),
    }
}

fn deflate(input: &[u8], cluster_size: usize, what: &str) -> Result<Vec<u8>> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    let mut out = vec![0u8; cluster_size];
    let mut state = DecompressorOxide::new();
    // Raw deflate (no zlib header) into a buffer that is the whole output.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _read, written) = decompress(&mut state, input, &mut out, 0, flags);
    match status {
        // Done, or stopped because the cluster is full (QEMU accepts a
        // stream that fills the buffer, Z_BUF_ERROR with no room left).
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if written == cluster_size => Ok(out),
        TINFLStatus::Done | TINFLStatus::HasMoreOutput => Err(Error::corrupted(format!(
            "{what}: deflate stream of {written} bytes, not a {cluster_size}-byte cluster"
        ))),
        other => Err(Error::corrupted(format!("{what}: bad deflate stream ({other:?}) after {written} bytes"))),
    }
}

fn zstd(input: &[u8], cluster_size: usize, what: &str) -> Result<Vec<u8>> {
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    use std::io::Read;
    // One or more frames, decoded until the cluster is full (QEMU's
    // qcow2_zstd_decompress); a frame that runs past it is corrupt.
    let mut out = Vec::with_capacity(cluster_size);
    let mut rest = input;
    let mut decoder = FrameDecoder::new();
    while out.len() < cluster_size {
        decoder
            .reset(&mut rest)
            .map_err(|e| Error::corrupted(format!("{what}: zstd frame header after {} bytes: {e}", out.len())))?;
        loop {
            let room = cluster_size - out.len();
            decoder
                .decode_blocks(&mut rest, BlockDecodingStrategy::UptoBytes(room.max(1)))
                .map_err(|e| Error::corrupted(format!("{what}: zstd block after {} bytes: {e}", out.len())))?;
            let ready = decoder.can_collect();
            if ready > room {
                return Err(Error::corrupted(format!(
                    "{what}: zstd frame inflates past the {cluster_size}-byte cluster"
                )));
            }
            if ready > 0 {
                let start = out.len();
                out.resize(start + ready, 0);
                let got = decoder
                    .read(&mut out[start..])
                    .map_err(|e| Error::corrupted(format!("{what}: zstd output: {e}")))?;
                out.truncate(start + got);
            }
            if decoder.is_finished() && decoder.can_collect() == 0 {
                break;
            }
            if ready == 0 && rest.is_empty() {
                return Err(Error::corrupted(format!("{what}: zstd stream ends inside a frame")));
            }
        }
    }
    Ok(out)
}
