//! Finding a guest by name: `--plugin ext4` instead of a path.
//!
//! An argument that contains '/' or ends with ".wasm" is a path, used as
//! is. Anything else is a name, looked up as `NAME.wasm` in these
//! directories, first match wins:
//!
//! 1. each directory of `$FSHOST_PLUGIN_PATH` (colon-separated), in order:
//!    what the caller asked for;
//! 2. `$XDG_DATA_HOME/fshost/plugins` (default `~/.local/share/fshost/plugins`):
//!    the user's own guests;
//! 3. `BINDIR/../lib/fshost/plugins`, where BINDIR holds the running
//!    `fshost`: the guests installed with this binary under the same prefix
//!    (`/usr/local/bin/fshost` → `/usr/local/lib/fshost/plugins`), built
//!    for the contract it speaks;
//! 4. `BINDIR/../guests`: the same for a development tree, where
//!    `cargo xtask build` puts guests in `target/guests` next to
//!    `target/release/fshost`;
//! 5. `/usr/local/lib/fshost/plugins`, then `/usr/lib/fshost/plugins`:
//!    system-wide guests.
//!
//! A directory already in the list is not searched twice. Resolution
//! happens before the sandbox point, like every other file the host opens.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::identity::{Identity, compatible};

/// The environment variable listing plugin directories searched first.
pub const PATH_VAR: &str = "FSHOST_PLUGIN_PATH";

/// What `--plugin` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginArg {
    /// A file, used as is.
    Path(PathBuf),
    /// A name to look up on the search path.
    Name(OsString),
}

impl PluginArg {
    /// A path when `arg` contains '/' or ends with ".wasm"; a name otherwise.
    pub fn parse(arg: &OsStr) -> PluginArg {
        let bytes = arg.as_bytes();
        if bytes.contains(&b'/') || bytes.ends_with(b".wasm") || bytes.is_empty() || bytes == b"." || bytes == b".." {
            PluginArg::Path(PathBuf::from(arg))
        } else {
            PluginArg::Name(arg.to_owned())
        }
    }
}

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("no guest named {name:?}: looked for {name}.wasm in {}", tried(.dirs))]
pub struct NotFound {
    pub name: String,
    pub dirs: Vec<PathBuf>,
}

fn tried(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directory (the search path is empty)".to_string();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The ordered list of directories names are looked up in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// The search path of this process (see the module docs for the order).
    pub fn from_env() -> SearchPath {
        let exe = std::env::current_exe().ok();
        let bindir = exe.as_deref().and_then(Path::parent);
        SearchPath::new(
            std::env::var_os(PATH_VAR).as_deref(),
            std::env::var_os("XDG_DATA_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
            bindir,
        )
    }

    /// The search path for the given environment and binary directory.
    pub fn new(
        plugin_path: Option<&OsStr>,
        xdg_data_home: Option<&OsStr>,
        home: Option<&OsStr>,
        bindir: Option<&Path>,
    ) -> Self {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(list) = plugin_path {
            dirs.extend(
                list.as_bytes()
                    .split(|&b| b == b':')
                    .filter(|d| !d.is_empty())
                    .map(|d| PathBuf::from(OsStr::from_bytes(d))),
            );
        }
        // The XDG spec: a relative $XDG_DATA_HOME is invalid and ignored.
        let data_home = xdg_data_home
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
            .or_else(|| home.map(|h| Path::new(h).join(".local/share")));
        if let Some(data_home) = data_home {
            dirs.push(data_home.join("fshost/plugins"));
        }
        if let Some(prefix) = bindir.and_then(Path::parent) {
            dirs.push(prefix.join("lib/fshost/plugins"));
            dirs.push(prefix.join("guests"));
        }
        dirs.push(PathBuf::from("/usr/local/lib/fshost/plugins"));
        dirs.push(PathBuf::from("/usr/lib/fshost/plugins"));
        let mut seen: Vec<PathBuf> = Vec::new();
        dirs.retain(|d| {
            let key = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
            let new = !seen.contains(&key);
            seen.push(key);
            new
        });
        SearchPath { dirs }
    }

    /// The directories, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The file `--plugin ARG` means.
    pub fn resolve(&self, arg: &OsStr) -> Result<PathBuf, NotFound> {
        match PluginArg::parse(arg) {
            PluginArg::Path(path) => Ok(path),
            PluginArg::Name(name) => {
                let mut file = name.clone();
                file.push(".wasm");
                self.dirs
                    .iter()
                    .map(|d| d.join(&file))
                    .find(|p| p.is_file())
                    .ok_or_else(|| NotFound { name: name.to_string_lossy().into_owned(), dirs: self.dirs.clone() })
            }
        }
    }

    /// Every `*.wasm` file in the search path, in search order (by name
    /// within a directory), each marked when an earlier one of the same
    /// name shadows it. Unreadable directories are skipped.
    pub fn list(&self) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut here: Vec<(OsString, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let file = e.file_name();
                    let name = file.as_bytes().strip_suffix(b".wasm").filter(|n| !n.is_empty())?;
                    let path = e.path();
                    path.is_file().then(|| (OsStr::from_bytes(name).to_owned(), path))
                })
                .collect();
            here.sort();
            for (name, path) in here {
                let shadowed_by =
                    found.iter().find(|f| f.name == name && f.shadowed_by.is_none()).map(|f| f.path.clone());
                let (size, kind) = describe(&path);
                found.push(Found { name, path, size, kind, shadowed_by });
            }
        }
        found
    }
}

