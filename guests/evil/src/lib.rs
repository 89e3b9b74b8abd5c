//! evil: a hostile fshost guest, for testing the host.
//!
//! It serves a hellofs image through [`hello::Hello`] and misbehaves on
//! purpose wherever an entry carries one of the names in [`TRICKS`]: it
//! spins, panics, exhausts its memory or stack, returns mappings outside the
//! device, names with '/', endless listings, huge values, or tries to write
//! the device. Everything else answers as hello does, so one image and one
//! mount exercise every misbehaviour and show that the rest still works.
//! `mount` itself misbehaves with `-o evil=NAME` ([`MountTrick`]).
//! README.md lists each name and what the host should answer.
//!
//! A real attacker would not use the SDK; this guest does, so that its
//! misbehaviour is about values and resources, not about the ABI. Never
//! point it at anything but test images.

mod trick;

use std::collections::{HashMap, HashSet};

use fshost_sdk::{
    Attr, AttrChanges, Device, DirEntry, Error, ErrorCode, FileType, Filesystem, FsInfo, Ino, IomapFlags, Mapping,
    MappingKind, MountOptions, NewInode, Result, Timestamp, encode_rdev,
};
use hello::Hello;

pub use trick::{BadAttr, BadDir, BadLink, BadMap, BadWrite, BadXattr, Fault, MountTrick, TRICKS, Trick};

/// Entries in a `hugelist` readdir answer: as many as fit the guest's
/// 256 MiB twice (the SDK's list and the canonical-ABI copy).
pub const HUGE_LIST: u64 = 2_000_000;
/// Entries in a `hugelist` readdirplus answer (each carries attributes).
pub const HUGE_LIST_PLUS: u64 = 300_000;
/// Mappings in a `manymaps` answer.
pub const MANY_MAPS: u64 = 1_000_000;
/// The `hugexattr` value: fits the guest's memory, not the host's limit.
pub const HUGE_XATTR: usize = 200 << 20;
/// The `oomxattr` value: more than the guest's 256 MiB.
pub const OOM_XATTR: usize = 300 << 20;
/// The size `tinyholes` claims (1 TiB).
pub const TINY_HOLES_SIZE: u64 = 1 << 40;
/// Inode numbers of made-up entries start here (hello never has this many).
const FAKE_INO: Ino = 1 << 40;
/// Most entries the trick walk at mount visits.
const WALK_LIMIT: usize = 100_000;

/// A mounted hellofs image with tricks.
pub struct Evil {
    hello: Hello,
    device_size: u64,
    block_size: u64,
    /// Inode -> the trick its name selects, learnt at mount.
    tricks: HashMap<Ino, Trick>,
    mount_trick: Option<MountTrick>,
    /// getxattr calls on `flaky` in this instance.
    flaky_calls: u64,
    /// `begin-write` agreed in this instance: writes are refused before
    /// (the contract: the host calls it again after every restart).
    writing: bool,
    /// `forgetful` inodes: permission bits set in this instance only.
    kept: HashMap<Ino, u16>,
}

/// Stop executing in a way the host sees as a trap (not a panic).
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Grow memory 16 MiB at a time (untouched, so it is quick) until the
/// host's memory limit traps.
fn alloc_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(Vec::with_capacity(16 << 20)));
    }
}

/// Recurse with a frame the optimiser cannot drop until the stack runs out.
#[allow(unconditional_recursion)] // The point: exhaust the stack.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    recurse(depth + 1).wrapping_add(frame[(depth % 32) as usize])
}

fn fault(f: Fault, what: &str) -> ! {
    match f {
        Fault::Spin => spin(),
        Fault::Panic => panic!("evil: deliberate panic in {what}"),
        Fault::Alloc => alloc_forever(),
        Fault::Stack => {
            std::hint::black_box(recurse(0));
            trap()
        }
    }
}

/// Ask the host to overwrite the first block of the device. The SDK has no
/// write call (guests are read-only), so this names the raw import.
#[cfg(target_arch = "wasm32")]
fn try_write() -> std::result::Result<(), String> {
    use fshost_sdk::bindings::fshost::plugin::block_device;
    block_device::write(0, &[0xee; 4096]).map_err(|code| format!("{code:?}"))
}

#[cfg(not(target_arch = "wasm32"))]
fn try_write() -> std::result::Result<(), String> {
    Err("no host to write through".into())
}

