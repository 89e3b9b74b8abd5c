//! The offline commands as a command-line tool is expected to behave:
//! quiet on a closed output pipe, times printed as ls and stat(1) print
//! them, each thing said once in an error, cp-out that keeps the sticky bit
//! and goes on past objects it cannot read.
//!
//! The oracles are the system's own tools on the kernel's mount of the same
//! image (GNU stat and ls), not strings written here.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use fshost_tests::fshost::{fshost_bin, guest, offline};
use fshost_tests::kernel::{Image, KernelMount, require_root, run};
use fshost_tests::scratch::ScratchDir;

/// An image with a directory of `n` files, a file with a nanosecond mtime,
/// a sticky and a set-gid directory; written by the kernel's ext4.
fn sample(n: usize) -> Image {
    let root = ScratchDir::new("cli-src").unwrap();
    let many = root.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..n {
        std::fs::write(many.join(format!("file-{i:05}")), b"x").unwrap();
    }
    std::fs::write(root.path().join("big"), vec![7u8; 4 << 20]).unwrap();
    let img = Image::mkfs(root.path(), &["-O", "metadata_csum", "-N", "32768"], "64M").unwrap();
    {
        let m = KernelMount::read_write(img.path(), "").unwrap();
        let p = m.path();
        std::fs::write(p.join("dated"), b"dated\n").unwrap();
        run(Command::new("touch").args(["-m", "-d", "2026-11-29 22:11:00.123456789 UTC"]).arg(p.join("dated")))
            .unwrap();
        run(Command::new("touch").args(["-m", "-d", "2019-03-04 05:06:07.5 UTC"]).arg(p.join("big"))).unwrap();
        for (name, mode) in [("tmp", 0o1777), ("shared", 0o2775), ("plain", 0o755)] {
            std::fs::create_dir(p.join(name)).unwrap();
            std::fs::set_permissions(p.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::write(p.join(name).join("inside"), b"inside\n").unwrap();
        }
    }
    img
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `fshost ARGS`, reads one line of its stdout, closes the pipe and
/// waits. Returns (status, stderr).
fn close_after_one_line(args: &[&OsStr]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(fshost_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = Vec::new();
    out.read_until(b'\n', &mut line).unwrap();
    assert!(!line.is_empty(), "no output at all from {args:?}");
    drop(out);
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(err).unwrap());
    let status = child.wait().unwrap();
    (status, reader.join().unwrap())
}

#[test]
fn a_closed_output_pipe_ends_quietly() {
    require_root();
    let img = sample(20_000);
    let plugin = guest("ext4");
    for args in [
        vec![OsStr::new("ls"), OsStr::new("--plugin"), plugin.as_os_str(), img.path().as_os_str(), OsStr::new("/many")],
        vec![
            OsStr::new("ls"),
            OsStr::new("-l"),
            OsStr::new("--plugin"),
            plugin.as_os_str(),
            img.path().as_os_str(),
            OsStr::new("/many"),
        ],
        vec![OsStr::new("cat"), OsStr::new("--plugin"), plugin.as_os_str(), img.path().as_os_str(), OsStr::new("/big")],
    ] {
        let (status, err) = close_after_one_line(&args);
        assert_eq!(status.code(), Some(0), "{args:?}: {status}, stderr:\n{err}");
        assert!(!err.contains("Broken pipe") && !err.contains("fshost:"), "{args:?} said:\n{err}");
    }
}

/// `stat` and `ls -l` print times as GNU stat and ls do on the kernel's
/// mount of the same image, in a zone with an offset; `--time-style epoch`
/// prints GNU stat's `%Y.%N`-style raw form.
#[test]
fn times_read_as_stat_and_ls_print_them() {
    require_root();
    let img = sample(1);
    let plugin = guest("ext4");
    let kernel = KernelMount::read_only(img.path()).unwrap();
    let zone = "Asia/Kolkata";
    for file in ["dated", "big"] {
        let theirs =
            run(Command::new("stat").env("TZ", zone).args(["-c", "%y|%x"]).arg(kernel.path().join(file))).unwrap();
        let theirs = String::from_utf8(theirs.stdout).unwrap();
        let (mtime, atime) = theirs.trim().split_once('|').unwrap();
        let ours = run(Command::new(fshost_bin())
            .env("TZ", zone)
            .arg("stat")
            .arg("--plugin")
            .arg(&plugin)
            .arg(img.path())
            .arg(file))
        .unwrap();
        let ours = String::from_utf8(ours.stdout).unwrap();
        assert!(
            ours.lines().any(|l| l == format!("mtime: {mtime}")),
            "{file}: stat says mtime {mtime}; fshost:\n{ours}"
        );
        assert!(
            ours.lines().any(|l| l == format!("atime: {atime}")),
            "{file}: stat says atime {atime}; fshost:\n{ours}"
        );

        let raw = run(Command::new("stat").args(["-c", "%.9Y"]).arg(kernel.path().join(file))).unwrap();
        let raw = String::from_utf8(raw.stdout).unwrap();
        let (secs, frac) = raw.trim().split_once('.').unwrap();
        let ours = run(Command::new(fshost_bin())
            .args(["stat", "--time-style", "epoch", "--plugin"])
            .arg(&plugin)
            .arg(img.path())
            .arg(file))
        .unwrap();
        let ours = String::from_utf8(ours.stdout).unwrap();
        assert!(
            ours.lines().any(|l| l == format!("mtime: {secs}.{frac}")),
            "{file}: raw mtime {secs}.{frac}; fshost:\n{ours}"
        );

        // ls -l: the three time columns (month, day, time or year).
        let theirs = run(Command::new("ls")
            .env("TZ", zone)
            .env("LC_ALL", "C")
            .args(["-l", "--time-style=locale"])
            .arg(kernel.path().join(file)))
        .unwrap();
        let theirs = String::from_utf8(theirs.stdout).unwrap();
        let cols: Vec<&str> = theirs.split_whitespace().collect();
        let when = cols[5..8].join(" ");
        let ours = run(Command::new(fshost_bin())
            .env("TZ", zone)
            .args(["ls", "-l", "--plugin"])
            .arg(&plugin)
            .arg(img.path())
            .arg(file))
        .unwrap();
        let ours = String::from_utf8(ours.stdout).unwrap();
        let ours_cols: Vec<&str> = ours.split_whitespace().collect();
        assert!(ours_cols.windows(3).any(|w| w.join(" ") == when), "{file}: ls -l says {when:?}; fshost: {ours}");
    }
}

#[test]
fn errors_say_each_thing_once_in_words() {
    require_root();
    let img = sample(1);
    let plugin = guest("ext4");
    let missing = offline("stat", &plugin, img.path(), &[OsStr::new("/nope")]).unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let want = format!("fshost: {}: /nope: No such file or directory (os error 2)\n", img.path().display());
    assert_eq!(stderr(&missing), want);

    // A block device the kernel has mounted: O_EXCL fails with EBUSY.
    let kernel = KernelMount::read_only(img.path()).unwrap();
    let dev = run(Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(kernel.path())).unwrap();
    let dev = String::from_utf8(dev.stdout).unwrap();
    let busy = offline("info", &plugin, Path::new(dev.trim()), &[]).unwrap();
    let err = stderr(&busy);
    assert_eq!(busy.status.code(), Some(1), "{err}");
    assert!(err.contains(dev.trim()) && err.contains("busy"), "{err}");
    for line in err.lines() {
        for phrase in ["Device or resource busy", "No such file", "os error"] {
            assert!(line.matches(phrase).count() <= 1, "said twice: {line}");
        }
    }
}

#[test]
fn cp_out_keeps_the_sticky_bit_and_drops_set_id_bits() {
    require_root();
    let img = sample(1);
    let out = ScratchDir::new("cli-out").unwrap();
    let dest = out.path().join("copy");
    let done = offline("cp-out", &guest("ext4"), img.path(), &[OsStr::new("/"), dest.as_os_str()]).unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    let kernel = KernelMount::read_only(img.path()).unwrap();
    for (name, dropped) in [("tmp", 0), ("shared", 0o2000), ("plain", 0)] {
        let theirs = std::fs::metadata(kernel.path().join(name)).unwrap().permissions().mode() & 0o7777;
        let ours = std::fs::metadata(dest.join(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(ours, theirs & !dropped, "{name}: kernel {theirs:o}, copy {ours:o}");
    }
}

/// A damaged inode and a damaged extent tree cost their own files: cp-out
/// copies everything else, names each object it could not copy, and exits 1.
#[test]
fn cp_out_of_a_damaged_tree_copies_the_rest_and_reports_each_failure() {
    require_root();
    let img = sample(30);
    // Zero the inode checksum of one file, and the extent header of another.
    run(Command::new("debugfs").args(["-w", "-R", "set_inode_field /many/file-00003 checksum 0"]).arg(img.path()))
        .unwrap();
    run(Command::new("debugfs").args(["-w", "-R", "set_inode_field /big block[0] 0"]).arg(img.path())).unwrap();
    let out = ScratchDir::new("cli-out").unwrap();
    let dest = out.path().join("copy");
    let done = offline("cp-out", &guest("ext4"), img.path(), &[OsStr::new("/"), dest.as_os_str()]).unwrap();
    let err = stderr(&done);
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(err.contains("/many/file-00003"), "the damaged inode is not reported:\n{err}");
    assert!(err.contains("/big"), "the damaged extent tree is not reported:\n{err}");
    assert!(err.contains("2 of "), "the summary does not count two failures:\n{err}");
    assert!(!dest.join("many/file-00003").exists() && !dest.join("big").exists());
    // Everything else is there, byte for byte, as the kernel reads it.
    let kernel = KernelMount::read_only(img.path()).unwrap();
    let mut compared = 0;
    for i in (0..30).filter(|&i| i != 3) {
        let name = format!("many/file-{i:05}");
        assert_eq!(std::fs::read(dest.join(&name)).unwrap(), std::fs::read(kernel.path().join(&name)).unwrap());
        compared += 1;
    }
    for name in ["dated", "tmp/inside", "shared/inside", "plain/inside"] {
        assert_eq!(std::fs::read(dest.join(name)).unwrap(), std::fs::read(kernel.path().join(name)).unwrap());
        compared += 1;
    }
    assert_eq!(compared, 33);
}

/// `--json`: every attribute as GNU stat reads it through the kernel, the
/// names as the kernel lists them (a non-UTF-8 name as hex), and `info`
/// as dumpe2fs reads the superblock.
#[test]
fn json_output_agrees_with_the_kernel_and_e2fsprogs() {
    require_root();
    let img = sample(5);
    {
        let m = KernelMount::read_write(img.path(), "").unwrap();
        std::fs::write(m.path().join(OsStr::from_bytes(b"latin-\xe9")), b"x").unwrap();
        std::os::unix::fs::symlink("dated", m.path().join("link")).unwrap();
    }
    let plugin = guest("ext4");
    let kernel = KernelMount::read_only(img.path()).unwrap();
    let json = |cmd: &str, args: &[&OsStr]| -> Vec<serde_json::Value> {
        let out = offline(cmd, &plugin, img.path(), &[&[OsStr::new("--json")], args].concat()).unwrap();
        assert!(out.status.success(), "{cmd} --json: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    for file in ["dated", "big", "tmp", "link"] {
        let v = &json("stat", &[OsStr::new(file)])[0];
        let theirs =
            run(Command::new("stat").args(["-c", "%i %f %h %u %g %s %b %X %Y %Z"]).arg(kernel.path().join(file)))
                .unwrap();
        let theirs: Vec<u64> = String::from_utf8(theirs.stdout)
            .unwrap()
            .split_whitespace()
            .enumerate()
            .map(|(i, f)| if i == 1 { u64::from_str_radix(f, 16).unwrap() } else { f.parse().unwrap() })
            .collect();
        let ours = [
            v["ino"].as_u64().unwrap(),
            theirs[1] & !0o7777 | v["mode"].as_u64().unwrap(),
            v["nlink"].as_u64().unwrap(),
            v["uid"].as_u64().unwrap(),
            v["gid"].as_u64().unwrap(),
            v["size"].as_u64().unwrap(),
            v["blocks"].as_u64().unwrap(),
            v["atime"]["sec"].as_u64().unwrap(),
            v["mtime"]["sec"].as_u64().unwrap(),
            v["ctime"]["sec"].as_u64().unwrap(),
        ];
        assert_eq!(ours.to_vec(), theirs, "{file}: {v}");
        let want_type = if file == "tmp" {
            "directory"
        } else if file == "link" {
            "symlink"
        } else {
            "regular"
        };
        assert_eq!(v["type"], want_type);
    }
    assert_eq!(json("stat", &[OsStr::new("link")])[0]["target"], "dated");

    let listed = json("ls", &[OsStr::new("/")]);
    let mut ours: Vec<Vec<u8>> = listed
        .iter()
        .map(|e| match (e["name"].as_str(), e["name_hex"].as_str()) {
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(h)) => (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect(),
            other => panic!("entry without exactly one name field: {e} ({other:?})"),
        })
        .collect();
    let mut theirs: Vec<Vec<u8>> =
        std::fs::read_dir(kernel.path()).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert!(listed.iter().any(|e| e["name_hex"] == "6c6174696e2de9"), "the latin-1 name is not in hex");

    let info = &json("info", &[])[0];
    let dump = run(Command::new("dumpe2fs").arg("-h").arg(img.path())).unwrap();
    let dump = String::from_utf8(dump.stdout).unwrap();
    let field = |k: &str| dump.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_string();
    assert_eq!(info["uuid"], field("Filesystem UUID:"));
    assert_eq!(info["block_size"].as_u64().unwrap().to_string(), field("Block size:"));
    assert_eq!(info["total_inodes"].as_u64().unwrap().to_string(), field("Inode count:"));
    assert_eq!(info["type"], "ext4");

    let plugins = offline("ls", &plugin, img.path(), &[]).unwrap();
    assert!(plugins.status.success());
    let listed = Command::new(fshost_bin()).args(["plugins", "--json"]).output().unwrap();
    let entries: Vec<serde_json::Value> =
        String::from_utf8(listed.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        entries.iter().any(|e| e["name"] == "ext4" && e["status"] == "ok" && e["contract"].is_string()),
        "{entries:?}"
    );
}

/// `ls -l` of a directory with a damaged inode lists every name, the
/// damaged one with `?` fields as ls(1) shows it, says why on stderr and
/// exits 1.
#[test]
fn ls_long_lists_past_a_damaged_inode() {
    require_root();
    let img = sample(10);
    run(Command::new("debugfs").args(["-w", "-R", "set_inode_field /many/file-00003 checksum 0"]).arg(img.path()))
        .unwrap();
    let out = offline("ls", &guest("ext4"), img.path(), &[OsStr::new("-l"), OsStr::new("/many")]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 10, "{text}");
    let bad = text.lines().find(|l| l.ends_with("file-00003")).unwrap();
    assert!(bad.starts_with("?????????? ?"), "{bad}");
    assert!(stderr(&out).contains("file-00003"), "{}", stderr(&out));
}
