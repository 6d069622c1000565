//! RPM repositories (`repodata/repomd.xml` → primary metadata): the kernels a
//! CentOS / RHEL / SUSE release shipped, found by its kernel headers package.

use crate::distro::kernel::Kernel;
use crate::distro::{Family, RpmRepo};
use crate::host::cache::url_key;
use anyhow::{bail, Context, Result};
use quick_xml::events::Event;
use std::path::{Path, PathBuf};

/// One `<package>` of primary.xml, the fields kernel discovery and the VM
/// lab's downloads need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    pub arch: String,
    pub ver: String,
    pub rel: String,
    /// `<location href>`: the file, relative to the repository root.
    pub location: String,
    /// `<checksum type="sha256">` of the package file, lowercase hex.
    pub sha256: Option<String>,
    /// `<size package>`: the package file's size in bytes.
    pub size: Option<u64>,
    /// The `kernel-devel-uname-r` it provides: `uname -r` of the kernel a
    /// headers package is for, in the package's own words.
    pub uname_r: Option<String>,
}

/// Where repomd.xml says the primary metadata is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryRef {
    pub href: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// Finds `<data type="primary">` in repomd.xml.
pub fn parse_repomd(xml: &str) -> Result<PrimaryRef> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut in_primary = false;
    let mut field = String::new();
    let mut checksum_type = String::new();
    let mut out = PrimaryRef {
        href: String::new(),
        sha256: None,
        size: None,
    };
    loop {
        match reader
            .read_event()
            .context("repomd.xml is not well-formed XML")?
        {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "data" {
                    in_primary = attr(&e, "type")?.as_deref() == Some("primary");
                } else if in_primary && name == "location" {
                    out.href = attr(&e, "href")?.context("primary <location> has no href")?;
                } else if in_primary && name == "checksum" {
                    checksum_type = attr(&e, "type")?.unwrap_or_default();
                }
                field = name;
            }
            Event::Text(t) if in_primary => {
                let text = t.unescape()?.trim().to_string();
                match field.as_str() {
                    "checksum" if checksum_type == "sha256" => {
                        out.sha256 = Some(text.to_lowercase())
                    }
                    "size" => out.size = text.parse().ok(),
                    _ => {}
                }
            }
            Event::End(e) if e.local_name().as_ref() == b"data" && in_primary => break,
            Event::End(_) => field.clear(),
            Event::Eof => break,
            _ => {}
        }
    }
    if out.href.is_empty() {
        bail!("repomd.xml has no primary metadata");
    }
    Ok(out)
}

fn attr(e: &quick_xml::events::BytesStart, key: &str) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a?;
        if a.key.local_name().as_ref() == key.as_bytes() {
            return Ok(Some(a.unescape_value()?.into_owned()));
        }
    }
    Ok(None)
}

/// Every package called `name` in primary.xml.
pub fn parse_primary(xml: &str, name: &str) -> Result<Vec<RpmPackage>> {
    parse_primary_of(xml, &[name])
}

