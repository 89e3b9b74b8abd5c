//! What cp-out's reader asks its writer to do, and the answers, as bytes
//! on two pipes. The writer trusts nothing in a request: a name is checked
//! to be one path component where it is used, and every length is bounded
//! before anything is allocated.

use std::io::{self, Read, Write};

/// The largest request: a 1 MiB data chunk, or a name or target, plus
/// framing.
pub const MAX_REQUEST: usize = (1 << 20) + 64;

/// Mode and times of an object, set through its fd once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub perm: u16,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
}

/// A request from the reader. Names are one component each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// DEST itself, made before the writer's sandbox point.
    TopDir,
    TopFile,
    TopSymlink {
        target: Vec<u8>,
    },
    TopFifo {
        meta: Meta,
    },
    /// Create a directory in the current one and enter it.
    Dir {
        name: Vec<u8>,
    },
    /// Set the current directory's mode and times and go back up (not for DEST's own: `Finish`).
    Leave {
        meta: Meta,
    },
    /// Create a regular file in the current directory; it is the open file.
    File {
        name: Vec<u8>,
    },
    /// Bytes of the open file at an offset. No answer: a failure is
    /// answered at `Close`.
    Data {
        at: u64,
        bytes: Vec<u8>,
    },
    /// The open file is complete: size, mode and times; `link` is the
    /// inode number its other names will ask for (0: no other name).
    Close {
        size: u64,
        meta: Meta,
        link: u64,
    },
    /// The open file cannot be read whole: remove it.
    Abort,
    Symlink {
        name: Vec<u8>,
        target: Vec<u8>,
        link: u64,
    },
    Fifo {
        name: Vec<u8>,
        meta: Meta,
        link: u64,
    },
    /// Another name, in the current directory, for the object remembered as `link`.
    Link {
        link: u64,
        name: Vec<u8>,
    },
    /// DEST's mode and times (a directory, or the one file after `Close`).
    Finish {
        meta: Meta,
    },
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_meta(out: &mut Vec<u8>, m: &Meta) {
    out.extend_from_slice(&m.perm.to_le_bytes());
    for (s, ns) in [m.atime, m.mtime] {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&ns.to_le_bytes());
    }
}

impl Request {
    /// Whether the writer answers this request.
    pub fn answered(&self) -> bool {
        !matches!(self, Request::Data { .. })
    }

    /// The framed bytes: length (u32), tag, fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0];
        match self {
            Request::TopDir => b.push(1),
            Request::TopFile => b.push(2),
            Request::TopSymlink { target } => {
                b.push(3);
                put_bytes(&mut b, target);
            }
            Request::TopFifo { meta } => {
                b.push(4);
                put_meta(&mut b, meta);
            }
            Request::Dir { name } => {
                b.push(5);
                put_bytes(&mut b, name);
            }
            Request::Leave { meta } => {
                b.push(6);
                put_meta(&mut b, meta);
            }
            Request::File { name } => {
                b.push(7);
                put_bytes(&mut b, name);
            }
            Request::Data { at, bytes } => {
                b.push(8);
                b.extend_from_slice(&at.to_le_bytes());
                put_bytes(&mut b, bytes);
            }
            Request::Close { size, meta, link } => {
                b.push(9);
                b.extend_from_slice(&size.to_le_bytes());
                put_meta(&mut b, meta);
                b.extend_from_slice(&link.to_le_bytes());
            }
            Request::Abort => b.push(10),
            Request::Symlink { name, target, link } => {
                b.push(11);
                put_bytes(&mut b, name);
                put_bytes(&mut b, target);
                b.extend_from_slice(&link.to_le_bytes());
            }
            Request::Fifo { name, meta, link } => {
                b.push(12);
                put_bytes(&mut b, name);
                put_meta(&mut b, meta);
                b.extend_from_slice(&link.to_le_bytes());
            }
            Request::Link { link, name } => {
                b.push(13);
                b.extend_from_slice(&link.to_le_bytes());
                put_bytes(&mut b, name);
            }
            Request::Finish { meta } => {
                b.push(14);
                put_meta(&mut b, meta);
            }
        }
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
        b
    }

    /// Read one request; `None` at the end of the stream.
    pub fn read(from: &mut impl Read) -> io::Result<Option<Request>> {
        let mut len = [0u8; 4];
        match from.read_exact(&mut len) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            r => r?,
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_REQUEST {
            return Err(invalid("request length out of range"));
        }
        let mut buf = vec![0u8; len];
        from.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => invalid("the reader ended in the middle of a request"),
            _ => e,
        })?;
        let mut f = Fields(&buf[1..]);
        let req = match buf[0] {
            1 => Request::TopDir,
            2 => Request::TopFile,
            3 => Request::TopSymlink { target: f.bytes()? },
            4 => Request::TopFifo { meta: f.meta()? },
            5 => Request::Dir { name: f.bytes()? },
            6 => Request::Leave { meta: f.meta()? },
            7 => Request::File { name: f.bytes()? },
            8 => Request::Data { at: f.u64()?, bytes: f.bytes()? },
            9 => Request::Close { size: f.u64()?, meta: f.meta()?, link: f.u64()? },
            10 => Request::Abort,
            11 => Request::Symlink { name: f.bytes()?, target: f.bytes()?, link: f.u64()? },
            12 => Request::Fifo { name: f.bytes()?, meta: f.meta()?, link: f.u64()? },
            13 => Request::Link { link: f.u64()?, name: f.bytes()? },
            14 => Request::Finish { meta: f.meta()? },
            _ => return Err(invalid("unknown request")),
        };
        if !f.0.is_empty() {
            return Err(invalid("trailing bytes in a request"));
        }
        Ok(Some(req))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cp-out writer: {what}"))
}

struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(invalid("truncated request"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| invalid("u64"))?))
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| invalid("u32"))?))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn meta(&mut self) -> io::Result<Meta> {
        let perm = u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| invalid("u16"))?);
        let mut time = || -> io::Result<(i64, u32)> { Ok((self.u64()? as i64, self.u32()?)) };
        let atime = time()?;
        let mtime = time()?;
        Ok(Meta { perm, atime, mtime })
    }
}

/// The writer's answer: done, or why not (one line, for the reader to report).
pub fn write_answer(to: &mut impl Write, answer: &Result<(), String>) -> io::Result<()> {
    let mut b = Vec::new();
    match answer {
        Ok(()) => b.push(0),
        Err(e) => {
            b.push(1);
            let e = &e.as_bytes()[..e.len().min(4096)];
            put_bytes(&mut b, e);
        }
    }
    to.write_all(&b)?;
    to.flush()
}

pub fn read_answer(from: &mut impl Read) -> io::Result<Result<(), String>> {
    let mut tag = [0u8; 1];
    from.read_exact(&mut tag)?;
    if tag[0] == 0 {
        return Ok(Ok(()));
    }
    let mut len = [0u8; 4];
    from.read_exact(&mut len)?;
    let len = (u32::from_le_bytes(len) as usize).min(4096);
    let mut buf = vec![0u8; len];
    from.read_exact(&mut buf)?;
    Ok(Err(String::from_utf8_lossy(&buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        let meta = Meta { perm: 0o1755, atime: (-86_400, 5), mtime: (1_700_000_000, 999_999_999) };
        let all = [
            Request::TopDir,
            Request::TopFile,
            Request::TopSymlink { target: b"/etc".to_vec() },
            Request::TopFifo { meta },
            Request::Dir { name: b"d".to_vec() },
            Request::Leave { meta },
            Request::File { name: b"f".to_vec() },
            Request::Data { at: 1 << 40, bytes: vec![7; 3] },
            Request::Close { size: 9, meta, link: 12 },
            Request::Abort,
            Request::Symlink { name: b"s".to_vec(), target: b"../x".to_vec(), link: 0 },
            Request::Fifo { name: b"p".to_vec(), meta, link: 3 },
            Request::Link { link: 12, name: b"h".to_vec() },
            Request::Finish { meta },
        ];
        let stream: Vec<u8> = all.iter().flat_map(Request::encode).collect();
        let mut r = stream.as_slice();
        for want in &all {
            assert_eq!(Request::read(&mut r).unwrap().as_ref(), Some(want));
        }
        assert_eq!(Request::read(&mut r).unwrap(), None);
        for bad in [&[0u8, 0, 0, 0][..], &[1, 0, 0, 0, 99], &[255, 255, 255, 255], &[5, 0, 0, 0, 5, 9, 0, 0, 0]] {
            assert!(Request::read(&mut &bad[..]).is_err(), "{bad:?}");
        }
    }
}
