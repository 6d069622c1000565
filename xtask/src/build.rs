//! `cargo xtask build`: toa.ko for kernels of a distro release, each built in
//! the release's own environment, checked, and packed under target/dist.

pub mod builder;
pub mod failures;
pub mod headers_cache;
pub mod index;
pub mod package;
pub mod pipeline;

use crate::build::builder::{BackendKind, Builder};
use crate::distro::kernel::{release_cmp, Kernel, KernelSpec};
use crate::distro::Distro;
use crate::host::needs::{self, Needs};
use crate::repo::kernels;
use crate::{host::cache, objects::kmod, objects::modcheck, progress};
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar};
use package::KernelModule;
use pipeline::Pipeline;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(clap::Args)]
pub struct Args {
    /// Distro release to build for (a file stem under distros/, e.g. debian-12, centos-7.2).
    #[arg(long, default_value = "debian-12", value_parser = crate::distro::recipe::parse)]
    pub distro: crate::distro::Recipe,
    /// Kernel architecture, as `uname -m` prints it: aarch64 cross-builds
    /// arm64 kernels into `<Tarball>-aarch64.tar.gz`. Default: x86_64 (or the
    /// release's only one).
    #[arg(long, value_enum)]
    pub arch: Option<crate::distro::arch::Arch>,
    /// Kernel release to build for, as `uname -r` prints it (repeatable). `RELEASE=VERSION`
    /// names one with its headers package version, for kernels the metadata does not list.
    /// Default: every kernel of the release (all suites, all flavours; see `cargo xtask kernels`).
    #[arg(long = "kernel", value_name = "RELEASE", value_parser = crate::distro::kernel::parse_spec)]
    pub kernels: Vec<crate::distro::kernel::KernelSpec>,
    /// Build only the N newest kernels of the release.
    #[arg(long, value_name = "N", conflicts_with = "kernels")]
    pub latest: Option<usize>,
    /// Builder backend. Default: a running docker or podman engine, else a chroot
    /// (Debian family only).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Kernels prepared and built at the same time. Default: the number of CPUs.
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Print the commands every step would run (cached steps included) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// When kernels fail, write which and why to FILE (JSON, read by `cargo
    /// xtask merge`); the ones that built are packed all the same. The exit
    /// status still says the build failed.
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub failures: Option<PathBuf>,
}

/// The error of a build in which some kernels failed: each with its error,
/// and the tarball the others were packed in (None: no kernel built).
#[derive(Debug)]
pub struct KernelsFailed {
    pub distro: String,
    pub total: usize,
    pub failed: Vec<(Kernel, anyhow::Error)>,
    pub packed: Option<PathBuf>,
}

impl std::fmt::Display for KernelsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.packed {
            None => write!(
                f,
                "{}: no kernel built ({} failed)",
                self.distro,
                self.failed.len()
            ),
            Some(tarball) => write!(
                f,
                "{}: {} of {} kernel(s) failed ({}); the others are packed in {}",
                self.distro,
                self.failed.len(),
                self.total,
                self.failed
                    .iter()
                    .map(|(k, _)| k.release.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                tarball.display()
            ),
        }
    }
}

impl std::error::Error for KernelsFailed {}

/// The failure record of a build of `kernels` that ended in `err`: the
/// kernels [`KernelsFailed`] names with their own errors, or every kernel
/// with `err` when the build failed as a whole (its image, an archive).
pub fn failure_record(
    distro: &Distro,
    kernels: &[Kernel],
    err: &anyhow::Error,
) -> crate::build::failures::Record {
    let failed = match err.downcast_ref::<KernelsFailed>() {
        Some(kf) => kf
            .failed
            .iter()
            .map(|(k, e)| crate::build::failures::Failed {
                release: k.release.clone(),
                version: k.version.clone(),
                error: crate::build::failures::one_line(e),
            })
            .collect(),
        None => kernels
            .iter()
            .map(|k| crate::build::failures::Failed {
                release: k.release.clone(),
                version: k.version.clone(),
                error: crate::build::failures::one_line(err),
            })
            .collect(),
    };
    crate::build::failures::Record::new(&distro.name, &distro.arch, failed)
}

