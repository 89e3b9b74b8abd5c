//! The data path: file bytes from validated mappings and the device.
//! Holes and unwritten ranges read as zeros; inline ranges are copied;
//! mapped ranges are read from the device by the host itself.

use crate::device::Device;
use crate::error::FsError;
use crate::types::{Mapping, MappingKind};

/// Fill `buf` with file bytes starting at file offset `pos`, from mapping
/// `m` (which contains `pos`). Returns how many bytes were filled: up to the
/// end of `buf` or of `m`, whichever is first.
pub fn fill_from(device: &Device, m: &Mapping, pos: u64, buf: &mut [u8]) -> Result<usize, FsError> {
    debug_assert!(m.contains(pos));
    let within = pos - m.offset.0;
    let n = usize::try_from(m.end() - pos).map_or(buf.len(), |left| left.min(buf.len()));
    let dst = &mut buf[..n];
    match &m.kind {
        MappingKind::Hole | MappingKind::Unwritten(_) => dst.fill(0),
        MappingKind::Mapped(dev) => device.read_exact_at(dev.0 + within, dst)?,
        MappingKind::Inline(bytes) => {
            let start = within as usize;
            dst.copy_from_slice(&bytes[start..start + n]);
        }
    }
    Ok(n)
}
