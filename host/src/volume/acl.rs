//! POSIX ACLs where they meet the mode: the VFS's rules (fs/posix_acl.c)
//! that a FUSE server with FUSE_POSIX_ACL must apply itself, since the
//! kernel passes ACLs through as xattrs and leaves the mode to the server.
//!
//! * Setting an access ACL sets the mode's rwx bits from it
//!   (`posix_acl_equiv_mode`); an ACL the mode says all of is not stored.
//! * chmod rewrites the owner, mask (or group) and other entries of an
//!   access ACL (`__posix_acl_chmod`).
//! * A new inode in a directory with a default ACL gets the default ACL,
//!   masked by its mode, as its access ACL, and the mode masked by the ACL
//!   instead of the umask (`posix_acl_create_masq`); a new directory also
//!   inherits the default ACL.
//!
//! ACLs travel in the VFS xattr format: a little-endian u32 version (2),
//! then 8-byte entries (u16 tag, u16 perm, u32 id).

/// The xattr names of the two ACLs.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// An ACL in the VFS xattr format, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    /// Parse the VFS xattr format; `None` when it is not one (the kernel
    /// checked it before it reached the host, so this is a guest's value).
    pub fn parse(bytes: &[u8]) -> Option<Acl> {
        let (head, rest) = bytes.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*head) != VERSION || !rest.len().is_multiple_of(8) {
            return None;
        }
        let entries = rest
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect::<Vec<_>>();
        let known = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];
        entries.iter().all(|e| known.contains(&e.tag)).then_some(Acl(entries))
    }

    /// The VFS xattr format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    /// The permission bits `perm` (mode & 0o7777) with their rwx bits set
    /// from this access ACL, and whether the ACL says more than the mode
    /// (named users or groups, a mask) and so must be stored.
    pub fn mode(&self, perm: u16) -> (u16, bool) {
        let mut mode = 0u16;
        let mut more = false;
        for e in &self.0 {
            match e.tag {
                USER_OBJ => mode |= (e.perm & 7) << 6,
                GROUP_OBJ => mode |= (e.perm & 7) << 3,
                OTHER => mode |= e.perm & 7,
                MASK => {
                    mode = (mode & !0o070) | ((e.perm & 7) << 3);
                    more = true;
                }
                _ => more = true,
            }
        }
        ((perm & !0o777) | mode, more)
    }

    /// This access ACL after a chmod to `perm`: owner, mask (or, without
    /// one, group) and other entries take the new bits.
    pub fn chmod(&self, perm: u16) -> Acl {
        let has_mask = self.0.iter().any(|e| e.tag == MASK);
        let entries = self
            .0
            .iter()
            .map(|&e| {
                let bits = match e.tag {
                    USER_OBJ => (perm >> 6) & 7,
                    MASK => (perm >> 3) & 7,
                    GROUP_OBJ if !has_mask => (perm >> 3) & 7,
                    OTHER => perm & 7,
                    _ => return e,
                };
                Entry { perm: bits, ..e }
            })
            .collect();
        Acl(entries)
    }

    /// For a new inode with permission bits `perm` under a directory whose
    /// default ACL this is: the bits masked by the ACL, and the access ACL
    /// the inode gets (`None` when the mode says all of it).
    pub fn create(&self, perm: u16) -> (u16, Option<Acl>) {
        let mut mode = perm;
        let mut entries = self.0.clone();
        let mut more = false;
        let (mut group_obj, mut mask) = (None, None);
        for (i, e) in entries.iter_mut().enumerate() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= (mode >> 6) & 7;
                    mode &= (e.perm << 6) | !0o700;
                }
                GROUP_OBJ => group_obj = Some(i),
                OTHER => {
                    e.perm &= mode & 7;
                    mode &= e.perm | !0o007;
                }
                MASK => {
                    mask = Some(i);
                    more = true;
                }
                _ => more = true,
            }
        }
        if let Some(i) = mask.or(group_obj) {
            let e = &mut entries[i];
            e.perm &= (mode >> 3) & 7;
            mode &= (e.perm << 3) | !0o070;
        }
        (mode, more.then_some(Acl(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl(entries.iter().map(|&(tag, perm, id)| Entry { tag, perm, id }).collect())
    }

    const NONE: u32 = u32::MAX;

    #[test]
    fn the_xattr_format_round_trips_and_refuses_garbage() {
        let a = acl(&[(USER_OBJ, 7, NONE), (USER, 5, 1000), (GROUP_OBJ, 5, NONE), (MASK, 5, NONE), (OTHER, 0, NONE)]);
        assert_eq!(Acl::parse(&a.to_bytes()), Some(a));
        assert_eq!(Acl::parse(b"\x01\0\0\0"), None, "version 1");
        assert_eq!(Acl::parse(b"\x02\0\0\0\x01\0"), None, "a cut entry");
        assert_eq!(Acl::parse(b"\x02\0\0\0\x40\0\x07\0\0\0\0\0"), None, "an unknown tag");
    }

    #[test]
    fn an_access_acl_sets_the_mode() {
        // setfacl -m u::rwx,g::r-x,o::--- (no mask): the mode says it all.
        let plain = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 5, NONE), (OTHER, 0, NONE)]);
        assert_eq!(plain.mode(0o4644), (0o4750, false));
        // With a named user and a mask, the group bits are the mask's.
        let named =
            acl(&[(USER_OBJ, 6, NONE), (USER, 7, 1000), (GROUP_OBJ, 4, NONE), (MASK, 3, NONE), (OTHER, 4, NONE)]);
        assert_eq!(named.mode(0o755), (0o634, true));
    }

    #[test]
    fn chmod_rewrites_owner_mask_and_other() {
        let named =
            acl(&[(USER_OBJ, 6, NONE), (USER, 7, 1000), (GROUP_OBJ, 4, NONE), (MASK, 3, NONE), (OTHER, 4, NONE)]);
        let after = named.chmod(0o751);
        assert_eq!(
            after,
            acl(&[(USER_OBJ, 7, NONE), (USER, 7, 1000), (GROUP_OBJ, 4, NONE), (MASK, 5, NONE), (OTHER, 1, NONE)])
        );
        let plain = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 5, NONE), (OTHER, 0, NONE)]);
        assert_eq!(plain.chmod(0o640), acl(&[(USER_OBJ, 6, NONE), (GROUP_OBJ, 4, NONE), (OTHER, 0, NONE)]));
    }

    #[test]
    fn a_default_acl_masks_a_new_inode() {
        // A default of u::rwx,g::r-x,o::r-x and mode 0666: 0644, no ACL.
        let plain = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 5, NONE), (OTHER, 5, NONE)]);
        assert_eq!(plain.create(0o666), (0o644, None));
        // With a named group and a mask, the access ACL is kept, masked.
        let named =
            acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 7, NONE), (GROUP, 7, 2000), (MASK, 7, NONE), (OTHER, 0, NONE)]);
        let (mode, access) = named.create(0o666);
        assert_eq!(mode, 0o660);
        assert_eq!(
            access,
            Some(acl(&[
                (USER_OBJ, 6, NONE),
                (GROUP_OBJ, 7, NONE),
                (GROUP, 7, 2000),
                (MASK, 6, NONE),
                (OTHER, 0, NONE)
            ]))
        );
    }
}
