//! `cp-out` in the sandbox (issue 14, item 6), proven through the real
//! binary:
//!
//! - while it copies, both of its processes are confined, as the kernel
//!   shows in /proc: the writer (the process started) and the reader (its
//!   child, which runs the guest) with seccomp filter mode, no_new_privs and
//!   no capability on every thread; as root the writer keeps uid 0 and the
//!   reader is nobody. The copy is held mid-way by a full stderr pipe (each
//!   device node in the image costs a warning line) that the test reads only
//!   after looking.
//! - crafted images whose names and symlinks try to climb out of DEST
//!   write nothing outside it: a directory, a file and a hard link each
//!   named like the symlink to outside that precedes it in the same
//!   directory (two entries with one name, written with debugfs and a
//!   patched directory block), a symlink to `..` followed by a directory of
//!   that name, and names `..` and `q/w` patched into a directory block.
//!   Every refused object is reported and the exit status is 1.
//! - stderr not a terminal: no progress line.
//!
//! Needs root (device nodes in the source tree, /proc of a root process);
//! CI runs as root.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fshost_tests::fshost::{fshost_bin, guest, offline};
use fshost_tests::kernel::{Image, require_root, run};
use fshost_tests::scratch::ScratchDir;

/// The value of `name:` in a /proc status file, whitespace collapsed.
fn field(status: &str, name: &str) -> String {
    let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_else(|| panic!("no {name}:"));
    line[name.len() + 1..].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The status of every thread of `pid`.
fn thread_statuses(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok()).collect()
}

fn children(pid: u32) -> Vec<u32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

#[test]
fn both_processes_are_confined_while_the_copy_runs() {
    require_root();
    let src = ScratchDir::new("cpsb-src").unwrap();
    let devs = src.path().join("devs");
    std::fs::create_dir(&devs).unwrap();
    for i in 0..3000 {
        run(Command::new("mknod").arg(devs.join(format!("c{i:05}"))).args(["c", "1", "3"])).unwrap();
    }
    std::fs::write(src.path().join("after"), b"copied after the devices\n").unwrap();
    let img = Image::mkfs(src.path(), &["-N", "4096"], "32M").unwrap();
    let out = ScratchDir::new("cpsb-out").unwrap();
    let dest = out.path().join("copy");
    let mut child = Command::new(fshost_bin())
        .args(["cp-out", "--plugin"])
        .arg(guest("ext4"))
        .arg(img.path())
        .arg("/")
        .arg(&dest)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = child.id();
    // The reader blocks on its full stderr mid-copy; by then both are in.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (reader, statuses) = loop {
        assert!(Instant::now() < deadline, "cp-out never showed two confined processes");
        let kids = children(writer);
        if let [reader] = kids[..] {
            let w = thread_statuses(writer);
            let r = thread_statuses(reader);
            let on = |s: &Vec<String>| !s.is_empty() && s.iter().all(|st| field(st, "Seccomp") == "2");
            if on(&w) && on(&r) {
                break (reader, [w, r]);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let [w, r] = &statuses;
    assert_eq!(w.len(), 1, "the writer must have a single thread (Landlock before ABI v8 holds only that)");
    assert!(r.len() >= 2, "the reader runs the guest's threads too");
    for (who, all, uid) in [("writer", w, "0 0 0 0"), ("reader", r, "65534 65534 65534 65534")] {
        for st in all {
            let name = field(st, "Name");
            for (f, want) in [("Seccomp", "2"), ("NoNewPrivs", "1"), ("Uid", uid)] {
                assert_eq!(field(st, f), want, "{who} {writer}/{reader} thread {name}: {f}");
            }
            for f in ["CapEff", "CapPrm", "CapAmb"] {
                assert_eq!(field(st, f), "0000000000000000", "{who} thread {name}: {f}");
            }
        }
    }
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {}", err.lines().last().unwrap_or(""));
    assert_eq!(err.matches("skipping a device node").count(), 3000);
    assert!(!err.contains("MiB/s"), "a progress line off a terminal:\n{err}");
    assert_eq!(std::fs::read(dest.join("after")).unwrap(), b"copied after the devices\n");
    assert_eq!(std::fs::read_dir(dest.join("devs")).unwrap().count(), 0, "device nodes are never made");
}

/// Run debugfs commands (one per line) on `img`.
fn debugfs(img: &Path, commands: &str) {
    let dir = ScratchDir::new("cpsb-cmds").unwrap();
    let file = dir.path().join("commands");
    std::fs::write(&file, commands).unwrap();
    let out = run(Command::new("debugfs").arg("-w").arg("-f").arg(&file).arg(img)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("rror") && !err.contains("not found"), "debugfs {commands}:\n{err}");
}

/// Rename entry `from` of directory `dir` to `to` (same length) in place,
/// in its first directory block: debugfs refuses names that exist or hold
/// '/', the kernel's ext4 driver never writes them.
fn patch_name(img: &Path, dir: &str, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let out = run(Command::new("debugfs").arg("-R").arg(format!("blocks {dir}")).arg(img)).unwrap();
    let block: u64 = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap();
    let mut bytes = std::fs::read(img).unwrap();
    let start = (block * 4096) as usize;
    let mut at = start;
    while at + 8 <= start + 4096 {
        let rec_len = u16::from_le_bytes([bytes[at + 4], bytes[at + 5]]) as usize;
        let name_len = bytes[at + 6] as usize;
        if &bytes[at + 8..at + 8 + name_len] == from {
            bytes[at + 8..at + 8 + name_len].copy_from_slice(to);
            std::fs::write(img, bytes).unwrap();
            return;
        }
        assert!(rec_len >= 8, "bad record in {dir}");
        at += rec_len;
    }
    panic!("no entry {:?} in {dir}", String::from_utf8_lossy(from));
}

/// Every path under `root`, with its type and, for files, its bytes.
fn tree(root: &Path) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let path = e.path().strip_prefix(root).unwrap().display().to_string();
            let what = if t.is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if t.is_dir() {
                todo.push(e.path());
                "dir".into()
            } else if t.is_fifo() {
                "fifo".into()
            } else {
                format!("{:?}", std::fs::read(e.path()).unwrap())
            };
            all.insert((path, what));
        }
    }
    all
}

