//! Checks on a built toa.ko before it is packed: it must load on exactly the
//! kernel it was built for.

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSymbol};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// modinfo keys every shipped module carries.
const REQUIRED_MODINFO: &[&str] = &["license", "vermagic", "name", "version", "description"];

/// The `.modinfo` section as key → value (the last value of repeated keys).
pub fn modinfo(ko: &[u8]) -> Result<BTreeMap<String, String>> {
    Ok(crate::repo::deb::modinfo(ko)?.into_iter().collect())
}

/// Exported symbol names of a kernel's `Module.symvers`.
pub fn parse_symvers(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split('\t').nth(1))
        .map(str::to_string)
        .collect()
}

/// vermagic, modinfo fields and undefined symbols of `ko` against the kernel
/// `release` and its `Module.symvers`.
/// A release module never carries it.
pub const TEST_BUILD_KEY: &str = "toa_test_build";

pub fn check(ko_path: &Path, release: &str, symvers_path: &Path) -> Result<()> {
    check_file(ko_path, release, symvers_path, None)
}

/// [`check`] for a test-only build: its modinfo must say
/// `toa_test_build=<mark>`.
pub fn check_test_build(
    ko_path: &Path,
    release: &str,
    symvers_path: &Path,
    mark: &str,
) -> Result<()> {
    check_file(ko_path, release, symvers_path, Some(mark))
}

fn check_file(
    ko_path: &Path,
    release: &str,
    symvers_path: &Path,
    test_mark: Option<&str>,
) -> Result<()> {
    let ko = std::fs::read(ko_path).with_context(|| format!("reading {}", ko_path.display()))?;
    let symvers = std::fs::read_to_string(symvers_path)
        .with_context(|| format!("reading {}", symvers_path.display()))?;
    check_module(&ko, release, &parse_symvers(&symvers), test_mark)
        .with_context(|| format!("{} failed its checks", ko_path.display()))
}

/// `test_mark`: `None` for a release (no `toa_test_build` allowed), else the
/// value the test build's `toa_test_build` must have.
fn check_module(
    ko: &[u8],
    release: &str,
    exported: &HashSet<String>,
    test_mark: Option<&str>,
) -> Result<()> {
    let info = modinfo(ko)?;
    let mut problems = Vec::new();
    match (test_mark, info.get(TEST_BUILD_KEY)) {
        (None, Some(v)) => problems.push(format!(
            "a test-only build ({TEST_BUILD_KEY}={v}): it must never be packed as a release"
        )),
        (Some(want), have) if have.map(String::as_str) != Some(want) => problems.push(format!(
            "the test build's modinfo says {TEST_BUILD_KEY}={}, expected {want}",
            have.map_or("(nothing)", String::as_str)
        )),
        _ => {}
    }
    for key in REQUIRED_MODINFO {
        if info.get(*key).is_none_or(|v| v.is_empty()) {
            problems.push(format!("modinfo field `{key}` missing"));
        }
    }
    let vermagic_release = info
        .get("vermagic")
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("");
    if vermagic_release != release {
        problems.push(format!(
            "vermagic is for kernel `{vermagic_release}`, built for `{release}`"
        ));
    }
    let file = object::File::parse(ko)?;
    for symbol in file.symbols().filter(|s| s.is_undefined()) {
        let Ok(name) = symbol.name() else { continue };
        if !name.is_empty() && !exported.contains(name) {
            problems.push(format!(
                "undefined symbol `{name}` is not exported by {release}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// The module's ELF machine must be the kernel's architecture: a cross build
/// that silently fell back to the host compiler would still pass vermagic.
pub fn check_arch(ko: &[u8], arch: crate::distro::arch::Arch) -> Result<()> {
    let file = object::File::parse(ko).context("not an ELF module")?;
    let want = match arch {
        crate::distro::arch::Arch::X86_64 => object::Architecture::X86_64,
        crate::distro::arch::Arch::Aarch64 => object::Architecture::Aarch64,
    };
    if file.architecture() != want {
        bail!(
            "the module is {:?} code, not {}",
            file.architecture(),
            arch.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_of_another_architecture_is_refused() {
        // This test binary is an x86_64 ELF, as a module built by the host gcc would be.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if cfg!(target_arch = "x86_64") {
            check_arch(&me, crate::distro::arch::Arch::X86_64).unwrap();
            let err = check_arch(&me, crate::distro::arch::Arch::Aarch64)
                .unwrap_err()
                .to_string();
            assert_eq!(err, "the module is X86_64 code, not aarch64");
        }
    }

    #[test]
    fn symvers_names() {
        let text = "0x1234abcd\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n0x0\tnf_register_sockopt\tvmlinux\tEXPORT_SYMBOL\tNS\n";
        let names = parse_symvers(text);
        assert!(names.contains("printk"));
        assert!(names.contains("nf_register_sockopt"));
        assert_eq!(names.len(), 2);
    }

    fn ko_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        use object::write::Object;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let sec = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        obj.append_section_data(sec, modinfo, 1);
        obj.write().unwrap()
    }

    const INFO: &[u8] =
        b"license=GPL\0vermagic=6.1.0-9-amd64 SMP \0name=toa\0version=1\0description=d\0";

    #[test]
    fn a_test_build_is_never_a_release() {
        let none = HashSet::new();
        let release = ko_with_modinfo(INFO);
        check_module(&release, "6.1.0-9-amd64", &none, None).unwrap();
        let mut info = INFO.to_vec();
        info.extend_from_slice(b"toa_test_build=no-rewrite\0");
        let test = ko_with_modinfo(&info);
        let err = check_module(&test, "6.1.0-9-amd64", &none, None).unwrap_err();
        assert!(err.to_string().contains("never be packed"), "{err}");
        check_module(&test, "6.1.0-9-amd64", &none, Some("no-rewrite")).unwrap();
        let err = check_module(&release, "6.1.0-9-amd64", &none, Some("no-rewrite")).unwrap_err();
        assert!(
            err.to_string().contains("=(nothing), expected no-rewrite"),
            "{err}"
        );
    }
}
