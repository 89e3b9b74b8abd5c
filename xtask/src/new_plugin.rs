//! `cargo xtask new-plugin NAME [DIR]`: start a guest of your own from
//! sdk/template.
//!
//! The new crate goes to DIR (default `./NAME`, like `cargo new`), usually
//! outside this repository: a guest author's crate is their own. It is a
//! workspace of its own, depends on this checkout's SDK by absolute path
//! (the SDK is not on crates.io), and starts with this repository's
//! Cargo.lock, so its dependencies are the versions the SDK is tested with.
//! It builds with `cargo build --release --target wasm32-wasip2` into
//! `target/wasm32-wasip2/release/NAME.wasm`, which `--plugin NAME` finds
//! once copied into a plugin directory (`fshost plugins --dirs`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The template's crate and library names, replaced by NAME.
const TEMPLATE_PACKAGE: &str = "name = \"fshost-guest-starter\"";
const TEMPLATE_LIB: &str = "name = \"starter\"";
/// The template's SDK dependency, relative to sdk/template.
const TEMPLATE_SDK: &str = "fshost-sdk = { path = \"..\" }";

/// Parse `NAME [DIR]` and generate.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (name, dir) = match args {
        [name] => (name, PathBuf::from(name)),
        [name, dir] => (name, PathBuf::from(dir)),
        _ => bail!("usage: cargo xtask new-plugin NAME [DIR]   (DIR defaults to ./NAME)"),
    };
    generate(name, &dir)?;
    let shown = dir.display();
    println!("created guest {name:?} in {shown}");
    println!("  cd {shown} && cargo build --release --target wasm32-wasip2");
    println!("  fshost ls --plugin target/wasm32-wasip2/release/{name}.wasm IMAGE   (image format: README.md)");
    println!("  cp target/wasm32-wasip2/release/{name}.wasm ~/.local/share/fshost/plugins/   (then --plugin {name})");
    Ok(())
}

/// A plugin name: lowercase ASCII letters, digits and '_', starting with a
/// letter, so that it is at once the crate name, the library name, the
/// .wasm file name and the `--plugin` name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') || name.len() > 64 {
        bail!("invalid plugin name {name:?}: use a lowercase letter, then lowercase letters, digits or '_'");
    }
    Ok(())
}

/// Copy the template into `dir` (which must not exist or be empty) as
/// crate `name`.
pub fn generate(name: &str, dir: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    let repo = super::root().canonicalize().context("locating the fshost checkout")?;
    let template = repo.join("sdk/template");
    let sdk = repo.join("sdk");
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    copy_tree(&template, dir)?;

    let manifest_path = dir.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)?;
    let sdk = sdk.to_str().context("the SDK's path is not UTF-8")?;
    let mut manifest = manifest.replacen(TEMPLATE_PACKAGE, &format!("name = \"{name}\""), 1);
    for (from, to) in
        [(TEMPLATE_LIB, format!("name = \"{name}\"")), (TEMPLATE_SDK, format!("fshost-sdk = {{ path = {sdk:?} }}"))]
    {
        if !manifest.contains(from) {
            bail!("sdk/template/Cargo.toml no longer contains `{from}`; update xtask/src/new_plugin.rs");
        }
        manifest = manifest.replacen(from, &to, 1);
    }
    std::fs::write(&manifest_path, manifest)?;

    let readme_path = dir.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)?
        .replace("# starter:", &format!("# {name}:"))
        .replace("starter.wasm", &format!("{name}.wasm"))
        .replace("--plugin starter", &format!("--plugin {name}"));
    std::fs::write(&readme_path, readme)?;

    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).context("copying Cargo.lock")?;
    Ok(())
}

/// Copy the files under `from` into `to`, leaving out build output.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        let (src, dest) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&dest)?;
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn plugin_names() {
        for ok in ["myfs", "fat32", "my_fs"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "MyFs", "9fs", "my-fs", "a/b", "_x", "x.wasm"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
