//! The EL-family and cloud recipes of issue 23 against their real-metadata
//! fixtures (`xtask/tests/fixtures/rpm/<distro>`) and the compiler their
//! kernels record (`xtask/tests/fixtures/kconfig`): kernel discovery finds
//! exactly the published kernels, the recipe picks the compiler of the
//! kernel's gcc major version, and a build renders complete commands.

use crate::builder::tests::{has, plan, CompilerScene};
use crate::builder::{BackendKind, COMPILER_MISMATCH};
use crate::kernels::Kernel;

/// One recipe's fixture: what discovery must find, the compiler the recipe
/// must pick for those kernels, and the compiler a kernel of it recorded.
struct Case {
    distro: &'static str,
    /// `(package version, repository root)` of every kernel the fixture
    /// lists, oldest first; each runs as `<version>.x86_64` (`uname -r`).
    kernels: &'static [(&'static str, &'static str)],
    cc: &'static str,
    /// `None` for 3.10 kernels, whose configs record no compiler.
    recorded: Option<Recorded>,
}

/// A kernel config fragment holding the compiler a kernel of the release
/// recorded, that kernel's release, and the gcc major version it names.
struct Recorded {
    config: &'static str,
    release: &'static str,
    gcc: u32,
}

const ROCKY_9_APPSTREAM: &str = "https://dl.rockylinux.org/pub/rocky/9/AppStream/x86_64/os";
const ROCKY_8_BASEOS: &str = "https://dl.rockylinux.org/pub/rocky/8/BaseOS/x86_64/os";
const ALMA_9_APPSTREAM: &str = "https://repo.almalinux.org/almalinux/9/AppStream/x86_64/os";
const ALMA_8_BASEOS: &str = "https://repo.almalinux.org/almalinux/8/BaseOS/x86_64/os";
const AL2023_ROOT: &str = "https://cdn.amazonlinux.com/al2023/core/guids/2e72950d9c98c42332a8cdac3c1dcc2dc43a814a10d1fc9b2a6a94df1f71b191/x86_64";
const CENTOS_8_BASEOS: &str = "https://vault.centos.org/centos/8/BaseOS/x86_64/os";
const CENTOS_7_0_OS: &str = "https://vault.centos.org/7.0.1406/os/x86_64";
const CENTOS_7_0_UPDATES: &str = "https://vault.centos.org/7.0.1406/updates/x86_64";
const CENTOS_7_1_OS: &str = "https://vault.centos.org/7.1.1503/os/x86_64";
const CENTOS_7_1_UPDATES: &str = "https://vault.centos.org/7.1.1503/updates/x86_64";