#[test]
fn names_and_symlinks_from_the_image_cannot_climb_out_of_dest() {
    require_root();
    let work = ScratchDir::new("cpsb-escape").unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"outside DEST\n").unwrap();
    let payload = work.path().join("payload");
    std::fs::write(&payload, b"pwned\n").unwrap();
    let empty = ScratchDir::new("cpsb-empty").unwrap();
    let img = Image::mkfs(empty.path(), &["-b", "4096", "-O", "^metadata_csum,^dir_index"], "16M").unwrap();
    let out = outside.display();
    let p = payload.display();
    // Entries go into each directory in the order made, so each symlink
    // precedes the entry later renamed to its name.
    debugfs(
        img.path(),
        &format!(
            "mkdir e\ncd e\nwrite {p} target\ncd /\n\
             mkdir a\nsymlink a/x {out}\nmkdir a/X\ncd a/X\nwrite {p} pwned\ncd /\n\
             mkdir b\nsymlink b/y {out}/planted\ncd b\nwrite {p} Y\ncd /\n\
             mkdir c\nsymlink c/up ..\nmkdir c/UP\ncd c/UP\nwrite {p} pwned\ncd /\n\
             mkdir d\nsymlink d/z {out}/linked\nln e/target d/Z\nsif e/target links_count 2\n\
             mkdir f\ncd f\nwrite {p} zz\nwrite {p} qaw\ncd /\n"
        ),
    );
    patch_name(img.path(), "/a", b"X", b"x");
    patch_name(img.path(), "/b", b"Y", b"y");
    patch_name(img.path(), "/c", b"UP", b"up");
    patch_name(img.path(), "/d", b"Z", b"z");
    patch_name(img.path(), "/f", b"zz", b"..");
    patch_name(img.path(), "/f", b"qaw", b"q/w");
    let before = tree(work.path());
    let dest = work.path().join("copy");
    let done = offline("cp-out", &guest("ext4"), img.path(), &[OsStr::new("/"), dest.as_os_str()]).unwrap();
    let err = String::from_utf8_lossy(&done.stderr).into_owned();
    assert_eq!(done.status.code(), Some(1), "{err}");
    // Nothing outside DEST changed: the scratch dir holds what it held,
    // plus DEST.
    let after: BTreeSet<_> = tree(work.path()).into_iter().filter(|(p, _)| !p.starts_with("copy")).collect();
    assert_eq!(after, before, "something was written outside DEST:\n{err}");
    // Each symlink was copied as it is; each entry reusing its name was
    // refused, and said so.
    for (link, target) in [("a/x", out.to_string()), ("b/y", format!("{out}/planted")), ("c/up", "..".into())] {
        assert_eq!(std::fs::read_link(dest.join(link)).unwrap(), Path::new(&target), "{link}");
    }
    for refused in ["/a/x", "/b/y", "/c/up", "/d/z"] {
        let line = err.lines().find(|l| l.contains(&format!("cp-out: {refused}:")));
        let line = line.unwrap_or_else(|| panic!("{refused} not reported:\n{err}"));
        assert!(line.contains("File exists"), "{line}");
    }
    // The first name of the hard-linked file was copied.
    assert_eq!(std::fs::read(dest.join("e/target")).unwrap(), b"pwned\n");
    // '..' and 'q/w' never reach the host as names (the guest skips them;
    // the writer would refuse them: writer.rs's unit test).
    assert_eq!(std::fs::read_dir(dest.join("f")).unwrap().count(), 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn dest_that_is_not_a_new_name_is_refused_before_anything_runs() {
    require_root();
    let empty = ScratchDir::new("cpsb-empty").unwrap();
    std::fs::write(empty.path().join("f"), b"f\n").unwrap();
    let img = Image::mkfs(empty.path(), &[], "8M").unwrap();
    let work = ScratchDir::new("cpsb-dest").unwrap();
    let link = work.path().join("link");
    std::os::unix::fs::symlink("/nonexistent-target", &link).unwrap();
    for (dest, says) in [(link.clone(), "already exists"), (work.path().join(".."), "needs the name")] {
        let done = offline("cp-out", &guest("ext4"), img.path(), &[OsStr::new("/f"), dest.as_os_str()]).unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(1), "{}: {err}", dest.display());
        assert!(err.contains(says), "{}: {err}", dest.display());
    }
    assert!(!Path::new("/nonexistent-target").exists(), "a dangling DEST symlink was followed");
}