/// Every package called one of `names` in primary.xml.
pub fn parse_primary_of(xml: &str, names: &[&str]) -> Result<Vec<RpmPackage>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current: Option<RpmPackage> = None;
    let mut field = String::new();
    let mut sha256 = false;
    let mut in_provides = false;
    loop {
        match reader
            .read_event()
            .context("primary.xml is not well-formed XML")?
        {
            Event::Start(e) | Event::Empty(e) => {
                let tag = e.local_name().as_ref().to_vec();
                match tag.as_slice() {
                    b"package" => current = Some(RpmPackage::default()),
                    b"version" => {
                        if let Some(p) = current.as_mut() {
                            p.ver = attr(&e, "ver")?.unwrap_or_default();
                            p.rel = attr(&e, "rel")?.unwrap_or_default();
                        }
                    }
                    b"location" => {
                        if let Some(p) = current.as_mut() {
                            p.location = attr(&e, "href")?.unwrap_or_default();
                        }
                    }
                    b"size" => {
                        if let Some(p) = current.as_mut() {
                            p.size = attr(&e, "package")?.and_then(|n| n.parse().ok());
                        }
                    }
                    b"checksum" => sha256 = attr(&e, "type")?.as_deref() == Some("sha256"),
                    b"provides" => in_provides = true,
                    b"entry"
                        if in_provides
                            && attr(&e, "name")?.as_deref() == Some("kernel-devel-uname-r") =>
                    {
                        if let (Some(p), Some(ver)) = (current.as_mut(), attr(&e, "ver")?) {
                            let rel = attr(&e, "rel")?;
                            p.uname_r =
                                Some(crate::distro::uname::from_provide(&ver, rel.as_deref()));
                        }
                    }
                    _ => {}
                }
                field = String::from_utf8_lossy(&tag).into_owned();
            }
            Event::Text(t) => {
                if let Some(p) = current.as_mut() {
                    match field.as_str() {
                        "name" => p.name = t.unescape()?.trim().to_string(),
                        "arch" => p.arch = t.unescape()?.trim().to_string(),
                        "checksum" if sha256 => {
                            p.sha256 = Some(t.unescape()?.trim().to_lowercase())
                        }
                        _ => {}
                    }
                }
            }
            Event::End(e) if e.local_name().as_ref() == b"package" => {
                if let Some(p) = current.take().filter(|p| names.contains(&p.name.as_str())) {
                    out.push(p);
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == b"provides" {
                    in_provides = false;
                }
                field.clear()
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The kernel a headers package is for, spelled as `uname -r` prints it:
/// as the package declares it (`kernel-devel-uname-r`), else by the family's
/// rule and the recipe's spelling (`repo.uname`, plus a variant's suffix).
pub fn kernel_of(family: Family, repo: &RpmRepo, p: &RpmPackage) -> Result<Kernel> {
    let version = format!("{}-{}", p.ver, p.rel);
    let release = match (family, &p.uname_r) {
        (Family::Debian, _) => bail!("RPM metadata cannot describe a Debian-family kernel"),
        (_, Some(declared)) => declared.clone(),
        // kernel-devel 3.10.0-327.el7 (x86_64) runs as 3.10.0-327.el7.x86_64,
        // or as the recipe's uname style spells it.
        (Family::Rhel, None) => {
            let r = repo
                .uname
                .release(&p.ver, &p.rel, &p.arch)
                .with_context(|| format!("{} {version}", p.name))?;
            format!("{r}{}", repo.release_suffix)
        }
        // kernel-default-devel 4.12.14-122.37.1 runs as 4.12.14-122.37-default:
        // the last release component is the rebuild counter.
        (Family::Suse, None) => {
            let rel = p
                .rel
                .rsplit_once('.')
                .map_or(p.rel.as_str(), |(head, _)| head);
            format!("{}-{rel}-default", p.ver)
        }
    };
    Ok(Kernel {
        release,
        version,
        ..Kernel::default()
    })
}

/// Where a repository's files come from: the network through the download
/// cache, or (in tests) fixture files.
pub trait Fetch {
    /// A file that changes in place (`repomd.xml`): asked for every time.
    fn fresh(&self, url: &str, cache: &Path) -> Result<PathBuf>;
    /// A file `repomd.xml` names with its sha256 (and size): checked.
    fn checked(&self, url: &str, sha256: &str, size: Option<u64>, cache: &Path) -> Result<PathBuf>;
}

/// [`Fetch`] over HTTP(S), cached under `target/cache/`.
pub struct Net;

impl Fetch for Net {
    fn fresh(&self, url: &str, cache: &Path) -> Result<PathBuf> {
        crate::repo::download::fetch_fresh(url, cache)
    }

    fn checked(&self, url: &str, sha256: &str, size: Option<u64>, cache: &Path) -> Result<PathBuf> {
        match size {
            Some(size) => crate::repo::download::fetch(
                url,
                Some(crate::repo::download::Expected {
                    sha256: sha256.to_string(),
                    size,
                }),
                cache,
            ),
            None => {
                let path = crate::repo::download::fetch_fresh(url, cache)?;
                let got = crate::host::fs::sha256_file(&path)?;
                if got != sha256 {
                    let _ = std::fs::remove_file(&path);
                    bail!(
                        "{}: sha256 {got} does not match repomd.xml's {sha256}",
                        crate::repo::download::redact(url)
                    );
                }
                Ok(path)
            }
        }
    }
}

/// The binary keyring gpgv reads, made from the recipe's armored keys (None:
/// the recipe names no key, or gpgv is missing and every repository is
/// reached over HTTPS, which the note says).
fn signing_keyring(distro_name: &str, repo: &RpmRepo) -> Result<Option<PathBuf>> {
    if repo.keys.is_empty() {
        return Ok(None);
    }
    if !crate::host::gpgv::have_gpgv() {
        if let Some(http) = repo.baseurls.iter().find(|b| !b.starts_with("https://")) {
            bail!(
                "{distro_name}: gpgv is missing, so the signature of {http}repodata/repomd.xml \
                 cannot be checked and the URL is not HTTPS; install it with: apt-get install gpgv"
            );
        }
        eprintln!(
            "note: gpgv is missing, so {distro_name}'s repomd.xml signatures are not checked \
             (trust rests on the mirrors' TLS certificates); install it with: apt-get install gpgv"
        );
        return Ok(None);
    }
    let mut keyring = Vec::new();
    for (key, path) in repo.keys.iter().zip(repo.key_paths()) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{distro_name}: reading repo.keys {key}"))?;
        keyring.extend(dearmor(&text).with_context(|| format!("{distro_name}: {key}"))?);
    }
    let path = crate::host::cache::cache_dir()
        .join("rpm")
        .join(distro_name)
        .join("keyring.gpg");
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let partial = path.with_extension(format!("gpg.{}", std::process::id()));
    std::fs::write(&partial, &keyring)
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path))
}

/// The packets of every ASCII-armored block in `text` (an RPM-GPG-KEY file),
/// each block's CRC-24 checked: what `gpg --dearmor` writes.
pub fn dearmor(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim_end);
    let mut blocks = 0;
    while let Some(line) = lines.next() {
        if !(line.starts_with("-----BEGIN PGP ") && line.ends_with("-----")) {
            continue;
        }
        // Armor headers (Version:, Comment:) end at the first empty line.
        for header in lines.by_ref() {
            if header.is_empty() {
                break;
            }
        }
        let mut body = String::new();
        let mut crc = None;
        let mut ended = false;
        for line in lines.by_ref() {
            if line.starts_with("-----END PGP ") {
                ended = true;
                break;
            }
            match line.strip_prefix('=') {
                Some(sum) if line.len() == 5 => crc = Some(base64_decode(sum)?),
                _ => body.push_str(line.trim()),
            }
        }
        if !ended {
            bail!("armored block {} has no END line", blocks + 1);
        }
        let packets = base64_decode(&body)?;
        if let Some(crc) = crc {
            let want = crc24(&packets).to_be_bytes();
            if crc != want[1..] {
                bail!("armored block {} fails its CRC-24 check", blocks + 1);
            }
        }
        out.extend(packets);
        blocks += 1;
    }
    if blocks == 0 {
        bail!("no ASCII-armored PGP block");
    }
    Ok(out)
}

