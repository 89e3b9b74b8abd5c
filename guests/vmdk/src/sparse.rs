//! A hosted sparse extent (VMware's "Virtual Disk Format 1.1", as QEMU's
//! block/vmdk.c reads it): the header (or, for a stream-optimized file
//! whose directory is written last, the footer that takes its place), the
//! grain directory (GD) of grain tables (GT) of grains. Every number is
//! checked here; an entry pointing outside the file is corrupt.

use crate::bytes::{u8_at, u16_at, u32_at, u64_at};
use crate::{Disk, Error, Extent, Kind, MAX_DATA, MAX_EXTENTS, Result};

/// "KDMV" as stored (the little-endian 0x564d444b).
pub const MAGIC: [u8; 4] = *b"KDMV";
const GD_AT_END: u64 = u64::MAX;
const FLAG_ZEROED_GTE: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const GTE_ZEROED: u32 = 1;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;
/// Largest grain read (QEMU makes 64 KiB grains): one produced extent.
const MAX_GRAIN: u64 = MAX_DATA as u64;
/// Largest grain directory (QEMU: 512 MiB of entries).
const MAX_GD_ENTRIES: u64 = 128 << 20;
/// Largest embedded descriptor read.
const MAX_DESCRIPTOR: u64 = 1 << 20;
/// Grain tables kept.
const GT_CACHE: usize = 64;

/// An opened sparse extent.
pub struct Image {
    /// The virtual disk's length in bytes.
    pub length: u64,
    pub compressed: bool,
    grain: u64,
    gtes: u64,
    zeroed_gte: bool,
    gd: Vec<u32>,
    gts: Vec<(u32, Vec<u32>)>,
    inflated: Option<(u32, Vec<u8>)>,
}

fn sectors_to_bytes(sectors: u64, what: &str) -> Result<u64> {
    sectors.checked_mul(512).ok_or_else(|| Error::corrupted(format!("{what}: {sectors} sectors overflow")))
}

