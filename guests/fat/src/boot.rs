//! The boot sector and its BIOS parameter block (BPB): the geometry every
//! other parser works from.
//!
//! `Geometry::parse` is the one place where on-disk sizes become trusted
//! numbers: every field is checked as Linux's `fat_read_bpb` and
//! `fat_fill_super` check it, every product is computed in 64 bits from
//! fields of at most 32, and the FAT type is chosen the way the kernel
//! chooses it (FAT32 when the 16-bit FAT size is 0, else FAT16 when there
//! are more than 4084 clusters, else FAT12). Past this point byte offsets
//! derived from a `Geometry` cannot overflow.

use fshost_sdk::bytes::{le_u16, le_u32, slice, u8_at};
use fshost_sdk::{Error, Result};

/// The most clusters of each FAT type the kernel accepts (`MAX_FAT12`,
/// `MAX_FAT16`, `MAX_FAT32` in include/uapi/linux/msdos_fs.h).
const MAX_FAT12: u32 = 0xFF4;
const MAX_FAT16: u32 = 0xFFF4;
const MAX_FAT32: u32 = 0x0FFF_FFF6;

/// The first cluster number that names data (0 and 1 are reserved).
pub const FIRST_CLUSTER: u32 = 2;

/// Which FAT entry width the volume uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// Where the root directory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootDir {
    /// FAT12/16: a fixed region of `entries` 32-byte entries at byte `start`.
    Fixed { start: u64, entries: u32 },
    /// FAT32: a cluster chain starting here.
    Chain(u32),
}

/// The checked layout of a FAT volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub fat_type: FatType,
    pub sector_size: u32,
    pub cluster_size: u32,
    /// Byte offset of the first FAT.
    pub fat_start: u64,
    /// Bytes in one FAT.
    pub fat_bytes: u64,
    /// Byte offset of cluster 2.
    pub data_start: u64,
    /// Number of data clusters (clusters 2 ..= clusters + 1 exist).
    pub clusters: u32,
    pub root: RootDir,
    /// The FSInfo sector's byte offset (FAT32, when the BPB names one).
    pub fsinfo: Option<u64>,
    /// The volume serial number as stored (little-endian u32).
    pub serial: Option<u32>,
    /// The BPB's 11-byte label, trailing spaces removed; None for "NO NAME".
    pub label: Option<Vec<u8>>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::corrupted(format!("boot sector: {what}"))
}