/// RFC 4880 section 6.1.
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB7_04CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x186_4CFB;
            }
        }
    }
    crc & 0xFF_FFFF
}

/// Standard base64 with `=` padding.
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => bail!("invalid base64 character {:?}", char::from(c)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The repository root a `mirror.list` (Amazon Linux) names on its first
/// line, `$basearch` filled in. Amazon publishes each update as a new root
/// (`.../guids/<hash>/x86_64/`), so only the list's URL stays the same.
fn mirror_list_root(fetch: &dyn Fetch, distro_name: &str, arch: &str, url: &str) -> Result<String> {
    let cache = Path::new("rpm").join(distro_name).join(url_key(url));
    let path = fetch
        .fresh(url, &cache.join("mirror.list"))
        .with_context(|| format!("{distro_name}: mirror list {url}"))?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{distro_name}: reading mirror list {url}"))?;
    let root = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.replace("$basearch", arch));
    match root {
        Some(root) if root.starts_with("https://") || root.starts_with("http://") => {
            Ok(root.trim_end_matches('/').to_string())
        }
        _ => bail!("{distro_name}: mirror list {url} names no repository URL"),
    }
}

/// A repository's primary metadata, read and checked.
struct Primary {
    /// The repository root (a mirror list resolved), no trailing slash.
    base: String,
    /// Where its files are fetched from (the root, with any access token).
    access: crate::repo::scc::RepoUrl,
    xml: String,
}