impl Evil {
    fn trick(&self, ino: Ino) -> Option<Trick> {
        self.tricks.get(&ino).copied()
    }

    /// Every trick-named entry of the image, by inode (breadth first).
    fn walk(hello: &mut Hello) -> Result<HashMap<Ino, Trick>> {
        let root = hello.info()?.root;
        let mut tricks = HashMap::new();
        let mut seen = HashSet::from([root]);
        let mut todo = vec![root];
        let mut visited = 0usize;
        while let Some(dir) = todo.pop() {
            let mut cookie = 0;
            loop {
                let batch = hello.readdir(dir, cookie, 1024)?;
                let Some(last) = batch.last() else { break };
                cookie = last.cookie;
                for e in batch {
                    visited += 1;
                    if visited > WALK_LIMIT {
                        return Err(Error::invalid("evil: more entries than the walk visits"));
                    }
                    if let Some(t) = Trick::from_name(&e.name) {
                        tricks.insert(e.ino, t);
                    }
                    if e.kind == FileType::Directory && seen.insert(e.ino) {
                        todo.push(e.ino);
                    }
                }
            }
        }
        Ok(tricks)
    }

    fn apply_attr(&self, mut a: Attr) -> Result<Attr> {
        match self.trick(a.ino) {
            Some(Trick::Attr(bad)) => match bad {
                BadAttr::Fault(f) => fault(f, "attributes"),
                BadAttr::Nanoseconds => a.mtime.nanoseconds = 1_000_000_000,
                BadAttr::Size => a.size = u64::MAX,
                BadAttr::Perm => a.perm = 0xffff,
                BadAttr::InoZero => a.ino = 0,
                BadAttr::WrongIno => a.ino = a.ino.wrapping_add(1000),
                BadAttr::CharDevSda => {
                    a.kind = FileType::CharDevice;
                    a.rdev = encode_rdev(8, 0);
                    a.perm = 0o666;
                    a.size = 0;
                }
                BadAttr::SetuidRoot => {
                    a.perm = 0o4755;
                    (a.uid, a.gid) = (0, 0);
                }
                BadAttr::Ancient => a.mtime = Timestamp { seconds: i64::MIN, nanoseconds: 999_999_999 },
            },
            Some(Trick::Map(BadMap::TinyHoles)) => a.size = TINY_HOLES_SIZE,
            Some(Trick::Write(BadWrite::Forgetful)) => {
                if let Some(perm) = self.kept.get(&a.ino) {
                    a.perm = *perm;
                }
            }
            _ => {}
        }
        Ok(a)
    }

    /// A readdir answer for a trick directory.
    fn bad_dir(&self, dir: Ino, bad: BadDir, cookie: u64, max: u32, plus: bool) -> Vec<DirEntry> {
        let entry =
            |name: &[u8], ino: Ino, cookie: u64| DirEntry { ino, kind: FileType::Regular, name: name.to_vec(), cookie };
        match bad {
            BadDir::Fault(f) => fault(f, "readdir"),
            BadDir::Huge => {
                let n = if plus { HUGE_LIST_PLUS } else { HUGE_LIST };
                let mut v = Vec::with_capacity(n as usize);
                v.extend((0..n).map(|i| DirEntry {
                    ino: FAKE_INO + i,
                    kind: FileType::Regular,
                    name: Vec::new(),
                    cookie: i + 1,
                }));
                v
            }
            BadDir::Overfull => (0..=u64::from(max))
                .map(|i| entry(format!("e{}", cookie + i + 1).as_bytes(), FAKE_INO + cookie + i, cookie + i + 1))
                .collect(),
            BadDir::CookieSame if cookie != 0 => vec![entry(b"again", FAKE_INO + 1, cookie)],
            BadDir::CookieSame => vec![entry(b"first", FAKE_INO, 7)],
            BadDir::Endless => (1..=u64::from(max))
                .map(|i| entry(format!("e{}", cookie + i).as_bytes(), FAKE_INO + cookie + i, cookie + i))
                .collect(),
            BadDir::CookieCycle => {
                let next = if cookie == 1 { 2 } else { 1 };
                vec![entry(format!("c{next}").as_bytes(), FAKE_INO + next, next)]
            }
            _ if cookie != 0 => Vec::new(),
            BadDir::NameSlash => vec![entry(b"a/b", FAKE_INO, 1)],
            BadDir::NameNul => vec![entry(b"a\0b", FAKE_INO, 1)],
            BadDir::NameDotDot => vec![entry(b"..", dir, 1)],
            BadDir::NameDot => vec![entry(b".", dir, 1)],
            BadDir::NameEmpty => vec![entry(b"", FAKE_INO, 1)],
            BadDir::NameLong => vec![entry(&[b'n'; 1025], FAKE_INO, 1)],
            BadDir::InoZero => vec![entry(b"zero", 0, 1)],
            BadDir::CookieZero => vec![entry(b"zero-cookie", FAKE_INO, 0)],
        }
    }

