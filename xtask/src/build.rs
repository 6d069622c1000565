//! `cargo xtask build`: toa.ko for a distro release's kernel, built in that
//! release's own environment, checked, and packed under target/dist.

use crate::distro::Distro;
use crate::package::KernelModule;
use crate::{builder, cache, kmod_object, modcheck, package};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Distro release to build for (a file stem under distros/, e.g. debian-12).
    #[arg(long, default_value = "debian-12")]
    pub distro: String,
}

/// What a build produced for one distro release.
pub struct Built {
    /// `uname -r` of the kernel the module was built for, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// Package version of that kernel, e.g. `6.1.176-1`.
    pub kernel_version: String,
    /// The packed tarball, `target/dist/Debian-12-x86_64.tar.gz`.
    pub tarball: PathBuf,
    /// Path of the module inside the tarball, e.g. `Debian-12-x86_64/toa.ko`.
    pub ko_in_tarball: String,
}

pub fn run(args: Args) -> Result<()> {
    let distro = crate::distro::find(&args.distro)?;
    let built = build_distro(&distro)?;
    println!(
        "built toa.ko for {} (kernel package {})",
        built.release, built.kernel_version
    );
    println!("  {} : {}", built.tarball.display(), built.ko_in_tarball);
    Ok(())
}

/// Build, check and pack toa.ko for the newest kernel of `distro`.
pub fn build_distro(distro: &Distro) -> Result<Built> {
    let kernel = crate::debian_repo::newest_kernel(distro)?;
    eprintln!(
        "{}: newest kernel {} ({})",
        distro.name, kernel.release, kernel.version
    );
    let module = build_kernel(distro, &kernel.release, &kernel.version, &kernel.headers)?;
    let dist_name = distro.dist_name();
    let tarball = package::write_tarball(
        &cache::dist_dir(),
        &dist_name,
        &distro.name,
        &distro.arch,
        &[module],
    )?;
    Ok(Built {
        release: kernel.release,
        kernel_version: kernel.version,
        tarball,
        ko_in_tarball: format!("{dist_name}/toa.ko"),
    })
}

/// toa.ko for one kernel `release`, whose headers package is `headers`.
pub fn build_kernel(
    distro: &Distro,
    release: &str,
    kernel_version: &str,
    headers: &str,
) -> Result<KernelModule> {
    let objects = kmod_object::build_all(&cache::cache_dir().join("kmod-objects"))?;
    let chroot = builder::Chroot::ensure(distro, headers)?;
    let inside = format!("/build/toa-{release}");
    let src = chroot.host_path(&inside);
    sync_sources(
        &cache::project_root().join("toa-kmod/kbuild"),
        &objects,
        &src,
    )?;

    let log = cache::target_dir()
        .join("build-logs")
        .join(&distro.name)
        .join(format!("{release}.log"));
    let _ = std::fs::remove_file(&log);
    let kdir = format!("/usr/src/linux-headers-{release}");
    chroot
        .run(
            &format!(
                "make -C {kdir} M={inside} TOA_VERSION={} modules",
                env!("CARGO_PKG_VERSION")
            ),
            &log,
            &format!("toa.ko for {release}"),
        )
        .with_context(|| format!("building toa.ko for {release} (log: {})", log.display()))?;

    let ko = src.join("toa.ko");
    modcheck::check(
        &ko,
        release,
        &chroot.host_path(&format!("{kdir}/Module.symvers")),
    )?;
    let bytes = std::fs::read(&ko).with_context(|| format!("reading {}", ko.display()))?;
    Ok(KernelModule::new(release, kernel_version, bytes))
}

/// Mirrors the kbuild sources and Rust objects into the build directory,
/// writing only what changed so kbuild's own change tracking stays useful.
fn sync_sources(kbuild: &Path, objects: &[PathBuf], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest.join("rust"))?;
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in
        std::fs::read_dir(kbuild).with_context(|| format!("reading {}", kbuild.display()))?
    {
        let path = entry?.path();
        if path.is_file() {
            files.push((
                path.clone(),
                dest.join(path.file_name().expect("file name")),
            ));
        }
    }
    for object in objects {
        files.push((
            object.clone(),
            dest.join("rust")
                .join(object.file_name().expect("file name")),
        ));
    }
    for (from, to) in files {
        let data = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if std::fs::read(&to).ok().as_deref() != Some(&data[..]) {
            std::fs::write(&to, &data).with_context(|| format!("writing {}", to.display()))?;
        }
    }
    Ok(())
}