/// Reads the primary metadata of the repository at `base` (reached through
/// `access`): repomd.xml (its signature checked with `keyring`), then the
/// primary file it names, sha256 checked.
fn primary(
    fetch: &dyn Fetch,
    distro_name: &str,
    arch: &str,
    keyring: Option<&Path>,
    base: &str,
    access: &crate::repo::scc::RepoUrl,
) -> Result<Primary> {
    let base = base.trim_end_matches('/');
    // A mirror list names the repository's root on its first line.
    let resolved;
    let (base, mirrored) = if base.ends_with("/mirror.list") {
        resolved = mirror_list_root(fetch, distro_name, arch, base)?;
        (
            resolved.as_str(),
            Some(crate::repo::scc::RepoUrl::plain(&resolved)),
        )
    } else {
        (base, None)
    };
    let access = mirrored.as_ref().unwrap_or(access);
    // Named by the recipe's URL: no token in a path or a message.
    let cache = Path::new("rpm").join(distro_name).join(url_key(base));
    let repomd_path = fetch
        .fresh(
            &access.file("repodata/repomd.xml"),
            &cache.join("repomd.xml"),
        )
        .with_context(|| format!("{distro_name}: repository metadata of {base}"))?;
    if let Some(keyring) = keyring {
        let asc_path = fetch
            .fresh(
                &access.file("repodata/repomd.xml.asc"),
                &cache.join("repomd.xml.asc"),
            )
            .with_context(|| {
                format!(
                    "{distro_name}: the signature of {base}/repodata/repomd.xml \
                     (the recipe's repo.keys say it is signed)"
                )
            })?;
        crate::host::gpgv::gpgv_verify_detached(&asc_path, &repomd_path, keyring)
            .with_context(|| format!("{distro_name}: {base}/repodata/repomd.xml"))?;
    }
    let repomd = std::fs::read_to_string(&repomd_path)?;
    let primary = parse_repomd(&repomd).with_context(|| format!("{base}/repodata/repomd.xml"))?;
    let url = access.file(&primary.href);
    let file_name = primary
        .href
        .rsplit('/')
        .next()
        .unwrap_or("primary.xml.gz")
        .to_string();
    let Some(sha256) = &primary.sha256 else {
        bail!("{base}/repodata/repomd.xml gives no sha256 for the primary metadata; refusing unverified metadata");
    };
    let path = fetch.checked(&url, sha256, primary.size, &cache.join(&file_name))?;
    let bytes = std::fs::read(&path)?;
    let local_name = path
        .file_name()
        .map_or(file_name.clone(), |n| n.to_string_lossy().into_owned());
    let xml = crate::repo::decompress::decompress(&local_name, &bytes)?;
    let xml = String::from_utf8(xml)
        .with_context(|| format!("{} is not UTF-8", crate::repo::download::redact(&url)))?;
    Ok(Primary {
        base: base.to_string(),
        access: access.clone(),
        xml,
    })
}

/// Every kernel of the release across its repositories, oldest first.
pub fn kernels(
    distro_name: &str,
    family: Family,
    arch: &str,
    repo: &RpmRepo,
) -> Result<Vec<Kernel>> {
    kernels_with(&Net, distro_name, family, arch, repo)
}

/// [`kernels`] with the files coming from `fetch`.
pub fn kernels_with(
    fetch: &dyn Fetch,
    distro_name: &str,
    family: Family,
    arch: &str,
    repo: &RpmRepo,
) -> Result<Vec<Kernel>> {
    // Registered repositories (SLES) open only with the access tokens the
    // registration server hands the system; the recipe's URLs name them.
    let access = match &repo.credentials {
        Some(c) => crate::repo::scc::repositories(distro_name, &repo.baseurls, c)?,
        None => repo
            .baseurls
            .iter()
            .map(|b| crate::repo::scc::RepoUrl::plain(b))
            .collect(),
    };
    let keyring = signing_keyring(distro_name, repo)?;
    let mut out: Vec<Kernel> = Vec::new();
    for (base, access) in repo.baseurls.iter().zip(&access) {
        let Primary { base, xml, .. } =
            primary(fetch, distro_name, arch, keyring.as_deref(), base, access)?;
        let base = base.as_str();
        for p in parse_primary(&xml, &repo.headers_package)? {
            if p.arch == arch || (p.arch == "noarch" && family == Family::Suse) {
                let k = Kernel {
                    suite: base.to_string(),
                    ..kernel_of(family, repo, &p)?
                };
                if !out.iter().any(|o| o.release == k.release) {
                    out.push(k);
                }
            }
        }
    }
    out.sort_by(|a, b| crate::distro::kernel::release_cmp(&a.release, &b.release));
    Ok(out)
}

/// The packages of the RHEL family that hold a kernel's image and modules:
/// EL7's `kernel` holds both; EL8 and later make `kernel` a metapackage and
/// split the files among `kernel-core` (vmlinuz, the modules a VM boots
/// with), `kernel-modules-core` (EL9.2 on) and `kernel-modules`.
const IMAGE_PACKAGES: [&str; 4] = [
    "kernel",
    "kernel-core",
    "kernel-modules-core",
    "kernel-modules",
];

