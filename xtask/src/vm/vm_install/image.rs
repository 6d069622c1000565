//! The guest disk: a Debian rootfs (debootstrap, systemd, curl, kmod, gcc, make,
//! dkms, nginx started at boot, the kernel it boots and that kernel's headers)
//! as an ext4 image, with the kernel and its initramfs beside it for QEMU's
//! direct boot.
//!
//! Cached under `<cache>/vm-install/<distro>-<release>/`. Each step leaves a
//! mark, so an interrupted build resumes at the step it was in (a half-done
//! debootstrap starts over); `stamp`, written last, names the recipe the image
//! was made from, and an image from another recipe is made again.

use crate::distro::Distro;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const RUNNER: &str = include_str!("runner.sh");
pub const UNIT: &str = include_str!("toa-lab.service");
pub const CONFIGURE: &str = include_str!("configure.sh");

/// What debootstrap puts in besides the minimal base.
const BOOTSTRAP_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "bash",
    "curl",
    "ca-certificates",
    "kmod",
    "iproute2",
    "gcc",
    "make",
    "libc6-dev",
];

/// Installed with the kernel (configure.sh): DKMS for the compile path;
/// nginx, a service that listens before any installer runs (stage.sh).
const MORE_PACKAGES: &[&str] = &["dkms", "nginx-light"];

/// Enabled in the image (configure.sh), so systemd starts them at every boot.
const BOOT_SERVICES: &[&str] = &["nginx.service"];

/// Free space the image has beyond its files: the builds in the guest.
const HEADROOM_MB: u64 = 768;

/// A ready guest disk.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub release: String,
    pub disk: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// The cache directory holding all three.
    pub dir: PathBuf,
}

/// What the image is made from; another recipe means another image.
fn recipe(distro: &Distro, release: &str) -> Result<String> {
    let repo = distro.debian()?;
    let mut hash = Sha256::new();
    for part in [RUNNER, UNIT, CONFIGURE] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    Ok(format!(
        "mirror {}\nsuite {}\nsources {}\nrelease {release}\npackages {}\nmore {}\nservices {}\nheadroom {HEADROOM_MB}\nfiles {}\n",
        repo.mirror,
        repo.suite,
        release_suites(distro)?.replace('\n', "; "),
        BOOTSTRAP_PACKAGES.join(","),
        MORE_PACKAGES.join(","),
        BOOT_SERVICES.join(","),
        hex::encode(hash.finalize())
    ))
}

/// apt sources for the release's other suites (updates, security,
/// backports): the guest installs a kernel from whichever has it, as an
/// updated install would.
fn release_suites(distro: &Distro) -> Result<String> {
    let repo = distro.debian()?;
    let home = repo.home();
    Ok(repo
        .suites()
        .into_iter()
        .filter(|s| *s != home)
        .map(|s| format!("deb {} {} main\n", s.mirror, s.suite))
        .collect())
}

pub fn image_dir(distro: &Distro, release: &str) -> PathBuf {
    crate::host::cache::cache_dir()
        .join("vm-install")
        .join(format!("{}-{release}", distro.name))
}

