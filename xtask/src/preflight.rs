//! Provides what a command needs from the machine before any work starts.
//! Each command says what it needs (`Args::needs`, beside its `run`, in the
//! words of `host/needs.rs`); this file only checks and provides.
//!
//! Two kinds of needs: the Rust targets and components that
//! rust-toolchain.toml lists (added with rustup, which does not add them by
//! itself when `RUSTUP_AUTO_INSTALL=0`), and host tools, each with the Debian
//! package that provides it (installed with apt-get when running as root;
//! anyone else gets one message naming every missing package). It all runs
//! first, so a missing tool stops a command in its first second, not after
//! minutes of compiling.
//!
//! The decision ([`plan`], [`provision`]) reads a [`Machine`] value, not the
//! machine itself, so the tests can hand it an empty PATH or no rustup.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::host::needs::{Needs, Probe};
use crate::host::{apt_command, apt_install};

/// The `[toolchain]` table of rust-toolchain.toml.
#[derive(Debug, Default, Deserialize)]
pub struct Toolchain {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub components: Vec<String>,
}

impl Toolchain {
    pub const FILE: &'static str = "rust-toolchain.toml";

    pub fn parse(text: &str) -> Result<Toolchain> {
        #[derive(Deserialize)]
        struct File {
            toolchain: Toolchain,
        }
        Ok(toml::from_str::<File>(text)?.toolchain)
    }

    /// The project's rust-toolchain.toml.
    pub fn load() -> Result<Toolchain> {
        let path = crate::host::cache::project_root().join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The Rust installation: what rustup (or the sysroot) has.
#[derive(Debug, Clone, Default)]
pub struct RustInstall {
    /// rustup manages the toolchain, so it can add targets.
    pub rustup: bool,
    /// Installed targets: `x86_64-unknown-none`.
    pub targets: Vec<String>,
    /// Installed components as rustup lists them: `clippy-x86_64-unknown-linux-gnu`.
    pub components: Vec<String>,
}

impl RustInstall {
    fn has_component(&self, name: &str) -> bool {
        self.components
            .iter()
            .any(|c| c == name || c.strip_prefix(name).is_some_and(|r| r.starts_with('-')))
    }
}

/// What preflight sees of the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Directories searched for commands.
    pub path: Vec<PathBuf>,
    /// Where the absolute paths of [`Probe::File`] are looked up ("/" here).
    pub files_root: PathBuf,
    pub is_root: bool,
    pub rust: RustInstall,
}

impl Machine {
    /// This machine.
    pub fn this() -> Result<Machine> {
        let mut path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        path.extend(["/usr/sbin".into(), "/sbin".into()]);
        let mut machine = Machine {
            path,
            files_root: "/".into(),
            is_root: crate::host::is_root(),
            rust: RustInstall::default(),
        };
        machine.rust = machine.detect_rust()?;
        Ok(machine)
    }