    /// A write's mapping for a trick file (the file's own first block,
    /// where one is needed, from hello).
    fn bad_write_map(
        &mut self,
        ino: Ino,
        bad: BadWrite,
        offset: u64,
        length: u64,
        flags: IomapFlags,
    ) -> Result<Vec<Mapping>> {
        let bs = self.block_size;
        let at = offset - offset % bs;
        Ok(match bad {
            BadWrite::PastEnd => {
                let end = self.device_size.div_ceil(bs) * bs;
                vec![Mapping { offset: at, length: bs, kind: MappingKind::Mapped(end) }]
            }
            BadWrite::Unaligned => {
                let mut own = self.hello.iomap_begin(ino, offset, length, flags)?;
                for m in &mut own {
                    if let MappingKind::Mapped(dev) = &mut m.kind {
                        *dev += 1;
                    }
                }
                own
            }
            BadWrite::Misses => {
                let own = self.hello.iomap_begin(ino, offset, length, flags)?;
                let first = own.first().ok_or_else(|| Error::invalid("evil: hello mapped nothing"))?;
                let kind = first.kind.clone();
                vec![Mapping { offset: at + bs, length: bs, kind }]
            }
            BadWrite::Hole => vec![Mapping { offset: at, length: bs, kind: MappingKind::Hole }],
            BadWrite::Inline => {
                vec![Mapping { offset: at, length: bs, kind: MappingKind::Inline(vec![0x5a; bs as usize]) }]
            }
            BadWrite::OneBlock => {
                let own = self.hello.iomap_begin(ino, offset, length, flags)?;
                let first = own.first().ok_or_else(|| Error::invalid("evil: hello mapped nothing"))?;
                let kind = match first.kind {
                    MappingKind::Mapped(dev) => MappingKind::Mapped(dev + (at - first.offset)),
                    ref other => other.clone(),
                };
                vec![Mapping { offset: at, length: bs, kind }]
            }
            BadWrite::IoendSize | BadWrite::CreateOther | BadWrite::Forgetful => {
                self.hello.iomap_begin(ino, offset, length, flags)?
            }
        })
    }

    fn bad_map(&mut self, ino: Ino, bad: BadMap, offset: u64, length: u64, flags: IomapFlags) -> Result<Vec<Mapping>> {
        let bs = self.block_size;
        let at = offset - offset % bs;
        let hole = |offset, length| Mapping { offset, length, kind: MappingKind::Hole };
        Ok(match bad {
            BadMap::Fault(f) => fault(f, "iomap-begin"),
            BadMap::TinyHoles => vec![hole(offset, 1)],
            BadMap::PastEnd => {
                let end = self.device_size.div_ceil(bs) * bs;
                vec![Mapping { offset: at, length: bs, kind: MappingKind::Mapped(end) }]
            }
            BadMap::Unaligned | BadMap::Overlap | BadMap::Gap => {
                let mut good = self.hello.iomap_begin(ino, offset, length, flags)?;
                let first = good.first_mut().ok_or_else(|| Error::invalid("evil: hello mapped nothing"))?;
                let end = first.offset + first.length;
                match bad {
                    BadMap::Unaligned => {
                        if let MappingKind::Mapped(dev) = &mut first.kind {
                            *dev += 1;
                        }
                        good
                    }
                    BadMap::Overlap => vec![first.clone(), hole(end - bs, 2 * bs)],
                    _ => vec![first.clone(), hole(end + bs, bs)],
                }
            }
            BadMap::Overflow => vec![hole(at, u64::MAX)],
            BadMap::Empty => Vec::new(),
            BadMap::Misses => vec![hole(at + (1 << 30), bs)],
            BadMap::ZeroLength => vec![hole(at, 0)],
            BadMap::InlineShort => vec![Mapping { offset: at, length: bs, kind: MappingKind::Inline(vec![1, 2, 3]) }],
            BadMap::Many => {
                let mut v = Vec::with_capacity(MANY_MAPS as usize);
                v.extend((0..MANY_MAPS).map(|i| hole(at + i * bs, bs)));
                v
            }
        })
    }
}

