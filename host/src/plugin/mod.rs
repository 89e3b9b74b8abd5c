//! The plugin runtime: the one module that owns wasmtime.
//!
//! It compiles (or loads from [`cache`]) a guest component, instantiates it
//! with WASI that grants nothing (no preopens, no environment, no sockets)
//! plus the `block-device` and `log` imports, and calls it under the
//! [`Limits`]: a memory cap, a per-call wall-clock deadline (epoch
//! interruption) and bounds on every answer. Every answer is validated in
//! [`convert`] before the rest of the host sees it.
//!
//! A guest that traps, panics or overruns a limit costs the one operation:
//! the instance is dropped, the error is logged with the guest's backtrace
//! and stderr, and the next call starts a fresh instance and mounts again.
//! After `max_mount_failures` failed mounts in a row the filesystem is in a
//! failed state and every call fails at once.

mod bindings;
pub mod cache;
mod convert;
pub mod identity;
mod imports;
pub use imports::capture_warnings;
mod limits;
pub mod search;
pub mod volume;
mod write;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::device::Device;
use crate::error::FsError;
use crate::types::{Attr, DirEntry, FsInfo, Ino, Mapping};
use bindings::{WritableGuest, guest, types as wit, writer};
pub use cache::CompileCache;
pub use convert::{MAX_COOKIE, NAME_MAX};
pub use identity::{CONTRACT_VERSION, Identity};
pub use limits::Limits;

/// Per-instance state the imports see.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: wasmtime::StoreLimits,
    device: Arc<Device>,
    /// This instance was mounted read-write (and asked to begin-write): the
    /// only case in which its `block-device.write` reaches the device. A
    /// device opened read-write is not enough: detection mounts every
    /// candidate guest read-only on the same device.
    writable: bool,
    max_read: u32,
    max_write: u32,
    stderr: MemoryOutputPipe,
    log_budget: imports::LogBudget,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Options handed to the guest's `mount`.
#[derive(Debug, Clone, Default)]
pub struct GuestOptions {
    /// A read-only mount. When false, every instance is mounted
    /// read-write and must agree to `writer.begin-write` before it serves.
    pub read_only: bool,
    pub options: Vec<(String, String)>,
}

/// One running instance: its store and the exports the host calls.
struct Live {
    store: Store<State>,
    fs: guest::Guest,
    /// The write half, on read-write mounts.
    writer: Option<writer::Guest>,
}

/// Where each export lives in the component, found once at load.
struct Indices {
    fs: guest::GuestIndices,
    /// `None`: the guest does not export `writer` (read-only world).
    writer: Option<writer::GuestIndices>,
}

#[derive(Default)]
struct Slot {
    live: Option<Live>,
    mount_failures: u32,
    failed: Option<String>,
    info: Option<FsInfo>,
}

/// A loaded guest bound to one device: instantiated on demand, restarted
/// after failures. Calls are serialised (one instance).
pub struct Plugin {
    engine: Engine,
    pre: InstancePre<State>,
    indices: Indices,
    device: Arc<Device>,
    limits: Limits,
    options: GuestOptions,
    slot: Mutex<Slot>,
    /// Instances dropped after a failure (trap, deadline, memory).
    restarts: AtomicU64,
    stop_ticker: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

/// How long loading took, for `-v` and the benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct LoadStats {
    pub compiled: bool,
    pub millis: f64,
}

/// `wasm` as a component: from the compiled-guest cache, or compiled (and
/// then stored). The flag says it was compiled. Both guest kinds load so.
fn load_component(
    engine: &Engine,
    wasm: &[u8],
    path: &Path,
    cache: Option<&CompileCache>,
) -> anyhow::Result<(Component, bool)> {
    if let Some(c) = cache.and_then(|c| c.load(engine, wasm)) {
        return Ok((c, false));
    }
    let c = Component::new(engine, wasm)
        .map_err(|e| anyhow::anyhow!("{} is not a valid WebAssembly component: {e}", path.display()))?;
    if let Some(cache) = cache {
        cache.store(engine, wasm, &c);
    }
    Ok((c, true))
}

