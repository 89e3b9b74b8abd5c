//! Disk images through the qcow2, VHD and VMDK volume guests, against
//! the kernel and qemu-img.
//!
//! Every image is made by qemu-img (and qemu-io) from raw images made by
//! mkfs.ext4 -d and sfdisk; the oracle for its byte space is `qemu-img
//! convert -O raw`, and the oracle for what it holds is the kernel's ext4
//! mounting that raw image (or the partition cut from it). fshost mounts
//! the qcow2 itself (`--partition N` on a partitioned one, `--backing
//! FILE` for an overlay) and the two trees are compared with
//! `fshost_tests::compare`, contents, attributes and data ranges included.
//!
//! Needs root (loop devices, mounts) and qemu-utils.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fshost_tests::compare::{Difference, compare_trees};
use fshost_tests::fshost::{FshostMount, fshost_bin, guest};
use fshost_tests::kernel::{KernelMount, require_root, run, sfdisk};
use fshost_tests::scratch::ScratchDir;

const MIB: u64 = 1 << 20;

fn assert_no_differences(diffs: &[Difference], what: &str) {
    let shown: Vec<String> = diffs.iter().take(30).map(|d| format!("  {d}")).collect();
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), shown.join("\n"));
}

fn qemu_img(args: &[&OsStr]) {
    run(Command::new("qemu-img").args(args)).expect("qemu-img (qemu-utils)");
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A tree of files of several sizes and kinds, as mkfs.ext4 -d copies it.
fn make_tree(root: &Path, label: &str) {
    std::fs::create_dir_all(root.join("dir/deeper")).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join(format!("{label}.txt")), format!("I live in {label}\n")).unwrap();
    std::fs::write(root.join("noise.bin"), noise(3 * MIB as usize + 1234)).unwrap();
    let text: String = (0..60_000).map(|i| format!("line {i} of {label}\n")).collect();
    std::fs::write(root.join("dir/text.txt"), text).unwrap();
    std::fs::write(root.join("dir/deeper/small"), noise(4095)).unwrap();
    std::os::unix::fs::symlink("dir/text.txt", root.join("link")).unwrap();
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(5 * MIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &noise(8192), 2 * MIB).unwrap();
}

/// A raw ext4 image of `size` holding a fresh tree.
fn mkfs(dir: &Path, name: &str, size: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{name}"));
    make_tree(&tree, name);
    let image = dir.join(name);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", name, "-d"]).arg(&tree).arg(&image).arg(size)).unwrap();
    image
}

/// `qemu-img convert -f raw -O qcow2 OPTS SRC DST`.
fn to_qcow2(src: &Path, dst: &Path, opts: &[&str]) {
    let mut args: Vec<&OsStr> = ["convert", "-f", "raw", "-O", "qcow2"].map(os).to_vec();
    args.extend(opts.iter().map(|o| os(o)));
    args.extend([src.as_os_str(), dst.as_os_str()]);
    qemu_img(&args);
}

/// The oracle's byte space: `qemu-img convert -O raw IMAGE IMAGE.raw`.
fn oracle_raw(image: &Path) -> PathBuf {
    let raw = image.with_extension("oracle.raw");
    qemu_img(&[os("convert"), os("-O"), os("raw"), image.as_os_str(), raw.as_os_str()]);
    raw
}

/// fshost's mount of `image` (with `extra` arguments) against the
/// kernel's mount of `raw`.
fn compare(image: &Path, raw: &Path, extra: &[&str]) -> Vec<Difference> {
    let kernel = KernelMount::read_only(raw).unwrap_or_else(|e| panic!("kernel mount of {}: {e:#}", raw.display()));
    let fshost = FshostMount::mount_with(&guest("ext4"), image, &[], extra)
        .unwrap_or_else(|e| panic!("fshost mount of {}: {e:#}", image.display()));
    let diffs = compare_trees(kernel.path(), fshost.path());
    let log = fshost.log();
    drop(fshost);
    assert!(!log.contains("panicked"), "{log}");
    diffs
}