/// An image with /big (4 MiB) whose extent tree is damaged, and /small.
fn damaged_big() -> Image {
    let src = ScratchDir::new("cpsb-src").unwrap();
    std::fs::write(src.path().join("big"), vec![7u8; 4 << 20]).unwrap();
    std::fs::write(src.path().join("small"), b"small\n").unwrap();
    let img = Image::mkfs(src.path(), &[], "16M").unwrap();
    run(Command::new("debugfs").args(["-w", "-R", "set_inode_field /big block[0] 0"]).arg(img.path())).unwrap();
    img
}

/// DEST as one file, made before the sandbox point: when it cannot be read
/// whole, the writer removes it (its one Landlock rule allows that) and
/// nothing is left.
#[test]
fn a_single_file_that_cannot_be_read_whole_leaves_nothing() {
    require_root();
    let img = damaged_big();
    let out = ScratchDir::new("cpsb-out").unwrap();
    let dest = out.path().join("big");
    let done = offline("cp-out", &guest("ext4"), img.path(), &[OsStr::new("/big"), dest.as_os_str()]).unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(err.contains("/big"), "{err}");
    assert!(dest.symlink_metadata().is_err(), "a short copy of /big was left:\n{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// As root, `--user`/`--group` give the copy to that identity; without
/// them it stays root's.
#[test]
fn user_and_group_own_the_copy_as_root() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let img = damaged_big();
    let out = ScratchDir::new("cpsb-out").unwrap();
    let plugin = guest("ext4");
    let mine = out.path().join("mine");
    let theirs = out.path().join("theirs");
    let ok = offline("cp-out", &plugin, img.path(), &[OsStr::new("/small"), mine.as_os_str()]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let args = [OsStr::new("/"), theirs.as_os_str(), OsStr::new("--user"), OsStr::new("nobody")];
    let as_nobody = offline("cp-out", &plugin, img.path(), &args).unwrap();
    assert_eq!(as_nobody.status.code(), Some(1), "/big is damaged: {}", String::from_utf8_lossy(&as_nobody.stderr));
    let owner = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner(&mine), (0, 0));
    assert_eq!(owner(&theirs), (65534, 65534));
    assert_eq!(owner(&theirs.join("small")), (65534, 65534));
    assert_eq!(std::fs::read(theirs.join("small")).unwrap(), b"small\n");
}

/// On a terminal (a pty from script(1)) cp-out draws its progress line.
#[test]
fn a_terminal_gets_a_progress_line() {
    require_root();
    let img = damaged_big();
    let out = ScratchDir::new("cpsb-out").unwrap();
    let dest = out.path().join("copy");
    let command = format!(
        "{} cp-out --plugin {} {} /small {}",
        fshost_bin().display(),
        guest("ext4").display(),
        img.path().display(),
        dest.display()
    );
    let typed = run(Command::new("script").args(["-qec", &command, "/dev/null"])).unwrap();
    let shown = String::from_utf8_lossy(&typed.stdout);
    assert!(shown.contains("fshost: cp-out: 0.0 MiB, 1 object, "), "{shown}");
    assert!(shown.contains("MiB/s"), "{shown}");
}
