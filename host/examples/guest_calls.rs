//! What one call into a guest costs: load (compile, or from the cache),
//! instantiate + mount, and the per-call time of getattr, lookup, readdir
//! and iomap-begin, measured through the host's own `Plugin` (validation
//! included), without FUSE or process start-up in the way.
//!
//! ```text
//! cargo run --release -p fshost --example guest_calls -- GUEST.wasm IMAGE [NAME]
//! ```
//!
//! NAME is a regular file in the root directory (iomap-begin and lookup
//! are timed on it); without it, the first regular file listed is used.
//! A measurement tool, not a test: it prints numbers and asserts nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use fshost::device::Device;
use fshost::plugin::{CompileCache, GuestOptions, Limits, Plugin};
use fshost::types::FileKind;

const CALLS: u32 = 20_000;

fn per_call(label: &str, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    for _ in 0..100 {
        f()?;
    }
    let t0 = Instant::now();
    for _ in 0..CALLS {
        f()?;
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);
    println!("{label:<28} {us:>8.2} µs/call ({CALLS} calls)");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (guest, image) = match (args.first(), args.get(1)) {
        (Some(g), Some(i)) => (PathBuf::from(g), PathBuf::from(i)),
        _ => bail!("usage: guest_calls GUEST.wasm IMAGE [NAME]"),
    };
    let device = Arc::new(Device::open(&image, true).with_context(|| format!("opening {}", image.display()))?);
    let cache_dir = std::env::temp_dir().join(format!("fshost-guest-calls-{}", std::process::id()));
    let cache = CompileCache::at(cache_dir.clone()).context("cache dir")?;
    let options = GuestOptions { read_only: true, options: Vec::new() };

    for round in ["compile", "cached"] {
        let (plugin, stats) = Plugin::load(&guest, device.clone(), Limits::default(), options.clone(), Some(&cache))?;
        let t0 = Instant::now();
        plugin.mount()?;
        println!(
            "{round:<8} load {:>8.1} ms (compiled: {}), instantiate + mount {:>6.2} ms",
            stats.millis,
            stats.compiled,
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    let (plugin, _) = Plugin::load(&guest, device, Limits::default(), options, Some(&cache))?;
    let info = plugin.mount()?;
    let _ = std::fs::remove_dir_all(&cache_dir);
    let root = info.root;
    let entries = plugin.readdir(root, 0, 64)?;
    let file = match args.get(2) {
        Some(name) => plugin.lookup(root, name.as_bytes())?,
        None => {
            let e =
                entries.iter().find(|e| e.kind == Some(FileKind::Regular)).context("no regular file in the root")?;
            plugin.getattr(e.ino)?
        }
    };
    let name = entries.iter().find(|e| e.ino == file.ino).map(|e| e.name.clone()).context("file not in the root")?;
    println!("file {:?}: inode {}, {} bytes", String::from_utf8_lossy(&name), file.ino.0, file.size);

    per_call("getattr", || Ok(plugin.getattr(file.ino).map(drop)?))?;
    per_call("lookup", || Ok(plugin.lookup(root, &name).map(drop)?))?;
    per_call("readdir (64 entries)", || Ok(plugin.readdir(root, 0, 64).map(drop)?))?;
    if file.size > 0 {
        per_call("iomap-begin (8 MiB asked)", || Ok(plugin.iomap_begin(file.ino, 0, 8 << 20, false).map(drop)?))?;
    }
    Ok(())
}