impl Geometry {
    /// Parse the first 512 bytes of the volume.
    pub fn parse(boot: &[u8]) -> Result<Geometry> {
        let sector_size = u32::from(le_u16(boot, 11)?);
        if !sector_size.is_power_of_two() {
            return Err(bad(format!("{sector_size} bytes per sector is not a power of two (not a FAT volume?)")));
        }
        if !(512..=4096).contains(&sector_size) {
            return Err(Error::unsupported(format!(
                "boot sector: {sector_size} bytes per sector (Linux's vfat reads 512..=4096)"
            )));
        }
        let sec_per_clus = u32::from(u8_at(boot, 13)?);
        if sec_per_clus == 0 || !sec_per_clus.is_power_of_two() {
            return Err(bad(format!("{sec_per_clus} sectors per cluster is not a power of two")));
        }
        let cluster_size = sector_size * sec_per_clus; // <= 4096 * 128
        let reserved = u32::from(le_u16(boot, 14)?);
        if reserved == 0 {
            return Err(bad("no reserved sectors"));
        }
        let nfats = u32::from(u8_at(boot, 16)?);
        if nfats == 0 {
            return Err(bad("no FAT copies"));
        }
        let media = u8_at(boot, 21)?;
        if media != 0xF0 && media < 0xF8 {
            return Err(bad(format!("media byte 0x{media:02x} is not a FAT media descriptor")));
        }
        let root_entries = u32::from(le_u16(boot, 17)?);
        let total16 = u32::from(le_u16(boot, 19)?);
        let total_sectors = if total16 != 0 { total16 } else { le_u32(boot, 32)? };
        let fat16_len = u32::from(le_u16(boot, 22)?);
        let is_fat32 = fat16_len == 0;
        let fat_len = if is_fat32 { le_u32(boot, 36)? } else { fat16_len };
        if fat_len == 0 {
            return Err(bad("FAT size is 0"));
        }
        let entries_per_sector = sector_size / 32;
        if root_entries % entries_per_sector != 0 {
            return Err(bad(format!("{root_entries} root entries do not fill whole {sector_size}-byte sectors")));
        }
        if is_fat32 && root_entries != 0 {
            return Err(bad(format!("FAT32 with {root_entries} fixed root entries")));
        }
        if !is_fat32 && root_entries == 0 {
            return Err(bad("FAT12/16 without root directory entries"));
        }
        let root_sectors = root_entries / entries_per_sector;

        let ss = u64::from(sector_size);
        let root_start_sector = u64::from(reserved) + u64::from(nfats) * u64::from(fat_len);
        let data_start_sector = root_start_sector + u64::from(root_sectors);
        let total = u64::from(total_sectors);
        if total <= data_start_sector {
            return Err(bad(format!("{total} sectors leave no room for data after sector {data_start_sector}")));
        }
        let data_clusters = (total - data_start_sector) / u64::from(sec_per_clus);
        let fat_bytes = u64::from(fat_len) * ss;

        let (fat_type, limit) = if is_fat32 {
            (FatType::Fat32, MAX_FAT32)
        } else if data_clusters > u64::from(MAX_FAT12) {
            (FatType::Fat16, MAX_FAT16)
        } else {
            (FatType::Fat12, MAX_FAT12)
        };
        // As the kernel: no more clusters than the FAT has entries for.
        let fat_entries = match fat_type {
            FatType::Fat12 => fat_bytes * 2 / 3,
            FatType::Fat16 => fat_bytes / 2,
            FatType::Fat32 => fat_bytes / 4,
        };
        let clusters = data_clusters.min(fat_entries.saturating_sub(u64::from(FIRST_CLUSTER)));
        if clusters == 0 {
            return Err(bad("no data clusters"));
        }
        if clusters > u64::from(limit) {
            return Err(bad(format!("{clusters} clusters are too many for {fat_type:?}")));
        }
        let clusters = clusters as u32; // <= limit < 2^28

        let (root, fsinfo, ext) = if is_fat32 {
            let root_cluster = le_u32(boot, 44)?;
            if root_cluster < FIRST_CLUSTER || root_cluster - FIRST_CLUSTER >= clusters {
                return Err(bad(format!("FAT32 root cluster {root_cluster} is out of range")));
            }
            let fsinfo_sector = u32::from(le_u16(boot, 48)?);
            let fsinfo = (fsinfo_sector != 0 && fsinfo_sector < reserved).then(|| u64::from(fsinfo_sector) * ss);
            (RootDir::Chain(root_cluster), fsinfo, 64)
        } else {
            (RootDir::Fixed { start: root_start_sector * ss, entries: root_entries }, None, 36)
        };
        // Extended boot record: signature 0x28 or 0x29; only 0x29 has the
        // label and file system type after the serial.
        let signature = u8_at(boot, ext + 2)?;
        let serial = matches!(signature, 0x28 | 0x29).then(|| le_u32(boot, ext + 3)).transpose()?;
        let label = if signature == 0x29 {
            let trimmed = trim_spaces(slice(boot, ext + 7, 11)?);
            (trimmed != b"NO NAME" && !trimmed.is_empty()).then(|| trimmed.to_vec())
        } else {
            None
        };
        Ok(Geometry {
            fat_type,
            sector_size,
            cluster_size,
            fat_start: u64::from(reserved) * ss,
            fat_bytes,
            data_start: data_start_sector * ss,
            clusters,
            root,
            fsinfo,
            serial,
            label,
        })
    }

    /// The byte offset of data cluster `cluster`, or `Corrupted` if the
    /// number names no data cluster.
    pub fn cluster_offset(&self, cluster: u32) -> Result<u64> {
        if !self.valid_cluster(cluster) {
            return Err(Error::corrupted(format!(
                "cluster {cluster} is out of range (the volume has clusters 2..={})",
                u64::from(self.clusters) + 1
            )));
        }
        Ok(self.data_start + u64::from(cluster - FIRST_CLUSTER) * u64::from(self.cluster_size))
    }

