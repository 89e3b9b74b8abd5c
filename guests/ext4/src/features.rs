//! The superblock's three feature words, and the mount-time decision the
//! kernel makes from them.
//!
//! ext4 keeps compatibility in three masks: COMPAT features can be ignored by
//! any reader, RO_COMPAT features can be ignored by a *read-only* reader (this
//! guest is one), and an INCOMPAT feature a reader does not understand means
//! it would misread the disk. [`Features::check_incompat`] refuses exactly the
//! INCOMPAT bits this guest does not implement, naming them, as the kernel's
//! `ext4_feature_set_ok` does.

use fshost_sdk::{Error, Result};

/// COMPAT bits this guest looks at.
pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x0004;
    pub const DIR_INDEX: u32 = 0x0020;
    pub const SPARSE_SUPER2: u32 = 0x0200;
}

/// RO_COMPAT bits this guest looks at.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x0001;
    pub const LARGE_FILE: u32 = 0x0002;
    pub const BTREE_DIR: u32 = 0x0004;
    pub const HUGE_FILE: u32 = 0x0008;
    pub const GDT_CSUM: u32 = 0x0010;
    pub const BIGALLOC: u32 = 0x0200;
    pub const METADATA_CSUM: u32 = 0x0400;
}

/// INCOMPAT bits, all of them (so unknown ones can be named by value).
pub mod incompat {
    pub const COMPRESSION: u32 = 0x0001;
    pub const FILETYPE: u32 = 0x0002;
    pub const RECOVER: u32 = 0x0004;
    pub const JOURNAL_DEV: u32 = 0x0008;
    pub const META_BG: u32 = 0x0010;
    pub const EXTENTS: u32 = 0x0040;
    pub const BIT64: u32 = 0x0080;
    pub const MMP: u32 = 0x0100;
    pub const FLEX_BG: u32 = 0x0200;
    pub const EA_INODE: u32 = 0x0400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
}

/// The INCOMPAT features this guest reads correctly. The same set as the
/// kernel's `EXT4_FEATURE_INCOMPAT_SUPP`. MMP only guards writers, ENCRYPT
/// only hides file contents and names (refused per inode).
const INCOMPAT_SUPPORTED: u32 = incompat::FILETYPE
    | incompat::RECOVER
    | incompat::META_BG
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::MMP
    | incompat::FLEX_BG
    | incompat::EA_INODE
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA
    | incompat::ENCRYPT
    | incompat::CASEFOLD;

/// Names of INCOMPAT bits as e2fsprogs spells them, for messages.
const INCOMPAT_NAMES: [(u32, &str); 3] =
    [(incompat::COMPRESSION, "compression"), (incompat::JOURNAL_DEV, "journal_dev"), (incompat::DIRDATA, "dirdata")];

/// The three feature words of a superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
}

impl Features {
    /// Whether COMPAT bit `bit` is set.
    pub fn compat(&self, bit: u32) -> bool {
        self.compat & bit != 0
    }

    /// Whether INCOMPAT bit `bit` is set.
    pub fn incompat(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }

    /// Whether RO_COMPAT bit `bit` is set.
    pub fn ro_compat(&self, bit: u32) -> bool {
        self.ro_compat & bit != 0
    }

    /// Refuse INCOMPAT features this guest cannot read, naming each one.
    pub fn check_incompat(&self) -> Result<()> {
        let unknown = self.incompat & !INCOMPAT_SUPPORTED;
        if unknown == 0 {
            return Ok(());
        }
        let names: Vec<String> = (0..32)
            .map(|b| 1u32 << b)
            .filter(|bit| unknown & bit != 0)
            .map(|bit| match INCOMPAT_NAMES.iter().find(|(b, _)| *b == bit) {
                Some((_, name)) => (*name).to_string(),
                None => format!("unknown incompat feature {bit:#x}"),
            })
            .collect();
        Err(Error::unsupported(format!("ext4: cannot mount, unsupported incompatible features: {}", names.join(", "))))
    }

    /// The format name `blkid` would give: ext4 when anything beyond ext3's
    /// feature set is on, ext3 with a journal, ext2 otherwise.
    pub fn fs_type(&self) -> &'static str {
        const EXT3_INCOMPAT: u32 = incompat::FILETYPE | incompat::RECOVER | incompat::META_BG;
        const EXT3_RO_COMPAT: u32 = ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE | ro_compat::BTREE_DIR;
        if self.incompat & !EXT3_INCOMPAT != 0 || self.ro_compat & !EXT3_RO_COMPAT != 0 {
            "ext4"
        } else if self.compat(compat::HAS_JOURNAL) {
            "ext3"
        } else {
            "ext2"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fshost_sdk::ErrorCode;

    #[test]
    fn refuses_unknown_incompat_features_by_name() {
        let f = Features { compat: 0, incompat: incompat::EXTENTS | incompat::DIRDATA | 0x8000_0000, ro_compat: 0 };
        let err = f.check_incompat().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unsupported);
        assert!(err.message().contains("dirdata"), "{err}");
        assert!(err.message().contains("0x80000000"), "{err}");
        let ok = Features { compat: 0, incompat: INCOMPAT_SUPPORTED, ro_compat: 0xffff_ffff };
        assert!(ok.check_incompat().is_ok());
    }

    #[test]
    fn names_the_format_like_blkid() {
        let ext2 = Features { compat: 0, incompat: incompat::FILETYPE, ro_compat: ro_compat::SPARSE_SUPER };
        assert_eq!(ext2.fs_type(), "ext2");
        assert_eq!(Features { compat: compat::HAS_JOURNAL, ..ext2 }.fs_type(), "ext3");
        assert_eq!(Features { incompat: incompat::EXTENTS, ..ext2 }.fs_type(), "ext4");
    }
}
