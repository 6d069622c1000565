//! The recipes' real-metadata fixtures under `xtask/tests/fixtures/`: copies
//! (or excerpts) of the repository metadata a distro really published, which
//! kernel discovery reads offline exactly as it reads the network.
//!
//! Layout, one directory per recipe (each says where its content comes from
//! in a README beside it):
//!
//! ```text
//! rpm/<distro>/<repository>/repomd.xml, primary.xml   (repository: the baseurl as the cache names it)
//! apt/<distro>/<suite>/binary-<arch>/Packages        (arch: Debian's name, amd64, arm64)
//! ```
//!
//! A fixture may cover only some of a recipe's repositories (suites): the
//! kernels it lists are those of the covered ones, and [`Found::missing`]
//! names the others.

use crate::distro::kernel::Kernel;
use crate::distro::{Distro, Repo};
use crate::repo::rpm;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `xtask/tests/fixtures`.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What a recipe's fixture lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The fixture directory, relative to the project root.
    pub dir: String,
    /// Every kernel discovery finds in it, oldest first.
    pub kernels: Vec<Kernel>,
    /// The recipe's repositories (suites) the fixture has no copy of.
    pub missing: Vec<String>,
}

/// The kernels `distro`'s recipe finds in its fixture; `None` when the
/// recipe (for its architecture) has no fixture.
pub fn kernels(distro: &Distro) -> Result<Option<Found>> {
    match &distro.repo {
        Repo::RpmMd(repo) => {
            let dir = root().join("rpm").join(&distro.name);
            let (repo, missing) = rpm_covered(distro, repo);
            if repo.baseurls.is_empty() {
                return Ok(None);
            }
            let kernels = rpm::kernels_with(
                &RpmFixtures { dir: dir.clone() },
                &distro.name,
                distro.family,
                &distro.arch,
                &repo,
            )
            .with_context(|| {
                format!(
                    "{}: its fixture {}",
                    distro.name,
                    crate::host::cache::relative_to_root(&dir)
                )
            })?;
            found(distro, &dir, kernels, missing).map(Some)
        }
        Repo::Apt(repo) => {
            let dir = root().join("apt").join(&distro.name);
            let (indices, missing) = apt_indices(distro, repo)?;
            if indices.is_empty() {
                return Ok(None);
            }
            let kernels = crate::repo::debian::kernels_of(&indices, &repo.flavours);
            found(distro, &dir, kernels, missing).map(Some)
        }
    }
}

