//! Build a guest written in Python (guests/hello-py) into a component.
//!
//! componentize-py (PyPI) embeds CPython (3.14, its own build for WASI),
//! the Python standard library and the guest's modules into one component
//! of the world `filesystem-guest`, and runs the module imports once at
//! build time (a pre-initialised snapshot), so an instance starts with the
//! guest already imported. It generates the Python bindings from wit/ on
//! every build, so there is nothing to keep in sync by hand.
//!
//! The tool is pinned and installed into a virtual environment under the
//! target directory (`target/py-venv`): nothing is installed into the
//! machine's Python, `cargo clean` removes it, and a second build reuses it.
//! The component is rebuilt only when a `.py` of the guest or a `.wit` file
//! is newer than it (a build takes ~20 s of CPU). Either way, the host
//! then compiles it once into its cache ([`warm_compile_cache`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::run;

/// The componentize-py release this build is written for (its command line
/// and its mapping of WIT to Python change between releases).
const COMPONENTIZE_PY: &str = "0.25.1";
/// The WIT world every guest implements.
const WORLD: &str = "filesystem-guest";
/// The Python module componentize-py wraps: it defines the export class.
const APP_MODULE: &str = "app";

/// Build guests/NAME (a folder with `app.py`) into `dest`, installing
/// componentize-py into `venv` first when it is not there.
pub fn build(root: &Path, name: &str, venv: &Path, dest: &Path) -> anyhow::Result<()> {
    let src = root.join("guests").join(name);
    let wit = root.join("wit");
    if is_up_to_date(dest, &[&src, &wit])? {
        eprintln!("guest: {} (up to date)", dest.display());
        return warm_compile_cache(dest);
    }
    let tool = install(venv)?;
    let started = std::time::Instant::now();
    let mut cmd = Command::new(&tool);
    cmd.arg("-d").arg(&wit).args(["-w", WORLD, "componentize", APP_MODULE, "-p"]).arg(&src).arg("-o").arg(dest);
    // With VIRTUAL_ENV set, componentize-py would also bundle that
    // environment's site-packages; the guest needs only its own folder.
    cmd.env_remove("VIRTUAL_ENV");
    run(&mut cmd)?;
    let size = std::fs::metadata(dest).with_context(|| format!("reading {}", dest.display()))?.len();
    eprintln!("guest: {} ({size} bytes; componentize-py {:.1} s)", dest.display(), started.elapsed().as_secs_f64());
    warm_compile_cache(dest)
}

/// Have `fshost` compile `guest` once into its compiled-guest cache (the
/// default one, as the tests and the demo use), by mounting an empty
/// hellofs image offline.
///
/// A component that embeds CPython holds ~18 MB of code and data; compiling
/// it takes ~10 s of CPU, every time until the cache holds it. Without this,
/// the first test processes to use the guest would all compile it at once,
/// each waiting for the others' CPU; once cached, loading takes ~0.1 s.
fn warm_compile_cache(guest: &Path) -> anyhow::Result<()> {
    let fshost = crate::target_dir().join("release/fshost");
    let image = crate::target_dir().join("py-venv/warm-up.img");
    std::fs::write(&image, hello::image::Builder::new(4096, b"warm-up").build())
        .with_context(|| format!("writing {}", image.display()))?;
    let started = std::time::Instant::now();
    let out = Command::new(&fshost)
        .arg("info")
        .arg("--plugin")
        .arg(guest)
        .arg(&image)
        .output()
        .with_context(|| format!("running {}", fshost.display()))?;
    if !out.status.success() {
        bail!("{} cannot mount an empty image: {}", guest.display(), String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("guest: {} loads and mounts ({:.1} s)", guest.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// The componentize-py executable of `venv`, installed at the pinned
/// version (with the `python3` on PATH) when missing or another version.
fn install(venv: &Path) -> anyhow::Result<PathBuf> {
    let tool = venv.join("bin/componentize-py");
    let wanted = format!("componentize-py {COMPONENTIZE_PY}");
    let installed = Command::new(&tool).arg("--version").output();
    if installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == wanted) {
        return Ok(tool);
    }
    let started = std::time::Instant::now();
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv)).context(
            "creating a Python virtual environment for componentize-py (needs python3 >= 3.10 with venv; \
             on Debian's own python3: apt-get install python3-venv)",
        )?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("componentize-py=={COMPONENTIZE_PY}")))
    .context("installing componentize-py from PyPI")?;
    eprintln!("componentize-py {COMPONENTIZE_PY} installed in {:.1} s", started.elapsed().as_secs_f64());
    let check = Command::new(&tool).arg("--version").output().with_context(|| format!("running {}", tool.display()))?;
    if String::from_utf8_lossy(&check.stdout).trim() != wanted {
        bail!("{} --version says {:?}, not {wanted:?}", tool.display(), String::from_utf8_lossy(&check.stdout));
    }
    Ok(tool)
}

/// Whether `dest` exists and is newer than every `.py` and `.wit` file
/// under `inputs`.
fn is_up_to_date(dest: &Path, inputs: &[&Path]) -> anyhow::Result<bool> {
    let Ok(built) = std::fs::metadata(dest).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    for dir in inputs {
        newest_source(dir, &mut newest)?;
    }
    Ok(newest < built)
}

fn newest_source(dir: &Path, newest: &mut SystemTime) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            if entry.file_name() != "__pycache__" {
                newest_source(&path, newest)?;
            }
        } else if path.extension().is_some_and(|e| e == "py" || e == "wit") {
            *newest = (*newest).max(meta.modified()?);
        }
    }
    Ok(())
}
