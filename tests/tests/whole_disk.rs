//! A whole disk without `--partition N`, and partitions chosen by GPT name
//! or unique GUID (issue 13, item 4), through the real binary.
//!
//! Disks are written by sfdisk (`--no-reread --no-tell-kernel`), with
//! mkfs.ext4 -E offset and mkfs.vfat --offset placing filesystems in
//! partitions. The oracles: `sfdisk --json` (and `--part-uuid`) for what
//! the table says; `blkid -p -O OFFSET` for which filesystem, label and
//! UUID each partition holds; the kernel's ext4 mounting the partition
//! through a loop device with its offset for what the filesystem holds
//! (`fshost_tests::compare`, every attribute and byte); qemu-img for a
//! qcow2's virtual size.
//!
//! fshost runs as an isolated install (the binary in a scratch `bin/`, the
//! ext4, fat, partitions and qcow2 guests in `guests/` beside it), as in
//! detect.rs: the development tree's test guests (evil, hello-*) are not
//! asked. Needs root (loop devices, mounts).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fshost_tests::compare::compare_trees;
use fshost_tests::fshost::{fshost_bin, guest, is_mount_point};
use fshost_tests::kernel::{require_root, run, sfdisk};
use fshost_tests::scratch::ScratchDir;

/// An fshost installed on its own with the ext4, fat, partitions and
/// qcow2 guests.
struct Install {
    dir: ScratchDir,
    bin: PathBuf,
}