/// One package file of a kernel, as a repository's metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRpm {
    pub package: RpmPackage,
    /// Repository root + `<location href>`.
    pub url: String,
}

impl KernelRpm {
    /// What the lab downloads: refused without the checksum and size the
    /// metadata owes every package.
    pub fn package_ref(&self) -> Result<crate::repo::debian::PackageRef> {
        let p = &self.package;
        let (Some(sha256), Some(size)) = (&p.sha256, p.size) else {
            bail!(
                "{}: the repository metadata gives no sha256 and size for it; refusing an unverified package",
                crate::repo::download::redact(&self.url)
            );
        };
        Ok(crate::repo::debian::PackageRef {
            name: p.name.clone(),
            version: format!("{}-{}", p.ver, p.rel),
            url: self.url.clone(),
            size,
            sha256: sha256.clone(),
        })
    }
}

/// The package files of one kernel of the RHEL family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRpms {
    /// `uname -r`.
    pub release: String,
    /// `version-release` of the packages.
    pub version: String,
    /// `kernel` (EL7) or `kernel-core`: vmlinuz and the modules beside it.
    pub image: KernelRpm,
    /// `kernel-modules-core`, `kernel-modules` where the kernel is split.
    pub modules: Vec<KernelRpm>,
}

impl KernelRpms {
    /// The lab's view (see [`crate::repo::deb::kernel_files`]).
    pub fn packages(&self, headers_package: &str) -> Result<crate::repo::debian::KernelPackages> {
        Ok(crate::repo::debian::KernelPackages {
            release: self.release.clone(),
            version: self.version.clone(),
            image: self.image.package_ref()?,
            modules: self
                .modules
                .iter()
                .map(KernelRpm::package_ref)
                .collect::<Result<_>>()?,
            headers: format!("{headers_package}-{}", self.version),
        })
    }
}

/// Why the lab cannot boot this RPM-family recipe's kernels, if it cannot.
pub fn unbootable(family: Family, repo: &RpmRepo) -> Option<String> {
    if family != Family::Rhel {
        return Some(format!(
            "the VM lab boots kernels of Debian, Ubuntu and the RHEL family (kernel or kernel-core packages); \
             {family:?}-family kernel packages are not supported"
        ));
    }
    if !repo.release_suffix.is_empty() {
        return Some(format!(
            "the VM lab boots the plain kernel of the RHEL family; this recipe's kernels are a variant ({} releases)",
            repo.release_suffix
        ));
    }
    if !repo.uname.has_arch() {
        return Some(
            "the VM lab finds a RHEL-family kernel's image packages by a release that ends in its \
             architecture; this recipe's kernels run under another spelling (its uname style)"
                .to_string(),
        );
    }
    None
}

/// The packages kernel `release` boots from, over the network.
pub fn kernel_rpms(distro: &crate::distro::Distro, release: &str) -> Result<KernelRpms> {
    let crate::distro::Repo::RpmMd(repo) = &distro.repo else {
        bail!("{} is not an rpm-md release", distro.name);
    };
    kernel_rpms_with(
        &Net,
        &distro.name,
        distro.family,
        &distro.arch,
        repo,
        release,
    )
}

