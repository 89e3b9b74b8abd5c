//! `cargo xtask new-plugin` end to end: generate a guest into a scratch
//! directory outside the workspace, build it for wasm32-wasip2 exactly as
//! its README says, write an image in the documented format and read it
//! back through the real `fshost` binary, by path and by name.
//!
//! The build uses a target directory of its own (target/new-plugin-test),
//! kept between runs: the workspace's target directory is locked by the
//! `cargo test` running this test, and the generated crate's dependencies
//! compile once.

mod common;
use common::{Scratch, ok, target_dir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fshost_bin() -> PathBuf {
    std::env::var_os("FSHOST_BIN").map(PathBuf::from).unwrap_or_else(|| target_dir().join("release/fshost"))
}

/// An image in the starter format (sdk/template/README.md): a text header
/// in block 0, each file's bytes at the next 512-byte boundary.
fn starter_image(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut img = b"fshost-starter v1\n".to_vec();
    for (name, data) in files {
        img.extend(format!("{} {name}\n", data.len()).bytes());
    }
    for (_, data) in files {
        img.resize(img.len().div_ceil(512).max(1) * 512, 0);
        img.extend_from_slice(data);
    }
    img
}

fn fshost(args: &[&std::ffi::OsStr], plugin_dir: &Path, home: &Path) -> Output {
    Command::new(fshost_bin())
        .args(args)
        .env("FSHOST_PLUGIN_PATH", plugin_dir)
        .env("XDG_DATA_HOME", home)
        .env("FSHOST_CACHE_DIR", home.join("cache"))
        .output()
        .expect("running fshost")
}

#[test]
fn a_generated_guest_builds_and_serves_an_image() {
    let scratch = Scratch::new("new-plugin");
    let dir = scratch.0.join("authors/mine");
    ok(
        "xtask new-plugin",
        Command::new(env!("CARGO_BIN_EXE_xtask")).args(["new-plugin", "mine"]).arg(&dir).output().unwrap(),
    );
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"mine\""), "{manifest}");

    // A second generation into the same directory is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["new-plugin", "mine"]).arg(&dir).output().unwrap();
    assert!(!again.status.success());

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir().join("new-plugin-test"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    ok("cargo build of the generated guest", build);
    let wasm = target_dir().join("new-plugin-test/wasm32-wasip2/release/mine.wasm");

    let image = scratch.0.join("demo.img");
    let greeting = b"hello from a generated guest\n";
    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&image, starter_image(&[("greeting.txt", greeting), ("with space.bin", &big)])).unwrap();

    let (plugins, home) = (scratch.0.join("plugins"), scratch.0.join("home"));
    std::fs::create_dir_all(&plugins).unwrap();
    let by_path: &[&std::ffi::OsStr] = &["ls".as_ref(), "--plugin".as_ref(), wasm.as_os_str(), image.as_os_str()];
    assert_eq!(ok("fshost ls", fshost(by_path, &plugins, &home)), "greeting.txt\nwith space.bin\n");

    // Installed into a plugin directory, it is found by name.
    std::fs::copy(&wasm, plugins.join("mine.wasm")).unwrap();
    let cat = |path: &str| {
        let args: &[&std::ffi::OsStr] =
            &["cat".as_ref(), "--plugin".as_ref(), "mine".as_ref(), image.as_os_str(), path.as_ref()];
        fshost(args, &plugins, &home)
    };
    assert_eq!(ok("fshost cat", cat("greeting.txt")).as_bytes(), greeting);
    assert_eq!(cat("with space.bin").stdout, big);
    let listed = ok("fshost plugins", fshost(&["plugins".as_ref()], &plugins, &home));
    let line = listed.lines().next().unwrap_or_default();
    let wit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/fshost.wit")).unwrap();
    let version = wit.lines().find_map(|l| l.strip_prefix("package fshost:plugin@")?.strip_suffix(';')).unwrap();
    let want = format!(
        "mine\t{version}\t{}\t{}\tok",
        std::fs::metadata(&wasm).unwrap().len(),
        plugins.join("mine.wasm").display()
    );
    assert_eq!(line, want, "{listed}");
}
