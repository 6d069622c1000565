//! `cargo xtask kernels`: every kernel a distro release shipped, from its
//! repository metadata.

use crate::distro::kernel::{Kernel, KernelSpec};
use crate::distro::{Distro, Repo};
use crate::host::needs::{self, Needs};
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Distro release (a file stem under distros/).
    #[arg(long, value_parser = crate::distro::recipe::parse)]
    pub distro: crate::distro::Recipe,
    /// Kernel architecture, as `uname -m` prints it. Default: x86_64 (or the
    /// release's only one).
    #[arg(long, value_enum)]
    pub arch: Option<crate::distro::arch::Arch>,
    /// Print JSON (one object per kernel) instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Reads the release's repository; an architecture the recipe lacks is
    /// refused first.
    pub fn needs(&self) -> Result<Needs> {
        self.distro.distro(self.arch)?;
        Ok(Needs::new("kernels").tools(needs::REPOSITORY))
    }
}

pub fn run(args: Args) -> Result<()> {
    let distro = args.distro.distro(args.arch)?;
    let kernels = discover(&distro)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&kernels)?);
        return Ok(());
    }
    println!(
        "{:<34} {:<24} {:<20} FLAVOUR",
        "RELEASE", "VERSION", "SUITE"
    );
    for k in &kernels {
        println!(
            "{:<34} {:<24} {:<20} {}",
            k.release,
            k.version,
            or_dash(&k.suite),
            or_dash(&k.flavour)
        );
    }
    let mut flavours: Vec<&str> = kernels.iter().map(|k| k.flavour.as_str()).collect();
    flavours.sort_unstable();
    flavours.dedup();
    let counts: Vec<String> = flavours
        .iter()
        .map(|f| {
            let n = kernels.iter().filter(|k| k.flavour == *f).count();
            format!("{n} {}", or_dash(f))
        })
        .collect();
    eprintln!(
        "{}: {} kernel(s) ({})",
        distro.name,
        kernels.len(),
        counts.join(", ")
    );
    Ok(())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Every kernel of `distro`, oldest first.
pub fn discover(distro: &Distro) -> Result<Vec<Kernel>> {
    let kernels = match &distro.repo {
        Repo::Apt(_) => crate::repo::debian::kernels(distro)?,
        Repo::RpmMd(repo) => {
            crate::repo::rpm::kernels(&distro.name, distro.family, &distro.arch, repo)?
        }
    };
    if kernels.is_empty() {
        bail!("{}: its repository metadata lists no kernels", distro.name);
    }
    Ok(kernels)
}

/// The kernel whose module is a tarball's top-level toa.ko.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultKernel {
    /// `uname -r`: `6.1.0-57-amd64`.
    pub release: String,
    /// What chose it: the metapackage, `linux-image-amd64`.
    pub from: String,
}

/// The kernel a default install of the release runs after updates, and the
/// metapackage that says so; `None` where the family has no such metapackage
/// (the RHEL family and SUSE install the newest kernel: it stands in).
pub fn default_kernel(distro: &Distro) -> Result<Option<DefaultKernel>> {
    match &distro.repo {
        Repo::Apt(repo) => Ok(Some(DefaultKernel {
            release: crate::repo::debian::default_release(distro)?,
            from: format!("linux-image-{}", repo.default_flavour()),
        })),
        Repo::RpmMd(_) => Ok(None),
    }
}