    /// Whether `cluster` names a data cluster.
    pub fn valid_cluster(&self, cluster: u32) -> bool {
        cluster >= FIRST_CLUSTER && cluster - FIRST_CLUSTER < self.clusters
    }

    /// The byte just past the last data cluster.
    pub fn data_end(&self) -> u64 {
        self.data_start + u64::from(self.clusters) * u64::from(self.cluster_size)
    }
}

/// `raw` without trailing spaces.
pub fn trim_spaces(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
    &raw[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use fshost_sdk::ErrorCode;

    /// A FAT16 boot sector for a 16 MiB volume, fields set by hand from the
    /// Microsoft FAT specification's layout.
    fn fat16() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4; // sectors per cluster
        b[14..16].copy_from_slice(&4u16.to_le_bytes()); // reserved
        b[16] = 2; // FATs
        b[17..19].copy_from_slice(&512u16.to_le_bytes()); // root entries
        b[19..21].copy_from_slice(&32768u16.to_le_bytes()); // total sectors
        b[21] = 0xF8;
        b[22..24].copy_from_slice(&32u16.to_le_bytes()); // FAT sectors
        b[38] = 0x29;
        b[39..43].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        b[43..54].copy_from_slice(b"MYDISK     ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn parses_fat16_geometry() {
        let g = Geometry::parse(&fat16()).unwrap();
        assert_eq!(g.fat_type, FatType::Fat16);
        assert_eq!(g.cluster_size, 2048);
        assert_eq!(g.fat_start, 4 * 512);
        assert_eq!(g.root, RootDir::Fixed { start: (4 + 64) * 512, entries: 512 });
        assert_eq!(g.data_start, (4 + 64 + 32) * 512);
        assert_eq!(g.clusters, (32768 - 100) / 4);
        assert_eq!(g.serial, Some(0x1234_abcd));
        assert_eq!(g.label.as_deref(), Some(&b"MYDISK"[..]));
        assert_eq!(g.cluster_offset(2).unwrap(), g.data_start);
        assert_eq!(g.cluster_offset(1).unwrap_err().code(), ErrorCode::Corrupted);
        assert_eq!(g.cluster_offset(g.clusters + 2).unwrap_err().code(), ErrorCode::Corrupted);
    }

    #[test]
    fn few_clusters_make_fat12() {
        let mut b = fat16();
        b[19..21].copy_from_slice(&4000u16.to_le_bytes());
        assert_eq!(Geometry::parse(&b).unwrap().fat_type, FatType::Fat12);
    }

    #[test]
    fn refuses_bad_fields() {
        type Change = fn(&mut Vec<u8>);
        let cases: [(&str, Change, ErrorCode); 9] = [
            ("sector size 1000", |b| b[11..13].copy_from_slice(&1000u16.to_le_bytes()), ErrorCode::Corrupted),
            ("sector size 8192", |b| b[11..13].copy_from_slice(&8192u16.to_le_bytes()), ErrorCode::Unsupported),
            ("3 sectors per cluster", |b| b[13] = 3, ErrorCode::Corrupted),
            ("0 sectors per cluster", |b| b[13] = 0, ErrorCode::Corrupted),
            ("no reserved", |b| b[14..16].copy_from_slice(&[0, 0]), ErrorCode::Corrupted),
            ("no FATs", |b| b[16] = 0, ErrorCode::Corrupted),
            ("media", |b| b[21] = 0x12, ErrorCode::Corrupted),
            ("root entries", |b| b[17..19].copy_from_slice(&3u16.to_le_bytes()), ErrorCode::Corrupted),
            ("tiny volume", |b| b[19..21].copy_from_slice(&50u16.to_le_bytes()), ErrorCode::Corrupted),
        ];
        for (what, change, code) in cases {
            let mut b = fat16();
            change(&mut b);
            assert_eq!(Geometry::parse(&b).unwrap_err().code(), code, "{what}");
        }
        assert_eq!(Geometry::parse(&[0u8; 20]).unwrap_err().code(), ErrorCode::Corrupted);
    }
}
