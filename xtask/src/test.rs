//! `cargo xtask test`: the project's test command (README, `.ci/run`).
//!
//! Formatting and clippy lints, host tests of every crate (parser, policy,
//! audit, packaging, metadata, the proxy simulator against a real kernel in a
//! namespace), the release workflow against distros/ (with actionlint), the
//! audit of the real Rust kernel objects, then the VM lab on each kernel asked
//! for.

use crate::distro::arch::Arch;
use crate::distro::Recipe;
use crate::host::needs::{self, Needs};
use crate::vm::vm_test::{Capture, Mode};
use anyhow::{Context, Result};
use std::time::Instant;

/// What the VM lab boots by default: the kernel a default install of each
/// Debian release runs after updates (5.10, 6.1, 6.12, 7.x), plus the same
/// Debian 12 kernel in the cloud-amd64 and rt-amd64 flavours, and Debian 12's
/// arm64 kernel under qemu-system-aarch64 (TCG: 46 s from boot to power-off,
/// all scenarios, measured on two shared cores).
const LAB: &[(&str, Option<&str>, Arch)] = &[
    ("debian-11", None, Arch::X86_64),
    ("debian-12", None, Arch::X86_64),
    ("debian-12", Some("cloud-amd64"), Arch::X86_64),
    ("debian-12", Some("rt-amd64"), Arch::X86_64),
    ("debian-12", None, Arch::Aarch64),
    ("debian-13", None, Arch::X86_64),
    ("debian-unstable", None, Arch::X86_64),
];

#[derive(clap::Args)]
pub struct Args {
    /// Distro release whose default kernel the VM lab boots (repeatable). Default:
    /// debian-11, -12, -13 and unstable, plus Debian 12's cloud-amd64 and rt-amd64,
    /// and Debian 12's arm64 kernel.
    #[arg(long = "distro", value_name = "NAME", value_parser = crate::distro::recipe::parse)]
    pub distros: Vec<crate::distro::Recipe>,
    /// Host tests only: no module build, no VM.
    #[arg(long)]
    pub no_vm: bool,
    /// After the distro kernels, the VM lab on the sanitizer kernel too
    /// (`vm-test --sanitizers`: Debian 12's kernel built here with KASAN and
    /// lockdep; about 25 minutes on two cores the first time, then cached).
    #[arg(long, conflicts_with = "no_vm")]
    pub sanitizers: bool,
}