fn fshost(args: &[&OsStr]) -> Output {
    Command::new(fshost_bin()).args(args).stdin(Stdio::null()).output().expect("running fshost")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first 256 KiB-aligned 256 KiB range of `raw` that is all zeros,
/// past its first 8 MiB.
fn zero_range(raw: &Path) -> u64 {
    let bytes = std::fs::read(raw).unwrap();
    (32..bytes.len() / (256 << 10))
        .map(|i| i * (256 << 10))
        .find(|&at| bytes[at..at + (256 << 10)].iter().all(|b| *b == 0))
        .expect("a free range in the image") as u64
}

#[test]
fn qcow2_images_of_an_ext4_read_as_the_kernel_reads_their_raw_image() {
    require_root();
    let dir = ScratchDir::new("qcow2").unwrap();
    let fs = mkfs(dir.path(), "plain", "40M");
    let zero_at = zero_range(&fs);
    for (name, opts) in [
        ("v2.qcow2", &["-o", "compat=0.10"][..]),
        ("v3.qcow2", &["-o", "compat=1.1,cluster_size=4096"]),
        ("deflate.qcow2", &["-c"]),
        ("zstd.qcow2", &["-c", "-o", "compression_type=zstd,cluster_size=16k"]),
        ("extl2.qcow2", &["-o", "extended_l2=on,cluster_size=128k"]),
        ("zeros.qcow2", &["-o", "compat=1.1"]),
        ("snapshot.qcow2", &[]),
    ] {
        let image = dir.path().join(name);
        to_qcow2(&fs, &image, opts);
        if name == "zeros.qcow2" {
            // Zero clusters (the v3 zero flag) over a free range.
            let io = format!("write -z {zero_at} 256k");
            run(Command::new("qemu-io").args(["-c", &io]).arg(&image)).unwrap();
        }
        if name == "snapshot.qcow2" {
            qemu_img(&[os("snapshot"), os("-c"), os("before \u{e9}t\u{e9}"), image.as_os_str()]);
        }
        let raw = oracle_raw(&image);
        assert!(std::fs::read(&raw).unwrap() == std::fs::read(&fs).unwrap(), "{name}: qemu-img's raw is not mkfs's");
        assert_no_differences(&compare(&image, &raw, &[]), name);
        // Offline: the same bytes as the kernel reads.
        let out = fshost(&[os("cat"), os("--plugin"), guest("ext4").as_os_str(), image.as_os_str(), os("/noise.bin")]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let kernel = KernelMount::read_only(&raw).unwrap();
        assert!(out.stdout == std::fs::read(kernel.path().join("noise.bin")).unwrap(), "{name}: cat differs");
    }
    // The snapshot's name is listed (as bytes, escaped), the active image read.
    let out = fshost(&[
        os("ls"),
        os("-v"),
        os("--plugin"),
        guest("ext4").as_os_str(),
        dir.path().join("snapshot.qcow2").as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(r#"1 internal snapshots ("before \xc3\xa9t\xc3\xa9")"#), "{}", stderr(&out));
}

#[test]
fn vhd_and_vmdk_images_of_an_ext4_read_as_the_kernel_reads_their_raw_image() {
    require_root();
    let dir = ScratchDir::new("vhd").unwrap();
    let fs = mkfs(dir.path(), "plain", "40M");
    for (name, format, opts) in [
        ("dynamic.vhd", "vpc", "subformat=dynamic"),
        ("fixed.vhd", "vpc", "subformat=fixed"),
        ("sized.vhd", "vpc", "subformat=dynamic,force_size=on"),
        ("sparse.vmdk", "vmdk", "subformat=monolithicSparse"),
        ("stream.vmdk", "vmdk", "subformat=streamOptimized"),
    ] {
        let image = dir.path().join(name);
        let mut args: Vec<&OsStr> = ["convert", "-f", "raw", "-O", format, "-o", opts].map(os).to_vec();
        args.extend([fs.as_os_str(), image.as_os_str()]);
        qemu_img(&args);
        let raw = image.with_extension("oracle.raw");
        qemu_img(&[os("convert"), os("-f"), os(format), os("-O"), os("raw"), image.as_os_str(), raw.as_os_str()]);
        assert_no_differences(&compare(&image, &raw, &[]), name);
    }
}

#[test]
fn a_qcow2_of_a_gpt_disk_composes_with_partition() {
    require_root();
    let dir = ScratchDir::new("qcow2-gpt").unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(48 * MIB).unwrap();
    sfdisk(&disk, "label: gpt\nstart=2048, size=8192, name=first\nstart=16384, size=65536, name=ext4\n").unwrap();
    let fs = mkfs(dir.path(), "part.raw", "32M");
    let bytes = std::fs::read(&fs).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::File::options().write(true).open(&disk).unwrap(),
        &bytes,
        8 * MIB,
    )
    .unwrap();
    let image = dir.path().join("disk.qcow2");
    to_qcow2(&disk, &image, &["-c", "-o", "cluster_size=65536"]);
    // The kernel mounts partition 2 as sfdisk places it, cut from qemu-img's raw.
    let raw = oracle_raw(&image);
    let dump = run(Command::new("sfdisk").arg("--dump").arg(&raw)).unwrap();
    let dump = String::from_utf8(dump.stdout).unwrap();
    let line = dump.lines().find(|l| l.contains("name=\"ext4\"")).expect("partition 2 in sfdisk --dump");
    let field = |key: &str| -> u64 {
        let v = line.split(key).nth(1).unwrap().trim_start_matches([' ', '=']);
        v.split(',').next().unwrap().trim().parse().unwrap()
    };
    let (start, size) = (field("start") * 512, field("size") * 512);
    // `fshost partitions` reads the table through the qcow2 layer too.
    let out = fshost(&[os("partitions"), os("--json"), image.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<(u64, u64, u64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["number"].as_u64().unwrap(), v["start"].as_u64().unwrap(), v["length"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(listed.last(), Some(&(2, start, size)), "{listed:?}");
    let part = dir.path().join("part2.raw");
    std::fs::write(&part, &std::fs::read(&raw).unwrap()[start as usize..(start + size) as usize]).unwrap();
    assert_no_differences(&compare(&image, &part, &["--partition", "2"]), "qcow2 -> GPT -> ext4");
    // Without --partition: `ls` lists the partitions with what the ext4
    // guest mounts (only 2); given a path, it lists that of partition 2.
    let out = fshost(&[os("ls"), os("--plugin"), guest("ext4").as_os_str(), image.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[3].to_string())
        })
        .collect();
    assert_eq!(rows, [("1".into(), "-".into()), ("2".into(), "ext4".into())]);
    let ext4 = guest("ext4");
    let ls = |extra: &[&OsStr]| {
        let mut args = vec![os("ls"), os("--plugin"), ext4.as_os_str(), image.as_os_str(), os("/")];
        args.extend_from_slice(extra);
        let out = fshost(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    assert_eq!(ls(&[]), ls(&[os("--partition"), os("2")]));
}

#[test]
fn backing_files_are_opened_only_when_given() {
    require_root();
    let dir = ScratchDir::new("qcow2-backing").unwrap();
    let base = mkfs(dir.path(), "base.raw", "40M");
    // The overlay's content: the base changed through the kernel.
    let changed = dir.path().join("changed.raw");
    std::fs::copy(&base, &changed).unwrap();
    {
        let mount = KernelMount::read_write(&changed, "").unwrap();
        std::fs::write(mount.path().join("new file"), "written over the base\n".repeat(5000)).unwrap();
        std::fs::remove_file(mount.path().join("dir/deeper/small")).unwrap();
        std::fs::write(mount.path().join("dir/text.txt"), b"shorter now\n").unwrap();
    }
    // Only the clusters that differ from the base are stored.
    let overlay = dir.path().join("overlay.qcow2");
    let mut args: Vec<&OsStr> = ["convert", "-f", "raw", "-O", "qcow2", "-F", "raw", "-B"].map(os).to_vec();
    args.extend([base.as_os_str(), changed.as_os_str(), overlay.as_os_str()]);
    qemu_img(&args);
    assert!(std::fs::metadata(&overlay).unwrap().len() < 8 * MIB, "the overlay stores the whole disk");

    let ext4 = guest("ext4");
    let ls = |image: &Path, extra: &[&str]| {
        let mut args = vec![os("ls"), os("--plugin"), ext4.as_os_str(), image.as_os_str()];
        args.extend(extra.iter().map(|e| os(e)));
        fshost(&args)
    };
    // Refused without --backing, naming the file the image asked for.
    let out = ls(&overlay, &[]);
    assert!(!out.status.success());
    let want = format!("based on the backing file \"{}\"", base.display());
    assert!(stderr(&out).contains(&want) && stderr(&out).contains("--backing"), "{}", stderr(&out));
    // Read with it, as the kernel reads the changed image.
    let raw = oracle_raw(&overlay);
    assert!(std::fs::read(&raw).unwrap() == std::fs::read(&changed).unwrap());
    let base_arg = base.to_str().unwrap();
    assert_no_differences(&compare(&overlay, &raw, &["--backing", base_arg]), "overlay with --backing");

    // `fshost info` shows the image layer under the filesystem.
    let out =
        fshost(&[os("info"), os("--plugin"), ext4.as_os_str(), overlay.as_os_str(), os("--backing"), base.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = String::from_utf8_lossy(&out.stdout);
    let layer = format!("image: {} (qcow2, {} bytes)", overlay.display(), 40 * MIB);
    assert!(
        info.contains(&layer) && info.contains(&format!("backing: \"{0}\" read from {0}", base.display())),
        "{info}"
    );
    assert!(info.contains("type: ext4"), "{info}");

    // A chain: a qcow2 on the overlay needs both, nearest first.
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        os("create"),
        os("-q"),
        os("-f"),
        os("qcow2"),
        os("-F"),
        os("qcow2"),
        os("-b"),
        overlay.as_os_str(),
        top.as_os_str(),
    ]);
    let out = ls(&top, &["--backing", overlay.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains(&want), "{}", stderr(&out));
    assert_no_differences(
        &compare(&top, &raw, &["--backing", overlay.to_str().unwrap(), "--backing", base_arg]),
        "a chain of two",
    );
    // One too many is refused too.
    let out = ls(&overlay, &["--backing", base_arg, "--backing", base_arg]);
    assert!(!out.status.success() && stderr(&out).contains("no image in the chain"), "{}", stderr(&out));

    // A name that is not text is printed as escaped bytes; nothing is opened.
    let odd = dir.path().join("odd.qcow2");
    let name = std::ffi::OsString::from_vec(b"/nonexistent/\xff\x1b[31mbase\n".to_vec());
    qemu_img(&[
        os("create"),
        os("-q"),
        os("-u"),
        os("-f"),
        os("qcow2"),
        os("-F"),
        os("raw"),
        os("-b"),
        &name,
        odd.as_os_str(),
        os("40M"),
    ]);
    let out = ls(&odd, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(r#""/nonexistent/\xff\x1b[31mbase\n""#), "{}", stderr(&out));
}

#[test]
fn encrypted_images_are_refused_by_name() {
    let dir = ScratchDir::new("qcow2-luks").unwrap();
    let image = dir.path().join("luks.qcow2");
    qemu_img(&[
        os("create"),
        os("-q"),
        os("-f"),
        os("qcow2"),
        os("--object"),
        os("secret,id=s0,data=pass"),
        os("-o"),
        os("encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10"),
        image.as_os_str(),
        os("16M"),
    ]);
    let out = fshost(&[os("ls"), os("-v"), os("--plugin"), guest("ext4").as_os_str(), image.as_os_str()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("encrypted (LUKS"), "{}", stderr(&out));
}

/// A small xorshift: deterministic mutations without a dependency.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn mutated_qcow2_images_cost_a_clean_error_through_the_binary() {
    let dir = ScratchDir::new("qcow2-fuzz").unwrap();
    let fs = mkfs(dir.path(), "fuzz.raw", "8M");
    let seed = dir.path().join("seed.qcow2");
    to_qcow2(&fs, &seed, &["-c", "-o", "cluster_size=4096"]);
    qemu_img(&[os("snapshot"), os("-c"), os("s"), seed.as_os_str()]);
    let seed = std::fs::read(&seed).unwrap();
    let cases: u64 = std::env::var("FSHOST_QCOW2_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let image = dir.path().join("mutated.qcow2");
    let (mut x, mut listed) = (0x0123_4567_89ab_cdefu64, 0);
    for case in 0..cases {
        let mut bytes = seed.clone();
        // The metadata sits in the first clusters: header, L1, refcounts, L2.
        for _ in 0..1 + next(&mut x) % 6 {
            let at = (next(&mut x) as usize) % bytes.len().min(96 << 10);
            bytes[at] ^= 1 << (next(&mut x) % 8);
        }
        std::fs::write(&image, &bytes).unwrap();
        for args in [&["ls", "-l", "/dir"][..], &["cat", "/noise.bin"]] {
            let mut cmd = Command::new(fshost_bin());
            cmd.arg(args[0]).arg("--plugin").arg(guest("ext4")).arg(&image).args(&args[1..]);
            let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            let started = std::time::Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > std::time::Duration::from_secs(30) {
                    let _ = child.kill();
                    panic!("case {case}: fshost {args:?} hangs on a mutated image");
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(status.code().is_some_and(|c| c <= 1), "case {case}: fshost {args:?}: {status}\n{err}");
            assert!(!err.contains("panicked"), "case {case}: {err}");
            listed += usize::from(status.success());
        }
        assert!(std::fs::read(&image).unwrap() == bytes, "case {case}: the image changed");
    }
    eprintln!("{cases} mutated images: {listed} commands succeeded");
    assert!(listed > 0, "no mutation let a command through: the test tests nothing");
}