/// What a build produced for one distro release.
pub struct Built {
    /// `uname -r` of the top-level toa.ko's kernel: the default install's
    /// (e.g. `6.1.0-57-amd64`), or the newest built where that is unknown.
    pub release: String,
    /// Package version of that kernel, e.g. `6.1.192-3`.
    pub kernel_version: String,
    /// The packed tarball, `target/dist/Debian-12-x86_64.tar.gz`.
    pub tarball: PathBuf,
    /// Path of that kernel's module inside the tarball, e.g. `Debian-12-x86_64/toa.ko`.
    pub ko_in_tarball: String,
    /// Every kernel packed.
    pub modules: Vec<KernelModule>,
}

impl Args {
    /// What a build needs: the release's repository and builder; a dry run
    /// only prints commands. An architecture the recipe lacks is refused
    /// before anything is installed.
    pub fn needs(&self) -> Result<Needs> {
        self.distro.distro(self.arch)?;
        Ok(if self.dry_run {
            Needs::new("build --dry-run")
        } else {
            Needs::new("build")
                .rust()
                .tools(needs::REPOSITORY)
                .tools(needs::BUILDER)
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    let distro = args.distro.distro(args.arch)?;
    if args.dry_run {
        return dry_run(&distro, &args);
    }
    let kernels = pick_kernels(&distro, &args)?;
    let jobs = args.jobs.unwrap_or_else(default_jobs);
    let built = kernels::default_kernel(&distro)
        .with_context(|| format!("{}: which kernel the top-level toa.ko is for", distro.name))
        .and_then(|default| build(&distro, &kernels, default.as_ref(), args.backend, jobs));
    let built = match (built, &args.failures) {
        (Ok(built), None) => built,
        (Ok(built), Some(path)) => {
            // Nothing failed: no record, not even one an earlier run left.
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            }
            built
        }
        (Err(err), None) => return Err(err),
        (Err(err), Some(path)) => {
            let record = failure_record(&distro, &kernels, &err);
            record.write(path)?;
            eprintln!(
                "{} kernel(s) failed; recorded in {}",
                record.failed.len(),
                path.display()
            );
            return Err(err);
        }
    };
    for m in &built.modules {
        println!(
            "built toa.ko for {} (kernel package {})",
            m.release, m.kernel_version
        );
    }
    println!(
        "  {} : {} ({})",
        built.tarball.display(),
        built.ko_in_tarball,
        built.release
    );
    Ok(())
}

/// One build per CPU: a build is one compiler at a time, and preparing a
/// kernel's headers waits on the network as much as on the disk.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn pick_kernels(distro: &Distro, args: &Args) -> Result<Vec<Kernel>> {
    let all_pinned = !args.kernels.is_empty() && args.kernels.iter().all(|k| k.version.is_some());
    let all = if all_pinned {
        Vec::new()
    } else {
        kernels::discover(distro)?
    };
    kernels::select(distro, &all, &args.kernels, args.latest)
}

/// Prints every command a build would run. Kernels named with `--kernel`
/// need no repository metadata: their package versions come from the
/// recipe where it can derive them; what it cannot is said.
fn dry_run(distro: &Distro, args: &Args) -> Result<()> {
    let kernels = if args.kernels.is_empty() {
        pick_kernels(distro, args)?
    } else {
        let (kernels, notes) = kernels::from_recipe(distro, &args.kernels)?;
        for note in &notes {
            println!("# note: {note}");
        }
        kernels
    };
    let kind = args
        .backend
        .map_or_else(|| builder::select(None, distro), Ok)?;
    Pipeline::new(Builder::new(kind, distro), kernels).print(|b, k| work_dir(&b.distro, k))
}

/// Build, check and pack toa.ko for the kernel a default install of `distro`
/// runs after updates (the newest, where the family has no metapackage):
/// what the VM lab boots and the installers' tests install. Packed apart
/// from target/dist (see [`lab_dist_dir`]), so a release's full tarball there
/// stays whole.
pub fn build_distro(distro: &Distro) -> Result<Built> {
    build_for_lab(distro, None)
}

/// Where the lab's own tarballs go: `target/lab-dist`.
pub fn lab_dist_dir() -> PathBuf {
    cache::target_dir().join("lab-dist")
}

/// [`build_distro`], plus kernel `also` of the release when given (a
/// flavour or a backport the lab boots on demand): the tarball holds both,
/// its top-level toa.ko the default kernel's.
pub fn build_for_lab(distro: &Distro, also: Option<&str>) -> Result<Built> {
    let all = kernels::discover(distro)?;
    let default = kernels::default_kernel(distro)?;
    let default_kernel = match &default {
        Some(d) => all
            .iter()
            .find(|k| k.release == d.release)
            .with_context(|| {
                format!(
                    "{}: {} depends on kernel {}, which lists no headers package",
                    distro.name, d.from, d.release
                )
            })?
            .clone(),
        None => all.last().context("no kernels")?.clone(),
    };
    let mut picked = vec![default_kernel];
    if let Some(release) = also.filter(|r| *r != picked[0].release) {
        picked.extend(kernels::select(
            distro,
            &all,
            &[KernelSpec::release(release)],
            None,
        )?);
    }
    build_into(
        distro,
        &picked,
        default.as_ref(),
        None,
        default_jobs(),
        &lab_dist_dir(),
    )
}

/// Where one kernel's sources and build results live on the host.
fn work_dir(distro: &Distro, kernel: &Kernel) -> PathBuf {
    cache::cache_dir()
        .join("work")
        .join(distro.build_name())
        .join(&kernel.release)
}

/// Builds every kernel (a failure on one does not stop the others), packs the
/// ones that succeeded into target/dist (`default`'s module at the top level),
/// and fails if any did not.
pub fn build(
    distro: &Distro,
    kernels: &[Kernel],
    default: Option<&crate::repo::kernels::DefaultKernel>,
    backend: Option<BackendKind>,
    jobs: usize,
) -> Result<Built> {
    build_into(distro, kernels, default, backend, jobs, &cache::dist_dir())
}

/// [`build`], packing into `dist_dir`.
fn build_into(
    distro: &Distro,
    kernels: &[Kernel],
    default: Option<&crate::repo::kernels::DefaultKernel>,
    backend: Option<BackendKind>,
    jobs: usize,
    dist_dir: &Path,
) -> Result<Built> {
    let kind = builder::select(backend, distro)?;
    let builder = Builder::new(kind, distro);
    builder.ensure_host()?;
    // Held to the end of the build: dropping it removes the tokens' file.
    let _registered = builder.write_registered_repos()?;
    let objects = kmod::build_all(&cache::cache_dir().join("kmod-objects"))?;
    let logs = cache::target_dir()
        .join("build-logs")
        .join(distro.build_name());

    let multi = MultiProgress::new();
    let overall = multi.add(progress::counter(
        &format!("{} ({})", distro.name, kind_name(kind)),
        kernels.len() as u64,
        "{prefix} [{bar:30}] {pos}/{len} kernels [{elapsed}]",
    ));
    // Shown in a log's lines only (the terminal's template has it already).
    overall.set_message("kernels done");

    let prep = multi.add(progress::spinner("prepare"));
    let mut pipeline = Pipeline::new(builder, kernels.to_vec());
    let ready = pipeline.ready(jobs, &|name| logs.join(format!("{name}.log")), &prep)?;
    for _ in &ready.failed {
        progress::advance(&overall);
    }
    let builder = pipeline.builder;
    let headers_per_job = ready.headers_per_job;
    prep.finish_and_clear();

    let results: Mutex<Vec<KernelModule>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<(Kernel, anyhow::Error)>> = Mutex::new(ready.failed);
    let queue: Mutex<Vec<Kernel>> = Mutex::new(ready.to_build.into_iter().rev().collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let Some(k) = queue.lock().unwrap().pop() else {
                    break;
                };
                let bar = multi.add(progress::spinner(&k.release));
                let log = logs.join(format!("{}.log", k.release));
                let headers = if headers_per_job {
                    builder.execute(&builder.headers_steps(&k), &log, &bar)
                } else {
                    Ok(())
                };
                match headers.and_then(|()| build_one(&builder, &k, &objects, &log, &bar)) {
                    Ok(m) => results.lock().unwrap().push(m),
                    Err(e) => failures.lock().unwrap().push((k.clone(), e)),
                }
                bar.finish_and_clear();
                progress::advance(&overall);
            });
        }
    });
    overall.finish_and_clear();

    let mut modules = results.into_inner().unwrap();
    modules.sort_by(|a, b| release_cmp(&a.release, &b.release));
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by(|a, b| release_cmp(&a.0.release, &b.0.release));
    for (k, err) in &failures {
        eprintln!("FAILED {}: {err:#}", k.release);
    }
    if modules.is_empty() {
        return Err(KernelsFailed {
            distro: distro.name.clone(),
            total: kernels.len(),
            failed: failures,
            packed: None,
        }
        .into());
    }
    let dist_name = distro.dist_name();
    // Compressing 42 modules takes most of a minute on two cores: a log
    // reader sees it going on.
    let pack = progress::spinner("pack");
    progress::step(&pack, 1, 2, &format!("{dist_name}.tar.gz"));
    let tarball = package::write_tarball_with_default(
        dist_dir,
        &dist_name,
        &distro.name,
        &distro.arch,
        &modules,
        default,
    );
    // The manifest covers every tarball in dist/, this one included.
    let tarball = tarball.and_then(|tarball| {
        progress::step(&pack, 2, 2, "index.json and SHA256SUMS");
        crate::build::index::write_index(dist_dir).map(|()| tarball)
    });
    pack.finish_and_clear();
    let tarball = tarball?;
    if !failures.is_empty() {
        return Err(KernelsFailed {
            distro: distro.name.clone(),
            total: kernels.len(),
            failed: failures,
            packed: Some(tarball),
        }
        .into());
    }
    let top = default
        .and_then(|d| modules.iter().find(|m| m.release == d.release))
        .or(modules.last())
        .expect("modules is not empty")
        .clone();
    Ok(Built {
        release: top.release,
        kernel_version: top.kernel_version,
        tarball,
        ko_in_tarball: format!("{dist_name}/toa.ko"),
        modules,
    })
}

