//! The catalogue of misbehaviours: which entry name selects which one, and
//! which operation it spoils. README.md has the same table for humans.

/// What a guest does instead of answering: each of these is a trap, a
/// panic or a deadline from the host's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Spin forever (the host's per-call deadline must stop it).
    Spin,
    /// `panic!` with a message the host should log.
    Panic,
    /// Allocate until the memory limit traps.
    Alloc,
    /// Recurse until the stack is exhausted.
    Stack,
}

/// Attribute answers (lookup, getattr, readdirplus) the host must refuse,
/// or accept and then contain (device numbers, set-id bits, odd times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAttr {
    Fault(Fault),
    /// mtime nanoseconds = 1e9.
    Nanoseconds,
    /// size = u64::MAX (> i64::MAX).
    Size,
    /// perm = 0xffff: file-type bits in the permission field.
    Perm,
    /// Inode number 0.
    InoZero,
    /// The attributes of another inode.
    WrongIno,
    /// A directory (says hello) that claims to be char device 8:0, /dev/sda.
    CharDevSda,
    /// A root-owned regular file with the setuid bit.
    SetuidRoot,
    /// mtime at i64::MIN seconds.
    Ancient,
}

/// iomap-begin answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadMap {
    Fault(Fault),
    /// Mapped past the end of the device.
    PastEnd,
    /// The second mapping starts inside the first.
    Overlap,
    /// A gap between two mappings.
    Gap,
    /// A device offset that is not block-aligned.
    Unaligned,
    /// offset + length overflows u64.
    Overflow,
    /// No mappings at all.
    Empty,
    /// The first mapping does not contain the offset asked.
    Misses,
    /// A mapping of length 0.
    ZeroLength,
    /// Inline bytes shorter than the mapping.
    InlineShort,
    /// A million mappings.
    Many,
    /// A 1 TiB file mapped as one-byte holes, one per call.
    TinyHoles,
}

/// readdir / readdirplus answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadDir {
    Fault(Fault),
    /// Millions of entries, whatever was asked.
    Huge,
    /// One more entry than asked.
    Overfull,
    /// A name with '/'.
    NameSlash,
    /// A name with NUL.
    NameNul,
    /// The name "..".
    NameDotDot,
    /// The name ".".
    NameDot,
    /// An empty name.
    NameEmpty,
    /// A 1025-byte name: longer than FUSE carries.
    NameLong,
    /// An entry with inode 0.
    InoZero,
    /// An entry with cookie 0.
    CookieZero,
    /// An entry whose cookie is the one asked.
    CookieSame,
    /// Cookies 1, 2, 1, 2, ...: a listing that loops.
    CookieCycle,
    /// Valid answers of `max` new entries each, for ever.
    Endless,
}

/// getxattr / listxattr answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadXattr {
    /// A 200 MiB value (fits the guest, not the host's value limit).
    Huge,
    /// A 300 MiB value (does not fit the guest's memory limit).
    OutOfMemory,
    /// Traps on every other getxattr of one instance.
    Flaky,
    /// Tries to write the device and reports what happened as the value.
    Writer,
    /// listxattr names with NUL in them.
    BadNames,
    /// Logs 4 KiB error messages until the deadline.
    LogFlood,
}

/// readlink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLink {
    Empty,
    Nul,
    /// A 1 MiB target.
    Huge,
}

/// Answers of the write half (read-write mounts). Each costs the write,
/// create or ioend that met it, and the host writes nothing it did not
/// validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadWrite {
    /// iomap-begin for a write: mapped past the device's end.
    PastEnd,
    /// iomap-begin for a write: the file's own blocks, one byte off.
    Unaligned,
    /// iomap-begin for a write: the first mapping misses the offset.
    Misses,
    /// iomap-begin for a write: a hole (nowhere to write).
    Hole,
    /// iomap-begin for a write: inline bytes.
    Inline,
    /// ioend answers a size the write contradicts (1 MiB more).
    IoendSize,
    /// A create in this directory answers another inode's number (that of
    /// the directory's `victim`), with the fields the host asked for.
    CreateOther,
    /// iomap-begin for a write: only the block holding the offset (of the
    /// file's own blocks), so a long write needs one call per block.
    OneBlock,
    /// setattr of the permission bits is answered as done but kept only in
    /// the instance's memory: an instance dropped after a trap takes the
    /// change with it, and a fresh one reports the bits on the device.
    Forgetful,
}

/// One misbehaviour, selected by an entry name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trick {
    Attr(BadAttr),
    Map(BadMap),
    Dir(BadDir),
    Xattr(BadXattr),
    Link(BadLink),
    Write(BadWrite),
}

