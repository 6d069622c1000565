//! Debian archive metadata: the signed `InRelease`, the `Packages` index it
//! vouches for, and the kernel packages of a suite.
//!
//! Chain of trust: `InRelease` is verified with `gpgv` against the Debian
//! archive keyring when both are installed (a bad signature fails closed).
//! Without them, `InRelease` is fetched over HTTPS instead, so the chain is
//! anchored in the TLS certificate of the mirror. `Packages.gz` must match
//! the sha256 and size that `InRelease` lists, and every `.deb` must match
//! the sha256 and size that `Packages` lists.

use crate::distro::Distro;
use crate::host::gpgv::{gpgv_verify, have_gpgv};
use anyhow::{bail, Context, Result};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// One binary package as the index describes it, ready to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRef {
    pub name: String,
    pub version: String,
    /// `<mirror>/<Filename>`.
    pub url: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl PackageRef {
    /// What the download must match.
    pub fn expected(&self) -> crate::repo::download::Expected {
        crate::repo::download::Expected {
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }

    /// The file name of the `.deb` (last component of its URL).
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    /// Download (or reuse from the cache) this package; returns the `.deb`
    /// (or the `.rpm`, for kernels of the RPM family).
    pub fn fetch(&self) -> Result<PathBuf> {
        let kind = if self.file_name().ends_with(".rpm") {
            "rpms"
        } else {
            "debs"
        };
        let rel = Path::new(kind).join(self.file_name());
        crate::repo::download::fetch(&self.url, Some(self.expected()), rel)
    }
}

/// The newest kernel of a suite: what to boot and what to build against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackages {
    /// `uname -r`, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// Package version, e.g. `6.1.176-1`.
    pub version: String,
    /// The package holding vmlinuz (`linux-image-<release>-unsigned`, or
    /// `linux-binary-<release>` where the kernel is split).
    pub image: PackageRef,
    /// The packages holding the modules that are not in `image`
    /// (`linux-modules-<release>`; EL9's `kernel-modules-core` and
    /// `kernel-modules`), searched after it.
    pub modules: Vec<PackageRef>,
    /// Package name of the headers: `linux-headers-<release>`.
    pub headers: String,
}

/// The kernel a default install of the release runs after updates: the one
/// the newest `linux-image-<default flavour>` of the suites it follows
/// depends on (backports are opt-in and do not count).
pub fn default_kernel(distro: &Distro) -> Result<KernelPackages> {
    let release = default_release(distro)?;
    kernel_for_release(distro, &release)
}

/// `uname -r` of [`default_kernel`], from the metadata alone.
pub fn default_release(distro: &Distro) -> Result<String> {
    let repo = distro.debian()?;
    let mut indices = Vec::new();
    for suite in repo.suites().iter().filter(|s| s.followed_by_default()) {
        indices.push(index_of(distro, suite)?);
    }
    default_release_in(&indices, repo.default_flavour())
        .with_context(|| format!("{}: the default install's kernel", distro.name))
}

/// [`default_release`] on parsed indices.
pub fn default_release_in(indices: &[Arc<Index>], flavour: &str) -> Result<String> {
    let meta = format!("linux-image-{flavour}");
    let newest = indices
        .iter()
        .filter_map(|index| Some((index, index.newest(&meta)?)))
        .max_by(|a, b| version_cmp(&a.1.version, &b.1.version));
    let Some((index, stanza)) = newest else {
        let wheres: Vec<String> = indices.iter().map(|i| i.where_()).collect();
        bail!("metapackage \"{meta}\" not found in {}", wheres.join(", "));
    };
    let suffix = format!("-{flavour}");
    let dep = parse_depends(&stanza.depends)
        .into_iter()
        .flatten()
        .map(|d| d.name)
        .find(|name| {
            name.strip_prefix("linux-image-").is_some_and(|r| {
                r.starts_with(|c: char| c.is_ascii_digit())
                    && r.trim_end_matches("-unsigned").ends_with(&suffix)
            })
        })
        .with_context(|| {
            format!(
                "\"{meta}\" {} in {} depends on no linux-image-<release>{suffix} (Depends: {})",
                stanza.version,
                index.where_(),
                stanza.depends
            )
        })?;
    Ok(dep
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned")
        .to_string())
}

/// The newest version of package `name` in the distro's suite.
pub fn package(distro: &Distro, name: &str) -> Result<PackageRef> {
    let index = index(distro)?;
    index.package(name)
}

/// The parsed `Packages` index of one suite/component/architecture.
#[derive(Debug)]
pub struct Index {
    pub mirror: String,
    pub suite: String,
    /// Every stanza, by package name (several versions can coexist).
    by_name: HashMap<String, Vec<Stanza>>,
}

/// The fields of a `Packages` stanza that xtask uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub source: String,
    pub depends: String,
    pub pre_depends: String,
    pub provides: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

impl Index {
    pub fn from_packages(mirror: &str, suite: &str, text: &str) -> Result<Index> {
        let mut by_name: HashMap<String, Vec<Stanza>> = HashMap::new();
        for stanza in parse_packages(text)? {
            by_name
                .entry(stanza.package.clone())
                .or_default()
                .push(stanza);
        }
        Ok(Index {
            mirror: mirror.trim_end_matches('/').to_string(),
            suite: suite.to_string(),
            by_name,
        })
    }

    /// The stanza of the newest version of `name`, if any.
    pub fn newest(&self, name: &str) -> Option<&Stanza> {
        self.by_name
            .get(name)?
            .iter()
            .max_by(|a, b| version_cmp(&a.version, &b.version))
    }

    /// Every version of `name` the index lists.
    pub fn versions(&self, name: &str) -> &[Stanza] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn where_(&self) -> String {
        format!(
            "suite \"{}\" of {} (main/binary-amd64)",
            self.suite, self.mirror
        )
    }

    pub fn package(&self, name: &str) -> Result<PackageRef> {
        match self.newest(name) {
            Some(stanza) => self.package_ref(stanza),
            None => bail!("package \"{name}\" not found in {}", self.where_()),
        }
    }

