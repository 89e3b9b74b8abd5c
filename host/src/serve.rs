//! Service mode (`fshost serve`): a privileged front end opens and mounts,
//! an unprivileged server that was confined before it read anything serves.
//!
//! `fshost mount` sandboxes itself *after* set-up: it opens the device and
//! /dev/fuse, compiles the guest and lets the guest's `mount` parse the
//! image as root, then drops everything (sandbox.rs). Service mode moves the
//! sandbox point to the start of the process that touches the image:
//!
//! 1. the front end ([`front`], root) forks the server while it has one
//!    thread and nothing open but a SOCK_SEQPACKET socketpair; the child
//!    closes every other fd and, as its first act, confines itself
//!    ([`crate::sandbox::server::confine_server`]): no_new_privs, the
//!    unprivileged ids (`--user`/`--group`, default nobody), no capability
//!    in any set, not dumpable, Landlock with no rule (on its only thread,
//!    so on all it will start), and a seccomp allow-list on that thread that
//!    every later thread inherits — no `open`, `execve`, `socket`,
//!    `connect` or `ptrace`, ever;
//! 2. the front end opens the guest's .wasm, the source (read-only; a
//!    block device with O_EXCL) and /dev/fuse, makes the mount(2) call
//!    (type fuse.fshost, nosuid, nodev, ro, `user_id=0`) and sends the three
//!    fds with a JSON header ([`wire`]), then closes its copies;
//! 3. the server ([`server`]) reads the guest from its fd and compiles it
//!    (the set-up list still allows executable mappings and thread
//!    creation), then stacks the serving list on every thread (no
//!    executable mapping, no `recvmsg`, no new fd), and only then lets the
//!    guest's `mount` read the image, answers FUSE_INIT and serves;
//! 4. the front end, told that the server serves, keeps CAP_SYS_ADMIN alone
//!    under a small seccomp list and waits: SIGINT/SIGTERM/SIGHUP unmount
//!    (the server then ends), a server that dies has its dead mount removed.
//!
//! Without `--foreground` the front end detaches first and the command
//! returns once the server serves (what `mount -t fshost -o service` runs).
//! With `--socket PATH` the server is not forked but is the one a socket
//! unit (dist/systemd/fshost.socket, `fshost serve-fds`) starts for the
//! connection, as a systemd DynamicUser with no capabilities; the front end
//! returns once it serves, and `umount` ends the server.
//!
//! Nothing that parses image bytes runs before the filter is on: before
//! step 3's guest `mount`, the only reads of the source are the front
//! end's `Device::open` (fstat, and the size ioctls of a block device).

pub mod front;
pub mod server;
pub mod wire;
