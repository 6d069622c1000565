//! The architecture dimension of `distros/*.toml`. A release file may list
//! several architectures; everything else in it is shared unless given per
//! architecture:
//!
//! ```toml
//! arch = ["x86_64", "aarch64"]
//! [repo]
//! flavours = { x86_64 = ["amd64", "cloud-amd64"], aarch64 = ["arm64"] }
//! [repo.aarch64]              # keys that replace [repo]'s for aarch64
//! mirror = "http://ports.ubuntu.com/ubuntu-ports"
//! archives = [{ mirror = "http://ports.ubuntu.com/ubuntu-ports", suites = ["jammy"] }]
//! [builder.aarch64]           # keys that replace [builder]'s for aarch64
//! cross_compile = "aarch64-linux-gnu-"
//! ```
//!
//! `[repo.<arch>]` is for archives that differ by architecture: Ubuntu
//! publishes arm64 on another root (ports.ubuntu.com) than amd64, and RPM
//! repositories have one baseurl per architecture.
//!
//! [`specialise`] turns such a file into the single-architecture shape the
//! rest of xtask reads (`arch = "aarch64"`, `flavours = [...]`).

use crate::distro::arch::Arch;
use anyhow::{bail, Result};
use std::path::Path;
use toml::{Table, Value};

/// Rewrites `table` for `arch` (None: the default, x86_64 where listed, else
/// the first) and returns every architecture the file lists, in its order.
pub fn specialise(table: &mut Table, arch: Option<Arch>, file: &Path) -> Result<Vec<String>> {
    let here = file.display();
    let listed: Vec<String> = match table.get("arch") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => bail!("{here}: arch lists {other}, not a name"),
            })
            .collect::<Result<_>>()?,
        Some(other) => bail!("{here}: arch must be a name or a list of names, not {other}"),
        None => bail!("{here}: missing field `arch`"),
    };
    if listed.is_empty() {
        bail!("{here}: arch lists no architecture");
    }
    for name in &listed {
        if Arch::from_name(name).is_none() {
            bail!("{here}: arch \"{name}\" is not one of {}", Arch::names());
        }
    }
    let chosen = match arch {
        Some(a) if listed.iter().any(|l| l == a.name()) => a.name().to_string(),
        Some(a) => {
            let name = file.file_stem().unwrap_or_default().to_string_lossy();
            crate::report::usage_bail!(
                "{name} is not built for {}; its architectures: {}",
                a.name(),
                listed.join(", ")
            )
        }
        None if listed.iter().any(|l| l == "x86_64") => "x86_64".to_string(),
        None => listed[0].clone(),
    };
    table.insert("arch".into(), Value::String(chosen.clone()));

    if let Some(Value::Table(repo)) = table.get_mut("repo") {
        if let Some(Value::Table(by_arch)) = repo.get("flavours") {
            let Some(list) = by_arch.get(&chosen).cloned() else {
                bail!("{here}: repo.flavours lists no {chosen} flavours");
            };
            for key in by_arch.keys() {
                if !listed.contains(key) {
                    bail!("{here}: repo.flavours has {key}, which arch does not list");
                }
            }
            repo.insert("flavours".into(), list);
        }
        let overrides = take_overrides(repo, "repo", &chosen, &listed, &here)?;
        for (key, value) in overrides {
            if key == "type" {
                bail!("{here}: repo.{chosen} cannot change the repository type");
            }
            repo.insert(key, value);
        }
    }

    if let Some(Value::Table(builder)) = table.get_mut("builder") {
        for (key, value) in take_overrides(builder, "builder", &chosen, &listed, &here)? {
            builder.insert(key, value);
        }
    }
    Ok(listed)
}