/// [`kernel_rpms`] with the files coming from `fetch`: the recipe's
/// repositories, then its `image_baseurls`, are searched for the image
/// packages of `release`.
pub fn kernel_rpms_with(
    fetch: &dyn Fetch,
    distro_name: &str,
    family: Family,
    arch: &str,
    repo: &RpmRepo,
    release: &str,
) -> Result<KernelRpms> {
    if let Some(why) = unbootable(family, repo) {
        bail!("{distro_name}: {why}");
    }
    let keyring = signing_keyring(distro_name, repo)?;
    let mut found: Vec<KernelRpm> = Vec::new();
    let mut searched = Vec::new();
    for base in repo.baseurls.iter().chain(&repo.image_baseurls) {
        let access = crate::repo::scc::RepoUrl::plain(base);
        let Primary { base, access, xml } =
            primary(fetch, distro_name, arch, keyring.as_deref(), base, &access)?;
        for p in parse_primary_of(&xml, &IMAGE_PACKAGES)? {
            let is_it = p.arch == arch && format!("{}-{}.{}", p.ver, p.rel, p.arch) == release;
            if is_it && !found.iter().any(|f| f.package.name == p.name) {
                let url = access.file(&p.location);
                found.push(KernelRpm { package: p, url });
            }
        }
        searched.push(base);
    }
    let take = |name: &str| found.iter().find(|f| f.package.name == name).cloned();
    let image = match (take("kernel-core"), take("kernel")) {
        (Some(core), _) => core,
        (None, Some(kernel)) if kernel.package.rel.contains(".el7") => kernel,
        (None, Some(_)) => bail!(
            "{distro_name}: kernel {release}: found the `kernel` metapackage but no kernel-core \
             (which holds vmlinuz from EL8 on) in {}; name the repository that has it in \
             the recipe's repo.image_baseurls",
            searched.join(", ")
        ),
        (None, None) => bail!(
            "{distro_name}: no kernel or kernel-core package of {release} ({arch}) in {}; \
             if the kernel lives in another repository than its headers, name it in \
             the recipe's repo.image_baseurls",
            searched.join(", ")
        ),
    };
    let modules = ["kernel-modules-core", "kernel-modules"]
        .iter()
        .filter(|_| image.package.name == "kernel-core")
        .filter_map(|name| take(name))
        .collect();
    Ok(KernelRpms {
        release: release.to_string(),
        version: format!("{}-{}", image.package.ver, image.package.rel),
        image,
        modules,
    })
}

/// [`Fetch`] from `rpm/<distro>/<repository>/`: each repository's
/// `repomd.xml` (and `repomd.xml.asc` where the recipe names keys) and an
/// uncompressed `primary.xml` excerpt, read without a checksum check: an
/// excerpt cannot match the real file's.
pub struct RpmFixtures {
    pub dir: PathBuf,
}

impl RpmFixtures {
    fn file(&self, url: &str, name: &str) -> Result<PathBuf> {
        let base = url.split_once("/repodata/").map_or(url, |(base, _)| base);
        let path = self.dir.join(crate::host::cache::url_key(base)).join(name);
        if !path.is_file() {
            bail!(
                "no fixture for {url} ({} is missing)",
                crate::host::cache::relative_to_root(&path)
            );
        }
        Ok(path)
    }
}

impl Fetch for RpmFixtures {
    fn fresh(&self, url: &str, _cache: &Path) -> Result<PathBuf> {
        let name = url.rsplit('/').next().unwrap_or_default();
        self.file(url, name)
    }

