//! `e2fsck -fn`: the oracle for an image's consistency after a workload.
//! e2fsprogs' checker knows every structure ext2/3/4 keeps (bitmaps, free
//! counts, link counts, extent trees, htree indexes, checksums, orphans);
//! it is not ours, so a clean answer is evidence.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Runs `e2fsck -fn IMAGE` (forced full check, no changes). Fails unless
/// it exits 0 (clean), with its whole output in the error.
pub fn e2fsck(image: &Path) -> anyhow::Result<()> {
    let out = Command::new("e2fsck").arg("-fn").arg(image).output().context("running e2fsck")?;
    if !out.status.success() {
        bail!(
            "e2fsck -fn {} says the image is not clean ({}):\n{}{}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
