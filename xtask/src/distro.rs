//! Distro releases as described by `distros/*.toml`: identity, where the
//! release lists its kernels, and how its builder environment is made.

pub mod arch;
pub mod kernel;
pub mod per_arch;
pub mod recipe;
pub mod uname;

use crate::distro::arch::Arch;
pub use crate::distro::recipe::Recipe;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distro {
    /// The name used on the command line: `debian-12`, `centos-7.2`.
    pub name: String,
    /// Tarball stem: `Debian-12` gives `Debian-12-x86_64.tar.gz`.
    pub tarball: String,
    /// Package family: decides package names and how kernel releases are spelled.
    pub family: Family,
    /// Kernel architecture as `uname -m` prints it: the one this value
    /// describes (a file may list several: `arch = ["x86_64", "aarch64"]`).
    pub arch: String,
    /// Every architecture the file lists, the default (x86_64) first.
    #[serde(skip)]
    pub arches: Vec<String>,
    /// Where the release's kernel header packages are listed.
    pub repo: Repo,
    /// The release's own build environment.
    pub builder: BuilderSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Debian and Ubuntu: apt, `linux-headers-<release>`.
    Debian,
    /// CentOS / RHEL: yum, `kernel-devel-<version>`.
    Rhel,
    /// SLES / openSUSE: zypper, `kernel-default-devel`.
    Suse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Repo {
    /// A Debian-style archive: `dists/<suite>/InRelease` and `Packages` indices.
    Apt(AptRepo),
    /// RPM repositories with `repodata/repomd.xml` (yum, dnf, zypper).
    RpmMd(RpmRepo),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptRepo {
    /// The release's own archive root, e.g. `http://deb.debian.org/debian`:
    /// the builder's rootfs and the lab's userland come from it.
    pub mirror: String,
    /// The release's own suite (codename) in `mirror`.
    pub suite: String,
    /// Every archive whose suites hold kernels of the release: the release
    /// suite, updates, security (under another root for Debian), backports.
    pub archives: Vec<AptArchive>,
    /// Kernel flavours users run: `amd64` gives `linux-headers-<abi>-amd64`.
    /// The first is the default install's: its `linux-image-<flavour>`
    /// metapackage picks the kernel a tarball's top-level toa.ko is for.
    pub flavours: Vec<String>,
    /// The archives serve this architecture only, not the builder's
    /// (Ubuntu's ports.ubuntu.com has no amd64): the builder's apt lists
    /// every suite of them, the release's own too, restricted to it
    /// (`deb [arch=arm64] ...`). Given in `[repo.<arch>]`.
    #[serde(default)]
    pub arch_only: bool,
}

/// One archive root and the suites of the release it serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptArchive {
    /// Archive root: `http://deb.debian.org/debian-security`.
    pub mirror: String,
    /// Suites under `dists/`: `bookworm-security`. A suite ending in
    /// `-backports` is opt-in: its kernels are built, but a default install
    /// does not upgrade to them.
    pub suites: Vec<String>,
}

/// One suite of one archive: where one `Packages` index lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSuite {
    pub mirror: String,
    pub suite: String,
}

impl AptSuite {
    /// Whether an updated default install follows this suite (backports are opt-in).
    pub fn followed_by_default(&self) -> bool {
        !self.suite.ends_with("-backports")
    }
}

impl AptRepo {
    /// Every suite of every archive, in the order of the file.
    pub fn suites(&self) -> Vec<AptSuite> {
        self.archives
            .iter()
            .flat_map(|a| {
                a.suites.iter().map(|s| AptSuite {
                    mirror: a.mirror.trim_end_matches('/').to_string(),
                    suite: s.clone(),
                })
            })
            .collect()
    }

    /// The flavour of a default install (`amd64`, `generic`).
    pub fn default_flavour(&self) -> &str {
        self.flavours.first().map_or("", String::as_str)
    }

    /// The release's own suite, as an [`AptSuite`].
    pub fn home(&self) -> AptSuite {
        AptSuite {
            mirror: self.mirror.trim_end_matches('/').to_string(),
            suite: self.suite.clone(),
        }
    }
}

