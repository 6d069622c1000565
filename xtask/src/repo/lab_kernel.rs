//! Where the VM lab gets a release's kernel packages and the guest's
//! busybox, by the recipe's family: Debian's and Ubuntu's archives, or the
//! rpm-md repositories of the RHEL family.

use crate::distro::{Distro, Repo};
use crate::repo::debian::{KernelPackages, PackageRef};
use anyhow::{bail, Result};

/// The release whose `busybox-static` the guests of releases without one
/// run: the guest's userland is a static busybox, whatever kernel is under
/// test (the RHEL family ships no static busybox).
pub const BUSYBOX_FROM: &str = "debian-12";

/// Why the lab cannot boot `distro`'s kernels, if it cannot.
pub fn unbootable(distro: &Distro) -> Option<String> {
    match &distro.repo {
        Repo::Apt(_) => None,
        Repo::RpmMd(repo) => crate::repo::rpm::unbootable(distro.family, repo),
    }
}

/// Fails at once, before anything is built, for a recipe the lab cannot boot.
pub fn ensure_bootable(distro: &Distro) -> Result<()> {
    match unbootable(distro) {
        Some(why) => crate::report::usage_bail!("{}: {why}", distro.name),
        None => Ok(()),
    }
}

/// The packages of kernel `release` (`uname -r`) of `distro`.
pub fn for_release(distro: &Distro, release: &str) -> Result<KernelPackages> {
    match &distro.repo {
        Repo::Apt(_) => crate::repo::debian::kernel_for_release(distro, release),
        Repo::RpmMd(repo) => {
            crate::repo::rpm::kernel_rpms(distro, release)?.packages(&repo.headers_package)
        }
    }
}

/// The `busybox-static` package the guest's userland comes from.
pub fn busybox(distro: &Distro) -> Result<PackageRef> {
    match &distro.repo {
        Repo::Apt(_) => crate::repo::debian::package(distro, "busybox-static"),
        Repo::RpmMd(_) => {
            let from = crate::distro::find(BUSYBOX_FROM)?;
            if !matches!(from.repo, Repo::Apt(_)) {
                bail!("{BUSYBOX_FROM} is not an apt release");
            }
            crate::repo::debian::package(&from, "busybox-static")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_boots_debian_ubuntu_and_plain_el_kernels() {
        for name in [
            "debian-12",
            "ubuntu-22.04",
            "centos-7.9",
            "rocky-8",
            "rocky-9",
        ] {
            let d = crate::distro::find(name).unwrap();
            assert_eq!(unbootable(&d), None, "{name}");
        }
        for name in ["opensuse-leap-15.6", "sles-12-sp5", "rocky-9-rt"] {
            let d = crate::distro::find(name).unwrap();
            assert!(unbootable(&d).is_some(), "{name}");
        }
    }
}
