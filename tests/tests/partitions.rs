//! Whole-disk images through the partitions guest, against the kernel.
//!
//! Tables are written by sfdisk, each partition that holds a filesystem
//! gets an ext4 made by mkfs.ext4 at its offset. The oracle is a kernel's
//! own partition scan: this machine's kernel is built without partition
//! parsers (`CONFIG_MSDOS_PARTITION` and `CONFIG_EFI_PARTITION` are not
//! set, so `losetup -P` finds nothing), so the images are attached to
//! user-mode Linux (6.1, both parsers built in, `tests/src/uml.rs`), which
//! reports /sys/block/ubdX/ubdXN/{partition,start,size} and PARTNAME, and
//! mounts each ext4 partition so its root listing can be compared with
//! `fshost ls --partition N`. All images go through one boot.
//!
//! Differences from the kernel, each checked as such: an extended
//! partition is listed with its real length (the kernel makes it a 1 KiB
//! device); a damaged primary GPT falls back to the backup (the kernel
//! does so only with the `gpt` boot option, so it lists nothing); a
//! looping chain of logical partitions lists each once (the kernel lists
//! the loop's partitions again and again). UML's block devices have
//! 512-byte sectors, so a disk with 4096-byte sectors is compared with
//! sfdisk's own reading of it through a `losetup -b 4096` loop device.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use fshost_tests::fshost::{fshost_bin, guest};
use fshost_tests::kernel::{require_root, run, sfdisk};
use fshost_tests::scratch::ScratchDir;
use fshost_tests::uml;

const MIB: u64 = 1 << 20;

/// One partition as `fshost partitions --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    number: u32,
    start: u64,
    length: u64,
    name: String,
    kind: String,
    flags: Vec<String>,
}

fn fshost(args: &[&OsStr]) -> Output {
    Command::new(fshost_bin()).args(args).stdin(Stdio::null()).output().expect("running fshost")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn partitions(image: &Path) -> (Vec<Listed>, String) {
    let out = fshost(&["partitions".as_ref(), "--json".as_ref(), image.as_os_str()]);
    assert!(out.status.success(), "fshost partitions {}: {}", image.display(), stderr(&out));
    let listed = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Listed {
                number: v["number"].as_u64().unwrap() as u32,
                start: v["start"].as_u64().unwrap(),
                length: v["length"].as_u64().unwrap(),
                name: v["name"].as_str().unwrap_or_default().to_string(),
                kind: v["type"].as_str().unwrap().to_string(),
                flags: v["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect(),
            }
        })
        .collect();
    (listed, stderr(&out))
}

/// `fshost ls --partition N` of the root, sorted.
fn ls_partition(image: &Path, number: u32) -> Vec<String> {
    let out = fshost(&[
        "ls".as_ref(),
        "--plugin".as_ref(),
        guest("ext4").as_os_str(),
        "--partition".as_ref(),
        number.to_string().as_ref(),
        image.as_os_str(),
    ]);
    assert!(out.status.success(), "fshost ls --partition {number} {}: {}", image.display(), stderr(&out));
    let mut names: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
    names.sort();
    names
}

/// An ext4 with a few files named after `label` at byte `start` of
/// `image`, `length` bytes long.
fn mkfs_at(image: &Path, start: u64, length: u64, label: &str, block_size: u32, scratch: &Path) {
    let tree = scratch.join(format!("tree-{label}"));
    std::fs::create_dir_all(tree.join(format!("dir-{label}"))).unwrap();
    std::fs::write(tree.join(format!("{label}.txt")), format!("I live in {label}\n")).unwrap();
    std::fs::write(tree.join("common"), b"x").unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", &block_size.to_string(), "-L", label, "-d"])
        .arg(&tree)
        .arg("-E")
        .arg(format!("offset={start}"))
        .arg(image)
        .arg(format!("{}k", length / 1024)))
    .unwrap();
}