/// The Debian-family repository description the archive code reads.
pub type DebianRepo = AptRepo;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmRepo {
    /// Repository roots, each holding `repodata/repomd.xml` (base, updates, ...),
    /// or the URL of a `mirror.list` whose first line is the current root
    /// (Amazon Linux).
    pub baseurls: Vec<String>,
    /// The package whose versions are the kernels: `kernel-devel`, `kernel-default-devel`.
    pub headers_package: String,
    /// More repository roots the VM lab searches for the kernel image
    /// packages (`kernel`, `kernel-core`, `kernel-modules`) after `baseurls`:
    /// where they are not beside the headers (EL9 puts kernel-devel in
    /// AppStream and the kernel in BaseOS). Kernels are still only those the
    /// headers packages list.
    #[serde(default)]
    pub image_baseurls: Vec<String>,
    /// What a variant kernel adds to `uname -r` after the architecture:
    /// EL9's kernel-rt-devel 5.14.0-427.35.1.el9_4 is for 5.14.0-427.35.1.el9_4.x86_64+rt.
    #[serde(default)]
    pub release_suffix: String,
    /// How `uname -r` spells a kernel whose headers package does not declare
    /// it (`kernel-devel-uname-r`), and how a bare `--kernel` value is turned
    /// back into a package version offline. Default: `<version>.<arch>`.
    #[serde(default)]
    pub uname: crate::distro::uname::Uname,
    /// Credentials the repositories demand (SLES: SUSE Customer Center).
    pub credentials: Option<Credentials>,
    /// ASCII-armored public keys (paths under `distros/`) of which one signs
    /// every repository's `repodata/repomd.xml` as `repomd.xml.asc`: each is
    /// checked with gpgv before its metadata is read. Empty: the metadata is
    /// trusted on TLS alone (repositories that publish no signature).
    #[serde(default)]
    pub keys: Vec<String>,
}

impl RpmRepo {
    /// The key files, as paths.
    pub fn key_paths(&self) -> Vec<PathBuf> {
        self.keys.iter().map(|k| distros_dir().join(k)).collect()
    }
}

/// SUSEConnect's default registration server (`--url`).
pub const SCC: &str = "https://scc.suse.com";

/// A registered system's credentials (an SCCcredentials file).
#[derive(Clone, PartialEq, Eq)]
pub struct System {
    pub username: String,
    pub password: String,
    /// SCC's duplicate detection (connect-ng pkg/connection/credentials.go):
    /// sent back as the `System-Token` header. SCC rotates it only on
    /// requests that change something; these are all reads.
    pub system_token: Option<String>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "system_token",
                &self.system_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The registration a release's repositories need (SLES): the credentials
/// of a system registered with SUSE Customer Center, which gives the system
/// its repositories' URLs with their access tokens (see [`crate::repo::scc`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The environment variable naming the credentials file, a zypp
    /// credentials file (`username=...` and `password=...` lines), as
    /// SUSEConnect writes `/etc/zypp/credentials.d/SCCcredentials`.
    pub env: String,
    /// What to supply and where to get it: the message when it is missing.
    pub help: String,
    /// The registration server the system is registered with (SUSEConnect's
    /// `--url`). Default: SUSE Customer Center, <https://scc.suse.com>.
    pub server: Option<String>,
}