/// Every name that selects a trick. An entry with one of these names, in
/// any directory of the hello image, misbehaves as listed.
pub const TRICKS: &[(&str, Trick)] = &[
    ("attr-loop", Trick::Attr(BadAttr::Fault(Fault::Spin))),
    ("attr-panic", Trick::Attr(BadAttr::Fault(Fault::Panic))),
    ("attr-alloc", Trick::Attr(BadAttr::Fault(Fault::Alloc))),
    ("attr-nsec", Trick::Attr(BadAttr::Nanoseconds)),
    ("attr-size", Trick::Attr(BadAttr::Size)),
    ("attr-perm", Trick::Attr(BadAttr::Perm)),
    ("attr-ino0", Trick::Attr(BadAttr::InoZero)),
    ("attr-wrong-ino", Trick::Attr(BadAttr::WrongIno)),
    ("chardev-sda", Trick::Attr(BadAttr::CharDevSda)),
    ("setuid-root", Trick::Attr(BadAttr::SetuidRoot)),
    ("ancient", Trick::Attr(BadAttr::Ancient)),
    ("map-loop", Trick::Map(BadMap::Fault(Fault::Spin))),
    ("map-panic", Trick::Map(BadMap::Fault(Fault::Panic))),
    ("map-alloc", Trick::Map(BadMap::Fault(Fault::Alloc))),
    ("map-stack", Trick::Map(BadMap::Fault(Fault::Stack))),
    ("badmap-past-end", Trick::Map(BadMap::PastEnd)),
    ("badmap-overlap", Trick::Map(BadMap::Overlap)),
    ("badmap-gap", Trick::Map(BadMap::Gap)),
    ("badmap-unaligned", Trick::Map(BadMap::Unaligned)),
    ("badmap-overflow", Trick::Map(BadMap::Overflow)),
    ("badmap-empty", Trick::Map(BadMap::Empty)),
    ("badmap-misses", Trick::Map(BadMap::Misses)),
    ("badmap-zero-length", Trick::Map(BadMap::ZeroLength)),
    ("badmap-inline-short", Trick::Map(BadMap::InlineShort)),
    ("manymaps", Trick::Map(BadMap::Many)),
    ("tinyholes", Trick::Map(BadMap::TinyHoles)),
    ("dir-loop", Trick::Dir(BadDir::Fault(Fault::Spin))),
    ("hugelist", Trick::Dir(BadDir::Huge)),
    ("overfull", Trick::Dir(BadDir::Overfull)),
    ("badname-slash", Trick::Dir(BadDir::NameSlash)),
    ("badname-nul", Trick::Dir(BadDir::NameNul)),
    ("badname-dotdot", Trick::Dir(BadDir::NameDotDot)),
    ("badname-dot", Trick::Dir(BadDir::NameDot)),
    ("badname-empty", Trick::Dir(BadDir::NameEmpty)),
    ("badname-long", Trick::Dir(BadDir::NameLong)),
    ("badentry-ino0", Trick::Dir(BadDir::InoZero)),
    ("badcookie-zero", Trick::Dir(BadDir::CookieZero)),
    ("badcookie-same", Trick::Dir(BadDir::CookieSame)),
    ("badcookie-cycle", Trick::Dir(BadDir::CookieCycle)),
    ("endless", Trick::Dir(BadDir::Endless)),
    ("hugexattr", Trick::Xattr(BadXattr::Huge)),
    ("oomxattr", Trick::Xattr(BadXattr::OutOfMemory)),
    ("flaky", Trick::Xattr(BadXattr::Flaky)),
    ("writer", Trick::Xattr(BadXattr::Writer)),
    ("badxattr-names", Trick::Xattr(BadXattr::BadNames)),
    ("logflood", Trick::Xattr(BadXattr::LogFlood)),
    ("badlink-empty", Trick::Link(BadLink::Empty)),
    ("badlink-nul", Trick::Link(BadLink::Nul)),
    ("badlink-huge", Trick::Link(BadLink::Huge)),
    ("wmap-past-end", Trick::Write(BadWrite::PastEnd)),
    ("wmap-unaligned", Trick::Write(BadWrite::Unaligned)),
    ("wmap-misses", Trick::Write(BadWrite::Misses)),
    ("wmap-hole", Trick::Write(BadWrite::Hole)),
    ("wmap-inline", Trick::Write(BadWrite::Inline)),
    ("ioend-size", Trick::Write(BadWrite::IoendSize)),
    ("create-other", Trick::Write(BadWrite::CreateOther)),
    ("wmap-one-block", Trick::Write(BadWrite::OneBlock)),
    ("forgetful", Trick::Write(BadWrite::Forgetful)),
];

impl Trick {
    /// The trick entry name `name` selects, if any.
    pub fn from_name(name: &[u8]) -> Option<Trick> {
        TRICKS.iter().find(|(n, _)| n.as_bytes() == name).map(|(_, t)| *t)
    }
}

/// Misbehaviours of `mount` itself, selected with `-o evil=NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountTrick {
    /// Spin forever in mount.
    Loop,
    /// Fail every mount with `corrupted`.
    Fail,
    /// Panic in mount.
    Panic,
    /// Report a block size of 3 bytes.
    BadInfo,
    /// Refuse `begin-write` with a long sentence holding control characters.
    RefuseWrite,
    /// When mounted read-only, try to overwrite the device's first block
    /// (0xee bytes) and mount anyway: a read-only instance on a device
    /// opened read-write (detection's probes) must be refused.
    WriteWhenReadOnly,
}

impl MountTrick {
    /// The mount trick `-o evil=NAME` selects.
    pub fn from_option(value: &str) -> Option<MountTrick> {
        Some(match value {
            "mount-loop" => MountTrick::Loop,
            "mount-fail" => MountTrick::Fail,
            "mount-panic" => MountTrick::Panic,
            "mount-badinfo" => MountTrick::BadInfo,
            "refuse-write" => MountTrick::RefuseWrite,
            "write-when-ro" => MountTrick::WriteWhenReadOnly,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, (name, trick)) in TRICKS.iter().enumerate() {
            assert!(TRICKS[..i].iter().all(|(n, _)| n != name), "{name} twice");
            assert_eq!(Trick::from_name(name.as_bytes()), Some(*trick));
        }
        assert_eq!(Trick::from_name(b"good.txt"), None);
    }
}
