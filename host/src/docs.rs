//! Man pages and shell completions, generated from the CLI definition so
//! they cannot drift from it (`fshost generate DIR`; `cargo xtask install`
//! puts them where distributions expect them).

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// Write `man/fshost.1`, `man/fshost-SUB.1` for each visible subcommand,
/// `man/mount.fshost.8`, and `completions/{fshost.bash,_fshost,fshost.fish}`
/// under `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let cmd = Cli::command();
    write_man(&cmd, &man.join("fshost.1"))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("fshost-{}", sub.get_name());
        let sub = sub.clone().name(&name).version(cmd.get_version().unwrap_or_default().to_string());
        write_man(&sub, &man.join(format!("{name}.1")))?;
    }
    std::fs::write(man.join("mount.fshost.8"), MOUNT_HELPER_PAGE).context("writing mount.fshost.8")?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "fshost.bash"),
        (clap_complete::Shell::Zsh, "_fshost"),
        (clap_complete::Shell::Fish, "fshost.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "fshost", &mut out);
        std::fs::write(completions.join(file), out).with_context(|| format!("writing {file}"))?;
    }
    Ok(())
}

fn write_man(cmd: &clap::Command, path: &Path) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// mount.fshost(8): the helper is not a clap command (mount(8) fixes its
/// argument syntax), so its page is written by hand, in roff.
const MOUNT_HELPER_PAGE: &str = r#".TH MOUNT.FSHOST 8 "" "fshost" "System Administration"
.SH NAME
mount.fshost \- mount(8) helper for fshost, the sandboxed filesystem host
.SH SYNOPSIS
.B mount \-t fshost
.I SOURCE DIR
.B \-o plugin=\fIGUEST\fR[,\fIOPTIONS\fR]
.br
.B mount \-t fshost.\fIGUEST\fR
.I SOURCE DIR
.RB [ \-o
.IR OPTIONS ]
.SH DESCRIPTION
mount(8) runs this helper for filesystems of type
.B fshost
or
.BR fshost.GUEST ,
on the command line or in /etc/fstab. It runs
.B fshost mount \-\-plugin
.I GUEST SOURCE DIR
.B \-o ro,\fIOPTIONS\fR,
which parses the image inside a WebAssembly sandbox and serves it
through FUSE (type fuse.fshost), read-only unless
.B writable
is given. Unmount with umount(8).
.SH OPTIONS
.TP
.BI plugin= GUEST
The guest that parses the filesystem: a name (ext4, fat) found on the
plugin search path (see
.BR "fshost plugins \-\-dirs" ),
or a path to a .wasm file. The type's subtype names it too. Without
either, the installed guests are asked in turn, as
.B fshost mount
without \-\-plugin does (an ambiguity is refused); the service mode
needs the guest named.
.TP
.B ro, rw
mount(8) passes rw unless told ro, so rw alone cannot ask for writing:
fshost mounts read-only.
.TP
.B writable
A read-write mount (fshost mount \-o rw), for a guest that can write the
format; refused with the guest's reason otherwise. ro wins.
.TP
.B allow_other, noexec, nosuid, nodev
As for any FUSE mount. suid and dev are refused: images are untrusted.
.TP
.B defaults, auto, noauto, nofail, user, users, owner, group, _netdev, comment=, x\-*
mount(8) and systemd options; the helper ignores them.
.TP
Any other option
goes to the guest (for ext4: norecovery, sb=N).
.SH EXAMPLES
.nf
mount \-t fshost disk.img /mnt \-o plugin=ext4,ro
mount \-t fshost.ext4 disk.img /mnt \-o writable
/srv/disk.img  /mnt/disk  fshost  plugin=ext4,ro,nofail  0 0
.fi
.SH SEE ALSO
.BR fshost (1),
.BR fshost\-mount (1),
.BR mount (8),
.BR fstab (5)
"#;