/// The kernels `wanted` (by release) among `all`, or an error naming the
/// unknown ones and what is available. `RELEASE=VERSION` pins a kernel the
/// metadata does not list (or when it cannot be fetched). With nothing
/// wanted: the `latest` N, or every kernel.
pub fn select(
    distro: &Distro,
    all: &[Kernel],
    wanted: &[KernelSpec],
    latest: Option<usize>,
) -> Result<Vec<Kernel>> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for w in wanted {
        if let Some(version) = &w.version {
            out.push(Kernel::pinned(&w.release, version));
        } else if let Some(k) = all.iter().find(|k| k.release == w.release) {
            out.push(k.clone());
        } else {
            unknown.push(w.release.as_str());
        }
    }
    if !unknown.is_empty() {
        let mut known: Vec<&str> = all.iter().map(|k| k.release.as_str()).collect();
        if known.len() > 12 {
            known = known.split_off(known.len() - 12);
        }
        // A name the release does not have is the caller's mistake: exit 2.
        crate::report::usage_bail!(
            "{}: unknown kernel release(s) {}; known (newest): {}",
            distro.name,
            unknown.join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    if wanted.is_empty() {
        let n = latest.unwrap_or(all.len()).min(all.len());
        out.extend_from_slice(&all[all.len() - n..]);
    }
    Ok(out)
}

/// The kernels named on the command line, without repository metadata (a dry
/// run offline): `RELEASE=VERSION` as given; a bare release gets what the
/// release's recipe lets xtask derive. Returns the kernels and one note per
/// value that could not be derived (or was assumed).
pub fn from_recipe(distro: &Distro, wanted: &[KernelSpec]) -> Result<(Vec<Kernel>, Vec<String>)> {
    let uses_version = [&distro.builder.install_headers, &distro.builder.kdir]
        .iter()
        .any(|t| t.contains("{version}"));
    let mut kernels = Vec::new();
    let mut notes = Vec::new();
    for w in wanted {
        if let Some(version) = &w.version {
            kernels.push(Kernel::pinned(&w.release, version));
            continue;
        }
        let (release, version, note) = derive(distro, &w.release);
        if let Some(note) = note {
            notes.push(note);
        }
        match version {
            Some(version) => kernels.push(Kernel::pinned(&release, &version)),
            None if !uses_version => {
                notes.push(format!(
                    "{release}: its headers package version is not derivable offline; \
                     {}'s recipe names packages by release, so no command needs it",
                    distro.name
                ));
                kernels.push(Kernel::pinned(&release, ""));
            }
            None => bail!(
                "{}: cannot derive the package version of kernel {release} offline; \
                 name it as {release}=VERSION",
                distro.name
            ),
        }
    }
    Ok((kernels, notes))
}

/// `(release, version, note)` for a bare `--kernel` value.
fn derive(distro: &Distro, value: &str) -> (String, Option<String>, Option<String>) {
    use crate::distro::Family;
    match distro.family {
        // Packages are named by release (`linux-headers-<release>`).
        Family::Debian => (value.to_string(), None, None),
        // kernel-devel-<version>; `uname -r` is <version>.<arch>, and a
        // variant's suffix after it (`+rt`).
        Family::Rhel => {
            let default_style = crate::distro::uname::Uname::default();
            let (variant, uname) = match &distro.repo {
                crate::distro::Repo::RpmMd(r) => (r.release_suffix.as_str(), &r.uname),
                crate::distro::Repo::Apt(_) => ("", &default_style),
            };
            // The recipe's spelling undoes a release it could have produced.
            let bare = value.strip_suffix(variant);
            if let Some(version) = bare.and_then(|b| uname.version(b, &distro.arch)) {
                return (value.to_string(), Some(version), None);
            }
            // TencentOS and OpenCloudOS 8 spell uname -r without the
            // architecture: what their rule cannot undo needs its version named.
            if !uname.has_arch() {
                return (format!("{}{variant}", bare.unwrap_or(value)), None, None);
            }
            let suffix = format!(".{}{variant}", distro.arch);
            (
                format!("{value}{suffix}"),
                Some(value.to_string()),
                Some(format!(
                    "{value}: taken as package version {value}, kernel release {value}{suffix} (uname -r)"
                )),
            )
        }
        // kernel-default-devel <ver>-<rel>.<rebuild>; `uname -r` drops the
        // rebuild counter and adds the flavour.
        Family::Suse => {
            let base = value.strip_suffix("-default").unwrap_or(value);
            let release = format!("{base}-default");
            let version = format!("{base}.1");
            let note = format!(
                "{release}: the package's rebuild counter is not part of uname -r; \
                 assumed version {version} (name it as {release}=VERSION if it is another)"
            );
            (release, Some(version), Some(note))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(release: &str) -> Kernel {
        Kernel::pinned(release, "1")
    }

    #[test]
    fn dry_run_kernels_come_from_the_recipe() {
        let centos = crate::distro::find("centos-7.2").unwrap();
        let (ks, notes) = from_recipe(&centos, &["3.10.0-327.el7".parse().unwrap()]).unwrap();
        assert_eq!(
            ks,
            [Kernel::pinned("3.10.0-327.el7.x86_64", "3.10.0-327.el7")]
        );
        assert!(notes[0].contains("3.10.0-327.el7.x86_64"), "{notes:?}");
        let (ks, notes) =
            from_recipe(&centos, &["3.10.0-327.el7.x86_64".parse().unwrap()]).unwrap();
        assert_eq!(ks[0].version, "3.10.0-327.el7");
        assert!(notes.is_empty());

        let ubuntu = crate::distro::find("ubuntu-22.04").unwrap();
        let (ks, notes) = from_recipe(&ubuntu, &["5.15.0-91-generic".parse().unwrap()]).unwrap();
        assert_eq!(ks[0].release, "5.15.0-91-generic");
        assert!(notes[0].contains("no command needs it"), "{notes:?}");

        let arm = crate::distro::find_for("ubuntu-22.04", Some(crate::distro::arch::Arch::Aarch64))
            .unwrap();
        let (ks, notes) = from_recipe(&arm, &["5.15.0-181-generic".parse().unwrap()]).unwrap();
        assert_eq!(ks[0].release, "5.15.0-181-generic");
        assert!(notes[0].contains("no command needs it"), "{notes:?}");

        let sles = crate::distro::find("sles-12-sp5").unwrap();
        let (ks, notes) = from_recipe(&sles, &["4.12.14-122.37-default".parse().unwrap()]).unwrap();
        assert_eq!(
            ks,
            [Kernel::pinned("4.12.14-122.37-default", "4.12.14-122.37.1")]
        );
        assert!(notes[0].contains("rebuild counter"), "{notes:?}");
        let (ks, notes) = from_recipe(
            &sles,
            &["4.12.14-122.37-default=4.12.14-122.37.2".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(ks[0].version, "4.12.14-122.37.2");
        assert!(notes.is_empty());
    }

    #[test]
    fn releases_sort_numerically() {
        let mut v = vec![
            "3.10.0-327.3.1.el7.x86_64",
            "3.10.0-1160.el7.x86_64",
            "3.10.0-327.el7.x86_64",
            "3.10.0-514.el7.x86_64",
        ];
        v.sort_by(|a, b| crate::distro::kernel::release_cmp(a, b));
        assert_eq!(
            v,
            [
                "3.10.0-327.el7.x86_64",
                "3.10.0-327.3.1.el7.x86_64",
                "3.10.0-514.el7.x86_64",
                "3.10.0-1160.el7.x86_64"
            ]
        );
    }

    #[test]
    fn select_by_release_latest_and_pin() {
        let d = crate::distro::find("centos-7.2").unwrap();
        let all = [
            k("3.10.0-327.el7.x86_64"),
            k("3.10.0-327.3.1.el7.x86_64"),
            k("3.10.0-327.4.4.el7.x86_64"),
        ];
        assert_eq!(select(&d, &all, &[], None).unwrap(), all);
        assert_eq!(
            select(&d, &all, &[], Some(1)).unwrap(),
            [k("3.10.0-327.4.4.el7.x86_64")]
        );
        assert_eq!(select(&d, &all, &[], Some(2)).unwrap().len(), 2);
        assert_eq!(select(&d, &all, &[], Some(9)).unwrap().len(), 3);
        let one = select(&d, &all, &["3.10.0-327.el7.x86_64".parse().unwrap()], None).unwrap();
        assert_eq!(one, [k("3.10.0-327.el7.x86_64")]);
        let pinned = select(
            &d,
            &[],
            &["3.10.0-229.el7.x86_64=3.10.0-229.el7".parse().unwrap()],
            None,
        )
        .unwrap();
        assert_eq!(pinned[0].version, "3.10.0-229.el7");
        let err = select(&d, &all, &["9.9.9".parse().unwrap()], None).unwrap_err();
        assert_eq!(crate::report::status(&err), 2, "a usage error");
        let err = err.to_string();
        assert!(
            err.contains("unknown kernel release(s) 9.9.9")
                && err.contains("3.10.0-327.4.4.el7.x86_64"),
            "{err}"
        );
    }
}