/// The guest image for kernel `release` of `distro`, made if it is not cached.
pub fn ensure(distro: &Distro, release: &str) -> Result<GuestImage> {
    let dir = image_dir(distro, release);
    let image = GuestImage {
        release: release.to_string(),
        disk: dir.join("disk.img"),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        dir: dir.clone(),
    };
    let recipe = recipe(distro, release)?;
    let stamp = dir.join("stamp");
    let ready =
        |img: &GuestImage| img.disk.is_file() && img.vmlinuz.is_file() && img.initrd.is_file();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(recipe.as_str()) && ready(&image) {
        return Ok(image);
    }
    crate::host::require_root("building the guest image (debootstrap, chroot)")?;
    crate::host::ensure_tools(&[
        ("debootstrap", "debootstrap"),
        ("unshare", "util-linux"),
        ("mkfs.ext4", "e2fsprogs"),
    ])?;
    // Steps done for another recipe do not count.
    let recipe_file = dir.join("recipe");
    if std::fs::read_to_string(&recipe_file).ok().as_deref() != Some(recipe.as_str()) {
        if dir.exists() {
            eprintln!(
                "guest image: recipe changed, starting over in {}",
                dir.display()
            );
            remove_tree(&dir)?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&recipe_file, &recipe)?;
    }
    let _ = std::fs::remove_file(&stamp);
    let log = dir.join("build.log");
    let rootfs = dir.join("rootfs");
    let repo = distro.debian()?;

    let bootstrapped = dir.join("step-1-debootstrap");
    if !bootstrapped.exists() {
        remove_tree(&rootfs)?;
        let include = format!("--include={}", BOOTSTRAP_PACKAGES.join(","));
        step(
            "debootstrap the guest rootfs",
            &log,
            duct::cmd(
                "debootstrap",
                [
                    "--variant=minbase",
                    include.as_str(),
                    repo.suite.as_str(),
                    &rootfs.to_string_lossy(),
                    repo.mirror.as_str(),
                ],
            ),
        )?;
        std::fs::write(&bootstrapped, "")?;
    }

    let configured = dir.join("step-2-configure");
    if !configured.exists() {
        let sbin = rootfs.join("usr/local/sbin");
        std::fs::create_dir_all(&sbin)?;
        write_mode(&sbin.join("toa-lab-runner"), RUNNER, 0o755)?;
        write_mode(
            &rootfs.join("etc/systemd/system/toa-lab.service"),
            UNIT,
            0o644,
        )?;
        write_mode(&rootfs.join("root/toa-lab-configure.sh"), CONFIGURE, 0o755)?;
        write_mode(
            &rootfs.join("etc/apt/sources.list.d/toa-release-suites.list"),
            &release_suites(distro)?,
            0o644,
        )?;
        let script = format!(
            "mount -t proc proc /proc && RELEASE={release} PACKAGES='{}' SERVICES='{}' /bin/sh /root/toa-lab-configure.sh",
            MORE_PACKAGES.join(" "),
            BOOT_SERVICES.join(" ")
        );
        step(
            &format!(
                "install kernel {release}, its headers, {} in the guest rootfs",
                MORE_PACKAGES.join(", ")
            ),
            &log,
            chroot(&rootfs, &script),
        )?;
        std::fs::remove_file(rootfs.join("root/toa-lab-configure.sh"))?;
        for (from, to) in [
            (format!("boot/vmlinuz-{release}"), &image.vmlinuz),
            (format!("boot/initrd.img-{release}"), &image.initrd),
        ] {
            std::fs::copy(rootfs.join(&from), to)
                .with_context(|| format!("copying {from} out of the guest rootfs"))?;
        }
        std::fs::write(&configured, "")?;
    }

    let partial = dir.join("disk.img.partial");
    let _ = std::fs::remove_file(&partial);
    let used_mb = du_mb(&rootfs)?;
    let size_mb = used_mb + used_mb / 4 + HEADROOM_MB;
    step(
        &format!("make the ext4 image ({size_mb} MB) from the rootfs"),
        &log,
        duct::cmd(
            "mkfs.ext4",
            [
                "-q".to_string(),
                "-F".into(),
                "-L".into(),
                "toa-lab".into(),
                "-d".into(),
                rootfs.to_string_lossy().into_owned(),
                partial.to_string_lossy().into_owned(),
                format!("{size_mb}M"),
            ],
        ),
    )?;
    std::fs::rename(&partial, &image.disk)?;
    std::fs::write(&stamp, &recipe)?;
    // The image holds it all now.
    remove_tree(&rootfs)?;
    for mark in [&bootstrapped, &configured] {
        let _ = std::fs::remove_file(mark);
    }
    if !ready(&image) {
        bail!("the guest image in {} is incomplete", dir.display());
    }
    Ok(image)
}

/// `unshare` + `chroot`: /proc is mounted only for the command.
fn chroot(root: &Path, script: &str) -> duct::Expression {
    let root = root.to_string_lossy();
    let inner = crate::build::builder::shell_quote(script);
    let outer = format!(
        "exec chroot {} /bin/sh -c {inner}",
        crate::build::builder::shell_quote(&root)
    );
    duct::cmd(
        "unshare",
        ["--mount", "--fork", "/bin/sh", "-c", outer.as_str()],
    )
}

/// Runs one build step, its output appended to `log`.
fn step(what: &str, log: &Path, cmd: duct::Expression) -> Result<()> {
    let started = Instant::now();
    eprintln!("guest image: {what} (log: {})", log.display());
    let bar = crate::progress::spinner("guest image");
    let cmd = cmd.env("LC_ALL", "C").env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    let result = crate::build::builder::run_logged(cmd, log, what, what, &bar);
    bar.finish_and_clear();
    result?;
    eprintln!(
        "guest image: {what}: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Disk use of a tree in MB (`du`), rounded up.
pub fn du_mb(path: &Path) -> Result<u64> {
    let out = duct::cmd!("du", "-sxm", path)
        .read()
        .with_context(|| format!("du {}", path.display()))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected du output: {out}"))
}