/// Removes every `<section>.<arch>` table from `section` and returns the
/// chosen architecture's (empty if it has none).
fn take_overrides(
    section: &mut Table,
    name: &str,
    chosen: &str,
    listed: &[String],
    here: &impl std::fmt::Display,
) -> Result<Table> {
    let mut overrides = Table::new();
    for a in Arch::ALL {
        match section.remove(a.name()) {
            Some(Value::Table(t)) if a.name() == chosen => overrides = t,
            Some(Value::Table(_)) if !listed.iter().any(|l| l == a.name()) => {
                bail!(
                    "{here}: {name}.{} is given, but arch does not list it",
                    a.name()
                )
            }
            Some(Value::Table(_)) | None => {}
            Some(other) => bail!("{here}: {name}.{} must be a table, not {other}", a.name()),
        }
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
arch = ["x86_64", "aarch64"]
[repo]
flavours = { x86_64 = ["amd64", "rt-amd64"], aarch64 = ["arm64"] }
[builder]
cc = "gcc-12"
install_headers = "apt-get install linux-headers-{release}"
[builder.aarch64]
cross_compile = "aarch64-linux-gnu-"
install_headers = "cross {release}"
"#;

    fn specialised(text: &str, arch: Option<Arch>) -> Result<(Table, Vec<String>)> {
        let mut table: Table = toml::from_str(text).unwrap();
        let arches = specialise(&mut table, arch, Path::new("distros/debian-x.toml"))?;
        Ok((table, arches))
    }

    #[test]
    fn the_default_is_x86_64_with_its_own_flavours_and_builder() {
        let (t, arches) = specialised(TWO, None).unwrap();
        assert_eq!(arches, ["x86_64", "aarch64"]);
        assert_eq!(t["arch"].as_str(), Some("x86_64"));
        assert_eq!(
            t["repo"]["flavours"],
            Value::Array(vec!["amd64".into(), "rt-amd64".into()])
        );
        let b = t["builder"].as_table().unwrap();
        assert!(!b.contains_key("aarch64") && !b.contains_key("cross_compile"));
        assert_eq!(
            b["install_headers"].as_str(),
            Some("apt-get install linux-headers-{release}")
        );
    }

    #[test]
    fn aarch64_takes_its_flavours_and_builder_keys() {
        let (t, _) = specialised(TWO, Some(Arch::Aarch64)).unwrap();
        assert_eq!(t["arch"].as_str(), Some("aarch64"));
        assert_eq!(t["repo"]["flavours"], Value::Array(vec!["arm64".into()]));
        let b = t["builder"].as_table().unwrap();
        assert_eq!(b["cross_compile"].as_str(), Some("aarch64-linux-gnu-"));
        assert_eq!(b["install_headers"].as_str(), Some("cross {release}"));
        assert_eq!(b["cc"].as_str(), Some("gcc-12"));
    }

    #[test]
    fn a_single_arch_file_is_unchanged() {
        let text = "arch = \"x86_64\"\n[repo]\nflavours = [\"amd64\"]\n";
        let (t, arches) = specialised(text, None).unwrap();
        assert_eq!(arches, ["x86_64"]);
        assert_eq!(t["repo"]["flavours"], Value::Array(vec!["amd64".into()]));
        let (_, arches) = specialised(text, Some(Arch::X86_64)).unwrap();
        assert_eq!(arches, ["x86_64"]);
    }

    #[test]
    fn an_arch_the_release_lacks_is_a_usage_error() {
        let err = specialised("arch = \"x86_64\"\n", Some(Arch::Aarch64)).unwrap_err();
        assert_eq!(crate::report::status(&err), 2);
        assert_eq!(
            err.to_string(),
            "debian-x is not built for aarch64; its architectures: x86_64"
        );
    }

    const PORTS: &str = r#"
arch = ["x86_64", "aarch64"]
[repo]
type = "apt"
mirror = "http://archive.ubuntu.com/ubuntu"
archives = [{ mirror = "http://archive.ubuntu.com/ubuntu", suites = ["jammy"] }]
flavours = { x86_64 = ["generic"], aarch64 = ["generic"] }
[repo.aarch64]
mirror = "http://ports.ubuntu.com/ubuntu-ports"
archives = [{ mirror = "http://ports.ubuntu.com/ubuntu-ports", suites = ["jammy"] }]
"#;

    #[test]
    fn an_architecture_takes_its_own_archives() {
        let (t, _) = specialised(PORTS, Some(Arch::Aarch64)).unwrap();
        let repo = t["repo"].as_table().unwrap();
        assert_eq!(
            repo["mirror"].as_str(),
            Some("http://ports.ubuntu.com/ubuntu-ports")
        );
        assert_eq!(
            repo["archives"][0]["mirror"].as_str(),
            Some("http://ports.ubuntu.com/ubuntu-ports")
        );
        assert!(!repo.contains_key("aarch64"));
        assert_eq!(repo["type"].as_str(), Some("apt"));
        let (t, _) = specialised(PORTS, None).unwrap();
        let repo = t["repo"].as_table().unwrap();
        assert_eq!(
            repo["mirror"].as_str(),
            Some("http://archive.ubuntu.com/ubuntu")
        );
        assert!(!repo.contains_key("aarch64"));

        let err = specialised(
            &PORTS
                .replace("\"x86_64\", \"aarch64\"", "\"x86_64\"")
                .replace(", aarch64 = [\"generic\"]", ""),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("repo.aarch64 is given, but arch does not list it"),
            "{err}"
        );
        let err = specialised(
            &PORTS.replace("[repo.aarch64]\n", "[repo.aarch64]\ntype = \"rpm-md\"\n"),
            Some(Arch::Aarch64),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot change the repository type"), "{err}");
    }

    #[test]
    fn bad_files_are_named() {
        let err = specialised("arch = [\"x86_64\", \"riscv64\"]\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("arch \"riscv64\" is not one of x86_64, aarch64"),
            "{err}"
        );
        let err = specialised(
            &TWO.replace(", aarch64 = [\"arm64\"]", ""),
            Some(Arch::Aarch64),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("repo.flavours lists no aarch64 flavours"),
            "{err}"
        );
        let err = specialised(&TWO.replace("\"x86_64\", \"aarch64\"", "\"x86_64\""), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("which arch does not list"), "{err}");
    }
}
