//! What the front end and the server say to each other over their
//! SOCK_SEQPACKET socket: one request (a JSON header and three fds:
//! the device, the mounted /dev/fuse and the guest's .wasm) and one answer
//! (`ok`, or `error: ` and the reason in words). A packet socket keeps
//! each message whole; a request's fds arrive with its header or not at all.
//!
//! Only root can reach a server (a forked child's socketpair, or a socket
//! unit with SocketMode=0600), but the server still checks every field: a
//! bad request is an error, never a panic.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, bail};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde_json::{Value, json};

/// The largest header: far more than any request needs.
const MAX_HEADER: usize = 64 * 1024;
/// Bumped when the request changes; a server refuses another.
const VERSION: u64 = 1;

/// What the server is asked to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The source as the user named it (for messages and logs).
    pub source: String,
    /// The guest's path (for messages).
    pub plugin: String,
    /// The device's size and sector size, as the front end's open found them.
    pub size: u64,
    pub sector_size: u32,
    /// Options for the guest's `mount`.
    pub guest_options: Vec<(String, String)>,
    pub timeout_ms: u64,
    pub memory_mib: usize,
    /// A background `fshost serve`: once it serves, the server points its
    /// standard output and error at its standard input (/dev/null), so the
    /// command that started it is not kept waiting on a pipe.
    pub detach: bool,
}

/// The fds that go with a request, in this order on the wire.
pub struct Fds {
    pub device: OwnedFd,
    pub fuse: OwnedFd,
    pub guest: OwnedFd,
}

impl Request {
    fn to_json(&self) -> Vec<u8> {
        let options: Vec<Value> = self.guest_options.iter().map(|(k, v)| json!([k, v])).collect();
        json!({
            "version": VERSION,
            "source": self.source,
            "plugin": self.plugin,
            "size": self.size,
            "sector_size": self.sector_size,
            "guest_options": options,
            "timeout_ms": self.timeout_ms,
            "memory_mib": self.memory_mib,
            "detach": self.detach,
        })
        .to_string()
        .into_bytes()
    }

    fn from_json(bytes: &[u8]) -> anyhow::Result<Request> {
        let v: Value = serde_json::from_slice(bytes).context("the request is not JSON")?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64).with_context(|| format!("the request has no number {k}"));
        let text = |k: &str| {
            v.get(k).and_then(Value::as_str).map(str::to_string).with_context(|| format!("the request has no {k}"))
        };
        if num("version")? != VERSION {
            bail!("the request is version {}, this server speaks {VERSION}", num("version")?);
        }
        let mut guest_options = Vec::new();
        for pair in v.get("guest_options").and_then(Value::as_array).context("the request has no guest_options")? {
            match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(k), Value::String(val)]) => guest_options.push((k.clone(), val.clone())),
                _ => bail!("a guest option is not a [name, value] pair of strings"),
            }
        }
        let sector_size = u32::try_from(num("sector_size")?).context("sector_size out of range")?;
        if !sector_size.is_power_of_two() || !(512..=65536).contains(&sector_size) {
            bail!("sector size {sector_size} is not a power of two from 512 to 65536");
        }
        Ok(Request {
            source: text("source")?,
            plugin: text("plugin")?,
            size: num("size")?,
            sector_size,
            guest_options,
            timeout_ms: num("timeout_ms")?,
            memory_mib: usize::try_from(num("memory_mib")?).context("memory_mib out of range")?,
            detach: v.get("detach").and_then(Value::as_bool).context("the request has no detach")?,
        })
    }
}

/// Send `request` with its fds.
pub fn send(sock: BorrowedFd<'_>, request: &Request, fds: [BorrowedFd<'_>; 3]) -> anyhow::Result<()> {
    let header = request.to_json();
    let raw: [RawFd; 3] = fds.map(|f| f.as_raw_fd());
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [std::io::IoSlice::new(&header)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context("sending the fds to the server")?;
    if sent != header.len() {
        bail!("sent {sent} of the request's {} bytes", header.len());
    }
    Ok(())
}

/// Receive one request; `None` when the front end closed the socket first.
pub fn recv(sock: BorrowedFd<'_>) -> anyhow::Result<Option<(Request, Fds)>> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .context("receiving the request")?;
    // Take ownership of every fd that arrived first, so that a bad request
    // closes them all.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs().context("reading the request's control data")? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: SCM_RIGHTS installed these fds in this process just now;
            // nothing else owns them.
            fds.extend(got.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let (len, truncated) = (msg.bytes, msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC));
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        bail!("the request was cut short (more than {MAX_HEADER} bytes or 3 fds)");
    }
    let request = Request::from_json(&buf[..len])?;
    let Ok([device, fuse, guest]) = <[OwnedFd; 3]>::try_from(fds) else {
        bail!("the request did not come with exactly three fds (device, /dev/fuse, guest)");
    };
    Ok(Some((request, Fds { device, fuse, guest })))
}

/// The server's answer.
pub fn answer(sock: BorrowedFd<'_>, result: &Result<(), String>) {
    let text = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    };
    // Plain write: the serving filter has no sendmsg. Nothing to do if the
    // front end is gone.
    let _ = nix::unistd::write(sock, text.as_bytes());
}

/// Wait for the server's answer; an error in words when it failed or ended.
pub fn read_answer(sock: BorrowedFd<'_>) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_HEADER];
    match nix::unistd::read(sock, &mut buf) {
        Ok(0) => Err("the server ended before it served".into()),
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            match text.strip_prefix("error: ") {
                Some(e) => Err(e.to_string()),
                None if text == "ok" => Ok(()),
                None => Err(format!("the server answered {text:?}")),
            }
        }
        Err(e) => Err(format!("reading the server's answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            source: "/srv/disk.img".into(),
            plugin: "/usr/lib/fshost/plugins/ext4.wasm".into(),
            size: 1 << 30,
            sector_size: 4096,
            guest_options: vec![("norecovery".into(), String::new()), ("sb".into(), "8193".into())],
            timeout_ms: 1000,
            memory_mib: 256,
            detach: true,
        }
    }

    #[test]
    fn a_request_goes_over_a_socketpair_with_its_fds() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        send(a.as_fd(), &request(), [file.as_fd(), file.as_fd(), file.as_fd()]).unwrap();
        let (got, fds) = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(got, request());
        assert_ne!(fds.guest.as_raw_fd(), file.as_raw_fd());
        answer(b.as_fd(), &Err("no such guest".into()));
        assert_eq!(read_answer(a.as_fd()), Err("no such guest".into()));
        drop(a);
        assert!(recv(b.as_fd()).unwrap().is_none(), "a closed socket is no request");
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(Request::from_json(b"{").is_err());
        let mut v: Value = serde_json::from_slice(&request().to_json()).unwrap();
        v["sector_size"] = json!(1000);
        assert!(Request::from_json(v.to_string().as_bytes()).is_err());
        v["sector_size"] = json!(512);
        v["guest_options"] = json!([["a"]]);
        assert!(Request::from_json(v.to_string().as_bytes()).is_err());
        v["guest_options"] = json!([]);
        v["version"] = json!(2);
        assert!(Request::from_json(v.to_string().as_bytes()).is_err());
    }
}
