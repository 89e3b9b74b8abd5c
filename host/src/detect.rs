//! Finding the filesystem guest when `--plugin` is not given (or is
//! `auto`), like blkid: every installed filesystem guest is asked to mount
//! the device read-only, and the guests whose `mount` succeeds claim it.
//!
//! Why mount rather than a separate probe export: a guest's `mount` already
//! checks its superblock, in the sandbox, under the normal limits (per-call
//! time, memory); a compiled-guest cache hit makes each try a few
//! milliseconds, and no guest needs a second entry point to keep in step
//! with the first.
//!
//! What it guarantees:
//! - the guests tried are the usable filesystem guests of the plugin search
//!   path (`fshost plugins`, status ok), in its order; volume guests
//!   (partitions, qcow2, ...) are not tried: `stack` and `partitions` have
//!   already turned the source into the device the filesystem is on;
//! - exactly one claim is used; none is an error naming every guest tried
//!   and its refusal; several are an error naming them (no guest is
//!   preferred over another: two guests that mount the same bytes are two
//!   readings of them, and which one is right is the user's call, made with
//!   `--plugin NAME`).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::bail;

use crate::device::Device;
use crate::plugin::search::{Kind, SearchPath};
use crate::plugin::{CompileCache, GuestOptions, Limits, Plugin, capture_warnings};

/// The `--plugin` value that asks for detection, as leaving it out does.
pub const AUTO: &str = "auto";

/// Whether `--plugin` (absent, or `auto`) asks for detection.
pub fn wanted(plugin: Option<&OsStr>) -> bool {
    plugin.is_none_or(|p| p == AUTO)
}

/// The guest detection chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Its name on the search path.
    pub name: OsString,
    pub path: PathBuf,
}

/// What this process detected, for `fshost info` (one process, one source).
static DETECTED: Mutex<Option<Detected>> = Mutex::new(None);

/// The guest this process detected, if it detected one.
pub fn detected() -> Option<Detected> {
    DETECTED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What the installed filesystem guests said of one device: the guests
/// whose read-only mount succeeded (their instances live), and one line
/// per refusal (`NAME: why`).
pub struct Claims {
    pub mounted: Vec<(Detected, Plugin)>,
    pub refusals: Vec<String>,
}

impl Claims {
    /// The names of the guests that mount the device.
    pub fn names(&self) -> Vec<String> {
        self.mounted.iter().map(|(d, _)| d.name.to_string_lossy().into_owned()).collect()
    }
}

/// Ask every installed filesystem guest to mount `device` read-only. Fails
/// only when no guest is installed.
pub fn claims(
    device: &Arc<Device>,
    limits: &Limits,
    options: &[(String, String)],
    cache: Option<&CompileCache>,
) -> anyhow::Result<Claims> {
    let source = device.path().display().to_string();
    let search = SearchPath::from_env();
    let listed = std::time::Instant::now();
    let candidates: Vec<_> =
        search.list().into_iter().filter(|f| f.shadowed_by.is_none() && matches!(f.kind, Kind::Guest(_))).collect();
    tracing::debug!(
        "detect: {} filesystem guests on the search path ({:.1} ms to list)",
        candidates.len(),
        listed.elapsed().as_secs_f64() * 1e3
    );
    if candidates.is_empty() {
        bail!(
            "{source}: no filesystem guest is installed to detect the filesystem with \
             (`fshost plugins --dirs` lists where they are looked for); name one with --plugin"
        );
    }
    let mut claims = Claims { mounted: Vec::new(), refusals: Vec::new() };
    for found in candidates {
        let name = found.name.to_string_lossy().into_owned();
        let started = std::time::Instant::now();
        let opts = GuestOptions { read_only: true, options: options.to_vec() };
        let (answer, complaints) = capture_warnings(|| {
            Plugin::load(&found.path, device.clone(), limits.clone(), opts, cache)
                .and_then(|(plugin, _)| Ok(plugin.mount().map(|_| plugin)?))
        });
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match answer {
            Ok(plugin) => {
                tracing::debug!("detect: {name} mounts {source} ({ms:.1} ms)");
                claims.mounted.push((Detected { name: found.name, path: found.path }, plugin));
            }
            Err(e) => {
                tracing::debug!("detect: {name} refuses {source} ({ms:.1} ms): {e:#}");
                // The guest's own sentence says more than its error code.
                let why = complaints.last().cloned().unwrap_or_else(|| format!("{e:#}"));
                claims.refusals.push(format!("{name}: {}", few_words(&why)));
            }
        }
    }
    Ok(claims)
}

/// Note `detected` as this process's choice (what `fshost info` names).
pub fn record(detected: &Detected, source: &str) {
    tracing::info!("detected {} on {source} (guest {})", detected.name.to_string_lossy(), detected.path.display());
    *DETECTED.lock().unwrap_or_else(|p| p.into_inner()) = Some(detected.clone());
}

/// The one installed filesystem guest that mounts `device` read-only,
/// mounted (its instance is live, so the caller need not mount it again).
pub fn find(
    device: &Arc<Device>,
    limits: &Limits,
    options: &[(String, String)],
    cache: Option<&CompileCache>,
) -> anyhow::Result<(Detected, Plugin)> {
    let source = device.path().display().to_string();
    decide(claims(device, limits, options, cache)?, &source)
}

/// The one claim of `claims` (recorded as this process's choice); none or
/// several are an error naming the guests.
pub fn decide(mut claims: Claims, source: &str) -> anyhow::Result<(Detected, Plugin)> {
    match claims.mounted.len() {
        0 => bail!(
            "{source}: no installed filesystem guest recognises it (each was asked to mount it read-only):\n  {}",
            claims.refusals.join("\n  ")
        ),
        1 => {}
        _ => bail!(
            "{source}: several filesystem guests mount it ({}); fshost does not guess: choose one with --plugin NAME",
            claims.names().join(", ")
        ),
    }
    let (detected, plugin) = claims.mounted.remove(0);
    record(&detected, source);
    Ok((detected, plugin))
}

/// A refusal short enough for one line of a list: its first line, at most
/// 160 characters.
fn few_words(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    match line.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_nothing_ask_for_detection() {
        assert!(wanted(None));
        assert!(wanted(Some(OsStr::new("auto"))));
        assert!(!wanted(Some(OsStr::new("ext4"))));
        assert!(!wanted(Some(OsStr::new("./auto"))));
    }

    #[test]
    fn refusals_are_one_short_line() {
        assert_eq!(few_words("bad magic\nmore"), "bad magic");
        let long = "x".repeat(300);
        assert_eq!(few_words(&long).len(), 163);
        assert_eq!(few_words(""), "");
    }
}