/// The Packages excerpts of `repo`'s suites under `apt/<distro>/`, and the
/// suites (`<mirror> <suite>`) without one.
pub fn apt_indices(
    distro: &Distro,
    repo: &crate::distro::AptRepo,
) -> Result<(Vec<Arc<crate::repo::debian::Index>>, Vec<String>)> {
    let dir = root().join("apt").join(&distro.name);
    let arch = crate::distro::arch::Arch::from_name(&distro.arch)
        .with_context(|| format!("{}: unknown arch {}", distro.name, distro.arch))?
        .debian();
    let mut indices = Vec::new();
    let mut missing = Vec::new();
    for suite in repo.suites() {
        let file = dir
            .join(&suite.suite)
            .join(format!("binary-{arch}"))
            .join("Packages");
        if !file.is_file() {
            missing.push(format!("{} {}", suite.mirror, suite.suite));
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", crate::host::cache::relative_to_root(&file)))?;
        let index = crate::repo::debian::Index::from_packages(&suite.mirror, &suite.suite, &text)
            .with_context(|| {
            format!("parsing {}", crate::host::cache::relative_to_root(&file))
        })?;
        indices.push(Arc::new(index));
    }
    Ok((indices, missing))
}

/// `repo` with only the repositories (headers' and images') that have a
/// fixture under `rpm/<distro>/`, read without credentials, and the ones
/// left out.
pub fn rpm_covered(
    distro: &Distro,
    repo: &crate::distro::RpmRepo,
) -> (crate::distro::RpmRepo, Vec<String>) {
    let dir = root().join("rpm").join(&distro.name);
    let has = |b: &String| {
        dir.join(crate::host::cache::url_key(b.trim_end_matches('/')))
            .is_dir()
    };
    let (baseurls, mut missing): (Vec<String>, Vec<String>) =
        repo.baseurls.iter().cloned().partition(has);
    let (image_baseurls, images_missing): (Vec<String>, Vec<String>) =
        repo.image_baseurls.iter().cloned().partition(has);
    missing.extend(images_missing);
    // A fixture is a copy: it opens without the registration the real
    // repositories ask for (SLES's access tokens).
    let repo = crate::distro::RpmRepo {
        baseurls,
        image_baseurls,
        credentials: None,
        ..repo.clone()
    };
    (repo, missing)
}

fn found(distro: &Distro, dir: &Path, kernels: Vec<Kernel>, missing: Vec<String>) -> Result<Found> {
    if kernels.is_empty() {
        bail!(
            "{}: its fixture {} lists no kernel of the recipe's flavours and packages",
            distro.name,
            crate::host::cache::relative_to_root(dir)
        );
    }
    Ok(Found {
        dir: crate::host::cache::relative_to_root(dir),
        kernels,
        missing,
    })
}

/// Where xtask's fixtures' RPM repositories are read from.
pub use crate::repo::rpm::RpmFixtures;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every Debian recipe, each architecture it lists.
    const DEBIAN: &[(&str, crate::distro::arch::Arch)] = {
        use crate::distro::arch::Arch::{Aarch64, X86_64};
        &[
            ("debian-11", X86_64),
            ("debian-12", X86_64),
            ("debian-12", Aarch64),
            ("debian-13", X86_64),
            ("debian-unstable", X86_64),
            ("debian-unstable", Aarch64),
        ]
    };

    /// Each Debian recipe's fixture holds an excerpt of every suite it
    /// reads, and discovery finds the kernels of the recipe's flavours in
    /// them: not the versioned metapackages (`linux-headers-6.12-amd64`,
    /// bookworm-security), not the flavours the recipe does not list
    /// (`arm64-16k`), and a kernel published in two suites once.
    #[test]
    fn debian_fixtures_cover_every_suite_of_their_recipe() {
        for &(name, arch) in DEBIAN {
            let d = crate::distro::find_for(name, Some(arch)).unwrap();
            let f = kernels(&d)
                .unwrap()
                .unwrap_or_else(|| panic!("{name} {arch:?} has a fixture"));
            assert_eq!(f.dir, format!("xtask/tests/fixtures/apt/{name}"));
            assert!(f.missing.is_empty(), "{name} {arch:?}: {:?}", f.missing);
            let flavours = &d.debian().unwrap().flavours;
            let mut releases = std::collections::BTreeSet::new();
            for k in &f.kernels {
                assert!(flavours.contains(&k.flavour), "{name}: {}", k.release);
                assert!(
                    k.release.ends_with(&format!("-{}", k.flavour)),
                    "{name}: {} {}",
                    k.release,
                    k.flavour
                );
                assert!(releases.insert(&k.release), "{name}: {} twice", k.release);
            }
        }
        let count = |name: &str, arch| {
            let d = crate::distro::find_for(name, Some(arch)).unwrap();
            let f = kernels(&d).unwrap().unwrap();
            let found = crate::distro::kernel::found(&f.kernels);
            let releases: Vec<String> = found.iter().map(|(r, _, _)| r.to_string()).collect();
            (found.len(), releases)
        };
        use crate::distro::arch::Arch::{Aarch64, X86_64};
        // 6 ABIs of 5.10 and 5 of the 6.1 backport, 3 flavours each.
        assert_eq!(count("debian-11", X86_64).0, 33);
        let (n, releases) = count("debian-12", X86_64);
        assert_eq!(n, 37);
        assert!(releases.contains(&"6.12.118+deb12-cloud-amd64".to_string()));
        assert!(!releases.iter().any(|r| r == "6.12-amd64"), "{releases:?}");
        let (n, releases) = count("debian-12", Aarch64);
        assert_eq!(n, 42, "{releases:?}");
        assert!(
            !releases.iter().any(|r| r.ends_with("-16k")),
            "{releases:?}"
        );
        assert!(releases.contains(&"6.1.0-57-cloud-arm64".to_string()));
        // trixie's own 6.12 (release and security) and the 7.x backports.
        let (n, releases) = count("debian-13", X86_64);
        assert_eq!(n, 39);
        assert_eq!(releases.last().unwrap(), "7.3.4+deb13-rt-amd64");
        let (n, releases) = count("debian-unstable", Aarch64);
        assert_eq!(n, 3);
        assert!(
            !releases.iter().any(|r| r.ends_with("-16k")),
            "{releases:?}"
        );
    }

    /// The compiler a Debian headers package's dependency names: `gcc-12`,
    /// `gcc-14-for-host` (trixie on) or `linux-compiler-gcc-10-x86`
    /// (bullseye's 5.10, which depends on gcc-10).
    fn compiler_of(dependency: &str) -> Option<String> {
        let rest = dependency
            .strip_prefix("linux-compiler-gcc-")
            .or_else(|| dependency.strip_prefix("gcc-"))?;
        let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = &rest[major.len()..];
        let known = tail.is_empty()
            || tail == "-for-host"
            || dependency.starts_with("linux-compiler-") && ["-x86", "-arm"].contains(&tail);
        (!major.is_empty() && known).then(|| format!("gcc-{major}"))
    }

    /// Debian's headers packages depend on the compiler their kernel was
    /// built with (see [`compiler_of`]): for every
    /// kernel of every Debian fixture, the recipe picks that compiler,
    /// backports (6.12 on bookworm, 7.x on trixie) included.
    #[test]
    fn debian_recipes_pick_the_compiler_their_headers_depend_on() {
        let mut checked = 0;
        for &(name, arch) in DEBIAN {
            let d = crate::distro::find_for(name, Some(arch)).unwrap();
            let (indices, _) = apt_indices(&d, d.debian().unwrap()).unwrap();
            for k in kernels(&d).unwrap().unwrap().kernels {
                let package = format!("linux-headers-{}", k.release);
                let stanza = indices
                    .iter()
                    .filter(|i| i.suite == k.suite)
                    .flat_map(|i| i.versions(&package))
                    .find(|s| s.version == k.version)
                    .unwrap_or_else(|| panic!("{name}: {package} {}", k.version));
                let gcc: Vec<String> = crate::repo::debian::parse_depends(&stanza.depends)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| compiler_of(&r.name))
                    .collect();
                assert_eq!(gcc.len(), 1, "{name}: {package}: {}", stanza.depends);
                assert_eq!(d.builder.cc_for(&k.release), gcc[0], "{name}: {package}");
                checked += 1;
            }
        }
        assert_eq!(checked, 33 + 37 + 42 + 39 + 1 + 3);
    }

    /// Discovery reads an Ubuntu arm64 index as it reads amd64's: on a real
    /// arm64 stanza (linux-s32's headers, jammy), its flavour's kernel and
    /// nothing for the recipe's flavours.
    #[test]
    fn an_ubuntu_arm64_stanza_is_discovered_by_its_flavour() {
        let arm = crate::distro::find_for("ubuntu-22.04", Some(crate::distro::arch::Arch::Aarch64))
            .unwrap();
        let repo = arm.debian().unwrap();
        let text = std::fs::read_to_string(
            root().join("apt/stanzas/ubuntu-jammy-arm64-linux-headers-5.15.0-1034-s32"),
        )
        .unwrap();
        let index = crate::repo::debian::Index::from_packages(&repo.mirror, "jammy-updates", &text)
            .unwrap();
        let index = vec![Arc::new(index)];
        let found: Vec<(String, String, String)> =
            crate::repo::debian::kernels_of(&index, &["s32".to_string()])
                .into_iter()
                .map(|k| (k.release, k.version, k.flavour))
                .collect();
        assert_eq!(
            found,
            [(
                "5.15.0-1034-s32".to_string(),
                "5.15.0-1034.43".to_string(),
                "s32".to_string()
            )]
        );
        assert!(crate::repo::debian::kernels_of(&index, &repo.flavours).is_empty());
    }

    /// The Ubuntu recipes read their release suite's excerpt, amd64 on
    /// archive.ubuntu.com and arm64 on ports.ubuntu.com (both rebuilt from
    /// published Filename fields, see apt/README): exactly the kernel each
    /// release was published with, in the recipe's flavours (bionic's and
    /// focal's lowlatency beside generic), not the arm64 generic-64k
    /// flavour's headers, and the -updates and -security suites named as
    /// not covered.
    #[test]
    fn ubuntu_fixtures_list_each_release_kernel() {
        use crate::distro::arch::Arch::{Aarch64, X86_64};
        let archive = "http://archive.ubuntu.com/ubuntu";
        let ports = "http://ports.ubuntu.com/ubuntu-ports";
        let cases: &[(&str, crate::distro::arch::Arch, &str, &str, &[&str])] = &[
            (
                "ubuntu-18.04",
                X86_64,
                "bionic",
                "4.15.0-20.21",
                &["4.15.0-20-generic", "4.15.0-20-lowlatency"],
            ),
            (
                "ubuntu-20.04",
                X86_64,
                "focal",
                "5.4.0-26.30",
                &["5.4.0-26-generic", "5.4.0-26-lowlatency"],
            ),
            (
                "ubuntu-22.04",
                X86_64,
                "jammy",
                "5.15.0-25.25",
                &["5.15.0-25-generic"],
            ),
            (
                "ubuntu-24.04",
                X86_64,
                "noble",
                "6.8.0-31.31",
                &["6.8.0-31-generic"],
            ),
            (
                "ubuntu-20.04",
                Aarch64,
                "focal",
                "5.4.0-26.30",
                &["5.4.0-26-generic"],
            ),
            (
                "ubuntu-22.04",
                Aarch64,
                "jammy",
                "5.15.0-25.25",
                &["5.15.0-25-generic"],
            ),
            (
                "ubuntu-24.04",
                Aarch64,
                "noble",
                "6.8.0-31.31",
                &["6.8.0-31-generic"],
            ),
        ];
        for &(name, arch, suite, version, releases) in cases {
            let d = crate::distro::find_for(name, Some(arch)).unwrap();
            let f = kernels(&d)
                .unwrap()
                .unwrap_or_else(|| panic!("{name} {arch:?} has a fixture"));
            assert_eq!(f.dir, format!("xtask/tests/fixtures/apt/{name}"));
            let found: Vec<(&str, &str, &str, &str)> = f
                .kernels
                .iter()
                .map(|k| {
                    (
                        k.release.as_str(),
                        k.version.as_str(),
                        k.suite.as_str(),
                        k.flavour.as_str(),
                    )
                })
                .collect();
            let want: Vec<(&str, &str, &str, &str)> = releases
                .iter()
                .map(|r| (*r, version, suite, r.rsplit('-').next().unwrap()))
                .collect();
            assert_eq!(found, want, "{name} {arch:?}");
            let root = if arch == X86_64 { archive } else { ports };
            assert_eq!(
                f.missing,
                [
                    format!("{root} {suite}-updates"),
                    format!("{root} {suite}-security")
                ],
                "{name}"
            );
        }
        // The 64k pages flavour is in the jammy excerpt, found only by its own name.
        let d = crate::distro::find_for("ubuntu-22.04", Some(Aarch64)).unwrap();
        let text =
            std::fs::read_to_string(root().join("apt/ubuntu-22.04/jammy/binary-arm64/Packages"))
                .unwrap();
        let index = vec![Arc::new(
            crate::repo::debian::Index::from_packages(&d.debian().unwrap().mirror, "jammy", &text)
                .unwrap(),
        )];
        let k64: Vec<String> =
            crate::repo::debian::kernels_of(&index, &["generic-64k".to_string()])
                .into_iter()
                .map(|k| k.release)
                .collect();
        assert_eq!(k64, ["5.15.0-25-generic-64k"]);
    }

    #[test]
    fn a_recipe_without_fixture_says_so() {
        assert_eq!(
            kernels(&crate::distro::find("tencentos-2.4").unwrap()).unwrap(),
            None
        );
        assert_eq!(
            kernels(&crate::distro::find("opencloudos-8").unwrap()).unwrap(),
            None
        );
    }

    /// `distro`'s recipe, its rpm-md repositories and their fixtures.
    fn rpm_fixture(
        distro: &str,
    ) -> Result<(crate::distro::Distro, crate::distro::RpmRepo, RpmFixtures)> {
        let d = crate::distro::find(distro)?;
        let crate::distro::Repo::RpmMd(repo) = &d.repo else {
            bail!("{distro} is not an rpm-md release");
        };
        let repo = repo.clone();
        let fixtures = RpmFixtures {
            dir: root().join("rpm").join(distro),
        };
        Ok((d, repo, fixtures))
    }

    /// The kernels `distro`'s recipe finds in its fixtures.
    pub fn fixture_kernels(distro: &str) -> Result<Vec<Kernel>> {
        let (d, repo, fixtures) = rpm_fixture(distro)?;
        rpm::kernels_with(&fixtures, &d.name, d.family, &d.arch, &repo)
    }

    /// The image packages `distro`'s recipe finds for `release` in its fixtures.
    pub fn fixture_kernel_rpms(distro: &str, release: &str) -> Result<rpm::KernelRpms> {
        let (d, repo, fixtures) = rpm_fixture(distro)?;
        let (repo, _) = rpm_covered(&d, &repo);
        rpm::kernel_rpms_with(&fixtures, &d.name, d.family, &d.arch, &repo, release)
    }

    #[test]
    fn centos_7_9_boots_its_kernel_package() {
        let k = fixture_kernel_rpms("centos-7.9", "3.10.0-1160.92.1.el7.x86_64").unwrap();
        assert_eq!(k.version, "3.10.0-1160.92.1.el7");
        assert_eq!(k.image.package.name, "kernel");
        assert_eq!(
            k.image.url,
            "https://vault.centos.org/7.9.2009/updates/x86_64/Packages/kernel-3.10.0-1160.92.1.el7.x86_64.rpm"
        );
        assert!(k.modules.is_empty(), "EL7's kernel holds its modules");
        // The excerpt has no checksum: nothing is downloaded unverified.
        let err = format!("{:#}", k.packages("kernel-devel").unwrap_err());
        assert!(err.contains("refusing an unverified package"), "{err}");
        let err = format!(
            "{:#}",
            fixture_kernel_rpms("centos-7.9", "3.10.0-1160.99.1.el7.x86_64").unwrap_err()
        );
        assert!(
            err.contains("no kernel or kernel-core package of 3.10.0-1160.99.1"),
            "{err}"
        );
    }

    #[test]
    fn rocky_9_boots_kernel_core_from_base_os() {
        let k = fixture_kernel_rpms("rocky-9", "5.14.0-427.35.1.el9_4.x86_64").unwrap();
        assert_eq!(k.image.package.name, "kernel-core");
        assert!(k
            .image
            .url
            .starts_with("https://dl.rockylinux.org/pub/rocky/9/BaseOS/"));
        let modules: Vec<&str> = k.modules.iter().map(|m| m.package.name.as_str()).collect();
        assert_eq!(modules, ["kernel-modules-core", "kernel-modules"]);
        let mut with_sums = k.clone();
        for rpm in std::iter::once(&mut with_sums.image).chain(&mut with_sums.modules) {
            rpm.package.sha256 = Some("ab".repeat(32));
            rpm.package.size = Some(10);
        }
        let packages = with_sums.packages("kernel-devel").unwrap();
        assert_eq!(packages.headers, "kernel-devel-5.14.0-427.35.1.el9_4");
        assert_eq!(packages.modules.len(), 2);
    }

    #[test]
    fn recipes_the_lab_cannot_boot_say_why() {
        let err = format!(
            "{:#}",
            fixture_kernel_rpms("opensuse-leap-15.6", "6.4.0-150600.16-default").unwrap_err()
        );
        assert!(
            err.contains("Suse-family kernel packages are not supported"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            fixture_kernel_rpms("rocky-9-rt", "5.14.0-427.35.1.el9_4.x86_64+rt").unwrap_err()
        );
        assert!(err.contains("variant"), "{err}");
    }

    /// SLES 12 SP5's update repository, read from its fixture without the
    /// registration the real one needs: every kernel-default-devel update,
    /// each running as `<version minus its last field>-default`, oldest
    /// first; the product (GA) repository is named as not covered.
    #[test]
    fn sles_12_sp5_lists_its_update_kernels_without_credentials() {
        let d = crate::distro::find("sles-12-sp5").unwrap();
        let f = kernels(&d).unwrap().expect("sles-12-sp5 has a fixture");
        let update = "https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update";
        assert_eq!(
            f.missing,
            ["https://updates.suse.com/SUSE/Products/SLE-SERVER/12-SP5/x86_64/product/"]
        );
        let found = crate::distro::kernel::found(&f.kernels);
        assert_eq!(found.len(), 56);
        assert_eq!(
            found[0],
            ("4.12.14-122.7-default", "4.12.14-122.7.1", update)
        );
        assert_eq!(
            found[55],
            ("4.12.14-122.219-default", "4.12.14-122.219.1", update)
        );
        for (release, version, _) in &found {
            let stem = version.rsplit_once('.').unwrap().0;
            assert_eq!(*release, format!("{stem}-default"));
        }
        // Discovery itself still refuses the real repositories without them.
        let err = format!("{:#}", fixture_kernels("sles-12-sp5").unwrap_err());
        assert!(err.contains("need credentials"), "{err}");
    }

    /// TencentOS Server 3.1's kernel-devel packages, as dnf listed them
    /// with their repositories (see the fixture's README), each named by
    /// the recipe's git-tag style, oldest first.
    #[test]
    fn tencentos_3_1_lists_its_kernels_under_the_git_tag_spelling() {
        let root = "https://mirrors.tencent.com/tlinux/3.1";
        let os = format!("{root}/TencentOS/x86_64");
        let updates = format!("{root}/Updates/x86_64");
        let kernels = fixture_kernels("tencentos-3.1").unwrap();
        assert_eq!(
            crate::distro::kernel::found(&kernels),
            [
                ("5.4.32-19-0001", "5.4.32-19.0001.tl3", os.as_str()),
                ("5.4.32-19-0003", "5.4.32-19.0003.tl3", updates.as_str()),
                ("5.4.87-19-0004", "5.4.87-19.0004.tl3", updates.as_str()),
                (
                    "5.4.119-19-0009.1",
                    "5.4.119-19.0009.1.tl3",
                    updates.as_str()
                ),
            ]
        );
    }

    // Failed on the old recipe, which read update/leap/15.6/oss/: no fixture
    // (no kernel) there, and the update kernel was never found.
    #[test]
    fn leap_15_6_finds_the_update_kernels_in_the_sle_repository() {
        let kernels = fixture_kernels("opensuse-leap-15.6").unwrap();
        let found = crate::distro::kernel::found(&kernels);
        assert_eq!(
            found,
            [
                (
                    "6.4.0-150600.16-default",
                    "6.4.0-150600.16.3",
                    "https://download.opensuse.org/distribution/leap/15.6/repo/oss"
                ),
                (
                    "6.4.0-150600.23.47-default",
                    "6.4.0-150600.23.47.2",
                    "https://download.opensuse.org/update/leap/15.6/sle"
                ),
            ]
        );
    }

    #[test]
    fn centos_stream_9_lists_its_appstream_kernels() {
        let kernels = fixture_kernels("centos-stream-9").unwrap();
        let found: Vec<(&str, &str)> = kernels
            .iter()
            .map(|k| (k.release.as_str(), k.version.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("5.14.0-533.el9.x86_64", "5.14.0-533.el9"),
                ("5.14.0-536.el9.x86_64", "5.14.0-536.el9"),
                ("5.14.0-539.el9.x86_64", "5.14.0-539.el9"),
                ("5.14.0-542.el9.x86_64", "5.14.0-542.el9"),
                ("5.14.0-547.el9.x86_64", "5.14.0-547.el9"),
            ]
        );
        assert!(kernels
            .iter()
            .all(|k| k.suite == "https://mirror.stream.centos.org/9-stream/AppStream/x86_64/os"));
    }
}
