//! The EL-family and cloud recipes of issue 23 against their real-metadata
//! fixtures (`xtask/tests/fixtures/rpm/<distro>`) and the compiler their
//! kernels record (`xtask/tests/fixtures/kconfig`): kernel discovery finds
//! exactly the published kernels, the recipe picks the compiler of the
//! kernel's gcc major version, and a build renders complete commands.

use crate::build::builder::tests::{fully_rendered, has, plan, CompilerScene};
use crate::build::builder::{BackendKind, COMPILER_MISMATCH};
use crate::distro::kernel::Kernel;

/// One recipe's fixture: what discovery must find, the compiler the recipe
/// must pick for those kernels, and the compiler a kernel of it recorded.
struct Case {
    distro: &'static str,
    /// `(package version, repository root)` of every kernel the fixture
    /// lists, oldest first; each runs as `<version>.x86_64` plus the
    /// recipe's release suffix (`uname -r`).
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
const ROCKY_9_RT: &str = "https://dl.rockylinux.org/pub/rocky/9/RT/x86_64/os";
const ROCKY_8_BASEOS: &str = "https://dl.rockylinux.org/pub/rocky/8/BaseOS/x86_64/os";
const ALMA_9_APPSTREAM: &str = "https://repo.almalinux.org/almalinux/9/AppStream/x86_64/os";
const ALMA_8_BASEOS: &str = "https://repo.almalinux.org/almalinux/8/BaseOS/x86_64/os";
const AL2023_ROOT: &str = "https://cdn.amazonlinux.com/al2023/core/guids/2e72950d9c98c42332a8cdac3c1dcc2dc43a814a10d1fc9b2a6a94df1f71b191/x86_64";
const AL2_CORE_ROOT: &str = "http://amazonlinux.us-east-1.amazonaws.com/2/core/2.0/x86_64/d9eabb739ad3274f51dac6426f86e0ef8889ded0f20abc635fbf05a6663a56f7";
const AL2_5_10_ROOT: &str = "http://amazonlinux.us-east-1.amazonaws.com/2/extras/kernel-5.10/stable/x86_64/bd9e4454eecab86ce885d5d80053d73d9aed8eae887ae720cf69f35b109aac11";
const CENTOS_8_BASEOS: &str = "https://vault.centos.org/centos/8/BaseOS/x86_64/os";
const CENTOS_7_0_OS: &str = "https://vault.centos.org/7.0.1406/os/x86_64";
const CENTOS_7_0_UPDATES: &str = "https://vault.centos.org/7.0.1406/updates/x86_64";
const CENTOS_7_1_OS: &str = "https://vault.centos.org/7.1.1503/os/x86_64";
const CENTOS_7_1_UPDATES: &str = "https://vault.centos.org/7.1.1503/updates/x86_64";
const CENTOS_7_2_OS: &str = "https://vault.centos.org/7.2.1511/os/x86_64";
const CENTOS_7_2_UPDATES: &str = "https://vault.centos.org/7.2.1511/updates/x86_64";
const CENTOS_7_3_OS: &str = "https://vault.centos.org/7.3.1611/os/x86_64";
const CENTOS_7_3_UPDATES: &str = "https://vault.centos.org/7.3.1611/updates/x86_64";
const CENTOS_7_4_OS: &str = "https://vault.centos.org/7.4.1708/os/x86_64";
const CENTOS_7_4_UPDATES: &str = "https://vault.centos.org/7.4.1708/updates/x86_64";
const CENTOS_7_5_OS: &str = "https://vault.centos.org/7.5.1804/os/x86_64";
const CENTOS_7_5_UPDATES: &str = "https://vault.centos.org/7.5.1804/updates/x86_64";
const CENTOS_7_6_OS: &str = "https://vault.centos.org/7.6.1810/os/x86_64";
const CENTOS_7_6_UPDATES: &str = "https://vault.centos.org/7.6.1810/updates/x86_64";
const CENTOS_7_7_OS: &str = "https://vault.centos.org/7.7.1908/os/x86_64";
const CENTOS_7_7_UPDATES: &str = "https://vault.centos.org/7.7.1908/updates/x86_64";
const CENTOS_7_8_OS: &str = "https://vault.centos.org/7.8.2003/os/x86_64";
const CENTOS_7_8_UPDATES: &str = "https://vault.centos.org/7.8.2003/updates/x86_64";
const CENTOS_7_9_OS: &str = "https://vault.centos.org/7.9.2009/os/x86_64";
const CENTOS_7_9_UPDATES: &str = "https://vault.centos.org/7.9.2009/updates/x86_64";
const ALINUX_3_PLUS: &str = "https://mirrors.aliyun.com/alinux/3/plus/x86_64";
const ALINUX_2_PLUS: &str = "https://mirrors.aliyun.com/alinux/2.1903/plus/x86_64";

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
    // No AlmaLinux 8 kernel banner was found: Rocky 8's kernel, a rebuild of
    // the same RHEL 8 sources with the same gcc 8.5.0, stands in.
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
    Case {
        distro: "centos-7.2",
        kernels: &[
            ("3.10.0-327.el7", CENTOS_7_2_OS),
            ("3.10.0-327.3.1.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.4.4.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.4.5.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.10.1.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.13.1.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.18.2.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.22.2.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.28.2.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.28.3.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.36.1.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.36.2.el7", CENTOS_7_2_UPDATES),
            ("3.10.0-327.36.3.el7", CENTOS_7_2_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.3",
        kernels: &[
            ("3.10.0-514.el7", CENTOS_7_3_OS),
            ("3.10.0-514.2.2.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.6.1.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.6.2.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.10.2.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.16.1.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.21.1.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.21.2.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.26.1.el7", CENTOS_7_3_UPDATES),
            ("3.10.0-514.26.2.el7", CENTOS_7_3_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.4",
        kernels: &[
            ("3.10.0-693.el7", CENTOS_7_4_OS),
            ("3.10.0-693.1.1.el7", CENTOS_7_4_UPDATES),
            ("3.10.0-693.2.1.el7", CENTOS_7_4_UPDATES),
            ("3.10.0-693.2.2.el7", CENTOS_7_4_UPDATES),
            ("3.10.0-693.5.2.el7", CENTOS_7_4_UPDATES),
            ("3.10.0-693.11.1.el7", CENTOS_7_4_UPDATES),
            ("3.10.0-693.11.6.el7", CENTOS_7_4_UPDATES),
            ("3.10.0-693.17.1.el7", CENTOS_7_4_UPDATES),
            ("3.10.0-693.21.1.el7", CENTOS_7_4_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.5",
        kernels: &[
            ("3.10.0-862.el7", CENTOS_7_5_OS),
            ("3.10.0-862.2.3.el7", CENTOS_7_5_UPDATES),
            ("3.10.0-862.3.2.el7", CENTOS_7_5_UPDATES),
            ("3.10.0-862.3.3.el7", CENTOS_7_5_UPDATES),
            ("3.10.0-862.6.3.el7", CENTOS_7_5_UPDATES),
            ("3.10.0-862.9.1.el7", CENTOS_7_5_UPDATES),
            ("3.10.0-862.11.6.el7", CENTOS_7_5_UPDATES),
            ("3.10.0-862.14.4.el7", CENTOS_7_5_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.6",
        kernels: &[
            ("3.10.0-957.el7", CENTOS_7_6_OS),
            ("3.10.0-957.1.3.el7", CENTOS_7_6_UPDATES),
            ("3.10.0-957.5.1.el7", CENTOS_7_6_UPDATES),
            ("3.10.0-957.10.1.el7", CENTOS_7_6_UPDATES),
            ("3.10.0-957.12.1.el7", CENTOS_7_6_UPDATES),
            ("3.10.0-957.12.2.el7", CENTOS_7_6_UPDATES),
            ("3.10.0-957.21.2.el7", CENTOS_7_6_UPDATES),
            ("3.10.0-957.21.3.el7", CENTOS_7_6_UPDATES),
            ("3.10.0-957.27.2.el7", CENTOS_7_6_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.7",
        kernels: &[
            ("3.10.0-1062.el7", CENTOS_7_7_OS),
            ("3.10.0-1062.1.1.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.1.2.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.4.1.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.4.2.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.4.3.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.7.1.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.9.1.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.12.1.el7", CENTOS_7_7_UPDATES),
            ("3.10.0-1062.18.1.el7", CENTOS_7_7_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.8",
        kernels: &[
            ("3.10.0-1127.el7", CENTOS_7_8_OS),
            ("3.10.0-1127.8.2.el7", CENTOS_7_8_UPDATES),
            ("3.10.0-1127.10.1.el7", CENTOS_7_8_UPDATES),
            ("3.10.0-1127.13.1.el7", CENTOS_7_8_UPDATES),
            ("3.10.0-1127.18.2.el7", CENTOS_7_8_UPDATES),
            ("3.10.0-1127.19.1.el7", CENTOS_7_8_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    Case {
        distro: "centos-7.9",
        kernels: &[
            ("3.10.0-1160.el7", CENTOS_7_9_OS),
            ("3.10.0-1160.11.1.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.15.2.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.21.1.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.36.2.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.41.1.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.42.2.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.49.1.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.59.1.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.66.1.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.71.1.el7", CENTOS_7_9_UPDATES),
            ("3.10.0-1160.92.1.el7", CENTOS_7_9_UPDATES),
        ],
        cc: "gcc",
        recorded: None,
    },
    // The mirror list names the root the kernels are found in.
    Case {
        distro: "amazonlinux-2023",
        kernels: &[
            ("6.1.102-108.177.amzn2023", AL2023_ROOT),
            ("6.1.109-118.189.amzn2023", AL2023_ROOT),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!(
                "../tests/fixtures/kconfig/amazonlinux-2023-6.1.102-108.177.config"
            ),
            release: "6.1.102-108.177.amzn2023.x86_64",
            gcc: 11,
        }),
    },
    Case {
        distro: "amazonlinux-2",
        kernels: &[
            ("4.14.285-215.501.amzn2", AL2_CORE_ROOT),
            ("4.14.287-215.504.amzn2", AL2_CORE_ROOT),
            ("4.14.290-217.505.amzn2", AL2_CORE_ROOT),
        ],
        cc: "gcc",
        recorded: None,
    },
    // Built with gcc10-gcc, not the release's gcc 7.
    Case {
        distro: "amazonlinux-2-kernel-5.10",
        kernels: &[
            ("5.10.126-117.518.amzn2", AL2_5_10_ROOT),
            ("5.10.130-118.517.amzn2", AL2_5_10_ROOT),
            ("5.10.135-122.509.amzn2", AL2_5_10_ROOT),
        ],
        cc: "gcc10-gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/amazonlinux-2-5.10.147-133.644.config"),
            release: "5.10.147-133.644.amzn2.x86_64",
            gcc: 10,
        }),
    },
    // The real-time variant: the RT repository's kernel-rt-devel, run as +rt.
    Case {
        distro: "rocky-9-rt",
        kernels: &[
            ("5.14.0-427.31.1.el9_4", ROCKY_9_RT),
            ("5.14.0-427.35.1.el9_4", ROCKY_9_RT),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/rocky-9-5.14.0-503.35.1.el9_5.config"),
            release: "5.14.0-503.35.1.el9_5.x86_64",
            gcc: 11,
        }),
    },
    Case {
        distro: "alinux-3",
        kernels: &[
            ("5.10.134-15.al8", ALINUX_3_PLUS),
            ("5.10.134-15.1.al8", ALINUX_3_PLUS),
            ("5.10.134-15.2.al8", ALINUX_3_PLUS),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/alinux-3-5.10.134-18.al8.config"),
            release: "5.10.134-18.al8.x86_64",
            gcc: 10,
        }),
    },
    // Built with the release's own gcc 4.8.5, whose major version is 4.
    Case {
        distro: "alinux-2",
        kernels: &[
            ("4.19.91-27.5.al7", ALINUX_2_PLUS),
            ("4.19.91-27.6.al7", ALINUX_2_PLUS),
        ],
        cc: "gcc",
        recorded: Some(Recorded {
            config: include_str!("../tests/fixtures/kconfig/alinux-2-4.19.91-23.al7.config"),
            release: "4.19.91-23.al7.x86_64",
            gcc: 4,
        }),
    },
];

/// `uname -r` of `distro`'s kernel of package version `version`.
fn release_of(distro: &str, version: &str) -> String {
    let d = crate::distro::find(distro).unwrap();
    let crate::distro::Repo::RpmMd(repo) = &d.repo else {
        panic!("{distro} is an rpm-md release");
    };
    format!("{version}.x86_64{}", repo.release_suffix)
}

#[test]
fn discovery_finds_the_published_kernels() {
    for case in CASES {
        let found = crate::repo::fixtures::tests::fixture_kernels(case.distro).unwrap();
        let found = crate::distro::kernel::found(&found);
        let releases: Vec<String> = case
            .kernels
            .iter()
            .map(|(version, _)| release_of(case.distro, version))
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
            let release = release_of(case.distro, version);
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
        let crate::distro::Repo::RpmMd(repo) = &d.repo else {
            panic!("{} is an rpm-md release", case.distro);
        };
        for (version, _) in case.kernels {
            let release = release_of(case.distro, version);
            let lines = plan(
                case.distro,
                BackendKind::Docker,
                &Kernel::pinned(&release, version),
            );
            fully_rendered(&lines, &format!("{}: ", case.distro));
            has(&lines, &format!("docker pull {}", d.builder.image));
            // A step with single quotes reaches the shell line re-quoted.
            for step in d.builder.prepare.iter().filter(|s| !s.contains('\'')) {
                has(&lines, step);
            }
            has(&lines, &format!("{}-{version}", repo.headers_package));
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
        let text = crate::release::plan::offline(std::slice::from_ref(&d)).unwrap();
        assert!(
            text.contains(&format!(
                "fixture xtask/tests/fixtures/rpm/{}: {} kernel(s)",
                case.distro,
                case.kernels.len()
            )),
            "{text}"
        );
        for (version, _) in case.kernels {
            let release = release_of(case.distro, version);
            let row = text
                .lines()
                .find(|l| l.trim_start().starts_with(&release))
                .unwrap_or_else(|| panic!("{release} missing:\n{text}"));
            assert!(row.contains(version), "{row}");
            assert!(row.ends_with(&format!("cc {}", case.cc)), "{row}");
        }
    }
}

/// `plan --all` lists the Ubuntu fixture kernels with the recipe's compiler
/// for their series (on arm64 cross-prefixed by the builder, see builder.rs).
#[test]
fn the_offline_plan_lists_the_ubuntu_fixture_kernels() {
    use crate::distro::arch::Arch::{Aarch64, X86_64};
    for (name, arch, release, cc, count) in [
        ("ubuntu-18.04", X86_64, "4.15.0-20-generic", "gcc-7", 2),
        ("ubuntu-20.04", X86_64, "5.4.0-26-generic", "gcc-9", 2),
        ("ubuntu-22.04", X86_64, "5.15.0-25-generic", "gcc-11", 1),
        ("ubuntu-24.04", X86_64, "6.8.0-31-generic", "gcc-13", 1),
        ("ubuntu-20.04", Aarch64, "5.4.0-26-generic", "gcc-9", 1),
        ("ubuntu-22.04", Aarch64, "5.15.0-25-generic", "gcc-11", 1),
        ("ubuntu-24.04", Aarch64, "6.8.0-31-generic", "gcc-13", 1),
    ] {
        let d = crate::distro::find_for(name, Some(arch)).unwrap();
        let text = crate::release::plan::offline(std::slice::from_ref(&d)).unwrap();
        let cross = match arch {
            Aarch64 => " (cross: CROSS_COMPILE=aarch64-linux-gnu-)",
            _ => "",
        };
        assert!(
            text.contains(&format!(
                "{name} {}: image {}{cross}\n",
                d.arch, d.builder.image
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "  fixture xtask/tests/fixtures/apt/{name}: {count} kernel(s)\n"
            )),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(release))
            .unwrap_or_else(|| panic!("{release} missing:\n{text}"));
        assert!(row.contains(" generic "), "{row}");
        assert!(row.ends_with(&format!("cc {cc}")), "{row}");
    }
}

/// Every kernel the fixtures of two recipes outside [`CASES`] list renders
/// a complete build:
/// - SLES 12 SP5: both headers packages at that version (`--oldpackage`:
///   zypper would not go back from a newer one), kbuild through the `build`
///   link kernel-default-devel owns. 4.12 configs record no compiler (the
///   122.54 config of a SLES 12 SP5 system has no CONFIG_GCC_VERSION), so
///   the recipe's `gcc`, SLE 12's system compiler, builds them;
/// - TencentOS Server 3.1: the package version dnf listed, kbuild in the
///   tree named by the git-tag spelling.
#[test]
fn every_sles_and_tencentos_fixture_kernel_renders_a_complete_build() {
    type Lines = fn(&Kernel) -> [String; 2];
    let cases: [(&str, usize, Lines); 2] = [
        ("sles-12-sp5", 56, |k| {
            let v = &k.version;
            [
                format!("zypper --non-interactive install --oldpackage kernel-default-devel-{v} kernel-devel-{v}"),
                format!("make -C /lib/modules/{}/build M=/build/toa CC=gcc", k.release),
            ]
        }),
        ("tencentos-3.1", 4, |k| {
            [
                format!("dnf install -y kernel-devel-{}'", k.version),
                format!("make -C /usr/src/kernels/{} M=/build/toa CC=gcc", k.release),
            ]
        }),
    ];
    for (distro, count, want) in cases {
        let d = crate::distro::find(distro).unwrap();
        let found = crate::repo::fixtures::kernels(&d).unwrap().unwrap();
        assert_eq!(found.kernels.len(), count, "{distro}");
        for k in &found.kernels {
            let lines = plan(distro, BackendKind::Docker, k);
            for line in want(k) {
                has(&lines, &line);
            }
            fully_rendered(&lines, &format!("{distro}: "));
        }
    }
}

/// A copy of amazonlinux-2023's fixture whose mirror list reads `list`.
fn al2023_with_mirror_list(case: &str, list: &str) -> anyhow::Result<Vec<Kernel>> {
    let src = crate::repo::fixtures::root().join("rpm/amazonlinux-2023");
    let dir = crate::testing::scratch(&format!("mirror-list-{case}"));
    for entry in std::fs::read_dir(&src).unwrap() {
        let from = entry.unwrap().path();
        if !from.is_dir() {
            continue;
        }
        let to = dir.join(from.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for file in std::fs::read_dir(&from).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
        }
    }
    let list_dir = dir.join("cdn.amazonlinux.com_al2023_core_mirrors_latest_x86_64_mirror.list");
    std::fs::write(list_dir.join("mirror.list"), list).unwrap();
    let d = crate::distro::find("amazonlinux-2023").unwrap();
    let crate::distro::Repo::RpmMd(repo) = &d.repo else {
        panic!("amazonlinux-2023 is an rpm-md release");
    };
    let found = crate::repo::rpm::kernels_with(
        &crate::repo::fixtures::RpmFixtures { dir: dir.clone() },
        &d.name,
        d.family,
        &d.arch,
        repo,
    );
    let _ = std::fs::remove_dir_all(&dir);
    found
}

#[test]
fn a_mirror_list_root_gets_the_architecture_and_an_empty_list_is_an_error() {
    let kernels = al2023_with_mirror_list(
        "basearch",
        &format!("\n{}/$basearch/\n", AL2023_ROOT.trim_end_matches("/x86_64")),
    )
    .unwrap();
    assert_eq!(kernels.len(), 2);
    assert!(
        kernels.iter().all(|k| k.suite == AL2023_ROOT),
        "{kernels:?}"
    );

    let err = format!(
        "{:#}",
        al2023_with_mirror_list("empty", "\n\n").unwrap_err()
    );
    assert!(
        err.contains("amazonlinux-2023: mirror list https://cdn.amazonlinux.com/al2023/core/mirrors/latest/x86_64/mirror.list names no repository URL"),
        "{err}"
    );
}

/// A real-time kernel is named with its +rt suffix everywhere a kernel is:
/// discovery, the offline `--kernel` value, the build directory.
#[test]
fn rocky_9_rt_kernels_run_as_plus_rt() {
    let found = crate::repo::fixtures::tests::fixture_kernels("rocky-9-rt").unwrap();
    assert_eq!(found[1].release, "5.14.0-427.35.1.el9_4.x86_64+rt");
    assert_eq!(found[1].version, "5.14.0-427.35.1.el9_4");

    let d = crate::distro::find("rocky-9-rt").unwrap();
    let (kernels, notes) = crate::repo::kernels::from_recipe(
        &d,
        &["5.14.0-427.35.1.el9_4.x86_64+rt".parse().unwrap()],
    )
    .unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(kernels[0].release, "5.14.0-427.35.1.el9_4.x86_64+rt");
    assert_eq!(kernels[0].version, "5.14.0-427.35.1.el9_4");

    let lines = plan("rocky-9-rt", BackendKind::Docker, &kernels[0]);
    has(
        &lines,
        "dnf install -y kernel-rt-devel-5.14.0-427.35.1.el9_4'",
    );
    has(
        &lines,
        "make -C /usr/src/kernels/5.14.0-427.35.1.el9_4.x86_64+rt M=/build/toa CC=gcc",
    );
}

/// CentOS Stream 9's kernel-devel packages declare the release they are for
/// (`kernel-devel-uname-r`); discovery takes it, and it is what the RHEL
/// rule spells (real metadata).
#[test]
fn the_declared_uname_is_the_release() {
    let d = crate::distro::find("centos-stream-9").unwrap();
    let crate::distro::Repo::RpmMd(repo) = &d.repo else {
        panic!("centos-stream-9 is rpm-md")
    };
    let dir = crate::repo::fixtures::root()
        .join("rpm/centos-stream-9/mirror.stream.centos.org_9-stream_AppStream_x86_64_os");
    let xml = std::fs::read_to_string(dir.join("primary.xml")).unwrap();
    let pkgs = crate::repo::rpm::parse_primary(&xml, "kernel-devel").unwrap();
    assert_eq!(pkgs.len(), 5);
    for p in &pkgs {
        let declared = p.uname_r.clone().expect("kernel-devel-uname-r");
        assert_eq!(declared, format!("{}-{}.{}", p.ver, p.rel, p.arch));
        let k = crate::repo::rpm::kernel_of(d.family, repo, p).unwrap();
        assert_eq!(k.release, declared);
    }
}

/// Tencent's releases spell `uname -r` their own ways; each recipe turns a
/// published running kernel back into the package it came from and builds
/// in the directory that package installs (`/usr/src/kernels/<uname -r>`).
#[test]
fn tencent_kernels_render_under_their_own_spelling() {
    for (distro, release, command) in [
        // Older spec: the git tag (github.com/freelw/linux_learn_diary).
        (
            "tencentos-3.1",
            "5.4.119-19-0009.1",
            "dnf install -y kernel-devel-5.4.119-19.0009.1.tl3'",
        ),
        // Spec template: version-release without the dist tag (OpenCloudOS's FAQ).
        (
            "opencloudos-8",
            "5.4.119-19.0009.14",
            "dnf install -y kernel-devel-5.4.119-19.0009.14.oc8'",
        ),
        (
            "tencentos-2.4",
            "4.14.105-19-0012",
            "yum install -y kernel-devel-4.14.105-19.0012.tl2'",
        ),
        // The usual shape (OpenCloudOS 9.4's kernel).
        (
            "opencloudos-9",
            "6.6.117-45.oc9.x86_64",
            "dnf install -y kernel-devel-6.6.117-45.oc9'",
        ),
    ] {
        let d = crate::distro::find(distro).unwrap();
        let (kernels, notes) =
            crate::repo::kernels::from_recipe(&d, &[release.parse().unwrap()]).unwrap();
        assert!(notes.is_empty(), "{distro}: {notes:?}");
        assert_eq!(kernels[0].release, release, "{distro}");
        let lines = plan(distro, BackendKind::Docker, &kernels[0]);
        has(&lines, command);
        has(
            &lines,
            &format!("make -C /usr/src/kernels/{release} M=/build/toa CC=gcc"),
        );
    }
    // tencentos-3.1 mixes both spellings: a template kernel's name is not
    // one its git-tag style can undo, so the version must be named.
    let d = crate::distro::find("tencentos-3.1").unwrap();
    let err = crate::repo::kernels::from_recipe(&d, &["5.4.119-19.0009.14".parse().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("name it as 5.4.119-19.0009.14=VERSION"),
        "{err}"
    );
    let (kernels, _) = crate::repo::kernels::from_recipe(
        &d,
        &["5.4.119-19.0009.14=5.4.119-19.0009.14.tl3".parse().unwrap()],
    )
    .unwrap();
    has(
        &plan("tencentos-3.1", BackendKind::Docker, &kernels[0]),
        "dnf install -y kernel-devel-5.4.119-19.0009.14.tl3'",
    );
}
