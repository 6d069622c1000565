//! The sanitizer kernel of the VM lab (`cargo xtask vm-test --sanitizers`):
//! Debian 12's own kernel source (`linux-source-6.1`, the newest in the
//! suites a default install follows, downloaded through the verified cache)
//! built here with a small configuration made for the lab (see
//! [`config`]): KASAN, lockdep, PROVE_RCU, might-sleep and list checks, with
//! everything the lab needs built in. toa.ko and the lab's test module are
//! built against the same tree on the host ([`build_toa`]), with the compiler
//! the release builds its kernels with (`cc` of `distros/debian-12.toml`).
//!
//! Cache: `<cache>/sanitizer-kernel/<source version>/`, the unpacked tree
//! in `linux/` (it is also the build directory and serves as the headers of
//! `make M=` builds) and three stamps, each written after its step
//! succeeded: `unpacked` (the source package's sha256), `configured` (the
//! config fragment's hash) and `built` (the key: source version and sha256,
//! config hash, compiler; plus the sha256 of bzImage and Module.symvers).
//! A rerun with the same key only checks the stamp (seconds). A missing
//! stamp reruns its step: an interrupted unpack starts again, an interrupted
//! build resumes (make is incremental). Another config hash (the fragment
//! changed) configures the same tree again and make rebuilds what the
//! changed options touch, not the whole kernel. A `built` stamp whose files
//! no longer match is a corrupt entry: bzImage is removed and make runs
//! again. Other source versions are removed once a build succeeded. One
//! build at a time per entry (a lock file beside it).

mod config;
mod kmod;

pub use kmod::{build_lab_modules, build_toa};

use crate::distro::Distro;
use crate::repo::debian::PackageRef;
use crate::report::usage_bail;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Releases whose kernel xtask builds with sanitizers, and the package with its source.
const SOURCES: &[(&str, &str)] = &[("debian-12", "linux-source-6.1")];

/// Guest memory of a sanitizer run: KASAN's shadow takes an eighth of it,
/// lockdep and the quarantine more.
pub const GUEST_MEMORY_MB: u32 = 2048;

/// Added to the guest's kernel command line: any warning (a KASAN report,
/// a WARN_ON, a might-sleep splat) panics, so the run fails where it
/// happened; so do a task blocked for 120 s and a soft lockup, which would
/// otherwise end as a silent timeout (the guest's console shows emergencies only).
pub const CMDLINE: &str = "panic_on_warn=1 hung_task_panic=1 softlockup_panic=1";

/// The guest's timeout is this many times `--timeout`: the sanitizers make
/// the kernel several times slower under TCG.
pub const TIMEOUT_FACTOR: u64 = 3;

/// Host tools of a kernel build, each with its Debian package: a command on
/// PATH, or a header file for the libraries.
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("bc", "bc"),
    ("bison", "bison"),
    ("flex", "flex"),
    ("perl", "perl"),
    ("/usr/include/gelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
];

/// A configured and built sanitizer kernel tree.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The source and build tree: `make -C <dir> M=...` builds modules for it.
    pub dir: PathBuf,
    /// `uname -r` of the kernel: `6.1.192-toa-sanitizers`.
    pub release: String,
    /// The source package it was built from.
    pub source: PackageRef,
    /// The compiler (`CC=`) of the kernel and of its modules.
    pub cc: String,
}

impl Tree {
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("arch/x86/boot/bzImage")
    }

    pub fn symvers(&self) -> PathBuf {
        self.dir.join("Module.symvers")
    }

    /// Where module builds for this tree keep their sources and results.
    fn modules_dir(&self) -> PathBuf {
        self.dir.with_file_name("modules")
    }
}

