//! The command line as clap reads it: every `--distro` is checked against
//! distros/, and every `--kernel` RELEASE[=VERSION] parsed, by clap itself,
//! before preflight or any command runs.

use crate::{Cli, Command};
use clap::error::ErrorKind;
use clap::Parser;

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    let mut argv = vec!["cargo xtask"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| cli.command)
}

#[test]
fn an_unknown_distro_is_a_usage_error_of_every_command_that_takes_one() {
    for command in [
        &["build", "--distro", "debian-99"][..],
        &["vm-test", "--distro", "debian-99"],
        &["stress", "--distro", "debian-99"],
        &["bench", "--distro", "debian-99"],
        &["vm-install-test", "--distro", "debian-99"],
        &["kernels", "--distro", "debian-99"],
        &["test", "--distro", "debian-12", "--distro", "debian-99"],
        &["plan", "--distro", "debian-99"],
    ] {
        let err = parse(command)
            .err()
            .unwrap_or_else(|| panic!("{command:?} parsed"));
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{command:?}");
        assert_eq!(err.exit_code(), 2, "{command:?}");
        let text = err.to_string();
        assert!(
            text.contains("unknown distro \"debian-99\"; known distros: alinux-2, ")
                && text.contains("debian-12"),
            "{command:?}: {text}"
        );
    }
}

#[test]
fn a_known_distro_arrives_as_its_parsed_recipe() {
    let Ok(Command::Build(args)) = parse(&["build", "--distro", "centos-7.2", "--dry-run"]) else {
        panic!("build --distro centos-7.2 did not parse");
    };
    assert_eq!(args.distro.name(), "centos-7.2");
    assert_eq!(args.distro.distro(None).unwrap().tarball, "CentOS-7.2");

    // The default is a recipe too, read the same way.
    let Ok(Command::Build(args)) = parse(&["build", "--dry-run"]) else {
        panic!("build did not parse");
    };
    assert_eq!(args.distro.name(), "debian-12");

    let Ok(Command::Test(args)) =
        parse(&["test", "--distro", "debian-11", "--distro", "debian-13"])
    else {
        panic!("test --distro did not parse");
    };
    let names: Vec<&str> = args.distros.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["debian-11", "debian-13"]);
}

#[test]
fn a_malformed_kernel_is_a_usage_error_and_a_pin_arrives_parsed() {
    for bad in ["=6.1.27-1", "6.1.0-9-amd64=", "6.1.0-9-amd64=6.1=1", ""] {
        let err = parse(&["build", "--kernel", bad])
            .err()
            .unwrap_or_else(|| panic!("--kernel {bad:?} parsed"));
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad:?}");
        assert!(
            err.to_string().contains("RELEASE or RELEASE=VERSION"),
            "{bad:?}: {err}"
        );
    }
    let Ok(Command::Build(args)) = parse(&[
        "build",
        "--kernel",
        "6.1.0-9-amd64=6.1.27-1",
        "--kernel",
        "6.1.0-50-amd64",
    ]) else {
        panic!("build --kernel did not parse");
    };
    let kernels: Vec<(&str, Option<&str>)> = args
        .kernels
        .iter()
        .map(|k| (k.release.as_str(), k.version.as_deref()))
        .collect();
    assert_eq!(
        kernels,
        [
            ("6.1.0-9-amd64", Some("6.1.27-1")),
            ("6.1.0-50-amd64", None)
        ]
    );
}