    pub(crate) fn package_ref(&self, s: &Stanza) -> Result<PackageRef> {
        if s.filename.is_empty() || s.sha256.len() != 64 || s.size == 0 {
            bail!(
                "package \"{}\" {} in {} has no Filename/Size/SHA256",
                s.package,
                s.version,
                self.where_()
            );
        }
        if s.filename.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!(
                "package \"{}\" has a suspicious Filename \"{}\"",
                s.package,
                s.filename
            );
        }
        Ok(PackageRef {
            name: s.package.clone(),
            version: s.version.clone(),
            url: format!("{}/{}", self.mirror, s.filename),
            size: s.size,
            sha256: s.sha256.to_ascii_lowercase(),
        })
    }
}

/// The newest kernel of one parsed index, by its `linux-headers-<flavour>`
/// metapackage (the fixtures' view; releases use [`default_kernel`]).
#[cfg(test)]
pub fn kernel_in(index: &Index, flavour: &str) -> Result<KernelPackages> {
    let meta = format!("linux-headers-{flavour}");
    let Some(meta_stanza) = index.newest(&meta) else {
        bail!(
            "kernel meta-package \"{meta}\" not found in {}",
            index.where_()
        );
    };
    let suffix = format!("-{flavour}");
    let dep = parse_depends(&meta_stanza.depends)
        .into_iter()
        .flatten()
        .find(|d| {
            d.name.starts_with("linux-headers-") && d.name.ends_with(&suffix) && d.name != meta
        })
        .with_context(|| {
            format!(
                "\"{meta}\" {} in {} depends on no linux-headers-<release>{suffix} (Depends: {})",
                meta_stanza.version,
                index.where_(),
                meta_stanza.depends
            )
        })?;
    let release = dep.name.trim_start_matches("linux-headers-").to_string();
    let version = match &dep.constraint {
        Some((op, v)) if op == "=" => v.clone(),
        _ => meta_stanza.version.clone(),
    };
    kernel_release_in(index, &release, Some(&version))
        .with_context(|| format!("newest kernel of {} (from \"{meta}\")", index.where_()))
}

/// The packages of kernel `release` (`uname -r`) in one index. `version`
/// defaults to the headers package's version.
///
/// Image packages, by distribution layout:
/// - `linux-image-<release>-unsigned`: vmlinuz and modules (Debian 11-13);
/// - `linux-binary-<release>` + `linux-modules-<release>` (Debian sid);
/// - `linux-image-unsigned-<release>` or `linux-image-<release>`, with
///   `linux-modules-<release>` when it exists (Ubuntu).
pub fn kernel_release_in(
    index: &Index,
    release: &str,
    version: Option<&str>,
) -> Result<KernelPackages> {
    let headers = format!("linux-headers-{release}");
    let Some(headers_stanza) = index.newest(&headers) else {
        bail!(
            "kernel headers package \"{headers}\" not found in {}",
            index.where_()
        );
    };
    let version = version.unwrap_or(&headers_stanza.version).to_string();
    let modules_name = format!("linux-modules-{release}");
    let candidates = [
        (format!("linux-image-{release}-unsigned"), false),
        (format!("linux-binary-{release}"), true),
        (format!("linux-image-unsigned-{release}"), true),
        (format!("linux-image-{release}"), true),
    ];
    let Some((stanza, split)) = candidates
        .iter()
        .find_map(|(name, split)| Some((index.newest(name)?, *split)))
    else {
        let names: Vec<String> = candidates.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        bail!(
            "kernel image for {release} not found in {}: looked for {}",
            index.where_(),
            names.join(", ")
        );
    };
    let image = index.package_ref(stanza)?;
    let modules: Option<PackageRef> = match index.newest(&modules_name) {
        Some(m) if split => Some(index.package_ref(m)?),
        None if split && stanza.package.starts_with("linux-binary-") => bail!(
            "kernel modules package \"{modules_name}\" not found in {}",
            index.where_()
        ),
        _ => None,
    };
    let modules: Vec<PackageRef> = modules.into_iter().collect();
    for p in std::iter::once(&image).chain(&modules) {
        if p.version != version {
            eprintln!(
                "warning: {} is version {} but {headers} is {version}; the release string matches, continuing",
                p.name, p.version
            );
        }
    }
    Ok(KernelPackages {
        release: release.to_string(),
        version,
        image,
        modules,
        headers,
    })
}

/// The packages of kernel `release` (`uname -r`), searched in every suite of
/// the release (its own first, then updates, security, backports).
pub fn kernel_for_release(distro: &Distro, release: &str) -> Result<KernelPackages> {
    let repo = distro.debian()?;
    let mut errors = Vec::new();
    for suite in repo.suites() {
        match kernel_release_in(&*index_of(distro, &suite)?, release, None) {
            Ok(k) => return Ok(k),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!(
        "{}: no packages for kernel {release}:\n  {}",
        distro.name,
        errors.join("\n  ")
    )
}

/// Parse a `Packages` file (deb822 stanzas separated by blank lines).
pub fn parse_packages(text: &str) -> Result<Vec<Stanza>> {
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    let mut last: Option<&'static str> = None;
    let mut lineno = 0usize;
    let mut start_line = 1usize;
    let mut finish = |cur: &mut Stanza, start_line: usize| -> Result<()> {
        let s = std::mem::take(cur);
        if s == Stanza::default() {
            return Ok(());
        }
        if s.package.is_empty() || s.version.is_empty() {
            bail!("Packages stanza at line {start_line} has no Package or Version field");
        }
        out.push(s);
        Ok(())
    };
    for line in text.lines() {
        lineno += 1;
        if line.trim().is_empty() {
            finish(&mut cur, start_line)?;
            last = None;
            start_line = lineno + 1;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Continuation of the previous field; only kept fields matter.
            if let Some(field) = last {
                if let Some(slot) = field_slot(&mut cur, field) {
                    slot.push(' ');
                    slot.push_str(line.trim());
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            bail!("Packages line {lineno}: expected \"Field: value\", got {line:?}");
        };
        let value = value.trim();
        last = None;
        match key {
            "Size" => {
                cur.size = value
                    .parse()
                    .with_context(|| format!("Packages line {lineno}: bad Size {value:?}"))?;
            }
            _ => {
                let key: &'static str = match key {
                    "Package" => "Package",
                    "Version" => "Version",
                    "Architecture" => "Architecture",
                    "Source" => "Source",
                    "Depends" => "Depends",
                    "Pre-Depends" => "Pre-Depends",
                    "Provides" => "Provides",
                    "Filename" => "Filename",
                    "SHA256" => "SHA256",
                    _ => continue,
                };
                if let Some(slot) = field_slot(&mut cur, key) {
                    *slot = value.to_string();
                }
                last = Some(key);
            }
        }
    }
    finish(&mut cur, start_line)?;
    Ok(out)
}

fn field_slot<'a>(s: &'a mut Stanza, key: &str) -> Option<&'a mut String> {
    Some(match key {
        "Package" => &mut s.package,
        "Version" => &mut s.version,
        "Architecture" => &mut s.architecture,
        "Source" => &mut s.source,
        "Depends" => &mut s.depends,
        "Pre-Depends" => &mut s.pre_depends,
        "Provides" => &mut s.provides,
        "Filename" => &mut s.filename,
        "SHA256" => &mut s.sha256,
        _ => return None,
    })
}

/// One relation of a Depends field: `name (op version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub constraint: Option<(String, String)>,
}