/// The source package of `distro`'s sanitizer kernel, or a usage error.
fn source_name(distro: &str) -> Result<&'static str> {
    match SOURCES.iter().find(|(d, _)| *d == distro) {
        Some((_, package)) => Ok(package),
        None => usage_bail!(
            "--sanitizers builds the kernel of {} only, not of {distro}",
            SOURCES
                .iter()
                .map(|(d, p)| format!("{d} (from {p})"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// Usage errors of `vm-test --sanitizers` (exit status 2), before anything runs.
pub fn usage(args: &crate::vm::vm_test::Args) -> Result<()> {
    if args
        .arch
        .is_some_and(|a| a != crate::distro::arch::Arch::X86_64)
    {
        usage_bail!("--sanitizers builds an x86_64 kernel only; drop --arch or use --arch x86_64");
    }
    if args.mode != crate::vm::vm_test::Mode::Kmod {
        usage_bail!(
            "--sanitizers runs the lab with toa.ko (--mode kmod): the sanitizer kernel has no BTF for the eBPF mode"
        );
    }
    source_name(args.distro.name())?;
    Ok(())
}

/// `cargo xtask vm-test --sanitizers`: build (or reuse) the sanitizer kernel
/// and toa.ko for it, and run the lab on it with `panic_on_warn=1`.
pub fn vm_test(args: &crate::vm::vm_test::Args) -> Result<()> {
    usage(args)?;
    let distro = args.distro.distro(args.arch)?;
    let tree = tree(&distro)?;
    let module = match &args.module {
        Some(path) => path.clone(),
        None => build_toa(&tree)?,
    };
    let release = crate::vm::vm_test::module_release(&module)?;
    if release != tree.release {
        bail!(
            "{} is for kernel {release}, not the sanitizer kernel {}",
            module.display(),
            tree.release
        );
    }
    let own = crate::vm::vm_test::LabKernel {
        release: tree.release.clone(),
        vmlinuz: tree.bzimage(),
        source: tree.source.clone(),
        lab_modules: build_lab_modules(&tree)?,
    };
    eprintln!("module: {} (for {})", module.display(), tree.release);
    let mut append =
        crate::vm::vm_test::scenario_args(args, &release, crate::distro::arch::Arch::X86_64)
            .unwrap_or_default();
    append = format!("{append} {CMDLINE}").trim().to_string();
    let opts = crate::vm::vm_test::LabOptions {
        timeout: Duration::from_secs(args.timeout.saturating_mul(TIMEOUT_FACTOR)),
        kvm: args.kvm,
        append,
        memory_mb: Some(GUEST_MEMORY_MB),
        own_kernel: Some(own),
        required: crate::vm::vm_test::required_results(args),
        ..crate::vm::vm_test::LabOptions::default()
    };
    // Its own VM directory: target/vm/debian-12-sanitizers/.
    let mut lab_distro = distro.clone();
    lab_distro.name = format!("{}-sanitizers", distro.name);
    let report = crate::vm::vm_test::run_lab(&lab_distro, &module, &opts)?;
    report.print();
    report.check()
}

/// The newest source package of `distro`'s kernel in the suites a default
/// install follows (the release and its security and updates suites).
pub fn source_package(distro: &Distro) -> Result<PackageRef> {
    let name = source_name(&distro.name)?;
    let repo = distro.debian()?;
    let mut newest: Option<PackageRef> = None;
    let mut looked = Vec::new();
    for suite in repo.suites().iter().filter(|s| s.followed_by_default()) {
        looked.push(suite.suite.clone());
        let index = crate::repo::debian::index_of(distro, suite)?;
        if let Ok(found) = index.package(name) {
            if newest.as_ref().is_none_or(|n| {
                crate::repo::debian::version_cmp(&found.version, &n.version).is_gt()
            }) {
                newest = Some(found);
            }
        }
    }
    newest.with_context(|| {
        format!(
            "{}: no package {name} in {}",
            distro.name,
            looked.join(", ")
        )
    })
}

/// The cache entry of one source version (its configurations share the
/// tree: see the module's documentation).
fn entry_dir(source: &PackageRef) -> PathBuf {
    crate::host::cache::cache_dir()
        .join("sanitizer-kernel")
        .join(&source.version)
}

/// The built sanitizer kernel tree of `distro`: built on first use (about
/// half an hour on two cores), then taken from the cache.
pub fn tree(distro: &Distro) -> Result<Tree> {
    let source = source_package(distro)?;
    let cc = distro.builder.cc_for("").to_string();
    ensure_host(&cc)?;
    let entry = entry_dir(&source);
    std::fs::create_dir_all(&entry).with_context(|| format!("creating {}", entry.display()))?;
    let lock_path = lock_path(&entry);
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "waiting for another build of {} (lock {})",
            entry.display(),
            lock_path.display()
        );
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    let tree = Tree {
        dir: entry.join("linux"),
        release: String::new(),
        source,
        cc,
    };
    let log = crate::host::cache::target_dir()
        .join("build-logs")
        .join("sanitizer-kernel")
        .join(format!(
            "{}.log",
            entry.file_name().unwrap_or_default().to_string_lossy()
        ));
    let cc_text = compiler_text(&tree.cc)?;
    let want = Stamp {
        source: format!(
            "{} {} {}",
            tree.source.name, tree.source.version, tree.source.sha256
        ),
        config: config::hash(),
        cc: cc_text,
        release: String::new(),
        bzimage: String::new(),
        symvers: String::new(),
    };
    let built = entry.join("built");
    if let Some(release) = check_built(&tree, &built, &want)? {
        prune_others(&entry);
        return Ok(Tree { release, ..tree });
    }
    let started = Instant::now();
    ensure_unpacked(&tree, &entry)?;
    ensure_configured(&tree, &entry, &log)?;
    let release = make(&tree, &log)?;
    let tree = Tree { release, ..tree };
    let stamp = Stamp {
        release: tree.release.clone(),
        bzimage: crate::host::fs::sha256_file(&tree.bzimage())?,
        symvers: crate::host::fs::sha256_file(&tree.symvers())?,
        ..want
    };
    crate::host::fs::write_atomic(&built, stamp.render().as_bytes())?;
    eprintln!(
        "sanitizer kernel {} built in {:.1} min: {} (log: {})",
        tree.release,
        started.elapsed().as_secs_f64() / 60.0,
        tree.dir.display(),
        log.display()
    );
    prune_others(&entry);
    Ok(tree)
}

/// What a finished build is made of and made into (the `built` stamp).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Stamp {
    /// `<package> <version> <sha256>`.
    source: String,
    config: String,
    /// The compiler's `--version` first line.
    cc: String,
    release: String,
    bzimage: String,
    symvers: String,
}

impl Stamp {
    fn render(&self) -> String {
        format!(
            "source {}\nconfig {}\ncc {}\nrelease {}\nbzImage {}\nModule.symvers {}\n",
            self.source, self.config, self.cc, self.release, self.bzimage, self.symvers
        )
    }

    fn parse(text: &str) -> Stamp {
        let mut s = Stamp::default();
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let slot = match key {
                "source" => &mut s.source,
                "config" => &mut s.config,
                "cc" => &mut s.cc,
                "release" => &mut s.release,
                "bzImage" => &mut s.bzimage,
                "Module.symvers" => &mut s.symvers,
                _ => continue,
            };
            *slot = value.to_string();
        }
        s
    }

    /// Why `self` (read from disk) is not a finished build of `want`'s inputs.
    fn inputs_differ(&self, want: &Stamp) -> Option<String> {
        for (what, got, wanted) in [
            ("source", &self.source, &want.source),
            ("config", &self.config, &want.config),
            ("compiler", &self.cc, &want.cc),
        ] {
            if got != wanted {
                return Some(format!("{what} was \"{got}\", now \"{wanted}\""));
            }
        }
        None
    }
}

/// The release of a finished, intact build in `tree`, if there is one. A
/// build of other inputs or with files that no longer match is not: the
/// stamp goes (make then runs again over the tree), and for a corrupt
/// bzImage the image too, so make links it anew.
fn check_built(tree: &Tree, built: &Path, want: &Stamp) -> Result<Option<String>> {
    let Ok(text) = std::fs::read_to_string(built) else {
        return Ok(None);
    };
    let stamp = Stamp::parse(&text);
    if let Some(why) = stamp.inputs_differ(want) {
        eprintln!("sanitizer kernel: rebuilding ({why})");
        std::fs::remove_file(built).with_context(|| format!("removing {}", built.display()))?;
        return Ok(None);
    }
    let mut corrupt = Vec::new();
    for (path, sha) in [
        (tree.bzimage(), &stamp.bzimage),
        (tree.symvers(), &stamp.symvers),
    ] {
        match crate::host::fs::sha256_file(&path) {
            Ok(got) if &got == sha => {}
            Ok(got) => corrupt.push(format!("{} has sha256 {got}, built {sha}", path.display())),
            Err(e) => corrupt.push(format!("{e:#}")),
        }
    }
    for needed in [
        "scripts/mod/modpost",
        "include/generated/autoconf.h",
        "include/config/auto.conf",
        "include/config/kernel.release",
    ] {
        if !tree.dir.join(needed).is_file() {
            corrupt.push(format!("{} is missing", tree.dir.join(needed).display()));
        }
    }
    let release = std::fs::read_to_string(tree.dir.join("include/config/kernel.release"))
        .unwrap_or_default()
        .trim()
        .to_string();
    if release != stamp.release && corrupt.is_empty() {
        corrupt.push(format!(
            "kernel.release says \"{release}\", built \"{}\"",
            stamp.release
        ));
    }
    if corrupt.is_empty() {
        return Ok(Some(release));
    }
    eprintln!(
        "sanitizer kernel cache {} is corrupt ({}); building again",
        tree.dir.display(),
        corrupt.join("; ")
    );
    std::fs::remove_file(built).with_context(|| format!("removing {}", built.display()))?;
    let _ = std::fs::remove_file(tree.bzimage());
    Ok(None)
}

/// `gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0`.
fn compiler_text(cc: &str) -> Result<String> {
    let out = duct::cmd!(cc, "--version")
        .stderr_null()
        .read()
        .with_context(|| format!("running {cc} --version"))?;
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

/// The kernel build's host tools (and the compiler `cc`): installed with
/// apt-get as root, otherwise one message naming the command.
fn ensure_host(cc: &str) -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    for (probe, package) in HOST_TOOLS.iter().chain(&[(cc, cc)]) {
        let present = if probe.starts_with('/') {
            Path::new(probe).is_file()
        } else {
            crate::host::have(probe)
        };
        if !present && !missing.contains(package) {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::host::is_root() || !crate::host::have("apt-get") {
        bail!(
            "the sanitizer kernel's build needs host packages; install them with:\n    sudo {}",
            crate::host::apt_command(&missing)
        );
    }
    crate::host::apt_install(&missing, false)
}

/// Unpacks the source tarball of the package into `tree.dir`, unless the
/// `unpacked` stamp says it is there.
fn ensure_unpacked(tree: &Tree, entry: &Path) -> Result<()> {
    let stamp = entry.join("unpacked");
    let want = format!("{}\n", tree.source.sha256);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)
        && tree.dir.join("Makefile").is_file()
    {
        return Ok(());
    }
    // Whatever is there is left from an interrupted unpack: start over.
    let _ = std::fs::remove_file(&stamp);
    let _ = std::fs::remove_file(entry.join("configured"));
    for dir in [tree.dir.clone(), entry.join("unpack.partial")] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let deb = tree.source.fetch()?;
    let partial = entry.join("unpack.partial");
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let bar = crate::progress::bytes(
        &format!("unpacking {} {}", tree.source.name, tree.source.version),
        Some(tree.source.size),
    );
    if bar.is_hidden() {
        eprintln!("unpacking {} {}", tree.source.name, tree.source.version);
    }
    let mut tarball = None;
    crate::repo::deb::for_each_entry(&deb, |path, kind, reader| {
        let wanted = path.starts_with("usr/src/linux-source-") && path.ends_with(".tar.xz");
        if !wanted || !matches!(kind, crate::repo::entry::EntryKind::File) {
            return Ok(true);
        }
        let xz = liblzma::read::XzDecoder::new_multi_decoder(bar.wrap_read(reader));
        let mut archive = tar::Archive::new(xz);
        archive.set_preserve_mtime(true);
        archive
            .unpack(&partial)
            .with_context(|| format!("unpacking {path} into {}", partial.display()))?;
        tarball = Some(path.to_string());
        Ok(false)
    })?;
    bar.finish_and_clear();
    let tarball = tarball
        .with_context(|| format!("{} holds no usr/src/linux-source-*.tar.xz", deb.display()))?;
    // The tarball holds one directory, linux-source-6.1/.
    let top = tarball
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".tar.xz");
    let unpacked = partial.join(top);
    if !unpacked.join("Makefile").is_file() {
        bail!("{tarball} of {} has no {top}/Makefile", deb.display());
    }
    std::fs::rename(&unpacked, &tree.dir)
        .with_context(|| format!("moving {} to {}", unpacked.display(), tree.dir.display()))?;
    let _ = std::fs::remove_dir_all(&partial);
    crate::host::fs::write_atomic(&stamp, want.as_bytes())
}

/// `make` in the tree with the compiler and reproducible build identity.
fn make_cmd(tree: &Tree, args: &[&str]) -> duct::Expression {
    let mut argv: Vec<String> = vec![
        format!("CC={}", tree.cc),
        "KBUILD_BUILD_TIMESTAMP=1970-01-01".into(),
        "KBUILD_BUILD_USER=toa".into(),
        "KBUILD_BUILD_HOST=toa-lab".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    duct::cmd("make", argv)
        .dir(&tree.dir)
        .env("LC_ALL", "C")
        .stdin_null()
}

/// `make x86_64_defconfig`, the fragment, `make olddefconfig`, and the check
/// that kconfig kept every line; skipped when the `configured` stamp holds
/// this fragment's hash and `.config` is there.
fn ensure_configured(tree: &Tree, entry: &Path, log: &Path) -> Result<()> {
    let stamp = entry.join("configured");
    let want = format!("{}\n", config::hash());
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)
        && tree.dir.join(".config").is_file()
    {
        return Ok(());
    }
    let bar = crate::progress::spinner("sanitizer kernel");
    let script = tree.dir.join("scripts/config");
    let fragment = config::script_args();
    let steps: Vec<(String, duct::Expression)> = vec![
        (
            format!("make {}", config::BASE),
            make_cmd(tree, &[config::BASE]),
        ),
        (
            "scripts/config (the lab's fragment)".to_string(),
            duct::cmd(
                &script,
                [
                    &["--file".to_string(), ".config".to_string()][..],
                    &fragment,
                ]
                .concat(),
            )
            .dir(&tree.dir)
            .stdin_null(),
        ),
        (
            "make olddefconfig".to_string(),
            make_cmd(tree, &["olddefconfig"]),
        ),
    ];
    for (what, cmd) in steps {
        crate::build::builder::run_logged(cmd, log, &what, &what, &bar)?;
    }
    bar.finish_and_clear();
    let config_path = tree.dir.join(".config");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let unmet = config::unmet(&text);
    if !unmet.is_empty() {
        bail!(
            "kconfig did not keep the sanitizer fragment in {} (a dependency is not met):\n  {}",
            config_path.display(),
            unmet.join("\n  ")
        );
    }
    crate::host::fs::write_atomic(&stamp, want.as_bytes())
}

/// `make -j<cpus> bzImage modules` (modules: there are none, but it writes
/// Module.symvers and prepares the tree for `M=` builds); returns the release.
fn make(tree: &Tree, log: &Path) -> Result<String> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = crate::progress::spinner("sanitizer kernel");
    if bar.is_hidden() {
        eprintln!(
            "building the sanitizer kernel in {} (make -j{jobs}; log: {})",
            tree.dir.display(),
            log.display()
        );
    }
    let jobs_arg = format!("-j{jobs}");
    let what = format!("make {jobs_arg} bzImage modules");
    crate::build::builder::run_logged(
        make_cmd(tree, &[&jobs_arg, "bzImage", "modules"]),
        log,
        &what,
        &what,
        &bar,
    )?;
    bar.finish_and_clear();
    for needed in [tree.bzimage(), tree.symvers()] {
        if !needed.is_file() {
            bail!(
                "make succeeded but {} is missing (log: {})",
                needed.display(),
                log.display()
            );
        }
    }
    let release = std::fs::read_to_string(tree.dir.join("include/config/kernel.release"))
        .context("reading include/config/kernel.release")?
        .trim()
        .to_string();
    if !release.ends_with(config::LOCALVERSION) {
        bail!(
            "the sanitizer kernel's release is {release}, without {}",
            config::LOCALVERSION
        );
    }
    Ok(release)
}