    fn detect_rust(&self) -> Result<RustInstall> {
        let root = crate::host::cache::project_root();
        if let Some(rustup) = self.find("rustup") {
            // In the project root, so rustup answers for rust-toolchain.toml's toolchain.
            let list = |what: &str| -> Result<Vec<String>> {
                let out = duct::cmd!(&rustup, what, "list", "--installed")
                    .dir(&root)
                    .stderr_null()
                    .read()
                    .with_context(|| format!("running `rustup {what} list --installed`"))?;
                Ok(out.lines().map(|l| l.trim().to_string()).collect())
            };
            return Ok(RustInstall {
                rustup: true,
                targets: list("target")?,
                components: list("component")?,
            });
        }
        // Another Rust installation: targets are directories of its sysroot,
        // components are commands (rustfmt, cargo-clippy).
        let sysroot = duct::cmd!("rustc", "--print", "sysroot")
            .dir(&root)
            .read()
            .context("running `rustc --print sysroot`")?;
        let targets = std::fs::read_dir(Path::new(sysroot.trim()).join("lib/rustlib"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("lib").is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let components = ["rustfmt", "clippy"]
            .into_iter()
            .filter(|c| self.find(c).is_some() || self.find(&format!("cargo-{c}")).is_some())
            .map(String::from)
            .collect();
        Ok(RustInstall {
            rustup: false,
            targets,
            components,
        })
    }

    /// The full path of command `name`, if it is on the path.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        self.path.iter().map(|dir| dir.join(name)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    fn has(&self, probe: &Probe) -> bool {
        match probe {
            Probe::Command(name) => self.find(name).is_some(),
            Probe::File(path) => self.files_root.join(path.trim_start_matches('/')).is_file(),
            Probe::PythonModule(module) => self.find("python3").is_some_and(|python| {
                duct::cmd!(python, "-c", format!("import {module}"))
                    .stdout_null()
                    .stderr_null()
                    .unchecked()
                    .run()
                    .is_ok_and(|o| o.status.success())
            }),
        }
    }

    /// apt-get has package lists to install from (a fresh machine may have none).
    fn has_apt_lists(&self) -> bool {
        std::fs::read_dir(self.files_root.join("var/lib/apt/lists")).is_ok_and(|dir| {
            dir.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }
}

/// What is missing for a command.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub targets: Vec<String>,
    pub components: Vec<String>,
    /// Debian packages, each once, in the order the needs name them.
    pub packages: Vec<&'static str>,
}

impl Plan {
    /// `Rust targets a, b; host packages c (installed, yet its tool is not found)`.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.targets.is_empty() {
            parts.push(format!("Rust targets {}", self.targets.join(", ")));
        }
        if !self.components.is_empty() {
            parts.push(format!("Rust components {}", self.components.join(", ")));
        }
        if !self.packages.is_empty() {
            parts.push(format!(
                "host packages {} (installed, yet what they provide is not found: is another \
                 version of the tool first on PATH?)",
                self.packages.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// What `needs` lacks on `machine`.
pub fn plan(needs: &Needs, toolchain: &Toolchain, machine: &Machine) -> Plan {
    let mut plan = Plan::default();
    if needs.rust {
        plan.targets = (toolchain.targets.iter())
            .filter(|t| !machine.rust.targets.contains(t))
            .cloned()
            .collect();
        plan.components = (toolchain.components.iter())
            .filter(|c| !machine.rust.has_component(c))
            .cloned()
            .collect();
    }
    for tool in &needs.tools {
        if !tool.probes.iter().any(|p| machine.has(p)) && !plan.packages.contains(&tool.package) {
            plan.packages.push(tool.package);
        }
    }
    plan
}

/// One thing preflight does to the machine.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// `rustup target add ...` (`what` = "target") or `rustup component add ...`.
    Rustup {
        what: &'static str,
        names: Vec<String>,
    },
    /// `apt-get install`, after `apt-get update` when there are no package lists.
    AptInstall {
        update_first: bool,
        packages: Vec<&'static str>,
    },
}

/// What to do about `plan` on `machine`, or one error that names everything
/// the user has to do by hand.
pub fn provision(needs: &Needs, plan: &Plan, machine: &Machine) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    let mut by_hand = Vec::new();
    if machine.rust.rustup {
        for (what, names) in [("target", &plan.targets), ("component", &plan.components)] {
            if !names.is_empty() {
                actions.push(Action::Rustup {
                    what,
                    names: names.clone(),
                });
            }
        }
    } else {
        for (what, names) in [("targets", &plan.targets), ("components", &plan.components)] {
            if !names.is_empty() {
                by_hand.push(format!(
                    "Rust {what} {} ({}): rustup is not installed, so xtask cannot add them; \
                     install rustup (https://rustup.rs) or add them to this Rust installation",
                    names.join(", "),
                    Toolchain::FILE
                ));
            }
        }
    }
    if !plan.packages.is_empty() {
        let apt = machine.find("apt-get").is_some();
        if machine.is_root && apt {
            actions.push(Action::AptInstall {
                update_first: !machine.has_apt_lists(),
                packages: plan.packages.clone(),
            });
        } else if apt {
            by_hand.push(format!(
                "host packages {}: run as root and xtask installs them, or install them with:\n    sudo {}",
                plan.packages.join(", "),
                apt_command(&plan.packages)
            ));
        } else {
            by_hand.push(format!(
                "host packages {} (Debian names; apt-get is not available here): install them \
                 with this system's package manager",
                plan.packages.join(", ")
            ));
        }
    }
    if by_hand.is_empty() {
        return Ok(actions);
    }
    let mut message = format!("`{}` needs what this machine lacks:", needs.command);
    for line in by_hand {
        message.push_str("\n  ");
        message.push_str(&line);
    }
    bail!(message)
}

/// Provides what a command `needs` on this machine (see each command's
/// `needs`, which has already refused a usage mistake: a typo installs
/// nothing).
pub fn ensure(needs: &Needs) -> Result<()> {
    if !needs.rust && needs.tools.is_empty() {
        return Ok(());
    }
    let toolchain = if needs.rust {
        Toolchain::load()?
    } else {
        Toolchain::default()
    };
    let machine = Machine::this()?;
    let plan = plan(needs, &toolchain, &machine);
    for action in provision(needs, &plan, &machine)? {
        run(&action)?;
    }
    if plan != Plan::default() {
        let left = self::plan(needs, &toolchain, &Machine::this()?);
        if left != Plan::default() {
            bail!(
                "`{}`: still missing after provisioning: {}",
                needs.command,
                left.describe()
            );
        }
    }
    Ok(())
}

fn run(action: &Action) -> Result<()> {
    match action {
        Action::Rustup { what, names } => {
            eprintln!(
                "==> adding Rust {what}s from {}: {}",
                Toolchain::FILE,
                names.join(" ")
            );
            let mut args = vec![*what, "add"];
            args.extend(names.iter().map(String::as_str));
            duct::cmd("rustup", &args)
                .dir(crate::host::cache::project_root())
                .stdout_to_stderr()
                .run()
                .with_context(|| format!("`rustup {}` failed", args.join(" ")))?;
        }
        Action::AptInstall {
            update_first,
            packages,
        } => apt_install(packages, *update_first)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    /// A machine with nothing: no rustup targets, an empty PATH, no files.
    fn bare(is_root: bool, rustup: bool, path: Vec<PathBuf>) -> Machine {
        let empty =
            std::env::temp_dir().join(format!("toa-preflight-empty-{}", std::process::id()));
        Machine {
            path,
            files_root: empty,
            is_root,
            rust: RustInstall {
                rustup,
                targets: vec!["x86_64-unknown-linux-gnu".into()],
                components: vec![
                    "cargo-x86_64-unknown-linux-gnu".into(),
                    "rustc-x86_64-unknown-linux-gnu".into(),
                ],
            },
        }
    }

    /// A directory holding an executable `apt-get` and nothing else.
    fn apt_only() -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testing::scratch("preflight-apt");
        let apt = dir.join("apt-get");
        std::fs::write(&apt, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&apt, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn test_command() -> Command {
        Command::Test(crate::test::Args {
            distros: vec![],
            no_vm: false,
            sanitizers: false,
        })
    }

    fn project_toolchain() -> Toolchain {
        Toolchain::load().unwrap()
    }

    #[test]
    fn rust_toolchain_toml_is_read() {
        let t = Toolchain::parse(
            "[toolchain]\nchannel = \"stable\"\nprofile = \"minimal\"\n\
             components = [\"rustfmt\"]\ntargets = [\"x86_64-unknown-none\"]\n",
        )
        .unwrap();
        assert_eq!(t.targets, ["x86_64-unknown-none"]);
        assert_eq!(t.components, ["rustfmt"]);
        let project = project_toolchain();
        assert!(project.targets.contains(&"x86_64-unknown-none".to_string()));
        assert!(project
            .targets
            .contains(&"x86_64-unknown-linux-musl".to_string()));
    }

    #[test]
    fn the_test_command_on_a_bare_machine_as_root_is_provisioned() {
        let machine = bare(true, true, vec![apt_only()]);
        let needs = test_command().needs().unwrap();
        let plan = plan(&needs, &project_toolchain(), &machine);
        assert_eq!(
            plan,
            Plan {
                targets: vec![
                    "x86_64-unknown-none".into(),
                    "x86_64-unknown-linux-musl".into(),
                    "aarch64-unknown-linux-musl".into()
                ],
                components: vec!["rustfmt".into(), "clippy".into(), "rust-src".into()],
                packages: vec![
                    "cpio",
                    "util-linux",
                    "iproute2",
                    "shellcheck",
                    "clang",
                    "procps",
                    "bpftool",
                    "python3-venv",
                    "gpgv",
                    "debian-archive-keyring",
                    "debootstrap",
                    "ca-certificates",
                    "qemu-system-x86",
                    "qemu-system-arm",
                ],
            }
        );
        assert_eq!(
            provision(&needs, &plan, &machine).unwrap(),
            [
                Action::Rustup {
                    what: "target",
                    names: plan.targets.clone()
                },
                Action::Rustup {
                    what: "component",
                    names: plan.components.clone()
                },
                // No package lists under the (empty) root: update first.
                Action::AptInstall {
                    update_first: true,
                    packages: plan.packages.clone()
                },
            ]
        );
    }

    #[test]
    fn a_user_without_root_gets_one_message_naming_every_package() {
        let machine = bare(false, true, vec![apt_only()]);
        let needs = Command::Test(crate::test::Args {
            distros: vec![],
            no_vm: true,
            sanitizers: false,
        })
        .needs()
        .unwrap();
        let plan = plan(&needs, &project_toolchain(), &machine);
        let err = provision(&needs, &plan, &machine).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`cargo xtask test --no-vm` needs what this machine lacks:\n  \
             host packages cpio, util-linux, iproute2, shellcheck, clang, procps, bpftool, \
             python3-venv: run as root and xtask installs them, or install them with:\n    \
             sudo apt-get install -y --no-install-recommends cpio util-linux iproute2 shellcheck \
             clang procps bpftool python3-venv"
        );
    }

    #[test]
    fn without_rustup_the_message_names_the_targets_too() {
        let machine = bare(false, false, vec![]);
        let needs = Command::Build(crate::build::Args {
            distro: crate::distro::Recipe::named("debian-12").unwrap(),
            arch: None,
            kernels: vec![],
            latest: None,
            backend: None,
            jobs: Some(1),
            dry_run: false,
            failures: None,
        })
        .needs()
        .unwrap();
        let plan = plan(&needs, &project_toolchain(), &machine);
        let err = provision(&needs, &plan, &machine).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`cargo xtask build` needs what this machine lacks:\n  \
             Rust targets x86_64-unknown-none, x86_64-unknown-linux-musl, \
             aarch64-unknown-linux-musl (rust-toolchain.toml): \
             rustup is not installed, so xtask cannot add them; install rustup (https://rustup.rs) \
             or add them to this Rust installation\n  \
             Rust components rustfmt, clippy, rust-src (rust-toolchain.toml): rustup is not installed, so \
             xtask cannot add them; install rustup (https://rustup.rs) or add them to this Rust \
             installation\n  \
             host packages gpgv, debian-archive-keyring, debootstrap, util-linux, ca-certificates \
             (Debian names; apt-get is not available here): install them with this system's \
             package manager"
        );
    }

    #[test]
    fn a_provisioned_machine_needs_nothing() {
        let mut machine = bare(false, true, vec![]);
        let toolchain = project_toolchain();
        machine
            .rust
            .targets
            .extend(toolchain.targets.iter().cloned());
        machine.rust.components.extend([
            "rustfmt-x86_64-unknown-linux-gnu".into(),
            "clippy-x86_64-unknown-linux-gnu".into(),
            "rust-src".into(),
        ]);
        // A dry run and the commands that only read files need no host tools.
        let dry = Command::Build(crate::build::Args {
            distro: crate::distro::Recipe::named("debian-12").unwrap(),
            arch: None,
            kernels: vec![],
            latest: None,
            backend: None,
            jobs: Some(1),
            dry_run: true,
            failures: None,
        });
        let needs = dry.needs().unwrap();
        let plan = plan(&needs, &toolchain, &machine);
        assert_eq!(plan, Plan::default());
        assert_eq!(provision(&needs, &plan, &machine).unwrap(), []);
    }

    #[test]
    fn a_component_matches_rustups_name_with_the_host_triple() {
        let rust = RustInstall {
            rustup: true,
            targets: vec![],
            components: vec!["rust-src".into(), "clippy-x86_64-unknown-linux-gnu".into()],
        };
        assert!(rust.has_component("clippy"));
        assert!(rust.has_component("rust-src"));
        assert!(!rust.has_component("rustfmt"));
    }

    #[test]
    fn the_sanitizer_kernel_needs_kbuild_tools_and_no_builder() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::Cli::parse_from([&["cargo xtask", "vm-test"][..], args].concat()).command
        };
        let wanted = parse(&["--sanitizers"]).needs().unwrap();
        let packages: Vec<&str> = wanted.tools.iter().map(|t| t.package).collect();
        for package in [
            "bison",
            "flex",
            "bc",
            "libelf-dev",
            "libssl-dev",
            "qemu-system-x86",
        ] {
            assert!(packages.contains(&package), "{package}: {packages:?}");
        }
        assert!(!packages.contains(&"debootstrap"), "{packages:?}");
        // A usage mistake installs nothing; the command then says what is wrong.
        let wrong = parse(&["--sanitizers", "--arch", "aarch64"]).needs();
        assert!(wrong.is_err());
    }
}
