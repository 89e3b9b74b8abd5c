//! `mount.fshost`: the helper mount(8) runs for `mount -t fshost` and for
//! /etc/fstab lines of type `fshost` (or `fshost.GUEST`).
//!
//! mount(8) calls `/sbin/mount.TYPE SOURCE DIR [-sfnvrw] [-N NS] [-o OPTS]
//! [-t TYPE.SUBTYPE]` (util-linux, mount(8) "External helpers"). The
//! helper is the fshost binary itself under that name (a symlink): it
//! turns the call into `fshost mount --plugin GUEST SOURCE DIR -o ...` and
//! executes that, so a helper mount is exactly a command-line mount.
//!
//! Options: `plugin=NAME` (or the type's subtype, `-t fshost.ext4`) names
//! the guest. mount(8)'s own options (`defaults`, `auto`, `nofail`,
//! `user`, `_netdev`, `comment=`, ...) mean nothing to fshost and are left
//! out; `x-*` options never reach a helper. mount(8) adds `rw` unless told
//! `ro`, so the helper cannot tell a `rw` the user wrote from mount(8)'s
//! default: read-only stays the default, and a read-write mount is asked
//! for with the option `writable` (with mount(8)'s `rw`): `mount -t
//! fshost.ext4 -o writable img /mnt`, or `writable` in the fstab line.
//! `rw` alone mounts read-only with a note saying so. Everything else goes
//! to `fshost mount -o` (host options such as `allow_other`, `noexec`, and
//! the guest's own, such as `norecovery`). The option `service` runs
//! `fshost serve` instead (service mode, read-only, root: the process that
//! parses the image is confined before it reads any).

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;

use anyhow::{Context, bail};

/// The name mount(8) looks for: /sbin/mount.fshost (and mount.fshost.GUEST).
pub const NAME: &str = "mount.fshost";

/// Whether `argv0` names the helper (`mount.fshost`, `mount.fshost.ext4`).
pub fn is_helper(argv0: &OsStr) -> bool {
    let base = std::path::Path::new(argv0).file_name().unwrap_or_default();
    base == NAME || base.as_encoded_bytes().starts_with(format!("{NAME}.").as_bytes())
}

/// Options that are mount(8)'s business (fstab and the mount table), not
/// the filesystem's: fshost drops them.
const MOUNT8_ONLY: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "rw",
    "ro",
    // Access-time and sync options change nothing on a read-only mount.
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "sync",
    "async",
    "dirsync",
];

/// What the helper was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub source: OsString,
    pub dir: OsString,
    pub plugin: Option<String>,
    /// Options for `fshost mount -o`.
    pub options: Vec<String>,
    /// mount(8) asked for a read-write mount (its default).
    pub rw: bool,
    /// The user asked for a read-write mount (`-o writable`).
    pub writable: bool,
    /// Service mode (`-o service`): `fshost serve` instead of `fshost mount`.
    pub service: bool,
    pub fake: bool,
    pub verbose: bool,
}

/// Parse `mount.fshost[.GUEST] SOURCE DIR [-sfnvrw] [-N NS] [-o OPTS] [-t TYPE]`.
pub fn parse(argv: &[OsString]) -> anyhow::Result<Request> {
    let mut it = argv.iter();
    let argv0 = it.next().context("no program name")?;
    // fshost.ext4 -> ext4, as a type (-t) or in our own name (mount.fshost.ext4).
    let subtype = |t: &OsStr| t.to_str().and_then(|t| t.strip_prefix("fshost.")).map(str::to_string);
    let own_name = std::path::Path::new(argv0).file_name().unwrap_or_default();
    let mut plugin = own_name.to_str().and_then(|n| n.strip_prefix("mount.")).and_then(|n| subtype(OsStr::new(n)));
    let mut positional = Vec::new();
    let mut raw_opts = Vec::new();
    let (mut rw, mut fake, mut verbose, mut writable, mut service) = (true, false, false, false, false);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-o") => {
                raw_opts.push(it.next().context("-o needs options")?.to_str().context("options must be UTF-8")?)
            }
            Some("-t") => {
                if let Some(sub) = subtype(it.next().context("-t needs a type")?) {
                    plugin = Some(sub);
                }
            }
            Some("-N") => bail!("-N (another mount namespace) is not supported by mount.fshost"),
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                for f in flags[1..].chars() {
                    match f {
                        's' | 'n' => {}
                        'f' => fake = true,
                        'v' => verbose = true,
                        'r' => rw = false,
                        'w' => rw = true,
                        other => bail!("unknown mount helper flag -{other}"),
                    }
                }
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [source, dir]: [OsString; 2] = positional
        .try_into()
        .map_err(|_| anyhow::anyhow!("usage: {NAME} SOURCE DIR [-sfnvrw] [-o OPTIONS] [-t TYPE]"))?;
    let mut options = Vec::new();
    for opt in raw_opts.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
        let (name, value) = opt.split_once('=').unwrap_or((opt, ""));
        match name {
            "plugin" => plugin = Some(value.to_string()),
            "rw" => rw = true,
            "ro" => rw = false,
            "writable" => writable = true,
            "service" => service = true,
            "comment" => {}
            _ if MOUNT8_ONLY.contains(&name) || name.starts_with("x-") => {}
            _ => options.push(opt.to_string()),
        }
    }
    Ok(Request { source, dir, plugin, options, rw, writable, service, fake, verbose })
}