impl Credentials {
    /// The registration server's URL.
    pub fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(SCC)
    }

    /// Whether the variable naming the credentials file is set at all: a
    /// release without it is left out of a plan, not failed.
    pub fn supplied(&self) -> bool {
        std::env::var_os(&self.env).is_some_and(|v| !v.is_empty())
    }

    /// The system credentials in the file `env` names, or an error that says
    /// what to supply.
    pub fn read(&self, distro: &str) -> Result<System> {
        let missing = || {
            format!(
                "{distro}: its repositories need credentials: {}; set {} to that file",
                self.help, self.env
            )
        };
        let path = match std::env::var_os(&self.env) {
            Some(path) if !path.is_empty() => path,
            _ => bail!("{}", missing()),
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} names {}, which cannot be read: {}",
                self.env,
                Path::new(&path).display(),
                missing()
            )
        })?;
        // As SUSEConnect reads it (connect-ng internal/credentials/credentials.go).
        let field = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match (field("username"), field("password")) {
            (Some(username), Some(password)) => Ok(System {
                username,
                password,
                system_token: field("system_token"),
            }),
            _ => bail!(
                "{} ({}) has no username= and password= lines: {}",
                self.env,
                Path::new(&path).display(),
                missing()
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderSpec {
    /// Container image of the release (docker/podman).
    pub image: String,
    /// Shell commands run once in a fresh image: repositories, compiler, make.
    pub prepare: Vec<String>,
    /// Installs one kernel's headers; `{release}`, `{version}` and `{cc}` are filled in.
    pub install_headers: String,
    /// The kernel build directory of one kernel (`{release}` filled in).
    pub kdir: String,
    /// The compiler the release built its kernels with (`make CC=...`).
    pub cc: String,
    /// Kernel series built with another compiler than `cc` (HWE kernels).
    #[serde(default)]
    pub compilers: Vec<CompilerRule>,
    /// How to make the rootfs without a container engine, where possible.
    pub bootstrap: Option<Bootstrap>,
    /// `CROSS_COMPILE` prefix when the kernels are of another architecture
    /// than the builder (`aarch64-linux-gnu-`): kbuild then gets `ARCH=` and
    /// `CC=<prefix><cc>`, and `cc` stays the name the kernel config records.
    pub cross_compile: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompilerRule {
    /// Kernel releases starting with this (e.g. `6.8.`) use `cc`.
    pub release_prefix: String,
    pub cc: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrap {
    /// debootstrap the suite of the apt repo (Debian family).
    Debootstrap,
}

impl BuilderSpec {
    /// The compiler for kernel `release`.
    pub fn cc_for(&self, release: &str) -> &str {
        self.compilers
            .iter()
            .find(|r| release.starts_with(&r.release_prefix))
            .map_or(&self.cc, |r| &r.cc)
    }
}

/// Fills `{release}`, `{version}` and `{cc}` in a recipe line.
pub fn render(template: &str, release: &str, version: &str, cc: &str) -> String {
    template
        .replace("{release}", release)
        .replace("{version}", version)
        .replace("{cc}", cc)
}

impl Distro {
    /// `Debian-12-x86_64`: the directory inside the tarball and the tarball's stem.
    pub fn dist_name(&self) -> String {
        format!("{}-{}", self.tarball, self.arch)
    }

    /// `ubuntu-22.04` for x86_64, `ubuntu-22.04-aarch64` for another
    /// architecture: what names one architecture's kernel builder images and
    /// work directories. Ubuntu names a kernel alike on both
    /// (5.15.0-181-generic is an amd64 and an arm64 kernel).
    pub fn build_name(&self) -> String {
        match self.arch_kind() {
            Arch::X86_64 => self.name.clone(),
            arch => format!("{}-{}", self.name, arch.name()),
        }
    }

    /// [`Distro::arch`] as an [`Arch`] (validated when the file was loaded).
    pub fn arch_kind(&self) -> Arch {
        Arch::from_name(&self.arch).unwrap_or(Arch::X86_64)
    }

    pub fn debian(&self) -> Result<&DebianRepo> {
        match &self.repo {
            Repo::Apt(repo) => Ok(repo),
            Repo::RpmMd(_) => bail!("{}: not an apt repository", self.name),
        }
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let here = file.display();
        if self.name != stem {
            bail!(
                "{here}: name \"{}\" must match the file name \"{stem}\"",
                self.name
            );
        }
        if self.tarball.is_empty() || self.tarball.contains(['/', ' ']) {
            bail!(
                "{here}: tarball \"{}\" must be a plain file stem",
                self.tarball
            );
        }
        if !matches!(self.arch.as_str(), "x86_64" | "aarch64") {
            bail!(
                "{here}: arch \"{}\" is not one of x86_64, aarch64",
                self.arch
            );
        }
        match (&self.repo, self.family) {
            (Repo::Apt(_), Family::Debian) | (Repo::RpmMd(_), Family::Rhel | Family::Suse) => {}
            (repo, family) => bail!(
                "{here}: a {family:?} release cannot use repo type {}",
                repo.kind()
            ),
        }
        if let Repo::Apt(apt) = &self.repo {
            if apt.flavours.is_empty() || apt.flavours.iter().any(|f| f.is_empty()) {
                bail!("{here}: repo.flavours must name at least one kernel flavour");
            }
            if !apt.suites().contains(&apt.home()) {
                bail!(
                    "{here}: the release suite \"{}\" of {} must be one of repo.archives' suites",
                    apt.suite,
                    apt.mirror
                );
            }
        }
        if let Repo::RpmMd(rpm) = &self.repo {
            for (key, path) in rpm.keys.iter().zip(rpm.key_paths()) {
                if !path.is_file() {
                    bail!("{here}: repo.keys: {key} is not a file under distros/");
                }
            }
        }
        if self.builder.bootstrap.is_some() && !matches!(self.repo, Repo::Apt(_)) {
            bail!("{here}: bootstrap = \"debootstrap\" needs an apt repo");
        }
        for (what, line) in [
            ("install_headers", &self.builder.install_headers),
            ("kdir", &self.builder.kdir),
        ] {
            if !line.contains("{release}") && !line.contains("{version}") {
                bail!(
                    "{here}: builder.{what} must name the kernel with {{release}} or {{version}}"
                );
            }
        }
        Ok(())
    }
}

impl Repo {
    fn kind(&self) -> &'static str {
        match self {
            Repo::Apt(_) => "apt",
            Repo::RpmMd(_) => "rpm-md",
        }
    }
}

pub fn distros_dir() -> PathBuf {
    crate::host::cache::project_root().join("distros")
}

/// Every distro release, sorted by name.
pub fn all() -> Result<Vec<Distro>> {
    let dir = distros_dir();
    crate::distro::recipe::names()?
        .iter()
        .map(|name| load_file(&dir.join(format!("{name}.toml"))))
        .collect()
}

/// The release in `path`, for its default architecture.
pub fn load_file(path: &Path) -> Result<Distro> {
    load_file_for(path, None)
}

/// The release in `path` for `arch` (None: its default, x86_64 where listed).
pub fn load_file_for(path: &Path, arch: Option<Arch>) -> Result<Distro> {
    Recipe::read(path)?.distro(arch)
}

/// The distro called `name` for its default architecture, or an error that
/// lists the known ones.
pub fn find(name: &str) -> Result<Distro> {
    find_for(name, None)
}

/// The distro called `name` for `arch` (None: its default); a usage error
/// names the known distros, or the architectures the release has.
pub fn find_for(name: &str, arch: Option<Arch>) -> Result<Distro> {
    Recipe::named(name)?.distro(arch)
}

impl Distro {
    /// The release a parsed recipe file describes for `arch`, checked.
    fn from_table(mut table: toml::Table, arch: Option<Arch>, path: &Path) -> Result<Distro> {
        let arches = crate::distro::per_arch::specialise(&mut table, arch, path)?;
        let mut distro: Distro = table
            .try_into()
            .with_context(|| format!("parsing {}", path.display()))?;
        distro.arches = arches;
        distro.validate(path)?;
        Ok(distro)
    }
}

/// Where a suite's `InRelease` is: `<mirror>/dists/<suite>/InRelease`. The
/// mirror is the suite's own archive root, which may differ by architecture
/// (`[repo.aarch64]`: Ubuntu's arm64 suites are on ports.ubuntu.com).
pub fn inrelease_url(mirror: &str, suite: &str) -> String {
    format!("{}/dists/{suite}/InRelease", mirror.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's "Distro releases" table has one row per file in distros/.
    #[test]
    fn the_readme_lists_every_recipe() {
        let readme =
            std::fs::read_to_string(crate::host::cache::project_root().join("README.md")).unwrap();
        let section = readme
            .split("## Distro releases")
            .nth(1)
            .expect("README has a Distro releases section");
        let section = section.split("\n## ").next().unwrap();
        let listed: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let names: Vec<String> = all().unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(
            listed, names,
            "README.md's Distro releases table vs distros/"
        );
    }

    #[test]
    fn every_distro_file_loads() {
        let all = all().unwrap();
        let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
        for want in [
            "centos-7.2",
            "centos-7.9",
            "debian-11",
            "debian-12",
            "debian-13",
            "debian-unstable",
            "ubuntu-18.04",
            "ubuntu-22.04",
            "ubuntu-24.04",
            "sles-12-sp5",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(find("debian-12").unwrap().dist_name(), "Debian-12-x86_64");
        assert_eq!(find("centos-7.2").unwrap().dist_name(), "CentOS-7.2-x86_64");
    }

    /// Ubuntu's arm64 kernels come from ports.ubuntu.com, release, -updates
    /// and -security, listed for arm64 alone; amd64 keeps archive.ubuntu.com.
    #[test]
    fn ubuntu_recipes_take_arm64_from_ports() {
        for (name, codename, tarball) in [
            ("ubuntu-20.04", "focal", "Ubuntu-20.04"),
            ("ubuntu-22.04", "jammy", "Ubuntu-22.04"),
            ("ubuntu-24.04", "noble", "Ubuntu-24.04"),
        ] {
            let arm = find_for(name, Some(Arch::Aarch64)).unwrap();
            assert_eq!(arm.arches, ["x86_64", "aarch64"], "{name}");
            assert_eq!(arm.dist_name(), format!("{tarball}-aarch64"));
            let repo = arm.debian().unwrap();
            assert!(repo.arch_only, "{name}");
            assert_eq!(repo.mirror, "http://ports.ubuntu.com/ubuntu-ports");
            assert_eq!(repo.flavours, ["generic"], "{name}");
            let suites: Vec<(String, String)> = repo
                .suites()
                .into_iter()
                .map(|s| (s.mirror, s.suite))
                .collect();
            let ports = "http://ports.ubuntu.com/ubuntu-ports".to_string();
            assert_eq!(
                suites,
                [
                    (ports.clone(), codename.to_string()),
                    (ports.clone(), format!("{codename}-updates")),
                    (ports, format!("{codename}-security")),
                ],
                "{name}"
            );
            assert_eq!(
                arm.builder.cross_compile.as_deref(),
                Some("aarch64-linux-gnu-")
            );
            let amd64 = find(name).unwrap();
            assert_eq!(amd64.dist_name(), format!("{tarball}-x86_64"));
            let repo = amd64.debian().unwrap();
            assert!(!repo.arch_only && amd64.builder.cross_compile.is_none());
            assert_eq!(repo.mirror, "http://archive.ubuntu.com/ubuntu");
            assert_eq!(repo.default_flavour(), "generic");
        }
    }

    #[test]
    fn unknown_distro_lists_known_ones() {
        let err = find("debian-99").unwrap_err();
        // A usage error: exit status 2.
        assert_eq!(crate::report::status(&err), 2);
        let err = err.to_string();
        assert!(err.contains("unknown distro \"debian-99\""), "{err}");
        assert!(
            err.contains("debian-12") && err.contains("centos-7.2"),
            "{err}"
        );
    }

    fn load_str(name: &str, text: &str) -> Result<Distro> {
        load_str_for(name, text, None)
    }

    fn load_str_for(name: &str, text: &str, arch: Option<Arch>) -> Result<Distro> {
        // Tests run in parallel and several load the same name: one
        // directory per call, or one test removes another's file.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = crate::testing::scratch(&format!("distro-test-{call}-{name}"));
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = load_file_for(&file, arch);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    /// Ubuntu's arm64 suites live on ports.ubuntu.com, its amd64 ones on
    /// archive.ubuntu.com: `[repo.aarch64]` gives an architecture its own
    /// archives, and kernel discovery reads the indices from there.
    const UBUNTU_PORTS: &str = r#"
name = "ubuntu-x"
tarball = "Ubuntu-X"
family = "debian"
arch = ["x86_64", "aarch64"]
[repo]
type = "apt"
mirror = "http://archive.ubuntu.com/ubuntu"
suite = "jammy"
archives = [{ mirror = "http://archive.ubuntu.com/ubuntu", suites = ["jammy", "jammy-updates", "jammy-security"] }]
flavours = ["generic"]
[repo.aarch64]
mirror = "http://ports.ubuntu.com/ubuntu-ports"
archives = [{ mirror = "http://ports.ubuntu.com/ubuntu-ports", suites = ["jammy", "jammy-updates", "jammy-security"] }]
[builder]
image = "ubuntu:22.04"
prepare = []
install_headers = "apt-get install -y linux-headers-{release}"
kdir = "/usr/src/linux-headers-{release}"
cc = "gcc-11"
"#;

    #[test]
    fn each_architecture_reads_its_own_archive() {
        let urls = |d: &Distro| -> Vec<String> {
            d.debian()
                .unwrap()
                .suites()
                .iter()
                .map(|s| inrelease_url(&s.mirror, &s.suite))
                .collect()
        };
        let amd64 = load_str_for("ubuntu-x", UBUNTU_PORTS, None).unwrap();
        assert_eq!(amd64.arches, ["x86_64", "aarch64"]);
        assert_eq!(
            urls(&amd64),
            [
                "http://archive.ubuntu.com/ubuntu/dists/jammy/InRelease",
                "http://archive.ubuntu.com/ubuntu/dists/jammy-updates/InRelease",
                "http://archive.ubuntu.com/ubuntu/dists/jammy-security/InRelease",
            ]
        );
        let arm64 = load_str_for("ubuntu-x", UBUNTU_PORTS, Some(Arch::Aarch64)).unwrap();
        assert_eq!(arm64.arch, "aarch64");
        assert_eq!(
            urls(&arm64),
            [
                "http://ports.ubuntu.com/ubuntu-ports/dists/jammy/InRelease",
                "http://ports.ubuntu.com/ubuntu-ports/dists/jammy-updates/InRelease",
                "http://ports.ubuntu.com/ubuntu-ports/dists/jammy-security/InRelease",
            ]
        );
        // The release suite must be among the architecture's own archives.
        let err = format!(
            "{:#}",
            load_str_for(
                "ubuntu-x",
                &UBUNTU_PORTS.replace(
                    "mirror = \"http://ports.ubuntu.com/ubuntu-ports\"\narchives",
                    "archives"
                ),
                Some(Arch::Aarch64)
            )
            .unwrap_err()
        );
        assert!(
            err.contains("must be one of repo.archives' suites"),
            "{err}"
        );
    }

    /// RPM repositories: one baseurl per architecture.
    #[test]
    fn an_rpm_recipe_takes_its_architectures_baseurls() {
        let text = r#"
name = "el-x"
tarball = "EL-X"
family = "rhel"
arch = ["x86_64", "aarch64"]
[repo]
type = "rpm-md"
baseurls = ["https://mirror.example.org/9/AppStream/x86_64/os/"]
headers_package = "kernel-devel"
[repo.aarch64]
baseurls = ["https://mirror.example.org/9/AppStream/aarch64/os/"]
[builder]
image = "quay.io/centos/centos:stream9"
prepare = []
install_headers = "dnf install -y kernel-devel-{version}"
kdir = "/usr/src/kernels/{release}"
cc = "gcc"
"#;
        let baseurls = |d: Distro| match d.repo {
            Repo::RpmMd(r) => r.baseurls,
            Repo::Apt(_) => panic!("rpm-md"),
        };
        assert_eq!(
            baseurls(load_str_for("el-x", text, None).unwrap()),
            ["https://mirror.example.org/9/AppStream/x86_64/os/"]
        );
        assert_eq!(
            baseurls(load_str_for("el-x", text, Some(Arch::Aarch64)).unwrap()),
            ["https://mirror.example.org/9/AppStream/aarch64/os/"]
        );
    }

    const GOOD: &str = r#"
name = "debian-x"
tarball = "Debian-X"
family = "debian"
arch = "x86_64"
[repo]
type = "apt"
mirror = "http://deb.debian.org/debian"
suite = "bookworm"
flavours = ["amd64"]
archives = [{ mirror = "http://deb.debian.org/debian", suites = ["bookworm"] }]
[builder]
image = "debian:bookworm"
prepare = ["apt-get update"]
install_headers = "apt-get install -y linux-headers-{release}"
kdir = "/usr/src/linux-headers-{release}"
cc = "gcc-12"
"#;

    #[test]
    fn a_good_file_loads() {
        let d = load_str("debian-x", GOOD).unwrap();
        assert_eq!(d.builder.cc_for("6.1.0-1-amd64"), "gcc-12");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = format!(
            "{:#}",
            load_str(
                "debian-x",
                &GOOD.replace("arch =", "colour = 'red'\narch =")
            )
            .unwrap_err()
        );
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn missing_fields_are_named() {
        let err = format!(
            "{:#}",
            load_str("debian-x", &GOOD.replace("cc = \"gcc-12\"", "")).unwrap_err()
        );
        assert!(err.contains("missing field `cc`"), "{err}");
    }

    #[test]
    fn bad_names_are_rejected() {
        let err = format!("{:#}", load_str("debian-y", GOOD).unwrap_err());
        assert!(err.contains("must match the file name"), "{err}");
        let err = format!(
            "{:#}",
            load_str("debian-x", &GOOD.replace("Debian-X", "Debian X")).unwrap_err()
        );
        assert!(err.contains("plain file stem"), "{err}");
        let err = format!(
            "{:#}",
            load_str(
                "debian-x",
                &GOOD.replace("family = \"debian\"", "family = \"rhel\"")
            )
            .unwrap_err()
        );
        assert!(err.contains("cannot use repo type apt"), "{err}");
        let err = format!(
            "{:#}",
            load_str(
                "debian-x",
                &GOOD.replace("family = \"debian\"", "family = \"gentoo\"")
            )
            .unwrap_err()
        );
        assert!(err.contains("unknown variant `gentoo`"), "{err}");
    }

    #[test]
    fn missing_credentials_say_what_to_supply() {
        let sles = find("sles-12-sp5").unwrap();
        let Repo::RpmMd(repo) = &sles.repo else {
            panic!("sles-12-sp5 is rpm-md")
        };
        let c = repo
            .credentials
            .clone()
            .expect("SLES declares its credentials");
        let c = Credentials {
            env: format!("TOA_TEST_CREDENTIALS_{}", std::process::id()),
            ..c
        };
        let err = c.read("sles-12-sp5").unwrap_err().to_string();
        assert!(
            err.contains("SUSE Customer Center") && err.contains(&c.env),
            "{err}"
        );
        let dir = crate::testing::scratch("creds");
        // A directory where the file should be: named, with the help.
        std::env::set_var(&c.env, &dir);
        let err = format!("{:#}", c.read("sles-12-sp5").unwrap_err());
        assert!(
            err.contains(&format!(
                "{} names {}, which cannot be read",
                c.env,
                dir.display()
            )) && err.contains("SUSE Customer Center"),
            "{err}"
        );
        let file = dir.join("SCCcredentials");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scc/SCCcredentials"),
            &file,
        )
        .unwrap();
        std::env::set_var(&c.env, &file);
        let system = c.read("sles-12-sp5").unwrap();
        assert_eq!(system.username, "SCC_f93f438773944ef087a30a37af7fc0a5");
        assert_eq!(system.password, "231982b59ce961e38777c83685a5c42f");
        assert_eq!(system.system_token, None);
        assert!(
            !format!("{system:?}").contains(&system.password),
            "{system:?}"
        );
        std::fs::write(
            &file,
            "username=SCC_0123\npassword=secret\nsystem_token=abc\n",
        )
        .unwrap();
        assert_eq!(
            c.read("sles-12-sp5").unwrap().system_token.as_deref(),
            Some("abc")
        );
        std::fs::write(&file, "username=SCC_0123\n").unwrap();
        let err = c.read("sles-12-sp5").unwrap_err().to_string();
        assert!(err.contains("no username= and password="), "{err}");
        std::env::remove_var(&c.env);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compiler_rules_pick_by_release_prefix() {
        let text =
            format!("{GOOD}[[builder.compilers]]\nrelease_prefix = \"6.8.\"\ncc = \"gcc-13\"\n");
        let d = load_str("debian-x", &text).unwrap();
        assert_eq!(d.builder.cc_for("6.8.0-45-generic"), "gcc-13");
        assert_eq!(d.builder.cc_for("5.15.0-1-generic"), "gcc-12");
    }
}