impl Args {
    /// Everything the steps below use; `--no-vm` boots nothing, so it
    /// needs no repository, builder or QEMU.
    pub fn needs(&self) -> Result<Needs> {
        let host = |command: &str| {
            Needs::new(command)
                .rust()
                .tools(needs::HOST_TESTS)
                .tools(needs::CONTAINER_TEST)
                .tools(needs::LINT)
        };
        if self.no_vm {
            return Ok(host("test --no-vm"));
        }
        let all = host(if self.sanitizers {
            "test --sanitizers"
        } else {
            "test"
        })
        .tools(needs::REPOSITORY)
        .tools(needs::BUILDER)
        .tools(needs::VM)
        .tools(needs::VM_AARCH64);
        Ok(if self.sanitizers {
            all.tools(needs::KERNEL_BUILD)
        } else {
            all
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    let lab: Vec<(Recipe, Option<String>, Arch)> = if args.distros.is_empty() {
        LAB.iter()
            .map(|(d, f, a)| Ok((Recipe::named(d)?, f.map(String::from), *a)))
            .collect::<Result<_>>()?
    } else {
        args.distros
            .iter()
            .map(|d| (d.clone(), None, Arch::X86_64))
            .collect()
    };
    // A release without the architecture fails before anything slow starts.
    for (recipe, _, arch) in &lab {
        recipe.distro(Some(*arch))?;
    }
    let mut summary: Vec<(String, std::time::Duration)> = Vec::new();
    let mut step = |name: String, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        eprintln!("==> {name}");
        let start = Instant::now();
        f().with_context(|| format!("test step `{name}` failed"))?;
        summary.push((name, start.elapsed()));
        Ok(())
    };

    // Formatting and lints first: they take seconds and fail for reasons a
    // contributor fixes in seconds, before minutes of tests and VMs.
    for &(args, fix) in STATIC_CHECKS {
        step(format!("cargo {}", args.join(" ")), &mut || {
            cargo(args, fix)
        })?;
    }
    step("host tests (cargo test --workspace)".into(), &mut || {
        cargo(
            &["test", "--workspace", "--quiet"],
            "a host test failed (above)",
        )
    })?;
    step(
        "release workflow (ci --check --lint: drift, actionlint, shellcheck)".into(),
        &mut crate::release::ci::check_all,
    )?;
    step(
        format!("fuzz the Rust core ({} s)", crate::vm::fuzz::SMOKE_SECONDS),
        &mut || {
            let report = crate::vm::fuzz::fuzz(crate::vm::fuzz::SMOKE_SECONDS, false)?;
            eprintln!("    {report}");
            Ok(())
        },
    )?;
    step("audit of the Rust kernel objects".into(), &mut || {
        let objects =
            crate::objects::kmod::build_all(&crate::host::cache::cache_dir().join("kmod-objects"))?;
        for o in &objects {
            eprintln!("    {}: audit ok", o.display());
        }
        Ok(())
    })?;
    step(
        "eBPF mode in containers (container-test: docker, a cgroup of its own)".into(),
        &mut || crate::vm::container_test::run(crate::vm::container_test::Args {}),
    )?;
    if !args.no_vm {
        step(
            "benchmark smoke (bench --smoke: one short round)".into(),
            &mut || {
                crate::vm::bench::run(crate::vm::bench::Args {
                    distro: Recipe::named("debian-12")?,
                    rounds: 1,
                    window: 0.5,
                    smoke: true,
                    no_build_cost: true,
                })
            },
        )?;
        // Each kernel with toa.ko; the default kernels also in the eBPF mode,
        // with the capture path the kernel chooses and, where that is fexit,
        // again with the sock_ops fallback, so that both stay proven. The
        // eBPF object is the same on arm64; Debian 12's arm64 kernel proves
        // that auto falls back there (it cannot attach fexit).
        for (name, flavour, arch) in &lab {
            // The sock_ops boot is also a cgroup v1 host's (cgroup_v1): its
            // capture is the cgroup program, attached in toa's own cgroup2
            // mount there, and the guest checks the v1 mounts stay put.
            let runs: &[(Mode, Capture, bool)] = match (flavour, arch) {
                (None, Arch::X86_64) => &[
                    (Mode::Kmod, Capture::Auto, false),
                    (Mode::Bpf, Capture::Auto, false),
                    (Mode::Bpf, Capture::SockOps, true),
                ],
                (None, Arch::Aarch64) => &[
                    (Mode::Kmod, Capture::Auto, false),
                    (Mode::Bpf, Capture::Auto, false),
                ],
                _ => &[(Mode::Kmod, Capture::Auto, false)],
            };
            for &(mode, capture, cgroup_v1) in runs {
                let mut what = format!("VM lab on {name}");
                if let Some(f) = flavour {
                    what.push_str(&format!(" ({f})"));
                }
                if *arch != Arch::X86_64 {
                    what.push_str(&format!(" ({})", arch.name()));
                }
                if mode == Mode::Bpf {
                    what.push_str(&format!(" (eBPF mode, capture {}", capture.word()));
                    what.push_str(if cgroup_v1 { ", cgroup v1 host)" } else { ")" });
                }
                step(what, &mut || {
                    crate::vm::run_vm_test(crate::vm::vm_test::Args {
                        cgroup_v1,
                        ..lab_args(name, *arch, flavour.clone(), mode, capture)
                    })
                })?;
            }
        }
    }

    if args.sanitizers {
        step(
            "VM lab on the sanitizer kernel (KASAN, lockdep)".into(),
            &mut || {
                crate::vm::run_vm_test(crate::vm::vm_test::Args {
                    sanitizers: true,
                    ..lab_args(
                        &Recipe::named("debian-12")?,
                        Arch::X86_64,
                        None,
                        Mode::Kmod,
                        Capture::Auto,
                    )
                })
            },
        )?;
    }

    println!("\n{:<50} {:>8}", "step", "seconds");
    for (name, took) in &summary {
        println!("{name:<50} {:>8.1}", took.as_secs_f64());
    }
    println!("test: ok");
    Ok(())
}

/// The checks that need no build: the cargo arguments, and what to do when
/// one fails. Clippy covers every crate and target (tests too) and denies
/// warnings, so a lint cannot creep in as a warning nobody reads.
const STATIC_CHECKS: &[(&[&str], &str)] = &[
    (
        &["fmt", "--all", "--", "--check"],
        "the code is not formatted as rustfmt formats it (diff above): run `cargo fmt --all`",
    ),
    (
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
        "clippy found lints (above): fix them, or allow one where the lint is wrong, saying why",
    ),
];

/// `cargo <args>` in the project root; `fix` says what its failure means.
fn cargo(args: &[&str], fix: &str) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    duct::cmd(cargo, args)
        .dir(crate::host::cache::project_root())
        .run()
        .map(drop)
        .with_context(|| fix.to_string())
}

/// One VM lab run of the test command: the release's default kernel (in
/// `flavour`), every scenario, the default timeout and chaos run.
fn lab_args(
    distro: &Recipe,
    arch: Arch,
    flavour: Option<String>,
    mode: Mode,
    capture: Capture,
) -> crate::vm::vm_test::Args {
    crate::vm::vm_test::Args {
        distro: distro.clone(),
        arch: Some(arch),
        kernel: None,
        flavour,
        only: Vec::new(),
        timeout: 600,
        kvm: false,
        module: None,
        fuzz_connections: None,
        fuzz_seed: None,
        mode,
        capture,
        sanitizers: false,
        chaos: None,
        chaos_seed: None,
        chaos_tls: false,
        cgroup_v1: false,
        dry_run: false,
    }
}

#[cfg(test)]
mod tests {
    /// The README's set-up commands, in the order it gives them.
    fn readme_setup_commands() -> Vec<String> {
        let readme =
            std::fs::read_to_string(crate::host::cache::project_root().join("README.md")).unwrap();
        let setup = readme
            .split("\n## ")
            .find(|s| s.starts_with("Set up"))
            .expect("README has a Set up section");
        setup
            .split("```sh\n")
            .skip(1)
            .flat_map(|block| block.split("```").next().unwrap().lines())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn readme_gives_two_commands() {
        assert_eq!(
            readme_setup_commands(),
            ["cargo xtask build --distro debian-12", "cargo xtask test"]
        );
    }

    /// The test command fails on unformatted code and on any clippy lint in
    /// any crate or target, before the host tests.
    #[test]
    fn format_and_every_lint_are_checked() {
        let commands: Vec<String> = super::STATIC_CHECKS
            .iter()
            .map(|(args, _)| args.join(" "))
            .collect();
        assert_eq!(
            commands,
            [
                "fmt --all -- --check",
                "clippy --workspace --all-targets --quiet -- -D warnings"
            ]
        );
    }

    /// CI proves the README: `.ci/run` runs its test command and provisions nothing.
    #[test]
    fn ci_runs_the_readme_test_command_and_nothing_else() {
        let script =
            std::fs::read_to_string(crate::host::cache::project_root().join(".ci/run")).unwrap();
        let commands: Vec<&str> = script
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| !l.starts_with("set ") && !l.starts_with("cd "))
            .collect();
        assert_eq!(commands, [readme_setup_commands()[1].as_str()]);
    }
}