/// Parse a relationship field into AND-groups of OR-alternatives.
pub fn parse_depends(field: &str) -> Vec<Vec<Relation>> {
    field
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|group| {
            group
                .split('|')
                .map(|alt| {
                    let alt = alt.trim();
                    let (name, rest) = match alt.find(['(', '[', '<', ' ']) {
                        Some(i) => (alt[..i].trim(), &alt[i..]),
                        None => (alt, ""),
                    };
                    let name = name.split(':').next().unwrap_or(name).to_string();
                    let constraint = rest.find('(').and_then(|open| {
                        let inner = &rest[open + 1..rest[open..].find(')').map(|c| open + c)?];
                        let inner = inner.trim();
                        let split = inner.find(|c: char| !"<>=".contains(c))?;
                        Some((
                            inner[..split].trim().to_string(),
                            inner[split..].trim().to_string(),
                        ))
                    });
                    Relation { name, constraint }
                })
                .collect()
        })
        .collect()
}

/// Compare two Debian versions the way dpkg does (epoch, upstream, revision).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) => (e.parse().unwrap_or(0), r),
            None => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    fn order(c: Option<&u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
            Some(b'~') => -1,
            Some(c) => i32::from(*c) + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i)), order(b.get(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// What a Release file says about the files it covers.
#[derive(Debug, Default)]
pub struct Release {
    pub acquire_by_hash: bool,
    /// path -> (sha256, size)
    pub sha256: HashMap<String, (String, u64)>,
}

/// Parse a (verified) Release text.
pub fn parse_release(text: &str) -> Result<Release> {
    let mut release = Release::default();
    let mut in_sha256 = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(' ') {
            if in_sha256 {
                let mut parts = rest.split_whitespace();
                let (Some(hash), Some(size), Some(path), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    bail!("malformed SHA256 line in Release: {line:?}");
                };
                let size = size
                    .parse()
                    .with_context(|| format!("bad size in Release line {line:?}"))?;
                release
                    .sha256
                    .insert(path.to_string(), (hash.to_ascii_lowercase(), size));
            }
            continue;
        }
        in_sha256 = false;
        match line.split_once(':') {
            Some(("SHA256", _)) => in_sha256 = true,
            Some(("Acquire-By-Hash", v)) => release.acquire_by_hash = v.trim() == "yes",
            _ => {}
        }
    }
    if release.sha256.is_empty() {
        bail!("Release file lists no SHA256 checksums");
    }
    Ok(release)
}

/// The signed text of a clearsigned message, without checking the signature
/// (used only when the file came over HTTPS).
pub fn clearsigned_payload(text: &str) -> Result<String> {
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("-----BEGIN PGP SIGNED MESSAGE-----") {
        bail!("not a clearsigned message");
    }
    // Armor headers ("Hash: SHA256") up to the first empty line.
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
    }
    let mut out = String::new();
    let mut signed = false;
    for line in lines {
        if line.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            signed = true;
            break;
        }
        out.push_str(line.strip_prefix("- ").unwrap_or(line));
        out.push('\n');
    }
    if !signed {
        bail!("clearsigned message has no signature block");
    }
    Ok(out)
}

/// The keyring that signs `mirror`'s InRelease files (`TOA_APT_KEYRING` overrides),
/// and the Debian package that installs it.
fn keyring(mirror: &str) -> (PathBuf, &'static str) {
    let (path, package) = if mirror.contains("ubuntu") {
        (
            "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
            "ubuntu-keyring",
        )
    } else {
        (
            "/usr/share/keyrings/debian-archive-keyring.gpg",
            "debian-archive-keyring",
        )
    };
    match std::env::var_os("TOA_APT_KEYRING") {
        Some(path) => (PathBuf::from(path), package),
        None => (PathBuf::from(path), package),
    }
}

/// The cache directory of one suite of one archive root: suites of the same
/// name on two roots (Ubuntu's jammy on archive and on ports) stay apart.
fn suite_cache(mirror: &str, suite: &str) -> PathBuf {
    Path::new("debian")
        .join(crate::host::cache::url_key(mirror.trim_end_matches('/')))
        .join(suite)
}

/// Fetch and check `InRelease`, returning its signed text.
fn fetch_release(mirror: &str, suite: &str) -> Result<String> {
    let cache_dir = suite_cache(mirror, suite);
    let (keyring, keyring_package) = keyring(mirror);
    let verify = have_gpgv() && keyring.is_file();
    let mirror = if verify {
        mirror.to_string()
    } else {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "note: gpgv or {} is missing, so InRelease signatures are not checked; \
                 fetching InRelease over HTTPS instead (trust rests on the mirror's TLS certificate). \
                 Install them with: apt-get install gpgv {keyring_package}",
                keyring.display()
            )
        });
        match mirror.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => mirror.to_string(),
        }
    };
    let url = crate::distro::inrelease_url(&mirror, suite);
    // Kept apart by how they are trusted: a copy fetched over HTTPS without a
    // signature check must never stand in for one that gpgv checks.
    let name = if verify {
        "InRelease"
    } else {
        "InRelease.https"
    };
    let rel = cache_dir.join(name);
    let path = match crate::repo::download::fetch_fresh(&url, &rel) {
        Ok(path) => path,
        Err(err) => {
            let cached = crate::host::cache::cache_dir().join(&rel);
            if !cached.is_file() {
                return Err(err);
            }
            eprintln!("warning: {err:#}; using the cached {}", cached.display());
            cached
        }
    };
    if verify {
        gpgv_verify(&path, &keyring)
            .with_context(|| format!("InRelease of suite \"{suite}\" from {url}"))
    } else {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        clearsigned_payload(&text)
            .with_context(|| format!("InRelease of suite \"{suite}\" from {url}"))
    }
}