fn engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    Ok(Engine::new(&config)?)
}

impl Plugin {
    /// Load the guest at `path` for `device`, compiling it unless `cache`
    /// holds it already.
    pub fn load(
        path: &Path,
        device: Arc<Device>,
        limits: Limits,
        options: GuestOptions,
        cache: Option<&CompileCache>,
    ) -> anyhow::Result<(Self, LoadStats)> {
        let wasm = std::fs::read(path).with_context(|| format!("reading guest {}", path.display()))?;
        Self::load_bytes(&wasm, path, device, limits, options, cache)
    }

    /// As [`Plugin::load`], for a guest already read (`fshost serve`: from an
    /// fd, by a process that can open nothing); `path` names it in messages.
    pub fn load_bytes(
        wasm: &[u8],
        path: &Path,
        device: Arc<Device>,
        limits: Limits,
        options: GuestOptions,
        cache: Option<&CompileCache>,
    ) -> anyhow::Result<(Self, LoadStats)> {
        let started = Instant::now();
        // Refuse a component built for another contract before compiling it.
        Identity::read(wasm).and_then(|id| id.check()).map_err(|e| anyhow::anyhow!("{} {e}", path.display()))?;
        let engine = engine()?;
        let (component, compiled) = load_component(&engine, wasm, path, cache)?;
        // The memory images now (a memfd each), not at the first
        // instantiation: a process that serves may create no fd.
        component.initialize_copy_on_write_image()?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        WritableGuest::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| incompatible(path, &component, &engine, e))?;
        let fs = guest::GuestIndices::new(&pre).map_err(|e| incompatible(path, &component, &engine, e))?;
        // A read-only guest (world filesystem-guest) has no writer export:
        // it serves read-only mounts and is refused for read-write ones.
        let writer = writer::GuestIndices::new(&pre).ok();
        if !options.read_only && writer.is_none() {
            anyhow::bail!(
                "{} cannot write: it does not export fshost:plugin/writer@{CONTRACT_VERSION} (a read-only guest); \
                 mount read-only (without -o rw)",
                path.display()
            );
        }
        let indices = Indices { fs, writer: if options.read_only { None } else { writer } };

        // The ticker lives as long as the guest, and is joined when it is
        // dropped: detection drops the guests that refused before the
        // sandbox point, which checks that every thread has dropped its
        // capabilities.
        let (stop_ticker, ticker) = start_ticker(&engine)?;