    fn checked(&self, url: &str, _: &str, _: Option<u64>, _: &Path) -> Result<PathBuf> {
        self.file(url, "primary.xml")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
 <revision>1449700451</revision>
<data type="filelists">
  <checksum type="sha256">aaaa</checksum>
  <location href="repodata/aaaa-filelists.xml.gz"/>
  <size>100</size>
</data>
<data type="primary">
  <checksum type="sha256">9A2E0F6B</checksum>
  <open-checksum type="sha256">ffff</open-checksum>
  <location href="repodata/9a2e-primary.xml.gz"/>
  <timestamp>1449700457</timestamp>
  <size>2914316</size>
  <open-size>26537164</open-size>
</data>
</repomd>"#;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="3">
<package type="rpm">
  <name>kernel-devel</name>
  <arch>x86_64</arch>
  <version epoch="0" ver="3.10.0" rel="327.el7"/>
  <checksum type="sha256" pkgid="YES">c0ffee</checksum>
  <summary>Development package for building kernel modules to match the kernel</summary>
  <location href="Packages/kernel-devel-3.10.0-327.el7.x86_64.rpm"/>
  <format><rpm:license>GPLv2</rpm:license><rpm:provides><rpm:entry name="kernel-devel-x86_64" flags="EQ" epoch="0" ver="3.10.0" rel="327.el7"/></rpm:provides></format>
</package>
<package type="rpm">
  <name>kernel-headers</name>
  <arch>x86_64</arch>
  <version epoch="0" ver="3.10.0" rel="327.el7"/>
</package>
<package type="rpm">
  <name>kernel-devel</name>
  <arch>x86_64</arch>
  <version epoch="0" ver="3.10.0" rel="327.3.1.el7"/>
</package>
</metadata>"#;

    #[test]
    fn repomd_points_at_primary() {
        let p = parse_repomd(REPOMD).unwrap();
        assert_eq!(p.href, "repodata/9a2e-primary.xml.gz");
        assert_eq!(p.sha256.as_deref(), Some("9a2e0f6b"));
        assert_eq!(p.size, Some(2914316));
        assert!(parse_repomd("<repomd></repomd>")
            .unwrap_err()
            .to_string()
            .contains("no primary"));
    }

    #[test]
    fn primary_lists_the_headers_packages() {
        let pkgs = parse_primary(PRIMARY, "kernel-devel").unwrap();
        assert_eq!(pkgs.len(), 2);
        let k: Vec<Kernel> = pkgs
            .iter()
            .map(|p| kernel_of(Family::Rhel, &plain_repo(), p).unwrap())
            .collect();
        assert_eq!(k[0].release, "3.10.0-327.el7.x86_64");
        assert_eq!(k[0].version, "3.10.0-327.el7");
        assert_eq!(k[1].release, "3.10.0-327.3.1.el7.x86_64");
    }

    fn plain_repo() -> RpmRepo {
        RpmRepo {
            baseurls: Vec::new(),
            headers_package: "kernel-devel".into(),
            image_baseurls: Vec::new(),
            release_suffix: String::new(),
            uname: Default::default(),
            credentials: None,
            keys: Vec::new(),
        }
    }

    /// Where the package says the release, neither the recipe's spelling nor
    /// a variant's suffix is applied on top of it.
    #[test]
    fn a_declared_uname_wins_over_the_recipes_spelling() {
        let rt = RpmPackage {
            name: "kernel-rt-devel".into(),
            arch: "x86_64".into(),
            ver: "5.14.0".into(),
            rel: "427.35.1.el9_4".into(),
            uname_r: Some("5.14.0-427.35.1.el9_4.x86_64+rt".into()),
            ..RpmPackage::default()
        };
        let repo = RpmRepo {
            release_suffix: "+rt".into(),
            ..plain_repo()
        };
        assert_eq!(
            kernel_of(Family::Rhel, &repo, &rt).unwrap().release,
            "5.14.0-427.35.1.el9_4.x86_64+rt"
        );
        let tencent = RpmRepo {
            uname: crate::distro::uname::Uname::GitTag {
                dist: ".tl3".into(),
                separator: "-".into(),
            },
            ..plain_repo()
        };
        let template = RpmPackage {
            name: "kernel-devel".into(),
            arch: "x86_64".into(),
            ver: "5.4.119".into(),
            rel: "19.0009.14.tl3".into(),
            uname_r: Some("5.4.119-19.0009.14".into()),
            ..RpmPackage::default()
        };
        assert_eq!(
            kernel_of(Family::Rhel, &tencent, &template)
                .unwrap()
                .release,
            "5.4.119-19.0009.14"
        );
        let old_spec = RpmPackage {
            rel: "19.0009.1.tl3".into(),
            uname_r: None,
            ..template
        };
        let k = kernel_of(Family::Rhel, &tencent, &old_spec).unwrap();
        assert_eq!(k.release, "5.4.119-19-0009.1");
        assert_eq!(k.version, "5.4.119-19.0009.1.tl3");
        let other = RpmPackage {
            rel: "19.0009.1.oc8".into(),
            ..old_spec
        };
        let err = format!(
            "{:#}",
            kernel_of(Family::Rhel, &tencent, &other).unwrap_err()
        );
        assert!(
            err.contains("kernel-devel 5.4.119-19.0009.1.oc8") && err.contains("dist tag .tl3"),
            "{err}"
        );
    }

    #[test]
    fn suse_release_drops_the_rebuild_counter() {
        let p = RpmPackage {
            name: "kernel-default-devel".into(),
            arch: "x86_64".into(),
            ver: "4.12.14".into(),
            rel: "122.37.1".into(),
            ..RpmPackage::default()
        };
        let k = kernel_of(Family::Suse, &plain_repo(), &p).unwrap();
        assert_eq!(k.release, "4.12.14-122.37-default");
        assert_eq!(k.version, "4.12.14-122.37.1");
    }

    #[test]
    fn primary_gives_each_package_its_file() {
        let xml = PRIMARY;
        let p = &parse_primary(xml, "kernel-devel").unwrap()[0];
        assert_eq!(
            p.location,
            "Packages/kernel-devel-3.10.0-327.el7.x86_64.rpm"
        );
        assert_eq!(p.sha256.as_deref(), Some("c0ffee"));
    }

    fn signature_fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rpm/repomd-signature")
            .join(name)
    }