fn kind_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Docker => "docker",
        BackendKind::Podman => "podman",
        BackendKind::Chroot => "chroot",
    }
}

fn build_one(
    builder: &Builder,
    k: &Kernel,
    objects: &[PathBuf],
    log: &Path,
    bar: &ProgressBar,
) -> Result<KernelModule> {
    let src = work_dir(&builder.distro, k);
    let ko = compile(builder, k, objects, &src, log, bar)?;
    modcheck::check(&ko, &k.release, &src.join(builder::KERNEL_SYMVERS))?;
    let bytes = std::fs::read(&ko).with_context(|| format!("reading {}", ko.display()))?;
    modcheck::check_arch(&bytes, builder.distro.arch_kind())
        .with_context(|| format!("{} failed its checks", ko.display()))?;
    Ok(KernelModule::new(&k.release, &k.version, bytes))
}

/// The modinfo mark of a test-only build: `toa_test_build=<this>`.
pub const NO_REWRITE_MARK: &str = "no-rewrite";

/// A test-only toa.ko for kernel `release` of `distro` (one the lab builds
/// with [`build_distro`]): built by the same builder with
/// `TOA_TEST_NO_REWRITE=1`, so it loads and records but never rewrites an
/// answer, and checked to carry `toa_test_build=no-rewrite` in its modinfo.
/// Built in its own directory, so the release build's objects stay as they are.
pub fn build_test_module(distro: &Distro, release: &str) -> Result<KernelModule> {
    let all = kernels::discover(distro)?;
    let k = all
        .iter()
        .find(|k| k.release == release)
        .with_context(|| format!("{}: no kernel {release}", distro.name))?;
    let kind = builder::select(None, distro)?;
    let mut builder = Builder::new(kind, distro);
    builder.make_vars = vec!["TOA_TEST_NO_REWRITE=1".to_string()];
    builder.ensure_host()?;
    let objects = kmod::build_all(&cache::cache_dir().join("kmod-objects"))?;
    let log = cache::target_dir()
        .join("build-logs")
        .join(distro.build_name())
        .join(format!("{release}-{NO_REWRITE_MARK}.log"));
    let bar = progress::spinner(&format!("{release} ({NO_REWRITE_MARK}, test only)"));
    let src = work_dir(distro, k).with_file_name(format!("{release}-{NO_REWRITE_MARK}"));
    let mut pipeline = Pipeline::new(builder, vec![k.clone()]);
    let built = pipeline
        .ready_one(&log, &bar)
        .and_then(|()| compile(&pipeline.builder, k, &objects, &src, &log, &bar));
    bar.finish_and_clear();
    let ko = built?;
    modcheck::check_test_build(
        &ko,
        &k.release,
        &src.join(builder::KERNEL_SYMVERS),
        NO_REWRITE_MARK,
    )?;
    let bytes = std::fs::read(&ko).with_context(|| format!("reading {}", ko.display()))?;
    Ok(KernelModule::new(&k.release, &k.version, bytes))
}