        let stats = LoadStats { compiled, millis: started.elapsed().as_secs_f64() * 1000.0 };
        let slot = Mutex::new(Slot::default());
        let plugin = Plugin {
            engine,
            pre,
            indices,
            device,
            limits,
            options,
            slot,
            restarts: AtomicU64::new(0),
            stop_ticker,
            ticker: Some(ticker),
        };
        Ok((plugin, stats))
    }

    fn new_store(&self) -> Store<State> {
        new_store(&self.engine, &self.limits, &self.device, !self.options.read_only)
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock cannot leave a half-updated slot
        // that matters: the worst case is a live instance we then reuse.
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Instantiate and mount a fresh instance into `slot`.
    fn start(&self, slot: &mut Slot) -> Result<(), FsError> {
        if let Some(reason) = &slot.failed {
            return Err(FsError::Failed(reason.clone()));
        }
        let result = self.try_start();
        match result {
            Ok((live, info)) => {
                if let Some(previous) = &slot.info
                    && previous.root != info.root
                {
                    let reason = format!("guest restarted with root inode {} instead of {}", info.root, previous.root);
                    slot.failed = Some(reason.clone());
                    return Err(FsError::Failed(reason));
                }
                slot.mount_failures = 0;
                slot.info = Some(info);
                slot.live = Some(live);
                Ok(())
            }
            Err(e) => {
                slot.mount_failures += 1;
                if slot.mount_failures >= self.limits.max_mount_failures && slot.info.is_some() {
                    let reason = format!("{} mounts in a row failed, the last with: {e}", slot.mount_failures);
                    tracing::error!("{reason}");
                    slot.failed = Some(reason);
                }
                Err(e)
            }
        }
    }

    fn try_start(&self) -> Result<(Live, FsInfo), FsError> {
        const OP: &str = "mount";
        let mut store = self.new_store();
        self.arm(&mut store);
        let instance = self.pre.instantiate(&mut store).map_err(|e| failure(OP, e, &store))?;
        let fs = self.indices.fs.load(&mut store, &instance).map_err(|e| failure(OP, e, &store))?;
        let writer = match &self.indices.writer {
            Some(w) => Some(w.load(&mut store, &instance).map_err(|e| failure(OP, e, &store))?),
            None => None,
        };
        let opts = wit::MountOptions { read_only: self.options.read_only, options: self.options.options.clone() };
        self.arm(&mut store);
        let answer = fs.call_mount(&mut store, &opts);
        note_dropped_logs(OP, &store);
        let info = match answer {
            Ok(Ok(info)) => convert::info(OP, info)?,
            Ok(Err(code)) => return Err(FsError::Guest { op: OP, code: convert::code(code) }),
            Err(e) => return Err(failure(OP, e, &store)),
        };
        // A read-write mount: every instance, the first and each one after
        // a trap, agrees to write before it serves.
        if let Some(w) = &writer {
            const BEGIN: &str = "begin-write";
            self.arm(&mut store);
            let answer = w.call_begin_write(&mut store);
            note_dropped_logs(BEGIN, &store);
            match answer {
                Ok(Ok(())) => {}
                Ok(Err(sentence)) => return Err(FsError::WriteRefused(convert::refusal(&sentence))),
                Err(e) => return Err(failure(BEGIN, e, &store)),
            }
        }
        Ok((Live { store, fs, writer }, info))
    }

    /// Arm the per-call limits: the deadline and the log budget.
    fn arm(&self, store: &mut Store<State>) {
        store.set_epoch_deadline(self.limits.deadline_ticks());
        store.data_mut().log_budget.refill();
    }

    /// Mount: start an instance (if none runs) and return what it reported.
    pub fn mount(&self) -> Result<FsInfo, FsError> {
        let mut slot = self.lock();
        if slot.live.is_none() {
            self.start(&mut slot)?;
        }
        slot.info.clone().ok_or_else(|| FsError::Failed("mounted without filesystem info".into()))
    }

    /// Call into the guest with the limits armed; map traps to `GuestFailed`
    /// and drop the instance after one.
    fn call<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&guest::Guest, &mut Store<State>) -> wasmtime::Result<Result<T, wit::ErrorCode>>,
    ) -> Result<T, FsError> {
        self.call_live(op, |fs, _| Some(fs), f)
    }

    /// As [`Plugin::call`], into the export `pick` chooses from the
    /// instance's (`None`: the instance lacks it, which fails the call).
    fn call_live<G, T>(
        &self,
        op: &'static str,
        pick: for<'a> fn(&'a guest::Guest, Option<&'a writer::Guest>) -> Option<&'a G>,
        f: impl FnOnce(&G, &mut Store<State>) -> wasmtime::Result<Result<T, wit::ErrorCode>>,
    ) -> Result<T, FsError> {
        let mut slot = self.lock();
        if slot.live.is_none() {
            self.start(&mut slot)?;
        }
        let Some(live) = slot.live.as_mut() else {
            return Err(FsError::Failed("no guest instance".into()));
        };
        self.arm(&mut live.store);
        let Live { store, fs, writer } = live;
        let Some(export) = pick(fs, writer.as_ref()) else {
            return Err(FsError::Failed(format!("{op}: the guest instance has no writer")));
        };
        let answer = f(export, store);
        note_dropped_logs(op, store);
        match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(code)) => Err(FsError::Guest { op, code: convert::code(code) }),
            Err(e) => {
                let err = failure(op, e, store);
                slot.live = None;
                self.restarts.fetch_add(1, Ordering::AcqRel);
                Err(err)
            }
        }
    }

    /// How many instances were dropped after a failure so far: a read-write
    /// mount's caches may not survive one (the failed call may have changed
    /// part of what it meant to).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Acquire)
    }

    /// Filesystem-wide counters now.
    pub fn statfs(&self) -> Result<FsInfo, FsError> {
        let info = self.call("statfs", |g, s| g.call_statfs(s))?;
        convert::info("statfs", info)
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        let a = self.call("getattr", |g, s| g.call_getattr(s, ino.0))?;
        convert::attr("getattr", a, Some(ino))
    }

    /// Look `name` up in `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr, FsError> {
        convert::name("lookup", name).map_err(|_| FsError::Request {
            ino: parent,
            what: "lookup of an invalid name",
            errno: libc::EINVAL,
        })?;
        let a = self.call("lookup", |g, s| g.call_lookup_name(s, parent.0, name))?;
        convert::attr("lookup", a, None)
    }

    /// Up to `max` entries of `dir` after `cookie`.
    pub fn readdir(&self, dir: Ino, cookie: u64, max: u32) -> Result<Vec<DirEntry>, FsError> {
        let max = max.min(self.limits.max_dir_entries);
        let raw = self.call("readdir", |g, s| g.call_readdir(s, dir.0, cookie, max))?;
        convert::entries("readdir", raw, cookie, max)
    }

    /// Up to `max` entries of `dir` after `cookie`, with attributes.
    pub fn readdirplus(&self, dir: Ino, cookie: u64, max: u32) -> Result<Vec<(DirEntry, Attr)>, FsError> {
        let max = max.min(self.limits.max_dir_entries);
        let raw = self.call("readdirplus", |g, s| g.call_readdirplus(s, dir.0, cookie, max))?;
        let (entries, attrs): (Vec<_>, Vec<_>) = raw.into_iter().map(|p| (p.entry, p.attr)).unzip();
        let entries = convert::entries("readdirplus", entries, cookie, max)?;
        entries
            .into_iter()
            .zip(attrs)
            .map(|(e, a)| {
                let attr = convert::attr("readdirplus", a, Some(e.ino))?;
                Ok((e, attr))
            })
            .collect()
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>, FsError> {
        let target = self.call("readlink", |g, s| g.call_readlink(s, ino.0))?;
        if target.is_empty() || target.len() > 4096 * 16 || target.contains(&0) {
            return Err(FsError::Invalid {
                op: "readlink",
                reason: format!("inode {ino}: target of {} bytes", target.len()),
            });
        }
        Ok(target)
    }

    /// Names of the extended attributes of `ino`.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>, FsError> {
        let names = self.call("listxattr", |g, s| g.call_listxattr(s, ino.0))?;
        let total: usize = names.iter().map(|n| n.len() + 1).sum();
        if total > 65536 || names.iter().any(|n| n.is_empty() || n.len() > 255 || n.contains(&0)) {
            return Err(FsError::Invalid { op: "listxattr", reason: format!("inode {ino}: invalid xattr names") });
        }
        Ok(names)
    }

    /// The value of xattr `name` of `ino`.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>, FsError> {
        let value = self.call("getxattr", |g, s| g.call_getxattr(s, ino.0, name))?;
        if value.len() > self.limits.max_value.max(65536) {
            return Err(FsError::Invalid {
                op: "getxattr",
                reason: format!("inode {ino}: value of {} bytes", value.len()),
            });
        }
        Ok(value)
    }

    /// Validated mappings of `ino` starting with the one containing `offset`.
    pub fn iomap_begin(&self, ino: Ino, offset: u64, length: u64, report: bool) -> Result<Vec<Mapping>, FsError> {
        let flags = if report { wit::IomapFlags::REPORT } else { wit::IomapFlags::empty() };
        let raw = self.call("iomap-begin", |g, s| g.call_iomap_begin(s, ino.0, offset, length, flags))?;
        let block_size = self.lock().info.as_ref().map_or(512, |i| u64::from(i.block_size));
        let check = convert::MapCheck { ino, offset, device_size: self.device.size(), block_size };
        convert::mappings(raw, &check, &self.limits)
    }
}