/// `<entry>.lock` beside an entry (its name has dots: not an extension).
fn lock_path(entry: &Path) -> PathBuf {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    entry.with_file_name(format!("{name}.lock"))
}

/// Removes other keys' entries (older source versions or configurations)
/// that no build holds locked.
fn prune_others(keep: &Path) {
    let (Some(parent), Some(keep_name)) = (keep.parent(), keep.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == keep_name || !path.is_dir() {
            continue;
        }
        let lock_path = lock_path(&path);
        let Ok(lock) = std::fs::File::create(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            eprintln!("removing the old sanitizer kernel {}", path.display());
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&lock_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> crate::vm::vm_test::Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: crate::vm::vm_test::Args,
        }
        Cli::parse_from(["vm-test", "--sanitizers"]).args
    }

    #[test]
    fn usage_errors_are_exit_status_2() {
        let mut a = args();
        assert!(a.sanitizers);
        usage(&a).unwrap();
        a.arch = Some(crate::distro::arch::Arch::Aarch64);
        let err = usage(&a).unwrap_err();
        assert_eq!(crate::report::status(&err), 2);
        assert!(err.to_string().contains("x86_64 kernel only"), "{err}");
        a.arch = None;
        a.mode = crate::vm::vm_test::Mode::Bpf;
        assert_eq!(crate::report::status(&usage(&a).unwrap_err()), 2);
        a.mode = crate::vm::vm_test::Mode::Kmod;
        a.distro = crate::distro::Recipe::named("debian-13").unwrap();
        let err = usage(&a).unwrap_err();
        assert_eq!(crate::report::status(&err), 2);
        assert!(
            err.to_string()
                .contains("debian-12 (from linux-source-6.1) only, not of debian-13"),
            "{err}"
        );
    }

    #[test]
    fn stamp_round_trips_and_names_what_changed() {
        let stamp = Stamp {
            source: "linux-source-6.1 6.1.192-3 ab12".into(),
            config: "0123456789ab".into(),
            cc: "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0".into(),
            release: "6.1.192-toa-sanitizers".into(),
            bzimage: "cd".into(),
            symvers: "ef".into(),
        };
        assert_eq!(Stamp::parse(&stamp.render()), stamp);
        let mut newer = stamp.clone();
        assert_eq!(stamp.inputs_differ(&newer), None);
        newer.source = "linux-source-6.1 6.1.193-1 99".into();
        assert_eq!(
            stamp.inputs_differ(&newer).unwrap(),
            "source was \"linux-source-6.1 6.1.192-3 ab12\", now \"linux-source-6.1 6.1.193-1 99\""
        );
        // A truncated stamp is not a finished build.
        let cut = Stamp::parse("source linux-source-6.1 6.1.192-3 ab12\n");
        assert!(cut.inputs_differ(&stamp).is_some());
    }

    #[test]
    fn a_corrupt_cache_entry_is_found_and_its_image_removed() {
        let dir = crate::testing::scratch("sanitizer");
        let tree = Tree {
            dir: dir.join("linux"),
            release: String::new(),
            source: PackageRef {
                name: "linux-source-6.1".into(),
                version: "6.1.192-3".into(),
                url: "http://example.invalid/x.deb".into(),
                size: 1,
                sha256: "ab".into(),
            },
            cc: "gcc-12".into(),
        };
        for (path, data) in [
            ("arch/x86/boot/bzImage", "image"),
            ("Module.symvers", "symbols"),
            ("scripts/mod/modpost", "elf"),
            ("include/generated/autoconf.h", "h"),
            ("include/config/auto.conf", "c"),
            ("include/config/kernel.release", "6.1.192-toa-sanitizers\n"),
        ] {
            let p = tree.dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let want = Stamp {
            source: "linux-source-6.1 6.1.192-3 ab".into(),
            config: config::hash(),
            cc: "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0".into(),
            ..Stamp::default()
        };
        let built = dir.join("built");
        let good = Stamp {
            release: "6.1.192-toa-sanitizers".into(),
            bzimage: crate::host::fs::sha256_file(&tree.bzimage()).unwrap(),
            symvers: crate::host::fs::sha256_file(&tree.symvers()).unwrap(),
            ..want.clone()
        };
        std::fs::write(&built, good.render()).unwrap();
        assert_eq!(
            check_built(&tree, &built, &want).unwrap().as_deref(),
            Some("6.1.192-toa-sanitizers")
        );
        // A bzImage cut short: not used, the stamp and the image go.
        std::fs::write(tree.bzimage(), "ima").unwrap();
        assert_eq!(check_built(&tree, &built, &want).unwrap(), None);
        assert!(!built.exists() && !tree.bzimage().exists());
        // No stamp (an unfinished build): nothing to reuse.
        assert_eq!(check_built(&tree, &built, &want).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