const CASES: &[Case] = &[
    Case {
        distro: "rocky-9",
        kernels: &[
            ("5.14.0-427.31.1.el9_4", ROCKY_9_APPSTREAM),
            ("5.14.0-427.35.1.el9_4", ROCKY_9_APPSTREAM),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/rocky-9-5.14.0-503.35.1.el9_5.config"),
            release: "5.14.0-503.35.1.el9_5.x86_64",
            gcc: 11,
        }),
    },
    Case {
        distro: "rocky-8",
        kernels: &[
            ("4.18.0-553.8.1.el8_10", ROCKY_8_BASEOS),
            ("4.18.0-553.16.1.el8_10", ROCKY_8_BASEOS),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/rocky-8-4.18.0-513.5.1.el8_9.config"),
            release: "4.18.0-513.5.1.el8_9.x86_64",
            gcc: 8,
        }),
    },
    Case {
        distro: "almalinux-9",
        kernels: &[
            ("5.14.0-503.11.1.el9_5", ALMA_9_APPSTREAM),
            ("5.14.0-570.12.1.el9_6", ALMA_9_APPSTREAM),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!(
                "../tests/fixtures/kconfig/almalinux-9-5.14.0-427.35.1.el9_4.config"
            ),
            release: "5.14.0-427.35.1.el9_4.x86_64",
            gcc: 11,
        }),
    },
    Case {
        distro: "almalinux-8",
        kernels: &[
            ("4.18.0-553.5.1.el8_10", ALMA_8_BASEOS),
            ("4.18.0-553.16.1.el8_10", ALMA_8_BASEOS),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/rocky-8-4.18.0-513.5.1.el8_9.config"),
            release: "4.18.0-513.5.1.el8_9.x86_64",
            gcc: 8,
        }),
    },
    Case {
        distro: "centos-8",
        kernels: &[
            ("4.18.0-348.el8", CENTOS_8_BASEOS),
            ("4.18.0-348.2.1.el8_5", CENTOS_8_BASEOS),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/centos-8-4.18.0-348.el8.config"),
            release: "4.18.0-348.el8.x86_64",
            gcc: 8,
        }),
    },
    Case {
        distro: "centos-7.0",
        kernels: &[
            ("3.10.0-123.el7", CENTOS_7_0_OS),
            ("3.10.0-123.1.2.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.4.2.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.4.4.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.6.3.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.8.1.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.9.2.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.9.3.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.13.1.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.13.2.el7", CENTOS_7_0_UPDATES),
            ("3.10.0-123.20.1.el7", CENTOS_7_0_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.1",
        kernels: &[
            ("3.10.0-229.el7", CENTOS_7_1_OS),
            ("3.10.0-229.1.2.el7", CENTOS_7_1_UPDATES),
            ("3.10.0-229.4.2.el7", CENTOS_7_1_UPDATES),
            ("3.10.0-229.7.2.el7", CENTOS_7_1_UPDATES),
            ("3.10.0-229.11.1.el7", CENTOS_7_1_UPDATES),
            ("3.10.0-229.14.1.el7", CENTOS_7_1_UPDATES),
            ("3.10.0-229.20.1.el7", CENTOS_7_1_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
];

#[test]
fn discovery_finds_the_published_kernels() {
    for case in CASES {
        let found = crate::rpm_repo::tests::fixture_kernels(case.distro).unwrap();
        let found: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|k| (k.release.as_str(), k.version.as_str(), k.suite.as_str()))
            .collect();
        let releases: Vec<String> = case
            .kernels
            .iter()
            .map(|(version, _)| format!("{version}.x86_64"))
            .collect();
        let want: Vec<(&str, &str, &str)> = case
            .kernels
            .iter()
            .zip(&releases)
            .map(|((version, root), release)| (release.as_str(), *version, *root))
            .collect();
        assert_eq!(found, want, "{}", case.distro);
    }
}

/// The recipe picks its compiler for every fixture kernel; where the kernel
/// recorded one, that compiler passes the check, and one major version off
/// the check stops the build (exit 3).
#[test]
fn the_recipe_compiler_matches_the_recorded_gcc() {
    for case in CASES {
        let d = crate::distro::find(case.distro).unwrap();
        for (version, _) in case.kernels {
            let release = format!("{version}.x86_64");
            assert_eq!(d.builder.cc_for(&release), case.cc, "{release}");
        }
        let Some(rec) = &case.recorded else {
            continue;
        };
        let cc = d.builder.cc_for(rec.release);
        assert_eq!(cc, case.cc, "{}", case.distro);
        let scene = CompilerScene::new(case.distro, rec.config).with_cc(cc, rec.gcc);
        assert_eq!(
            scene.check(rec.release, cc),
            (0, String::new()),
            "{}",
            case.distro
        );
        let wrong = CompilerScene::new(&format!("{}-wrong", case.distro), rec.config)
            .with_cc(cc, rec.gcc + 1);
        let (status, err) = wrong.check(rec.release, cc);
        assert_eq!(status, COMPILER_MISMATCH, "{}: {err}", case.distro);
        assert!(
            err.contains(&format!("was built with gcc {}", rec.gcc))
                && err.contains(&format!("is gcc {}", rec.gcc + 1)),
            "{}: {err}",
            case.distro
        );
    }
}

/// A build of every fixture kernel renders complete commands: the image,
/// the recipe's preparation, that kernel's headers package, kbuild in its
/// build directory with the recipe's compiler, and no template field left.
#[test]
fn every_fixture_kernel_renders_a_complete_build() {
    for case in CASES {
        let d = crate::distro::find(case.distro).unwrap();
        for (version, _) in case.kernels {
            let release = format!("{version}.x86_64");
            let lines = plan(
                case.distro,
                BackendKind::Docker,
                &Kernel::pinned(&release, version),
            );
            for line in &lines {
                for field in ["{release}", "{version}", "{cc}"] {
                    assert!(!line.contains(field), "{}: {line}", case.distro);
                }
            }
            has(&lines, &format!("docker pull {}", d.builder.image));
            // A step with single quotes reaches the shell line re-quoted.
            for step in d.builder.prepare.iter().filter(|s| !s.contains('\'')) {
                has(&lines, step);
            }
            has(&lines, &format!("kernel-devel-{version}"));
            has(
                &lines,
                &format!(
                    "make -C /usr/src/kernels/{release} M=/build/toa CC={}",
                    case.cc
                ),
            );
            has(&lines, &format!("kernel {release} was built with"));
        }
    }
}

/// `plan --all` lists each recipe's fixture kernels with the compiler chosen.
#[test]
fn the_offline_plan_lists_the_fixture_kernels() {
    for case in CASES {
        let d = crate::distro::find(case.distro).unwrap();
        let text = crate::plan::offline(std::slice::from_ref(&d)).unwrap();
        assert!(
            text.contains(&format!(
                "fixture xtask/tests/fixtures/rpm/{}: {} kernel(s)",
                case.distro,
                case.kernels.len()
            )),
            "{text}"
        );
        for (version, _) in case.kernels {
            let release = format!("{version}.x86_64");
            let row = text
                .lines()
                .find(|l| l.trim_start().starts_with(&release))
                .unwrap_or_else(|| panic!("{release} missing:\n{text}"));
            assert!(row.contains(version), "{row}");
            assert!(row.ends_with(&format!("cc {}", case.cc)), "{row}");
        }
    }
}