fn arch_of(distro: &Distro) -> Result<&'static str> {
    match crate::distro::arch::Arch::from_name(&distro.arch) {
        Some(arch) => Ok(arch.debian()),
        None => bail!(
            "{}: no Debian architecture known for \"{}\"",
            distro.name,
            distro.arch
        ),
    }
}

/// Every kernel of the release: each versioned `linux-headers-<abi>-<flavour>`
/// package of every flavour in every suite, oldest first. A release found in
/// several suites is listed once, from the first suite that has it.
pub fn kernels(distro: &Distro) -> Result<Vec<crate::distro::kernel::Kernel>> {
    let repo = distro.debian()?;
    let mut found = Vec::new();
    for suite in repo.suites() {
        found.push(index_of(distro, &suite)?);
    }
    Ok(kernels_of(&found, &repo.flavours))
}

/// [`kernels`] on parsed indices.
pub fn kernels_of(
    indices: &[Arc<Index>],
    flavours: &[String],
) -> Vec<crate::distro::kernel::Kernel> {
    let mut out: Vec<crate::distro::kernel::Kernel> = Vec::new();
    for index in indices {
        for flavour in flavours {
            for k in kernels_in(index, flavour) {
                if !out.iter().any(|o| o.release == k.release) {
                    out.push(k);
                }
            }
        }
    }
    out.sort_by(|a, b| crate::distro::kernel::release_cmp(&a.release, &b.release));
    out
}

/// The kernels of one flavour in one index.
pub fn kernels_in(index: &Index, flavour: &str) -> Vec<crate::distro::kernel::Kernel> {
    let mut out: Vec<crate::distro::kernel::Kernel> = index
        .by_name
        .keys()
        .filter_map(|name| {
            let release = name.strip_prefix("linux-headers-")?;
            is_versioned_abi(release.strip_suffix(flavour)?.strip_suffix('-')?)
                .then_some((name, release))
        })
        .filter_map(|(name, release)| {
            let stanza = index.newest(name)?;
            Some(crate::distro::kernel::Kernel {
                release: release.to_string(),
                version: stanza.version.clone(),
                uname_v: None,
                suite: index.suite.clone(),
                flavour: flavour.to_string(),
            })
        })
        .collect();
    out.sort_by(|a, b| crate::distro::kernel::release_cmp(&a.release, &b.release));
    out
}

/// `6.1.0-57`, `6.12.117+deb12`, `5.15.0-91`: a kernel's ABI. Not a
/// metapackage's series (`6.12`) and not the ABI of another flavour that
/// shares the suffix (`6.1.0-57-cloud` of `cloud-amd64` under `amd64`).
fn is_versioned_abi(abi: &str) -> bool {
    let numbers = abi
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|p| !p.is_empty())
        .count();
    let last = abi.rsplit('-').next().unwrap_or(abi);
    numbers >= 3 && abi.split('.').count() >= 3 && last.starts_with(|c: char| c.is_ascii_digit())
}

/// The release's own suite's index, fetched and parsed once per process.
pub fn index(distro: &Distro) -> Result<Arc<Index>> {
    index_of(distro, &distro.debian()?.home())
}

/// One suite's index, fetched and parsed once per process.
pub fn index_of(distro: &Distro, suite: &crate::distro::AptSuite) -> Result<Arc<Index>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Index>>>> = OnceLock::new();
    let arch = arch_of(distro)?;
    let mirror = suite.mirror.trim_end_matches('/');
    let key = format!("{mirror} {} {arch}", suite.suite);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(index) = cache.lock().unwrap().get(&key) {
        return Ok(index.clone());
    }
    let index = Arc::new(load_index(mirror, &suite.suite, arch)?);
    cache.lock().unwrap().insert(key, index.clone());
    Ok(index)
}

fn load_index(mirror: &str, suite: &str, arch: &str) -> Result<Index> {
    let release = parse_release(&fetch_release(mirror, suite)?)
        .with_context(|| format!("InRelease of suite \"{suite}\" from {mirror}"))?;
    // Suites offer .xz, .gz or both (bookworm-updates has no .gz).
    let Some((ext, (sha256, size))) = ["xz", "gz"].into_iter().find_map(|ext| {
        let path = format!("main/binary-{arch}/Packages.{ext}");
        Some((ext, release.sha256.get(&path)?.clone()))
    }) else {
        bail!("InRelease of suite \"{suite}\" from {mirror} lists no main/binary-{arch}/Packages.xz or .gz");
    };
    let rel_path = format!("main/binary-{arch}/Packages.{ext}");
    let expected = crate::repo::download::Expected {
        sha256: sha256.clone(),
        size,
    };
    let dir = suite_cache(mirror, suite);
    let name = format!("Packages-{arch}-{}.{ext}", &sha256[..16.min(sha256.len())]);
    let plain = format!("{mirror}/dists/{suite}/{rel_path}");
    let path = if release.acquire_by_hash {
        let by_hash = format!("{mirror}/dists/{suite}/main/binary-{arch}/by-hash/SHA256/{sha256}");
        crate::repo::download::fetch(&by_hash, Some(expected.clone()), dir.join(&name))
            .or_else(|_| crate::repo::download::fetch(&plain, Some(expected), dir.join(&name)))?
    } else {
        crate::repo::download::fetch(&plain, Some(expected), dir.join(&name))?
    };
    prune_old_indices(&path, arch);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(crate::repo::decompress::decompress(&name, &bytes)?)
        .with_context(|| format!("{plain} is not UTF-8"))?;
    Index::from_packages(mirror, suite, &text).with_context(|| format!("parsing {plain}"))
}

