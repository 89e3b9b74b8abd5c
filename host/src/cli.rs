//! The command line: parse, open the device, load the guest, delegate.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::device::Device;
use crate::offline::{Format, TimeStyle};
use crate::plugin::search::{Kind, SearchPath};
use crate::plugin::{CompileCache, GuestOptions, Limits, Plugin};
use crate::volume::Volume;

/// fshost: mount untrusted filesystem images through sandboxed WebAssembly guests.
#[derive(Debug, Parser)]
#[command(name = "fshost", version, about)]
pub struct Cli {
    /// More logging (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount SOURCE at MOUNTPOINT through FUSE (read-only unless -o rw;
    /// always nosuid, nodev).
    ///
    /// Read-only is the default: an image is untrusted, a read-only mount
    /// cannot damage it, and writing needs a guest that can write the
    /// format (`-o rw` is refused, with the guest's reason, otherwise).
    /// Until crash-safe writes land, a crash or power loss during a
    /// read-write mount leaves the filesystem needing a check (e2fsck).
    Mount {
        #[command(flatten)]
        source: SourceArgs,
        /// Where to mount.
        mountpoint: PathBuf,
        /// Stay in the foreground until unmounted (or SIGINT/SIGTERM).
        #[arg(short, long)]
        foreground: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// List a directory.
    Ls {
        #[command(flatten)]
        source: SourceArgs,
        /// Path inside the filesystem (default: the root). Left out on a
        /// whole disk (no --partition, no filesystem on the disk itself),
        /// the partitions are listed instead: number, type, length,
        /// filesystem, name.
        path: Option<PathBuf>,
        /// Long format: mode, links, owner, size, mtime, symlink target.
        #[arg(short, long)]
        long: bool,
        #[arg(long, value_enum, default_value_t = TimeArg::Local)]
        time_style: TimeArg,
        /// One JSON object per entry, every attribute (README: "JSON output").
        #[arg(long, conflicts_with_all = ["long", "time_style"])]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Print every attribute of a path.
    Stat {
        #[command(flatten)]
        source: SourceArgs,
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = TimeArg::Local)]
        time_style: TimeArg,
        /// One JSON object (README: "JSON output").
        #[arg(long, conflicts_with = "time_style")]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Write a file's bytes to stdout.
    Cat {
        #[command(flatten)]
        source: SourceArgs,
        path: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Extract a file or subtree to a new host path DEST, sandboxed: nothing
    /// outside DEST can be created. The copy belongs to the caller (root:
    /// uid 0, without capabilities) or to --user/--group. Objects that
    /// cannot be read are reported and left out; the exit status is then 1.
    CpOut {
        #[command(flatten)]
        source: SourceArgs,
        path: PathBuf,
        dest: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Print what the filesystem reports about itself (type, label, UUID, counts).
    Info {
        #[command(flatten)]
        source: SourceArgs,
        /// One JSON object (README: "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// List the partitions of a whole-disk image (MBR or GPT), as read by
    /// a sandboxed volume guest: number, start and length in bytes, type,
    /// flags, unique GUID, name. `--partition N` on the other commands uses one.
    Partitions {
        /// An image file or block device.
        source: PathBuf,
        /// The volume guest that reads the table [default: partitions].
        #[arg(long, value_name = "NAME|PATH")]
        volume: Option<OsString>,
        /// The disk-image format of SOURCE, as for the other commands.
        #[arg(long, value_name = "NAME|PATH|raw")]
        image_format: Option<OsString>,
        /// The file an image is based on, as for the other commands.
        #[arg(long, value_name = "FILE")]
        backing: Vec<PathBuf>,
        /// One JSON object per partition (README: "JSON output").
        #[arg(long)]
        json: bool,
        /// Do not use or fill the compiled-guest cache.
        #[arg(long)]
        no_cache: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// List the guests `--plugin NAME` can find: name, contract version,
    /// size, path, status (ok, shadowed, incompatible, not-a-guest; volume
    /// or incompatible-volume for volume guests, which `--volume` takes).
    Plugins {
        /// Print the search path's directories instead, in search order.
        #[arg(long)]
        dirs: bool,
        /// One JSON object per guest or directory (README: "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// For packagers: write the man pages (fshost.1, fshost-SUBCOMMAND.1,
    /// mount.fshost.8) and shell completions (bash, zsh, fish) into DIR.
    #[command(hide = true)]
    Generate { dir: PathBuf },
    /// Mount SOURCE at MOUNTPOINT in service mode: this process opens and
    /// mounts (root; other users through fusermount3), and a server
    /// confined before it reads anything (no capabilities, as root --user
    /// or nobody, Landlock, a seccomp allow-list)
    /// serves; SIGTERM unmounts. Read-only. Returns once it serves unless
    /// --foreground. With --socket, the server is the one fshost.socket
    /// starts (systemd). Needs --plugin: detection would parse the image
    /// before the server is confined.
    Serve {
        #[command(flatten)]
        source: SourceArgs,
        /// Where to mount.
        mountpoint: PathBuf,
        /// Hand the mount to the server listening here (fshost.socket)
        /// instead of forking one.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Stay in the foreground until unmounted (or SIGINT/SIGTERM).
        #[arg(short, long, conflicts_with = "socket")]
        foreground: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Internal: the server a socket unit starts for one connection (see serve.rs).
    #[command(hide = true)]
    ServeFds,
    /// Internal: the unmount helper a sandboxed mount starts (see sandbox/unmounter.rs).
    #[command(name = crate::sandbox::unmounter::COMMAND, hide = true)]
    SandboxUnmounter { mountpoint: PathBuf },
}

impl Cli {
    /// Parse the process's arguments. `--version` also names the contract
    /// this host speaks and the guests `--plugin NAME` would find.
    pub fn from_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        // Listing the guests reads every file on the plugin search path:
        // only when the long version is asked for, not on every command.
        let mut cmd = Cli::command();
        if std::env::args_os().skip(1).any(|a| a == "--version") {
            cmd = cmd.long_version(long_version());
        }
        let matches = cmd.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

fn long_version() -> String {
    let mut v = format!(
        "{}\ncontract: {}@{} (accepts guests built for {})",
        env!("CARGO_PKG_VERSION"),
        crate::plugin::identity::PACKAGE,
        crate::plugin::CONTRACT_VERSION,
        crate::plugin::identity::speaks()
    );
    let found = SearchPath::from_env().list();
    let usable: Vec<String> = found
        .iter()
        .filter(|f| f.shadowed_by.is_none() && matches!(f.kind, Kind::Guest(_)))
        .map(|f| format!("{} ({})", f.name.to_string_lossy(), f.path.display()))
        .collect();
    if usable.is_empty() {
        v.push_str("\nguests: none found (fshost plugins --dirs lists where they are looked for)");
    } else {
        v.push_str("\nguests: ");
        v.push_str(&usable.join(", "));
    }
    v
}

/// How `ls -l` and `stat` print times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeArg {
    /// Local time (TZ), as ls -l and stat(1) print it.
    Local,
    /// Seconds.nanoseconds since the epoch, for scripts.
    Epoch,
}

impl TimeArg {
    /// Must run before the sandbox: the local zone is read from a file.
    fn format(self, long: bool, json: bool) -> Format {
        let times = match self {
            _ if json => return Format::Json,
            TimeArg::Local => TimeStyle::local(),
            TimeArg::Epoch => TimeStyle::Epoch,
        };
        Format::Text { long, times }
    }
}

/// The process sandbox, entered once the source, the guest and /dev/fuse are
/// open (ARCHITECTURE.md, "Sandbox").
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// When started as root, serve as this user [default: nobody].
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,
    /// When started as root, serve as this group [default: the user's primary group, else nogroup].
    #[arg(long, value_name = "NAME|GID")]
    pub group: Option<String>,
    /// Debugging only: keep every privilege (no uid change, no Landlock, no seccomp).
    #[arg(long, conflicts_with_all = ["user", "group"])]
    pub no_sandbox: bool,
}

impl SandboxArgs {
    pub fn options(&self) -> crate::sandbox::Options {
        crate::sandbox::Options { disabled: self.no_sandbox, user: self.user.clone(), group: self.group.clone() }
    }
}

/// What every command needs: a guest and a source.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The guest that parses this filesystem: a name ("ext4", looked up as
    /// ext4.wasm in $FSHOST_PLUGIN_PATH, $XDG_DATA_HOME/fshost/plugins, ...;
    /// see `fshost plugins --dirs`) or a path (contains '/' or ends in .wasm).
    /// Left out, or `auto`: the one installed filesystem guest that mounts
    /// the source read-only (several or none is an error naming them).
    #[arg(long, short = 'p', value_name = "NAME|PATH|auto")]
    pub plugin: Option<OsString>,
    /// An image file or block device.
    pub source: PathBuf,
    /// Mount options, comma-separated: ro, rw (mount only: read-write),
    /// allow_other, noexec; others go to the guest (e.g. norecovery, sb=N).
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// Per-call time limit for the guest, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub guest_timeout_ms: u64,
    /// Memory limit for the guest, in MiB.
    #[arg(long, default_value_t = 256)]
    pub guest_memory_mib: usize,
    /// Do not use or fill the compiled-guest cache.
    #[arg(long)]
    pub no_cache: bool,
    /// A whole disk: use its partition N (as the kernel numbers them:
    /// sdaN; `fshost partitions` lists them), or the one whose GPT name is
    /// NAME, or whose unique GUID (an MBR disk's SSSSSSSS-NN) is UUID.
    /// Left out on a disk with no filesystem of its own, the one partition
    /// a guest mounts is used (several are refused, listed).
    #[arg(long, value_name = "N|name=NAME|uuid=UUID")]
    pub partition: Option<crate::partitions::Selector>,
    /// The volume guest that reads the partition table [default: partitions].
    #[arg(long, value_name = "NAME|PATH")]
    pub volume: Option<OsString>,
    /// The disk-image format of SOURCE: the volume guest that reads it
    /// (qcow2), or `raw` for none [default: found by the installed
    /// image-format guests' probes].
    #[arg(long, value_name = "NAME|PATH|raw")]
    pub image_format: Option<OsString>,
    /// The file an image is based on (a qcow2 backing file): fshost never
    /// opens a file an image names. Repeat for a chain, nearest first.
    #[arg(long, value_name = "FILE")]
    pub backing: Vec<PathBuf>,
}

/// Host-level mount options, split from those meant for the guest.
#[derive(Debug, Default)]
pub(crate) struct HostOptions {
    /// `rw`: a read-write mount (opt-in; `ro` is the default).
    pub rw: bool,
    pub allow_other: bool,
    /// `noexec`: nothing on the mount may be executed.
    pub noexec: bool,
    /// `attr_cache=N`, `map_cache=N`: the host's cache sizes.
    pub cache_sizes: crate::volume::CacheSizes,
    pub guest: Vec<(String, String)>,
}

pub(crate) fn split_options(raw: &[String]) -> anyhow::Result<HostOptions> {
    let mut out = HostOptions::default();
    for opt in raw.iter().filter(|o| !o.is_empty()) {
        let (name, value) = opt.split_once('=').unwrap_or((opt, ""));
        match name {
            "nosuid" | "nodev" => {}
            "ro" => out.rw = false,
            "rw" => out.rw = true,
            "allow_other" => out.allow_other = true,
            "noexec" => out.noexec = true,
            "exec" => out.noexec = false,
            "attr_cache" => out.cache_sizes.attrs = cache_size(name, value)?,
            "map_cache" => out.cache_sizes.mappings = cache_size(name, value)?,
            "suid" | "dev" => bail!("-o {name} is refused: images are untrusted, so fshost mounts nosuid,nodev"),
            _ => out.guest.push((name.to_string(), value.to_string())),
        }
    }
    Ok(out)
}

/// A cache size option's value: a count of at least 2.
fn cache_size(name: &str, value: &str) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => bail!("-o {name}={value}: give a number of entries, at least 2"),
    }
}

/// What a source turned out to hold. (One per process, moved once: the
/// size difference of the variants costs nothing.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Opened {
    /// A filesystem, mounted by its guest.
    Fs(Volume),
    /// A whole disk with no filesystem of its own, and what each of its
    /// partitions holds.
    Disk(crate::disk::Disk),
}

/// What a command does with a whole disk given without `--partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WholeDisk {
    /// Use its one mountable partition (mount, cat, stat, cp-out, ls PATH).
    UseTheOne,
    /// List its partitions (ls without a path, info).
    List,
}

/// Open the source and mount its filesystem, read-write when `rw`.
fn open_volume(args: &SourceArgs, guest: Vec<(String, String)>, rw: bool) -> anyhow::Result<Volume> {
    match open_source(args, guest, rw, WholeDisk::UseTheOne)? {
        Opened::Fs(vol) => Ok(vol),
        Opened::Disk(_) => bail!("{}: a partitioned disk, where a filesystem was wanted", args.source.display()),
    }
}

/// Open the source (through its image format and `--partition`), load the
/// guest and mount it, read-write when `rw`; a whole disk without a
/// filesystem of its own is handled as `whole` says.
fn open_source(args: &SourceArgs, guest: Vec<(String, String)>, rw: bool, whole: WholeDisk) -> anyhow::Result<Opened> {
    let named = match args.plugin.as_deref() {
        Some(p) if !crate::detect::wanted(Some(p)) => Some(SearchPath::from_env().resolve(p)?),
        _ => None,
    };
    let mut device = Arc::new(Device::open(&args.source, !rw)?);
    let limits = Limits {
        memory: args.guest_memory_mib.saturating_mul(1 << 20),
        call_timeout: Duration::from_millis(args.guest_timeout_ms.max(10)),
        ..Limits::default()
    };
    let cache = if args.no_cache { None } else { CompileCache::default_location() };
    // A disk-image format (qcow2) below everything else, read through its guest.
    let image = crate::stack::Options { format: args.image_format.as_deref(), backing: &args.backing };
    device = crate::stack::open(device, &image, &limits, cache.as_ref())?;
    if let Some(which) = &args.partition {
        // The volume guest parses the table before the sandbox point, as
        // the filesystem guest's mount does, and is dropped once the
        // partition is a window.
        let volumes = crate::partitions::load(args.volume.as_deref(), device, limits.clone(), cache.as_ref())?;
        device = crate::partitions::open(&volumes, which)?;
    }
    if rw && device.read_only() {
        bail!("{}: a disk-image format is read-only in fshost; mount read-only (without -o rw)", args.source.display());
    }
    let source = args.source.display().to_string();
    let mounting = |plugin: Plugin, device: Arc<Device>, path: &Path| {
        Volume::mount(plugin, device).with_context(|| format!("mounting {source} with {}", path.display()))
    };
    // With rw, the guest chosen read-only is loaded again to write.
    let writable = |device: Arc<Device>, path: &Path| -> anyhow::Result<Volume> {
        let options = GuestOptions { read_only: false, options: guest.clone() };
        let (plugin, _) = Plugin::load(path, device.clone(), limits.clone(), options, cache.as_ref())?;
        mounting(plugin, device, path)
    };
    // A whole disk (no --partition) with no filesystem of its own: its
    // partitions, each looked at as the disk itself was.
    let partitioned = |device: &Arc<Device>| {
        let how = crate::disk::Probe {
            named: named.as_deref(),
            volume: args.volume.as_deref(),
            limits: &limits,
            options: &guest,
            cache: cache.as_ref(),
        };
        match crate::disk::probe(device, &how) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("{e:#}");
                None
            }
        }
    };
    // A whole disk: listed, or its one mountable partition mounted.
    let use_disk = |disk: crate::disk::Disk, detected: bool| -> anyhow::Result<Opened> {
        if whole == WholeDisk::List {
            return Ok(Opened::Disk(disk));
        }
        let path = disk.path.clone();
        let chosen = disk.into_only()?;
        if detected {
            crate::detect::record(&chosen.detected, &format!("partition {} of {path}", chosen.number));
        }
        if rw {
            drop(chosen.plugin);
            return writable(chosen.device, &chosen.detected.path).map(Opened::Fs);
        }
        mounting(chosen.plugin, chosen.device, &chosen.detected.path).map(Opened::Fs)
    };
    let on_whole_disk = args.partition.is_none();
    match &named {
        Some(path) => {
            let options = GuestOptions { read_only: !rw, options: guest.clone() };
            let (mounted, complaints) = crate::plugin::capture_warnings(|| -> anyhow::Result<Volume> {
                let (plugin, stats) = Plugin::load(path, device.clone(), limits.clone(), options, cache.as_ref())?;
                tracing::info!(
                    "guest {} {} in {:.1} ms",
                    path.display(),
                    if stats.compiled { "compiled" } else { "loaded from cache" },
                    stats.millis
                );
                mounting(plugin, device.clone(), path)
            });
            let refused = match mounted {
                Ok(vol) => {
                    complaints.iter().for_each(|c| tracing::warn!(target: "fshost::guest", "{c}"));
                    return Ok(Opened::Fs(vol));
                }
                Err(e) => e,
            };
            if on_whole_disk && let Some(disk) = partitioned(&device) {
                // No partition to use either: the guest's refusal of the
                // whole disk comes first, what the partitions hold after.
                return use_disk(disk, false).map_err(|e| e.context(format!("{refused:#}")));
            }
            complaints.iter().for_each(|c| tracing::warn!(target: "fshost::guest", "{c}"));
            Err(refused)
        }
        None => {
            // Each installed guest tries a read-only mount; the one that
            // claims the device is used as it stands unless rw is asked for.
            let claims = crate::detect::claims(&device, &limits, &guest, cache.as_ref())?;
            if claims.mounted.is_empty()
                && on_whole_disk
                && let Some(disk) = partitioned(&device)
            {
                return use_disk(disk, true);
            }
            let (found, plugin) = crate::detect::decide(claims, &source)?;
            if rw {
                return writable(device, &found.path).map(Opened::Fs);
            }
            mounting(plugin, device, &found.path).map(Opened::Fs)
        }
    }
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// What an offline command's error is about: the image, before the path in it.
fn in_image(source: &SourceArgs) -> String {
    source.source.display().to_string()
}