/// Runs kbuild for `k` in `src` (sources synced first); returns toa.ko's path.
fn compile(
    builder: &Builder,
    k: &Kernel,
    objects: &[PathBuf],
    src: &Path,
    log: &Path,
    bar: &ProgressBar,
) -> Result<PathBuf> {
    let _ = std::fs::remove_file(log);
    let inputs = sync_sources(&cache::project_root().join("toa-kmod/kbuild"), objects, src)?;
    let step = builder.build_step(k, src, env!("CARGO_PKG_VERSION"));
    let ko = src.join("toa.ko");
    // With cached headers every input of the build is known: the sources,
    // the command (it names the headers' directories, keyed by their
    // packages' sha256) and the toolchain image's id. When none changed
    // since the last successful build, its module is the result: starting
    // a container per kernel only to hear kbuild say so costs more than
    // the rest of a warm build.
    let stamp_path = src.join(BUILD_STAMP);
    let stamp = builder
        .image_id
        .as_ref()
        .filter(|_| builder.has_cached_headers(&k.release))
        .map(|id| build_stamp(&inputs, &step.shell_line(), id));
    if let Some(stamp) = &stamp {
        if ko.is_file()
            && src.join(builder::KERNEL_SYMVERS).is_file()
            && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
        {
            return Ok(ko);
        }
    }
    let _ = std::fs::remove_file(&stamp_path);
    builder.execute(&[step], log, bar)?;
    if let Some(stamp) = &stamp {
        std::fs::write(&stamp_path, stamp)
            .with_context(|| format!("writing {}", stamp_path.display()))?;
    }
    Ok(ko)
}