/// Remove superseded `Packages-<arch>-*` beside `current`.
fn prune_old_indices(current: &Path, arch: &str) {
    let (Some(dir), Some(keep)) = (current.parent(), current.file_name()) else {
        return;
    };
    let prefix = format!("Packages-{arch}-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let s = name.to_string_lossy();
            if name != keep && s.starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::gpgv::Signatures;

    const BOOKWORM: &str =
        include_str!("../../tests/fixtures/apt/debian-12/bookworm/binary-amd64/Packages");
    const SID: &str =
        include_str!("../../tests/fixtures/apt/debian-unstable/sid/binary-amd64/Packages");
    const INRELEASE: &str = include_str!("../../tests/fixtures/debian/InRelease");

    fn index(text: &str, suite: &str) -> Index {
        Index::from_packages("http://deb.debian.org/debian/", suite, text).unwrap()
    }

    /// A `Packages` stanza of a headers or image package.
    fn stanza(name: &str, version: &str, depends: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nDepends: {depends}\nFilename: pool/main/l/linux/{name}.deb\nSize: 10\nSHA256: {}\n\n",
            "ab".repeat(32)
        )
    }

    /// bookworm, bookworm-security and bookworm-backports as they look: three
    /// flavours, versionless series metapackages, a newer backport.
    fn bookworm_suites() -> Vec<Arc<Index>> {
        let suite = |suite: &str, abis: &[(&str, &str)], meta: (&str, &str)| {
            let mut text = String::new();
            for (abi, version) in abis {
                for flavour in ["amd64", "cloud-amd64", "rt-amd64"] {
                    text += &stanza(&format!("linux-headers-{abi}-{flavour}"), version, "");
                }
            }
            for flavour in ["amd64", "cloud-amd64", "rt-amd64"] {
                let (abi, version) = meta;
                text += &stanza(
                    &format!("linux-image-{flavour}"),
                    version,
                    &format!("linux-image-{abi}-{flavour} (= {version})"),
                );
                // The series metapackage: not a kernel of its own.
                text += &stanza(&format!("linux-headers-6.12-{flavour}"), version, "");
            }
            Arc::new(Index::from_packages("http://deb.debian.org/debian", suite, &text).unwrap())
        };
        vec![
            suite(
                "bookworm",
                &[("6.1.0-47", "6.1.170-3"), ("6.1.0-50", "6.1.176-1")],
                ("6.1.0-50", "6.1.176-1"),
            ),
            suite(
                "bookworm-security",
                &[
                    ("6.1.0-57", "6.1.192-3"),
                    ("6.12.117+deb12", "6.12.117-1~deb12u1"),
                ],
                ("6.1.0-57", "6.1.192-3"),
            ),
            suite(
                "bookworm-backports",
                &[
                    ("6.12.95+deb12", "6.12.95-1~bpo12+1"),
                    ("6.1.0-50", "6.1.176-1"),
                ],
                ("6.12.95+deb12", "6.12.95-1~bpo12+1"),
            ),
        ]
    }

    #[test]
    fn every_suite_and_flavour_is_listed_once() {
        let flavours: Vec<String> = ["amd64", "cloud-amd64", "rt-amd64"]
            .map(String::from)
            .to_vec();
        let kernels = kernels_of(&bookworm_suites(), &flavours);
        // 5 ABIs (6.1.0-50 is in two suites) in 3 flavours; no `6.12-<flavour>`.
        assert_eq!(kernels.len(), 15, "{kernels:#?}");
        let k = |release: &str| kernels.iter().find(|k| k.release == release).unwrap();
        assert_eq!(k("6.1.0-50-amd64").suite, "bookworm");
        assert_eq!(k("6.1.0-57-cloud-amd64").suite, "bookworm-security");
        assert_eq!(k("6.1.0-57-cloud-amd64").flavour, "cloud-amd64");
        assert_eq!(k("6.12.95+deb12-rt-amd64").suite, "bookworm-backports");
        assert_eq!(k("6.12.95+deb12-rt-amd64").flavour, "rt-amd64");
        assert!(kernels.iter().all(|k| !k.release.starts_with("6.12-")));
        // The amd64 flavour does not swallow cloud-amd64 and rt-amd64.
        assert_eq!(kernels.iter().filter(|k| k.flavour == "amd64").count(), 5);
    }

    #[test]
    fn the_default_kernel_is_the_updated_metapackage_not_a_backport() {
        let suites = bookworm_suites();
        let followed: Vec<Arc<Index>> = suites
            .iter()
            .filter(|i| !i.suite.ends_with("-backports"))
            .cloned()
            .collect();
        assert_eq!(
            default_release_in(&followed, "amd64").unwrap(),
            "6.1.0-57-amd64"
        );
        assert_eq!(
            default_release_in(&followed, "cloud-amd64").unwrap(),
            "6.1.0-57-cloud-amd64"
        );
        // Backports counted, the newer series would win: which is why they are not.
        assert_eq!(
            default_release_in(&suites, "amd64").unwrap(),
            "6.12.95+deb12-amd64"
        );
        let err = default_release_in(&followed, "arm64")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux-image-arm64") && err.contains("bookworm-security"),
            "{err}"
        );
    }

    #[test]
    fn versioned_abis() {
        for good in [
            "6.1.0-57",
            "6.12.117+deb12",
            "5.15.0-91",
            "7.2.13+deb14",
            "6.1.0-0.deb11.52",
        ] {
            assert!(is_versioned_abi(good), "{good}");
        }
        for bad in ["6.12", "6.1.0-57-cloud", "6.1.0-57-rt", "", "cloud"] {
            assert!(!is_versioned_abi(bad), "{bad}");
        }
    }

    #[test]
    fn bookworm_kernel_is_one_unsigned_image() {
        let k = kernel_in(&index(BOOKWORM, "bookworm"), "amd64").unwrap();
        assert_eq!(k.release, "6.1.0-50-amd64");
        assert_eq!(k.version, "6.1.176-1");
        assert_eq!(k.headers, "linux-headers-6.1.0-50-amd64");
        assert_eq!(k.image.name, "linux-image-6.1.0-50-amd64-unsigned");
        assert_eq!(
            k.image.url,
            "http://deb.debian.org/debian/pool/main/l/linux/linux-image-6.1.0-50-amd64-unsigned_6.1.176-1_amd64.deb"
        );
        assert_eq!(k.image.size, 70302080);
        assert_eq!(
            k.image.sha256,
            "439422e41d2dbb840b60b81e3bf5e5955bfa56b7a8c268aec83c9ff882d421e6"
        );
        assert!(k.modules.is_empty());
    }

    #[test]
    fn sid_kernel_is_split_into_binary_and_modules() {
        let k = kernel_in(&index(SID, "sid"), "amd64").unwrap();
        assert_eq!(k.release, "7.2.13+deb14-amd64");
        assert_eq!(k.version, "7.2.13-1");
        assert_eq!(k.image.name, "linux-binary-7.2.13+deb14-amd64");
        assert_eq!(k.modules[0].name, "linux-modules-7.2.13+deb14-amd64");
        assert_eq!(k.modules[0].size, 110095088);
        assert_eq!(k.headers, "linux-headers-7.2.13+deb14-amd64");
    }

    #[test]
    fn kernel_by_release() {
        let idx = index(BOOKWORM, "bookworm");
        let k = kernel_release_in(&idx, "6.1.0-50-amd64", None).unwrap();
        assert_eq!(k, kernel_in(&idx, "amd64").unwrap());
        let err = kernel_release_in(&idx, "6.1.0-49-amd64", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"linux-headers-6.1.0-49-amd64\"") && err.contains("\"bookworm\""),
            "{err}"
        );
    }

    #[test]
    fn ubuntu_layout_is_image_plus_modules() {
        let stanza = |name: &str| {
            format!(
                "Package: {name}\nVersion: 6.8.0-49.49\nFilename: pool/main/l/linux/{name}.deb\nSize: 10\nSHA256: {}\n\n",
                "ab".repeat(32)
            )
        };
        let text = ["linux-headers-6.8.0-49-generic", "linux-image-6.8.0-49-generic", "linux-modules-6.8.0-49-generic"]
            .map(stanza)
            .concat()
            + "Package: linux-headers-generic\nVersion: 6.8.0-49.49\nDepends: linux-headers-6.8.0-49-generic\n";
        let k = kernel_in(&index(&text, "noble"), "generic").unwrap();
        assert_eq!(k.release, "6.8.0-49-generic");
        assert_eq!(k.version, "6.8.0-49.49");
        assert_eq!(k.image.name, "linux-image-6.8.0-49-generic");
        assert_eq!(k.modules[0].name, "linux-modules-6.8.0-49-generic");
    }

    #[test]
    fn multi_line_fields_and_newest_version() {
        let idx = index(BOOKWORM, "bookworm");
        let bb = idx.package("busybox-static").unwrap();
        // Two stanzas in the fixture: the newer one wins.
        assert_eq!(bb.version, "1:1.35.0-4+deb12u1+b1");
        let stanzas = parse_packages(BOOKWORM).unwrap();
        let tagged = stanzas
            .iter()
            .find(|s| s.package == "busybox-static")
            .unwrap();
        assert_eq!(tagged.provides, "busybox");
    }

    #[test]
    fn missing_package_names_suite_and_package() {
        let err = index(BOOKWORM, "bookworm")
            .package("no-such-package")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"no-such-package\"") && err.contains("\"bookworm\""),
            "{err}"
        );
        let err = kernel_in(&index(BOOKWORM, "bookworm"), "arm64")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux-headers-arm64") && err.contains("bookworm"),
            "{err}"
        );
        // Meta-package present, image missing.
        let no_image: String = BOOKWORM
            .split("\n\n")
            .filter(|s| !s.contains("Package: linux-image-"))
            .collect::<Vec<_>>()
            .join("\n\n");
        let err = format!(
            "{:#}",
            kernel_in(&index(&no_image, "bookworm"), "amd64").unwrap_err()
        );
        assert!(
            err.contains("linux-image-6.1.0-50-amd64-unsigned") && err.contains("bookworm"),
            "{err}"
        );
    }

    #[test]
    fn malformed_stanza_is_an_error() {
        let err = parse_packages("Package: x\nVersion: 1\nSize: many\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad Size"), "{err}");
        let err = parse_packages("Package: x\nno colon here\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn depends_parsing() {
        let d = parse_depends(
            "linux-base-amd64 (= 7.2.13-1), linux-headers-7.2.13+deb14-amd64 (= 7.2.13-1)",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[1][0].name, "linux-headers-7.2.13+deb14-amd64");
        assert_eq!(d[1][0].constraint, Some(("=".into(), "7.2.13-1".into())));
        let d = parse_depends(
            "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, libc6:any",
        );
        assert_eq!(d[0].len(), 3);
        assert_eq!(
            d[0][1].constraint,
            Some((">=".into(), "0.120+deb8u2".into()))
        );
        assert_eq!(d[1][0].name, "libc6");
    }

    #[test]
    fn dpkg_version_order() {
        use Ordering::*;
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1:1.0", "2.0", Greater),
            ("6.1.176-1", "6.1.170-1", Greater),
            ("6.1.9-1", "6.1.10-1", Less),
            ("1.35.0-4+deb12u1+b1", "1.35.0-4+deb12u1", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("001", "1", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(version_cmp(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn release_lists_packages_checksum() {
        let payload = clearsigned_payload(INRELEASE).unwrap();
        assert!(payload.starts_with("Origin: Debian\n"), "{payload}");
        assert!(payload.contains("- dash-escaped line"), "{payload}");
        let release = parse_release(&payload).unwrap();
        assert!(release.acquire_by_hash);
        assert_eq!(
            release.sha256.get("main/binary-amd64/Packages.gz"),
            Some(&(
                "6777ea16514725f9427f48c240d92e0a6b8496138e37a1491d8597e66774e309".to_string(),
                12084798
            ))
        );
        // The MD5Sum section must not leak into the SHA256 table.
        assert!(!release.sha256.values().any(|(h, _)| h.len() != 64));
    }

    #[test]
    fn unsigned_or_truncated_inrelease_is_rejected() {
        assert!(clearsigned_payload("Origin: Debian\n").is_err());
        let truncated = INRELEASE
            .split("-----BEGIN PGP SIGNATURE-----")
            .next()
            .unwrap();
        assert!(clearsigned_payload(truncated).is_err());
    }

    // Status lines as gpgv 2.2.40 printed them for bookworm's InRelease of
    // 2026-07-11 (three signatures) with the whole Debian keyring and with
    // debian-archive-bookworm-stable.gpg alone; SIG_ID and KEY_CONSIDERED kept.
    const STATUS_ALL_GOOD: &str = "\
[GNUPG:] PLAINTEXT 74 0 
[GNUPG:] NEWSIG
[GNUPG:] KEY_CONSIDERED B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8 0
[GNUPG:] SIG_ID AgpdPZ7z8h3tPdbJ5G8ASdhxELQ 2026-07-11 1783765031
[GNUPG:] KEY_CONSIDERED B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8 0
[GNUPG:] GOODSIG 6ED0E7B82643E131 Debian Archive Automatic Signing Key (12/bookworm) <ftpmaster@debian.org>
[GNUPG:] VALIDSIG 4CB50190207B4758A3F73A796ED0E7B82643E131 2026-07-11 1783765031 0 4 0 1 8 01 B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8
[GNUPG:] NEWSIG
[GNUPG:] KEY_CONSIDERED 04B54C3CDCA79751B16BC6B5225629DF75B188BD 0
[GNUPG:] SIG_ID TQxV8Cnwv/qDvqns4Br64vioxl0 2026-07-11 1783765032
[GNUPG:] KEY_CONSIDERED 04B54C3CDCA79751B16BC6B5225629DF75B188BD 0
[GNUPG:] GOODSIG 78DBA3BC47EF2265 Debian Archive Automatic Signing Key (13/trixie) <ftpmaster@debian.org>
[GNUPG:] VALIDSIG B8E5F13176D2A7A75220028078DBA3BC47EF2265 2026-07-11 1783765032 0 4 0 1 8 01 04B54C3CDCA79751B16BC6B5225629DF75B188BD
[GNUPG:] NEWSIG
[GNUPG:] KEY_CONSIDERED 4D64FEC119C2029067D6E791F8D2585B8783D481 0
[GNUPG:] SIG_ID Gl4sdUCMYWRx29C3McjkiwtuFHQ 2026-07-11 1783765141
[GNUPG:] KEY_CONSIDERED 4D64FEC119C2029067D6E791F8D2585B8783D481 0
[GNUPG:] GOODSIG F8D2585B8783D481 Debian Stable Release Key (12/bookworm) <debian-release@lists.debian.org>
[GNUPG:] VALIDSIG 4D64FEC119C2029067D6E791F8D2585B8783D481 2026-07-11 1783765141 0 4 0 22 8 01 4D64FEC119C2029067D6E791F8D2585B8783D481
";
    const STATUS_ONE_KNOWN_KEY: &str = "\
[GNUPG:] PLAINTEXT 74 0 
[GNUPG:] NEWSIG
[GNUPG:] ERRSIG 6ED0E7B82643E131 1 8 01 1783765031 9 4CB50190207B4758A3F73A796ED0E7B82643E131
[GNUPG:] NO_PUBKEY 6ED0E7B82643E131
[GNUPG:] NEWSIG
[GNUPG:] ERRSIG 78DBA3BC47EF2265 1 8 01 1783765032 9 B8E5F13176D2A7A75220028078DBA3BC47EF2265
[GNUPG:] NO_PUBKEY 78DBA3BC47EF2265
[GNUPG:] NEWSIG
[GNUPG:] KEY_CONSIDERED 4D64FEC119C2029067D6E791F8D2585B8783D481 0
[GNUPG:] SIG_ID Gl4sdUCMYWRx29C3McjkiwtuFHQ 2026-07-11 1783765141
[GNUPG:] KEY_CONSIDERED 4D64FEC119C2029067D6E791F8D2585B8783D481 0
[GNUPG:] GOODSIG F8D2585B8783D481 Debian Stable Release Key (12/bookworm) <debian-release@lists.debian.org>
[GNUPG:] VALIDSIG 4D64FEC119C2029067D6E791F8D2585B8783D481 2026-07-11 1783765141 0 4 0 22 8 01 4D64FEC119C2029067D6E791F8D2585B8783D481
";
    // The same file with debian-archive-trixie-stable.gpg: no key signed it.
    const STATUS_NO_KNOWN_KEY: &str = "\
[GNUPG:] PLAINTEXT 74 0 
[GNUPG:] NEWSIG
[GNUPG:] ERRSIG 6ED0E7B82643E131 1 8 01 1783765031 9 4CB50190207B4758A3F73A796ED0E7B82643E131
[GNUPG:] NO_PUBKEY 6ED0E7B82643E131
[GNUPG:] NEWSIG
[GNUPG:] ERRSIG 78DBA3BC47EF2265 1 8 01 1783765032 9 B8E5F13176D2A7A75220028078DBA3BC47EF2265
[GNUPG:] NO_PUBKEY 78DBA3BC47EF2265
[GNUPG:] NEWSIG
[GNUPG:] ERRSIG F8D2585B8783D481 22 8 01 1783765141 9 4D64FEC119C2029067D6E791F8D2585B8783D481
[GNUPG:] NO_PUBKEY F8D2585B8783D481
";
    // tests/fixtures/debian/InRelease (cut short) with the whole keyring.
    const STATUS_BAD: &str = "\
[GNUPG:] PLAINTEXT 74 0 
[GNUPG:] NEWSIG
[GNUPG:] KEY_CONSIDERED B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8 0
[GNUPG:] KEY_CONSIDERED B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8 0
[GNUPG:] BADSIG 6ED0E7B82643E131 Debian Archive Automatic Signing Key (12/bookworm) <ftpmaster@debian.org>
";

    #[test]
    fn gpgv_status_lines_are_read() {
        let all = Signatures::parse(STATUS_ALL_GOOD);
        assert_eq!(all.good.len(), 3);
        assert!(all.bad.is_empty() && all.unknown_key.is_empty() && all.unusable.is_empty());
        let one = Signatures::parse(STATUS_ONE_KNOWN_KEY);
        assert_eq!(
            one,
            Signatures {
                good: vec!["4D64FEC119C2029067D6E791F8D2585B8783D481".into()],
                bad: vec![],
                unknown_key: vec!["6ED0E7B82643E131".into(), "78DBA3BC47EF2265".into()],
                unusable: vec![],
            }
        );
        assert_eq!(Signatures::parse(STATUS_BAD).bad, ["6ED0E7B82643E131"]);
    }

    #[test]
    fn one_good_signature_is_enough_as_for_apt() {
        Signatures::parse(STATUS_ALL_GOOD).verdict().unwrap();
        Signatures::parse(STATUS_ONE_KNOWN_KEY).verdict().unwrap();
    }

    #[test]
    fn no_good_or_a_bad_signature_fails() {
        let err = Signatures::parse(STATUS_NO_KNOWN_KEY)
            .verdict()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no good signature: signed only by keys the keyring lacks (6ED0E7B82643E131, 78DBA3BC47EF2265, F8D2585B8783D481)"),
            "{err}"
        );
        let err = Signatures::parse(STATUS_BAD)
            .verdict()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BAD signature from key 6ED0E7B82643E131"),
            "{err}"
        );
        // A good signature does not cover for a bad one.
        let mixed = format!("{STATUS_ONE_KNOWN_KEY}{STATUS_BAD}");
        assert!(Signatures::parse(&mixed).verdict().is_err());
        // An ERRSIG that is not a missing key, alone, is no good signature.
        let err = Signatures::parse(
            "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG F8D2585B8783D481 22 8 01 1783765141 4 -\n",
        )
        .verdict()
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot be used (F8D2585B8783D481)"), "{err}");
        assert!(Signatures::parse("").verdict().is_err());
    }

    /// The real dual-signed bookworm-security InRelease (fixture README)
    /// checked by gpgv with one keyring file at a time, as a runner whose
    /// keyring knows only one of the two signers would.
    #[test]
    fn dual_signed_inrelease_passes_with_either_key_alone() {
        let dir = Path::new("/usr/share/keyrings");
        let bookworm = dir.join("debian-archive-bookworm-security-automatic.gpg");
        let bullseye = dir.join("debian-archive-bullseye-security-automatic.gpg");
        let trixie = dir.join("debian-archive-trixie-stable.gpg");
        if !have_gpgv() || ![&bookworm, &bullseye, &trixie].iter().all(|k| k.is_file()) {
            eprintln!("skipped: gpgv or the debian-archive-keyring files are missing");
            return;
        }
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/debian/InRelease-bookworm-security");
        for keyring in [&bookworm, &bullseye] {
            let text = gpgv_verify(&file, keyring)
                .unwrap_or_else(|e| panic!("{}: {e:#}", keyring.display()));
            assert!(text.starts_with("Origin: Debian\n"), "{text:.80}");
            assert!(text.contains("Codename: bookworm-security\n"));
        }
        let err = format!("{:#}", gpgv_verify(&file, &trixie).unwrap_err());
        assert!(err.contains("no good signature"), "{err}");
        // One changed byte in the signed text: every signature is bad.
        let dir = crate::testing::scratch("gpgv-dual");
        let tampered = dir.join("InRelease");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&tampered, text.replacen("Version: 12", "Version: 13", 1)).unwrap();
        let err = format!("{:#}", gpgv_verify(&tampered, &bookworm).unwrap_err());
        assert!(err.contains("BAD signature"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_signature_fails_closed() {
        let (keyring, _) = keyring("http://deb.debian.org/debian");
        if !have_gpgv() || !keyring.is_file() {
            eprintln!("skipped: gpgv or {} missing", keyring.display());
            return;
        }
        let dir = crate::testing::scratch("gpgv");
        let file = dir.join("InRelease");
        std::fs::write(&file, INRELEASE).unwrap();
        let err = format!("{:#}", gpgv_verify(&file, &keyring).unwrap_err());
        assert!(err.contains("signature check"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The kernel count of a release against the archive itself (network: the
/// Debian archive): the indices are read here with no code of this crate, the
/// suites and flavours written out by hand, and the count must be the one
/// `cargo xtask kernels` finds.
#[cfg(test)]
mod archive_count {
    use std::collections::BTreeSet;
    use std::io::Read;

    /// Versioned `linux-headers-<abi>-<flavour>` names in one suite.
    fn headers_in(url: &str) -> BTreeSet<String> {
        let bytes = reqwest::blocking::get(url)
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.bytes())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let mut text = String::new();
        liblzma::read::XzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("Package: linux-headers-"))
            .filter(|name| {
                let abi = ["-cloud-amd64", "-rt-amd64", "-amd64"]
                    .iter()
                    .find_map(|f| name.strip_suffix(f));
                // `6.1.0-57`, `6.12.117+deb12`; not the `6.12` series metapackage.
                abi.is_some_and(|abi| {
                    abi.split('.').count() >= 3
                        && abi.starts_with(|c: char| c.is_ascii_digit())
                        && !abi.ends_with("-cloud")
                        && !abi.ends_with("-rt")
                })
            })
            .map(str::to_string)
            .collect()
    }

    fn count(suites: &[&str]) -> usize {
        let mut all = BTreeSet::new();
        for suite in suites {
            let root = if suite.ends_with("-security") {
                "http://deb.debian.org/debian-security"
            } else {
                "http://deb.debian.org/debian"
            };
            all.extend(headers_in(&format!(
                "{root}/dists/{suite}/main/binary-amd64/Packages.xz"
            )));
        }
        all.len()
    }

    #[test]
    fn debian_12_lists_every_kernel_of_the_archive() {
        let want = count(&[
            "bookworm",
            "bookworm-updates",
            "bookworm-security",
            "bookworm-backports",
        ]);
        let distro = crate::distro::find("debian-12").unwrap();
        let got = super::kernels(&distro).unwrap();
        assert_eq!(got.len(), want, "{got:#?}");
        // 39 on 2026-12-01; the archive only grows within a release's life.
        assert!(want >= 39, "{want}");
    }

    #[test]
    #[ignore = "downloads the indices of four releases"]
    fn live_every_debian_release_lists_every_kernel_of_the_archive() {
        for (name, suites) in [
            (
                "debian-11",
                &["bullseye", "bullseye-updates", "bullseye-security"][..],
            ),
            (
                "debian-13",
                &[
                    "trixie",
                    "trixie-updates",
                    "trixie-security",
                    "trixie-backports",
                ],
            ),
            ("debian-unstable", &["sid"]),
        ] {
            let distro = crate::distro::find(name).unwrap();
            let got = super::kernels(&distro).unwrap().len();
            assert_eq!(got, count(suites), "{name}");
            eprintln!("{name}: {got} kernels");
        }
    }
}

/// Against the real archive (network): `cargo test -p xtask -- --ignored live_`.
#[cfg(test)]
mod live {
    #[test]
    #[ignore = "needs the Debian archive"]
    fn live_default_kernels() {
        for name in ["debian-11", "debian-12", "debian-13", "debian-unstable"] {
            let distro = crate::distro::find(name).unwrap();
            let k = super::default_kernel(&distro).unwrap();
            let bb = super::package(&distro, "busybox-static").unwrap();
            eprintln!(
                "{name}: {} {} image={} modules={:?} busybox={}",
                k.release,
                k.version,
                k.image.name,
                k.modules.iter().map(|m| &m.name).collect::<Vec<_>>(),
                bb.version
            );
        }
    }
}