/// Run a parsed command line. Fails on the first error, except `cp-out`,
/// which reports each object it could not copy and then exits 1.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match cli.command {
        Command::Mount { source, mountpoint, foreground, sandbox } => {
            drop(out);
            crate::mount::run(&source, &mountpoint, foreground, &sandbox.options())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Serve { source, mountpoint, socket, foreground, sandbox } => {
            drop(out);
            crate::serve::front::run(&source, &mountpoint, socket.as_deref(), foreground, &sandbox.options())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::ServeFds => {
            drop(out);
            crate::serve::server::from_socket_activation()?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Ls { source, path, long, time_style, json, sandbox } => {
            let format = time_style.format(long, json);
            let whole = if path.is_some() { WholeDisk::UseTheOne } else { WholeDisk::List };
            let vol = match open_source_sandboxed(&source, &sandbox, whole)? {
                Opened::Fs(vol) => vol,
                Opened::Disk(disk) => {
                    eprintln!(
                        "fshost: {} is a partitioned disk ({} table): its partitions are listed \
                         (number, type, length, filesystem, name); --partition N lists one",
                        disk.path, disk.table.format
                    );
                    disk.list(json, &mut out)?;
                    out.flush()?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let path = path.unwrap_or_else(|| PathBuf::from("/"));
            let failed = crate::offline::ls(&vol, path_bytes(&path), &format, &mut out).context(in_image(&source))?;
            if failed > 0 {
                out.flush()?;
                // As ls(1): listed, but with problems.
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Stat { source, path, time_style, json, sandbox } => {
            let format = time_style.format(false, json);
            let vol = open_sandboxed(&source, &sandbox)?;
            crate::offline::stat(&vol, path_bytes(&path), &format, &mut out).context(in_image(&source))?;
        }
        Command::Cat { source, path, sandbox } => {
            let vol = open_sandboxed(&source, &sandbox)?;
            crate::offline::cat(&vol, path_bytes(&path), &mut out).context(in_image(&source))?;
        }
        Command::CpOut { source, path, dest, sandbox } => {
            let open = || open_volume(&source, offline_options(&source)?, false);
            return crate::offline::cp_out(path_bytes(&path), &dest, &sandbox.options(), &in_image(&source), open);
        }
        Command::Info { source, json, sandbox } => {
            let opened = open_source_sandboxed(&source, &sandbox, WholeDisk::List)?;
            info(&opened, json, &mut out).context(in_image(&source))?;
        }
        Command::Partitions { source, volume, image_format, backing, json, no_cache, sandbox } => {
            let jail = crate::sandbox::prepare(&sandbox.options(), crate::sandbox::Profile::Offline)?;
            let device = Arc::new(Device::open(&source, true)?);
            let cache = if no_cache { None } else { CompileCache::default_location() };
            // The table of a disk image's virtual disk (qcow2 -> GPT).
            let image = crate::stack::Options { format: image_format.as_deref(), backing: &backing };
            let device = crate::stack::open(device, &image, &Limits::default(), cache.as_ref())?;
            let guest = crate::partitions::load(volume.as_deref(), device, Limits::default(), cache.as_ref())?;
            guest.start()?;
            // Compiled and instantiated; the table is parsed inside the sandbox.
            if let Some(report) = jail.enter()?.report {
                tracing::info!("{report}");
            }
            let table = crate::partitions::table(&guest)?;
            crate::partitions::list(&table, &source, json, &mut out)?;
        }
        Command::Plugins { dirs, json } => plugins(dirs, json, &mut out)?,
        Command::Generate { dir } => crate::docs::generate(&dir)?,
        Command::SandboxUnmounter { mountpoint } => crate::sandbox::unmounter::serve(&mountpoint),
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `fshost plugins`: one tab-separated line per guest file on the search
/// path, in search order; or the directories themselves.
fn plugins(dirs: bool, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    use crate::offline::json::put_bytes;
    let search = SearchPath::from_env();
    if dirs {
        for dir in search.dirs() {
            if json {
                let mut obj = serde_json::Map::new();
                put_bytes(&mut obj, "dir", path_bytes(dir));
                obj.insert("exists".into(), dir.is_dir().into());
                serde_json::to_writer(&mut *out, &obj)?;
                out.write_all(b"\n")?;
                continue;
            }
            out.write_all(path_bytes(dir))?;
            out.write_all(if dir.is_dir() { b"\n" } else { b"\t(missing)\n" })?;
        }
        return Ok(());
    }
    for found in search.list() {
        let (version, status) = match &found.kind {
            Kind::Guest(v) => (v.as_str(), "ok"),
            Kind::Incompatible(v) => (v.as_str(), "incompatible"),
            Kind::NotAGuest(_) => ("-", "not-a-guest"),
            Kind::Volume(v, ok) => (v.as_str(), if *ok { "volume" } else { "incompatible-volume" }),
        };
        let status = if found.shadowed_by.is_some() { "shadowed" } else { status };
        if json {
            let mut obj = serde_json::Map::new();
            put_bytes(&mut obj, "name", found.name.as_bytes());
            obj.insert("contract".into(), (version != "-").then_some(version).into());
            obj.insert("size".into(), found.size.into());
            put_bytes(&mut obj, "path", path_bytes(&found.path));
            obj.insert("status".into(), status.into());
            serde_json::to_writer(&mut *out, &obj)?;
            out.write_all(b"\n")?;
            continue;
        }
        out.write_all(found.name.as_bytes())?;
        write!(out, "\t{version}\t{}\t", found.size)?;
        out.write_all(path_bytes(&found.path))?;
        writeln!(out, "\t{status}")?;
    }
    Ok(())
}

/// Open the volume for a command that only writes to stdout, then enter
/// the sandbox before the command reads anything through the guest.
fn open_sandboxed(source: &SourceArgs, sandbox: &SandboxArgs) -> anyhow::Result<Volume> {
    match open_source_sandboxed(source, sandbox, WholeDisk::UseTheOne)? {
        Opened::Fs(vol) => Ok(vol),
        Opened::Disk(_) => bail!("{}: a partitioned disk, where a filesystem was wanted", source.source.display()),
    }
}

/// [`open_source`] for a command that only writes to stdout, then the
/// sandbox, before anything is read through the guests.
fn open_source_sandboxed(source: &SourceArgs, sandbox: &SandboxArgs, whole: WholeDisk) -> anyhow::Result<Opened> {
    let jail = crate::sandbox::prepare(&sandbox.options(), crate::sandbox::Profile::Offline)?;
    let opened = open_source(source, offline_options(source)?, false, whole)?;
    if let Some(report) = jail.enter()?.report {
        tracing::info!("{report}");
    }
    Ok(opened)
}

/// `fshost info`: the image layers (`image:`, `backing:`, `snapshots:`),
/// then the filesystem (with `detected:` when detection chose its guest),
/// or a whole disk's table and what each partition holds. With `json`, one
/// object: the filesystem's keys (or `table` and `partitions`), `images`
/// and `detected`.
fn info(opened: &Opened, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if !json {
        // The image layers under the filesystem (qcow2, its backing files).
        crate::stack::write_info(out)?;
        match opened {
            Opened::Disk(disk) => disk.info_text(out)?,
            Opened::Fs(vol) => {
                if let Some(d) = crate::detect::detected() {
                    out.write_all(b"detected: ")?;
                    out.write_all(d.name.as_bytes())?;
                    out.write_all(b" (")?;
                    out.write_all(path_bytes(&d.path))?;
                    out.write_all(b")\n")?;
                }
                let text = Format::Text { long: false, times: TimeStyle::Epoch };
                crate::offline::info(vol, &text, out)?;
            }
        }
        return Ok(());
    }
    let mut obj = match opened {
        Opened::Disk(disk) => disk.info_json()?,
        Opened::Fs(vol) => {
            let mut buf = Vec::new();
            crate::offline::info(vol, &Format::Json, &mut buf)?;
            serde_json::from_slice(&buf)?
        }
    };
    obj.insert("images".into(), crate::stack::info_json().into());
    if let (Opened::Fs(_), Some(d)) = (opened, crate::detect::detected()) {
        // The guest detection chose.
        crate::offline::json::put_bytes(&mut obj, "detected", d.name.as_bytes());
    }
    serde_json::to_writer(&mut *out, &obj)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Whether `-o` asks for a read-write mount.
pub(crate) fn wants_rw(source: &SourceArgs) -> anyhow::Result<bool> {
    Ok(split_options(&source.options)?.rw)
}

/// The guest's options for an offline command, which never writes.
fn offline_options(source: &SourceArgs) -> anyhow::Result<Vec<(String, String)>> {
    let opts = split_options(&source.options)?;
    if opts.rw {
        bail!("-o rw is for `fshost mount`: the offline commands only read");
    }
    Ok(opts.guest)
}

pub(crate) fn mount_volume(source: &SourceArgs) -> anyhow::Result<(Volume, HostOptions)> {
    let mut opts = split_options(&source.options)?;
    let guest = std::mem::take(&mut opts.guest);
    Ok((open_volume(source, guest, opts.rw)?, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_between_host_and_guest() {
        let o = split_options(&["ro".into(), "allow_other".into(), "norecovery".into(), "sb=8193".into()]).unwrap();
        assert!(o.allow_other && !o.noexec);
        assert!(split_options(&["noexec".into()]).unwrap().noexec);
        assert_eq!(o.guest, vec![("norecovery".into(), "".into()), ("sb".into(), "8193".into())]);
        assert!(split_options(&["suid".into()]).is_err());
        assert!(split_options(&["rw".into()]).unwrap().rw, "rw is opt-in");
        assert!(!split_options(&["rw".into(), "ro".into()]).unwrap().rw, "the last one wins");
        assert!(!o.rw, "read-only by default");
    }

    #[test]
    fn cache_sizes_are_host_options() {
        let o = split_options(&["attr_cache=100".into(), "map_cache=7".into(), "block_cache=9".into()]).unwrap();
        assert_eq!((o.cache_sizes.attrs, o.cache_sizes.mappings), (100, 7));
        assert_eq!(o.guest, vec![("block_cache".into(), "9".into())], "the guest's own cache stays the guest's");
        for bad in ["attr_cache=1", "map_cache=", "attr_cache=many"] {
            assert!(split_options(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