/// Where [`compile`] records the inputs of the module it built.
const BUILD_STAMP: &str = ".toa-build-inputs";

/// The sha256 of a build's inputs: sources, command line, image.
fn build_stamp(inputs: &str, line: &str, image_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{inputs}\n{line}\n{image_id}\n")))
}

/// Mirrors the kbuild sources and Rust objects into the build directory,
/// writing only what changed so kbuild's own change tracking stays useful.
/// Returns the sha256 of what it mirrored (names and contents).
pub fn sync_sources(kbuild: &Path, objects: &[PathBuf], dest: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
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
    files.sort();
    let mut digest = Sha256::new();
    for (from, to) in files {
        let data = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        digest.update(to.to_string_lossy().as_bytes());
        digest.update((data.len() as u64).to_le_bytes());
        digest.update(&data);
        if std::fs::read(&to).ok().as_deref() != Some(&data[..]) {
            std::fs::write(&to, &data).with_context(|| format!("writing {}", to.display()))?;
        }
    }
    Ok(hex::encode(digest.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_record_names_each_failed_kernel_with_its_error() {
        let distro = crate::distro::find("debian-12").unwrap();
        let kernels = [
            Kernel::pinned("6.1.0-9-amd64", "6.1.1-1"),
            Kernel::pinned("6.1.0-10-amd64", "6.1.2-1"),
        ];
        let err: anyhow::Error = KernelsFailed {
            distro: "debian-12".into(),
            total: 2,
            failed: vec![(
                kernels[1].clone(),
                anyhow::anyhow!("exit status 2").context("make modules"),
            )],
            packed: Some(PathBuf::from("target/dist/Debian-12-x86_64.tar.gz")),
        }
        .into();
        assert_eq!(
            err.to_string(),
            "debian-12: 1 of 2 kernel(s) failed (6.1.0-10-amd64); the others are packed in \
             target/dist/Debian-12-x86_64.tar.gz"
        );
        let r = failure_record(&distro, &kernels, &err);
        assert_eq!(
            (r.distro.as_str(), r.arch.as_str()),
            ("debian-12", "x86_64")
        );
        assert_eq!(
            r.failed,
            [crate::build::failures::Failed {
                release: "6.1.0-10-amd64".into(),
                version: "6.1.2-1".into(),
                error: "make modules: exit status 2".into(),
            }]
        );
        // A build that failed as a whole (its image, an archive): every kernel.
        let err = anyhow::anyhow!("docker pull debian:bookworm: timeout");
        let r = failure_record(&distro, &kernels, &err);
        assert_eq!(r.failed.len(), 2);
        assert!(r
            .failed
            .iter()
            .all(|f| f.error == "docker pull debian:bookworm: timeout"));
        // Written and read back as merge reads it.
        let path = crate::testing::scratch("failures").join("Debian-12-x86_64.failed.json");
        r.write(&path).unwrap();
        assert_eq!(crate::build::failures::Record::read(&path).unwrap(), r);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