impl Install {
    fn new() -> Install {
        let dir = ScratchDir::new("whole-disk").unwrap();
        for sub in ["bin", "guests", "plugins", "xdg"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let bin = dir.path().join("bin/fshost");
        if std::fs::hard_link(fshost_bin(), &bin).is_err() {
            std::fs::copy(fshost_bin(), &bin).unwrap();
        }
        for g in ["ext4", "fat", "partitions", "qcow2"] {
            std::fs::copy(guest(g), dir.path().join(format!("guests/{g}.wasm"))).unwrap();
        }
        Install { dir, bin }
    }

    fn command(&self, args: &[&OsStr]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("FSHOST_PLUGIN_PATH", self.dir.path().join("plugins"))
            .env("XDG_DATA_HOME", self.dir.path().join("xdg"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn fshost(&self, args: &[&OsStr]) -> Output {
        self.command(args).output().expect("running the installed fshost")
    }

    /// The stdout of a command that must succeed.
    fn ok(&self, args: &[&OsStr]) -> Vec<u8> {
        let out = self.fshost(args);
        assert!(out.status.success(), "fshost {args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
        out.stdout
    }

    /// The stderr of a command that must fail, cleanly.
    fn refused(&self, args: &[&OsStr]) -> String {
        let out = self.fshost(args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "fshost {args:?} succeeded:\n{}", text(&out.stdout));
        assert!(!err.contains("panicked"), "{err}");
        err
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    text(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A partition as `sfdisk --json` describes it.
#[derive(Debug, Clone)]
struct Described {
    number: u64,
    /// Bytes.
    start: u64,
    length: u64,
    uuid: Option<String>,
    name: String,
    /// A GPT type GUID or an MBR type byte, as sfdisk prints it.
    kind: String,
}

fn sfdisk_json(image: &Path) -> Vec<Described> {
    let out = run(Command::new("sfdisk").arg("--json").arg(image)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let disk = image.to_str().unwrap();
    table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Described {
            number: p["node"].as_str().unwrap().strip_prefix(disk).unwrap().parse().unwrap(),
            start: p["start"].as_u64().unwrap() * sector,
            length: p["size"].as_u64().unwrap() * sector,
            uuid: p["uuid"].as_str().map(str::to_string),
            name: p["name"].as_str().unwrap_or_default().to_string(),
            kind: p["type"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// What blkid finds at `offset` of `image`: (TYPE, LABEL, UUID), or
/// `None` when it finds nothing.
fn blkid(image: &Path, offset: u64) -> Option<(String, String, String)> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .arg(image)
        .output()
        .expect("running blkid");
    let export = text(&out.stdout);
    let get = |k: &str| export.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_default().to_string();
    (out.status.success() && !get("TYPE").is_empty()).then(|| (get("TYPE"), get("LABEL"), get("UUID")))
}

/// The kernel's ext4 mounted read-only on a loop device over
/// [offset, offset + length) of `image`; unmounted (and the loop device
/// freed, mount's autoclear) on drop.
struct KernelPartition {
    dir: ScratchDir,
}

impl KernelPartition {
    fn mount(image: &Path, offset: u64, length: u64) -> KernelPartition {
        let dir = ScratchDir::new("kernel-part").unwrap();
        run(Command::new("mount")
            .args(["-t", "ext4", "-o"])
            .arg(format!("ro,loop,offset={offset},sizelimit={length}"))
            .arg(image)
            .arg(dir.path()))
        .unwrap();
        KernelPartition { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KernelPartition {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A tree with a few files for mkfs -d.
fn tree(dir: &Path, tag: &str) -> PathBuf {
    let root = dir.join(format!("tree-{tag}"));
    if root.exists() {
        return root;
    }
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join(format!("{tag}.txt")), format!("I live in {tag}\n")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(root.join("sub/big.bin"), big).unwrap();
    std::fs::write(root.join("sub/deeper/small"), b"small\n").unwrap();
    std::os::unix::fs::symlink("sub/big.bin", root.join("link")).unwrap();
    root
}

const SECTOR: u64 = 512;

/// mkfs.ext4 -d `tree(tag)` into [start, start + length) of `image`.
fn ext4_at(image: &Path, dir: &Path, start: u64, length: u64, label: &str) {
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(tree(dir, label))
        .arg("-E")
        .arg(format!("offset={start}"))
        .arg(image)
        .arg(format!("{}k", length / 1024)))
    .unwrap();
}

/// mkfs.vfat with one file, into the partition at `start`.
fn fat_at(image: &Path, start: u64, length: u64, label: &str) {
    run(Command::new("mkfs.vfat")
        .args(["-n", label])
        .arg(format!("--offset={}", start / SECTOR))
        .arg(image)
        .arg((length / 1024).to_string()))
    .unwrap();
    let note = image.with_extension("note");
    std::fs::write(&note, b"on the FAT\n").unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(format!("{}@@{start}", image.display()))
        .arg(&note)
        .arg("::/NOTE.TXT")
        .env("MTOOLS_SKIP_CHECK", "1"))
    .unwrap();
}

/// A 64 MiB GPT disk: 1 "ROOT" ext4, 2 "data" blank, 3 "data" FAT.
fn three_partitions(dir: &Path) -> PathBuf {
    let image = dir.join("three.img");
    std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    sfdisk(
        &image,
        "label: gpt\nstart=2048, size=32768, type=L, name=ROOT\nstart=34816, size=8192, type=L, name=data\n\
         start=43008, size=32768, type=L, name=data\n",
    )
    .unwrap();
    ext4_at(&image, dir, 2048 * SECTOR, 32768 * SECTOR, "rootfs");
    fat_at(&image, 43008 * SECTOR, 32768 * SECTOR, "FATPART");
    image
}

/// A 48 MiB disk (`label`: gpt or dos) whose partition 2 is the only
/// filesystem: an ext4 of `tree("only")`; partition 1 is blank.
fn one_filesystem(dir: &Path, label: &str) -> (PathBuf, Described) {
    let image = dir.join(format!("one-{label}.img"));
    std::fs::File::create(&image).unwrap().set_len(48 << 20).unwrap();
    sfdisk(&image, &format!("label: {label}\nstart=2048, size=8192, type=L\nstart=12288, size=65536, type=L\n"))
        .unwrap();
    let part = sfdisk_json(&image).into_iter().find(|p| p.number == 2).expect("sfdisk lists partition 2");
    ext4_at(&image, dir, part.start, part.length, "only");
    (image, part)
}

#[test]
fn partitions_are_chosen_by_gpt_name_or_unique_guid_as_sfdisk_describes_them() {
    require_root();
    let install = Install::new();
    let dir = install.dir.path();
    let disk = three_partitions(dir);
    let described = sfdisk_json(&disk);
    assert_eq!(described.len(), 3, "{described:?}");
    let ls = |sel: &str| install.ok(&[os("ls"), os("--json"), os("--partition"), os(sel), disk.as_os_str()]);

    // ROOT, by name, by either case of its GUID and by number: the same
    // listing, and the kernel's on that partition's bytes.
    let root = described.iter().find(|p| p.name == "ROOT").unwrap();
    let uuid = root.uuid.clone().expect("sfdisk gives GPT partitions a GUID");
    let by_number = ls(&root.number.to_string());
    assert_eq!(ls("name=ROOT"), by_number);
    assert_eq!(ls(&format!("uuid={}", uuid.to_lowercase())), by_number);
    assert_eq!(ls(&format!("uuid={}", uuid.to_uppercase())), by_number);
    let kernel = KernelPartition::mount(&disk, root.start, root.length);
    let mut want: Vec<String> =
        std::fs::read_dir(kernel.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    want.sort();
    let got: Vec<String> = json_lines(&by_number).iter().map(|v| v["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, want, "the root of partition name=ROOT against the kernel's");
    let cat = install.ok(&[os("cat"), os("--partition"), os("name=ROOT"), disk.as_os_str(), os("/sub/big.bin")]);
    assert!(cat == std::fs::read(kernel.path().join("sub/big.bin")).unwrap(), "big.bin differs from the kernel's");
    drop(kernel);

    // The FAT one by its GUID.
    let fat = described.iter().find(|p| p.number == 3).unwrap();
    let note = install.ok(&[
        os("cat"),
        os("--partition"),
        os(&format!("uuid={}", fat.uuid.as_deref().unwrap())),
        disk.as_os_str(),
        os("/NOTE.TXT"),
    ]);
    assert_eq!(note, b"on the FAT\n");

    // Two partitions named "data": refused, naming both.
    let err = install.refused(&[os("ls"), os("--partition"), os("name=data"), disk.as_os_str()]);
    for p in described.iter().filter(|p| p.name == "data") {
        assert!(err.contains(&format!("\n  {} name=\"data\"", p.number)), "partition {} not named:\n{err}", p.number);
    }
    assert!(err.contains("2 partitions match"), "{err}");
    // A name or GUID that is not there: refused with the whole table.
    for sel in ["name=nope", "uuid=01234567-89ab-cdef-0123-456789abcdef"] {
        let err = install.refused(&[os("ls"), os("--partition"), os(sel), disk.as_os_str()]);
        for p in &described {
            let u = p.uuid.as_deref().unwrap();
            assert!(err.contains(&format!("\n  {} name=\"{}\" uuid={u}", p.number, p.name)), "{sel}: {err}");
        }
    }
    for bad in ["first", "uuid=xyz", "name=", "-1"] {
        let err = install.refused(&[os("ls"), os(&format!("--partition={bad}")), disk.as_os_str()]);
        assert!(err.contains("--partition"), "{bad}: {err}");
    }

    // An MBR disk: uuid= takes its PARTUUID, which for MBR is the disk
    // signature (blkid's ID_PART_TABLE_UUID) and the number, SSSSSSSS-NN
    // (util-linux's convention, as in mount(8)'s PARTUUID=).
    let (mbr, part) = one_filesystem(dir, "dos");
    let udev = run(Command::new("blkid").args(["-p", "-o", "udev"]).arg(&mbr)).unwrap();
    let udev = text(&udev.stdout);
    let signature = udev.lines().find_map(|l| l.strip_prefix("ID_PART_TABLE_UUID=")).expect("blkid: no table UUID");
    assert_eq!(signature.len(), 8, "{udev}");
    let partuuid = format!("{}-{:02x}", signature.to_uppercase(), part.number);
    let by_uuid = install.ok(&[os("ls"), os("--partition"), os(&format!("uuid={partuuid}")), mbr.as_os_str()]);
    let by_number = install.ok(&[os("ls"), os("--partition"), os(&part.number.to_string()), mbr.as_os_str()]);
    assert_eq!(by_uuid, by_number);
}

#[test]
fn ls_and_info_of_a_whole_disk_show_each_partitions_filesystem() {
    require_root();
    let install = Install::new();
    let dir = install.dir.path();
    let disk = three_partitions(dir);
    let described = sfdisk_json(&disk);

    let listed = json_lines(&install.ok(&[os("ls"), os("--json"), disk.as_os_str()]));
    assert_eq!(listed.len(), described.len(), "{listed:?}");
    let info = install.ok(&[os("info"), os("--json"), disk.as_os_str()]);
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(info["images"], serde_json::json!([]), "a raw disk has no image layer: {info}");
    assert_eq!(info["table"]["format"], "gpt");
    let parts = info["partitions"].as_array().unwrap();
    let info_text = text(&install.ok(&[os("info"), disk.as_os_str()]));
    let ls_text = text(&install.ok(&[os("ls"), disk.as_os_str()]));
    let ls_lines: Vec<&str> = ls_text.lines().collect();
    assert_eq!(ls_lines.len(), described.len(), "{ls_text}");
    for (i, p) in described.iter().enumerate() {
        let (l, inf) = (&listed[i], &parts[i]);
        for v in [l, inf] {
            assert_eq!(v["number"], p.number, "{v}");
            assert_eq!(v["start"], p.start, "{v}");
            assert_eq!(v["length"], p.length, "{v}");
            assert_eq!(v["name"], p.name.as_str(), "{v}");
            assert_eq!(v["uuid"], p.uuid.as_deref().unwrap(), "{v}");
        }
        let found = blkid(&disk, p.start);
        let want: Vec<&str> = match found.as_ref().map(|f| f.0.as_str()) {
            None => vec![],
            Some("ext4") => vec!["ext4"],
            Some("vfat") => vec!["fat"],
            Some(other) => panic!("blkid finds {other} in partition {}", p.number),
        };
        assert_eq!(l["filesystems"], serde_json::json!(want), "partition {}: blkid says {found:?}", p.number);
        assert_eq!(inf["filesystems"], serde_json::json!(want), "partition {}", p.number);
        let fields: Vec<&str> = ls_lines[i].split('\t').collect();
        let fs = if want.is_empty() { "-".to_string() } else { want.join(",") };
        assert_eq!(fields, [p.number.to_string(), p.kind.clone(), p.length.to_string(), fs, p.name.clone()]);
        let line = info_text
            .lines()
            .find(|l| l.starts_with(&format!("partition {}: ", p.number)))
            .unwrap_or_else(|| panic!("info has no line for partition {}:\n{info_text}", p.number));
        match &found {
            Some((kind, label, uuid)) => {
                let fs = &inf["filesystem"];
                assert_eq!(fs["label"], label.as_str(), "partition {}: {fs}", p.number);
                assert!(line.contains(&format!("label \"{label}\"")), "{line}");
                if kind == "ext4" {
                    // blkid's UUID form is the usual one for ext4.
                    assert_eq!(fs["uuid"], uuid.as_str(), "partition {}: {fs}", p.number);
                    assert!(line.contains(&format!("uuid {uuid}")), "{line}");
                    assert_eq!(fs["guest"], "ext4");
                }
            }
            None => {
                assert_eq!(inf["filesystem"], serde_json::Value::Null);
                assert!(line.ends_with(": no filesystem"), "{line}");
            }
        }
    }

    // A command that needs one filesystem: refused, naming both.
    let err = install.refused(&[os("cat"), disk.as_os_str(), os("/rootfs.txt")]);
    assert!(err.contains("several filesystems"), "{err}");
    assert!(err.contains("\n  1 \"ROOT\": ext4") && err.contains("\n  3 \"data\": fat"), "{err}");
    assert!(err.contains("\n  2 \"data\": no filesystem"), "{err}");

    // The same disk as a qcow2: its image layer, then the same partitions.
    let qcow2 = dir.join("three.qcow2");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&disk).arg(&qcow2)).unwrap();
    let q = run(Command::new("qemu-img").args(["info", "--output=json"]).arg(&qcow2)).unwrap();
    let q: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    let info = install.ok(&[os("info"), os("--json"), qcow2.as_os_str()]);
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    let images = info["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{info}");
    assert_eq!(images[0]["format"], "qcow2");
    assert_eq!(images[0]["length"], q["virtual-size"]);
    assert_eq!(images[0]["path"], qcow2.to_str().unwrap());
    assert_eq!(images[0]["backing"], serde_json::Value::Null);
    assert_eq!(info["partitions"], serde_json::Value::Array(parts.clone()), "qcow2 and raw disagree");
    let text_info = text(&install.ok(&[os("info"), qcow2.as_os_str()]));
    assert!(text_info.starts_with(&format!("image: {} (qcow2, ", qcow2.display())), "{text_info}");
    // And an ext4 image's info --json names no layer, a qcow2 of it one.
    let kernel_fs = dir.join("plain.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&kernel_fs).arg("8M")).unwrap();
    let plain: serde_json::Value =
        serde_json::from_slice(&install.ok(&[os("info"), os("--json"), kernel_fs.as_os_str()])).unwrap();
    assert_eq!(plain["images"], serde_json::json!([]), "{plain}");
}

/// `fshost mount --foreground` of `source` (no --plugin, no --partition)
/// at a scratch mountpoint, with its stderr kept.
struct Mounted {
    child: Child,
    mnt: ScratchDir,
    log: PathBuf,
}

impl Mounted {
    fn new(install: &Install, source: &Path) -> Mounted {
        let mnt = ScratchDir::new("whole-disk-mnt").unwrap();
        let log = install.dir.path().join("mount.log");
        let child = install
            .command(&[os("mount"), os("-f"), os("-v"), source.as_os_str(), mnt.path().as_os_str()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted { child, mnt, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mount_point(m.mnt.path()).unwrap() {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!("fshost mount exited ({status}):\n{}", m.log());
            }
            assert!(Instant::now() < deadline, "not mounted within 30 s:\n{}", m.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // A FUSE mount just read can be busy for a moment under load.
        let unmounted = (0..10).any(|_| {
            let done = Command::new("umount").arg(self.mnt.path()).status().is_ok_and(|s| s.success());
            if !done {
                std::thread::sleep(Duration::from_millis(200));
            }
            done
        });
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(self.mnt.path()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                eprintln!("warning: fshost did not exit after unmount; killing it");
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

#[test]
fn a_disk_with_one_filesystem_is_used_without_partition() {
    require_root();
    let install = Install::new();
    let dir = install.dir.path();
    for label in ["gpt", "dos"] {
        let (disk, part) = one_filesystem(dir, label);
        let kernel = KernelPartition::mount(&disk, part.start, part.length);
        {
            let mounted = Mounted::new(&install, &disk);
            let diffs = compare_trees(kernel.path(), mounted.mnt.path());
            let shown: Vec<String> = diffs.iter().take(20).map(|d| format!("  {d}")).collect();
            assert!(diffs.is_empty(), "{label}: {} differences:\n{}", diffs.len(), shown.join("\n"));
            let log = mounted.log();
            assert!(log.contains(&format!("using partition {} (ext4)", part.number)), "-v does not say:\n{log}");
        }
        // The offline commands: as --partition N would, as the kernel reads it.
        let with_n = |args: &[&OsStr]| {
            let mut a = args.to_vec();
            a.extend([os("--partition"), os("2")]);
            install.ok(&a)
        };
        let cat = install.ok(&[os("cat"), disk.as_os_str(), os("/sub/big.bin")]);
        assert!(cat == std::fs::read(kernel.path().join("sub/big.bin")).unwrap(), "{label}: cat differs");
        let stat = [os("stat"), os("--json"), disk.as_os_str(), os("/link")];
        assert_eq!(install.ok(&stat), with_n(&stat), "{label}: stat");
        let ls_root = [os("ls"), os("-l"), os("--time-style"), os("epoch"), disk.as_os_str(), os("/")];
        assert_eq!(install.ok(&ls_root), with_n(&ls_root), "{label}: ls /");
        let info = [os("info"), disk.as_os_str()];
        assert!(text(&install.ok(&info)).contains("partition 2: "), "{label}: info lists the partitions");
        // Without a path, ls lists the partitions, even one.
        let listed = text(&install.ok(&[os("ls"), disk.as_os_str()]));
        let numbers: Vec<&str> = listed.lines().map(|l| l.split('\t').next().unwrap()).collect();
        assert_eq!(numbers, ["1", "2"], "{label}: {listed}");
    }
    // A table of 70 partitions: the first 64 are looked into, and no
    // partition is "the one" (the one ext4 is number 70).
    let many = dir.join("many.img");
    std::fs::File::create(&many).unwrap().set_len(80 << 20).unwrap();
    let script: String = (0..70).map(|i| format!("start={}, size=2048, type=L\n", 2048 + i * 2048)).collect();
    sfdisk(&many, &format!("label: gpt\n{script}")).unwrap();
    let last = sfdisk_json(&many).into_iter().find(|p| p.number == 70).expect("sfdisk made 70 partitions");
    ext4_at(&many, dir, last.start, last.length, "last");
    let err = install.refused(&[os("cat"), many.as_os_str(), os("/last.txt")]);
    assert!(err.contains("holds 70 partitions") && err.contains("--partition"), "{err}");
    let info = text(&install.ok(&[os("info"), many.as_os_str()]));
    assert_eq!(info.lines().filter(|l| l.ends_with(": no filesystem")).count(), 64, "{info}");
    assert_eq!(info.lines().filter(|l| l.contains(": not looked into")).count(), 6, "{info}");
    let cat = install.ok(&[os("cat"), os("--partition"), os("70"), many.as_os_str(), os("/last.txt")]);
    assert_eq!(cat, b"I live in last\n");

    // A blank disk with a table and no filesystem: refused, saying so.
    let blank = dir.join("blank.img");
    std::fs::File::create(&blank).unwrap().set_len(16 << 20).unwrap();
    sfdisk(&blank, "label: gpt\nstart=2048, size=8192, type=L, name=empty\n").unwrap();
    let err = install.refused(&[os("cat"), blank.as_os_str(), os("/x")]);
    assert!(err.contains("no partition of its gpt table holds a filesystem"), "{err}");
    assert!(err.contains("\n  1 \"empty\": no filesystem (ext4: "), "{err}");
}