impl Filesystem for Evil {
    fn mount(device: Device, options: &MountOptions) -> Result<Self> {
        let mount_trick = match options.get("evil") {
            Some(v) => Some(MountTrick::from_option(v).ok_or_else(|| Error::invalid(format!("unknown -o evil={v}")))?),
            None => None,
        };
        match mount_trick {
            Some(MountTrick::Loop) => fault(Fault::Spin, "mount"),
            Some(MountTrick::Panic) => fault(Fault::Panic, "mount"),
            Some(MountTrick::Fail) => return Err(Error::corrupted("evil: this mount always fails")),
            Some(MountTrick::WriteWhenReadOnly) if options.read_only => {
                let answer = try_write();
                fshost_sdk::warn!("evil: a read-only instance's device write answered {answer:?}");
            }
            Some(MountTrick::BadInfo | MountTrick::RefuseWrite | MountTrick::WriteWhenReadOnly) | None => {}
        }
        let device_size = device.size();
        let mut hello = Hello::mount(device, options)?;
        let block_size = u64::from(hello.info()?.block_size);
        let tricks = Self::walk(&mut hello)?;
        Ok(Evil {
            hello,
            device_size,
            block_size,
            tricks,
            mount_trick,
            flaky_calls: 0,
            writing: false,
            kept: HashMap::new(),
        })
    }

    fn info(&mut self) -> Result<FsInfo> {
        let mut info = self.hello.info()?;
        if self.mount_trick == Some(MountTrick::BadInfo) {
            info.block_size = 3;
        }
        Ok(info)
    }

    fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        let attr = self.hello.getattr(ino)?;
        self.apply_attr(attr)
    }

    fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let attr = self.hello.lookup(parent, name)?;
        self.apply_attr(attr)
    }

    fn readdir(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>> {
        match self.trick(ino) {
            Some(Trick::Dir(bad)) => Ok(self.bad_dir(ino, bad, cookie, max, false)),
            _ => self.hello.readdir(ino, cookie, max),
        }
    }

    fn readdirplus(&mut self, ino: Ino, cookie: u64, max: u32) -> Result<Vec<(DirEntry, Attr)>> {
        if let Some(Trick::Dir(bad)) = self.trick(ino) {
            // Made-up entries get the directory's attributes under their own
            // inode number, so the host judges the entries themselves.
            let template = self.hello.getattr(ino)?;
            let entries = self.bad_dir(ino, bad, cookie, max, true);
            return Ok(entries
                .into_iter()
                .map(|e| {
                    let attr = Attr { ino: e.ino, kind: e.kind, ..template.clone() };
                    (e, attr)
                })
                .collect());
        }
        let entries = self.readdir(ino, cookie, max)?;
        entries
            .into_iter()
            .map(|e| {
                let attr = self.getattr(e.ino)?;
                Ok((e, attr))
            })
            .collect()
    }

    fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        match self.trick(ino) {
            Some(Trick::Link(BadLink::Empty)) => Ok(Vec::new()),
            Some(Trick::Link(BadLink::Nul)) => Ok(b"a\0b".to_vec()),
            Some(Trick::Link(BadLink::Huge)) => Ok(vec![b'a'; 1 << 20]),
            _ => self.hello.readlink(ino),
        }
    }

    fn listxattr(&mut self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        match self.trick(ino) {
            Some(Trick::Xattr(BadXattr::BadNames)) => Ok(vec![b"user.ok".to_vec(), b"user.b\0ad".to_vec()]),
            Some(Trick::Xattr(_)) => Ok(vec![b"user.evil".to_vec()]),
            _ => self.hello.listxattr(ino),
        }
    }

    fn getxattr(&mut self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        let Some(Trick::Xattr(bad)) = self.trick(ino) else { return self.hello.getxattr(ino, name) };
        match bad {
            BadXattr::Huge => Ok(vec![0x5a; HUGE_XATTR]),
            BadXattr::OutOfMemory => Ok(std::hint::black_box(vec![0x5a; OOM_XATTR])),
            BadXattr::Flaky => {
                self.flaky_calls += 1;
                if self.flaky_calls.is_multiple_of(2) {
                    trap();
                }
                Ok(b"flaky-ok".to_vec())
            }
            BadXattr::Writer => Ok(match try_write() {
                Ok(()) => b"wrote".to_vec(),
                Err(why) => format!("refused: {why}").into_bytes(),
            }),
            BadXattr::BadNames => Err(ErrorCode::NoData.into()),
            BadXattr::LogFlood => {
                let line = "evil: flood ".repeat(4096 / 12);
                loop {
                    fshost_sdk::error!("{line}");
                }
            }
        }
    }

    fn iomap_begin(&mut self, ino: Ino, offset: u64, length: u64, flags: IomapFlags) -> Result<Vec<Mapping>> {
        if flags.write && !self.writing {
            return Err(Error::new(ErrorCode::ReadOnly, "evil: a write before begin-write in this instance"));
        }
        match self.trick(ino) {
            Some(Trick::Map(bad)) => self.bad_map(ino, bad, offset, length, flags),
            Some(Trick::Write(bad)) if flags.write => self.bad_write_map(ino, bad, offset, length, flags),
            // hello cannot allocate: a write is mapped onto the blocks the
            // file has (a hole stays a hole, which the host refuses).
            _ => self.hello.iomap_begin(ino, offset, length, flags),
        }
    }

    // ---- The write half: evil writes nothing itself. It agrees to write,
    // maps writes onto the blocks hello's files already have, and lies
    // where its tricks say.

    fn begin_write(&mut self) -> std::result::Result<(), String> {
        if self.mount_trick == Some(MountTrick::RefuseWrite) {
            let mut sentence = String::from("evil refuses:\x1b[31m\n\tred\r\x07 ");
            sentence.push_str(&"and on ".repeat(200));
            return Err(sentence);
        }
        self.writing = true;
        Ok(())
    }

    fn ioend(&mut self, ino: Ino, offset: u64, written: u64, _time: Timestamp) -> Result<u64> {
        if !self.writing {
            return Err(Error::new(ErrorCode::ReadOnly, "evil: ioend before begin-write in this instance"));
        }
        let size = self.hello.getattr(ino)?.size;
        let end = offset.checked_add(written).ok_or_else(|| Error::invalid("evil: ioend overflows"))?;
        let size = size.max(end);
        match self.trick(ino) {
            Some(Trick::Write(BadWrite::IoendSize)) => Ok(size + (1 << 20)),
            _ => Ok(size),
        }
    }

    fn fsync(&mut self, _ino: Ino, _datasync: bool) -> Result<()> {
        Ok(())
    }

    fn syncfs(&mut self) -> Result<()> {
        Ok(())
    }

    fn evict(&mut self, _ino: Ino) -> Result<()> {
        Ok(())
    }

    fn unmount(&mut self) -> Result<()> {
        Ok(())
    }

    fn setattr(&mut self, ino: Ino, changes: &AttrChanges) -> Result<Attr> {
        let only_perm = AttrChanges { perm: changes.perm, ctime: changes.ctime, ..AttrChanges::default() };
        match (self.trick(ino), changes.perm) {
            (Some(Trick::Write(BadWrite::Forgetful)), Some(perm)) if *changes == only_perm => {
                self.kept.insert(ino, perm);
                self.getattr(ino)
            }
            _ => Err(ErrorCode::ReadOnly.into()),
        }
    }

    fn create(&mut self, parent: Ino, name: &[u8], new: &NewInode) -> Result<Attr> {
        if self.trick(parent) != Some(Trick::Write(BadWrite::CreateOther)) {
            return Err(ErrorCode::ReadOnly.into());
        }
        let victim = self.hello.lookup(parent, b"victim")?;
        let _ = name;
        Ok(Attr {
            kind: new.kind,
            perm: new.perm,
            uid: new.uid,
            gid: new.gid,
            size: 0,
            nlink: 1,
            atime: new.time,
            mtime: new.time,
            ctime: new.time,
            ..victim
        })
    }
}

fshost_sdk::export!(Evil);
