//! Finding guests by name and refusing guests built for another contract,
//! through the real binary.
//!
//! Every run points `FSHOST_PLUGIN_PATH` and `XDG_DATA_HOME` at scratch
//! directories so the machine's own plugin directories do not leak in.
//! Guests "built for another contract version" are the hello guest with
//! the version of every `fshost:plugin/...@0.2.0` import and export name
//! rewritten in place (same length, so the component stays valid): exactly
//! the names a build against a WIT file with that package version produces,
//! and what the host reads to decide.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fshost_tests::fshost::{fshost_bin, guest, target_dir};
use fshost_tests::scratch::ScratchDir;
use hello::image::Builder;

/// The contract version, from the WIT file (`package fshost:plugin@X;`).
fn contract_version() -> String {
    let wit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/fshost.wit")).unwrap();
    wit.lines().find_map(|l| l.strip_prefix("package fshost:plugin@")?.strip_suffix(';')).unwrap().to_string()
}

/// The scratch world one test runs in.
struct World {
    dir: ScratchDir,
    image: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = ScratchDir::new("plugins").unwrap();
        let mut b = Builder::new(4096, b"plugins");
        let root = b.root();
        b.file(root, b"greeting.txt", b"found by name\n");
        let image = dir.path().join("hello.img");
        std::fs::write(&image, b.build()).unwrap();
        for sub in ["a", "b", "xdg", "empty"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        World { dir, image }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Put `bytes` at `sub/name.wasm`.
    fn install(&self, sub: &str, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(sub).join(format!("{name}.wasm"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Run fshost with the plugin path `dirs` (relative to the scratch dir).
    fn fshost(&self, dirs: &[&str], args: &[&OsStr]) -> Output {
        let joined: Vec<String> = dirs.iter().map(|d| self.path(d).display().to_string()).collect();
        Command::new(fshost_bin())
            .args(args)
            .env("FSHOST_PLUGIN_PATH", joined.join(":"))
            .env("XDG_DATA_HOME", self.path("xdg"))
            .output()
            .expect("running fshost")
    }

    fn ls(&self, dirs: &[&str], plugin: &str) -> Output {
        self.fshost(dirs, &["ls".as_ref(), "--plugin".as_ref(), plugin.as_ref(), self.image.as_os_str()])
    }
}

fn hello_wasm() -> Vec<u8> {
    let path = guest("hello");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask build`)", path.display()))
}

/// `wasm` with the version of every `fshost:plugin/NAME@` name replaced by
/// `version` (as long as the original), failing if there is none.
fn retarget(wasm: &[u8], version: &str) -> Vec<u8> {
    let ours = contract_version();
    assert_eq!(ours.len(), version.len(), "the rewrite keeps lengths");
    let prefix = b"fshost:plugin/";
    let mut out = wasm.to_vec();
    let mut count = 0;
    let mut i = 0;
    while let Some(at) = out[i..].windows(prefix.len()).position(|w| w == prefix) {
        let name_start = i + at + prefix.len();
        let name_len = out[name_start..].iter().take_while(|b| b.is_ascii_lowercase() || **b == b'-').count();
        let v = name_start + name_len + 1;
        if out.get(v - 1) == Some(&b'@') && out.get(v..v + ours.len()) == Some(ours.as_bytes()) {
            out[v..v + ours.len()].copy_from_slice(version.as_bytes());
            count += 1;
        }
        i = name_start;
    }
    assert!(count >= 3, "only {count} versioned fshost:plugin names found");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_lists_greeting(out: &Output) {
    assert!(out.status.success(), "fshost ls failed: {}", stderr(out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "greeting.txt\n");
}

#[test]
fn a_name_is_looked_up_in_order_and_the_first_match_wins() {
    let w = World::new();
    let good = hello_wasm();
    let bad = retarget(&good, "9.0.0");
    w.install("a", "hello", &good);
    w.install("b", "hello", &bad);
    assert_lists_greeting(&w.ls(&["empty", "a", "b"], "hello"));
    let out = w.ls(&["b", "a"], "hello");
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&format!("{} was built for", w.path("b/hello.wasm").display())), "{}", stderr(&out));

    // $FSHOST_PLUGIN_PATH comes before $XDG_DATA_HOME/fshost/plugins, which
    // comes before the directories next to the binary (target/guests).
    w.install("xdg/fshost/plugins", "hello", &bad);
    assert_lists_greeting(&w.ls(&["a"], "hello"));
    let out = w.ls(&[], "hello");
    assert!(stderr(&out).contains(&format!("{} was built for", w.path("xdg/fshost/plugins/hello.wasm").display())));

    // A path is a path: never looked up, even where a name would be found.
    let out = w.ls(&["a"], "./hello");
    assert!(stderr(&out).contains("./hello"), "{}", stderr(&out));
    assert_lists_greeting(&w.ls(&[], w.path("a/hello.wasm").to_str().unwrap()));
}

#[test]
fn a_missing_name_names_every_directory_tried() {
    let w = World::new();
    let out = w.ls(&["a", "b"], "nosuchguest");
    assert!(!out.status.success());
    let err = stderr(&out);
    let tried = [w.path("a"), w.path("b"), w.path("xdg/fshost/plugins"), "/usr/lib/fshost/plugins".into()];
    for dir in tried {
        assert!(err.contains(&dir.display().to_string()), "{} not in: {err}", dir.display());
    }
    assert!(err.contains("nosuchguest.wasm"), "{err}");
}

#[test]
fn guests_for_another_contract_version_are_refused_before_they_run() {
    let w = World::new();
    let good = hello_wasm();
    for (version, verdict) in [("9.0.0", false), ("1.0.0", false), ("0.1.0", false), ("0.3.0", false), ("0.2.9", true)]
    {
        let path = w.install("a", "other", &retarget(&good, version));
        let out = w.ls(&["a"], "other");
        if verdict {
            assert_lists_greeting(&out);
        } else {
            assert!(!out.status.success());
            let want = format!("{} was built for fshost:plugin@{version}; this fshost speaks 0.2.x", path.display());
            assert!(stderr(&out).contains(&want), "{version}: {}", stderr(&out));
        }
    }

    // The smallest component (magic, version, layer) exports nothing; a
    // core module is not a component.
    w.install("a", "empty", &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]);
    let err = stderr(&w.ls(&["a"], "empty"));
    assert!(err.contains("is not an fshost guest: it does not export fshost:plugin/filesystem"), "{err}");
    w.install("a", "core", &[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    let err = stderr(&w.ls(&["a"], "core"));
    assert!(err.contains("is a core WebAssembly module, not a component"), "{err}");
}

#[test]
fn plugins_lists_every_guest_in_search_order_marking_shadowed_ones() {
    let w = World::new();
    let good = hello_wasm();
    let hello_a = w.install("a", "hello", &good);
    let old = w.install("b", "old", &retarget(&good, "9.0.0"));
    let hello_b = w.install("b", "hello", &good);
    let junk = w.install("b", "junk", b"not wasm");
    let out = w.fshost(&["a", "b"], &["plugins".as_ref()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = listed.lines().collect();
    let v = contract_version();
    let size = good.len();
    let want = [
        format!("hello\t{v}\t{size}\t{}\tok", hello_a.display()),
        format!("hello\t{v}\t{size}\t{}\tshadowed", hello_b.display()),
        format!("junk\t-\t8\t{}\tnot-a-guest", junk.display()),
        format!("old\t9.0.0\t{size}\t{}\tincompatible", old.display()),
    ];
    assert_eq!(lines.get(..4).map(|l| l.to_vec()), Some(want.iter().map(String::as_str).collect()), "{listed}");

    // Run from target/release, fshost also searches target/guests, after
    // these: its hello is there and shadowed.
    let canonical = |p: &Path| p.canonicalize().ok();
    let bin_prefix = fshost_bin().parent().and_then(Path::parent).and_then(canonical);
    if bin_prefix.is_some() && bin_prefix == canonical(&target_dir()) {
        let theirs = format!("{}\tshadowed", guest("hello").canonicalize().unwrap().display());
        assert!(lines.iter().any(|l| l.starts_with("hello\t") && l.ends_with(&theirs)), "{listed}");
    }

    let out = w.fshost(&["a", "b"], &["plugins".as_ref(), "--dirs".as_ref()]);
    let dirs = String::from_utf8_lossy(&out.stdout).into_owned();
    let first: Vec<&str> = dirs.lines().take(3).collect();
    let want = [
        w.path("a").display().to_string(),
        w.path("b").display().to_string(),
        format!("{}\t(missing)", w.path("xdg/fshost/plugins").display()),
    ];
    assert_eq!(first, want, "{dirs}");
}