fn image(scratch: &Path, name: &str, size: u64) -> PathBuf {
    let path = scratch.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

/// What the kernel found on each image: its partitions (number -> start,
/// size in 512-byte sectors, PARTNAME) and the root listing of each ext4
/// partition it could mount.
#[derive(Debug, Default)]
struct KernelView {
    parts: BTreeMap<u32, (u64, u64, String)>,
    listings: BTreeMap<u32, Vec<String>>,
}

/// Shell builtins only in the loop over partitions (`read`, not `cat`):
/// each process UML starts costs tens of milliseconds, and the looping
/// chain gives the kernel hundreds of partitions.
const KERNEL_SCRIPT: &str = r#"
mount -t sysfs sysfs /sys
mkdir -p /mnt/p
for d in /sys/block/ubd*; do
  n=${d##*/}
  mkdir -p "$OUT/$n"
  for p in "$d/$n"*; do
    [ -e "$p/partition" ] || continue
    q=${p##*/}
    read num < "$p/partition"
    read start < "$p/start"
    read size < "$p/size"
    name=
    while IFS='=' read -r k v; do [ "$k" = PARTNAME ] && name=$v; done < "$p/uevent"
    echo "$num $start $size $name" >> "$OUT/$n/parts"
    # Only the two undamaged disks are mounted.
    case $n in ubda|ubdb) ;; *) continue ;; esac
    if mount -t ext4 -o ro "/dev/$q" /mnt/p 2>/dev/null; then
      ls -A /mnt/p > "$OUT/$n/$num.ls"
      umount /mnt/p
    fi
  done
done
"#;

fn kernel_views(images: &[&Path]) -> Vec<KernelView> {
    uml::run_read_only(images, KERNEL_SCRIPT, |out| {
        let mut views = Vec::new();
        for (_, letter) in images.iter().zip('a'..) {
            let dir = out.join(format!("ubd{letter}"));
            let mut view = KernelView::default();
            let parts = std::fs::read_to_string(dir.join("parts")).unwrap_or_default();
            for line in parts.lines() {
                let mut f = line.splitn(4, ' ');
                let mut num = || f.next().unwrap().parse::<u64>().unwrap();
                let (n, start, size) = (num() as u32, num(), num());
                let name = f.next().unwrap_or_default().to_string();
                view.parts.insert(n, (start, size, name));
                if let Ok(ls) = std::fs::read_to_string(dir.join(format!("{n}.ls"))) {
                    view.listings.insert(n, ls.lines().map(String::from).collect());
                }
            }
            views.push(view);
        }
        Ok(views)
    })
    .unwrap()
}

/// fshost's partitions as the kernel would show them: start and size in
/// 512-byte sectors, an extended partition as its 1 KiB device.
fn as_kernel(listed: &[Listed]) -> BTreeMap<u32, (u64, u64)> {
    listed
        .iter()
        .map(|p| {
            let size = if p.flags.iter().any(|f| f == "container") { 2 } else { p.length / 512 };
            (p.number, (p.start / 512, size))
        })
        .collect()
}

fn kernel_parts(view: &KernelView) -> BTreeMap<u32, (u64, u64)> {
    view.parts.iter().map(|(n, (start, size, _))| (*n, (*start, *size))).collect()
}

/// The MBR disk: p1 primary (ext4, bootable), p2 extended, p3 primary
/// FAT32 type, logical p5 (ext4), p6, p7 (ext4).
const MBR_SCRIPT: &str = "label: dos\nlabel-id: 0x12345678\n\
    start=2048, size=16384, type=83, bootable\n\
    start=32768, size=131072, type=5\n\
    start=18432, size=8192, type=c\n\
    start=34816, size=20480, type=83\n\
    start=57344, size=16384, type=83\n\
    start=75776, size=40960, type=83\n";

/// The GPT disk: three named partitions, ext4 in the second.
const GPT_SCRIPT: &str = "label: gpt\n\
    start=2048, size=16384, type=L, name=esp\n\
    start=18432, size=40960, type=L, name=\"root fs\"\n\
    start=59392, size=20480, type=L\n";

/// Byte offset of the 16-byte MBR slot `slot` (0..4) in the EBR at `ebr`.
fn slot_at(ebr: u64, slot: u64) -> u64 {
    ebr + 0x1BE + 16 * slot
}

fn patch(image: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn tables_match_the_kernel_and_partitions_mount_as_its_devices() {
    let started = Instant::now();
    let scratch = ScratchDir::new("partitions").unwrap();
    let dir = scratch.path();

    let mbr = image(dir, "mbr.img", 80 * MIB);
    sfdisk(&mbr, MBR_SCRIPT).unwrap();
    for (n, start, sectors) in [(1, 2048u64, 16384u64), (5, 34816, 20480), (7, 75776, 40960)] {
        mkfs_at(&mbr, start * 512, sectors * 512, &format!("mbr-p{n}"), 1024, dir);
    }
    let gpt = image(dir, "gpt.img", 64 * MIB);
    sfdisk(&gpt, GPT_SCRIPT).unwrap();
    mkfs_at(&gpt, 18432 * 512, 40960 * 512, "gpt-p2", 4096, dir);

    // Damage 1: the primary GPT header zeroed.
    let gpt_damaged = dir.join("gpt-primary-zeroed.img");
    std::fs::copy(&gpt, &gpt_damaged).unwrap();
    patch(&gpt_damaged, 512, &[0; 512]);
    // Damage 2: the last EBR (before p7, at sector 75776 - 2048) links back
    // to the first EBR (offset 0 in the extended partition).
    let looping = dir.join("mbr-loop.img");
    std::fs::copy(&mbr, &looping).unwrap();
    let mut link = [0u8; 16];
    link[4] = 0x05;
    link[12..16].copy_from_slice(&2048u32.to_le_bytes());
    patch(&looping, slot_at((75776 - 2048) * 512, 1), &link);
    // Damage 3: p3 runs past the end of the disk, a fourth primary starts
    // past it.
    let past_end = dir.join("mbr-past-end.img");
    std::fs::copy(&mbr, &past_end).unwrap();
    let mut p3 = [0u8; 16];
    p3[4] = 0x83;
    p3[8..12].copy_from_slice(&18432u32.to_le_bytes());
    p3[12..16].copy_from_slice(&(1u32 << 20).to_le_bytes());
    patch(&past_end, slot_at(0, 2), &p3);
    let mut p4 = p3;
    p4[8..12].copy_from_slice(&(1u32 << 24).to_le_bytes());
    patch(&past_end, slot_at(0, 3), &p4);

    let images = [&mbr, &gpt, &gpt_damaged, &looping, &past_end];
    let kernel_started = Instant::now();
    let views = kernel_views(&images.map(|p| p.as_path()));
    let kernel_secs = kernel_started.elapsed().as_secs_f64();

    // The MBR disk: every partition where the kernel has it, each ext4
    // partition listing what the kernel mounts.
    let (listed, _) = partitions(&mbr);
    assert_eq!(listed.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1, 2, 3, 5, 6, 7]);
    assert_eq!(as_kernel(&listed), kernel_parts(&views[0]));
    assert_eq!(listed[0].flags, vec!["bootable"]);
    assert_eq!(listed[2].kind, "0x0c");
    assert_eq!(views[0].listings.keys().copied().collect::<Vec<_>>(), vec![1, 5, 7]);
    for (n, kernel_ls) in &views[0].listings {
        let mut kernel_ls = kernel_ls.clone();
        kernel_ls.sort();
        assert_eq!(ls_partition(&mbr, *n), kernel_ls, "mbr partition {n}");
        assert!(kernel_ls.contains(&format!("mbr-p{n}.txt")), "{kernel_ls:?}");
    }

    // The GPT disk: places, names (ASCII, so the kernel's 7-bit PARTNAME
    // is exact) and the ext4 in partition 2.
    let (listed, warnings) = partitions(&gpt);
    assert!(warnings.is_empty(), "{warnings}");
    assert_eq!(as_kernel(&listed), kernel_parts(&views[1]));
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["esp", "root fs", ""]);
    let kernel_names: Vec<&str> = views[1].parts.values().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(kernel_names, names);
    assert!(listed.iter().all(|p| p.kind == "0FC63DAF-8483-4772-8E79-3D69D8477DE4"));
    let mut kernel_ls = views[1].listings[&2].clone();
    kernel_ls.sort();
    assert_eq!(ls_partition(&gpt, 2), kernel_ls);

    // Zeroed primary header: the kernel (no `gpt` boot option) finds
    // nothing; fshost reads the backup, says so, and lists what the
    // undamaged disk holds.
    assert!(views[2].parts.is_empty(), "{:?}", views[2].parts);
    let (from_backup, warnings) = partitions(&gpt_damaged);
    assert_eq!(from_backup, listed);
    assert!(warnings.contains("using the backup"), "{warnings}");
    assert_eq!(ls_partition(&gpt_damaged, 2), kernel_ls);

    // A looping chain: the kernel lists the loop's partitions again; fshost
    // lists each once, where the kernel lists them first, and warns.
    let (listed, warnings) = partitions(&looping);
    assert!(warnings.contains("loops back"), "{warnings}");
    let ours = as_kernel(&listed);
    let theirs = kernel_parts(&views[3]);
    assert_eq!(ours.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 5, 6, 7]);
    assert!(ours.iter().all(|(n, v)| theirs.get(n) == Some(v)), "fshost {ours:?}\nkernel {theirs:?}");
    assert!(theirs.len() > ours.len(), "the kernel repeats the loop: {theirs:?}");

    // Past the end: cut and dropped as the kernel cuts and drops them.
    let (listed, warnings) = partitions(&past_end);
    assert_eq!(as_kernel(&listed), kernel_parts(&views[4]));
    assert!(listed.iter().all(|p| p.number != 4), "{listed:?}");
    assert!(warnings.contains("past the end"), "{warnings}");

    eprintln!(
        "partitions: 5 images against UML's partition scan ({kernel_secs:.1} s boot), {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

/// A GPT written through a loop device with 4096-byte logical sectors:
/// sfdisk counts in 4096-byte LBAs. fshost finds it on the image file
/// (which has no sector size: the guest looks at 4096 too) and on the loop
/// device itself (BLKSSZGET says 4096), where sfdisk finds it.
#[test]
fn a_disk_with_4096_byte_sectors() {
    require_root();
    let scratch = ScratchDir::new("partitions-4k").unwrap();
    let img = image(scratch.path(), "4k.img", 64 * MIB);
    let out = run(Command::new("losetup").args(["-b", "4096", "-f", "--show"]).arg(&img)).unwrap();
    let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let detach = Detach(dev.clone());
    sfdisk(&dev, "label: gpt\nstart=256, size=2048, type=L, name=one\nstart=2304, size=8192, type=L, name=two\n")
        .unwrap();
    let dump = run(Command::new("sfdisk").arg("-J").arg(&dev)).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(table["sectorsize"], 4096);
    let sfdisk_parts: Vec<(u64, u64)> = table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_u64().unwrap() * 4096, p["size"].as_u64().unwrap() * 4096))
        .collect();
    for source in [&dev, &img] {
        let (listed, warnings) = partitions(source);
        assert!(warnings.is_empty(), "{}: {warnings}", source.display());
        let ours: Vec<(u64, u64)> = listed.iter().map(|p| (p.start, p.length)).collect();
        assert_eq!(ours, sfdisk_parts, "{}", source.display());
        assert_eq!(listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["one", "two"]);
    }
    drop(detach);
    mkfs_at(&img, 2304 * 4096, 8192 * 4096, "fourk", 4096, scratch.path());
    assert_eq!(ls_partition(&img, 2), ["common", "dir-fourk", "fourk.txt", "lost+found"]);
}

struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// What cannot be used fails with a message saying why, and nothing
/// panics: no table, both GPT headers gone, a partition that is not there,
/// the extended container, a `--volume` that is a filesystem guest.
#[test]
fn clear_errors() {
    let scratch = ScratchDir::new("partitions-errors").unwrap();
    let dir = scratch.path();
    let bare = image(dir, "bare.img", 8 * MIB);
    mkfs_at(&bare, 0, 8 * MIB, "bare", 1024, dir);
    let out = fshost(&["partitions".as_ref(), bare.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no partition table"), "{}", stderr(&out));

    let gpt = image(dir, "gpt.img", 64 * MIB);
    sfdisk(&gpt, GPT_SCRIPT).unwrap();
    patch(&gpt, 512, &[0; 512]);
    patch(&gpt, 64 * MIB - 512, &[0; 512]);
    let out = fshost(&["partitions".as_ref(), gpt.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no valid GPT") || err.contains("damaged"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let mbr = image(dir, "mbr.img", 80 * MIB);
    sfdisk(&mbr, MBR_SCRIPT).unwrap();
    let ext4 = guest("ext4");
    let ls = |n: &str, extra: &[&OsStr]| {
        let mut args: Vec<&OsStr> =
            vec!["ls".as_ref(), "-p".as_ref(), ext4.as_os_str(), "--partition".as_ref(), n.as_ref()];
        args.extend_from_slice(extra);
        args.push(mbr.as_os_str());
        fshost(&args)
    };
    let out = ls("4", &[]);
    let err = stderr(&out);
    assert!(err.contains("has no partition 4; its mbr table holds:"), "{err}");
    let held: Vec<&str> = err.lines().filter_map(|l| l.strip_prefix("  ")?.split(' ').next()).collect();
    assert_eq!(held, ["1", "2", "3", "5", "6", "7"], "{err}");
    let out = ls("2", &[]);
    assert!(stderr(&out).contains("extended partition"), "{}", stderr(&out));
    let out = ls("1", &["--volume".as_ref(), ext4.as_os_str()]);
    assert!(stderr(&out).contains("is not a volume guest"), "{}", stderr(&out));
    // A partition without a filesystem: the ext4 guest's own refusal.
    let out = ls("6", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad magic") || stderr(&out).contains("damaged"), "{}", stderr(&out));
}
