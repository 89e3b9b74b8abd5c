//! Write hellofs images (native only): what tests and the sample use.
//!
//! ```
//! use hello::image::Builder;
//! let mut b = Builder::new(4096, b"sample");
//! let docs = b.dir(b.root(), b"docs");
//! b.file(docs, b"readme.txt", b"hello\n");
//! b.symlink(b.root(), b"link", b"docs/readme.txt");
//! let bytes = b.build();
//! assert_eq!(&bytes[..8], b"FSHOSTH1");
//! ```

use crate::format::{EXTENT_SIZE, INODE_SIZE, MAGIC};

/// A file's data extent: `(file_offset, bytes)`; gaps between are holes.
pub type Chunk = (u64, Vec<u8>);

struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    rdev: u64,
    size: u64,
    kind: Payload,
    nlink: u32,
}

enum Payload {
    Dir(Vec<(u32, Vec<u8>)>),
    File(Vec<Chunk>),
    Symlink(Vec<u8>),
    Special,
}

/// Builds an image in memory. Inode numbers are handed out in creation
/// order, starting with the root at 1.
pub struct Builder {
    block_size: u64,
    label: Vec<u8>,
    nodes: Vec<Node>,
}

impl Builder {
    /// An image with block size `block_size` and volume label `label`.
    pub fn new(block_size: u32, label: &[u8]) -> Self {
        let root = Node {
            mode: 0o040755,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            rdev: 0,
            size: 0,
            kind: Payload::Dir(Vec::new()),
            nlink: 2,
        };
        Builder { block_size: u64::from(block_size), label: label.to_vec(), nodes: vec![root] }
    }

    /// The root directory's inode number.
    pub fn root(&self) -> u32 {
        1
    }

    fn add(&mut self, parent: u32, name: &[u8], node: Node) -> u32 {
        let is_dir = matches!(node.kind, Payload::Dir(_));
        self.nodes.push(node);
        let ino = self.nodes.len() as u32;
        self.link(parent, name, ino);
        if is_dir {
            self.nodes[parent as usize - 1].nlink += 1;
        }
        ino
    }

    /// Add a hard link `name` in `parent` to existing inode `ino`.
    pub fn link(&mut self, parent: u32, name: &[u8], ino: u32) {
        match &mut self.nodes[parent as usize - 1].kind {
            Payload::Dir(entries) => entries.push((ino, name.to_vec())),
            _ => panic!("inode {parent} is not a directory"),
        }
        if ino as usize <= self.nodes.len() && !matches!(self.nodes[ino as usize - 1].kind, Payload::Dir(_)) {
            self.nodes[ino as usize - 1].nlink += 1;
        }
    }

    fn node(mode: u32, kind: Payload, size: u64) -> Node {
        let nlink = if matches!(kind, Payload::Dir(_)) { 2 } else { 0 };
        Node { mode, uid: 0, gid: 0, mtime: (1_700_000_000, 0), rdev: 0, size, kind, nlink }
    }

    /// Add directory `name` in `parent`.
    pub fn dir(&mut self, parent: u32, name: &[u8]) -> u32 {
        self.add(parent, name, Self::node(0o040755, Payload::Dir(Vec::new()), 0))
    }

    /// Add a regular file with contents `data`.
    pub fn file(&mut self, parent: u32, name: &[u8], data: &[u8]) -> u32 {
        let chunks = if data.is_empty() { vec![] } else { vec![(0, data.to_vec())] };
        self.sparse_file(parent, name, data.len() as u64, chunks)
    }

    /// Add a sparse regular file of `size` bytes whose data is `chunks`
    /// (each at a block-aligned file offset); everything else is a hole.
    pub fn sparse_file(&mut self, parent: u32, name: &[u8], size: u64, chunks: Vec<Chunk>) -> u32 {
        for (off, _) in &chunks {
            assert!(off % self.block_size == 0, "chunk offset {off} not block-aligned");
        }
        self.add(parent, name, Self::node(0o100644, Payload::File(chunks), size))
    }

    /// Add a symlink to `target`.
    pub fn symlink(&mut self, parent: u32, name: &[u8], target: &[u8]) -> u32 {
        self.add(parent, name, Self::node(0o120777, Payload::Symlink(target.to_vec()), target.len() as u64))
    }

    /// Add a device node, fifo or socket with full `mode` and `rdev`.
    pub fn special(&mut self, parent: u32, name: &[u8], mode: u32, rdev: u64) -> u32 {
        let mut node = Self::node(mode, Payload::Special, 0);
        node.rdev = rdev;
        self.add(parent, name, node)
    }