/// One guest file on the search path.
#[derive(Debug, Clone)]
pub struct Found {
    /// The name `--plugin` takes: the file name without ".wasm".
    pub name: OsString,
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    pub kind: Kind,
    /// The earlier file of the same name that `--plugin NAME` picks instead.
    pub shadowed_by: Option<PathBuf>,
}

/// What a file on the search path turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A guest for contract version `.0` that this host can run.
    Guest(String),
    /// A guest for a contract version this host refuses.
    Incompatible(String),
    /// Not a guest: unreadable, not a component, or no filesystem export.
    NotAGuest(String),
    /// A volume guest (`fshost:volume`, `--volume NAME`) for volume
    /// contract version `.0`, and whether this host can run it.
    Volume(String, bool),
}

fn describe(path: &Path) -> (u64, Kind) {
    let wasm = match std::fs::read(path) {
        Ok(w) => w,
        Err(e) => return (0, Kind::NotAGuest(format!("unreadable: {e}"))),
    };
    let size = wasm.len() as u64;
    let kind = match Identity::read(&wasm) {
        Err(e) => Kind::NotAGuest(e.to_string()),
        Ok(id) => match (id.contract_version(), id.check()) {
            (Some(v), Ok(())) => Kind::Guest(v.to_string()),
            (Some(v), Err(_)) if !compatible(v) => Kind::Incompatible(v.to_string()),
            (Some(v), Err(e)) => Kind::Incompatible(format!("{v} ({e})")),
            (None, _) => match super::volume::contract_version(&id) {
                Some(v) => Kind::Volume(v.to_string(), super::volume::compatible(v)),
                None => Kind::NotAGuest(format!("no {} export", super::identity::EXPORT)),
            },
        },
    };
    (size, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_paths_and_names_are_names() {
        let parse = |s: &str| PluginArg::parse(OsStr::new(s));
        assert_eq!(parse("ext4"), PluginArg::Name("ext4".into()));
        assert_eq!(parse("my-fs_2"), PluginArg::Name("my-fs_2".into()));
        assert_eq!(parse("ext4.wasm"), PluginArg::Path("ext4.wasm".into()));
        assert_eq!(parse("./ext4"), PluginArg::Path("./ext4".into()));
        assert_eq!(parse("target/guests/ext4.wasm"), PluginArg::Path("target/guests/ext4.wasm".into()));
        assert_eq!(parse(".."), PluginArg::Path("..".into()));
    }

    #[test]
    fn the_order_of_the_search_path() {
        let p = SearchPath::new(
            Some(OsStr::new("/nonexistent/a::/nonexistent/b:")),
            Some(OsStr::new("/nonexistent/data")),
            Some(OsStr::new("/nonexistent/home")),
            Some(Path::new("/nonexistent/prefix/bin")),
        );
        let want: Vec<PathBuf> = [
            "/nonexistent/a",
            "/nonexistent/b",
            "/nonexistent/data/fshost/plugins",
            "/nonexistent/prefix/lib/fshost/plugins",
            "/nonexistent/prefix/guests",
            "/usr/local/lib/fshost/plugins",
            "/usr/lib/fshost/plugins",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(p.dirs(), want);
    }

    #[test]
    fn home_stands_in_for_a_missing_or_relative_xdg_data_home_and_duplicates_go() {
        for xdg in [None, Some(OsStr::new("relative/data"))] {
            let p = SearchPath::new(None, xdg, Some(OsStr::new("/nonexistent/home")), Some(Path::new("/usr/bin")));
            let want: Vec<PathBuf> = [
                "/nonexistent/home/.local/share/fshost/plugins",
                "/usr/lib/fshost/plugins",
                "/usr/guests",
                "/usr/local/lib/fshost/plugins",
            ]
            .iter()
            .map(PathBuf::from)
            .collect();
            assert_eq!(p.dirs(), want);
        }
    }

    #[test]
    fn a_missing_name_names_every_directory_tried() {
        let p = SearchPath::new(Some(OsStr::new("/nonexistent/a")), None, None, None);
        let err = p.resolve(OsStr::new("nosuchfs")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no guest named \"nosuchfs\": looked for nosuchfs.wasm in /nonexistent/a, \
             /usr/local/lib/fshost/plugins, /usr/lib/fshost/plugins"
        );
        assert_eq!(p.resolve(OsStr::new("x/y.wasm")).unwrap(), PathBuf::from("x/y.wasm"));
    }
}