    /// A signed repository served from `dir`, with `keys` as the recipe's.
    fn signed_kernels(dir: PathBuf, keys: &[PathBuf]) -> Result<Vec<Kernel>> {
        let repo = RpmRepo {
            baseurls: vec!["https://repo.example.invalid/signed/".into()],
            headers_package: "kernel-default-devel".into(),
            keys: keys.iter().map(|k| k.display().to_string()).collect(),
            ..plain_repo()
        };
        kernels_with(
            &RpmFixtures { dir },
            "repomd-signature-test",
            Family::Suse,
            "x86_64",
            &repo,
        )
    }

    /// A copy of the signed repository in a temporary directory, with
    /// `change` applied to it.
    fn altered_copy(case: &str, change: impl Fn(&Path)) -> PathBuf {
        let dir = crate::testing::scratch(&format!("repomd-{case}"));
        let repo = dir.join("repo.example.invalid_signed");
        std::fs::create_dir_all(&repo).unwrap();
        for f in ["repomd.xml", "repomd.xml.asc", "primary.xml"] {
            std::fs::copy(
                signature_fixture(&format!("repo.example.invalid_signed/{f}")),
                repo.join(f),
            )
            .unwrap();
        }
        change(&repo);
        dir
    }

    #[test]
    fn signed_repomd_is_checked_with_the_recipes_key() {
        if !crate::host::gpgv::have_gpgv() {
            eprintln!("skipped: gpgv missing");
            return;
        }
        let key = signature_fixture("test-key.asc");
        let kernels = signed_kernels(signature_fixture(""), std::slice::from_ref(&key)).unwrap();
        assert_eq!(kernels.len(), 1);
        assert_eq!(kernels[0].release, "6.4.0-150600.23.47-default");
        // A keyring of several keys: one good signature is enough.
        let other = signature_fixture("other-key.asc");
        signed_kernels(signature_fixture(""), &[other.clone(), key.clone()]).unwrap();

        // Signed by a key the recipe does not name.
        let err = format!(
            "{:#}",
            signed_kernels(signature_fixture(""), &[other]).unwrap_err()
        );
        assert!(err.contains("repomd.xml"), "{err}");
        assert!(err.contains("no good signature"), "{err}");

        // repomd.xml changed after signing.
        let dir = altered_copy("tampered", |repo| {
            let path = repo.join("repomd.xml");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replace("primary.xml.zst", "primary.xml.gz")).unwrap();
        });
        let err = format!(
            "{:#}",
            signed_kernels(dir.clone(), std::slice::from_ref(&key)).unwrap_err()
        );
        assert!(err.contains("BAD signature"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        // No repomd.xml.asc: fails closed, saying the recipe expects one.
        let dir = altered_copy("unsigned", |repo| {
            std::fs::remove_file(repo.join("repomd.xml.asc")).unwrap()
        });
        let err = format!(
            "{:#}",
            signed_kernels(dir.clone(), std::slice::from_ref(&key)).unwrap_err()
        );
        assert!(
            err.contains("the recipe's repo.keys say it is signed"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // A signature by the other key in place of the good one.
        let dir = altered_copy("other-signer", |repo| {
            std::fs::copy(
                signature_fixture("repomd.xml.other.asc"),
                repo.join("repomd.xml.asc"),
            )
            .unwrap();
        });
        let err = format!(
            "{:#}",
            signed_kernels(dir.clone(), std::slice::from_ref(&key)).unwrap_err()
        );
        assert!(err.contains("no good signature"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dearmor_checks_the_crc_and_needs_a_block() {
        let text = std::fs::read_to_string(signature_fixture("test-key.asc")).unwrap();
        let packets = dearmor(&text).unwrap();
        // A public-key packet (tag 6; gpg writes the old format) opens the key.
        assert!(
            packets[0] == 0x98 || packets[0] == 0xC6,
            "{:02x?}",
            &packets[..4]
        );
        // One changed character of the body: the CRC-24 line no longer matches.
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let body = lines.iter().position(|l| l.len() > 40).unwrap();
        let flipped = if lines[body].starts_with('m') {
            "n"
        } else {
            "m"
        };
        lines[body].replace_range(0..1, flipped);
        let err = dearmor(&lines.join("\n")).unwrap_err().to_string();
        assert!(err.contains("CRC-24"), "{err}");
        assert!(dearmor("not a key").is_err());
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    }

    #[test]
    fn broken_xml_is_an_error() {
        assert!(parse_primary(
            "<metadata><package><name>kernel-devel</nam></package>",
            "kernel-devel"
        )
        .is_err());
    }
}