    /// Set owner, permission bits and mtime of `ino`.
    pub fn set_meta(&mut self, ino: u32, perm: u32, uid: u32, gid: u32, mtime: (i64, u32)) {
        let n = &mut self.nodes[ino as usize - 1];
        n.mode = (n.mode & !0o7777) | (perm & 0o7777);
        n.uid = uid;
        n.gid = gid;
        n.mtime = mtime;
    }

    fn align(&self, at: u64) -> u64 {
        at.div_ceil(self.block_size) * self.block_size
    }

    /// Lay out and serialise the image.
    pub fn build(&self) -> Vec<u8> {
        let bs = self.block_size;
        let table = bs;
        let mut img = vec![0u8; self.align(table + self.nodes.len() as u64 * INODE_SIZE) as usize];
        img[..8].copy_from_slice(MAGIC);
        img[8..12].copy_from_slice(&(bs as u32).to_le_bytes());
        img[12..16].copy_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        let label_len = self.label.len().min(32);
        img[16..16 + label_len].copy_from_slice(&self.label[..label_len]);
        img[48..56].copy_from_slice(&table.to_le_bytes());
        for (i, node) in self.nodes.iter().enumerate() {
            let (payload, count, size) = match &node.kind {
                Payload::Dir(entries) => {
                    let mut raw = Vec::new();
                    for (ino, name) in entries {
                        raw.extend_from_slice(&ino.to_le_bytes());
                        raw.extend_from_slice(&(name.len() as u16).to_le_bytes());
                        raw.extend_from_slice(&[0, 0]);
                        raw.extend_from_slice(name);
                    }
                    let at = img.len() as u64;
                    let len = raw.len() as u64;
                    img.extend_from_slice(&raw);
                    (at, entries.len() as u32, len)
                }
                Payload::File(chunks) => {
                    let mut extents = Vec::new();
                    for (off, data) in chunks {
                        let dev = self.align(img.len() as u64);
                        img.resize(dev as usize, 0);
                        img.extend_from_slice(data);
                        img.resize(self.align(img.len() as u64) as usize, 0);
                        extents.push((*off, self.align(data.len() as u64), dev));
                    }
                    let at = img.len() as u64;
                    for (off, len, dev) in &extents {
                        for v in [off, len, dev] {
                            img.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                    debug_assert_eq!(img.len() as u64, at + extents.len() as u64 * EXTENT_SIZE);
                    (at, extents.len() as u32, node.size)
                }
                Payload::Symlink(target) => {
                    let at = img.len() as u64;
                    img.extend_from_slice(target);
                    (at, 0, target.len() as u64)
                }
                Payload::Special => (0, 0, 0),
            };
            let rec = &mut img[(table + i as u64 * INODE_SIZE) as usize..][..INODE_SIZE as usize];
            rec[0..4].copy_from_slice(&node.mode.to_le_bytes());
            rec[4..8].copy_from_slice(&node.uid.to_le_bytes());
            rec[8..12].copy_from_slice(&node.gid.to_le_bytes());
            rec[12..16].copy_from_slice(&node.nlink.to_le_bytes());
            rec[16..24].copy_from_slice(&size.to_le_bytes());
            rec[24..32].copy_from_slice(&node.mtime.0.to_le_bytes());
            rec[32..36].copy_from_slice(&node.mtime.1.to_le_bytes());
            rec[36..40].copy_from_slice(&count.to_le_bytes());
            rec[40..48].copy_from_slice(&payload.to_le_bytes());
            rec[48..56].copy_from_slice(&node.rdev.to_le_bytes());
        }
        img.resize(self.align(img.len() as u64) as usize, 0);
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hello;
    use fshost_sdk::{Filesystem, MappingKind, MountOptions, testing};

    #[test]
    fn a_built_image_reads_back_through_the_guest() {
        let mut b = Builder::new(4096, b"t");
        let d = b.dir(b.root(), b"d");
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let f = b.file(d, b"f", &data);
        let img = b.build();
        let mut fs = Hello::mount(testing::memory_device(img.clone()), &MountOptions::default()).unwrap();
        assert_eq!(fs.lookup(1, b"d").unwrap().ino, u64::from(d));
        let attr = fs.lookup(u64::from(d), b"f").unwrap();
        assert_eq!((attr.ino, attr.size), (u64::from(f), 10_000));
        let maps = fs.iomap_begin(attr.ino, 0, 10_000, Default::default()).unwrap();
        let MappingKind::Mapped(at) = maps[0].kind else { panic!("expected a mapped extent, got {maps:?}") };
        assert_eq!(&img[at as usize..at as usize + 10_000], &data[..]);
        assert_eq!(fs.lookup(1, b"missing").unwrap_err().code(), fshost_sdk::ErrorCode::NotFound);
    }
}