impl Image {
    pub fn open(disk: &dyn Disk) -> Result<Image> {
        let size = disk.size();
        if size < 512 {
            return Err(Error::not_found("not a VMDK: less than a sector"));
        }
        let mut h = disk.read(0, 512)?;
        if h.get(..4) != Some(&MAGIC[..]) {
            if disk.read(0, 21.min(size as usize))?.starts_with(b"# Disk DescriptorFile") {
                return Err(Error::unsupported(
                    "a descriptor-only VMDK: its extents are other files, which fshost does not open on the image's word",
                ));
            }
            return Err(Error::not_found("not a VMDK sparse extent: no KDMV magic"));
        }
        if u64_at(&h, 56, "gdOffset")? == GD_AT_END {
            // streamOptimized: footer marker, footer header, end-of-stream.
            if size < 1536 {
                return Err(Error::corrupted("the grain directory is at the end, but the file has no footer"));
            }
            let f = disk.read(size - 1536, 1536)?;
            let bad = f.get(512..516) != Some(&MAGIC[..])
                || u32_at(&f, 8, "footer marker size")? != 0
                || u32_at(&f, 12, "footer marker type")? != MARKER_FOOTER
                || u64_at(&f, 1024, "end-of-stream marker")? != 0
                || u32_at(&f, 1036, "end-of-stream type")? != MARKER_EOS;
            if bad {
                return Err(Error::corrupted("invalid footer at the end of a stream-optimized VMDK"));
            }
            h = f[512..1024].to_vec();
        }
        let version = u32_at(&h, 4, "version")?;
        if !(1..=3).contains(&version) {
            return Err(Error::unsupported(format!("VMDK sparse extent version {version}")));
        }
        let flags = u32_at(&h, 8, "flags")?;
        let capacity = sectors_to_bytes(u64_at(&h, 12, "capacity")?, "capacity")?;
        let grain = sectors_to_bytes(u64_at(&h, 20, "grainSize")?, "grainSize")?;
        if !grain.is_power_of_two() || !(4096..=MAX_GRAIN).contains(&grain) {
            return Err(Error::unsupported(format!("grains of {grain} bytes (this guest reads 4 KiB to 1 MiB)")));
        }
        let gtes = u64::from(u32_at(&h, 44, "numGTEsPerGT")?);
        if !(1..=512).contains(&gtes) {
            return Err(Error::corrupted(format!("{gtes} entries per grain table")));
        }
        let compressed = flags & FLAG_COMPRESSED != 0;
        if compressed {
            let algorithm = u16_at(&h, 77, "compressAlgorithm")?;
            if algorithm != 1 {
                return Err(Error::unsupported(format!("compression algorithm {algorithm} (only deflate, 1)")));
            }
            if flags & FLAG_MARKERS == 0 {
                return Err(Error::unsupported("compressed grains without markers"));
            }
        }
        let _ = u8_at(&h, 72, "uncleanShutdown")?;
        // A parent named in the descriptor: the disk is a delta of it.
        let (desc_at, desc_len) = (u64_at(&h, 28, "descriptorOffset")?, u64_at(&h, 36, "descriptorSize")?);
        if desc_at != 0 && desc_len != 0 {
            let at = sectors_to_bytes(desc_at, "descriptorOffset")?;
            let len = sectors_to_bytes(desc_len, "descriptorSize")?.min(MAX_DESCRIPTOR);
            if at.checked_add(len).is_some_and(|e| e <= size) {
                let d = disk.read(at, len as usize)?;
                if d.windows(18).any(|w| w == b"parentFileNameHint") {
                    return Err(Error::unsupported(
                        "a delta VMDK (its descriptor names a parent disk): fshost reads stand-alone disks",
                    ));
                }
            }
        }
        let span = grain * gtes;
        let entries = capacity.div_ceil(span);
        if entries > MAX_GD_ENTRIES {
            return Err(Error::corrupted(format!("a grain directory of {entries} entries")));
        }
        let gd_at = sectors_to_bytes(u64_at(&h, 56, "gdOffset")?, "gdOffset")?;
        let gd_bytes = entries * 4;
        if gd_at.checked_add(gd_bytes).is_none_or(|e| e > size) {
            return Err(Error::corrupted(format!(
                "grain directory of {gd_bytes} bytes at {gd_at}: past the end of the file"
            )));
        }
        let raw = disk.read(gd_at, gd_bytes as usize)?;
        let gd = raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect();
        Ok(Image {
            length: capacity / 512 * 512,
            compressed,
            grain,
            gtes,
            zeroed_gte: flags & FLAG_ZEROED_GTE != 0,
            gd,
            gts: Vec::new(),
            inflated: None,
        })
    }

    /// The grain table entry of grain `index`: 0 when its table is absent.
    fn gte(&mut self, disk: &dyn Disk, index: u64) -> Result<u32> {
        let l1 = index / self.gtes;
        let Some(&gt_sector) = usize::try_from(l1).ok().and_then(|i| self.gd.get(i)) else { return Ok(0) };
        if gt_sector == 0 {
            return Ok(0);
        }
        if let Some(i) = self.gts.iter().position(|(s, _)| *s == gt_sector) {
            let hit = self.gts.remove(i);
            self.gts.insert(0, hit);
        } else {
            let at = u64::from(gt_sector) * 512;
            let len = self.gtes * 4;
            if at.checked_add(len).is_none_or(|e| e > disk.size()) {
                return Err(Error::corrupted(format!(
                    "grain table {l1} at sector {gt_sector}: past the end of the file"
                )));
            }
            let raw = disk.read(at, len as usize)?;
            let gt = raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect();
            self.gts.truncate(GT_CACHE - 1);
            self.gts.insert(0, (gt_sector, gt));
        }
        let l2 = (index % self.gtes) as usize;
        Ok(self.gts.first().and_then(|(_, gt)| gt.get(l2)).copied().unwrap_or(0))
    }

