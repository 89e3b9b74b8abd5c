//! Build a guest written in C (guests/hello-c) into a component.
//!
//! Cargo cannot build C for wasm, so this is the C guest's build script, in
//! three steps that use only Debian packages and crates (no downloaded
//! binaries):
//!
//! 1. C bindings for the world `filesystem-guest` of wit/fshost.wit, with
//!    the `wit-bindgen-c` crate as a library: `filesystem_guest.{h,c}` and
//!    `filesystem_guest_component_type.o`, an object whose custom section
//!    carries the world's type so that step 3 knows the interfaces.
//! 2. clang-14 and wasi-libc (Debian: clang-14, lld-14, wasi-libc,
//!    libclang-rt-14-dev-wasm32) compile the guest and the bindings into a
//!    core wasm32-wasi reactor module (no `main`; `_initialize` runs the
//!    constructors).
//! 3. `wit-component` wraps the core module into a component, with the
//!    preview1→preview2 adapter (reactor flavour) from the
//!    `wasi-preview1-component-adapter-provider` crate satisfying whatever
//!    wasi-libc imports.
//!
//! The bindings are regenerated on every build into target/c-guests/NAME/
//! (they are derived files and cheap to make), so they are never stale.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use wit_bindgen_core::wit_parser::Resolve;

/// The WIT world every guest implements.
const WORLD: &str = "filesystem-guest";
/// The C compiler of Debian 12's clang-14 package.
pub const CLANG: &str = "clang-14";

/// Build guests/NAME (a folder of C sources) into `dest`, a component.
/// Intermediate files go to `work`.
pub fn build(root: &Path, name: &str, work: &Path, dest: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let src = root.join("guests").join(name);
    let gen_dir = work.join("bindings");
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&gen_dir)?;

    generate_bindings(&root.join("wit"), &gen_dir)?;
    let core = work.join(format!("{name}.core.wasm"));
    compile(&src, &gen_dir, work, &core)?;
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = componentize(&module).with_context(|| format!("making a component of {}", core.display()))?;
    std::fs::write(dest, &component).with_context(|| format!("writing {}", dest.display()))?;
    eprintln!(
        "guest: {} ({} bytes; core module {} bytes; C build {:.1} s)",
        dest.display(),
        component.len(),
        module.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Step 1: the C bindings of the world, written into `out`.
fn generate_bindings(wit: &Path, out: &Path) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_path(wit).with_context(|| format!("parsing {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(WORLD))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files)?;
    for (file, contents) in files.iter() {
        let path = out.join(file);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Step 2: compile every `.c` of `src` (strictly) and the bindings (as
/// generated) into objects, and link them into a core module.
fn compile(src: &Path, gen_dir: &Path, work: &Path, core: &Path) -> anyhow::Result<()> {
    let mut sources: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("listing {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        bail!("no C sources in {}", src.display());
    }
    let world = WORLD.replace('-', "_");
    let resource_include = clang_resource_include()?;
    let clang = |c_file: &Path, strict: bool| -> anyhow::Result<std::path::PathBuf> {
        let stem = c_file.file_stem().context("a C source without a name")?;
        let object = work.join(stem).with_extension("o");
        let mut cmd = Command::new(CLANG);
        cmd.args(["--target=wasm32-wasi", "-O2", "-std=c11", "-c"])
            // Debian's clang also searches /usr/include (glibc's x86_64
            // headers) after wasi-libc's: keep to wasi-libc's and clang's.
            .args(["-nostdinc", "-isystem", "/usr/include/wasm32-wasi", "-isystem"])
            .arg(&resource_include)
            .arg("-I")
            .arg(gen_dir);
        if strict {
            cmd.args(["-Wall", "-Wextra", "-Wconversion", "-Wshadow", "-Werror"]);
        }
        cmd.arg(c_file).arg("-o").arg(&object);
        super::run(&mut cmd).context("compiling the C guest (are clang-14, lld-14 and wasi-libc installed?)")?;
        Ok(object)
    };
    let mut objects = Vec::new();
    for c_file in &sources {
        objects.push(clang(c_file, true)?);
    }
    objects.push(clang(&gen_dir.join(format!("{world}.c")), false)?);
    objects.push(gen_dir.join(format!("{world}_component_type.o")));
    let mut link = Command::new(CLANG);
    link.args(["--target=wasm32-wasi", "-mexec-model=reactor", "-Wl,--strip-debug", "-o"]).arg(core).args(&objects);
    super::run(&mut link).context("linking the C guest")
}

/// clang's own headers (stddef.h, stdint.h for wasm32, …), which -nostdinc
/// also drops.
fn clang_resource_include() -> anyhow::Result<std::path::PathBuf> {
    let out = Command::new(CLANG).arg("-print-resource-dir").output().with_context(|| format!("running {CLANG}"))?;
    if !out.status.success() {
        bail!("{CLANG} -print-resource-dir failed");
    }
    let dir = String::from_utf8(out.stdout).context("clang's resource dir is not UTF-8")?;
    Ok(Path::new(dir.trim()).join("include"))
}

/// Step 3: the core module as a component, wasi-libc's preview1 imports
/// served by the reactor adapter.
fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(module)?
        .validate(true)
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)?
        .encode()
}
