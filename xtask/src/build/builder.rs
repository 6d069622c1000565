//! Build environments: the distro release's own userland, so each kernel's
//! headers are used with the compiler and kbuild they were made for.
//!
//! Two backends share one plan format (a list of commands, each with a check
//! that says whether its result is already cached):
//! * `docker` / `podman`: a base image of the release with the compiler
//!   (pulled, or `docker import`ed from a debootstrap rootfs where no registry is
//!   reachable), and a throwaway container per build with the sources mounted
//!   at /build/toa. Apt releases add a small image with what the kernels'
//!   headers packages need (compilers, kbuild's libraries) and mount each
//!   kernel's headers read-only from the cache ([`crate::build::headers_cache`]);
//!   rpm releases and cross builds install the headers into an image.
//! * `chroot`: a debootstrap rootfs of the release (Debian family only), entered
//!   through `unshare --mount`, so its /proc and bind mounts vanish with the command.
//!
//! `--dry-run` prints the same plan that a real run executes.

use crate::distro::kernel::Kernel;
use crate::distro::{Bootstrap, Distro, Repo};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Packages a debootstrap rootfs gets besides what `prepare` installs.
const BOOTSTRAP_PACKAGES: &[&str] = &["gcc", "make", "libc6-dev", "kmod", "ca-certificates"];

/// KBUILD_BUILD_TIMESTAMP for every build (modules embed no date; see
/// [`Builder::make_line`]).
const REPRODUCIBLE_TIMESTAMP: &str = "1970-01-01";

/// Where the sources are seen inside every builder.
pub const SRC_INSIDE: &str = "/build/toa";

/// The kernel's `Module.symvers`, copied beside the build so the module's
/// symbols can be checked on the host whatever the backend.
pub const KERNEL_SYMVERS: &str = ".kernel.symvers";

/// Where a release's registered repositories (SLES) are mounted into the
/// containers that run zypper, read-only: a `.repo` file holding their URLs
/// with access tokens, which must never be in a command line or an image.
const ZYPPER_INSIDE: &str = "/run/toa-zypper";

/// That file's name, on the host and in `/etc/zypp/repos.d`.
const REGISTERED_REPO_FILE: &str = "toa-registered.repo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Docker,
    Podman,
    Chroot,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Docker => "docker",
            BackendKind::Podman => "podman",
            BackendKind::Chroot => "chroot",
        }
    }
}

fn engine_runs(engine: &str) -> bool {
    crate::host::have(engine)
        && duct::cmd!(engine, "info")
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
            .is_ok_and(|o| o.status.success())
}

/// The backend to use: the one asked for if it can work here, else a running
/// container engine, else a chroot where the family allows it.
pub fn select(requested: Option<BackendKind>, distro: &Distro) -> Result<BackendKind> {
    let can_chroot = distro.builder.bootstrap == Some(Bootstrap::Debootstrap);
    match requested {
        Some(BackendKind::Chroot) if !can_chroot => {
            bail!("{}: the chroot backend needs a debootstrap-able release; use --backend docker or podman", distro.name)
        }
        Some(kind @ (BackendKind::Docker | BackendKind::Podman)) if !engine_runs(kind.name()) => {
            bail!("--backend {0}: `{0} info` fails; start the {0} engine or pick another backend", kind.name())
        }
        Some(kind) => Ok(kind),
        None if engine_runs("docker") => Ok(BackendKind::Docker),
        None if engine_runs("podman") => Ok(BackendKind::Podman),
        None if can_chroot => Ok(BackendKind::Chroot),
        None => bail!(
            "{}: no container engine runs here and the release cannot be debootstrapped; install docker (apt-get install docker.io) or podman",
            distro.name
        ),
    }
}

/// Whether a step's result already exists, so the step can be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Never,
    Image(String),
    Path(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub what: String,
    pub argv: Vec<String>,
    pub done: Done,
    /// Run if the step fails, so a half-made result never looks cached.
    pub cleanup: Option<Vec<String>>,
}

impl Step {
    fn new(what: impl Into<String>, argv: Vec<String>) -> Step {
        Step {
            what: what.into(),
            argv,
            done: Done::Never,
            cleanup: None,
        }
    }

    fn done_when(mut self, done: Done) -> Step {
        self.done = done;
        self
    }

    fn cleanup(mut self, argv: Vec<String>) -> Step {
        self.cleanup = Some(argv);
        self
    }

    fn is_done(&self, engine: &str) -> bool {
        match &self.done {
            Done::Never => false,
            Done::Path(p) => p.exists(),
            Done::Image(tag) => duct::cmd!(engine, "image", "inspect", tag)
                .stdout_null()
                .stderr_null()
                .unchecked()
                .run()
                .is_ok_and(|o| o.status.success()),
        }
    }