impl Request {
    /// The `fshost` command line that performs this mount.
    pub fn command_line(&self) -> anyhow::Result<Vec<OsString>> {
        // Without a guest named, `fshost mount` asks the installed guests
        // (detection, as `fshost mount` without --plugin); the service mode
        // cannot: its root front end would parse the image unconfined.
        if self.plugin.is_none() && self.service {
            bail!(
                "service mode (-o service) needs the guest named: add plugin=NAME to the options (-o plugin=ext4), or use the type fshost.NAME (-t fshost.ext4)"
            );
        }
        if self.service && self.read_write() {
            bail!("service mode (-o service) mounts read-only: leave out writable");
        }
        let command = if self.service { "serve" } else { "mount" };
        let mut args: Vec<OsString> = vec![command.into()];
        if let Some(plugin) = &self.plugin {
            args.extend(["--plugin".into(), plugin.into()]);
        }
        args.push(self.source.clone());
        args.push(self.dir.clone());
        let mut options = vec![if self.read_write() { "rw" } else { "ro" }.to_string()];
        options.extend(self.options.iter().cloned());
        args.push("-o".into());
        args.push(options.join(",").into());
        if self.verbose {
            args.push("-v".into());
        }
        Ok(args)
    }
}

impl Request {
    /// Whether the mount is read-write: `writable` asked, and mount(8)
    /// not told `ro` (`-r`, `-o ro`).
    pub fn read_write(&self) -> bool {
        self.rw && self.writable
    }
}

/// Run as `mount.fshost`: parse, then become `fshost mount ...` (exec).
pub fn main() -> anyhow::Result<std::process::ExitCode> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let req = parse(&argv)?;
    let args = req.command_line()?;
    if req.writable && !req.rw {
        bail!("{NAME}: `writable` and `ro` contradict each other");
    }
    if req.rw && !req.writable && req.verbose {
        eprintln!(
            "{NAME}: mounting {} read-only (fshost's default; add -o writable for a read-write mount)",
            req.source.to_string_lossy()
        );
    }
    if req.verbose || req.fake {
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        eprintln!("{NAME}: fshost {}", shown.join(" "));
    }
    if req.fake {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().context("finding the fshost executable")?;
    let err = std::process::Command::new(&exe).arg0("fshost").args(&args).exec();
    Err(err).with_context(|| format!("executing {}", exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn what_mount8_passes_for_a_plain_call() {
        // `mount -t fshost img /mnt -o plugin=ext4` (seen from util-linux 2.38).
        let r = parse(&argv(&["/sbin/mount.fshost", "img", "/mnt", "-o", "rw,plugin=ext4"])).unwrap();
        assert_eq!(r.plugin.as_deref(), Some("ext4"));
        assert!(r.rw && r.options.is_empty());
        assert_eq!(r.command_line().unwrap(), argv(&["mount", "--plugin", "ext4", "img", "/mnt", "-o", "ro"]));
    }

    #[test]
    fn writable_asks_for_a_read_write_mount_and_ro_wins() {
        let r = parse(&argv(&["/sbin/mount.fshost", "img", "/mnt", "-o", "rw,writable,plugin=ext4"])).unwrap();
        assert!(r.read_write() && r.options.is_empty());
        assert_eq!(r.command_line().unwrap(), argv(&["mount", "--plugin", "ext4", "img", "/mnt", "-o", "rw"]));
        let r = parse(&argv(&["/sbin/mount.fshost", "img", "/mnt", "-o", "ro,writable,plugin=ext4"])).unwrap();
        assert!(!r.read_write());
        let r = parse(&argv(&["/sbin/mount.fshost", "img", "/mnt", "-r", "-o", "writable,plugin=ext4"])).unwrap();
        assert!(!r.read_write());
    }

    #[test]
    fn subtype_names_the_guest_and_mount8_options_are_dropped() {
        let r = parse(&argv(&[
            "/sbin/mount.fshost",
            "img",
            "/mnt",
            "-o",
            "ro,noexec,nosuid,nodev,nofail,user,comment=x,norecovery",
            "-t",
            "fshost.fat",
            "-v",
        ]))
        .unwrap();
        assert_eq!(r.plugin.as_deref(), Some("fat"));
        assert!(!r.rw && r.verbose);
        assert_eq!(r.options, ["noexec", "nosuid", "nodev", "norecovery"]);
        let named = parse(&argv(&["mount.fshost.ext4", "img", "/mnt"])).unwrap();
        assert_eq!(named.plugin.as_deref(), Some("ext4"));
    }

    #[test]
    fn service_runs_fshost_serve_read_only() {
        let r = parse(&argv(&["/sbin/mount.fshost", "img", "/mnt", "-o", "rw,service,plugin=ext4,noexec"])).unwrap();
        assert!(r.service);
        assert_eq!(r.command_line().unwrap(), argv(&["serve", "--plugin", "ext4", "img", "/mnt", "-o", "ro,noexec"]));
        let w = parse(&argv(&["mount.fshost.ext4", "img", "/mnt", "-o", "rw,service,writable"])).unwrap();
        assert!(w.command_line().unwrap_err().to_string().contains("read-only"));
    }

    #[test]
    fn without_a_guest_named_fshost_detects_it() {
        let r = parse(&argv(&["mount.fshost", "img", "/mnt", "-o", "ro,nofail,x-systemd.automount"])).unwrap();
        assert_eq!(r.command_line().unwrap(), argv(&["mount", "img", "/mnt", "-o", "ro"]));
    }

    #[test]
    fn a_missing_guest_or_operand_is_a_clear_error() {
        let r = parse(&argv(&["mount.fshost", "img", "/mnt", "-o", "ro,service"])).unwrap();
        assert!(r.command_line().unwrap_err().to_string().contains("plugin=NAME"));
        assert!(parse(&argv(&["mount.fshost", "img"])).is_err());
        assert!(parse(&argv(&["mount.fshost", "img", "/mnt", "-x"])).is_err());
        assert!(is_helper(OsStr::new("/usr/sbin/mount.fshost.ext4")) && !is_helper(OsStr::new("fshost")));
    }
}