    /// The inflated grain whose marker is at `sector` (cached).
    fn inflate(&mut self, disk: &dyn Disk, sector: u32) -> Result<Vec<u8>> {
        if let Some((s, bytes)) = &self.inflated
            && *s == sector
        {
            return Ok(bytes.clone());
        }
        let at = u64::from(sector) * 512;
        let what = format!("compressed grain at sector {sector}");
        if at.checked_add(12).is_none_or(|e| e > disk.size()) {
            return Err(Error::corrupted(format!("{what}: past the end of the file")));
        }
        let marker = disk.read(at, 12)?;
        let len = u64::from(u32_at(&marker, 8, "grain marker size")?);
        if len > 2 * self.grain || at + 12 + len > disk.size() {
            return Err(Error::corrupted(format!("{what}: {len} compressed bytes")));
        }
        let input = disk.read(at + 12, len as usize)?;
        use miniz_oxide::inflate::TINFLStatus;
        use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
        let mut out = vec![0u8; self.grain as usize];
        let flags =
            inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        let (status, _, written) = decompress(&mut DecompressorOxide::new(), &input, &mut out, 0, flags);
        // The disk's last grain may be stored short (QEMU writes only the
        // part inside the disk); `map` checks the length it needs.
        let full = status == TINFLStatus::HasMoreOutput && written == out.len();
        if status != TINFLStatus::Done && !full {
            return Err(Error::corrupted(format!("{what}: bad deflate stream ({status:?}) after {written} bytes")));
        }
        out.truncate(written);
        self.inflated = Some((sector, out.clone()));
        Ok(out)
    }

    /// Extents from the grain holding `offset`, covering up to `length`
    /// bytes.
    pub fn map(&mut self, disk: &dyn Disk, offset: u64, length: u64) -> Result<Vec<Extent>> {
        if offset >= self.length {
            return Err(Error::invalid(format!("offset {offset} is past the disk's end ({} bytes)", self.length)));
        }
        let end = offset.saturating_add(length.max(1)).min(self.length);
        let mut out: Vec<Extent> = Vec::new();
        let mut data = 0usize;
        let mut pos = offset / self.grain * self.grain;
        while pos < end && out.len() < MAX_EXTENTS {
            let len = self.grain.min(self.length - pos);
            let gte = self.gte(disk, pos / self.grain)?;
            let kind = if gte == 0 || (gte == GTE_ZEROED && self.zeroed_gte) {
                Kind::Zeros
            } else if self.compressed {
                if !out.is_empty() && data + len as usize > MAX_DATA {
                    break;
                }
                let mut bytes = self.inflate(disk, gte)?;
                if bytes.len() < len as usize {
                    return Err(Error::corrupted(format!(
                        "compressed grain at sector {gte}: {} bytes for {len} bytes of disk",
                        bytes.len()
                    )));
                }
                bytes.truncate(len as usize);
                data += bytes.len();
                Kind::Data(bytes)
            } else {
                let at = u64::from(gte) * 512;
                if at.checked_add(len).is_none_or(|e| e > disk.size()) {
                    return Err(Error::corrupted(format!("grain at sector {gte}: past the end of the file")));
                }
                Kind::Backing(at)
            };
            push(&mut out, Extent { offset: pos, length: len, kind });
            pos += len;
        }
        Ok(out)
    }
}

/// Append `e`, merged with the last extent when it continues it.
fn push(out: &mut Vec<Extent>, e: Extent) {
    if let Some(last) = out.last_mut() {
        let continues = match (&last.kind, &e.kind) {
            (Kind::Backing(a), Kind::Backing(b)) => a.checked_add(last.length) == Some(*b),
            (Kind::Zeros, Kind::Zeros) => true,
            _ => false,
        };
        if continues {
            last.length += e.length;
            return;
        }
    }
    out.push(e);
}