/// Check that `name` is one valid path component (1..=1024 bytes, no
/// '/' or NUL, not "." or ".."), as every name the host passes a guest.
pub fn check_name(name: &[u8]) -> Result<(), FsError> {
    convert::name("name", name)
}

/// Start the thread that advances `engine`'s epoch every tick (the
/// per-call deadlines count ticks); it stops when the flag is set. Also
/// starts WASI's ambient Tokio runtime: the guest's stderr (a panic
/// message) is written through it, and once the host is sandboxed it could
/// not start.
fn start_ticker(engine: &Engine) -> anyhow::Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let stop_ticker = Arc::new(AtomicBool::new(false));
    let (ticker_engine, stop) = (engine.clone(), stop_ticker.clone());
    let handle = std::thread::Builder::new().name("fshost-epoch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            // Parked rather than asleep: a guest dropped in a hurry (an
            // image guest whose probe said no) unparks it to join at once.
            std::thread::park_timeout(limits::EPOCH_TICK);
            ticker_engine.increment_epoch();
        }
    })?;
    wasmtime_wasi::runtime::in_tokio(async {});
    Ok((stop_ticker, handle))
}

/// A store for one instance: WASI that grants nothing but an in-memory
/// stderr, the memory, table and instance limits, the device.
fn new_store(engine: &Engine, limits: &Limits, device: &Arc<Device>, writable: bool) -> Store<State> {
    let stderr = MemoryOutputPipe::new(1 << 20);
    let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
    let store_limits = StoreLimitsBuilder::new()
        .memory_size(limits.memory)
        .table_elements(limits.table_elements)
        .instances(limits.instances)
        .trap_on_grow_failure(true)
        .build();
    let state = State {
        wasi,
        table: ResourceTable::new(),
        limits: store_limits,
        device: device.clone(),
        writable,
        max_read: limits.max_read,
        max_write: limits.max_write,
        stderr,
        log_budget: imports::LogBudget::new(limits.log_messages_per_call, limits.log_bytes_per_call),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            // As VolumeGuest's: woken now rather than within a tick.
            ticker.thread().unpark();
            let _ = ticker.join();
        }
    }
}