    /// The command as a shell line, for --dry-run and logs.
    pub fn shell_line(&self) -> String {
        self.argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Exit status of a build whose kernel was made by another compiler.
pub const COMPILER_MISMATCH: i32 = 3;

/// Exit status of a build whose headers package put no kernel tree where
/// the recipe says (`kdir`, named after the kernel's `uname -r`).
pub const HEADERS_NOT_THERE: i32 = 4;

/// Shell (a subshell, so it can be chained with `&&`) that compares the gcc
/// major version the kernel recorded in `{kdir}/.config` with the one `cc`
/// reports, and exits [`COMPILER_MISMATCH`] with a message naming both when
/// they differ. The kernel's version is `CONFIG_GCC_VERSION` (4.18 and later:
/// 110400 is gcc 11) or else the number after the package version in
/// `CONFIG_CC_VERSION_TEXT` (`gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0`,
/// `x86_64-linux-gnu-gcc-13 (Ubuntu 13.2.0-23ubuntu4) 13.2.0`); a config
/// with neither (3.10, 4.12) is not checked. The builder's is `__GNUC__` as
/// `cc` expands it, the way the kernel's own scripts/cc-version.sh asks.
/// A `kdir` without a `.config` exits [`HEADERS_NOT_THERE`] first: the
/// package installed its tree under another name than the recipe spelled.
pub fn compiler_check(kdir: &str, release: &str, cc: &str) -> String {
    let cfg = format!("{kdir}/.config");
    format!(
        "([ -f {cfg} ] || {{ echo \"kernel {release}: its headers package installed no {cfg}: the tree is under another name than the recipe spells this kernel (its kdir or uname style)\" >&2; exit {HEADERS_NOT_THERE}; }}; \
         kcc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT=\"\\(.*\\)\"$/\\1/p' {cfg} 2>/dev/null); \
         if grep -q '^CONFIG_CC_IS_CLANG=y' {cfg} 2>/dev/null; then \
         echo \"kernel {release} was built with clang ($kcc), not gcc: the builder has {cc}\" >&2; exit {COMPILER_MISMATCH}; fi; \
         kgcc=$(sed -n 's/^CONFIG_GCC_VERSION=\\([1-9][0-9]*\\)$/\\1/p' {cfg} 2>/dev/null); \
         if [ -n \"$kgcc\" ]; then kmaj=$((kgcc / 10000)); \
         else kmaj=$(printf '%s\\n' \"$kcc\" | sed -n 's/^[^(]*([^)]*) \\([0-9][0-9]*\\)\\..*/\\1/p'); fi; \
         [ -n \"$kmaj\" ] || exit 0; \
         bmaj=$(printf '__GNUC__\\n' | {cc} -E -P -x c - 2>/dev/null | sed -n 's/^ *\\([0-9][0-9]*\\) *$/\\1/p'); \
         if [ -z \"$bmaj\" ]; then echo \"kernel {release} was built with gcc $kmaj${{kcc:+ ($kcc)}}, but {cc} does not run in the builder\" >&2; exit {COMPILER_MISMATCH}; fi; \
         if [ \"$kmaj\" != \"$bmaj\" ]; then echo \"kernel {release} was built with gcc $kmaj${{kcc:+ ($kcc)}}, but the builder's {cc} is gcc $bmaj\" >&2; exit {COMPILER_MISMATCH}; fi)"
    )
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The builder for one distro release on one backend.
pub struct Builder {
    pub kind: BackendKind,
    pub distro: Distro,
    base: PathBuf,
    /// Kernels whose headers are in a shared image (see [`Builder::headers_set_steps`]).
    set_image: std::collections::HashMap<String, String>,
    /// Kernels whose headers are unpacked in the cache: the read-only
    /// mounts of each (see [`crate::build::headers_cache`]), built in `set_image`'s
    /// toolchain image.
    header_mounts: std::collections::HashMap<String, Vec<crate::build::headers_cache::Mount>>,
    /// More `NAME=VALUE` words for kbuild's make; empty for a release (see
    /// [`crate::build::build_test_module`]).
    pub make_vars: Vec<String>,
    /// The id of the toolchain image the cached-headers builds run in.
    pub image_id: Option<String>,
}

impl Builder {
    pub fn new(kind: BackendKind, distro: &Distro) -> Builder {
        let base = crate::host::cache::cache_dir()
            .join("builders")
            .join(&distro.name);
        Builder {
            kind,
            distro: distro.clone(),
            base,
            set_image: Default::default(),
            header_mounts: Default::default(),
            make_vars: Vec::new(),
            image_id: None,
        }
    }

    fn engine(&self) -> &'static str {
        self.kind.name()
    }

    fn base_tag(&self) -> String {
        format!("toa-builder/{}:base", self.distro.name)
    }

    /// The image a kernel is built in: its set's, or its own.
    fn kernel_image(&self, kernel: &Kernel) -> String {
        self.set_image
            .get(&kernel.release)
            .cloned()
            .unwrap_or_else(|| self.kernel_tag(kernel))
    }

    /// The image holding the headers of every kernel of `kernels`, named by
    /// the set: the same set of kernels finds it again.
    fn set_tag(&self, kernels: &[Kernel]) -> String {
        use sha2::{Digest, Sha256};
        let mut releases: Vec<&str> = kernels.iter().map(|k| k.release.as_str()).collect();
        releases.sort_unstable();
        releases.dedup();
        let digest = hex::encode(Sha256::digest(releases.join("\n")));
        format!(
            "toa-builder/{}:set-{}",
            self.distro.build_name(),
            &digest[..16]
        )
    }

    /// With a container engine and more than one kernel: the steps that make
    /// one image with every kernel's headers (one container, one package-list
    /// update, one commit), and its tag. Headers packages of one release share
    /// most of their files, so this is far cheaper than an image per kernel.
    pub fn headers_set_steps(&self, kernels: &[Kernel]) -> Option<(String, Vec<Step>)> {
        if self.kind == BackendKind::Chroot || kernels.len() < 2 {
            return None;
        }
        let tag = self.set_tag(kernels);
        let install = self.install_all(kernels);
        let script = match self.distro.repo {
            Repo::Apt(_) => format!("{} && {install}", self.apt_update()),
            Repo::RpmMd(_) => install,
        };
        let container = format!(
            "toa-prep-{}-{}",
            self.distro.build_name(),
            tag.rsplit(':').next().unwrap_or_default()
        );
        let steps = self.commit_steps(
            &container,
            &self.base_tag(),
            &script,
            &tag,
            &format!("install headers for {} kernels", kernels.len()),
        );
        Some((tag, steps))
    }

    /// One `install_headers` command for all `kernels`: each word of the
    /// recipe that names the kernel (`linux-headers-{release}`, `{cc}`) is
    /// repeated for every kernel, so the package manager resolves, downloads
    /// and unpacks them in one run.
    fn install_all(&self, kernels: &[Kernel]) -> String {
        let mut words: Vec<String> = Vec::new();
        for word in self.distro.builder.install_headers.split_whitespace() {
            if word.contains('{') {
                for k in kernels {
                    let w = self.render(word, k);
                    if !words.contains(&w) {
                        words.push(w);
                    }
                }
            } else {
                words.push(word.to_string());
            }
        }
        words.join(" ")
    }

    /// Whether kernels' headers come from the unpacked package cache
    /// ([`crate::build::headers_cache`]) instead of an image: apt releases built
    /// natively with a container engine. A chroot installs them with apt as
    /// before; rpm releases keep their package manager's own resolution; a
    /// cross build's headers come from another architecture's index.
    pub fn uses_headers_cache(&self) -> bool {
        self.kind != BackendKind::Chroot
            && matches!(self.distro.repo, Repo::Apt(_))
            && self.distro.builder.cross_compile.is_none()
    }

    /// The steps that make the image kernels with cached headers are built
    /// in: the base plus `external` (what their headers packages depend on
    /// besides each other: the compiler meta packages, kbuild's libraries)
    /// and each kernel's `{cc}`, installed with the recipe's own apt-get
    /// options. Tagged by that package set, so kernels that need nothing new
    /// reuse it; a new kernel adds no image.
    pub fn toolchain_steps(
        &self,
        kernels: &[Kernel],
        external: &std::collections::BTreeSet<String>,
    ) -> (String, Vec<Step>) {
        use sha2::{Digest, Sha256};
        let mut packages = external.clone();
        for k in kernels {
            packages.insert(self.distro.builder.cc_for(&k.release).to_string());
        }
        let list: Vec<&str> = packages.iter().map(String::as_str).collect();
        let digest = hex::encode(Sha256::digest(list.join("\n")));
        let tag = format!("toa-builder/{}:tools-{}", self.distro.name, &digest[..16]);
        let options: Vec<&str> = self
            .distro
            .builder
            .install_headers
            .split_whitespace()
            .filter(|w| !w.contains('{'))
            .collect();
        let script = format!(
            "{} && {} {}",
            self.apt_update(),
            options.join(" "),
            list.join(" ")
        );
        let container = format!(
            "toa-prep-{}-{}",
            self.distro.name,
            tag.rsplit(':').next().unwrap_or_default()
        );
        let steps = self.commit_steps(
            &container,
            &self.base_tag(),
            &script,
            &tag,
            &format!("install the toolchain ({})", list.join(" ")),
        );
        (tag, steps)
    }

    /// Build kernel `release` in the toolchain image `tag` with its cached
    /// headers mounted read-only.
    pub fn use_cached_headers(
        &mut self,
        release: &str,
        tag: &str,
        mounts: Vec<crate::build::headers_cache::Mount>,
    ) {
        self.set_image.insert(release.to_string(), tag.to_string());
        self.header_mounts.insert(release.to_string(), mounts);
    }

    /// The engine's id of image `tag`, if it has one.
    pub fn image_id_of(&self, tag: &str) -> Option<String> {
        duct::cmd!(
            self.engine(),
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            tag
        )
        .stderr_null()
        .read()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    }

    /// Whether kernel `release`'s headers are mounted from the cache.
    pub fn has_cached_headers(&self, release: &str) -> bool {
        self.header_mounts.contains_key(release)
    }

    /// Build `kernels` in the image `tag` (made by [`Builder::headers_set_steps`]).
    pub fn use_set_image(&mut self, kernels: &[Kernel], tag: &str) {
        for k in kernels {
            self.set_image.insert(k.release.clone(), tag.to_string());
        }
    }

    /// One kernel's image: named by the architecture too (see
    /// [`Distro::build_name`]); the base image is the release's, shared.
    fn kernel_tag(&self, kernel: &Kernel) -> String {
        format!(
            "toa-builder/{}:{}",
            self.distro.build_name(),
            kernel.release.replace('+', "_")
        )
    }

    fn rootfs(&self) -> PathBuf {
        self.base.join("rootfs")
    }

    fn render(&self, template: &str, kernel: &Kernel) -> String {
        let cc = self.distro.builder.cc_for(&kernel.release);
        crate::distro::render(template, &kernel.release, &kernel.version, cc)
    }

    /// The kbuild command for one kernel, with the compiler check in front: a
    /// kernel whose config records another gcc major version than the
    /// builder's compiler fails loudly (exit 3, see [`compiler_check`])
    /// instead of producing a module built with the wrong one. The kernel's Module.symvers
    /// is copied out for the host-side checks. A set KBUILD_BUILD_TIMESTAMP is
    /// kbuild's "reproducible build" switch: without it, 6.x kernels run the
    /// module's BTF step as `pahole -j`, whose threads order the output
    /// differently from run to run (6.12 modules differed between two builds).
    pub fn make_line(&self, kernel: &Kernel, toa_version: &str) -> String {
        let kdir = self.render(&self.distro.builder.kdir, kernel);
        let cc = self.distro.builder.cc_for(&kernel.release);
        // Cross: the same compiler version, as the cross toolchain names it.
        let (make_cc, cc_bin) = match &self.distro.builder.cross_compile {
            Some(prefix) => (
                format!(
                    "ARCH={} CROSS_COMPILE={prefix} CC={prefix}{cc}",
                    self.distro.arch_kind().kbuild()
                ),
                format!("{prefix}{cc}"),
            ),
            None => (format!("CC={cc}"), cc.to_string()),
        };
        let vars: String = self
            .make_vars
            .iter()
            .map(|v| format!("{} ", shell_quote(v)))
            .collect();
        format!(
            "{} && \
             make -C {kdir} M={SRC_INSIDE} {make_cc} TOA_VERSION={toa_version} {vars}\
             KBUILD_BUILD_TIMESTAMP={REPRODUCIBLE_TIMESTAMP} modules && \
             cp {kdir}/Module.symvers {SRC_INSIDE}/{KERNEL_SYMVERS}",
            compiler_check(&kdir, &kernel.release, &cc_bin)
        )
    }

    /// Steps that make the base environment (compiler, make): once per release.
    pub fn prepare_steps(&self) -> Result<Vec<Step>> {
        let spec = &self.distro.builder;
        let prepare = spec.prepare.join(" && ");
        let mut steps = Vec::new();
        match self.kind {
            BackendKind::Chroot => {
                let root = self.rootfs();
                let partial = self.base.join("rootfs.partial");
                let ready = root.join(".toa-builder-ready");
                steps.push(
                    Step::new(
                        "clear an interrupted bootstrap",
                        argv(&["rm", "-rf", &path_str(&partial), &path_str(&root)]),
                    )
                    .done_when(Done::Path(ready.clone())),
                );
                steps.extend(
                    self.debootstrap_steps(&partial)?
                        .into_iter()
                        .map(|s| s.done_when(Done::Path(ready.clone()))),
                );
                let in_root = self.chroot_argv(
                    &partial,
                    None,
                    &format!("mount -t proc proc /proc && {prepare}"),
                );
                steps.push(
                    Step::new("prepare the builder", in_root).done_when(Done::Path(ready.clone())),
                );
                steps.push(
                    Step::new(
                        "mark the builder ready",
                        argv(&["touch", &path_str(&partial.join(".toa-builder-ready"))]),
                    )
                    .done_when(Done::Path(ready.clone())),
                );
                steps.push(
                    Step::new(
                        "publish the builder",
                        argv(&["mv", &path_str(&partial), &path_str(&root)]),
                    )
                    .done_when(Done::Path(ready)),
                );
            }
            BackendKind::Docker | BackendKind::Podman => {
                let engine = self.engine();
                let tag = self.base_tag();
                let done = Done::Image(tag.clone());
                let from = if spec.bootstrap == Some(Bootstrap::Debootstrap) {
                    // No registry needed: the image is the release's own debootstrap rootfs.
                    let partial = self.base.join("image-rootfs");
                    let tarball = self.base.join("image-rootfs.tar");
                    let import_tag = format!("toa-builder/{}:rootfs", self.distro.name);
                    steps.push(
                        Step::new(
                            "clear an interrupted bootstrap",
                            argv(&["rm", "-rf", &path_str(&partial)]),
                        )
                        .done_when(done.clone()),
                    );
                    steps.extend(
                        self.debootstrap_steps(&partial)?
                            .into_iter()
                            .map(|s| s.done_when(done.clone())),
                    );
                    steps.push(
                        Step::new(
                            "pack the rootfs",
                            argv(&[
                                "tar",
                                "-C",
                                &path_str(&partial),
                                "-cf",
                                &path_str(&tarball),
                                ".",
                            ]),
                        )
                        .done_when(done.clone()),
                    );
                    steps.push(
                        Step::new(
                            "import the rootfs as an image",
                            argv(&[engine, "import", &path_str(&tarball), &import_tag]),
                        )
                        .done_when(done.clone()),
                    );
                    steps.push(
                        Step::new(
                            "drop the rootfs copy",
                            argv(&["rm", "-rf", &path_str(&partial), &path_str(&tarball)]),
                        )
                        .done_when(done.clone()),
                    );
                    import_tag
                } else {
                    steps.push(
                        Step::new(
                            format!("pull {}", spec.image),
                            argv(&[engine, "pull", &spec.image]),
                        )
                        .done_when(done.clone()),
                    );
                    spec.image.clone()
                };
                let container = format!("toa-prep-{}", self.distro.name);
                steps.extend(self.commit_steps(
                    &container,
                    &from,
                    &prepare,
                    &tag,
                    "prepare the builder image",
                ));
            }
        }
        Ok(steps)
    }

    fn debootstrap_steps(&self, into: &Path) -> Result<Vec<Step>> {
        let Repo::Apt(repo) = &self.distro.repo else {
            bail!("{}: debootstrap needs an apt repo", self.distro.name);
        };
        let include = format!("--include={}", BOOTSTRAP_PACKAGES.join(","));
        Ok(vec![Step::new(
            format!("debootstrap {}", repo.suite),
            argv(&[
                "debootstrap",
                "--variant=minbase",
                &include,
                &repo.suite,
                &path_str(into),
                &repo.mirror,
            ]),
        )])
    }

    /// `run` a container, `commit` it as `tag`, remove it; a failed run removes it too.
    fn commit_steps(
        &self,
        container: &str,
        from: &str,
        script: &str,
        tag: &str,
        what: &str,
    ) -> Vec<Step> {
        let engine = self.engine();
        let done = Done::Image(tag.to_string());
        let rm = argv(&[engine, "rm", "-f", container]);
        let run = match self.registered_repos() {
            Some(dir) => {
                let volume = format!("{}:{ZYPPER_INSIDE}:ro", path_str(&dir));
                argv(&[
                    engine,
                    "run",
                    "--name",
                    container,
                    "-v",
                    &volume,
                    from,
                    "/bin/sh",
                    "-c",
                    &with_registered_repos(script),
                ])
            }
            None => argv(&[
                engine, "run", "--name", container, from, "/bin/sh", "-c", script,
            ]),
        };
        vec![
            Step::new("remove a leftover container", rm.clone()).done_when(done.clone()),
            Step::new(what, run)
                .done_when(done.clone())
                .cleanup(rm.clone()),
            Step::new(
                format!("commit {tag}"),
                argv(&[engine, "commit", container, tag]),
            )
            .done_when(done.clone())
            .cleanup(rm.clone()),
            Step::new("remove the container", rm).done_when(done),
        ]
    }

    /// The host directory of the registered repositories' `.repo` file, when
    /// the release's repositories need a registration (SLES).
    fn registered_repos(&self) -> Option<PathBuf> {
        match &self.distro.repo {
            Repo::RpmMd(rpm) if rpm.credentials.is_some() => Some(self.base.join("zypper")),
            _ => None,
        }
    }

    /// What the registered repositories' `.repo` file holds, the access
    /// tokens shown as `<token>` (for `--dry-run`); None for public repositories.
    pub fn registered_repo_preview(&self) -> Option<(PathBuf, String)> {
        let dir = self.registered_repos()?;
        let Repo::RpmMd(rpm) = &self.distro.repo else {
            return None;
        };
        let repos: Vec<(String, String, String)> = rpm
            .baseurls
            .iter()
            .map(|b| {
                let alias = crate::repo::scc::builder_alias(b);
                let shown = format!(
                    "{}?{}",
                    b.trim_end_matches('/'),
                    crate::repo::download::TOKEN_SHOWN
                );
                (alias.clone(), alias, shown)
            })
            .collect();
        Some((
            dir.join(REGISTERED_REPO_FILE),
            crate::repo::scc::repo_file(&repos),
        ))
    }

    /// Asks the registration server for the release's repositories and
    /// writes their `.repo` file (only the owner may read it), which the
    /// returned guard removes again; None for public repositories.
    pub fn write_registered_repos(&self) -> Result<Option<RegisteredRepos>> {
        let Some(dir) = self.registered_repos() else {
            return Ok(None);
        };
        let Repo::RpmMd(rpm) = &self.distro.repo else {
            return Ok(None);
        };
        let Some(creds) = &rpm.credentials else {
            return Ok(None);
        };
        let urls = crate::repo::scc::repositories(&self.distro.name, &rpm.baseurls, creds)?;
        let repos: Vec<(String, String, String)> = rpm
            .baseurls
            .iter()
            .zip(&urls)
            .map(|(b, u)| {
                let alias = crate::repo::scc::builder_alias(b);
                (alias.clone(), alias, u.secret_url())
            })
            .collect();
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
        let path = dir.join(REGISTERED_REPO_FILE);
        let partial = dir.join(format!(".{REGISTERED_REPO_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .and_then(|mut f| f.write_all(crate::repo::scc::repo_file(&repos).as_bytes()))
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(RegisteredRepos { path }))
    }

    /// A shell command that lists every suite of the release besides its own
    /// (updates, security, backports) in the builder's apt sources, so any
    /// kernel of the release can be installed by name.
    fn apt_sources(&self) -> Option<String> {
        let Repo::Apt(repo) = &self.distro.repo else {
            return None;
        };
        let home = repo.home();
        // An archive of the kernels' architecture alone is not in the
        // image's sources (its own suite neither), and apt must not ask it
        // for the builder's architecture.
        let only = if repo.arch_only {
            format!("[arch={}] ", self.distro.arch_kind().debian())
        } else {
            String::new()
        };
        let lines: Vec<String> = repo
            .suites()
            .into_iter()
            .filter(|s| repo.arch_only || *s != home)
            .map(|s| format!("deb {only}{} {} main", s.mirror, s.suite))
            .collect();
        if lines.is_empty() {
            return None;
        }
        Some(format!(
            "printf '%s\\n' {} > /etc/apt/sources.list.d/toa-release-suites.list",
            lines
                .iter()
                .map(|l| shell_quote(l))
                .collect::<Vec<_>>()
                .join(" ")
        ))
    }

    /// Every suite of the release in the apt sources, then fresh package
    /// lists: the base's may predate the kernel.
    /// dpkg skips its fsyncs: a builder is rebuilt, never repaired, and
    /// headers packages are tens of thousands of small files.
    fn apt_update(&self) -> String {
        let fast = "echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/toa-unsafe-io";
        match self.apt_sources() {
            Some(sources) => format!("{fast} && {sources} && apt-get update -q"),
            None => format!("{fast} && apt-get update -q"),
        }
    }

    /// Steps that install one kernel's headers: once per kernel.
    pub fn headers_steps(&self, kernel: &Kernel) -> Vec<Step> {
        let install = self.render(&self.distro.builder.install_headers, kernel);
        let update = self.apt_update();
        let kdir = self.render(&self.distro.builder.kdir, kernel);
        match self.kind {
            BackendKind::Chroot => {
                let root = self.rootfs();
                let script = format!("mount -t proc proc /proc && {update} && {install}");
                vec![Step::new(
                    format!("install headers for {}", kernel.release),
                    self.chroot_argv(&root, None, &script),
                )
                .done_when(Done::Path(root.join(kdir.trim_start_matches('/'))))]
            }
            BackendKind::Docker | BackendKind::Podman => {
                let container = format!(
                    "toa-prep-{}-{}",
                    self.distro.build_name(),
                    kernel.release.replace('+', "_")
                );
                let script = match self.distro.repo {
                    Repo::Apt(_) => format!("{update} && {install}"),
                    Repo::RpmMd(_) => install,
                };
                self.commit_steps(
                    &container,
                    &self.base_tag(),
                    &script,
                    &self.kernel_tag(kernel),
                    &format!("install headers for {}", kernel.release),
                )
            }
        }
    }

    /// The build of one kernel with the sources (and results) in `src`.
    pub fn build_step(&self, kernel: &Kernel, src: &Path, toa_version: &str) -> Step {
        let make = self.make_line(kernel, toa_version);
        let what = format!("build toa.ko for {}", kernel.release);
        match self.kind {
            BackendKind::Chroot => Step::new(
                what,
                self.chroot_argv(
                    &self.rootfs(),
                    Some(src),
                    &format!("mount -t proc proc /proc && {make}"),
                ),
            ),
            BackendKind::Docker | BackendKind::Podman => {
                let volume = format!("{}:{SRC_INSIDE}", path_str(src));
                let mut args = argv(&[
                    self.engine(),
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "-v",
                    &volume,
                ]);
                // Read-only: an external module's build must never write
                // into the kernel's tree, which other builds share.
                for m in self
                    .header_mounts
                    .get(&kernel.release)
                    .into_iter()
                    .flatten()
                {
                    args.push("-v".to_string());
                    args.push(format!("{}:{}:ro", path_str(&m.host), m.inside));
                }
                args.extend(argv(&[
                    "-w",
                    SRC_INSIDE,
                    &self.kernel_image(kernel),
                    "/bin/sh",
                    "-c",
                    &make,
                ]));
                Step::new(what, args)
            }
        }
    }

    /// `unshare` + `chroot` into `root`, with `src` bound at SRC_INSIDE when given.
    fn chroot_argv(&self, root: &Path, src: Option<&Path>, script: &str) -> Vec<String> {
        let root_s = path_str(root);
        let enter = format!(
            "exec chroot {} /bin/sh -c {}",
            shell_quote(&root_s),
            shell_quote(script)
        );
        let outer = match src {
            Some(src) => {
                let target = format!("{root_s}{SRC_INSIDE}");
                format!(
                    "mkdir -p {0} && mount --bind {1} {0} && {enter}",
                    shell_quote(&target),
                    shell_quote(&path_str(src))
                )
            }
            None => enter,
        };
        argv(&["unshare", "--mount", "--fork", "/bin/sh", "-c", &outer])
    }

    /// Host tools this backend runs.
    pub fn ensure_host(&self) -> Result<()> {
        match self.kind {
            BackendKind::Chroot => {
                crate::host::require_root("the chroot builder")?;
                crate::host::ensure_tools(&[
                    ("debootstrap", "debootstrap"),
                    ("unshare", "util-linux"),
                ])
            }
            BackendKind::Docker | BackendKind::Podman
                if self.distro.builder.bootstrap.is_some() =>
            {
                crate::host::require_root("debootstrap for the builder image")?;
                crate::host::ensure_tools(&[("debootstrap", "debootstrap")])
            }
            _ => Ok(()),
        }
    }

    /// Runs the steps that are not cached yet, logging to `log`.
    pub fn execute(&self, steps: &[Step], log: &Path, bar: &ProgressBar) -> Result<()> {
        for (n, step) in steps.iter().enumerate() {
            if step.is_done(self.engine()) {
                continue;
            }
            crate::progress::step(bar, n + 1, steps.len(), &step.what);
            let cmd = duct::cmd(&step.argv[0], &step.argv[1..])
                .env("LC_ALL", "C")
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                );
            if let Err(err) = run_logged(cmd, log, &step.what, &step.shell_line(), bar) {
                if let Some(cleanup) = &step.cleanup {
                    let _ = duct::cmd(&cleanup[0], &cleanup[1..])
                        .stdout_null()
                        .stderr_null()
                        .unchecked()
                        .run();
                }
                return Err(err);
            }
        }
        Ok(())
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The registered repositories' `.repo` file on the host, removed when the
/// build is over: it holds the access tokens.
pub struct RegisteredRepos {
    path: PathBuf,
}

impl Drop for RegisteredRepos {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `script` with the registered repositories in zypper's list while it runs.
/// Everything that may hold their URLs (the `.repo` file, zypper's caches of
/// them, its log) is gone before the container is committed, so no image
/// holds a token; the script's own exit status is kept. A subshell, so an
/// `exit` in the script still leaves the clean-up to run.
fn with_registered_repos(script: &str) -> String {
    format!(
        "cp {ZYPPER_INSIDE}/{REGISTERED_REPO_FILE} /etc/zypp/repos.d/ && ({script}); status=$?; \
         rm -rf /etc/zypp/repos.d/{REGISTERED_REPO_FILE} /var/cache/zypp/*/toa-* /var/log/zypper.log; \
         exit $status"
    )
}

/// Runs `cmd` with its output going to `log`; `bar` shows the last line.
pub fn run_logged(
    cmd: duct::Expression,
    log: &Path,
    what: &str,
    line: &str,
    bar: &ProgressBar,
) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(log_file, "==> {what}\n$ {line}")?;
    let reader = cmd
        .stderr_to_stdout()
        .unchecked()
        .reader()
        .with_context(|| format!("starting {what}"))?;
    let mut lines = BufReader::new(&reader);
    let mut buf = Vec::new();
    let mut tail: Vec<String> = Vec::new();
    loop {
        buf.clear();
        if lines.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        log_file.write_all(&buf)?;
        let text = String::from_utf8_lossy(&buf).trim_end().to_string();
        bar.set_message(format!(
            "{what}: {}",
            text.chars().take(100).collect::<String>()
        ));
        tail.push(text);
        if tail.len() > 15 {
            tail.remove(0);
        }
    }
    match reader.try_wait()?.map(|o| o.status) {
        Some(s) if s.success() => Ok(()),
        _ => bail!(
            "{what} failed; last output:\n{}\n(full log: {})",
            tail.join("\n"),
            log.display()
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A command that prints once and then works quietly (a `docker commit`,
    /// a dpkg run) still gives a log a line every interval, naming the step
    /// and its last output.
    #[test]
    fn a_quiet_command_keeps_the_log_alive() {
        let every = std::time::Duration::from_millis(100);
        let (bar, sink) = crate::progress::watched("prepare", every);
        let dir = crate::testing::scratch("quiet-step");
        let cmd = duct::cmd!("sh", "-c", "echo committing; sleep 1");
        run_logged(
            cmd,
            &dir.join("log"),
            "docker commit",
            "docker commit",
            &bar,
        )
        .unwrap();
        let lines = sink.lines();
        assert!(
            lines.iter().all(|l| l.starts_with("[prepare] elapsed 0m0")),
            "{lines:?}"
        );
        // The first tick may come before the echo is read on a busy machine.
        let named = lines
            .iter()
            .filter(|l| l.ends_with(": docker commit: committing"))
            .count();
        assert!(named >= 4, "{lines:?}");
        bar.finish_and_clear();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn kernel(release: &str, version: &str) -> Kernel {
        Kernel::pinned(release, version)
    }

    pub(crate) fn plan(distro: &str, kind: BackendKind, k: &Kernel) -> Vec<String> {
        let builder = Builder::new(kind, &crate::distro::find(distro).unwrap());
        let mut steps = builder.prepare_steps().unwrap();
        steps.extend(builder.headers_steps(k));
        steps.push(builder.build_step(k, Path::new("/home/maintainer/toa"), "0.1.0"));
        steps.iter().map(Step::shell_line).collect()
    }

    pub(crate) fn has(lines: &[String], needle: &str) {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "no line contains {needle:?}:\n{}",
            lines.join("\n")
        );
    }

    /// No line keeps a recipe template field (`{release}`, `{version}`,
    /// `{cc}`) unfilled; `context` prefixes the failure.
    pub(crate) fn fully_rendered(lines: &[String], context: &str) {
        for line in lines {
            for field in ["{release}", "{version}", "{cc}"] {
                assert!(!line.contains(field), "{context}{line}");
            }
        }
    }

    #[test]
    fn centos_docker_plan() {
        let lines = plan(
            "centos-7.2",
            BackendKind::Docker,
            &kernel("3.10.0-327.el7.x86_64", "3.10.0-327.el7"),
        );
        has(&lines, "docker pull centos:7.2.1511");
        has(&lines, "baseurl=http://vault.centos.org/7.2.1511");
        has(&lines, "yum install -y gcc make");
        has(
            &lines,
            "docker commit toa-prep-centos-7.2 toa-builder/centos-7.2:base",
        );
        has(&lines, "yum install -y kernel-devel-3.10.0-327.el7'");
        has(&lines, "docker commit toa-prep-centos-7.2-3.10.0-327.el7.x86_64 toa-builder/centos-7.2:3.10.0-327.el7.x86_64");
        has(&lines, "docker run --rm --network none -v /home/maintainer/toa:/build/toa -w /build/toa toa-builder/centos-7.2:3.10.0-327.el7.x86_64");
        has(&lines, "make -C /usr/src/kernels/3.10.0-327.el7.x86_64 M=/build/toa CC=gcc TOA_VERSION=0.1.0 KBUILD_BUILD_TIMESTAMP=1970-01-01 modules");
    }

    #[test]
    fn ubuntu_docker_plan_uses_the_hwe_compiler() {
        let lines = plan(
            "ubuntu-22.04",
            BackendKind::Docker,
            &kernel("6.8.0-45-generic", "6.8.0-45.45~22.04.1"),
        );
        has(&lines, "docker pull ubuntu:22.04");
        has(
            &lines,
            "apt-get install -y --no-install-recommends linux-headers-6.8.0-45-generic gcc-12",
        );
        has(
            &lines,
            "make -C /usr/src/linux-headers-6.8.0-45-generic M=/build/toa CC=gcc-12",
        );
        let ga = plan(
            "ubuntu-22.04",
            BackendKind::Docker,
            &kernel("5.15.0-119-generic", "5.15.0-119.129"),
        );
        has(&ga, "CC=gcc-11");
    }

    #[test]
    fn sles_docker_plan() {
        let lines = plan(
            "sles-12-sp5",
            BackendKind::Podman,
            &kernel("4.12.14-122.37-default", "4.12.14-122.37.1"),
        );
        has(
            &lines,
            "podman pull registry.suse.com/suse/sles12sp5:latest",
        );
        has(&lines, "zypper --non-interactive install --oldpackage kernel-default-devel-4.12.14-122.37.1 kernel-devel-4.12.14-122.37.1");
        has(
            &lines,
            "make -C /lib/modules/4.12.14-122.37-default/build M=/build/toa CC=gcc",
        );
    }

    /// SLES's repositories reach zypper through a mounted `.repo` file:
    /// every zypper step mounts it and removes its traces before the commit;
    /// no command line holds a URL of them, and the build runs offline.
    #[test]
    fn sles_zypper_steps_mount_the_registered_repositories() {
        let d = crate::distro::find("sles-12-sp5").unwrap();
        let builder = Builder::new(BackendKind::Docker, &d);
        let k = kernel("4.12.14-122.37-default", "4.12.14-122.37.1");
        let dir = crate::host::cache::cache_dir().join("builders/sles-12-sp5/zypper");
        let mount = format!("-v {}:/run/toa-zypper:ro", dir.display());
        let steps: Vec<Step> = builder
            .prepare_steps()
            .unwrap()
            .into_iter()
            .chain(builder.headers_steps(&k))
            .collect();
        let zypper: Vec<String> = steps
            .iter()
            .map(Step::shell_line)
            .filter(|l| l.contains("zypper --non-interactive install"))
            .collect();
        assert_eq!(zypper.len(), 2, "{zypper:?}");
        for line in &zypper {
            assert!(line.contains(&mount), "{line}");
            assert!(
                line.contains("'cp /run/toa-zypper/toa-registered.repo /etc/zypp/repos.d/ && (zypper --non-interactive "),
                "{line}"
            );
            assert!(
                line.contains("); status=$?; rm -rf /etc/zypp/repos.d/toa-registered.repo /var/cache/zypp/*/toa-* /var/log/zypper.log; exit $status'"),
                "{line}"
            );
            assert!(!line.contains("updates.suse.com"), "{line}");
        }
        let build = builder
            .build_step(&k, Path::new("/src"), "0.1.0")
            .shell_line();
        assert!(!build.contains("toa-zypper"), "{build}");
        assert!(build.contains("--network none"), "{build}");
        // Public repositories: nothing mounted.
        let centos = plan(
            "centos-7.9",
            BackendKind::Docker,
            &kernel("3.10.0-1160.el7.x86_64", "3.10.0-1160.el7"),
        );
        assert!(
            centos.iter().all(|l| !l.contains("toa-zypper")),
            "{centos:?}"
        );

        let (path, text) = builder.registered_repo_preview().unwrap();
        assert_eq!(path, dir.join("toa-registered.repo"));
        assert_eq!(
            text,
            "[toa-SUSE_Products_SLE-SERVER_12-SP5_x86_64_product]\n\
             name=toa-SUSE_Products_SLE-SERVER_12-SP5_x86_64_product\nenabled=1\nautorefresh=1\n\
             baseurl=https://updates.suse.com/SUSE/Products/SLE-SERVER/12-SP5/x86_64/product?<token>\n\
             type=rpm-md\n\n\
             [toa-SUSE_Updates_SLE-SERVER_12-SP5_x86_64_update]\n\
             name=toa-SUSE_Updates_SLE-SERVER_12-SP5_x86_64_update\nenabled=1\nautorefresh=1\n\
             baseurl=https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update?<token>\n\
             type=rpm-md\n\n"
        );
    }

    /// The wrapped script keeps the recipe script's exit status and leaves
    /// no trace of the repositories, whether it fails or not.
    #[test]
    fn registered_repositories_leave_no_trace() {
        let root = crate::testing::scratch("zypper-trace");
        for d in [
            "run/toa-zypper",
            "etc/zypp/repos.d",
            "var/cache/zypp/raw/toa-x",
            "var/cache/zypp/solv/toa-x",
            "var/cache/zypp/raw/other",
            "var/log",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("run/toa-zypper/toa-registered.repo"), "[toa-x]\n").unwrap();
        std::fs::write(root.join("var/log/zypper.log"), "url?token\n").unwrap();
        let r = root.display().to_string();
        for (script, status) in [
            ("test -f /etc/zypp/repos.d/toa-registered.repo", 0),
            ("exit 7", 7),
        ] {
            let wrapped = with_registered_repos(script).replace(" /", &format!(" {r}/"));
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&wrapped)
                .status()
                .unwrap();
            assert_eq!(out.code(), Some(status), "{wrapped}");
            assert!(!root.join("etc/zypp/repos.d/toa-registered.repo").exists());
            assert!(!root.join("var/cache/zypp/raw/toa-x").exists());
            assert!(!root.join("var/cache/zypp/solv/toa-x").exists());
            assert!(!root.join("var/log/zypper.log").exists());
            assert!(root.join("var/cache/zypp/raw/other").exists());
            std::fs::create_dir_all(root.join("var/cache/zypp/raw/toa-x")).unwrap();
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn debian_docker_plan_imports_a_debootstrap_rootfs() {
        let lines = plan(
            "debian-12",
            BackendKind::Docker,
            &kernel("6.1.0-50-amd64", "6.1.176-1"),
        );
        has(&lines, "debootstrap --variant=minbase");
        has(&lines, "bookworm");
        has(&lines, "docker import");
        assert!(
            !lines.iter().any(|l| l.contains("docker pull")),
            "{lines:?}"
        );
        has(&lines, "apt-get update -q && INITRD=No DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends linux-headers-6.1.0-50-amd64");
        has(&lines, "CC=gcc-12");
    }

    #[test]
    fn chroot_plan_binds_the_sources() {
        let lines = plan(
            "debian-12",
            BackendKind::Chroot,
            &kernel("6.1.0-50-amd64", "6.1.176-1"),
        );
        let build = lines.last().unwrap();
        assert!(
            build.starts_with("unshare --mount --fork /bin/sh -c"),
            "{build}"
        );
        assert!(
            build.contains("mount --bind /home/maintainer/toa"),
            "{build}"
        );
        assert!(build.contains("M=/build/toa"), "{build}");
    }

    /// A kernel build directory holding `config`, and fake compilers
    /// `gcc-7` ... `gcc-16` (each expands `__GNUC__` to its number) first in PATH.
    pub(crate) struct CompilerScene {
        dir: PathBuf,
    }

    impl CompilerScene {
        pub(crate) fn new(case: &str, config: &str) -> CompilerScene {
            let dir = crate::testing::scratch(&format!("cc-check-{case}"));
            std::fs::create_dir_all(dir.join("bin")).unwrap();
            std::fs::create_dir_all(dir.join("kdir")).unwrap();
            std::fs::write(dir.join("kdir/.config"), config).unwrap();
            for (name, major) in (7..=16).map(|m| (format!("gcc-{m}"), m)) {
                let cc = dir.join("bin").join(name);
                std::fs::write(
                    &cc,
                    format!("#!/bin/sh\ncat >/dev/null\necho\necho {major}\n"),
                )
                .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&cc, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            CompilerScene { dir }
        }

        /// Adds a plain `gcc` (an RPM release's system compiler) of `major`.
        pub(crate) fn with_gcc(self, major: u32) -> CompilerScene {
            self.with_cc("gcc", major)
        }

        /// Adds a compiler called `name` (`gcc10-gcc`) of `major`.
        pub(crate) fn with_cc(self, name: &str, major: u32) -> CompilerScene {
            let cc = self.dir.join("bin").join(name);
            std::fs::write(
                &cc,
                format!("#!/bin/sh\ncat >/dev/null\necho\necho {major}\n"),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cc, std::fs::Permissions::from_mode(0o755)).unwrap();
            self
        }

        /// Runs the check with compiler `cc`: (exit status, stderr).
        pub(crate) fn check(&self, release: &str, cc: &str) -> (i32, String) {
            let script = compiler_check(&path_str(&self.dir.join("kdir")), release, cc);
            let path = format!(
                "{}:{}",
                self.dir.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .env("PATH", path)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    }

    impl Drop for CompilerScene {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const JAMMY_GA: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-22.04-5.15.0-91-generic.config");
    const FOCAL_HWE: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-20.04-5.15.0-117-generic.config");
    const JAMMY_HWE: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-22.04-6.8.0-40-generic.config");
    const NOBLE_614: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-24.04-6.14.0-27-generic.config");
    const GCC11_HEADER: &str =
        include_str!("../../tests/fixtures/kconfig/gcc-11-full-header.config");

    const CS9: &str =
        include_str!("../../tests/fixtures/kconfig/centos-stream-9-5.14.0-505.el9.config");

    /// A recipe that spells a kernel unlike its package (TencentOS's two
    /// spellings) finds no tree: the build stops there, naming it, instead
    /// of failing later in make or skipping the compiler check.
    #[test]
    fn a_kernel_tree_under_another_name_stops_the_build() {
        let scene = CompilerScene::new("no-tree", CS9).with_gcc(11);
        std::fs::remove_file(scene.dir.join("kdir/.config")).unwrap();
        let (status, err) = scene.check("5.4.119-19-0009.14", "gcc");
        assert_eq!(status, HEADERS_NOT_THERE, "{err}");
        assert!(
            err.contains("kernel 5.4.119-19-0009.14: its headers package installed no ")
                && err.contains("kdir/.config"),
            "{err}"
        );
    }

    #[test]
    fn centos_stream_9_kernel_matches_the_images_gcc_11() {
        let d = crate::distro::find("centos-stream-9").unwrap();
        let release = "5.14.0-505.el9.x86_64";
        let cc = d.builder.cc_for(release);
        assert_eq!(cc, "gcc");
        let scene = CompilerScene::new("cs9", CS9).with_gcc(11);
        assert_eq!(scene.check(release, cc), (0, String::new()));
        let scene = CompilerScene::new("cs9-wrong", CS9).with_gcc(8);
        let (status, err) = scene.check(release, cc);
        assert_eq!(status, COMPILER_MISMATCH);
        assert!(err.contains("was built with gcc 11 (gcc (GCC) 11.5.0 20240719 (Red Hat 11.5.0-2)), but the builder's gcc is gcc 8"), "{err}");
    }

    #[test]
    fn centos_stream_9_docker_plan() {
        let lines = plan(
            "centos-stream-9",
            BackendKind::Docker,
            &kernel("5.14.0-547.el9.x86_64", "5.14.0-547.el9"),
        );
        has(&lines, "docker pull quay.io/centos/centos:stream9");
        has(&lines, "dnf install -y gcc make elfutils-libelf-devel");
        has(&lines, "dnf install -y kernel-devel-5.14.0-547.el9'");
        has(&lines, "make -C /usr/src/kernels/5.14.0-547.el9.x86_64 M=/build/toa CC=gcc TOA_VERSION=0.1.0 KBUILD_BUILD_TIMESTAMP=1970-01-01 modules");
    }

    /// Every kernel an rpm recipe finds in its real-metadata fixture renders
    /// a complete plan: its headers package and build directory named, no
    /// template field left.
    #[test]
    fn fixture_kernels_render_complete_plans() {
        for distro in ["centos-stream-9", "opensuse-leap-15.6"] {
            let kernels = crate::repo::fixtures::tests::fixture_kernels(distro).unwrap();
            assert!(!kernels.is_empty(), "{distro}");
            for k in &kernels {
                let lines = plan(distro, BackendKind::Docker, k);
                fully_rendered(&lines, &format!("{distro} {}: ", k.release));
                has(&lines, &format!("-devel-{}", k.version));
                has(&lines, "make -C /");
                has(&lines, &k.release);
                let build = lines.last().unwrap();
                assert!(
                    build.contains(&format!("kernel {} was built with", k.release)),
                    "{build}"
                );
            }
        }
    }

    /// The compiler a recipe picks for `release`, checked against the kernel's config.
    fn recipe_check(distro: &str, release: &str, config: &str) -> (i32, String) {
        let d = crate::distro::find(distro).unwrap();
        let scene = CompilerScene::new(&format!("{distro}-{release}"), config);
        scene.check(release, d.builder.cc_for(release))
    }

    // Failed on the old check: it compared the config's first word ("gcc") with
    // the recipe's "gcc-11" and exited 3 for every jammy GA kernel.
    #[test]
    fn jammy_ga_kernel_recorded_as_plain_gcc_passes_with_gcc_11() {
        assert_eq!(
            recipe_check("ubuntu-22.04", "5.15.0-91-generic", JAMMY_GA),
            (0, String::new())
        );
    }

    // Failed on the old check too (first word "gcc", recipe "gcc-9").
    #[test]
    fn focal_hwe_5_15_recorded_as_plain_gcc_passes_with_gcc_9() {
        assert_eq!(
            recipe_check("ubuntu-20.04", "5.15.0-117-generic", FOCAL_HWE),
            (0, String::new())
        );
    }

    #[test]
    fn jammy_hwe_kernel_passes_with_gcc_12() {
        assert_eq!(
            recipe_check("ubuntu-22.04", "6.8.0-40-generic", JAMMY_HWE),
            (0, String::new())
        );
    }

    // Failed on the old recipe, which mapped 6.14 to gcc-14.
    #[test]
    fn noble_6_14_kernel_is_built_with_gcc_13() {
        assert_eq!(
            recipe_check("ubuntu-24.04", "6.14.0-27-generic", NOBLE_614),
            (0, String::new())
        );
    }

    const JAMMY_ARM64_GA: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-22.04-arm64-5.15.0-181-generic.config");
    const JAMMY_ARM64_HWE: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-22.04-arm64-6.8.0-44-generic.config");
    const FOCAL_ARM64_GA: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-20.04-arm64-5.4.0-97-generic.config");
    const NOBLE_ARM64: &str =
        include_str!("../../tests/fixtures/kconfig/ubuntu-24.04-arm64-6.8.0-51-generic.config");

    /// The cross compiler an aarch64 recipe picks for `release` (its
    /// `cross_compile` prefix before the gcc the kernel series uses),
    /// checked against the kernel's config in a scene that has every
    /// `aarch64-linux-gnu-gcc-N` (and no plain gcc-N of that version).
    fn recipe_check_arm64(distro: &str, release: &str, config: &str) -> (String, (i32, String)) {
        let d = crate::distro::find_for(distro, Some(crate::distro::arch::Arch::Aarch64)).unwrap();
        let prefix = d.builder.cross_compile.clone().expect("a cross builder");
        let cc = format!("{prefix}{}", d.builder.cc_for(release));
        let mut scene = CompilerScene::new(&format!("{distro}-arm64-{release}"), config);
        for major in 7..=16 {
            scene = scene.with_cc(&format!("{prefix}gcc-{major}"), major);
        }
        let result = scene.check(release, &cc);
        (cc, result)
    }

    #[test]
    fn ubuntu_arm64_kernels_take_the_cross_compiler_of_their_gcc() {
        for (distro, release, config, want) in [
            (
                "ubuntu-20.04",
                "5.4.0-97-generic",
                FOCAL_ARM64_GA,
                "aarch64-linux-gnu-gcc-9",
            ),
            (
                "ubuntu-22.04",
                "5.15.0-181-generic",
                JAMMY_ARM64_GA,
                "aarch64-linux-gnu-gcc-11",
            ),
            (
                "ubuntu-22.04",
                "6.8.0-44-generic",
                JAMMY_ARM64_HWE,
                "aarch64-linux-gnu-gcc-12",
            ),
            (
                "ubuntu-24.04",
                "6.8.0-51-generic",
                NOBLE_ARM64,
                "aarch64-linux-gnu-gcc-13",
            ),
        ] {
            let (cc, result) = recipe_check_arm64(distro, release, config);
            assert_eq!(cc, want, "{distro} {release}");
            assert_eq!(result, (0, String::new()), "{distro} {release}");
        }
        // The jammy GA kernel's gcc 11 against the HWE series' compiler.
        let scene = CompilerScene::new("arm64-mismatch", JAMMY_ARM64_GA)
            .with_cc("aarch64-linux-gnu-gcc-12", 12);
        let (status, err) = scene.check("5.15.0-181-generic", "aarch64-linux-gnu-gcc-12");
        assert_eq!(status, COMPILER_MISMATCH, "{err}");
        assert!(
            err.contains("kernel 5.15.0-181-generic was built with gcc 11 (gcc (Ubuntu 11.4.0-1ubuntu1~22.04.3) 11.4.0), but the builder's aarch64-linux-gnu-gcc-12 is gcc 12"),
            "{err}"
        );
    }

    pub(crate) fn plan_for(
        distro: &str,
        arch: Option<crate::distro::arch::Arch>,
        kind: BackendKind,
        k: &Kernel,
    ) -> Vec<String> {
        let builder = Builder::new(kind, &crate::distro::find_for(distro, arch).unwrap());
        let mut steps = builder.prepare_steps().unwrap();
        steps.extend(builder.headers_steps(k));
        steps.push(builder.build_step(k, Path::new("/home/maintainer/toa"), "0.1.0"));
        steps.iter().map(Step::shell_line).collect()
    }

    /// Ubuntu's arm64 kernels: the ports suites in the apt sources for arm64
    /// alone (the release's own suite too: the image's sources are amd64's),
    /// the arm64 headers unpacked with the amd64 package's host tools, and
    /// kbuild cross-compiling with the kernel's gcc.
    #[test]
    fn ubuntu_arm64_docker_plan_cross_builds_from_ports() {
        let arm = Some(crate::distro::arch::Arch::Aarch64);
        let lines = plan_for(
            "ubuntu-22.04",
            arm,
            BackendKind::Docker,
            &kernel("5.15.0-181-generic", ""),
        );
        has(&lines, "docker pull ubuntu:22.04");
        // The base image is the release's; the kernel's is arm64's own
        // (amd64 has a 5.15.0-181-generic too).
        has(
            &lines,
            "docker run --name toa-prep-ubuntu-22.04-aarch64-5.15.0-181-generic toa-builder/ubuntu-22.04:base ",
        );
        has(
            &lines,
            "docker commit toa-prep-ubuntu-22.04-aarch64-5.15.0-181-generic toa-builder/ubuntu-22.04-aarch64:5.15.0-181-generic",
        );
        // (The container's script is one quoted word: its quotes are '\''.)
        has(
            &lines,
            "'\\''deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports jammy main'\\'' \
             '\\''deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports jammy-updates main'\\'' \
             '\\''deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports jammy-security main'\\'' \
             > /etc/apt/sources.list.d/toa-release-suites.list && apt-get update -q && ",
        );
        has(&lines, "s/^deb http/deb [arch=amd64] http/'\\'' /etc/apt/sources.list && dpkg --add-architecture arm64 && apt-get update -q");
        has(
            &lines,
            "apt-get download linux-headers-5.15.0-181-generic:arm64 linux-headers-5.15.0-181-generic:amd64",
        );
        has(
            &lines,
            "apt-get install -y --no-install-recommends gcc-11-aarch64-linux-gnu $deps",
        );
        has(&lines, "make -C /usr/src/linux-headers-5.15.0-181-generic M=/build/toa ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- CC=aarch64-linux-gnu-gcc-11 TOA_VERSION=0.1.0");
        has(
            &lines,
            "but the builder'\\''s aarch64-linux-gnu-gcc-11 is gcc $bmaj",
        );
        fully_rendered(&lines, "");
        for line in &lines {
            assert!(!line.contains("archive.ubuntu.com"), "{line}");
        }
        let hwe = plan_for(
            "ubuntu-24.04",
            arm,
            BackendKind::Docker,
            &kernel("6.8.0-51-generic", ""),
        );
        has(
            &hwe,
            "deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports noble main",
        );
        has(
            &hwe,
            "s/^Types: deb$/&\\nArchitectures: amd64/'\\'' /etc/apt/sources.list.d/ubuntu.sources",
        );
        has(&hwe, "CC=aarch64-linux-gnu-gcc-13");
        // amd64 is unchanged: no ports, no foreign architecture.
        let amd64 = plan(
            "ubuntu-22.04",
            BackendKind::Docker,
            &kernel("5.15.0-119-generic", "5.15.0-119.129"),
        );
        has(
            &amd64,
            "deb http://archive.ubuntu.com/ubuntu jammy-updates main",
        );
        assert!(
            amd64
                .iter()
                .all(|l| !l.contains("ports.ubuntu.com") && !l.contains("arm64")),
            "{amd64:?}"
        );
    }

    /// Every kernel of the arm64 Ubuntu recipes' discovery fixtures (their
    /// ports excerpts, xtask/tests/fixtures/apt/ubuntu-*/) renders a complete
    /// cross build: its arm64 and amd64 headers packages, the cross compiler
    /// of its series installed, checked and passed to kbuild with ARCH=arm64.
    #[test]
    fn ubuntu_arm64_fixture_kernels_render_with_their_cross_compiler() {
        let arm = Some(crate::distro::arch::Arch::Aarch64);
        for (distro, gcc) in [
            ("ubuntu-20.04", "gcc-9"),
            ("ubuntu-22.04", "gcc-11"),
            ("ubuntu-24.04", "gcc-13"),
        ] {
            let d = crate::distro::find_for(distro, arm).unwrap();
            let found = crate::repo::fixtures::kernels(&d)
                .unwrap()
                .unwrap_or_else(|| panic!("{distro} aarch64 has a fixture"));
            assert!(!found.kernels.is_empty(), "{distro}");
            for k in &found.kernels {
                let r = &k.release;
                let cc = format!("aarch64-linux-gnu-{gcc}");
                let lines = plan_for(distro, arm, BackendKind::Docker, k);
                has(&lines, &format!("docker pull {}", d.builder.image));
                has(
                    &lines,
                    &format!(
                        "deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports {}",
                        k.suite
                    ),
                );
                has(
                    &lines,
                    &format!("apt-get download linux-headers-{r}:arm64 linux-headers-{r}:amd64"),
                );
                has(
                    &lines,
                    &format!(
                        "apt-get install -y --no-install-recommends {gcc}-aarch64-linux-gnu $deps"
                    ),
                );
                has(
                    &lines,
                    &format!("make -C /usr/src/linux-headers-{r} M=/build/toa ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- CC={cc} TOA_VERSION=0.1.0"),
                );
                has(&lines, &format!("but the builder'\\''s {cc} is gcc $bmaj"));
                fully_rendered(&lines, &format!("{distro}: "));
                for line in &lines {
                    assert!(!line.contains("archive.ubuntu.com"), "{distro}: {line}");
                }
            }
        }
    }

    /// The headers of several arm64 kernels go into one image: every
    /// package name is repeated per kernel, each compiler named once.
    #[test]
    fn ubuntu_arm64_headers_set_names_every_kernel() {
        let d = crate::distro::find_for("ubuntu-22.04", Some(crate::distro::arch::Arch::Aarch64))
            .unwrap();
        let builder = Builder::new(BackendKind::Docker, &d);
        let kernels = [
            kernel("5.15.0-181-generic", ""),
            kernel("6.8.0-44-generic", ""),
        ];
        let (_, steps) = builder.headers_set_steps(&kernels).unwrap();
        let lines: Vec<String> = steps.iter().map(Step::shell_line).collect();
        has(&lines, "apt-get download linux-headers-5.15.0-181-generic:arm64 linux-headers-6.8.0-44-generic:arm64 linux-headers-5.15.0-181-generic:amd64 linux-headers-6.8.0-44-generic:amd64 &&");
        has(
            &lines,
            "--no-install-recommends gcc-11-aarch64-linux-gnu gcc-12-aarch64-linux-gnu $deps",
        );
    }

    /// The recipe takes the arch-all headers package from the arm64
    /// package's Depends: checked on a real stanza (linux-s32's, whose
    /// common package is named after its source, as the HWE ones are).
    #[test]
    fn ubuntu_arm64_recipe_finds_the_common_headers_package() {
        let d = crate::distro::find_for("ubuntu-22.04", Some(crate::distro::arch::Arch::Aarch64))
            .unwrap();
        let install = &d.builder.install_headers;
        let start = install.find("sed -n '").unwrap() + "sed -n '".len();
        let pattern = &install[start..start + install[start..].find('\'').unwrap()];
        let stanza = include_str!(
            "../../tests/fixtures/apt/stanzas/ubuntu-jammy-arm64-linux-headers-5.15.0-1034-s32"
        );
        let depends = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Depends: "))
            .unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n' \"$1\" | tr , '\\n' | sed -n '{pattern}' | sort -u"
            ))
            .arg("sh")
            .arg(depends)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "linux-s32-headers-5.15.0-1034\n"
        );
    }

    #[test]
    fn a_mismatch_names_both_compilers_and_exits_3() {
        let scene = CompilerScene::new("mismatch", NOBLE_614);
        let (status, err) = scene.check("6.14.0-27-generic", "gcc-14");
        assert_eq!(status, COMPILER_MISMATCH, "{err}");
        assert!(
            err.contains("kernel 6.14.0-27-generic was built with gcc 13 (x86_64-linux-gnu-gcc-13 (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0)"),
            "{err}"
        );
        assert!(err.contains("the builder's gcc-14 is gcc 14"), "{err}");
    }

    #[test]
    fn config_gcc_version_decides_when_present() {
        let scene = CompilerScene::new("gcc-version", GCC11_HEADER);
        assert_eq!(scene.check("6.10.0-rc4", "gcc-11"), (0, String::new()));
        let (status, err) = scene.check("6.10.0-rc4", "gcc-12");
        assert_eq!(status, COMPILER_MISMATCH, "{err}");
        assert!(err.contains("built with gcc 11 (gcc (Ubuntu"), "{err}");
        // CONFIG_GCC_VERSION wins over the text.
        let scene = CompilerScene::new(
            "gcc-version-only",
            &GCC11_HEADER.replace("CONFIG_CC_VERSION_TEXT=", "# was "),
        );
        let (status, err) = scene.check("6.10.0-rc4", "gcc-13");
        assert_eq!(status, COMPILER_MISMATCH);
        assert!(
            err.contains("built with gcc 11, but the builder's gcc-13 is gcc 13"),
            "{err}"
        );
    }

    #[test]
    fn a_config_that_records_no_compiler_is_not_checked() {
        // 3.10 (CentOS 7) and 4.12 (SLES 12) configs have neither line.
        let scene = CompilerScene::new("none", "CONFIG_64BIT=y\n");
        assert_eq!(
            scene.check("3.10.0-1160.el7.x86_64", "gcc-7"),
            (0, String::new())
        );
    }

    #[test]
    fn a_compiler_missing_from_the_builder_is_named() {
        let scene = CompilerScene::new("missing", JAMMY_HWE);
        let (status, err) = scene.check("6.8.0-40-generic", "gcc-99");
        assert_eq!(status, COMPILER_MISMATCH);
        assert!(err.contains("gcc 12"), "{err}");
        assert!(err.contains("gcc-99 does not run in the builder"), "{err}");
    }

    #[test]
    fn the_make_line_runs_the_check_first() {
        let builder = Builder::new(
            BackendKind::Docker,
            &crate::distro::find("ubuntu-22.04").unwrap(),
        );
        let line = builder.make_line(&kernel("5.15.0-91-generic", "5.15.0-91.101"), "0.1.0");
        let check = compiler_check(
            "/usr/src/linux-headers-5.15.0-91-generic",
            "5.15.0-91-generic",
            "gcc-11",
        );
        assert!(line.starts_with(&format!("{check} && make -C ")), "{line}");
    }

    #[test]
    fn chroot_is_refused_for_rpm_releases() {
        let err = select(
            Some(BackendKind::Chroot),
            &crate::distro::find("centos-7.2").unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("use --backend docker or podman"), "{err}");
    }

    /// The builder's `.repo` file: the tokenized URL, readable by its owner
    /// only, gone when the build is over.
    #[test]
    fn the_builders_repo_file_holds_the_tokens_until_the_build_ends() {
        use std::os::unix::fs::PermissionsExt;
        let scene = crate::repo::scc::tests::Scene::new("repo-file");
        let mut distro = crate::distro::find("sles-12-sp5").unwrap();
        distro.name = format!("scc-test-repo-file-{}", std::process::id());
        let repo = scene.repo(&["https://updates.suse.com/repo/$RCE/RES7/x86_64/"]);
        let env = repo.credentials.as_ref().unwrap().env.clone();
        distro.repo = crate::distro::Repo::RpmMd(repo);
        let builder = crate::build::builder::Builder::new(
            crate::build::builder::BackendKind::Docker,
            &distro,
        );
        std::env::set_var(&env, &scene.creds_file);
        let written = builder.write_registered_repos();
        std::env::remove_var(&env);
        let guard = written.unwrap().expect("registered repositories");
        let (path, preview) = builder.registered_repo_preview().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "[toa-repo__RCE_RES7_x86_64]\nname=toa-repo__RCE_RES7_x86_64\nenabled=1\n\
                 autorefresh=1\nbaseurl={}/repo/$RCE/RES7/x86_64?token\ntype=rpm-md\n\n",
                scene.base
            )
        );
        assert!(
            preview.contains("x86_64?<token>\n") && !preview.contains("?token"),
            "{preview}"
        );
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(guard);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(
            crate::host::cache::cache_dir()
                .join("builders")
                .join(&distro.name),
        );
    }

    /// The build of a kernel with cached headers: each package directory
    /// mounted read-only at its real path, no network, the toolchain image.
    #[test]
    fn the_build_mounts_each_package_read_only_without_network() {
        use crate::build::headers_cache::mounts;
        use crate::distro::kernel::Kernel;
        use crate::repo::debian::PackageRef;
        use std::collections::BTreeSet;
        use std::path::Path;
        let distro = crate::distro::find("debian-12").unwrap();
        let mut builder = Builder::new(BackendKind::Docker, &distro);
        assert!(builder.uses_headers_cache());
        let k = Kernel::pinned("6.1.0-50-amd64", "6.1.176-1");
        let external: BTreeSet<String> = ["linux-compiler-gcc-12-x86".to_string()].into();
        let (tag, steps) = builder.toolchain_steps(std::slice::from_ref(&k), &external);
        assert!(tag.starts_with("toa-builder/debian-12:tools-"), "{tag}");
        let lines: Vec<String> = steps.iter().map(|s| s.shell_line()).collect();
        has(
            &lines,
            "apt-get update -q && INITRD=No DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc-12 linux-compiler-gcc-12-x86'",
        );
        has(
            &lines,
            &format!(
                "docker commit toa-prep-debian-12-{} {tag}",
                tag.rsplit(':').next().unwrap()
            ),
        );
        // The same set finds the same image; another compiler makes another.
        let (again, _) = builder.toolchain_steps(std::slice::from_ref(&k), &external);
        assert_eq!(again, tag);
        let (other, _) = builder.toolchain_steps(std::slice::from_ref(&k), &BTreeSet::new());
        assert_ne!(other, tag);

        let root = Path::new("/cache/headers");
        let own: Vec<PackageRef> = [
            "linux-headers-6.1.0-50-amd64",
            "linux-headers-6.1.0-50-common",
            "linux-kbuild-6.1",
        ]
        .iter()
        .enumerate()
        .map(|(n, name)| PackageRef {
            name: name.to_string(),
            version: "6.1.176-1".into(),
            url: format!("http://deb.debian.org/debian/pool/main/l/linux/{name}.deb"),
            size: 1,
            sha256: format!("{n}").repeat(64),
        })
        .collect();
        let m = mounts(root, &own).unwrap();
        builder.use_cached_headers(&k.release, &tag, m);
        let line = builder
            .build_step(&k, Path::new("/src"), "0.1.0")
            .shell_line();
        let expected = format!(
            "docker run --rm --network none -v /src:/build/toa \
             -v /cache/headers/{0}/usr/src/linux-headers-6.1.0-50-amd64:/usr/src/linux-headers-6.1.0-50-amd64:ro \
             -v /cache/headers/{1}/usr/src/linux-headers-6.1.0-50-common:/usr/src/linux-headers-6.1.0-50-common:ro \
             -v /cache/headers/{2}/usr/lib/linux-kbuild-6.1:/usr/lib/linux-kbuild-6.1:ro \
             -w /build/toa {tag} /bin/sh -c ",
            "0".repeat(64),
            "1".repeat(64),
            "2".repeat(64),
        );
        assert!(line.starts_with(&expected), "{line}\n{expected}");
        assert!(
            line.contains("make -C /usr/src/linux-headers-6.1.0-50-amd64 M=/build/toa CC=gcc-12"),
            "{line}"
        );
        assert!(
            line.contains("kernel 6.1.0-50-amd64 was built with"),
            "{line}"
        );
        assert!(line.contains("cp /usr/src/linux-headers-6.1.0-50-amd64/Module.symvers /build/toa/.kernel.symvers"), "{line}");
        // Chroot, rpm and cross builds keep their way.
        assert!(!Builder::new(BackendKind::Chroot, &distro).uses_headers_cache());
        let centos = crate::distro::find("centos-7.9").unwrap();
        assert!(!Builder::new(BackendKind::Docker, &centos).uses_headers_cache());
        let arm =
            crate::distro::find_for("debian-12", Some(crate::distro::arch::Arch::Aarch64)).unwrap();
        assert!(!Builder::new(BackendKind::Docker, &arm).uses_headers_cache());
    }
}