/// Say how many log messages the guest's last call lost to its budget.
fn note_dropped_logs(op: &'static str, store: &Store<State>) {
    let dropped = store.data().log_budget.dropped();
    if dropped > 0 {
        tracing::warn!(target: "fshost::guest", "{op}: dropped {dropped} guest log messages over the per-call budget");
    }
}

/// Describe a trap: the error chain with the guest's backtrace, and the
/// tail of what the guest wrote to stderr (a Rust panic message lands there).
fn failure(op: &'static str, e: wasmtime::Error, store: &Store<State>) -> FsError {
    let stderr = store.data().stderr.contents();
    let tail = &stderr[stderr.len().saturating_sub(2048)..];
    let trap = e.downcast_ref::<wasmtime::Trap>().copied();
    let reason = match trap {
        Some(wasmtime::Trap::Interrupt) => "deadline exceeded (guest ran past its per-call time limit)".to_string(),
        _ => format!("{e:?}"),
    };
    let stderr_note = if tail.is_empty() {
        String::new()
    } else {
        format!("; guest stderr: {}", String::from_utf8_lossy(tail).trim())
    };
    tracing::error!(target: "fshost::guest", "{op}: guest trapped: {reason}{stderr_note}");
    FsError::GuestFailed { op, reason: format!("{reason}{stderr_note}") }
}

/// A clear message for a component that does not fit this host's world,
/// naming the contract versions involved.
fn incompatible(path: &Path, component: &Component, engine: &Engine, e: wasmtime::Error) -> anyhow::Error {
    let ty = component.component_type();
    let mut names: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    names.extend(ty.exports(engine).map(|(n, _)| n.to_string()));
    let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("fshost:plugin/")).collect();
    anyhow::anyhow!(
        "{} does not implement this host's contract fshost:plugin@{} (it uses {:?}): {e}",
        path.display(),
        CONTRACT_VERSION,
        ours
    )
}
